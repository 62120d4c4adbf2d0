/* kvsynth/blob.c: `kvsynth blob` writes a signed blob of deterministic pseudo-random KV of any
 * shape, codec and seed, without a model: the blobs the server, upload and mirror tests and
 * bench-serve publish. The shared manifest defaults (kvsynth_manifest_init) also make the
 * spec/vectors blobs. */
#include "format/kvblob.h"
#include "kvsynth/kvsynth.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/kvcrypto.h"

void kvsynth_manifest_init(kvb_manifest *m, const char *arch, uint32_t n_layer, uint32_t n_head_kv,
                           uint32_t head_dim)
{
    memset(m, 0, sizeof *m);
    m->model_arch = arch;
    m->n_layer = n_layer;
    m->n_head_kv = n_head_kv;
    m->head_dim = head_dim;
    m->rope_n_rot = head_dim;
    m->rope_freq_base = 10000.0;
    m->rope_freq_scale = 1.0;
    m->rope_scaling = KVB_SCALING_NONE;
    m->yarn_attn_factor = 1.0;
    m->yarn_beta_fast = 32.0;
    m->yarn_beta_slow = 1.0;
    m->pos0 = 1;
}

static void usage(FILE *f)
{
    fputs("usage: kvsynth blob --key K.key -o OUT.kvb [options]\n"
          "Writes a signed blob of deterministic pseudo-random f16 KV (finite values in [-2, 2]),\n"
          "without a model: model and tokenizer fingerprints are fixed dummies (ab.. and cd..).\n"
          "  --tokens N        document tokens (default 40)\n"
          "  --layers L        layers (default 2)\n"
          "  --kv-dim D        K/V width per layer, a multiple of 8 (heads of 8; default 64)\n"
          "  --chunk-tokens C  tokens per chunk (default 16)\n"
          "  --codec C         f16-zstd (default), f16, q8, q4\n"
          "  --title T         document title (default \"test document\")\n"
          "  --doc TEXT        the document text its hash is taken from (default: from the seed)\n"
          "  --expires UNIX    expiry time (default 0: never)\n"
          "  --seed S          data, document and serial seed (default 1)\n"
          "  --wrong-raw-digest I  f16-zstd: sign zeros as chunk I's decoded digest (raw_sha256),\n"
          "                    a blob whose decoded copy must fail (tests)\n"
          "Exit: 0 written, 2 usage or I/O error.\n", f);
}

/* xorshift64 over finite halves: sign, exponent <= 15, any mantissa */
static uint16_t next_f16(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint16_t)((*s & 0x83ff) | ((*s >> 20) % 16) << 10);
}

/* A whole decimal number in 0..max. Returns 0, or -1. */
static int parse_num(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-' || v > max)
        return -1;
    *out = v;
    return 0;
}

typedef struct blob_opts {
    const char *key, *out, *title, *codec, *doc;
    unsigned long long tokens, layers, kv_dim, chunk, expires, seed;
    unsigned long long wrong_raw; /* chunk index, or ULLONG_MAX: none */
} blob_opts;

