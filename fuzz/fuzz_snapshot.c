/* fuzz_snapshot.c: libFuzzer target for the client side of signed snapshots (fetch/snapshot.c).
 * The first byte picks the way in: 0, the input is a snapshot file (envelope, base64, signature
 * check); 1, the rest is a payload that the harness signs with the spec's TEST-ONLY key and
 * wraps, so mutated payloads reach the payload parser past the signature; 2, the rest is a key
 * document for kvf_keys_find. Seed with fuzz/corpus/fuzz_snapshot (spec/vectors' snapshot). */
#include "fetch/fetch.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static kvc_key *test_key;
static kvc_trust *trust;

/* The spec/vectors test key (spec/kvblob.md section 10) and a trust store holding it. */
static int setup(void)
{
    uint8_t seed[32], id[8];
    static const char phrase[] = "kvpub spec/vectors TEST KEY - never trust this key";
    kvc_sha256(phrase, sizeof phrase - 1, seed);
    if (kvc_key_from_raw_private(seed, &test_key) != KVC_OK)
        return -1;
    char dir[] = "/tmp/kvpub-fuzz-snapshot-XXXXXX", path[128], hex[17], err[256];
    if (!mkdtemp(dir))
        return -1;
    kvc_key_id(test_key, id);
    snprintf(path, sizeof path, "%s/%s.pub", dir, kvc_hex(id, 8, hex));
    int rc = kvc_key_write_public(test_key, path, err, sizeof err) == KVC_OK &&
                     kvc_trust_open(dir, &trust, err, sizeof err) == KVC_OK ? 0 : -1;
    unlink(path);
    rmdir(dir);
    return rc;
}

static void open_snapshot(const void *bytes, size_t len)
{
    kvf_snapshot *s = NULL;
    char err[512];
    if (kvf_snapshot_open(bytes, len, trust, 1700000001, &s, err, sizeof err) != KVF_OK)
        return;
    uint8_t zero[32] = {0};
    const kvf_listing *l = NULL;
    kvf_resolve r = {.doc_sha256 = zero, .model_fp = zero};
    kvf_status st = kvf_snapshot_resolve(s, &r, &l, err, sizeof err);
    for (size_t i = 0; i < kvf_snapshot_count(s); i++)
        st = kvf_snapshot_key_ok(s, kvf_snapshot_get(s, i)->publisher_id, 0, err, sizeof err);
    (void)st;
    kvf_snapshot_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!trust && setup() != 0)
        abort();
    if (size < 1)
        return 0;
    uint8_t mode = data[0] % 3;
    data++, size--;
    if (mode == 0) {
        open_snapshot(data, size);
    } else if (mode == 1) {
        uint8_t sig[64], id[8];
        char sighex[129], idhex[17];
        char *b64 = kvc_base64_encode(data, size, NULL);
        if (!b64 || kvc_sign(test_key, data, size, sig) != KVC_OK) {
            free(b64);
            return 0;
        }
        kvc_key_id(test_key, id);
        size_t n = strlen(b64) + 256;
        char *env = malloc(n);
        if (env) {
            int w = snprintf(env, n, "{\"payload\":\"%s\",\"signatures\":[{\"key_id\":\"%s\",\"sig\":\"%s\"}]}", b64,
                             kvc_hex(id, 8, idhex), kvc_hex(sig, 64, sighex));
            open_snapshot(env, (size_t)w);
        }
        free(env);
        free(b64);
    } else {
        kvc_key *k = NULL;
        uint8_t id[8] = {0};
        char err[256];
        if (size >= 8)
            memcpy(id, data, 8);
        if (kvf_keys_find((const char *)data, size, id, &k, err, sizeof err) == KVF_OK)
            kvc_key_free(k);
    }
    return 0;
}
