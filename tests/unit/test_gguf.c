/* test_gguf.c: the GGUF reader on the shared models (expected numbers read with an independent
 * python struct script) and on malformed files made by corrupting a small valid GGUF built
 * in memory: every corruption must be refused with ENG_ERR_FORMAT and a message naming it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "tests/unit/gguf_test_build.h"

static const char *shared_dir(void)
{
    const char *s = getenv("KVPUB_SHARED");
    return s && *s ? s : "/work/shared";
}

static gguf_file *open_shared(const char *rel)
{
    char path[1024], err[512] = "";
    snprintf(path, sizeof path, "%s/models/%s", shared_dir(), rel);
    gguf_file *g = NULL;
    eng_status st = gguf_open(path, &g, err, sizeof err);
    if (st != ENG_OK)
        fail_msg("gguf_open(%s): %s", path, err);
    return g;
}

static void assert_shape(const gguf_file *g, const char *name, uint32_t type, uint32_t nd, uint64_t ne0, uint64_t ne1)
{
    const gguf_tensor *t = gguf_find_tensor(g, name);
    if (!t)
        fail_msg("tensor %s missing", name);
    assert_int_equal(t->type, type);
    assert_int_equal(t->n_dims, nd);
    assert_int_equal(t->ne[0], ne0);
    assert_int_equal(t->ne[1], ne1);
    assert_int_equal(t->ne[2], 1);
}

/* ---- shared models ---- */

typedef struct model_case {
    const char *file;
    size_t n_tensors;
    int64_t n_kv;
    const char *arch;
    uint32_t wtype;      /* type of blk.0.attn_q.weight */
    uint64_t q_out;      /* ne[1] of attn_q */
    int has_output;
    const char *extra;   /* an arch-specific tensor that must exist */
} model_case;

static const model_case k_models[] = {
    {"stories260K.gguf", 47, 24, "llama", GGML_T_F32, 64, 0, "blk.4.ffn_up.weight"},
    {"synth/synth-llama-tiny-f32.gguf", 21, 26, "llama", GGML_T_F32, 64, 1, "blk.1.ffn_down.weight"},
    {"synth/synth-llama-tiny-f16.gguf", 21, 26, "llama", GGML_T_F16, 64, 1, "blk.1.ffn_down.weight"},
    {"synth/synth-llama-tiny-q80.gguf", 21, 26, "llama", GGML_T_Q8_0, 64, 1, "blk.1.ffn_down.weight"},
    {"synth/synth-qwen2-tiny-f32.gguf", 27, 26, "qwen2", GGML_T_F32, 64, 1, "blk.1.attn_v.bias"},
    {"synth/synth-qwen2-tiny-f16.gguf", 27, 26, "qwen2", GGML_T_F16, 64, 1, "blk.1.attn_v.bias"},
    {"synth/synth-qwen2-tiny-q80.gguf", 27, 26, "qwen2", GGML_T_Q8_0, 64, 1, "blk.1.attn_v.bias"},
    {"synth/synth-qwen3-tiny-f32.gguf", 24, 26, "qwen3", GGML_T_F32, 128, 0, "blk.1.attn_k_norm.weight"},
    {"synth/synth-qwen3-tiny-f16.gguf", 24, 26, "qwen3", GGML_T_F16, 128, 0, "blk.1.attn_k_norm.weight"},
    {"synth/synth-qwen3-tiny-q80.gguf", 24, 26, "qwen3", GGML_T_Q8_0, 128, 0, "blk.1.attn_k_norm.weight"},
};

static void test_shared_models(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof k_models / sizeof k_models[0]; i++) {
        const model_case *c = &k_models[i];
        gguf_file *g = open_shared(c->file);
        assert_int_equal(gguf_version(g), 3);
        assert_int_equal(gguf_n_tensors(g), c->n_tensors);
        assert_int_equal(gguf_n_kv(g), c->n_kv);
        gguf_str s;
        assert_int_equal(gguf_get_str(g, "general.architecture", &s), 1);
        assert_int_equal(s.n, strlen(c->arch));
        assert_memory_equal(s.p, c->arch, s.n);
        assert_shape(g, "token_embd.weight", c->wtype, 2, 64, 512);
        assert_shape(g, "blk.0.attn_q.weight", c->wtype, 2, 64, c->q_out);
        assert_shape(g, "output_norm.weight", GGML_T_F32, 1, 64, 1);
        assert_non_null(gguf_find_tensor(g, c->extra));
        assert_int_equal(gguf_find_tensor(g, "output.weight") != NULL, c->has_output);
        assert_null(gguf_find_tensor(g, "blk.9.attn_q.weight"));
        /* name-sorted iteration is strictly increasing and covers every tensor */
        for (size_t k = 1; k < gguf_n_tensors(g); k++)
            assert_true(strcmp(gguf_tensor_sorted(g, k - 1)->name, gguf_tensor_sorted(g, k)->name) < 0);
        assert_null(gguf_tensor_sorted(g, gguf_n_tensors(g)));
        gguf_close(g);
    }
}

