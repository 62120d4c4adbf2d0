/* test_engine_exact.c: the exactness contract: a token's logits do not depend on how the
 * sequence was split into eng_prefill calls, nor on whether the prefix's K/V came from this
 * context or were exported and imported into a fresh one (bit-identical). Also pins down the
 * accumulation order of the batched product (engine/kernels/gemm.c) that this relies on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "base/base.h"
#include "engine/ctx_internal.h"
#include "engine/kernels/gemm_internal.h"
#include "tests/unit/engine_test_util.h"

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 40) & 0xffffff) / 16777216.0f - 0.5f;
}

/* The order gemm_internal.h promises, written out independently of engine/kernels/gemm.c. */
static float ref_dot(const float *x, const float *w, int K)
{
    float l[8] = {0};
    for (int k = 0; k < (K + 7) / 8 * 8; k++)
        l[k % 8] = k < K ? fmaf(x[k], w[k], l[k % 8]) : fmaf(0.0f, 0.0f, l[k % 8]);
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

/* Packs M rows of X (K floats each) in groups of `group` rows into a fresh buffer. */
static float *pack(const float *X, int M, int K, int group)
{
    float *p = aligned_alloc(32, sizeof(float) * (size_t)M * (size_t)eng_gemm_kr(K) + 32);
    for (int r = 0; r < M; r++)
        eng_gemm_pack_row(X + (size_t)r * K, K, r, M, group, p);
    return p;
}

/* eng_gemm_packed: every element equals the reference order bit for bit, whatever M and N the
 * call has and wherever the row sits in it (what makes prefill split-invariant). */
static void test_gemm_rows(void **state)
{
    (void)state;
    /* M around the 4- and 8-row tiles; N around the 3- and 6-row tiles and the 48-row blocks */
    static const int shapes[][3] = {{1, 1, 8},      {1, 7, 1024},  {5, 50, 1024}, {13, 97, 3072},
                                    {4, 48, 520},   {9, 10, 172},  {3, 5, 13},    {64, 100, 2048},
                                    {8, 52, 64},    {12, 4, 24},   {16, 53, 40},  {20, 5, 1100},
                                    {11, 101, 600}, {8, 2, 16}};
    /* the CPU's best kernel, then each narrower one */
    static const int levels[] = {ENG_GEMM_AUTO, ENG_GEMM_AVX2, ENG_GEMM_SCALAR};
    uint64_t s = 42;
    const size_t ns = sizeof shapes / sizeof shapes[0];
    for (size_t t = 0; t < 3 * ns; t++) {
        eng_gemm_force(levels[t / ns]);
        const int M = shapes[t % ns][0], N = shapes[t % ns][1], K = shapes[t % ns][2];
        float *X = malloc(sizeof(float) * (size_t)M * K), *W = malloc(sizeof(float) * (size_t)N * K);
        float *Y = malloc(sizeof(float) * (size_t)M * N), *Y1 = malloc(sizeof(float) * (size_t)N);
        for (int i = 0; i < M * K; i++)
            X[i] = frand(&s);
        for (int i = 0; i < N * K; i++)
            W[i] = frand(&s);
        float *Xp = pack(X, M, K, ENG_GEMM_MR), *Wp = pack(W, N, K, ENG_GEMM_NR);
        float *Wp1 = N > 2 ? pack(W + K, N - 1, K, ENG_GEMM_NR) : NULL;
        eng_gemm_packed(Xp, M, Wp, N, K, Y, (size_t)N);
        for (int i = 0; i < M; i++) {
            for (int j = 0; j < N; j++) {
                float r = ref_dot(X + (size_t)i * K, W + (size_t)j * K, K);
                assert_memory_equal(&r, &Y[(size_t)i * N + j], sizeof r);
            }
            /* the same row alone, against the rows from 1 on (other panel groupings) */
            if (Wp1) {
                float *Xi = pack(X + (size_t)i * K, 1, K, ENG_GEMM_MR);
                eng_gemm_packed(Xi, 1, Wp1, N - 1, K, Y1, (size_t)N);
                assert_memory_equal(Y1, &Y[(size_t)i * N + 1], sizeof(float) * (size_t)(N - 1));
                free(Xi);
            }
        }
        free(X);
        free(W);
        free(Y);
        free(Y1);
        free(Xp);
        free(Wp);
        free(Wp1);
    }
    eng_gemm_force(ENG_GEMM_AUTO);
    printf("eng_gemm_packed kernel: %s (and the narrower ones)\n", eng_gemm_kernel());
}

/* eng_gemm_f16 (F16 weights read in place, for few X rows): the same bits as the reference
 * order over the exact f32 values of the f16 weights at every kernel level, for every M from 1
 * to 20 (8-row blocks, the last of up to 10 in three groups; an odd M leaves half a register
 * pair empty) and for 33, 64 and 128 (the most rows the forward pass gives it), N off the tile
 * widths and over several W blocks, K with and without a tail, and row strides past K. */
static void test_gemm_f16(void **state)
{
    (void)state;
    static const int shapes[][3] = {{1, 8, 8},       {7, 1024, 1024}, {50, 1024, 1040},
                                    {97, 3072, 3072}, {4, 13, 16},    {5, 172, 180},
                                    {13, 37, 40},     {25, 264, 264}, {11, 1031, 1031},
                                    {25, 2700, 2700}};
    static const int levels[] = {ENG_GEMM_AUTO, ENG_GEMM_AVX2};
    enum { NM = 23 };
    static const int big_m[NM - 20] = {33, 64, 128};
    uint64_t s = 43;
    for (size_t t = 0; t < 2 * NM * (sizeof shapes / sizeof shapes[0]); t++) {
        const size_t sh = t % (sizeof shapes / sizeof shapes[0]);
        const int mi = (int)(t / (sizeof shapes / sizeof shapes[0])) % NM;
        const int M = mi < 20 ? mi + 1 : big_m[mi - 20];
        const int N = shapes[sh][0], K = shapes[sh][1], ldw = shapes[sh][2];
        if (M > 4 && N * K > 100000)
            continue; /* the big shapes once for the one-group kernels */
        eng_gemm_force(levels[t / (NM * (sizeof shapes / sizeof shapes[0]))]);
        float *X = malloc(sizeof(float) * (size_t)M * K), *Wf = malloc(sizeof(float) * (size_t)N * K);
        uint16_t *W = malloc(sizeof(uint16_t) * (size_t)N * ldw);
        float *Y = malloc(sizeof(float) * (size_t)M * N);
        for (int i = 0; i < M * K; i++)
            X[i] = frand(&s);
        for (int j = 0; j < N; j++)
            for (int k = 0; k < ldw; k++) {
                /* +inf past K: a kernel that reads the row's padding turns its sums into NaN */
                W[(size_t)j * ldw + k] = k < K ? base_f32_to_f16(frand(&s)) : 0x7c00;
                if (k < K)
                    Wf[(size_t)j * K + k] = base_f16_to_f32(W[(size_t)j * ldw + k]);
            }
        float *Xp = pack(X, M, K, ENG_GEMM_MR);
        if (!eng_gemm_f16(Xp, M, W, (size_t)ldw, N, K, Y, (size_t)N)) {
            printf("eng_gemm_f16: not on this CPU (callers pack the weights)\n");
        } else {
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    float r = ref_dot(X + (size_t)i * K, Wf + (size_t)j * K, K);
                    assert_memory_equal(&r, &Y[(size_t)i * N + j], sizeof r);
                }
        }
        free(X);
        free(Wf);
        free(W);
        free(Y);
        free(Xp);
    }
    /* the forced scalar kernel leaves the product to the caller's packing path */
    eng_gemm_force(ENG_GEMM_SCALAR);
    float x[8] = {1}, y = 0;
    uint16_t w[8] = {0};
    float *xp = pack(x, 1, 8, ENG_GEMM_MR);
    assert_int_equal(eng_gemm_f16(xp, 1, w, 8, 1, 8, &y, 1), 0);
    eng_gemm_force(ENG_GEMM_AUTO);
    free(xp);
}

