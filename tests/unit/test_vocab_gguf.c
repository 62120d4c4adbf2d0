/* test_vocab_gguf.c: eng_vocab_from_gguf on small GGUF files built in memory (key types,
 * unsupported models and pre-tokenizers, id checks), and the public eng_tokenize /
 * eng_detokenize / eng_detok_* / eng_token_is_eog on the shared stories260K model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/tok/tokenizer_internal.h"
#include "tests/unit/gpt2_bytes.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ---- a minimal GGUF v3 writer (metadata only, no tensors) ---- */

struct gw {
    unsigned char buf[1 << 16];
    size_t n;
    uint64_t n_kv;
};

static void put(struct gw *w, const void *p, size_t n)
{
    assert_true(w->n + n <= sizeof w->buf);
    memcpy(w->buf + w->n, p, n);
    w->n += n;
}

static void put_u32(struct gw *w, uint32_t x)
{
    unsigned char b[4] = { (unsigned char)x, (unsigned char)(x >> 8), (unsigned char)(x >> 16),
                           (unsigned char)(x >> 24) };
    put(w, b, 4);
}

static void put_u64(struct gw *w, uint64_t x)
{
    put_u32(w, (uint32_t)x);
    put_u32(w, (uint32_t)(x >> 32));
}

static void put_str(struct gw *w, const char *s)
{
    put_u64(w, strlen(s));
    put(w, s, strlen(s));
}

static void key(struct gw *w, const char *k, uint32_t type)
{
    put_str(w, k);
    put_u32(w, type);
    w->n_kv++;
}

static void gw_begin(struct gw *w)
{
    w->n = 0;
    w->n_kv = 0;
    put(w, "GGUF", 4);
    put_u32(w, 3);
    put_u64(w, 0); /* tensors */
    put_u64(w, 0); /* kv count, patched by gw_open */
}

static void kv_str(struct gw *w, const char *k, const char *v)
{
    key(w, k, GGUF_VT_STRING);
    put_str(w, v);
}

static void kv_u32(struct gw *w, const char *k, uint32_t v)
{
    key(w, k, GGUF_VT_UINT32);
    put_u32(w, v);
}

static void kv_bool(struct gw *w, const char *k, int v)
{
    key(w, k, GGUF_VT_BOOL);
    unsigned char b = (unsigned char)(v != 0);
    put(w, &b, 1);
}

static void kv_strs(struct gw *w, const char *k, const char *const *v, size_t n)
{
    key(w, k, GGUF_VT_ARRAY);
    put_u32(w, GGUF_VT_STRING);
    put_u64(w, n);
    for (size_t i = 0; i < n; i++)
        put_str(w, v[i]);
}

static void kv_i32s(struct gw *w, const char *k, const int32_t *v, size_t n)
{
    key(w, k, GGUF_VT_ARRAY);
    put_u32(w, GGUF_VT_INT32);
    put_u64(w, n);
    for (size_t i = 0; i < n; i++)
        put_u32(w, (uint32_t)v[i]);
}

static gguf_file *gw_open(struct gw *w)
{
    for (int i = 0; i < 8; i++)
        w->buf[16 + i] = (unsigned char)(w->n_kv >> (8 * i));
    gguf_file *g = NULL;
    char err[256] = "";
    if (gguf_open_mem(w->buf, w->n, &g, err, sizeof err) != ENG_OK)
        fail_msg("gguf_open_mem: %s", err);
    return g;
}

/* ---- a byte-level BPE vocabulary: 256 byte characters, "ab", "12", "<|im_end|>" ---- */

static char g_bytes[256][3];
static const char *g_tokens[259];

static void bpe_tokens(void)
{
    for (unsigned b = 0; b < 256; b++) {
        gpt2_byte_utf8(b, g_bytes[b]);
        g_tokens[b] = g_bytes[b];
    }
    g_tokens[256] = "ab";
    g_tokens[257] = "12";
    g_tokens[258] = "<|im_end|>";
}