static void test_stories_details(void **state)
{
    (void)state;
    gguf_file *g = open_shared("stories260K.gguf");
    assert_int_equal(gguf_file_size(g), 1054368);
    assert_int_equal(gguf_alignment(g), 32);
    assert_int_equal(gguf_data_offset(g), 14240); /* header ends at 14210 */
    assert_shape(g, "blk.0.ffn_down.weight", GGML_T_F32, 2, 172, 64);
    assert_shape(g, "blk.3.attn_k.weight", GGML_T_F32, 2, 64, 32);
    const gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
    assert_int_equal(t->offset, 0);
    assert_int_equal(t->nbytes, 64 * 512 * 4);
    float f[2];
    memcpy(f, t->data, sizeof f);
    assert_float_equal(f[0], -0.29474878f, 1e-7);
    assert_float_equal(f[1], 0.56189561f, 1e-7);
    t = gguf_find_tensor(g, "blk.0.ffn_down.weight");
    assert_int_equal(t->offset, 224768);
    memcpy(f, t->data, sizeof f);
    assert_float_equal(f[0], 0.13498420f, 1e-7);

    int64_t v;
    double d;
    gguf_str s;
    assert_int_equal(gguf_get_int(g, "llama.feed_forward_length", &v), 1);
    assert_int_equal(v, 172);
    assert_int_equal(gguf_get_int(g, "tokenizer.ggml.add_bos_token", &v), 1); /* bool */
    assert_int_equal(v, 1);
    assert_int_equal(gguf_get_float(g, "llama.attention.layer_norm_rms_epsilon", &d), 1);
    assert_float_equal(d, 1e-5, 1e-12);
    assert_int_equal(gguf_get_float(g, "llama.context_length", &d), 1); /* int -> float */
    assert_float_equal(d, 512.0, 0);
    assert_int_equal(gguf_get_int(g, "general.name", &v), -1);     /* string, not int */
    assert_int_equal(gguf_get_str(g, "llama.block_count", &s), -1);
    assert_int_equal(gguf_get_int(g, "no.such.key", &v), 0);
    assert_int_equal(gguf_get_str(g, "general.name", &s), 1);
    assert_int_equal(s.n, 11);
    assert_memory_equal(s.p, "stories260K", 11);

    gguf_vtype et;
    uint64_t n;
    const void *data;
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data), 1);
    assert_int_equal(et, GGUF_VT_STRING);
    assert_int_equal(n, 512);
    assert_null(data);
    assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 3, &s), 1);
    assert_int_equal(s.n, 6);
    assert_memory_equal(s.p, "<0x00>", 6);
    assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 512, &s), 0);
    assert_int_equal(gguf_get_arr_str(g, "tokenizer.ggml.scores", 0, &s), -1);
    assert_int_equal(gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n, &data), 1);
    assert_int_equal(et, GGUF_VT_INT32);
    int32_t tt[4];
    memcpy(tt, data, sizeof tt);
    assert_int_equal(tt[0], 2);
    assert_int_equal(tt[1], 3);
    assert_int_equal(tt[3], 6);
    int64_t ki = gguf_find_key(g, "general.architecture");
    assert_true(ki >= 0);
    assert_string_equal(gguf_kv_key(g, ki), "general.architecture");
    assert_int_equal(gguf_kv_type(g, ki), GGUF_VT_STRING);
    gguf_close(g);
}

static void test_open_missing(void **state)
{
    (void)state;
    char err[256] = "";
    gguf_file *g = (gguf_file *)1;
    assert_int_equal(gguf_open("/nonexistent/x.gguf", &g, err, sizeof err), ENG_ERR_IO);
    assert_null(g);
    assert_non_null(strstr(err, "x.gguf"));
    gguf_close(NULL);
}

