/* test_hparams.c: eng_hparams_from_gguf on the shared models, on kvsynth models (YaRN) and on
 * hand-built GGUFs (unsupported architectures and attention kinds), plus the model/tokenizer
 * fingerprints: known answers from an independent Python implementation of
 * spec/fingerprints.md, invariance and sensitivity, and the on-disk cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine_internal.h"
#include "tests/unit/gguf_test_build.h"
#include "tests/unit/test_util.h"

static char g_tmp[256];

static const char *shared_dir(void)
{
    const char *s = getenv("KVPUB_SHARED");
    return s && *s ? s : "/work/shared";
}

static gguf_file *open_path(const char *path)
{
    char err[512] = "";
    gguf_file *g = NULL;
    if (gguf_open(path, &g, err, sizeof err) != ENG_OK)
        fail_msg("gguf_open(%s): %s", path, err);
    return g;
}

static gguf_file *open_shared(const char *rel)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/models/%s", shared_dir(), rel);
    return open_path(path);
}

static void hparams_ok(const gguf_file *g, eng_info *info)
{
    char err[512] = "";
    if (eng_hparams_from_gguf(g, info, err, sizeof err) != ENG_OK)
        fail_msg("eng_hparams_from_gguf: %s", err);
}

/* Runs build/kvsynth (or $BUILD/kvsynth) with args, writing into g_tmp/out. */
static void kvsynth(const char *args, const char *out)
{
    const char *b = getenv("BUILD");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s/kvsynth %s --seed 7 -o %s/%s", b && *b ? b : "build", args, g_tmp, out);
    if (system(cmd) != 0)
        fail_msg("command failed: %s", cmd);
}

static void tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", g_tmp, name);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/kvpub-test-hparams-XXXXXX");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return tu_rm_rf(g_tmp);
}

/* ---- shared models ---- */

/* The shape and RoPE fields every model states, as each shared model must read. */
static const struct {
    const char *file, *arch;
    int n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx_train;
    float norm_eps;
    int rope_type, n_rot;
    float freq_base;
    int weight_type;
} k_shapes[] = {
    {"stories260K.gguf", "llama", 5, 64, 8, 4, 8, 172, 512, 512, 1e-5f, ENG_ROPE_NORMAL, 8, 10000.0f, GGML_T_F32},
    /* head_dim 32 is key_length, not embd/head (16) */
    {"synth/synth-qwen3-tiny-f16.gguf", "qwen3", 2, 64, 4, 2, 32, 192, 512, 2048, 1e-6f, ENG_ROPE_NEOX, 32, 1e6f,
     GGML_T_F16},
};

static void test_shared_shapes(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof k_shapes / sizeof k_shapes[0]; k++) {
        gguf_file *g = open_shared(k_shapes[k].file);
        eng_info i;
        hparams_ok(g, &i);
        assert_string_equal(i.arch, k_shapes[k].arch);
        assert_int_equal(i.n_layer, k_shapes[k].n_layer);
        assert_int_equal(i.n_embd, k_shapes[k].n_embd);
        assert_int_equal(i.n_head, k_shapes[k].n_head);
        assert_int_equal(i.n_head_kv, k_shapes[k].n_head_kv);
        assert_int_equal(i.head_dim, k_shapes[k].head_dim);
        assert_int_equal(i.n_ff, k_shapes[k].n_ff);
        assert_int_equal(i.n_vocab, k_shapes[k].n_vocab);
        assert_int_equal(i.n_ctx_train, k_shapes[k].n_ctx_train);
        assert_float_equal(i.norm_eps, k_shapes[k].norm_eps, 0);
        assert_int_equal(i.rope.type, k_shapes[k].rope_type);
        assert_int_equal(i.rope.n_rot, k_shapes[k].n_rot);
        assert_float_equal(i.rope.freq_base, k_shapes[k].freq_base, 0);
        assert_int_equal(i.weight_type, k_shapes[k].weight_type);
        gguf_close(g);
    }
}