static int parse_args(int argc, char **argv, blob_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 1;
        }
        const char **str = strcmp(a, "--key") == 0     ? &o->key
                           : strcmp(a, "-o") == 0      ? &o->out
                           : strcmp(a, "--title") == 0 ? &o->title
                           : strcmp(a, "--codec") == 0 ? &o->codec
                           : strcmp(a, "--doc") == 0   ? &o->doc : NULL;
        unsigned long long *num = strcmp(a, "--tokens") == 0         ? &o->tokens
                                  : strcmp(a, "--layers") == 0       ? &o->layers
                                  : strcmp(a, "--kv-dim") == 0       ? &o->kv_dim
                                  : strcmp(a, "--chunk-tokens") == 0 ? &o->chunk
                                  : strcmp(a, "--expires") == 0      ? &o->expires
                                  : strcmp(a, "--seed") == 0         ? &o->seed
                                  : strcmp(a, "--wrong-raw-digest") == 0 ? &o->wrong_raw : NULL;
        if ((!str && !num) || i + 1 >= argc) {
            fprintf(stderr, "kvsynth blob: unknown or incomplete option '%s' (try --help)\n", a);
            return -1;
        }
        const char *v = argv[++i];
        if (str) {
            *str = v;
        } else if (parse_num(v, num == &o->expires || num == &o->seed ? (unsigned long long)INT64_MAX : KVB_MAX_TOKENS,
                             num) != 0) {
            fprintf(stderr, "kvsynth blob: %s wants a whole number, got '%s'\n", a, v);
            return -1;
        }
    }
    if (!o->key || !o->out) {
        fputs("kvsynth blob: --key and -o are required (try --help)\n", stderr);
        return -1;
    }
    if (!o->tokens || !o->layers || !o->kv_dim || o->kv_dim % 8 || !o->chunk) {
        fputs("kvsynth blob: --tokens, --layers, --chunk-tokens must be positive and --kv-dim a positive "
              "multiple of 8\n", stderr);
        return -1;
    }
    return 0;
}

/* K and V of every layer, (tokens, kv_dim) f16 each, from the seed. NULL when out of memory;
 * free with free_kv. */
static uint16_t **make_kv(const blob_opts *o)
{
    uint16_t **kv = calloc(2 * o->layers, sizeof *kv);
    uint64_t s = 88172645463325252ull + o->seed * 0x9E3779B97F4A7C15ull;
    size_t n = (size_t)o->tokens * o->kv_dim;
    for (size_t l = 0; kv && l < o->layers; l++) {
        kv[l] = malloc(n * sizeof **kv);
        kv[o->layers + l] = malloc(n * sizeof **kv);
        if (!kv[l] || !kv[o->layers + l])
            return kv; /* the caller sees the NULL row */
        for (size_t i = 0; i < n; i++) {
            kv[l][i] = next_f16(&s);
            kv[o->layers + l][i] = next_f16(&s);
        }
    }
    return kv;
}

static void free_kv(uint16_t **kv, size_t layers)
{
    for (size_t l = 0; kv && l < 2 * layers; l++)
        free(kv[l]);
    free(kv);
}

/* Writes blob b (n bytes) to path with chunk i's raw_sha256 replaced by zeros in its manifest,
 * signed again with key. 0, or -1 with the reason on stderr. */
static int write_wrong_raw(const uint8_t *b, size_t n, unsigned long long i, const kvc_key *key, const char *path)
{
    kvb_status pst;
    const size_t ml = kvb_prefix_len(b, n, &pst) - KVB_HEADER_LEN - KVC_SIG_LEN; /* our own blob: valid */
    const size_t d = (KVB_HEADER_LEN + ml + KVC_SIG_LEN + KVB_ALIGN - 1) & ~(size_t)(KVB_ALIGN - 1);
    json_t *root = json_loadb((const char *)b + 32, ml, 0, NULL);
    json_t *c = json_array_get(json_object_get(root, "chunks"), (size_t)i);
    if (!c || !json_object_get(c, "raw_sha256")) {
        fprintf(stderr, "kvsynth blob: --wrong-raw-digest %llu: no such chunk with a raw_sha256 (f16-zstd only)\n", i);
        json_decref(root);
        return -1;
    }
    char zeros[65];
    memset(zeros, '0', 64);
    zeros[64] = 0;
    json_object_set_new(c, "raw_sha256", json_string(zeros));
    char *js = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(root);
    const size_t nl = js ? strlen(js) : 0, nd = (32 + nl + KVC_SIG_LEN + 63) & ~(size_t)63;
    uint8_t *o = js ? calloc(1, nd + (n - d)) : NULL;
    int rc = -1;
    if (o) {
        memcpy(o, b, 32);
        for (int k = 0; k < 4; k++)
            o[16 + k] = (uint8_t)(nl >> (8 * k));
        memcpy(o + 32, js, nl);
        memcpy(o + nd, b + d, n - d);
        FILE *f = NULL;
        if (kvc_sign(key, o, 32 + nl, o + 32 + nl) == KVC_OK && (f = fopen(path, "wb")) &&
            fwrite(o, 1, nd + (n - d), f) == nd + (n - d))
            rc = 0;
        if (f && fclose(f) != 0)
            rc = -1;
        if (rc)
            fprintf(stderr, "kvsynth blob: cannot write %s: %s\n", path, strerror(errno));
    } else {
        fputs("kvsynth blob: out of memory\n", stderr);
    }
    free(o);
    free(js);
    return rc;
}