/* ---- malformed files ---- */

typedef struct tiny {
    uint8_t *p;
    size_t n;
    size_t kv_base, ti_base, data_off;
    size_t name_len;   /* general.name string length field */
    size_t arr_count;  /* tokenizer.ggml.tokens count field */
    size_t align_val;  /* general.alignment value */
    size_t t0;         /* tensor 0 n_dims field */
    size_t t1;         /* tensor 1 n_dims field */
} tiny;

/* Two f32 tensors: a.weight (8, 2) at 0 and b.weight (8) at 64. */
static void tiny_build(tiny *t)
{
    gguf_tb b;
    tb_init(&b);
    static const char *const toks[] = {"<unk>", "a", "bc"};
    tb_str(&b, "general.architecture", "llama");
    size_t nl = tb_str(&b, "general.name", "tiny");
    size_t al = tb_u32(&b, "general.alignment", 32);
    size_t ac = tb_arr_str(&b, "tokenizer.ggml.tokens", 3, toks) + 4;
    tb_f32(&b, "llama.rope.freq_base", 10000.0f);
    uint64_t ne0[2] = {8, 2}, ne1[1] = {8};
    size_t t0 = tb_tensor(&b, "a.weight", GGML_T_F32, 2, ne0, 64, 1);
    size_t t1 = tb_tensor(&b, "b.weight", GGML_T_F32, 1, ne1, 32, 2);
    t->p = tb_finish(&b, &t->n, &t->kv_base, &t->ti_base, &t->data_off);
    t->name_len = t->kv_base + nl;
    t->arr_count = t->kv_base + ac;
    t->align_val = t->kv_base + al;
    t->t0 = t->ti_base + t0;
    t->t1 = t->ti_base + t1;
    tb_free(&b);
}

/* Offsets of fields of tensor info starting at nd_at with n dims. */
static size_t ti_type(size_t nd_at, unsigned nd) { return nd_at + 4 + 8 * nd; }
static size_t ti_off(size_t nd_at, unsigned nd) { return nd_at + 8 + 8 * nd; }

static void expect_reject(const uint8_t *p, size_t n, eng_status want, const char *words)
{
    char err[512] = "";
    gguf_file *g = NULL;
    eng_status st = gguf_open_mem(p, n, &g, err, sizeof err);
    if (st != want)
        fail_msg("expected status %d, got %d (%s) for '%s'", want, st, err, words);
    assert_null(g);
    if (!strstr(err, words))
        fail_msg("message '%s' does not contain '%s'", err, words);
}

static void test_tiny_valid(void **state)
{
    (void)state;
    tiny t;
    tiny_build(&t);
    char err[256] = "";
    gguf_file *g = NULL;
    assert_int_equal(gguf_open_mem(t.p, t.n, &g, err, sizeof err), ENG_OK);
    assert_int_equal(gguf_n_tensors(g), 2);
    assert_int_equal(gguf_n_kv(g), 5);
    const gguf_tensor *a = gguf_find_tensor(g, "a.weight"), *b = gguf_find_tensor(g, "b.weight");
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(a->nelem, 16);
    assert_int_equal(b->offset, 64);
    assert_ptr_equal(a->data, t.p + t.data_off);
    assert_ptr_equal(b->data, t.p + t.data_off + 64);
    assert_int_equal(((const uint8_t *)b->data)[1], 33); /* pattern 1*31 + 2 */
    gguf_close(g);
    free(t.p);
}

static void test_truncations(void **state)
{
    (void)state;
    tiny t;
    tiny_build(&t);
    /* Every prefix that cuts the header, metadata or tensor infos. */
    for (size_t n = 0; n < t.data_off; n++) {
        char err[512] = "";
        gguf_file *g = NULL;
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, t.p, n);
        eng_status st = gguf_open_mem(copy, n, &g, err, sizeof err);
        if (st != ENG_ERR_FORMAT)
            fail_msg("prefix %zu: status %d (%s)", n, st, err);
        assert_true(strlen(err) > 0);
        free(copy);
    }
    /* Cutting the data section: the last tensor runs past the end. */
    for (size_t n = t.data_off; n < t.n; n += 7) {
        uint8_t *copy = malloc(n);
        memcpy(copy, t.p, n);
        expect_reject(copy, n, ENG_ERR_FORMAT, "past end of file");
        free(copy);
    }
    free(t.p);
}