/* Q8_0 rounding of one block as ggml's quantize_row_q8_0 (scale amax / 127 as f16, values
 * rounded to nearest, ties to even), written out independently of engine/kernels/gemm_q8.c. */
static void ref_q8_block(const float *x, int8_t *q, float *d)
{
    float amax = 0;
    for (int j = 0; j < 32; j++)
        amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
    *d = base_f16_to_f32(base_f32_to_f16(amax / 127.0f));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    for (int j = 0; j < 32; j++)
        q[j] = (int8_t)nearbyintf(x[j] * id);
}

/* eng_gemm_q8: every element equals the integer-block order of gemm_internal.h bit for bit,
 * with each kernel, for any M and N (partial 16-row panels included) and for weights that use
 * -128 (which the sign trick of the few-rows AVX2 kernel cannot negate). */
static void test_gemm_q8(void **state)
{
    (void)state;
    static const int shapes[][3] = {{1, 1, 32},   {1, 16, 1024}, {3, 17, 64},  {4, 48, 256},
                                    {5, 50, 1024}, {9, 33, 96},  {13, 97, 3072}, {8, 64, 2048},
                                    {2, 5, 32}};
    static const int levels[] = {ENG_GEMM_AUTO, ENG_GEMM_AVX2, ENG_GEMM_SCALAR};
    uint64_t s = 44;
    for (size_t t = 0; t < 3 * (sizeof shapes / sizeof shapes[0]); t++) {
        const size_t ns = sizeof shapes / sizeof shapes[0];
        eng_gemm_force(levels[t / ns]);
        const int M = shapes[t % ns][0], N = shapes[t % ns][1], K = shapes[t % ns][2], nb = K / 32;
        const int m128 = t % 2; /* every other case puts -128 into some weights */
        const size_t rb = (size_t)nb * 34, xs = eng_q8x_stride(K);
        float *X = malloc(sizeof(float) * (size_t)M * K), *Y = malloc(sizeof(float) * (size_t)M * N);
        uint8_t *W = malloc(rb * (size_t)N), *Xq = malloc(xs * (size_t)M);
        uint8_t *Wq = aligned_alloc(64, (eng_q8w_bytes(N, K) + 63) / 64 * 64);
        for (int i = 0; i < M * K; i++)
            X[i] = frand(&s) * (i % 7 == 0 ? 8.0f : 1.0f);
        for (int j = 0; j < N; j++)
            for (int b = 0; b < nb; b++) {
                uint8_t *blk = W + (size_t)j * rb + (size_t)b * 34;
                const uint16_t h = base_f32_to_f16(0.001f + 0.01f * (frand(&s) + 0.5f));
                memcpy(blk, &h, 2);
                for (int k = 0; k < 32; k++)
                    blk[2 + k] = (uint8_t)(int8_t)(m128 && (j + b + k) % 11 == 0 ? -128 : (int)(frand(&s) * 254));
            }
        for (int i = 0; i < M; i++)
            eng_q8x_quantize_row(X + (size_t)i * K, K, Xq + (size_t)i * xs);
        eng_q8w_pack(W, rb, N, K, Wq);
        /* the panel kernel, then (for few rows) the one that reads the blocks in place */
        float *Yr = malloc(sizeof(float) * (size_t)M * N);
        eng_gemm_q8(Xq, M, Wq, N, K, Y, (size_t)N);
        eng_gemm_q8_rows(Xq, M, W, rb, N, K, Yr, (size_t)N);
        assert_memory_equal(Y, Yr, sizeof(float) * (size_t)M * N);
        free(Yr);
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                float acc = 0.0f;
                for (int b = 0; b < nb; b++) {
                    int8_t q[32];
                    float dx, dw;
                    ref_q8_block(X + (size_t)i * K + b * 32, q, &dx);
                    const uint8_t *blk = W + (size_t)j * rb + (size_t)b * 34;
                    uint16_t h;
                    memcpy(&h, blk, 2);
                    dw = base_f16_to_f32(h);
                    int32_t isum = 0;
                    for (int k = 0; k < 32; k++)
                        isum += (int32_t)q[k] * (int32_t)(int8_t)blk[2 + k];
                    acc = fmaf((float)isum, dx * dw, acc);
                }
                assert_memory_equal(&acc, &Y[(size_t)i * N + j], sizeof acc);
            }
        free(X);
        free(Y);
        free(W);
        free(Xq);
        free(Wq);
    }
    eng_gemm_force(ENG_GEMM_AUTO);
}

