/* test_engine_held.c: eng_prefill_held, the head of a sequence evaluated in the prompt's pass.
 * Reference: prefills in sequence order ([prefix], head, document, prompt) in another context.
 * The held cells start with NaN keys and infinite values, so any read of them before they are
 * recomputed, or a recompute that does not reach them, shows; the document is imported from
 * the reference. Logits, every cell of every layer, the positions and the next decode step must
 * be the reference's bits, at both kernel levels: one pass with the lane kernel (a partial
 * group of held queries that sees only the first key block), the blocked kernels, held cells
 * alone, held cells after a real prefix, an f32 cache, and more rows than one pass holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <unistd.h>

#include "engine/kernels/gemm_internal.h"
#include "tests/unit/engine_test_util.h"

typedef struct held_case {
    const char *synth;
    int kv_f32;
    int P, H, D, N; /* real prefix, held cells, document, prompt */
    int n_ctx;
} held_case;

static const held_case k_cases[] = {
    /* 9 rows x 2 query heads: 18 lanes, the 2 of the held row in a group of their own */
    {"--arch qwen3 --layers 2 --dim 128 --heads 4 --kv-heads 2 --head-dim 64 --ffn 96 --vocab 300 --ctx 512 "
     "--type f16 --seed 21", 0, 0, 1, 150, 8, 512},
    /* 8 rows x 4 query heads, after a real prefix */
    {"--arch llama --layers 2 --dim 256 --heads 8 --kv-heads 2 --head-dim 128 --ffn 96 --vocab 300 "
     "--ctx 512 --type f32 --seed 22", 0, 7, 5, 140, 3, 512},
    /* one query head per kv head: the blocked kernels; held cells alone (no prompt) */
    {"--arch qwen2 --layers 2 --dim 64 --heads 2 --kv-heads 2 --head-dim 32 --ffn 64 --vocab 300 --ctx 512 "
     "--type f16 --seed 23", 0, 0, 3, 90, 0, 512},
    /* f32 cache */
    {"--arch qwen3 --layers 2 --dim 128 --heads 4 --kv-heads 2 --head-dim 64 --ffn 96 --vocab 300 --ctx 512 "
     "--type f32 --seed 24", 1, 2, 2, 70, 4, 512},
    /* more rows than one pass: held cells recomputed first, then the prompt */
    {"--arch llama --layers 1 --dim 64 --heads 4 --kv-heads 2 --head-dim 16 --ffn 32 --vocab 300 --ctx 2200 "
     "--type f16 --seed 25", 0, 0, 9, 20, 2045, 2200},
};

static void make_tokens(int32_t *t, int n, int V, uint64_t s)
{
    for (int i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        t[i] = 3 + (int32_t)((s >> 33) % (uint64_t)(V - 3));
    }
}

/* K and V of cells [0, n) of every layer, exchange layout, into one buffer. */
static uint16_t *export_all(const eng_ctx *c, int L, size_t row, int n)
{
    uint16_t *x = malloc(sizeof(uint16_t) * 2 * (size_t)L * (size_t)n * row);
    for (int l = 0; l < L; l++)
        assert_int_equal(eng_kv_export_layer(c, l, 0, n, x + (size_t)(2 * l) * n * row,
                                             x + (size_t)(2 * l + 1) * n * row), ENG_OK);
    return x;
}