typedef enum mut {
    M_MAGIC, M_V1, M_V4, M_STRLEN, M_NKV, M_NT, M_ARRCOUNT, M_OFF_EOF, M_OVERLAP, M_ALIGN3,
    M_MISALIGNED, M_TYPE, M_NDIMS5, M_NDIMS0, M_NE0, M_BLOCK, M_DUP_TENSOR, M_DUP_KEY, M_NESTED,
    M_BIGENDIAN,
} mut;

static const struct {
    mut m;
    const char *words;
} k_muts[] = {
    {M_MAGIC, "bad magic"},
    {M_V1, "version 1 is not supported"},
    {M_V4, "unsupported GGUF version 4"},
    {M_STRLEN, "has length"},
    {M_NKV, "metadata count"},
    {M_NT, "tensor count"},
    {M_ARRCOUNT, "array count"},
    {M_OFF_EOF, "tensor 'b.weight' data ["},
    {M_OVERLAP, "overlap"},
    {M_ALIGN3, "not a power of two"},
    {M_MISALIGNED, "not a multiple of the alignment"},
    {M_TYPE, "unknown type 99"},
    {M_NDIMS5, "n_dims 5"},
    {M_NDIMS0, "n_dims 0"},
    {M_NE0, "dimension 1 is 0"},
    {M_BLOCK, "not a multiple of the q8_0 block size 32"},
    {M_DUP_TENSOR, "duplicate tensor name 'a.weight'"},
    {M_DUP_KEY, "duplicate metadata key 'general.name'"},
    {M_NESTED, "nested array"},
    {M_BIGENDIAN, "big-endian"},
};

static void test_mutations(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof k_muts / sizeof k_muts[0]; i++) {
        tiny t;
        uint8_t *p = NULL;
        size_t n = 0;
        if (k_muts[i].m == M_DUP_TENSOR || k_muts[i].m == M_DUP_KEY || k_muts[i].m == M_NESTED ||
            k_muts[i].m == M_BLOCK) {
            gguf_tb b;
            tb_init(&b);
            tb_str(&b, "general.name", "x");
            if (k_muts[i].m == M_DUP_KEY)
                tb_str(&b, "general.name", "y");
            if (k_muts[i].m == M_NESTED) {
                size_t o = tb_arr_num(&b, "nest", GGUF_VT_ARRAY, 0, NULL, 0);
                (void)o;
            }
            uint64_t ne[2] = {16, 2};
            tb_tensor(&b, "a.weight", k_muts[i].m == M_BLOCK ? GGML_T_Q8_0 : GGML_T_F32, 1, ne, 64, 1);
            if (k_muts[i].m == M_DUP_TENSOR)
                tb_tensor(&b, "a.weight", GGML_T_F32, 1, ne, 64, 1);
            p = tb_finish(&b, &n, NULL, NULL, NULL);
            tb_free(&b);
            expect_reject(p, n, ENG_ERR_FORMAT, k_muts[i].words);
            free(p);
            continue;
        }
        tiny_build(&t);
        p = t.p;
        n = t.n;
        switch (k_muts[i].m) {
        case M_MAGIC: p[0] = 'g'; break;
        case M_V1: tb_put_u32(p, 4, 1); break;
        case M_V4: tb_put_u32(p, 4, 4); break;
        case M_BIGENDIAN: tb_put_u32(p, 4, 0x03000000u); break;
        case M_STRLEN: tb_put_u64(p, t.name_len, 1000000); break;
        case M_NKV: tb_put_u64(p, 16, 1ull << 40); break;
        case M_NT: tb_put_u64(p, 8, 1ull << 40); break;
        case M_ARRCOUNT: tb_put_u64(p, t.arr_count, 1ull << 60); break;
        case M_OFF_EOF: tb_put_u64(p, ti_off(t.t1, 1), 4096); break;
        case M_OVERLAP: tb_put_u64(p, ti_off(t.t1, 1), 32); break;
        case M_ALIGN3: tb_put_u32(p, t.align_val, 3); break;
        case M_MISALIGNED: tb_put_u64(p, ti_off(t.t1, 1), 72); break;
        case M_TYPE: tb_put_u32(p, ti_type(t.t1, 1), 99); break;
        case M_NDIMS5: tb_put_u32(p, t.t0, 5); break;
        case M_NDIMS0: tb_put_u32(p, t.t0, 0); break;
        case M_NE0: tb_put_u64(p, t.t0 + 4 + 8, 0); break;
        default: break;
        }
        expect_reject(p, n, ENG_ERR_FORMAT, k_muts[i].words);
        free(p);
    }
}