/* stories260K's scaling, special tokens and tokenizer */
static void test_stories(void **state)
{
    (void)state;
    gguf_file *g = open_shared("stories260K.gguf");
    eng_info i;
    hparams_ok(g, &i);
    assert_float_equal(i.rope.freq_scale, 1.0f, 0);
    assert_int_equal(i.rope.scaling, ENG_ROPE_SCALING_NONE);
    assert_float_equal(i.rope.yarn_ext_factor, 0.0f, 0);
    assert_int_equal(i.bos_id, 1);
    assert_int_equal(i.eos_id, 2);
    assert_int_equal(i.add_bos, 1);
    assert_string_equal(i.tokenizer, "llama");
    gguf_close(g);
}

static void test_synth_qwen2(void **state)
{
    (void)state;
    eng_info i;
    gguf_file *g = open_shared("synth/synth-qwen2-tiny-q80.gguf");
    hparams_ok(g, &i);
    assert_string_equal(i.arch, "qwen2");
    assert_int_equal(i.head_dim, 16);
    assert_int_equal(i.rope.type, ENG_ROPE_NEOX);
    assert_int_equal(i.weight_type, GGML_T_Q8_0);
    gguf_close(g);
}

/* ---- hand-built metadata ---- */

typedef enum extra {
    X_NONE, X_SLIDING, X_SLIDING0, X_MROPE, X_HEAD_ARR, X_NO_LAYERS, X_LONGROPE, X_LINEAR, X_LEGACY,
    X_GPT2, X_BAD_BOS, X_PARTIAL_ROT, X_ODD_ROT, X_WIDE_ROT,
} extra;

static uint8_t *build(const char *arch, extra x, size_t *n)
{
    gguf_tb b;
    tb_init(&b);
    char k[128];
#define K(s) (snprintf(k, sizeof k, "%s.%s", arch, s), k)
    tb_str(&b, "general.architecture", arch);
    if (x != X_NO_LAYERS)
        tb_u32(&b, K("block_count"), 1);
    tb_u32(&b, K("embedding_length"), 32);
    if (x == X_HEAD_ARR) {
        int32_t h[1] = {4};
        tb_arr_num(&b, K("attention.head_count"), GGUF_VT_INT32, 1, h, 4);
    } else {
        tb_u32(&b, K("attention.head_count"), 4);
    }
    tb_u32(&b, K("feed_forward_length"), 64);
    /* stablelm states its LayerNorm epsilon under its own key; each arch gets only its own */
    tb_f32(&b, strcmp(arch, "stablelm") == 0 ? K("attention.layer_norm_epsilon") : K("attention.layer_norm_rms_epsilon"),
           2e-5f);
    if (x == X_SLIDING || x == X_SLIDING0)
        tb_u32(&b, K("attention.sliding_window"), x == X_SLIDING ? 4096 : 0);
    if (x == X_MROPE) {
        int32_t s[4] = {2, 2, 0, 0};
        tb_arr_num(&b, K("rope.dimension_sections"), GGUF_VT_INT32, 4, s, 4);
    }
    if (x == X_LONGROPE)
        tb_str(&b, K("rope.scaling.type"), "longrope");
    if (x == X_LINEAR) {
        tb_str(&b, K("rope.scaling.type"), "linear");
        tb_f32(&b, K("rope.scaling.factor"), 4.0f);
    }
    if (x == X_LEGACY)
        tb_f32(&b, K("rope.scale_linear"), 2.0f);
    if (x == X_PARTIAL_ROT || x == X_ODD_ROT || x == X_WIDE_ROT)
        tb_u32(&b, K("rope.dimension_count"), x == X_PARTIAL_ROT ? 4 : x == X_ODD_ROT ? 5 : 10);
    tb_str(&b, "tokenizer.ggml.model", x == X_GPT2 ? "gpt2" : "llama");
    tb_u32(&b, "tokenizer.ggml.bos_token_id", x == X_BAD_BOS ? 100 : 1);
    if (x == X_BAD_BOS)
        tb_u32(&b, "tokenizer.ggml.eos_token_id", 0xffffffffu);
#undef K
    uint64_t ne[2] = {32, 10};
    tb_tensor(&b, "token_embd.weight", GGML_T_F32, 2, ne, 32 * 10 * 4, 0);
    uint8_t *p = tb_finish(&b, n, NULL, NULL, NULL);
    tb_free(&b);
    return p;
}