/* Writes the BPE tokenizer keys, leaving out the one named skip. */
static void bpe_keys(struct gw *w, const char *pre, const char *skip)
{
    static const char *const merges[] = { "a b", "1 2" };
    int32_t types[259];
    for (size_t i = 0; i < 259; i++)
        types[i] = i == 258 ? ENG_TOKTYPE_CONTROL : ENG_TOKTYPE_NORMAL;
    bpe_tokens();
    if (strcmp(skip, "model") != 0)
        kv_str(w, "tokenizer.ggml.model", "gpt2");
    if (pre)
        kv_str(w, "tokenizer.ggml.pre", pre);
    if (strcmp(skip, "tokens") != 0)
        kv_strs(w, "tokenizer.ggml.tokens", g_tokens, 259);
    kv_i32s(w, "tokenizer.ggml.token_type", types, 259);
    kv_strs(w, "tokenizer.ggml.merges", merges, 2);
    kv_u32(w, "tokenizer.ggml.eos_token_id", 258);
}

static struct eng_vocab *load_ok(struct gw *w, const eng_info *info)
{
    gguf_file *g = gw_open(w);
    struct eng_vocab *v = NULL;
    char err[256] = "";
    if (eng_vocab_from_gguf(g, info, &v, err, sizeof err) != ENG_OK)
        fail_msg("eng_vocab_from_gguf: %s", err);
    gguf_close(g); /* the vocabulary copies what it needs */
    return v;
}

