/* forward.c: the llama / qwen2 / qwen3 / stablelm forward pass: batched prefill (weight chunks dequantized
 * once per pass, products in eng_gemm_packed's fixed order) and the single-token decode step
 * (eng_matvec). Per-token work is row-wise, so results do not depend on batching. */
#include "engine/ctx_internal.h"
#include "engine/kernels/gemm_internal.h"
#include "engine/kernels/quant_blocks.h"
#include "engine/kernels/quant_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Weight rows one thread dequantizes to f32 and multiplies at a time: about 192 KiB, so they
 * stay in that core's L2 while every token row passes; a multiple of the GEMM's 3-row tile. */
enum { CHUNK_FLOATS = 49152 };

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Widest K of any product: n_embd, n_head * head_dim or n_ff. */
static int64_t xr_width_raw(const eng_info *hp)
{
    const int64_t E = hp->n_embd, QD = (int64_t)hp->n_head * hp->head_dim, F = hp->n_ff;
    return max64(max64(E, QD), F);
}

static int xr_width(const eng_ctx *c) { return eng_gemm_kr((int)xr_width_raw(c->hp)); }

static int chunk_rows(int64_t K)
{
    int64_t nb = CHUNK_FLOATS / eng_gemm_kr((int)K) / ENG_GEMM_NR * ENG_GEMM_NR;
    return nb < ENG_GEMM_NR ? ENG_GEMM_NR : (int)nb;
}

static eng_status ensure_rows(eng_ctx *c, int rows)
{
    const eng_info *hp = c->hp;
    if (rows <= c->cap_rows)
        return ENG_OK;
    const size_t E = (size_t)hp->n_embd, QD = (size_t)hp->n_head * hp->head_dim;
    const size_t KD = (size_t)c->kv_dim, F = (size_t)hp->n_ff;
    const size_t XR = (size_t)xr_width_raw(hp);
    float **bufs[] = {&c->x, &c->xn, &c->q, &c->kk, &c->vv, &c->att, &c->g, &c->u, &c->xr, &c->cs,
                      &c->panels};
    size_t floats[sizeof bufs / sizeof bufs[0]] = {E, E, QD, KD, KD, QD, F, F, XR, (size_t)hp->rope.n_rot};
    /* c->panels: X packed for the GEMM (rows, Kr of the widest K), then one chunk of packed,
     * dequantized weight rows plus one row of scratch per thread */
    const size_t nb = sizeof bufs / sizeof bufs[0], kmax = (size_t)xr_width(c);
    /* and at least one 16-row panel of Q8_0 weights of the widest K, in its widest form: the
     * panel is the integer path's smallest unit (chunk_rows_q8) */
    const int64_t q8 = ((int64_t)eng_q8w_bytes_max(ENG_Q8_NV, (int)kmax) + 64 + 3) / 4;
    const size_t per = (size_t)max64(max64(CHUNK_FLOATS, ENG_GEMM_NR * (int64_t)kmax), q8) + kmax;
    c->panels_cap = (size_t)rows * kmax + per * (size_t)eng_pool_size(c->pool);
    size_t total = 0;
    for (size_t i = 0; i < nb; i++) {
        floats[i] = i == nb - 1 ? c->panels_cap : (size_t)rows * floats[i];
        total += (floats[i] * sizeof(float) + 63) / 64 * 64;
    }
    /* one zeroed region (base_alloc_big) for all of them, 64-byte aligned each */
    base_free_big(c->rows_mem, c->rows_bytes);
    c->rows_mem = base_alloc_big(total);
    c->rows_bytes = total;
    if (!c->rows_mem) {
        c->cap_rows = 0;
        c->rows_bytes = 0;
        return ENG_ERR_NOMEM;
    }
    char *at = c->rows_mem;
    for (size_t i = 0; i < nb; i++) {
        *bufs[i] = (float *)at;
        at += (floats[i] * sizeof(float) + 63) / 64 * 64;
    }
    c->cap_rows = rows;
    return ENG_OK;
}