typedef struct xcase {
    const char *model; /* under $KVPUB_SHARED, or NULL: kvsynth arguments in synth */
    const char *synth;
} xcase;

static const xcase k_models[] = {
    {"models/stories260K.gguf", NULL},
    {"models/synth/synth-llama-tiny-f16.gguf", NULL},
    {"models/synth/synth-llama-tiny-q80.gguf", NULL},
    {"models/synth/synth-qwen2-tiny-f16.gguf", NULL},
    {"models/synth/synth-qwen2-tiny-q80.gguf", NULL},
    {"models/synth/synth-qwen3-tiny-f16.gguf", NULL},
    {"models/synth/synth-qwen3-tiny-q80.gguf", NULL},
    /* stablelm: LayerNorm, partial rotary, per-head Q/K norms, the parallel residual */
    {NULL, "--arch stablelm --layers 2 --dim 64 --heads 4 --kv-heads 2 --head-dim 16 --n-rot 8 --qk-norm "
           "--parallel --ffn 128 --vocab 512 --ctx 256 --type f16 --seed 9"},
};

static eng_model *load_case(const xcase *xc)
{
    if (xc->model)
        return et_load_model(xc->model);
    char path[256];
    eng_model *m = et_synth("exact", xc->synth, path, sizeof path);
    unlink(path);
    return m;
}

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
    eng_model *m = load_case(xc);
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