int kvsynth_blob_main(int argc, char **argv)
{
    blob_opts o = {.title = "test document", .codec = "f16-zstd", .tokens = 40, .layers = 2, .kv_dim = 64,
                   .chunk = 16, .seed = 1, .wrong_raw = ULLONG_MAX};
    int pr = parse_args(argc, argv, &o);
    if (pr)
        return pr > 0 ? 0 : 2;
    char docbuf[64], err[256];
    if (!o.doc) {
        snprintf(docbuf, sizeof docbuf, "document seed %llu", o.seed);
        o.doc = docbuf;
    }
    kvb_manifest m;
    kvsynth_manifest_init(&m, "llama", (uint32_t)o.layers, (uint32_t)(o.kv_dim / 8), 8);
    if (kvb_codec_parse(o.codec, &m.codec) != KVB_OK) {
        fprintf(stderr, "kvsynth blob: unknown codec '%s' (f16-zstd, f16, q8, q4)\n", o.codec);
        return 2;
    }
    kvc_sha256(o.doc, strlen(o.doc), m.doc_sha256);
    m.doc_title = o.title;
    m.doc_source_uri = "file:///test/doc.txt";
    m.doc_media_type = "text/plain";
    m.doc_bytes = strlen(o.doc);
    memset(m.model_fingerprint, 0xab, sizeof m.model_fingerprint);
    memset(m.tokenizer_fingerprint, 0xcd, sizeof m.tokenizer_fingerprint);
    m.n_head = m.n_head_kv;
    m.n_embd = (uint32_t)o.kv_dim;
    m.n_tokens = (uint32_t)o.tokens;
    m.chunk_tokens = (uint32_t)o.chunk;
    m.created = (int64_t)time(NULL);
    m.expires = (int64_t)o.expires;
    m.serial = o.seed;

    kvc_key *key = NULL;
    if (kvc_key_load_private(o.key, &key, err, sizeof err) != KVC_OK) {
        fprintf(stderr, "kvsynth blob: %s\n", err);
        return 2;
    }
    int32_t *ids = malloc(sizeof *ids * o.tokens);
    uint16_t **kv = make_kv(&o);
    int ok = ids && kv;
    for (size_t l = 0; ok && l < 2 * o.layers; l++)
        ok = kv[l] != NULL;
    int rc = 2;
    if (!ok) {
        fputs("kvsynth blob: out of memory\n", stderr);
    } else {
        for (size_t t = 0; t < o.tokens; t++)
            ids[t] = (int32_t)(t % 1000);
        uint8_t *mem = NULL;
        size_t len = 0;
        const int wrong = o.wrong_raw != ULLONG_MAX;
        if (kvb_write(&m, ids, (const uint16_t *const *)kv, (const uint16_t *const *)kv + o.layers, NULL, key,
                      wrong ? NULL : o.out, wrong ? &mem : NULL, wrong ? &len : NULL, err, sizeof err) != KVB_OK)
            fprintf(stderr, "kvsynth blob: %s\n", err);
        else
            rc = wrong && write_wrong_raw(mem, len, o.wrong_raw, key, o.out) != 0 ? 2 : 0;
        free(mem);
    }
    free_kv(kv, o.layers);
    free(ids);
    kvc_key_free(key);
    return rc;
}