eng_status eng_ctx_reserve_rows(eng_ctx *c, int rows)
{
    const int had = c->cap_rows;
    if (ensure_rows(c, rows < ENG_MAX_ROWS ? rows : ENG_MAX_ROWS) != ENG_OK)
        return ENG_ERR_NOMEM;
    if (c->cap_rows != had) /* fresh: nothing in it yet */
        base_touch_big(c->rows_mem, c->rows_bytes);
    return ENG_OK;
}

/* ---- row-parallel helpers ---- */

typedef void (*rows_fn)(eng_ctx *c, void *arg, int r0, int r1);
typedef struct rows_job {
    eng_ctx *c;
    rows_fn fn;
    void *arg;
    int n;
} rows_job;

static void rows_worker(void *a, int r0, int r1, int ith)
{
    (void)ith;
    rows_job *J = a;
    J->fn(J->c, J->arg, r0, r1);
}

/* Fewer rows run on the calling thread: a decode step's row-wise steps are microseconds, less
 * than a pool hand-off. From 4 rows they are shared: the SwiGLU of a 9-row pass (BOS and an
 * 8-token prompt) is 28k expf per layer, and run on one thread, with the norms and packing,
 * they held a 40 ms pass over the weights 4 ms longer while the other thread waited. The pool
 * waits for no thread that is not running (pool.c), so a busy machine costs no time slice. */
enum { PAR_MIN_ROWS = 4 };

/* Rows in units of whole groups of g (1: any rows): a thread's rows share no cache line
 * with another's where g rows are packed together. */
static void par_groups(eng_ctx *c, int n, int g, rows_fn fn, void *arg)
{
    rows_job J = {c, fn, arg, n};
    if (n < PAR_MIN_ROWS)
        fn(c, arg, 0, n);
    else
        eng_pool_for(c->pool, n, (eng_pool_grain(c->pool, n, 8) + g - 1) / g * g, rows_worker, &J);
}

static void par_rows(eng_ctx *c, int n, rows_fn fn, void *arg) { par_groups(c, n, 1, fn, arg); }

/* ---- element-wise pieces, as ggml computes them ---- */

typedef struct norm_arg {
    const float *x;
    const float *w, *b;
    float *y;
    int n;
} norm_arg;

static void norm_rows(eng_ctx *c, void *a, int r0, int r1)
{
    norm_arg *A = a;
    for (int r = r0; r < r1; r++)
        eng_norm_row(c->hp, A->x + (size_t)r * A->n, A->w, A->b, A->n, A->y + (size_t)r * A->n);
}

static void swiglu_rows(eng_ctx *c, void *a, int r0, int r1)
{
    (void)a;
    const size_t F = (size_t)c->hp->n_ff;
    for (size_t i = (size_t)r0 * F; i < (size_t)r1 * F; i++) {
        float gv = c->g[i];
        c->g[i] = gv / (1.0f + expf(-gv)) * c->u[i];
    }
}

/* Rounds activations the way ggml feeds them to a product with this weight type (ggml converts
 * src1 to the weight type's vec_dot_type): f16 for F16 weights, bf16 for BF16, Q8_0 blocks for
 * Q4_0/Q5_0/Q8_0, and for Q4_1/Q5_1 too (their Q8_1 blocks hold the same values; only the
 * f16 block sum ggml adds for the min differs), Q8_K blocks for the K-quants. F32 stays f32. This keeps prefill close to both
 * llama.cpp and our decode path, whose kernels quantize x the same way. */
typedef struct round_arg {
    uint32_t type;
    const float *x;
    float *y;
    int K;
} round_arg;