/* Prefills toks (n) into a in one call and into b in calls of sizes[] (summing to n): every
 * token's logits (full, part: n * V floats) must be the same bits. */
static void split_equal(eng_ctx *a, eng_ctx *b, const int32_t *toks, int n, int V, const int *sizes, size_t ns,
                        float *full, float *part)
{
    assert_int_equal(eng_prefill(a, toks, NULL, (size_t)n, NULL, full), ENG_OK);
    int done = 0;
    for (size_t i = 0; i < ns; i++) {
        assert_int_equal(eng_prefill(b, toks + done, NULL, (size_t)sizes[i], NULL, part + (size_t)done * V), ENG_OK);
        done += sizes[i];
    }
    assert_int_equal(done, n);
    assert_memory_equal(full, part, sizeof(float) * (size_t)n * (size_t)V);
}

/* Many small calls (the prompt after a loaded cache), odd sizes across 64-cell boundaries,
 * and one call per token: every token's logits equal the single-call prefill's. */
static void test_splits(void **state)
{
    const xcase *xc = *state;
    eng_model *m = load_case(xc);
    assert_non_null(m);
    const int V = eng_model_info(m)->n_vocab;
    static const int sizes[] = {1, 1, 1, 5, 17, 64, 65, 3};
    enum { N = 157 };
    int32_t toks[N];
    make_tokens(toks, N, V);
    float *full = malloc(sizeof(float) * N * V), *part = malloc(sizeof(float) * N * V);
    eng_ctx *a = et_ctx(m, 512, 0), *b = et_ctx(m, 512, 0);
    split_equal(a, b, toks, N, V, sizes, sizeof sizes / sizeof sizes[0], full, part);
    /* one token per call, last-token logits only */
    eng_kv_clear(b);
    for (int i = 0; i < 20; i++)
        assert_int_equal(eng_prefill(b, toks + i, NULL, 1, part + (size_t)i * V, NULL), ENG_OK);
    assert_memory_equal(full, part, sizeof(float) * 20 * V);
    eng_ctx_free(a);
    eng_ctx_free(b);
    eng_model_free(m);
    free(full);
    free(part);
}