static void load_fails(struct gw *w, const eng_info *info, eng_status want, const char *needle)
{
    gguf_file *g = gw_open(w);
    struct eng_vocab *v = (struct eng_vocab *)1;
    char err[256] = "";
    eng_status st = eng_vocab_from_gguf(g, info, &v, err, sizeof err);
    gguf_close(g);
    if (st != want)
        fail_msg("got status %d (%s), want %d", st, err, want);
    assert_null(v);
    if (!strstr(err, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
}

static void expect_ids(const struct eng_vocab *v, const char *text, const int32_t *exp, size_t n_exp)
{
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(eng_vocab_tokenize(v, text, strlen(text), 1, 0, &ids, &n, NULL, 0), ENG_OK);
    assert_int_equal(n, n_exp);
    assert_memory_equal(ids, exp, n * sizeof *ids);
    free(ids);
}

static struct gw g_w;

static void test_bpe_from_gguf(void **state)
{
    (void)state;
    struct gw *w = &g_w;
    /* qwen2 splits digits one by one, so the "1 2" merge never applies; llama-bpe keeps up
     * to three digits together. The space before a digit is its own piece (Ġ = byte 32). */
    gw_begin(w);
    bpe_keys(w, "qwen2", "");
    struct eng_vocab *v = load_ok(w, NULL);
    static const int32_t q[] = { 256, 32, '1', '2' };
    expect_ids(v, "ab 12", q, N_OF(q));
    assert_true(eng_vocab_is_eog(v, 258));
    assert_int_equal(eng_vocab_add_bos(v), 0);
    eng_vocab_free(v);

    /* llama-bpe adds BOS; without a bos_token_id key it is llama.cpp's GPT-2 default, 11 */
    gw_begin(w);
    bpe_keys(w, "llama-bpe", "");
    v = load_ok(w, NULL);
    static const int32_t l[] = { 11, 256, 32, 257 };
    expect_ids(v, "ab 12", l, N_OF(l));
    eng_vocab_free(v);

    /* No pre key: GPT-2's default splitter (" 12" is one piece, the merge then leaves Ġ). */
    gw_begin(w);
    bpe_keys(w, NULL, "");
    v = load_ok(w, NULL);
    static const int32_t d[] = { 256, 32, 257 };
    expect_ids(v, "ab 12", d, N_OF(d));
    eng_vocab_free(v);
}

static void test_gguf_errors(void **state)
{
    (void)state;
    struct gw *w = &g_w;
    gw_begin(w);
    bpe_keys(w, "deepseek-llm", ""); /* still refused: its regexes are long hand-made classes */
    load_fails(w, NULL, ENG_ERR_UNSUPPORTED, "pre-tokenizer 'deepseek-llm'");

    gw_begin(w);
    kv_str(w, "tokenizer.ggml.model", "bert");
    load_fails(w, NULL, ENG_ERR_UNSUPPORTED, "tokenizer model 'bert'");

    gw_begin(w);
    bpe_keys(w, "qwen2", "model");
    load_fails(w, NULL, ENG_ERR_FORMAT, "missing required key 'tokenizer.ggml.model'");

    gw_begin(w);
    bpe_keys(w, "qwen2", "tokens");
    load_fails(w, NULL, ENG_ERR_FORMAT, "missing required key 'tokenizer.ggml.tokens'");

    gw_begin(w);
    kv_u32(w, "tokenizer.ggml.model", 1);
    load_fails(w, NULL, ENG_ERR_FORMAT, "'tokenizer.ggml.model' has the wrong type");

    gw_begin(w);
    kv_str(w, "tokenizer.ggml.model", "gpt2");
    static const int32_t nums[] = { 1, 2 };
    kv_i32s(w, "tokenizer.ggml.tokens", nums, 2);
    load_fails(w, NULL, ENG_ERR_FORMAT, "'tokenizer.ggml.tokens' has the wrong type");

    /* a special id outside the vocabulary keeps the tokenizer's default (GPT-2's 11), as
     * llama.cpp does ("bad special token ... using default id"; test_hparams: 0xffffffff) */
    gw_begin(w);
    bpe_keys(w, "qwen2", "");
    kv_u32(w, "tokenizer.ggml.bos_token_id", 300);
    eng_vocab *v = load_ok(w, NULL);
    assert_int_equal(eng_vocab_bos(v), 11);
    eng_vocab_free(v);

    /* a chat template of the wrong type, after the token arrays were read (under ASan, the
     * leak check sees whether they were freed) */
    gw_begin(w);
    bpe_keys(w, "qwen2", "");
    kv_u32(w, "tokenizer.chat_template", 7);
    load_fails(w, NULL, ENG_ERR_FORMAT, "'tokenizer.chat_template' has the wrong type");

    /* The model embeds fewer rows than the vocabulary has tokens. */
    eng_info info;
    memset(&info, 0, sizeof info);
    info.n_vocab = 200;
    info.bos_id = info.eos_id = -1;
    gw_begin(w);
    bpe_keys(w, "qwen2", "");
    load_fails(w, &info, ENG_ERR_FORMAT, "embeds only 200");
}

/* A six-token SentencePiece vocabulary, "▁a" (id 5) of type type5; add_space_prefix as given
 * (-1: the key left out, SPM's default on). Returns it loaded. */
static struct eng_vocab *spm_six_ids(int type5, int prefix, int with_ids)
{
    struct gw *w = &g_w;
    static const char *const toks[] = { "<unk>", "<s>", "</s>", "\xE2\x96\x81", "a", "\xE2\x96\x81\x61" };
    const int32_t types[] = { 2, 3, 3, 1, 1, type5 };
    gw_begin(w);
    kv_str(w, "tokenizer.ggml.model", "llama");
    kv_strs(w, "tokenizer.ggml.tokens", toks, N_OF(toks));
    kv_i32s(w, "tokenizer.ggml.token_type", types, N_OF(types));
    if (with_ids) {
        kv_u32(w, "tokenizer.ggml.bos_token_id", 1);
        kv_u32(w, "tokenizer.ggml.eos_token_id", 2);
        kv_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    }
    if (prefix >= 0)
        kv_bool(w, "tokenizer.ggml.add_space_prefix", prefix);
    return load_ok(w, NULL);
}

static struct eng_vocab *spm_six(int type5, int prefix) { return spm_six_ids(type5, prefix, 1); }

static void test_spm_from_gguf(void **state)
{
    (void)state;
    for (int prefix = 0; prefix < 2; prefix++) {
        struct eng_vocab *v = spm_six(1, prefix);
        /* No scores: every merge scores 0, and "▁a" is the only two-symbol piece. SPM adds BOS
         * by default. */
        static const int32_t with[] = { 1, 5, 5 }, without[] = { 1, 4, 5 };
        expect_ids(v, "a a", prefix ? with : without, 3);
        eng_vocab_free(v);
    }
    /* As llama.cpp, segmentation merges into a piece of any type: "▁a" typed unused (5) or
     * control (3) is still what "a a" becomes (the type filter kvpub had gave ▁ a ▁ a). */
    static const int32_t retyped[] = { 5, 3 };
    for (size_t i = 0; i < N_OF(retyped); i++) {
        struct eng_vocab *v = spm_six(retyped[i], -1);
        static const int32_t want[] = { 1, 5, 5 };
        expect_ids(v, "a a", want, 3);
        eng_vocab_free(v);
    }
    /* Without bos/eos/unk keys, llama.cpp's SentencePiece defaults (1, 2, 0): BOS is still 1,
     * and 2 ends a generation (kvpub left both out, so no BOS was added) */
    struct eng_vocab *v = spm_six_ids(1, -1, 0);
    static const int32_t want[] = { 1, 5, 5 };
    expect_ids(v, "a a", want, 3);
    assert_true(eng_vocab_is_eog(v, 2));
    eng_vocab_free(v);
}

/* ---- the public API on a real model ---- */

static void test_public_api(void **state)
{
    (void)state;
    const char *shared = getenv("KVPUB_SHARED");
    char path[4096];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", shared ? shared : "../shared");
    FILE *f = fopen(path, "rb");
    if (!f) {
        skip();
        return;
    }
    fclose(f);
    eng_model *m = NULL;
    char err[256] = "";
    if (eng_model_load(path, &m, err, sizeof err) != ENG_OK)
        fail_msg("eng_model_load: %s", err);
    const char *text = "Once upon a time, 1. e4 e5 \xC3\xA9\xF0\x9F\x98\x80 end";
    int32_t *ids = NULL;
    size_t n = 0;
    assert_int_equal(eng_tokenize(m, text, strlen(text), 1, 0, &ids, &n), ENG_OK);
    assert_true(n > 1);
    assert_int_equal(ids[0], eng_model_info(m)->bos_id); /* stories260K adds BOS (id 1) */
    assert_int_equal(ids[0], 1);
    char *out = NULL;
    size_t len = 0;
    /* llama_detokenize: the space prefix comes off the first token only, so not after BOS */
    assert_int_equal(eng_detokenize(m, ids, n, 1, &out, &len), ENG_OK);
    assert_int_equal(len, strlen(text) + 1);
    assert_int_equal(out[0], ' ');
    assert_string_equal(out + 1, text);
    free(out);
    assert_int_equal(eng_detokenize(m, ids + 1, n - 1, 1, &out, &len), ENG_OK);
    assert_string_equal(out, text);
    assert_int_equal(len, strlen(text));
    eng_detok *d = eng_detok_create(m, 1);
    assert_non_null(d);
    char cat[256];
    size_t o = 0, l;
    for (size_t i = 1; i < n; i++) {
        const char *p = eng_detok_push(d, ids[i], &l);
        assert_true(o + l < sizeof cat);
        memcpy(cat + o, p, l);
        o += l;
    }
    const char *p = eng_detok_flush(d, &l);
    memcpy(cat + o, p, l);
    o += l;
    assert_int_equal(o, strlen(text));
    assert_memory_equal(cat, text, o);
    eng_detok_free(d);
    assert_true(eng_token_is_eog(m, 2));
    assert_false(eng_token_is_eog(m, 1));
    free(out);
    free(ids);
    eng_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bpe_from_gguf),
        cmocka_unit_test(test_gguf_errors),
        cmocka_unit_test(test_spm_from_gguf),
        cmocka_unit_test(test_public_api),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
