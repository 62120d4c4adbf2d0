/* mkblob.c: test/bench helper (built by tests/cli/serve_lib.sh, not by the Makefile): writes a
 * signed blob of deterministic pseudo-random KV with format/'s writer, without a model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/kvcrypto.h"
#include "format/kvblob.h"

static uint64_t rng = 88172645463325252ull;
static uint16_t next_f16(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    /* finite halves in [-2, 2]: sign, exponent <= 15, any mantissa */
    return (uint16_t)((rng & 0x83ff) | ((rng >> 20) % 16) << 10);
}

int main(int argc, char **argv)
{
    const char *key = NULL, *out = NULL, *title = "test document", *codec = "f16-zstd", *doc = NULL;
    unsigned tokens = 40, layers = 2, kv_dim = 64, chunk = 16;
    long long expires = 0, seed = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--key")) key = v;
        else if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--title")) title = v;
        else if (!strcmp(a, "--codec")) codec = v;
        else if (!strcmp(a, "--doc")) doc = v;
        else if (!strcmp(a, "--tokens")) tokens = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--layers")) layers = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--kv-dim")) kv_dim = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--chunk-tokens")) chunk = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--expires")) expires = strtoll(v, NULL, 10);
        else if (!strcmp(a, "--seed")) seed = strtoll(v, NULL, 10);
        else {
            fprintf(stderr, "mkblob: unknown option %s\n", a);
            return 2;
        }
    }
    if (!key || !out || !tokens || !layers || !kv_dim || kv_dim % 8) {
        fprintf(stderr, "usage: mkblob --key K.key -o OUT [--tokens N --layers L --kv-dim D(multiple of 8) "
                        "--chunk-tokens C --codec C --title T --doc TEXT --expires UNIX --seed S]\n");
        return 2;
    }
    rng += (uint64_t)seed * 0x9E3779B97F4A7C15ull;
    char err[256];
    kvc_key *k = NULL;
    if (kvc_key_load_private(key, &k, err, sizeof err) != KVC_OK) {
        fprintf(stderr, "mkblob: %s\n", err);
        return 2;
    }
    char docbuf[64];
    if (!doc) {
        snprintf(docbuf, sizeof docbuf, "document seed %lld", seed);
        doc = docbuf;
    }
    kvb_manifest m = {0};
    kvc_sha256(doc, strlen(doc), m.doc_sha256);
    m.doc_title = title;
    m.doc_source_uri = "file:///test/doc.txt";
    m.doc_media_type = "text/plain";
    m.doc_bytes = strlen(doc);
    memset(m.model_fingerprint, 0xab, sizeof m.model_fingerprint);
    m.model_arch = "llama";
    m.head_dim = 8;
    m.n_head_kv = kv_dim / 8;
    m.n_head = m.n_head_kv;
    m.n_embd = kv_dim;
    m.n_layer = layers;
    memset(m.tokenizer_fingerprint, 0xcd, sizeof m.tokenizer_fingerprint);
    m.rope_type = KVB_ROPE_NORMAL;
    m.rope_n_rot = 8;
    m.rope_freq_base = 10000;
    m.rope_freq_scale = 1;
    m.yarn_attn_factor = 1;
    m.yarn_beta_fast = 32;
    m.yarn_beta_slow = 1;
    m.pos0 = 1;
    m.n_tokens = tokens;
    if (kvb_codec_parse(codec, &m.codec) != KVB_OK) {
        fprintf(stderr, "mkblob: unknown codec %s\n", codec);
        return 2;
    }
    m.chunk_tokens = chunk;
    m.created = (int64_t)time(NULL);
    m.expires = expires;
    m.serial = (uint64_t)seed;
    int32_t *ids = malloc(sizeof *ids * tokens);
    uint16_t **kk = calloc(layers, sizeof *kk), **vv = calloc(layers, sizeof *vv);
    if (!ids || !kk || !vv)
        return 2;
    for (unsigned t = 0; t < tokens; t++)
        ids[t] = (int32_t)(t % 1000);
    for (unsigned l = 0; l < layers; l++) {
        kk[l] = malloc((size_t)tokens * kv_dim * 2);
        vv[l] = malloc((size_t)tokens * kv_dim * 2);
        if (!kk[l] || !vv[l])
            return 2;
        for (size_t i = 0; i < (size_t)tokens * kv_dim; i++) {
            kk[l][i] = next_f16();
            vv[l][i] = next_f16();
        }
    }
    kvb_status st = kvb_write(&m, ids, (const uint16_t *const *)kk, (const uint16_t *const *)vv, NULL, k, out,
                              NULL, NULL, err, sizeof err);
    if (st != KVB_OK) {
        fprintf(stderr, "mkblob: %s\n", err);
        return 2;
    }
    for (unsigned l = 0; l < layers; l++) {
        free(kk[l]);
        free(vv[l]);
    }
    free(kk);
    free(vv);
    free(ids);
    kvc_key_free(k);
    return 0;
}