/* Thread count must not change results either: a blob made on one machine loads on another.
 * Work units go to whichever thread is free (engine/pool.c), so this also covers any
 * assignment of units to threads; decode included. */
static void test_threads(void **state)
{
    (void)state;
    static const char *const models[] = {"models/synth/synth-qwen3-tiny-q80.gguf",
                                         "models/synth/synth-llama-tiny-f16.gguf"};
    for (size_t mi = 0; mi < sizeof models / sizeof models[0]; mi++) {
        eng_model *m = et_load_model(models[mi]);
        assert_non_null(m);
        const int V = eng_model_info(m)->n_vocab;
        enum { N = 150, DEC = 4 };
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
        for (int i = 0; i < DEC; i++) {
            assert_int_equal(eng_decode(c1, toks[i + 1], -1, l1), ENG_OK);
            assert_int_equal(eng_decode(c3, toks[i + 1], -1, l2), ENG_OK);
            assert_memory_equal(l1, l2, sizeof(float) * V);
        }
        eng_ctx_free(c1);
        eng_ctx_free(c3);
        eng_model_free(m);
        free(l1);
        free(l2);
    }
}

/* The AVX-512 kernels (products and attention) against the AVX2 ones on whole prefills: the
 * same bits, so a blob published on one machine loads exactly on the other. A prompt longer
 * than a key block, odd-sized, so that paired and single queries and partial blocks occur. */
static void test_levels(void **state)
{
    (void)state;
    /* F32 weights pass activations on unrounded, so any differing bit in attention shows in
     * the logits; the shared models, then head_dim 128 (the widest attention loops) */
    static const char *const shared[] = {
        "models/synth/synth-llama-tiny-f32.gguf", "models/synth/synth-qwen2-tiny-f32.gguf",
        "models/synth/synth-qwen3-tiny-f32.gguf", "models/synth/synth-qwen3-tiny-f16.gguf",
        "models/synth/synth-qwen3-tiny-q80.gguf", "models/stories260K.gguf"};
    static const char *const synth[] = {
        "--arch qwen3 --layers 2 --dim 256 --heads 2 --kv-heads 1 --head-dim 128 --ffn 256 "
        "--vocab 512 --ctx 256 --type f32 --seed 5",
        "--arch qwen3 --layers 2 --dim 256 --heads 2 --kv-heads 1 --head-dim 128 --ffn 256 "
        "--vocab 512 --ctx 256 --type q8_0 --seed 5",
        "--arch qwen3 --layers 2 --dim 256 --heads 2 --kv-heads 1 --head-dim 128 --ffn 256 "
        "--vocab 512 --ctx 256 --type f16 --seed 5",
        "--arch stablelm --layers 2 --dim 256 --heads 2 --kv-heads 1 --head-dim 128 --n-rot 32 --qk-norm "
        "--ffn 256 --vocab 512 --ctx 256 --type f32 --seed 5",
        /* a product with K = 16384 (ffn_down): one 16-row Q8_0 panel of it is more than the f32
         * chunk a thread's panel share was sized for, at both levels (it wrote past the buffer) */
        "--arch qwen3 --layers 1 --dim 64 --heads 2 --kv-heads 1 --head-dim 32 --ffn 16384 "
        "--vocab 384 --ctx 256 --type q8_0 --seed 6"};
    const size_t nshared = sizeof shared / sizeof shared[0], nsynth = sizeof synth / sizeof synth[0];
    for (size_t mi = 0; mi < nshared + nsynth; mi++) {
        char path[256];
        eng_model *m = mi < nshared ? et_load_model(shared[mi])
                                    : et_synth("levels", synth[mi - nshared], path, sizeof path);
        assert_non_null(m);
        if (mi >= nshared)
            unlink(path);
        const eng_info *hp = eng_model_info(m);
        const int V = hp->n_vocab;
        enum { N = 149 };
        int32_t toks[N];
        make_tokens(toks, N, V);
        float *l[2] = {malloc(sizeof(float) * V), malloc(sizeof(float) * V)};
        static const int levels[2] = {ENG_GEMM_AUTO, ENG_GEMM_AVX2};
        for (int k = 0; k < 2; k++) {
            eng_gemm_force(levels[k]);
            eng_ctx_params p = {256, 2, 0};
            eng_ctx *c = NULL;
            char err[128];
            assert_int_equal(eng_ctx_create(m, &p, &c, err, sizeof err), ENG_OK);
            /* a long batch, a medium one, and a few rows (the small-batch paths) */
            assert_int_equal(eng_prefill(c, toks, NULL, 100, NULL, NULL), ENG_OK);
            assert_int_equal(eng_prefill(c, toks + 100, NULL, 45, NULL, NULL), ENG_OK);
            assert_int_equal(eng_prefill(c, toks + 145, NULL, N - 145, l[k], NULL), ENG_OK);
            eng_ctx_free(c);
        }
        eng_gemm_force(ENG_GEMM_AUTO);
        printf("%s: head_dim %d, %s kernels\n", mi < nshared ? shared[mi] : synth[mi - nshared],
               hp->head_dim, eng_gemm_kernel());
        assert_memory_equal(l[0], l[1], sizeof(float) * V);
        eng_model_free(m);
        free(l[0]);
        free(l[1]);
    }
}

