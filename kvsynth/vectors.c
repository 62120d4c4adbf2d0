/* kvsynth/vectors.c: `kvsynth vectors -o DIR` writes the spec/vectors blobs (one per codec) from
 * the deterministic data that spec/kvblob.md section "Test vectors" defines, signed by the
 * published TEST-ONLY key, plus SHA256SUMS. Same options, same bytes, on every run. */
#include "base/base.h"
#include "format/kvblob.h"
#include "kvsynth/kvsynth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* TEST-ONLY private key, published in spec/vectors/test-key.key: anyone can sign with it.
 * Its seed is SHA-256("kvpub spec/vectors TEST KEY - never trust this key"); key id
 * e5337331b87e3772. Never put its .pub in a real trust directory. */
static const char test_key_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIIgFkRk2qbBNvUb+udm5IfwoErxeIvF9WhDbXUkAiga/\n"
    "-----END PRIVATE KEY-----\n";
static const char test_pub_pem[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAaWqDhHcHZe10O0vzOWmhiXP8eSm4PyvnWTVRvSUP8CU=\n"
    "-----END PUBLIC KEY-----\n";

enum { V_LAYERS = 2, V_HEAD_KV = 2, V_HEAD_DIM = 8, V_KV_DIM = V_HEAD_KV * V_HEAD_DIM, V_TOKENS = 40, V_CHUNK = 16 };
/* vec-f16-leaves.kvb: the same generator run for more tokens, so that chunk 0 spans three
 * 32 KiB leaves of the chunk digest (560 tokens x 128 bytes = 71 680 bytes) */
enum { V_LONG_TOKENS = 600, V_LONG_CHUNK = 560 };

static void usage(FILE *f)
{
    fputs("usage: kvsynth vectors -o DIR [--created UNIX] [--expires UNIX] [--serial N]\n"
          "Writes DIR/vec-{f16,f16-zstd,q8,q4}.kvb, DIR/vec-f16-leaves.kvb, DIR/test-key.{key,pub}\n"
          "(TEST-ONLY key) and DIR/SHA256SUMS from the deterministic data of spec/kvblob.md\n"
          "(\"Test vectors\").\n"
          "Defaults: --created 1700000000 --expires 0 (never) --serial 1.\n", f);
}

static int write_text(const char *dir, const char *name, const char *text, mode_t mode)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path); /* the mode of an existing file would survive open(O_TRUNC) */
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0) {
        fprintf(stderr, "kvsynth: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t n = strlen(text);
    int ok = write(fd, text, n) == (ssize_t)n;
    if (close(fd) != 0 || !ok) {
        fprintf(stderr, "kvsynth: %s: write failed\n", path);
        return -1;
    }
    return 0;
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return -1;
    *out = v;
    return 0;
}

/* The data of spec/kvblob.md "Test vectors" for nt tokens: exactly representable f16 values,
 * K and V of layer l at k + l * nt * V_KV_DIM and v + ..., and the token ids. */
static void vector_data(int nt, uint16_t *k, uint16_t *v, int32_t *tokens)
{
    uint64_t s = 0x6b76707562ull; /* "kvpub" */
    for (int l = 0; l < V_LAYERS; l++)
        for (int w = 0; w < 2; w++)
            for (int t = 0; t < nt; t++)
                for (int c = 0; c < V_KV_DIM; c++) {
                    int r = (int)(base_splitmix64(&s) >> 53) - 1024;        /* -1024..1023 */
                    float x = (float)r / (float)(1 << (11 - c % 4));  /* exact in f16 */
                    (w ? v : k)[((size_t)l * nt + t) * V_KV_DIM + c] = base_f32_to_f16(x);
                }
    for (int i = 0; i < nt; i++)
        tokens[i] = (i * 7919 + 13) % 32000;
}

int kvsynth_vectors_main(int argc, char **argv)
{
    const char *dir = NULL;
    int64_t created = 1700000000, expires = 0, serial = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        int64_t *num = strcmp(argv[i], "--created") == 0 ? &created
                     : strcmp(argv[i], "--expires") == 0 ? &expires
                     : strcmp(argv[i], "--serial") == 0  ? &serial : NULL;
        if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (num && i + 1 < argc) {
            if (parse_i64(argv[++i], num) != 0) {
                fprintf(stderr, "kvsynth vectors: %s wants a non-negative integer, got '%s'\n", argv[i - 1], argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "kvsynth vectors: unknown or incomplete option '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    if (!dir) {
        fputs("kvsynth vectors: -o DIR is required (try --help)\n", stderr);
        return 2;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "kvsynth vectors: %s: %s\n", dir, strerror(errno));
        return 2;
    }
    if (write_text(dir, "test-key.key", test_key_pem, 0600) || write_text(dir, "test-key.pub", test_pub_pem, 0644))
        return 2;
    char path[4096], err[256];
    snprintf(path, sizeof path, "%s/test-key.key", dir);
    kvc_key *key = NULL;
    if (kvc_key_load_private(path, &key, err, sizeof err) != KVC_OK) {
        fprintf(stderr, "kvsynth vectors: %s\n", err);
        return 2;
    }

    kvb_manifest m;
    kvsynth_manifest_init(&m, "synthetic", V_LAYERS, V_HEAD_KV, V_HEAD_DIM);
    for (int i = 0; i < 32; i++) {
        m.doc_sha256[i] = (uint8_t)i;
        m.model_fingerprint[i] = (uint8_t)(0x20 + i);
        m.tokenizer_fingerprint[i] = (uint8_t)(0x40 + i);
    }
    m.doc_title = "kvpub test vector";
    m.doc_source_uri = "https://example.invalid/kvpub/vector.txt";
    m.doc_media_type = "text/plain";
    m.doc_bytes = 1234;
    m.n_embd = 64;
    m.n_head = 4;
    m.rope_type = KVB_ROPE_NEOX;
    m.rope_n_ctx_orig = 4096;
    m.created = created;
    m.expires = expires;
    m.serial = (uint64_t)serial;

    /* one blob per codec, then the f16 blob whose first chunk spans several leaves */
    static uint16_t k[V_LAYERS * V_LONG_TOKENS * V_KV_DIM], v[V_LAYERS * V_LONG_TOKENS * V_KV_DIM];
    static int32_t tokens[V_LONG_TOKENS];
    char sums[2048] = "";
    int rc = 0;
    for (int c = 0; c <= KVB_CODEC_COUNT && rc == 0; c++) {
        int leaves = c == KVB_CODEC_COUNT;
        m.codec = leaves ? KVB_CODEC_F16 : (kvb_codec)c;
        m.n_tokens = leaves ? V_LONG_TOKENS : V_TOKENS;
        m.chunk_tokens = leaves ? V_LONG_CHUNK : V_CHUNK;
        vector_data((int)m.n_tokens, k, v, tokens);
        const uint16_t *kp[V_LAYERS], *vp[V_LAYERS];
        for (int l = 0; l < V_LAYERS; l++) {
            kp[l] = k + (size_t)l * m.n_tokens * V_KV_DIM;
            vp[l] = v + (size_t)l * m.n_tokens * V_KV_DIM;
        }
        char name[64];
        snprintf(name, sizeof name, leaves ? "vec-f16-leaves.kvb" : "vec-%s.kvb", kvb_codec_name(m.codec));
        snprintf(path, sizeof path, "%s/%s", dir, name);
        uint8_t *blob = NULL;
        size_t len = 0;
        kvb_status st = kvb_write(&m, tokens, kp, vp, NULL, key, NULL, &blob, &len, err, sizeof err);
        if (!st)
            st = kvb_write(&m, tokens, kp, vp, NULL, key, path, NULL, NULL, err, sizeof err);
        if (st) {
            fprintf(stderr, "kvsynth vectors: %s: %s\n", name, err);
            rc = 2;
        } else {
            uint8_t h[KVC_SHA256_LEN];
            char hex[2 * KVC_SHA256_LEN + 1];
            kvc_sha256(blob, len, h);
            size_t used = strlen(sums);
            snprintf(sums + used, sizeof sums - used, "%s  %s\n", kvc_hex(h, KVC_SHA256_LEN, hex), name);
            printf("%s  %zu bytes\n", path, len);
        }
        free(blob);
    }
    kvc_key_free(key);
    if (rc == 0 && write_text(dir, "SHA256SUMS", sums, 0644))
        rc = 2;
    return rc;
}