static eng_status try_build(const char *arch, extra x, eng_info *info, char *err, size_t errlen)
{
    size_t n;
    uint8_t *p = build(arch, x, &n);
    gguf_file *g = NULL;
    err[0] = 0;
    eng_status st = gguf_open_mem(p, n, &g, err, errlen);
    assert_int_equal(st, ENG_OK);
    st = eng_hparams_from_gguf(g, info, err, errlen);
    gguf_close(g);
    free(p);
    return st;
}

static void test_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *arch;
        extra x;
        eng_status st;
        const char *words;
    } cases[] = {
        {"gemma2", X_NONE, ENG_ERR_UNSUPPORTED,
         "unsupported architecture 'gemma2' (supported: llama, qwen2, qwen3, stablelm)"},
        {"llama", X_SLIDING, ENG_ERR_UNSUPPORTED, "sliding-window attention (llama.attention.sliding_window = 4096)"},
        {"qwen2", X_MROPE, ENG_ERR_UNSUPPORTED, "M-RoPE ('qwen2.rope.dimension_sections')"},
        {"qwen3", X_HEAD_ARR, ENG_ERR_UNSUPPORTED, "'qwen3.attention.head_count' is a per-layer array"},
        {"llama", X_NO_LAYERS, ENG_ERR_FORMAT, "missing required key 'llama.block_count'"},
        {"llama", X_LONGROPE, ENG_ERR_UNSUPPORTED, "RoPE scaling type 'longrope' is not supported"},
        {"llama", X_PARTIAL_ROT, ENG_ERR_UNSUPPORTED, "partial rotary"},
        {"qwen2", X_PARTIAL_ROT, ENG_ERR_UNSUPPORTED, "llama.cpp's qwen2 graph refuses it too"},
        {"stablelm", X_ODD_ROT, ENG_ERR_FORMAT, "stablelm.rope.dimension_count 5 is odd or exceeds the head dim 8"},
        {"stablelm", X_WIDE_ROT, ENG_ERR_FORMAT, "stablelm.rope.dimension_count 10 is odd or exceeds"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        eng_info info;
        char err[512];
        eng_status st = try_build(cases[i].arch, cases[i].x, &info, err, sizeof err);
        if (st != cases[i].st || !strstr(err, cases[i].words))
            fail_msg("case %zu: status %d message '%s', expected %d with '%s'", i, st, err, cases[i].st,
                     cases[i].words);
    }
}