/* The message names file, tensor, byte range and file size. */
static void test_message_format(void **state)
{
    (void)state;
    tiny t;
    tiny_build(&t);
    tb_put_u64(t.p, ti_off(t.t1, 1), 4096);
    char err[512] = "", want[256];
    gguf_file *g = NULL;
    assert_int_equal(gguf_open_mem(t.p, t.n, &g, err, sizeof err), ENG_ERR_FORMAT);
    snprintf(want, sizeof want, "<memory>: tensor 'b.weight' data [%zu, %zu) extends past end of file (size %zu)",
             t.data_off + 4096, t.data_off + 4096 + 32, t.n);
    assert_string_equal(err, want);
    free(t.p);
}

/* Every single-byte corruption of the header region either opens or fails cleanly. */
static void test_byte_flips(void **state)
{
    (void)state;
    tiny t;
    tiny_build(&t);
    uint8_t *copy = malloc(t.n);
    for (size_t i = 0; i < t.data_off; i++) {
        static const uint8_t vals[] = {0x00, 0xff, 0x80, 0x7f, 0x05};
        for (size_t v = 0; v < sizeof vals; v++) {
            memcpy(copy, t.p, t.n);
            copy[i] = vals[v];
            char err[512] = "";
            gguf_file *g = NULL;
            eng_status st = gguf_open_mem(copy, t.n, &g, err, sizeof err);
            assert_true(st == ENG_OK || st == ENG_ERR_FORMAT);
            if (st == ENG_OK) {
                assert_non_null(g);
                gguf_close(g);
            } else {
                assert_null(g);
                assert_true(strlen(err) > 0);
            }
        }
    }
    free(copy);
    free(t.p);
}

static void test_type_traits(void **state)
{
    (void)state;
    uint32_t blck, bytes;
    const char *name;
    assert_int_equal(ggml_type_traits(GGML_T_Q4_K, &blck, &bytes, &name), 1);
    assert_int_equal(blck, 256);
    assert_int_equal(bytes, 144);
    assert_string_equal(name, "q4_k");
    assert_int_equal(ggml_type_traits(GGML_T_Q6_K, &blck, &bytes, NULL), 1);
    assert_int_equal(bytes, 210);
    assert_int_equal(ggml_type_traits(GGML_T_Q8_0, &blck, &bytes, NULL), 1);
    assert_int_equal(blck, 32);
    assert_int_equal(bytes, 34);
    assert_int_equal(ggml_type_traits(GGML_T_Q4_0, &blck, &bytes, NULL), 1);
    assert_int_equal(bytes, 18);
    assert_int_equal(ggml_type_traits(4, &blck, &bytes, &name), 0); /* removed Q4_2 */
    /* types no kernel reads are still known, so that a file holding one is refused by name */
    assert_int_equal(ggml_type_traits(GGML_T_I16, &blck, &bytes, &name), 1);
    assert_string_equal(name, "i16");
    assert_int_equal(bytes, 2);
    assert_int_equal(ggml_type_traits(GGML_T_F64, &blck, &bytes, &name), 1);
    assert_string_equal(name, "f64");
    assert_int_equal(bytes, 8);
    assert_int_equal(ggml_type_traits(GGML_T_Q5_K, &blck, &bytes, &name), 1);
    assert_int_equal(bytes, 176);
    assert_int_equal(ggml_type_traits(GGML_T_Q3_K, &blck, &bytes, &name), 1);
    assert_int_equal(bytes, 110);
    assert_int_equal(ggml_row_bytes(GGML_T_Q8_0, 64), 68);
    assert_int_equal(ggml_row_bytes(GGML_T_Q8_0, 48), 0);
    assert_int_equal(ggml_row_bytes(GGML_T_BF16, 3), 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_models),
        cmocka_unit_test(test_stories_details),
        cmocka_unit_test(test_open_missing),
        cmocka_unit_test(test_tiny_valid),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_message_format),
        cmocka_unit_test(test_byte_flips),
        cmocka_unit_test(test_type_traits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
