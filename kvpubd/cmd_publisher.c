/* cmd_publisher.c: `kvpubd publisher add|revoke|list`: registers publisher keys in a store with
 * a fresh upload credential, and keeps STORE/keys (a trust directory served at /v1/keys). */
#include "kvpubd/kvpubd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "base/base.h"
#include "crypto/kvcrypto.h"
#include "store/kvstore.h"

static const char publisher_usage[] =
    "usage: kvpubd publisher add --store DIR --key PREFIX.pub --name NAME\n"
    "       kvpubd publisher revoke --store DIR --key-id HEX16 [--reason TEXT]\n"
    "       kvpubd publisher list --store DIR\n"
    "add registers the public key and prints a new upload credential on stdout, once: only its\n"
    "SHA-256 is kept. Uploads send it as 'Authorization: Bearer CREDENTIAL'.\n"
    "revoke lists the key id in DIR/keys/revoked (/v1/keys shows it) and in the index: its listings\n"
    "leave the catalog, its blobs are no longer sold or served, it cannot publish or upload, and\n"
    "purchases whose tokens could still download are refunded in the ledger (the refunds table).\n"
    "Exit: 0 ok, 1 refused (already registered), 2 usage or I/O error.\n";

#define PEM_MAX 8192

/* Writes len bytes to path (after its old content when append_to_existing) through
 * base_replace, so readers never see half. */
static int write_atomic(const char *path, const void *data, size_t len, int append_to_existing)
{
    char *old = NULL;
    size_t oldlen = 0;
    if (append_to_existing) {
        FILE *f = fopen(path, "rb");
        if (f) {
            /* one byte more than the cap tells a full cap from a longer file, which would be
             * cut short by the rewrite */
            old = malloc((1 << 20) + 1);
            oldlen = old ? fread(old, 1, (1 << 20) + 1, f) : 0;
            int bad_read = !old || ferror(f) || oldlen > (1 << 20);
            fclose(f);
            if (bad_read) {
                free(old);
                errno = EFBIG;
                return -1;
            }
        }
    }
    base_replace r;
    if (base_replace_open(&r, path) != 0) {
        free(old);
        return -1;
    }
    int bad = 0;
    if (oldlen)
        bad |= base_write_all(r.fd, old, oldlen) != 0;
    if (oldlen && old[oldlen - 1] != '\n')
        bad |= base_write_all(r.fd, "\n", 1) != 0;
    bad |= base_write_all(r.fd, data, len) != 0;
    free(old);
    if (bad) {
        base_replace_abort(&r);
        return -1;
    }
    return base_replace_commit(&r);
}

