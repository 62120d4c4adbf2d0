/* trust.c: the loader's trust store: a directory of *.pub Ed25519 public keys plus an
 * optional "revoked" list of key ids. */
#include "crypto/crypto_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* A trust directory with more entries than this is a mistake, not a configuration. */
enum { TRUST_MAX_KEYS = 4096, TRUST_MAX_REVOKED = 65536 };

struct kvc_trust {
    kvc_key **keys;     /* trusted, not revoked; sorted by file name at load time */
    size_t n_keys;
    uint8_t (*revoked)[KVC_KEYID_LEN];
    size_t n_revoked;
};

void kvc_trust_free(kvc_trust *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_keys; i++)
        kvc_key_free(t->keys[i]);
    BASE_FREE_ALL(t->keys, t->revoked, t);
}

static int is_revoked(const kvc_trust *t, const uint8_t id[KVC_KEYID_LEN])
{
    for (size_t i = 0; i < t->n_revoked; i++)
        if (memcmp(t->revoked[i], id, KVC_KEYID_LEN) == 0)
            return 1;
    return 0;
}

static int ends_with_pub(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && strcmp(name + n - 4, ".pub") == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Parses DIR/revoked (absent is fine) into t->revoked. */
/* Refuses a trust directory or file that anyone on the machine may write: whoever can drop a
 * .pub file there, or edit one, decides which signers are trusted. */
static kvc_status refuse_world_writable(const char *path, int is_dir, char *err, size_t errlen)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return KVC_OK; /* a missing path is reported where it is read */
    if (!(sb.st_mode & S_IWOTH))
        return KVC_OK;
    base_errf(err, errlen, "%s %s is writable by every user (mode %04o): anyone could add or change a "
              "trusted key; run chmod o-w on it", is_dir ? "trust directory" : "trust file", path,
              (unsigned)(sb.st_mode & 07777));
    return KVC_ERR_PERM;
}

static kvc_status load_revoked(kvc_trust *t, const char *dir, char *err, size_t errlen)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/revoked", dir) >= sizeof path) {
        base_errf(err, errlen, "trust directory path too long: %s", dir);
        return KVC_ERR_IO;
    }
    struct stat sb;
    if (lstat(path, &sb) != 0 && errno == ENOENT)
        return KVC_OK; /* no revocation list: nothing revoked */
    char *buf = NULL;
    size_t len = 0;
    kvc_status st = refuse_world_writable(path, 0, err, errlen);
    if (st == KVC_OK)
        st = kvc_read_small_file(path, KVC_MAX_SMALL_FILE, 0, &buf, &len, err, errlen);
    if (st != KVC_OK)
        return st;
    if (memchr(buf, '\0', len)) {
        base_errf(err, errlen, "%s: contains a NUL byte; expected text, one key id per line", path);
        free(buf);
        return KVC_ERR_FORMAT;
    }
    size_t lineno = 0;
    /* walk lines by hand: strtok would skip empty lines and so miscount line numbers */
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = line;
        while (*s == ' ' || *s == '\t' || *s == '\r')
            s++;
        char *e = s + strlen(s);
        while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
            *--e = '\0';
        if (*s) {
            uint8_t id[KVC_KEYID_LEN];
            if (kvc_unhex(s, id, KVC_KEYID_LEN) != KVC_OK) {
                base_errf(err, errlen, "%s:%zu: expected a key id of 16 hex digits, got '%.40s'", path, lineno, s);
                free(buf);
                return KVC_ERR_FORMAT;
            }
            if (t->n_revoked >= TRUST_MAX_REVOKED) {
                base_errf(err, errlen, "%s: more than %d revoked ids", path, TRUST_MAX_REVOKED);
                free(buf);
                return KVC_ERR_FORMAT;
            }
            if (!is_revoked(t, id)) {
                void *p = realloc(t->revoked, (t->n_revoked + 1) * sizeof *t->revoked);
                if (!p) {
                    free(buf);
                    return KVC_ERR_NOMEM;
                }
                t->revoked = p;
                memcpy(t->revoked[t->n_revoked++], id, KVC_KEYID_LEN);
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    free(buf);
    return KVC_OK;
}

/* Lists the *.pub names in dir, sorted, so load order (and the error reported first) does
 * not depend on readdir order. */
static kvc_status list_pub(const char *dir, char ***names_out, size_t *n_out, char *err, size_t errlen)
{
    *names_out = NULL;
    *n_out = 0;
    DIR *d = opendir(dir);
    if (!d) {
        base_errf(err, errlen, "cannot open trust directory %s: %s", dir, strerror(errno));
        return KVC_ERR_IO;
    }
    char **names = NULL;
    size_t n = 0;
    kvc_status st = KVC_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || !ends_with_pub(de->d_name))
            continue;
        if (n >= TRUST_MAX_KEYS) {
            base_errf(err, errlen, "trust directory %s holds more than %d .pub files", dir, TRUST_MAX_KEYS);
            st = KVC_ERR_FORMAT;
            break;
        }
        char **p = realloc(names, (n + 1) * sizeof *names);
        char *copy = strdup(de->d_name);
        if (p)
            names = p;
        if (!p || !copy) {
            free(copy);
            st = KVC_ERR_NOMEM;
            break;
        }
        names[n++] = copy;
    }
    closedir(d);
    if (st != KVC_OK) {
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        return st;
    }
    if (n)
        qsort(names, n, sizeof *names, cmp_str);
    *names_out = names;
    *n_out = n;
    return KVC_OK;
}