static void round_rows(eng_ctx *c, void *a, int r0, int r1)
{
    (void)c;
    round_arg *A = a;
    for (int r = r0; r < r1; r++) {
        const float *x = A->x + (size_t)r * A->K;
        float *y = A->y + (size_t)r * A->K;
        if (A->type == GGML_T_F16) {
            uint16_t h[256];
            for (int i = 0; i < A->K; i += 256) {
                size_t m = (size_t)(A->K - i < 256 ? A->K - i : 256);
                eng_f32_to_f16_row(x + i, h, m);
                eng_f16_to_f32_row(h, y + i, m);
            }
        } else if (A->type == GGML_T_BF16) {
            for (int i = 0; i < A->K; i++) {
                uint32_t u;
                memcpy(&u, &x[i], 4);
                if ((u & 0x7fffffffu) > 0x7f800000u)
                    u |= 0x00400000u; /* quiet NaN */
                else
                    u += 0x7fffu + ((u >> 16) & 1u);
                y[i] = base_bf16_to_f32((uint16_t)(u >> 16));
            }
        } else if (A->type >= GGML_T_Q2_K && A->type <= GGML_T_Q6_K) {
            /* Q8_K blocks of 256 (ggml's quantize_row_q8_K_ref): the value of largest
             * magnitude (the first one) maps to -127, scale kept in f32 */
            for (int i = 0; i < A->K; i += 256) {
                float amax = 0, max = 0;
                for (int j = 0; j < 256; j++)
                    if (fabsf(x[i + j]) > amax) {
                        amax = fabsf(x[i + j]);
                        max = x[i + j];
                    }
                const float iscale = amax != 0.0f ? -127.0f / max : 0.0f;
                const float d = amax != 0.0f ? 1 / iscale : 0.0f;
                for (int j = 0; j < 256; j++) {
                    volatile float t = iscale * x[i + j] + 12582912.0f;
                    float q = t - 12582912.0f;
                    y[i + j] = d * (q > 127.0f ? 127.0f : q);
                }
            }
        } else { /* Q8_0 blocks of 32, scale stored as f16, round half to even */
            for (int i = 0; i < A->K; i += 32) {
                float amax = 0;
                for (int j = 0; j < 32; j++) {
                    float v = fabsf(x[i + j]);
                    amax = v > amax ? v : amax;
                }
                const float d = base_f16_to_f32(base_f32_to_f16(amax / 127.0f));
                const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
                /* |x * id| <= 127: adding and removing 1.5 * 2^23 rounds to the nearest
                 * integer, ties to even, as ggml's _mm256_round_ps does */
                for (int j = 0; j < 32; j++) {
                    volatile float t = x[i + j] * id + 12582912.0f;
                    y[i + j] = d * (t - 12582912.0f);
                }
            }
        }
    }
}


/* ---- batched product: Y (R, N) = X (R, K) W^T ----
 * Work is split over weight-row chunks; each thread dequantizes its chunk once into its own
 * buffer and multiplies every token row by it (eng_gemm_packed). A product's bits depend only on
 * the token's own row and the weights, never on R or on the thread count. */

typedef struct lin_job {
    eng_ctx *c;
    int R;
    const eng_wmat *W[3];
    const void *X[3];   /* (R, K) rounded for W's type, packed (eng_gemm_pack_row), or for
                         * Q8_0 weights int8 rows (eng_q8x_quantize_row) */
    float *Y[3];        /* (R, N) */
    int nb[3], nch[3];  /* rows per chunk, chunks */
    int few[3];         /* R <= small_rows(): weights in place or a few rows at a time */
    int total;
} lin_job;


/* Q8_0 weights multiply Q8_0-rounded activations in integers (eng_gemm_q8), for any number of
 * rows, as ggml does; the other types convert to f32 panels. */
static int q8_path(uint32_t type, int64_t K) { return type == GGML_T_Q8_0 && K % 32 == 0; }

/* Weight rows per unit of work for the integer path: up to 48, as many 16-row panels as fit in
 * a thread's share of c->panels (`per` floats, less 64 bytes of alignment). */
static int chunk_rows_q8(int64_t K, size_t per)
{
    const size_t fit = (per * sizeof(float) - 64) / eng_q8w_bytes(ENG_Q8_NV, (int)K) * ENG_Q8_NV;
    return fit >= 48 ? 48 : fit >= ENG_Q8_NV ? (int)fit : ENG_Q8_NV;
}