/* Small batches after a long context (the prompt after a loaded document) go through the
 * attention kernel that puts query heads in the lanes where the CPU has AVX-512; a single
 * call over the whole sequence goes through the blocked kernels. Every token's logits must be
 * the same bits, and also with AVX2 forced (blocked kernels only): one, two and four lane
 * groups, partial groups, queries whose keys end inside a block, head dims 128, 64 and 16,
 * and 2 or 4 query heads per kv head. */
static void test_lanes(void **state)
{
    (void)state;
    static const char *const synth[] = {
        "--arch qwen3 --layers 2 --dim 256 --heads 4 --kv-heads 2 --head-dim 128 --ffn 128 "
        "--vocab 384 --ctx 512 --type f32 --seed 11",
        "--arch llama --layers 2 --dim 256 --heads 8 --kv-heads 2 --head-dim 64 --ffn 128 "
        "--vocab 384 --ctx 512 --type f32 --seed 12",
        "--arch qwen2 --layers 2 --dim 64 --heads 4 --kv-heads 2 --head-dim 16 --ffn 64 "
        "--vocab 384 --ctx 512 --type f16 --seed 13"};
    static const int sizes[] = {131, 5, 9, 16, 4, 1, 2, 3, 32, 7};
    enum { N = 210 };
    static const int levels[2] = {ENG_GEMM_AUTO, ENG_GEMM_AVX2};
    for (size_t mi = 0; mi < 2 * sizeof synth / sizeof synth[0]; mi++) {
        eng_gemm_force(levels[mi % 2]);
        char path[256];
        eng_model *m = et_synth("lanes", synth[mi / 2], path, sizeof path);
        assert_non_null(m);
        unlink(path);
        const int V = eng_model_info(m)->n_vocab;
        int32_t toks[N];
        make_tokens(toks, N, V);
        float *full = malloc(sizeof(float) * N * V), *part = malloc(sizeof(float) * N * V);
        eng_ctx *a = et_ctx(m, 512, 0), *b = et_ctx(m, 512, 0);
        printf("%s: %s kernels\n", synth[mi / 2], eng_gemm_kernel());
        split_equal(a, b, toks, N, V, sizes, sizeof sizes / sizeof sizes[0], full, part);
        eng_ctx_free(a);
        eng_ctx_free(b);
        eng_model_free(m);
        free(full);
        free(part);
    }
    eng_gemm_force(ENG_GEMM_AUTO);
}