kvc_status kvc_trust_open(const char *dir, kvc_trust **out, char *err, size_t errlen)
{
    *out = NULL;
    kvc_status wst = refuse_world_writable(dir, 1, err, errlen);
    if (wst != KVC_OK)
        return wst;
    kvc_trust *t = calloc(1, sizeof *t);
    if (!t)
        return KVC_ERR_NOMEM;
    char **names = NULL;
    size_t n = 0;
    kvc_status st = list_pub(dir, &names, &n, err, errlen);
    if (st == KVC_OK)
        st = load_revoked(t, dir, err, errlen);
    if (st == KVC_OK && n) {
        t->keys = calloc(n, sizeof *t->keys);
        if (!t->keys)
            st = KVC_ERR_NOMEM;
    }
    for (size_t i = 0; st == KVC_OK && i < n; i++) {
        char path[4096];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= sizeof path) {
            base_errf(err, errlen, "path too long: %s/%s", dir, names[i]);
            st = KVC_ERR_IO;
            break;
        }
        char *buf = NULL;
        size_t len = 0;
        st = refuse_world_writable(path, 0, err, errlen);
        if (st == KVC_OK)
            st = kvc_read_small_file(path, KVC_MAX_SMALL_FILE, 0, &buf, &len, err, errlen);
        if (st != KVC_OK)
            break;
        kvc_key *k = NULL;
        /* only public keys belong in a trust directory: a private key here is a mistake */
        st = kvc_key_from_pem_public(buf, len, &k);
        free(buf);
        if (st == KVC_ERR_FORMAT) {
            base_errf(err, errlen, "%s: not an Ed25519 public key in PEM (SubjectPublicKeyInfo) form", path);
            break;
        }
        if (st != KVC_OK) {
            base_errf(err, errlen, "%s: %s", path, kvc_status_str(st));
            break;
        }
        uint8_t id[KVC_KEYID_LEN];
        kvc_key_id(k, id);
        if (is_revoked(t, id))
            kvc_key_free(k);
        else
            t->keys[t->n_keys++] = k;
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (st != KVC_OK) {
        if (st == KVC_ERR_NOMEM)
            base_errf(err, errlen, "out of memory reading trust directory %s", dir);
        kvc_trust_free(t);
        return st;
    }
    *out = t;
    return KVC_OK;
}

kvc_status kvc_trust_lookup(const kvc_trust *t, const uint8_t id[KVC_KEYID_LEN], const kvc_key **key)
{
    *key = NULL;
    if (is_revoked(t, id))
        return KVC_ERR_REVOKED;
    for (size_t i = 0; i < t->n_keys; i++) {
        uint8_t kid[KVC_KEYID_LEN];
        kvc_key_id(t->keys[i], kid);
        if (memcmp(kid, id, KVC_KEYID_LEN) == 0) {
            *key = t->keys[i];
            return KVC_OK;
        }
    }
    return KVC_ERR_UNTRUSTED;
}

size_t kvc_trust_count(const kvc_trust *t)
{
    return t->n_keys;
}

const kvc_key *kvc_trust_key(const kvc_trust *t, size_t i)
{
    return i < t->n_keys ? t->keys[i] : NULL;
}

size_t kvc_trust_revoked_count(const kvc_trust *t)
{
    return t->n_revoked;
}

const uint8_t *kvc_trust_revoked_id(const kvc_trust *t, size_t i)
{
    return i < t->n_revoked ? t->revoked[i] : NULL;
}