/* Products with at most this many X rows skip the chunk panels: they read the weights in place
 * (F16, Q8_0) or convert a few weight rows at a time into an L1-sized panel. A 1-token prefill
 * after a long context otherwise cost four decode steps, converting every weight into panels
 * once per call. Where the panels win depends on the kernel. Measured on Zen 5 (Qwen3-0.6B
 * shape, 2 threads, prefill after 64 cells, min of 4): F16 read in place beats them up to 128
 * rows at both levels (AVX-512: 17 rows 77 against 120 ms, 64 rows 210 against 250; even from
 * 192 to 384); the Q8_0 row kernel only for 1 or 2 rows (8 rows: 102-114 against 44-51 ms with
 * the VNNI panels, 110-114 against 68-71 at AVX2); converting Q4_K rows is even with the
 * panels up to 8 rows and 5-15% slower from 16. */
static int small_rows(uint32_t type, int64_t K)
{
    if (q8_path(type, K))
        return 2;
    return type == GGML_T_F16 && eng_gemm_f16_in_place() ? 128 : 16;
}

/* Chunks a thread claims at a time when the weights stream past a few rows: runs of W, not
 * chunks taken in turn, so that each thread's reads stay sequential for the prefetchers.
 * Measured on Zen 5 (Qwen3-0.6B shape F16, 2 threads, BOS + 8 tokens, medians of 6): after 64
 * cells 46.2 ms with single chunks, 41.6 with 4 or 8; after 4096 cells 86.0 against 79.5. */
enum { FEW_GRAIN = 4 };

/* Rows [n0, n0 + nn) of W (at src) for the R packed X rows; buf holds ENG_GEMM_NR + 1 rows of
 * Kr floats. The same bits as the chunk panels: only where the converted weights sit changes. */
static void few_rows(const float *X, int R, const eng_wmat *W, const char *src, int nn, float *buf,
                     float *Y)
{
    const int K = (int)W->ncols;
    const size_t N = (size_t)W->nrows;
    if (W->type == GGML_T_F16 &&
        eng_gemm_f16(X, R, (const uint16_t *)src, W->row_bytes / sizeof(uint16_t), nn, K, Y, N))
        return;
    float *row = buf + (size_t)ENG_GEMM_NR * (size_t)eng_gemm_kr(K);
    for (int r0 = 0; r0 < nn; r0 += ENG_GEMM_NR) {
        const int g = nn - r0 < ENG_GEMM_NR ? nn - r0 : ENG_GEMM_NR;
        for (int r = 0; r < g; r++) {
            const char *w = src + (size_t)(r0 + r) * W->row_bytes;
            size_t step;
            const size_t at = eng_gemm_row_at(r, g, ENG_GEMM_NR, K, &step);
            if (eng_dequant_row_panel(W->type, w, buf + at, K, step))
                continue;
            eng_dequant_row(W->type, w, row, K);
            eng_gemm_pack_row(row, K, r, g, ENG_GEMM_NR, buf);
        }
        eng_gemm_packed(X, R, buf, g, K, Y + r0, N);
    }
}

/* Floats of c->panels after the packed X that each thread has for weight panels. */
static size_t thread_share(const eng_ctx *c)
{
    const size_t xarea = (size_t)c->cap_rows * (size_t)xr_width(c);
    return (c->panels_cap - xarea) / (size_t)eng_pool_size(c->pool);
}

