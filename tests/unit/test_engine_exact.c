/* test_engine_exact.c: the exactness contract: a token's logits do not depend on how the
 * sequence was split into eng_prefill calls, nor on whether the prefix's K/V came from this
 * context or were exported and imported into a fresh one (bit-identical). Also pins down the
 * OpenBLAS behaviour that the fixed-shape tiling in engine/forward.c relies on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cblas.h>

#include "tests/unit/engine_test_util.h"

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xffffff) / 16777216.0f - 0.5f;
}

/* OpenBLAS sgemm results for a row change with M and with the row's place in the call (so the
 * engine never relies on either), but with the shape fixed the result of a row must not depend
 * on the other rows' contents: that is what the engine's fixed (64, n, K) tiles rely on. */
static void test_blas_rows(void **state)
{
    (void)state;
    enum { M = 64, N = 256, K = 1024 };
    uint64_t s = 42;
    float *A = malloc(sizeof(float) * M * K), *A2 = malloc(sizeof(float) * M * K);
    float *B = malloc(sizeof(float) * N * K), *C = malloc(sizeof(float) * M * N), *C2 = malloc(sizeof(float) * M * N);
    for (int i = 0; i < M * K; i++)
        A[i] = frand(&s);
    for (int i = 0; i < N * K; i++)
        B[i] = frand(&s);
    for (int nt = 1; nt <= 2; nt++) {
        openblas_set_num_threads(nt);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, A, K, B, K, 0, C, N);
        for (int r = 0; r < M; r += 9) {
            for (int i = 0; i < M * K; i++)
                A2[i] = frand(&s) * 3;
            memcpy(A2 + (size_t)r * K, A + (size_t)r * K, sizeof(float) * K);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1, A2, K, B, K, 0, C2, N);
            assert_memory_equal(C + (size_t)r * N, C2 + (size_t)r * N, sizeof(float) * N);
        }
        /* informational: the same row with M = 1 (OpenBLAS may take its gemv path) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, N, K, 1, A, K, B, K, 0, C2, N);
        printf("OpenBLAS, %d thread(s): row 0 with M=1 %s the M=64 result\n", nt,
               memcmp(C, C2, sizeof(float) * N) ? "differs from" : "equals");
    }
    openblas_set_num_threads(1);
    free(A);
    free(A2);
    free(B);
    free(C);
    free(C2);
}

typedef struct xcase {
    const char *model;
} xcase;

static const xcase k_models[] = {
    {"models/stories260K.gguf"},
    {"models/synth/synth-llama-tiny-f16.gguf"},
    {"models/synth/synth-llama-tiny-q80.gguf"},
    {"models/synth/synth-qwen2-tiny-f16.gguf"},
    {"models/synth/synth-qwen2-tiny-q80.gguf"},
    {"models/synth/synth-qwen3-tiny-f16.gguf"},
    {"models/synth/synth-qwen3-tiny-q80.gguf"},
};

static void make_tokens(int32_t *t, int n, int V)
{
    uint64_t s = 7;
    t[0] = 1;
    for (int i = 1; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        t[i] = 3 + (int32_t)((s >> 33) % (uint64_t)(V - 3));
    }
}

static void test_prefix(void **state)
{
    const xcase *xc = *state;
    eng_model *m = et_load_model(xc->model);
    assert_non_null(m);
    const eng_info *hp = eng_model_info(m);
    const int V = hp->n_vocab;
    enum { N = 200, CUT = 77 };
    int32_t toks[N];
    make_tokens(toks, N, V);
    float *full = malloc(sizeof(float) * N * V), *part = malloc(sizeof(float) * N * V);
    float *d1 = malloc(sizeof(float) * V), *d2 = malloc(sizeof(float) * V);

    eng_ctx *a = et_ctx(m, 512, 0);
    assert_int_equal(eng_prefill(a, toks, NULL, N, NULL, full), ENG_OK);

    /* split [0, CUT) [CUT, CUT+1) [CUT+1, N) */
    eng_ctx *b = et_ctx(m, 512, 0);
    assert_int_equal(eng_prefill(b, toks, NULL, CUT, NULL, part), ENG_OK);
    assert_int_equal(eng_prefill(b, toks + CUT, NULL, 1, NULL, part + (size_t)CUT * V), ENG_OK);
    assert_int_equal(eng_prefill(b, toks + CUT + 1, NULL, N - CUT - 1, NULL, part + (size_t)(CUT + 1) * V), ENG_OK);
    assert_memory_equal(full, part, sizeof(float) * N * V);

    /* export [0, CUT) from a fresh prefill, import into a fresh context, prefill the rest */
    eng_ctx *src = et_ctx(m, 512, 0), *dst = et_ctx(m, 512, 0);
    assert_int_equal(eng_prefill(src, toks, NULL, CUT, NULL, NULL), ENG_OK);
    const size_t per = (size_t)CUT * hp->n_head_kv * hp->head_dim;
    uint16_t *kb = malloc(per * 2), *vb = malloc(per * 2);
    for (int il = 0; il < hp->n_layer; il++) {
        assert_int_equal(eng_kv_export_layer(src, il, 0, CUT, kb, vb), ENG_OK);
        assert_int_equal(eng_kv_import_layer(dst, il, 0, CUT, kb, vb), ENG_OK);
    }
    assert_int_equal(eng_kv_commit(dst, 0, CUT, 0), ENG_OK);
    assert_int_equal(eng_kv_len(dst), CUT);
    assert_int_equal(eng_kv_next_pos(dst), CUT);
    memset(part, 0, sizeof(float) * N * V);
    assert_int_equal(eng_prefill(dst, toks + CUT, NULL, N - CUT, NULL, part + (size_t)CUT * V), ENG_OK);
    assert_memory_equal(full + (size_t)CUT * V, part + (size_t)CUT * V, sizeof(float) * (N - CUT) * V);

    /* decode continues identically in both */
    assert_int_equal(eng_decode(a, 5, -1, d1), ENG_OK);
    assert_int_equal(eng_decode(dst, 5, -1, d2), ENG_OK);
    assert_memory_equal(d1, d2, sizeof(float) * V);

    /* the 'logits' output equals the last all_logits row */
    eng_kv_clear(b);
    assert_int_equal(eng_prefill(b, toks, NULL, N, d1, NULL), ENG_OK);
    assert_memory_equal(d1, full + (size_t)(N - 1) * V, sizeof(float) * V);

    free(kb);
    free(vb);
    eng_ctx_free(a);
    eng_ctx_free(b);
    eng_ctx_free(src);
    eng_ctx_free(dst);
    eng_model_free(m);
    free(full);
    free(part);
    free(d1);
    free(d2);
}