static void test_defaults_and_scaling(void **state)
{
    (void)state;
    eng_info i;
    char err[512];
    assert_int_equal(try_build("llama", X_NONE, &i, err, sizeof err), ENG_OK);
    assert_int_equal(i.n_head_kv, 4);  /* defaults to head_count */
    assert_int_equal(i.head_dim, 8);   /* 32 / 4 */
    assert_int_equal(i.rope.n_rot, 8);
    assert_float_equal(i.rope.freq_base, 10000.0f, 0);
    assert_int_equal(i.n_vocab, 10);   /* from token_embd ne[1] */
    assert_int_equal(i.add_bos, 1);    /* llama tokenizer default */
    assert_int_equal(i.eos_id, 2);     /* no eos key: llama.cpp's SentencePiece default */
    assert_int_equal(i.weight_type, -1); /* no blk.0.attn_q.weight */

    assert_int_equal(i.norm, ENG_NORM_RMS);
    assert_float_equal(i.norm_eps, 2e-5f, 0);

    assert_int_equal(try_build("stablelm", X_PARTIAL_ROT, &i, err, sizeof err), ENG_OK);
    assert_int_equal(i.norm, ENG_NORM_LAYER);
    assert_float_equal(i.norm_eps, 2e-5f, 0); /* from stablelm.attention.layer_norm_epsilon */
    assert_int_equal(i.rope.type, ENG_ROPE_NEOX);
    assert_int_equal(i.rope.n_rot, 4);        /* half of each 8-dim head turns */

    assert_int_equal(try_build("llama", X_SLIDING0, &i, err, sizeof err), ENG_OK); /* 0 = off */

    /* special ids outside the vocabulary keep the tokenizer's default, as llama.cpp does ("bad
     * special token ... using default id"), 0xffffffff included */
    assert_int_equal(try_build("llama", X_BAD_BOS, &i, err, sizeof err), ENG_OK);
    assert_int_equal(i.bos_id, 1);
    assert_int_equal(i.eos_id, 2);

    assert_int_equal(try_build("qwen2", X_GPT2, &i, err, sizeof err), ENG_OK);
    assert_string_equal(i.tokenizer, "gpt2");
    assert_int_equal(i.add_bos, 0);    /* gpt2 default */

    assert_int_equal(try_build("llama", X_LINEAR, &i, err, sizeof err), ENG_OK);
    assert_int_equal(i.rope.scaling, ENG_ROPE_SCALING_LINEAR);
    assert_float_equal(i.rope.freq_scale, 0.25f, 0);

    assert_int_equal(try_build("llama", X_LEGACY, &i, err, sizeof err), ENG_OK);
    assert_int_equal(i.rope.scaling, ENG_ROPE_SCALING_LINEAR);
    assert_float_equal(i.rope.freq_scale, 0.5f, 0);
}

static void test_yarn_from_kvsynth(void **state)
{
    (void)state;
    kvsynth("--arch qwen3 --layers 1 --dim 64 --heads 4 --kv-heads 2 --head-dim 16 --ffn 64 --vocab 300 "
            "--ctx 1024 --yarn 4", "yarn.gguf");
    char p[512];
    tmp_path(p, sizeof p, "yarn.gguf");
    gguf_file *g = open_path(p);
    eng_info i;
    hparams_ok(g, &i);
    assert_int_equal(i.rope.scaling, ENG_ROPE_SCALING_YARN);
    assert_float_equal(i.rope.freq_scale, 0.25f, 0);
    assert_int_equal(i.rope.n_ctx_orig, 1024);
    assert_int_equal(i.n_ctx_train, 4096);
    assert_float_equal(i.rope.yarn_ext_factor, 1.0f, 0);
    assert_float_equal(i.rope.yarn_attn_factor, 1.0f, 0);
    assert_float_equal(i.rope.yarn_beta_fast, 32.0f, 0);
    assert_float_equal(i.rope.yarn_beta_slow, 1.0f, 0);
    assert_int_equal(i.n_vocab, 300);
    assert_int_equal(i.head_dim, 16);
    gguf_close(g);
}

/* ---- fingerprints ---- */