static void lin_worker(void *a, int u0, int u1, int ith)
{
    lin_job *J = a;
    const eng_ctx *c = J->c;
    const size_t xarea = (size_t)c->cap_rows * (size_t)xr_width(c);
    float *buf = c->panels + xarea + (size_t)ith * thread_share(c);
    for (int u = u0; u < u1; u++) {
        int m = 0, ch = u;
        while (ch >= J->nch[m])
            ch -= J->nch[m++];
        const eng_wmat *W = J->W[m];
        const int64_t K = W->ncols, N = W->nrows, n0 = (int64_t)ch * J->nb[m];
        const int nn = (int)(N - n0 < J->nb[m] ? N - n0 : J->nb[m]);
        const char *src = (const char *)W->data + (size_t)n0 * W->row_bytes;
        const int few = J->few[m];
        if (q8_path(W->type, K) && few) {
            eng_gemm_q8_rows((const uint8_t *)J->X[m], J->R, (const uint8_t *)src, W->row_bytes, nn,
                             (int)K, J->Y[m] + n0, (size_t)N);
            continue;
        }
        if (q8_path(W->type, K)) {
            uint8_t *panel = (uint8_t *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
            eng_q8w_pack((const uint8_t *)src, W->row_bytes, nn, (int)K, panel);
            eng_gemm_q8((const uint8_t *)J->X[m], J->R, panel, nn, (int)K, J->Y[m] + n0, (size_t)N);
            continue;
        }
        if (few) {
            few_rows(J->X[m], J->R, W, src, nn, buf, J->Y[m] + n0);
            continue;
        }
        float *row = buf + (size_t)nn * (size_t)eng_gemm_kr((int)K);
        for (int r = 0; r < nn; r++) {
            size_t step;
            const size_t at = eng_gemm_row_at(r, nn, ENG_GEMM_NR, (int)K, &step);
            if (eng_dequant_row_panel(W->type, src + (size_t)r * W->row_bytes, buf + at, K, step))
                continue;
            eng_dequant_row(W->type, src + (size_t)r * W->row_bytes, row, K);
            eng_gemm_pack_row(row, (int)K, r, nn, ENG_GEMM_NR, buf);
        }
        eng_gemm_packed(J->X[m], J->R, buf, nn, (int)K, J->Y[m] + n0, (size_t)N);
    }
}

/* How activations are rounded for a weight type (round_rows; 5: int8 rows for eng_gemm_q8);
 * products sharing one share X. */
static int round_kind(uint32_t type, int64_t K)
{
    if (type == GGML_T_F16)
        return 1;
    if (type == GGML_T_BF16)
        return 2;
    if (q8_path(type, K))
        return 5;
    if ((type == GGML_T_Q4_0 || type == GGML_T_Q5_0 || type == GGML_T_Q4_1 || type == GGML_T_Q5_1) &&
        K % 32 == 0)
        return 3;
    if (type >= GGML_T_Q2_K && type <= GGML_T_Q6_K && K % 256 == 0)
        return 4;
    return 0;
}

/* Activations for a product: rounded the way ggml feeds them to W's type (round_rows; into
 * c->xr) when it does, then packed into GEMM panels. */
typedef struct pack_arg {
    const float *x;
    float *dst;
    int K, R;
    uint32_t type;
    int round;
    int q8; /* int8 rows for eng_gemm_q8 into c->xr instead */
} pack_arg;

static void pack_rows(eng_ctx *c, void *a, int r0, int r1)
{
    pack_arg *A = a;
    for (int r = r0; r < r1; r++) {
        const float *x = A->x + (size_t)r * A->K;
        if (A->q8) {
            eng_q8x_quantize_row(x, A->K, (uint8_t *)c->xr + (size_t)r * eng_q8x_stride(A->K));
            continue;
        }
        if (A->round) {
            round_arg R = {A->type, A->x, c->xr, A->K};
            round_rows(c, &R, r, r + 1);
            x = c->xr + (size_t)r * A->K;
        }
        eng_gemm_pack_row(x, A->K, r, A->R, ENG_GEMM_MR, A->dst);
    }
}

/* Products of up to three matrices with the same input X (R rows) in one pool run. */
static void linear_batch(eng_ctx *c, int n, const eng_wmat *const *W, const float *X, int R,
                         float *const *Y)
{
    for (int i0 = 0; i0 < n;) {
        /* the matrices from i0 on whose activations round alike */
        const int kind = round_kind(W[i0]->type, W[i0]->ncols);
        int i1 = i0 + 1;
        while (i1 < n && round_kind(W[i1]->type, W[i1]->ncols) == kind && W[i1]->ncols == W[i0]->ncols)
            i1++;
        const int K = (int)W[i0]->ncols;
        pack_arg P = {X, c->panels, K, R, W[i0]->type, kind != 0, kind == 5};
        par_groups(c, R, ENG_GEMM_MR, pack_rows, &P);
        const void *xr = kind == 5 ? (const void *)c->xr : (const void *)c->panels;
        lin_job J = {c, R, {0}, {0}, {0}, {0}, {0}, {0}, 0};
        int few = 1;
        for (int i = i0; i < i1; i++) {
            const int k = i - i0;
            J.W[k] = W[i];
            J.X[k] = xr;
            J.Y[k] = Y[i];
            J.nb[k] = kind == 5 ? chunk_rows_q8(W[i]->ncols, thread_share(c)) : chunk_rows(W[i]->ncols);
            J.nch[k] = (int)((W[i]->nrows + J.nb[k] - 1) / J.nb[k]);
            J.few[k] = R <= small_rows(W[i]->type, W[i]->ncols);
            few &= J.few[k];
            J.total += J.nch[k];
        }
        eng_pool_for(c->pool, J.total, few ? FEW_GRAIN : 1, lin_worker, &J);
        i0 = i1;
    }
}

/* ---- decode products: y = W x for up to three matrices sharing one pool run ---- */

/* The matvec kernels read x as f32 for F16/BF16 weights; ggml rounds x to the weight type
 * first, so do that here (the Q8 kernels quantize x themselves, as ggml does). x (n) -> tmp. */
static const float *round_vec(uint32_t type, const float *x, int n, float *tmp)
{
    if (type != GGML_T_F16 && type != GGML_T_BF16)
        return x;
    round_arg A = {type, x, tmp, n};
    round_rows(NULL, &A, 0, 1);
    return tmp;
}

/* Each matrix is cut into blocks of rows (multiples of 16, to keep threads off each other's
 * cache lines), a few per thread; the units are the blocks of all matrices in turn. */
typedef struct mv_arg {
    int n;
    const eng_wmat *W[3];
    const float *x[3];
    float *y[3];
    int64_t rows[3]; /* rows per block */
    int nblk[3];
} mv_arg;

static void mv_worker(void *a, int u0, int u1, int ith)
{
    (void)ith;
    mv_arg *A = a;
    for (int u = u0; u < u1; u++) {
        int i = 0, b = u;
        while (b >= A->nblk[i])
            b -= A->nblk[i++];
        const eng_wmat *W = A->W[i];
        const int64_t r0 = b * A->rows[i], r1 = r0 + A->rows[i] < W->nrows ? r0 + A->rows[i] : W->nrows;
        eng_matvec(W->type, W->data, W->row_bytes, W->ncols, A->x[i], A->y[i], r0, r1);
    }
}

static void matvec_n(eng_ctx *c, int n, const eng_wmat *const *W, const float *const *x, float *const *y)
{
    enum { BLOCKS_PER_THREAD = 4 };
    mv_arg A = {n, {0}, {0}, {0}, {0}, {0}};
    int units = 0;
    for (int i = 0; i < n; i++) {
        A.W[i] = W[i];
        A.x[i] = x[i];
        A.y[i] = y[i];
        const int64_t N = W[i]->nrows, per = N / (BLOCKS_PER_THREAD * eng_pool_size(c->pool));
        A.rows[i] = per < 16 ? 16 : (per + 15) / 16 * 16;
        A.nblk[i] = (int)((N + A.rows[i] - 1) / A.rows[i]);
        units += A.nblk[i];
    }
    eng_pool_for(c->pool, units, 1, mv_worker, &A);
}

/* Products of R rows: the batched path, or matvec when decoding. */
static void linear_n(eng_ctx *c, int decode, int n, const eng_wmat *const *W, const float *X, int R,
                     float *const *Y)
{
    if (decode) {
        const float *xs[3];
        for (int i = 0; i < n; i++)
            xs[i] = round_vec(W[i]->type, X, (int)W[i]->ncols, c->xr);
        matvec_n(c, n, W, xs, Y);
        return;
    }
    linear_batch(c, n, W, X, R, Y);
}

/* ---- per-token attention input: biases, qk-norm, RoPE, cache store ---- */

typedef struct qkv_arg {
    const eng_layer *L;
    int il, c0;
    const int *cells; /* row i's cell: cells[i] when given, else c0 + i */
    int kv_only;      /* K and V computed for comparison: no Q, nothing stored */
} qkv_arg;

static void qkv_rows(eng_ctx *c, void *a, int i0, int i1)
{
    qkv_arg *A = a;
    const eng_info *hp = c->hp;
    const int hd = hp->head_dim, QD = hp->n_head * hd, KD = c->kv_dim;
    const eng_layer *L = A->L;
    for (int i = i0; i < i1; i++) {
        const int r = i; /* scratch row of the cell */
        float *q = c->q + (size_t)r * QD, *k = c->kk + (size_t)r * KD, *v = c->vv + (size_t)r * KD;
        const float *cs = c->cs + (size_t)r * hp->rope.n_rot;
        if (L->bq && !A->kv_only)
            for (int j = 0; j < QD; j++)
                q[j] += L->bq[j];
        if (L->bk)
            for (int j = 0; j < KD; j++)
                k[j] += L->bk[j];
        if (L->bv)
            for (int j = 0; j < KD; j++)
                v[j] += L->bv[j];
        const int ns = hp->norm == ENG_NORM_LAYER ? hd : 0; /* stablelm: a norm weight per head */
        for (int h = 0; h < hp->n_head && !A->kv_only; h++) {
            if (L->q_norm)
                eng_norm_row(hp, q + h * hd, L->q_norm + h * ns, NULL, hd, q + h * hd);
            eng_rope_apply(&c->rope, cs, q + h * hd);
        }
        for (int h = 0; h < hp->n_head_kv; h++) {
            if (L->k_norm)
                eng_norm_row(hp, k + h * hd, L->k_norm + h * ns, NULL, hd, k + h * hd);
            eng_rope_apply(&c->rope, cs, k + h * hd);
        }
        if (A->kv_only)
            continue;
        const int cell = A->cells ? A->cells[i] : A->c0 + i;
        for (int h = 0; h < hp->n_head_kv; h++) {
            const size_t off = eng_kv_off(c, cell, h);
            if (c->kv_f32) {
                memcpy((float *)c->k[A->il] + off, k + h * hd, sizeof(float) * (size_t)hd);
                memcpy((float *)c->v[A->il] + off, v + h * hd, sizeof(float) * (size_t)hd);
            } else {
                eng_f32_to_f16_row(k + h * hd, (uint16_t *)c->k[A->il] + off, (size_t)hd);
                eng_f32_to_f16_row(v + h * hd, (uint16_t *)c->v[A->il] + off, (size_t)hd);
            }
        }
        if (!c->kv_f32) {
            /* ggml multiplies an f16 K by q converted to f16 */
            uint16_t h16[512];
            for (int h = 0; h < hp->n_head; h++) {
                eng_f32_to_f16_row(q + h * hd, h16, (size_t)hd);
                eng_f16_to_f32_row(h16, q + h * hd, (size_t)hd);
            }
        }
    }
}

typedef struct add_arg {
    float *x;
    const float *y;
    size_t w;
} add_arg;

static void add_rows(eng_ctx *c, void *a, int r0, int r1)
{
    (void)c;
    add_arg *A = a;
    for (size_t i = (size_t)r0 * A->w; i < (size_t)r1 * A->w; i++)
        A->x[i] += A->y[i];
}

/* ---- the pass ---- */

/* c->g = swiglu(gate(c->xn), up(c->xn)) for R rows. */
static void ffn_gate_up(eng_ctx *c, int decode, const eng_layer *L, int R)
{
    const eng_wmat *wgu[2] = {&L->gate, &L->up};
    float *ygu[2] = {c->g, c->u};
    linear_n(c, decode, 2, wgu, c->xn, R, ygu);
    par_rows(c, R, swiglu_rows, NULL);
}

eng_status eng_fwd_begin(eng_ctx *c, const int32_t *tokens, const int32_t *pos, int n)
{
    const eng_info *hp = c->hp;
    const eng_weights *w = c->w;
    const int E = hp->n_embd;
    if (ensure_rows(c, n) != ENG_OK)
        return ENG_ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        eng_dequant_row(w->tok_embd.type,
                        (const char *)w->tok_embd.data + (size_t)tokens[i] * w->tok_embd.row_bytes,
                        c->x + (size_t)i * E, E);
        eng_rope_cos_sin(&c->rope, (float)pos[i], 1, c->cs + (size_t)i * hp->rope.n_rot);
    }
    return ENG_OK;
}