/* A key after a query's cell must not touch it, whatever its value: with an infinite V row
 * at the batch's last cell, the earlier queries of a batch of 10 query heads (the lane
 * kernel on AVX-512) equal the same queries run one at a time (the blocked kernels); with
 * AVX2 forced too. */
static void test_lanes_masked_inf(void **state)
{
    (void)state;
    char path[256];
    eng_model *m = et_synth("lanesinf", "--arch qwen3 --layers 1 --dim 256 --heads 4 --kv-heads 2 --head-dim 64 "
                                        "--ffn 64 --vocab 384 --ctx 512 --type f32 --seed 3", path, sizeof path);
    assert_non_null(m);
    unlink(path);
    const eng_info *hp = eng_model_info(m);
    const int hd = hp->head_dim, nh = hp->n_head, kvd = hp->n_head_kv * hd;
    enum { CELLS = 150, NQ = 5 };
    uint16_t *k = malloc(sizeof(uint16_t) * CELLS * kvd), *v = malloc(sizeof(uint16_t) * CELLS * kvd);
    uint64_t r = 5;
    for (int i = 0; i < CELLS * kvd; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        k[i] = (uint16_t)(0x3000 | (r >> 40 & 0x83ff)); /* |x| in [0.125, 0.25) */
        v[i] = (uint16_t)(0x3400 | (r >> 20 & 0x83ff));
    }
    for (int i = 0; i < kvd; i++)
        v[(CELLS - 1) * kvd + i] = 0x7c00; /* +inf */
    float q[NQ * 4 * 64], one[NQ * 4 * 64], got[NQ * 4 * 64];
    assert_true(nh * hd <= 4 * 64);
    for (int i = 0; i < NQ * nh * hd; i++)
        q[i] = (float)((int)(i * 7919 % 201) - 100) / 100.0f;
    static const int levels[2] = {ENG_GEMM_AUTO, ENG_GEMM_AVX2};
    for (int lv = 0; lv < 2; lv++) {
        eng_gemm_force(levels[lv]);
        eng_ctx *c = et_ctx(m, 512, 0);
        assert_int_equal(eng_kv_import_layer(c, 0, 0, CELLS, k, v), ENG_OK);
        assert_int_equal(eng_kv_commit(c, 0, CELLS, 0), ENG_OK);
        const int c0 = CELLS - NQ; /* queries at the last NQ cells, the last one sees the inf */
        assert_int_equal(eng_attention(c, 0, q, (size_t)nh * hd, c0, NULL, NQ, got, (size_t)nh * hd), ENG_OK);
        for (int i = 0; i < NQ; i++)
            assert_int_equal(eng_attention(c, 0, q + (size_t)i * nh * hd, (size_t)nh * hd, c0 + i, NULL, 1,
                                           one + (size_t)i * nh * hd, (size_t)nh * hd),
                             ENG_OK);
        assert_memory_equal(got, one, sizeof(float) * (NQ - 1) * nh * hd);
        for (int i = 0; i < nh * hd; i++)
            assert_false(isfinite(got[(NQ - 1) * nh * hd + i]) && isfinite(one[(NQ - 1) * nh * hd + i]));
        eng_ctx_free(c);
    }
    eng_gemm_force(ENG_GEMM_AUTO);
    eng_model_free(m);
    free(k);
    free(v);
}

#define XCASE(i) cmocka_unit_test_prestate(test_prefix, (void *)&k_models[i])
#define SCASE(i) cmocka_unit_test_prestate(test_splits, (void *)&k_models[i])

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_rows),
        cmocka_unit_test(test_gemm_f16),
        cmocka_unit_test(test_gemm_q8),
        XCASE(0), XCASE(1), XCASE(2), XCASE(3), XCASE(4), XCASE(5), XCASE(6), XCASE(7),
        SCASE(0), SCASE(2), SCASE(5), SCASE(6), SCASE(7),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_lanes),
        cmocka_unit_test(test_lanes_masked_inf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