static void hex(const uint8_t *b, char *out)
{
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static void fps(const gguf_file *g, char model[65], char tok[65])
{
    eng_info info;
    uint8_t m[32], t[32];
    hparams_ok(g, &info);
    eng_fingerprint_model_compute(g, &info, m);
    eng_fingerprint_tokenizer_compute(g, &info, t);
    hex(m, model);
    hex(t, tok);
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)sz);
    assert_int_equal(fread(p, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return p;
}

static gguf_file *open_buf(const uint8_t *p, size_t n)
{
    char err[512] = "";
    gguf_file *g = NULL;
    if (gguf_open_mem(p, n, &g, err, sizeof err) != ENG_OK)
        fail_msg("gguf_open_mem: %s", err);
    return g;
}

/* fps() of the GGUF file at path / of the GGUF bytes p[0..n). */
static void fps_path(const char *path, char model[65], char tok[65])
{
    gguf_file *g = open_path(path);
    fps(g, model, tok);
    gguf_close(g);
}

static void fps_buf(const uint8_t *p, size_t n, char model[65], char tok[65])
{
    gguf_file *g = open_buf(p, n);
    fps(g, model, tok);
    gguf_close(g);
}

/* Expected values from an independent Python (hashlib + struct) implementation of
 * spec/fingerprints.md run over the shared files. */
static void test_fingerprint_known_answers(void **state)
{
    (void)state;
    static const struct {
        const char *file, *model, *tok;
    } k[] = {
        {"stories260K.gguf", "bd9fe1f4f473efa7d028221224fa69682745a8eaa6fb33ea8e06ddb709d95345",
         "0de7dc8f1a4b3b629e90ec86ed514dc7e1269c1e85fc57b2f5bd33db0535b71b"},
        {"synth/synth-qwen3-tiny-q80.gguf", "56c5d8c695bb0a3e68cb78f4c1b4863e1a0dcd8fdb7680462066a89a3f8d4613",
         "0de7dc8f1a4b3b629e90ec86ed514dc7e1269c1e85fc57b2f5bd33db0535b71b"},
        {"synth/synth-qwen2-tiny-f16.gguf", "c1b079c0c58d494ae0562d81da14dcae479c7f572cbd81a3153b3fee51a19163",
         "0de7dc8f1a4b3b629e90ec86ed514dc7e1269c1e85fc57b2f5bd33db0535b71b"},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        gguf_file *g = open_shared(k[i].file);
        char m[65], t[65];
        fps(g, m, t);
        assert_string_equal(m, k[i].model);
        assert_string_equal(t, k[i].tok);
        gguf_close(g);
    }
}

static void test_fingerprint_invariance(void **state)
{
    (void)state;
    const char *base = "--arch llama --layers 2 --dim 64 --heads 4 --kv-heads 2 --ffn 128 --vocab 400 --tokenizer bpe";
    char args[512];
    snprintf(args, sizeof args, "%s --type f16 --name first", base);
    kvsynth(args, "a.gguf");
    snprintf(args, sizeof args, "%s --type f16 --name second-name", base);
    kvsynth(args, "renamed.gguf");
    snprintf(args, sizeof args, "%s --type q8_0", base);
    kvsynth(args, "q8.gguf");
    char pa[512], pb[512], pq[512];
    tmp_path(pa, sizeof pa, "a.gguf");
    tmp_path(pb, sizeof pb, "renamed.gguf");
    tmp_path(pq, sizeof pq, "q8.gguf");
    size_t na, nb;
    uint8_t *a = slurp(pa, &na), *b = slurp(pb, &nb);
    assert_true(na != nb || memcmp(a, b, na) != 0); /* the files differ (general.name) */

    char ma[65], ta[65], mb[65], tb[65], mq[65], tq[65];
    fps_buf(a, na, ma, ta);
    fps_path(pb, mb, tb);
    assert_string_equal(ma, mb);
    assert_string_equal(ta, tb);
    fps_path(pq, mq, tq);
    assert_string_not_equal(ma, mq);   /* another quantization is another model */
    assert_string_equal(ta, tq);       /* same tokenizer */

    /* One weight byte changed: model fingerprint changes, tokenizer fingerprint does not. */
    gguf_file *g = open_buf(a, na);
    const gguf_tensor *t = gguf_find_tensor(g, "blk.1.ffn_up.weight");
    size_t at = (size_t)((const uint8_t *)t->data - a) + 100;
    gguf_close(g);
    a[at] ^= 1;
    char m2[65], t2[65];
    fps_buf(a, na, m2, t2);
    assert_string_not_equal(m2, ma);
    assert_string_equal(t2, ta);
    a[at] ^= 1;

    /* One merge changed (same length, so the file stays valid): tokenizer fingerprint moves. */
    g = open_buf(a, na);
    gguf_str s;
    assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.merges", 5, &s), 1);
    size_t mo = (size_t)((const uint8_t *)s.p - a);
    gguf_close(g);
    a[mo] = a[mo] == 'x' ? 'y' : 'x';
    fps_buf(a, na, m2, t2);
    assert_string_equal(m2, ma);
    assert_string_not_equal(t2, ta);
    free(a);
    free(b);
}

static void test_tokenizer_score_change(void **state)
{
    (void)state;
    kvsynth("--arch llama --layers 1 --dim 32 --heads 4 --ffn 64 --vocab 300", "spm.gguf");
    char p[512];
    tmp_path(p, sizeof p, "spm.gguf");
    size_t n;
    uint8_t *a = slurp(p, &n);
    char m1[65], t1[65], m2[65], t2[65];
    gguf_file *g = open_buf(a, n);
    fps(g, m1, t1);
    gguf_vtype et;
    uint64_t cnt;
    const void *d;
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.scores", &et, &cnt, &d), 1);
    assert_int_equal(et, GGUF_VT_FLOAT32);
    size_t at = (size_t)((const uint8_t *)d - a) + 4 * 290;
    gguf_close(g);
    a[at] ^= 0x40;
    fps_buf(a, n, m2, t2);
    assert_string_equal(m1, m2);
    assert_string_not_equal(t1, t2);
    free(a);
}

static int count_cache_files(const char *dir, char *name, size_t n)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int c = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, "model-", 6) == 0) {
            c++;
            snprintf(name, n, "%s/%s", dir, e->d_name);
        }
    closedir(d);
    return c;
}