eng_status eng_fwd_layers(eng_ctx *c, int n, int c0, const int *cells, int il0, int il1, int decode)
{
    const eng_info *hp = c->hp;
    const eng_weights *w = c->w;
    const int E = hp->n_embd, QD = hp->n_head * hp->head_dim, R = n;
    for (int il = il0; il < il1; il++) {
        const eng_layer *L = &w->layers[il];
        norm_arg na = {c->x, L->attn_norm, L->attn_norm_b, c->xn, E};
        par_rows(c, R, norm_rows, &na);
        const eng_wmat *wqkv[3] = {&L->wq, &L->wk, &L->wv};
        float *yqkv[3] = {c->q, c->kk, c->vv};
        linear_n(c, decode, 3, wqkv, c->xn, R, yqkv);
        if (!L->ffn_norm) /* parallel residual: the FFN reads the attention's normed input */
            ffn_gate_up(c, decode, L, R);
        qkv_arg qa = {L, il, c0, cells, 0};
        par_rows(c, n, qkv_rows, &qa);
        const eng_status ast = decode ? eng_attention_decode(c, il, c->q, c0, c->att)
                                      : eng_attention(c, il, c->q, (size_t)QD, c0, cells, n, c->att, (size_t)QD);
        if (ast != ENG_OK)
            return ast;
        const eng_wmat *wo[1] = {&L->wo};
        float *yo[1] = {c->xn};
        linear_n(c, decode, 1, wo, c->att, R, yo);
        add_arg aa = {c->x, c->xn, (size_t)E};
        par_rows(c, R, add_rows, &aa);
        if (L->ffn_norm) {
            norm_arg nf = {c->x, L->ffn_norm, L->ffn_norm_b, c->xn, E};
            par_rows(c, R, norm_rows, &nf);
            ffn_gate_up(c, decode, L, R);
        }
        const eng_wmat *wd[1] = {&L->down};
        float *yd[1] = {c->xn};
        linear_n(c, decode, 1, wd, c->g, R, yd);
        add_arg ad = {c->x, c->xn, (size_t)E};
        par_rows(c, R, add_rows, &ad);
    }
    return ENG_OK;
}