/* Thread count must not change results either: a blob made on one machine loads on another. */
static void test_threads(void **state)
{
    (void)state;
    eng_model *m = et_load_model("models/synth/synth-qwen3-tiny-q80.gguf");
    assert_non_null(m);
    const int V = eng_model_info(m)->n_vocab;
    enum { N = 150 };
    int32_t toks[N];
    make_tokens(toks, N, V);
    float *l1 = malloc(sizeof(float) * V), *l2 = malloc(sizeof(float) * V);
    eng_ctx_params p1 = {512, 1, 0}, p3 = {512, 3, 0};
    eng_ctx *c1 = NULL, *c3 = NULL;
    char err[128];
    assert_int_equal(eng_ctx_create(m, &p1, &c1, err, sizeof err), ENG_OK);
    assert_int_equal(eng_ctx_create(m, &p3, &c3, err, sizeof err), ENG_OK);
    assert_int_equal(eng_prefill(c1, toks, NULL, N, l1, NULL), ENG_OK);
    assert_int_equal(eng_prefill(c3, toks, NULL, N, l2, NULL), ENG_OK);
    assert_memory_equal(l1, l2, sizeof(float) * V);
    eng_ctx_free(c1);
    eng_ctx_free(c3);
    eng_model_free(m);
    free(l1);
    free(l2);
}

#define XCASE(i) cmocka_unit_test_prestate(test_prefix, (void *)&k_models[i])

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blas_rows),
        XCASE(0), XCASE(1), XCASE(2), XCASE(3), XCASE(4), XCASE(5), XCASE(6),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