static int keys_dir(const char *store, char *out, size_t outlen)
{
    if (snprintf(out, outlen, "%s/keys", store) >= (int)outlen)
        return -1;
    if (mkdir(out, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static int cmd_add(const char *dir, const char *keypath, const char *name)
{
    char err[512];
    /* the file must hold a public key and nothing else: a private key (which a loader of either
     * kind would take the public half of) must never reach STORE/keys, which /v1/keys serves */
    char pem[PEM_MAX + 1];
    FILE *f = fopen(keypath, "rb");
    size_t pemlen = f ? fread(pem, 1, sizeof pem, f) : 0;
    if (f)
        fclose(f);
    kvc_key *k = NULL;
    if (!f || !pemlen || pemlen > PEM_MAX || kvc_key_from_pem_public(pem, pemlen, &k) != KVC_OK ||
        memmem(pem, pemlen, "PRIVATE", 7)) {
        fprintf(stderr, "kvpubd publisher add: %s: %s\n", keypath,
                !f ? strerror(errno)
                   : "not a public key: give the public key file (PREFIX.pub, one Ed25519 public key PEM under "
                     "8192 bytes, nothing else)");
        kvc_wipe(pem, sizeof pem);
        kvc_key_free(k);
        return 2;
    }
    kvc_wipe(pem, sizeof pem);
    /* what /v1/keys serves and loaders put in their trust directory: the key's own public PEM,
     * written here, not the bytes of the file given */
    char *pub = kvc_key_public_pem(k);
    if (!pub) {
        fprintf(stderr, "kvpubd publisher add: out of memory\n");
        kvc_key_free(k);
        return 2;
    }
    uint8_t id[KVC_KEYID_LEN], raw[KVC_PUBKEY_LEN], secret[32];
    kvc_key_id(k, id);
    kvc_key_raw_public(k, raw);
    kvc_key_free(k);
    if (RAND_bytes(secret, sizeof secret) != 1) {
        fprintf(stderr, "kvpubd publisher add: no randomness for the credential\n");
        return 2;
    }
    char idh[17], sh[65], cred[100];
    kvc_hex(id, sizeof id, idh);
    kvc_hex(secret, sizeof secret, sh);
    kvc_wipe(secret, sizeof secret);
    snprintf(cred, sizeof cred, "%s.%s", idh, sh);
    kvc_wipe(sh, sizeof sh);

    kvs_store *s = NULL;
    if (kvpubd_store_open("kvpubd publisher add", dir, &s, err, sizeof err)) {
        kvc_wipe(cred, sizeof cred);
        free(pub);
        return 2;
    }
    kvs_status st = kvs_store_publisher_add(s, id, raw, name, cred, strlen(cred), (int64_t)time(NULL), err, sizeof err);
    kvs_store_close(s);
    if (st != KVS_OK) {
        fprintf(stderr, "kvpubd publisher add: %s\n", err);
        kvc_wipe(cred, sizeof cred);
        free(pub);
        return st == KVS_ERR_EXISTS ? 1 : 2;
    }
    char kd[4096], path[4200];
    const int wrote = keys_dir(dir, kd, sizeof kd) == 0 &&
                      snprintf(path, sizeof path, "%s/%s.pub", kd, idh) < (int)sizeof path &&
                      write_atomic(path, pub, strlen(pub), 0) == 0;
    free(pub);
    if (!wrote) {
        fprintf(stderr, "kvpubd publisher add: registered, but cannot write %s/keys/%s.pub: %s\n", dir, idh,
                strerror(errno));
        printf("%s\n", cred);
        kvc_wipe(cred, sizeof cred);
        return 2;
    }
    printf("%s\n", cred);
    fprintf(stderr, "kvpubd: publisher '%s' key %s registered; the line above is its upload credential "
                    "(shown once)\n", name, idh);
    kvc_wipe(cred, sizeof cred);
    return 0;
}

static int cmd_revoke(const char *dir, const char *idhex, const char *reason)
{
    uint8_t id[KVC_KEYID_LEN];
    if (strlen(idhex) != 16 || kvc_unhex(idhex, id, sizeof id) != KVC_OK) {
        fprintf(stderr, "kvpubd publisher revoke: --key-id '%s': expected 16 hex digits\n", idhex);
        return 2;
    }
    char kd[4096], path[4200], line[24], idh[17];
    kvc_hex(id, sizeof id, idh);
    snprintf(line, sizeof line, "%s\n", idh);
    if (keys_dir(dir, kd, sizeof kd) != 0 || snprintf(path, sizeof path, "%s/revoked", kd) >= (int)sizeof path ||
        write_atomic(path, line, strlen(line), 1) != 0) {
        fprintf(stderr, "kvpubd publisher revoke: cannot update %s/keys/revoked: %s\n", dir, strerror(errno));
        return 2;
    }
    /* the list first: a failure after it is repaired by running revoke again */
    kvs_store *s = NULL;
    char err[512];
    size_t blobs = 0, refunds = 0;
    kvs_status st = kvs_store_open(dir, &s, err, sizeof err);
    if (st == KVS_OK)
        st = kvs_store_publisher_revoke(s, id, reason, (int64_t)time(NULL), &blobs, &refunds, err, sizeof err);
    kvs_store_close(s);
    if (st != KVS_OK) {
        fprintf(stderr, "kvpubd publisher revoke: %s\n", err);
        return 2;
    }
    fprintf(stderr, "kvpubd: key %s revoked: %zu listing(s) withdrawn, %zu purchase(s) refunded\n", idh, blobs,
            refunds);
    return 0;
}

static int cmd_list(const char *dir)
{
    char kd[4096], err[512];
    if (snprintf(kd, sizeof kd, "%s/keys", dir) >= (int)sizeof kd)
        return 2;
    struct stat sb;
    if (stat(kd, &sb) != 0)
        return 0; /* no publisher yet */
    kvc_trust *t = NULL;
    if (kvc_trust_open(kd, &t, err, sizeof err) != KVC_OK) {
        fprintf(stderr, "kvpubd publisher list: %s\n", err);
        return 2;
    }
    kvs_store *s = NULL;
    if (kvpubd_store_open("kvpubd publisher list", dir, &s, err, sizeof err)) {
        kvc_trust_free(t);
        return 2;
    }
    for (size_t i = 0; i < kvc_trust_count(t); i++) {
        uint8_t id[KVC_KEYID_LEN];
        char idh[17];
        kvc_key_id(kvc_trust_key(t, i), id);
        kvs_publisher p;
        int known = kvs_store_publisher_get(s, id, &p, err, sizeof err) == KVS_OK;
        printf("%s\t%s\t%s\n", kvc_hex(id, sizeof id, idh), known ? p.name : "?",
               known && p.has_credential ? "upload" : "-");
    }
    for (size_t i = 0; i < kvc_trust_revoked_count(t); i++) {
        char idh[17];
        printf("%s\trevoked\n", kvc_hex(kvc_trust_revoked_id(t, i), KVC_KEYID_LEN, idh));
    }
    kvs_store_close(s);
    kvc_trust_free(t);
    return 0;
}

int kvpubd_publisher_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(publisher_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1], *dir = NULL, *key = NULL, *name = NULL, *keyid = NULL;
    const char *reason = "revoked by the store operator";
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            fputs(publisher_usage, stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "kvpubd publisher: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--store") == 0)
            dir = v;
        else if (strcmp(a, "--key") == 0)
            key = v;
        else if (strcmp(a, "--name") == 0)
            name = v;
        else if (strcmp(a, "--key-id") == 0)
            keyid = v;
        else if (strcmp(a, "--reason") == 0)
            reason = v;
        else {
            fprintf(stderr, "kvpubd publisher: unknown option %s\n%s", a, publisher_usage);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "kvpubd publisher %s: --store DIR is required\n", sub);
        return 2;
    }
    if (strcmp(sub, "add") == 0) {
        if (!key || !name || !*name || strlen(name) > KVS_NAME_MAX) {
            fprintf(stderr, "kvpubd publisher add: --key PREFIX.pub and --name NAME (1..%d bytes) are required\n",
                    KVS_NAME_MAX);
            return 2;
        }
        return cmd_add(dir, key, name);
    }
    if (strcmp(sub, "revoke") == 0) {
        if (!keyid) {
            fprintf(stderr, "kvpubd publisher revoke: --key-id HEX16 is required\n");
            return 2;
        }
        return cmd_revoke(dir, keyid, reason);
    }
    if (strcmp(sub, "list") == 0)
        return cmd_list(dir);
    fprintf(stderr, "kvpubd publisher: unknown subcommand '%s' (add, revoke, list)\n", sub);
    return 2;
}