static void run_case(const held_case *hc, eng_model *m)
{
    const eng_info *in = eng_model_info(m);
    const int V = in->n_vocab, L = in->n_layer, P = hc->P, H = hc->H, D = hc->D, N = hc->N;
    const int T = P + H + D + N;
    const size_t row = (size_t)in->n_head_kv * (size_t)in->head_dim;
    int32_t *t = malloc(sizeof *t * (size_t)(T + 1));
    make_tokens(t, T + 1, V, (uint64_t)T);
    float *la = malloc(sizeof(float) * (size_t)V), *lb = malloc(sizeof(float) * (size_t)V);
    eng_ctx *a = et_ctx(m, hc->n_ctx, hc->kv_f32), *b = et_ctx(m, hc->n_ctx, hc->kv_f32);
    assert_non_null(a);
    assert_non_null(b);
    /* the reference: everything in order, the document's cells exported and imported again
     * (an f32 cache keeps their f16 rounding, as b's import does) */
    uint16_t *doc = malloc(sizeof(uint16_t) * 2 * (size_t)L * (size_t)D * row);
    assert_int_equal(eng_prefill(a, t, NULL, (size_t)(P + H + D), NULL, NULL), ENG_OK);
    for (int l = 0; l < L; l++)
        assert_int_equal(eng_kv_export_layer(a, l, P + H, D, doc + (size_t)(2 * l) * D * row,
                                             doc + (size_t)(2 * l + 1) * D * row), ENG_OK);
    assert_int_equal(eng_kv_truncate(a, P + H), ENG_OK);
    for (int l = 0; l < L; l++)
        assert_int_equal(eng_kv_import_layer(a, l, P + H, D, doc + (size_t)(2 * l) * D * row,
                                             doc + (size_t)(2 * l + 1) * D * row), ENG_OK);
    assert_int_equal(eng_kv_commit(a, P + H, D, P + H), ENG_OK);
    assert_int_equal(eng_prefill(a, t + P + H + D, NULL, (size_t)N, la, NULL), ENG_OK);
    /* held cells full of NaN and inf, the document imported after them */
    assert_int_equal(eng_prefill(b, t, NULL, (size_t)P, NULL, NULL), ENG_OK);
    uint16_t *junk = malloc(sizeof(uint16_t) * 2 * (size_t)H * row);
    for (size_t i = 0; i < (size_t)H * row; i++) {
        junk[i] = 0x7e00;          /* K: NaN */
        junk[H * row + i] = 0x7c00; /* V: +inf */
    }
    for (int l = 0; l < L; l++)
        assert_int_equal(eng_kv_import_layer(b, l, P, H, junk, junk + (size_t)H * row), ENG_OK);
    assert_int_equal(eng_kv_commit(b, P, H, P), ENG_OK);
    for (int l = 0; l < L; l++)
        assert_int_equal(eng_kv_import_layer(b, l, P + H, D, doc + (size_t)(2 * l) * D * row,
                                             doc + (size_t)(2 * l + 1) * D * row), ENG_OK);
    assert_int_equal(eng_kv_commit(b, P + H, D, P + H), ENG_OK);
    assert_int_equal(eng_prefill_held(b, P, t + P, H, t + P + H + D, (size_t)N, lb), ENG_OK);
    if (N)
        assert_memory_equal(la, lb, sizeof(float) * (size_t)V);
    assert_int_equal(eng_kv_len(b), T);
    assert_int_equal(eng_kv_next_pos(b), eng_kv_next_pos(a));
    uint16_t *ka = export_all(a, L, row, T), *kb = export_all(b, L, row, T);
    assert_memory_equal(ka, kb, sizeof(uint16_t) * 2 * (size_t)L * (size_t)T * row);
    /* and the step after */
    assert_int_equal(eng_decode(a, t[T], -1, la), ENG_OK);
    assert_int_equal(eng_decode(b, t[T], -1, lb), ENG_OK);
    assert_memory_equal(la, lb, sizeof(float) * (size_t)V);
    free(ka);
    free(kb);
    free(junk);
    free(doc);
    free(t);
    free(la);
    free(lb);
    eng_ctx_free(a);
    eng_ctx_free(b);
}

static void test_held(void **state)
{
    (void)state;
    static const int levels[2] = {ENG_GEMM_AUTO, ENG_GEMM_AVX2};
    for (size_t ci = 0; ci < sizeof k_cases / sizeof k_cases[0]; ci++) {
        char path[256];
        eng_model *m = et_synth("held", k_cases[ci].synth, path, sizeof path);
        assert_non_null(m);
        unlink(path);
        for (int lv = 0; lv < 2; lv++) {
            eng_gemm_force(levels[lv]);
            printf("case %zu: %s kernels\n", ci, eng_gemm_kernel());
            run_case(&k_cases[ci], m);
        }
        eng_gemm_force(ENG_GEMM_AUTO);
        eng_model_free(m);
    }
}

/* Held cells must be filled cells; tokens are checked before anything runs. */
static void test_held_errors(void **state)
{
    (void)state;
    char path[256];
    eng_model *m = et_synth("heldarg", k_cases[0].synth, path, sizeof path);
    assert_non_null(m);
    unlink(path);
    eng_ctx *c = et_ctx(m, 64, 0);
    int32_t t[4] = {5, 6, 7, 8}, bad[1] = {300};
    float lg[300];
    assert_int_equal(eng_prefill_held(c, 0, t, 1, t, 1, lg), ENG_ERR_RANGE); /* nothing filled */
    assert_int_equal(eng_prefill(c, t, NULL, 2, NULL, NULL), ENG_OK);
    assert_int_equal(eng_prefill_held(c, 1, t, 2, t, 1, lg), ENG_ERR_RANGE);
    assert_int_equal(eng_prefill_held(c, -1, t, 1, t, 1, lg), ENG_ERR_ARG);
    assert_int_equal(eng_prefill_held(c, 0, NULL, 1, t, 1, lg), ENG_ERR_ARG);
    assert_int_equal(eng_prefill_held(c, 0, bad, 1, t, 1, lg), ENG_ERR_RANGE);
    assert_int_equal(eng_prefill_held(c, 0, t, 1, bad, 1, lg), ENG_ERR_RANGE);
    assert_int_equal(eng_prefill_held(c, 0, t, 1, t, 63, lg), ENG_ERR_RANGE); /* no room */
    assert_int_equal(eng_kv_len(c), 2);
    assert_int_equal(eng_prefill_held(c, 0, t, 2, t + 2, 2, lg), ENG_OK);
    assert_int_equal(eng_kv_len(c), 4);
    eng_ctx_free(c);
    eng_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_held),
        cmocka_unit_test(test_held_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