void eng_fwd_kv(eng_ctx *c, int il, int n)
{
    const eng_layer *L = &c->w->layers[il];
    norm_arg na = {c->x, L->attn_norm, L->attn_norm_b, c->xn, c->hp->n_embd};
    par_rows(c, n, norm_rows, &na);
    const eng_wmat *wkv[2] = {&L->wk, &L->wv};
    float *ykv[2] = {c->kk, c->vv};
    linear_n(c, 0, 2, wkv, c->xn, n, ykv);
    qkv_arg qa = {L, il, 0, NULL, 1};
    par_rows(c, n, qkv_rows, &qa);
}

void eng_fwd_logits(eng_ctx *c, int n, int out_rows, float *logits)
{
    const eng_info *hp = c->hp;
    const eng_weights *w = c->w;
    const int E = hp->n_embd;
    /* one matvec per row, the same code for prefill and decode */
    for (int t = 0; t < out_rows; t++) {
        const int r = n - out_rows + t;
        float *xr = c->xn + (size_t)r * E;
        eng_norm_row(hp, c->x + (size_t)r * E, w->output_norm, w->output_norm_b, E, xr);
        const eng_wmat *wout[1] = {&w->output};
        const float *xs[1] = {round_vec(w->output.type, xr, E, c->xr)};
        float *ys[1] = {logits + (size_t)t * hp->n_vocab};
        matvec_n(c, 1, wout, xs, ys);
    }
}

eng_status eng_forward(eng_ctx *c, const int32_t *tokens, const int32_t *pos, int n, int decode, int out_rows,
                       float *logits)
{
    const int c0 = c->n_cells;
    eng_status st = eng_fwd_begin(c, tokens, pos, n);
    if (st == ENG_OK)
        st = eng_fwd_layers(c, n, c0, NULL, 0, c->hp->n_layer, decode);
    if (st != ENG_OK)
        return st;
    for (int i = 0; i < n; i++)
        c->pos[c0 + i] = pos[i];
    c->n_cells = c0 + n;
    eng_fwd_logits(c, n, out_rows, logits);
    return ENG_OK;
}