static void test_fingerprint_cache(void **state)
{
    (void)state;
    char cdir[512], model[512], entry[1024], err[512];
    tmp_path(cdir, sizeof cdir, "cache/sub");
    kvsynth("--arch qwen2 --layers 1 --dim 64 --heads 4 --ffn 64 --vocab 300", "c.gguf");
    tmp_path(model, sizeof model, "c.gguf");
    gguf_file *g = open_path(model);
    eng_info info;
    hparams_ok(g, &info);
    uint8_t want[32], got[32];
    eng_fingerprint_model_compute(g, &info, want);
    assert_int_equal(count_cache_files(cdir, entry, sizeof entry), 0);
    assert_int_equal(eng_fingerprint_model_cached(model, g, &info, cdir, got, err, sizeof err), ENG_OK);
    assert_memory_equal(got, want, 32);
    assert_int_equal(count_cache_files(cdir, entry, sizeof entry), 1);
    char hx[65];
    hex(want, hx);
    size_t n;
    uint8_t *c = slurp(entry, &n);
    assert_non_null(memmem(c, n, hx, 64));

    /* A hit must come from the entry, not from rehashing: plant a different value there. */
    uint8_t *h = memmem(c, n, hx, 64);
    memset(h, 'a', 64);
    FILE *f = fopen(entry, "wb");
    assert_int_equal(fwrite(c, 1, n, f), n);
    fclose(f);
    assert_int_equal(eng_fingerprint_model_cached(model, g, &info, cdir, got, err, sizeof err), ENG_OK);
    for (int i = 0; i < 32; i++)
        assert_int_equal(got[i], 0xaa);
    gguf_close(g);

    /* A new mtime invalidates the entry (the reopened file carries the new stat). */
    struct timespec ts[2] = {{.tv_sec = 1000000000, .tv_nsec = 5}, {.tv_sec = 1000000000, .tv_nsec = 5}};
    assert_int_equal(utimensat(AT_FDCWD, model, ts, 0), 0);
    g = open_path(model);
    assert_int_equal(eng_fingerprint_model_cached(model, g, &info, cdir, got, err, sizeof err), ENG_OK);
    assert_memory_equal(got, want, 32);
    gguf_close(g);
    free(c);

    /* An unwritable cache is not an error. */
    g = open_path(model);
    assert_int_equal(eng_fingerprint_model_cached(model, g, &info, "/proc/kvpub-no-such-dir", got, err, sizeof err),
                     ENG_OK);
    assert_memory_equal(got, want, 32);
    gguf_close(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_shapes),
        cmocka_unit_test(test_stories),
        cmocka_unit_test(test_synth_qwen2),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_defaults_and_scaling),
        cmocka_unit_test(test_yarn_from_kvsynth),
        cmocka_unit_test(test_fingerprint_known_answers),
        cmocka_unit_test(test_fingerprint_invariance),
        cmocka_unit_test(test_tokenizer_score_change),
        cmocka_unit_test(test_fingerprint_cache),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
