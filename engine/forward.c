/* forward.c: the llama / qwen2 / qwen3 forward pass: batched prefill (weight tiles dequantized
 * once per pass, products through OpenBLAS on fixed-shape tiles) and the single-token decode
 * step (eng_matvec). Per-token work is row-wise, so results do not depend on batching. */
#include "engine/ctx_internal.h"
#include "engine/quant_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Column sub-tile of a batched product: every sgemm call has shape
 * (ENG_ROW_TILE, COL_TILE or the matrix's fixed remainder, K), whatever the thread count. */
enum { COL_TILE = 1024 };
/* Floats of dequantized weights held at once (8 MiB), rounded to whole column sub-tiles. */
enum { WTILE_FLOATS = 1 << 21 };

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

static int64_t tile_rows(int64_t K, int64_t N)
{
    int64_t nt = WTILE_FLOATS / K / COL_TILE * COL_TILE;
    if (nt < COL_TILE)
        nt = COL_TILE;
    return nt < N ? nt : N;
}

static eng_status ensure_rows(eng_ctx *c, int rows)
{
    const eng_info *hp = c->hp;
    if (rows <= c->cap_rows)
        return ENG_OK;
    const size_t E = (size_t)hp->n_embd, QD = (size_t)hp->n_head * hp->head_dim;
    const size_t KD = (size_t)c->kv_dim, F = (size_t)hp->n_ff;
    const size_t XR = (size_t)max64(max64((int64_t)E, (int64_t)QD), (int64_t)F);
    float **bufs[] = {&c->x, &c->xn, &c->q, &c->kk, &c->vv, &c->att, &c->g, &c->u, &c->xr, &c->cs};
    const size_t widths[] = {E, E, QD, KD, KD, QD, F, F, XR, (size_t)hp->rope.n_rot};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        /* zeroed: padding rows of a tile must hold finite numbers */
        *bufs[i] = calloc((size_t)rows * widths[i], sizeof(float));
        if (!*bufs[i]) {
            c->cap_rows = 0;
            return ENG_ERR_NOMEM;
        }
    }
    if (!c->wtile) {
        int64_t maxk = max64(max64((int64_t)E, (int64_t)QD), (int64_t)F);
        c->wtile_cap = (size_t)WTILE_FLOATS + (size_t)COL_TILE * (size_t)maxk;
        c->wtile = malloc(c->wtile_cap * sizeof(float));
        if (!c->wtile)
            return ENG_ERR_NOMEM;
    }
    c->cap_rows = rows;
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

static void rows_worker(void *a, int ith, int nth)
{
    rows_job *J = a;
    int r0 = (int)((int64_t)J->n * ith / nth), r1 = (int)((int64_t)J->n * (ith + 1) / nth);
    if (r1 > r0)
        J->fn(J->c, J->arg, r0, r1);
}

static void par_rows(eng_ctx *c, int n, rows_fn fn, void *arg)
{
    rows_job J = {c, fn, arg, n};
    if (n < 4)
        fn(c, arg, 0, n);
    else
        eng_pool_run(c->pool, rows_worker, &J);
}

/* ---- element-wise pieces, as ggml computes them ---- */

/* ggml's rms_norm (sum of squares in double) followed by the weight multiply. */
static void rmsnorm_row(const float *x, const float *w, int n, float eps, float *y)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int i = 0; i < n; i++)
        y[i] = (x[i] * scale) * w[i];
}

typedef struct norm_arg {
    const float *x;
    const float *w;
    float *y;
    int n;
} norm_arg;

static void norm_rows(eng_ctx *c, void *a, int r0, int r1)
{
    norm_arg *A = a;
    for (int r = r0; r < r1; r++)
        rmsnorm_row(A->x + (size_t)r * A->n, A->w, A->n, c->hp->norm_eps, A->y + (size_t)r * A->n);
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
 * Q4_0/Q8_0. K-quants (Q8_K activations) and F32 stay f32. This keeps prefill close to both
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
                y[i] = eng_bf16_to_f32((uint16_t)(u >> 16));
            }
        } else { /* Q8_0 blocks of 32, scale stored as f16, round half to even */
            for (int i = 0; i < A->K; i += 32) {
                float amax = 0;
                for (int j = 0; j < 32; j++) {
                    float v = fabsf(x[i + j]);
                    amax = v > amax ? v : amax;
                }
                const float d = eng_f16_to_f32(eng_f32_to_f16(amax / 127.0f));
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

static const float *round_act(eng_ctx *c, uint32_t type, const float *X, int R, int K)
{
    int q8 = type == GGML_T_Q8_0 || type == GGML_T_Q4_0;
    if (!(type == GGML_T_F16 || type == GGML_T_BF16 || (q8 && K % 32 == 0)))
        return X;
    round_arg A = {type, X, c->xr, K};
    par_rows(c, R, round_rows, &A);
    return c->xr;
}

/* ---- batched product: Y (R, N) = X (R, K) W^T ---- */

typedef struct deq_arg {
    const eng_wmat *W;
    int64_t n0;
    float *dst;
} deq_arg;

static void deq_rows(eng_ctx *c, void *a, int r0, int r1)
{
    (void)c;
    deq_arg *A = a;
    for (int r = r0; r < r1; r++)
        eng_dequant_row(A->W->type, (const char *)A->W->data + (size_t)(A->n0 + r) * A->W->row_bytes,
                        A->dst + (size_t)r * A->W->ncols, A->W->ncols);
}

typedef struct gemm_arg {
    const float *X;  /* (R, K) */
    const float *B;  /* (nn, K) weight rows n0.. */
    float *Y;        /* (R, N) */
    int64_t K, N, n0, nn;
    int n_rt, n_ct;  /* row tiles, column sub-tiles */
} gemm_arg;

static void gemm_units(eng_ctx *c, void *a, int u0, int u1)
{
    (void)c;
    gemm_arg *A = a;
    for (int u = u0; u < u1; u++) {
        int rt = u % A->n_rt, ct = u / A->n_rt;
        int64_t j0 = (int64_t)ct * COL_TILE, jn = A->nn - j0 < COL_TILE ? A->nn - j0 : COL_TILE;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ENG_ROW_TILE, (int)jn, (int)A->K, 1.0f,
                    A->X + (size_t)rt * ENG_ROW_TILE * A->K, (int)A->K, A->B + (size_t)j0 * A->K,
                    (int)A->K, 0.0f, A->Y + (size_t)rt * ENG_ROW_TILE * A->N + A->n0 + j0, (int)A->N);
    }
}

/* Xr: activations already rounded for W's type (round_act). */
static void linear_batch_rounded(eng_ctx *c, const eng_wmat *W, const float *Xr, int R, float *Y)
{
    const int64_t K = W->ncols, N = W->nrows, nt = tile_rows(K, N);
    for (int64_t n0 = 0; n0 < N; n0 += nt) {
        const int64_t nn = N - n0 < nt ? N - n0 : nt;
        const float *B;
        if (W->type == GGML_T_F32) {
            B = (const float *)((const char *)W->data + (size_t)n0 * W->row_bytes);
        } else {
            deq_arg D = {W, n0, c->wtile};
            par_rows(c, (int)nn, deq_rows, &D);
            B = c->wtile;
        }
        gemm_arg G = {Xr, B, Y, K, N, n0, nn, R / ENG_ROW_TILE, (int)((nn + COL_TILE - 1) / COL_TILE)};
        rows_job J = {c, gemm_units, &G, G.n_rt * G.n_ct};
        eng_pool_run(c->pool, rows_worker, &J);
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

typedef struct mv_arg {
    int n;
    const eng_wmat *W[3];
    const float *x[3];
    float *y[3];
} mv_arg;

static void mv_worker(void *a, int ith, int nth)
{
    mv_arg *A = a;
    for (int i = 0; i < A->n; i++) {
        int64_t N = A->W[i]->nrows;
        /* split on multiples of 16 rows to keep threads off each other's cache lines */
        int64_t r0 = N * ith / nth / 16 * 16, r1 = ith == nth - 1 ? N : N * (ith + 1) / nth / 16 * 16;
        eng_matvec(A->W[i]->type, A->W[i]->data, A->W[i]->row_bytes, A->W[i]->ncols, A->x[i],
                   A->y[i], r0, r1);
    }
}

static void matvec_n(eng_ctx *c, int n, const eng_wmat *const *W, const float *const *x, float *const *y)
{
    mv_arg A = {n, {0}, {0}, {0}};
    for (int i = 0; i < n; i++) {
        A.W[i] = W[i];
        A.x[i] = x[i];
        A.y[i] = y[i];
    }
    eng_pool_run(c->pool, mv_worker, &A);
}

/* Products of R rows: the fixed-tile batched path, or matvec when decoding. */
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
    const float *xr = NULL;
    for (int i = 0; i < n; i++) {
        if (i == 0 || W[i]->type != W[i - 1]->type)
            xr = round_act(c, W[i]->type, X, R, (int)W[i]->ncols);
        linear_batch_rounded(c, W[i], xr, R, Y[i]);
    }
}

/* ---- per-token attention input: biases, qk-norm, RoPE, cache store ---- */

typedef struct qkv_arg {
    const eng_layer *L;
    int il, off, c0;
} qkv_arg;

static void qkv_rows(eng_ctx *c, void *a, int i0, int i1)
{
    qkv_arg *A = a;
    const eng_info *hp = c->hp;
    const int hd = hp->head_dim, QD = hp->n_head * hd, KD = c->kv_dim;
    const eng_layer *L = A->L;
    for (int i = i0; i < i1; i++) {
        const int r = A->off + i;
        float *q = c->q + (size_t)r * QD, *k = c->kk + (size_t)r * KD, *v = c->vv + (size_t)r * KD;
        const float *cs = c->cs + (size_t)r * hp->rope.n_rot;
        if (L->bq)
            for (int j = 0; j < QD; j++)
                q[j] += L->bq[j];
        if (L->bk)
            for (int j = 0; j < KD; j++)
                k[j] += L->bk[j];
        if (L->bv)
            for (int j = 0; j < KD; j++)
                v[j] += L->bv[j];
        for (int h = 0; h < hp->n_head; h++) {
            if (L->q_norm)
                rmsnorm_row(q + h * hd, L->q_norm, hd, hp->norm_eps, q + h * hd);
            eng_rope_apply(&c->rope, cs, q + h * hd);
        }
        for (int h = 0; h < hp->n_head_kv; h++) {
            if (L->k_norm)
                rmsnorm_row(k + h * hd, L->k_norm, hd, hp->norm_eps, k + h * hd);
            eng_rope_apply(&c->rope, cs, k + h * hd);
        }
        const size_t cell = (size_t)(A->c0 + i) * KD;
        if (c->kv_f32) {
            memcpy((float *)c->k[A->il] + cell, k, sizeof(float) * (size_t)KD);
            memcpy((float *)c->v[A->il] + cell, v, sizeof(float) * (size_t)KD);
        } else {
            eng_f32_to_f16_row(k, (uint16_t *)c->k[A->il] + cell, (size_t)KD);
            eng_f32_to_f16_row(v, (uint16_t *)c->v[A->il] + cell, (size_t)KD);
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

/* Evaluates n tokens into cells n_cells.. . Rows of the scratch are tile-aligned to absolute
 * cells for prefill (row off holds cell c0); decode uses one row. out_rows: how many of the
 * last rows want logits (0, 1 or n), written to logits (n_vocab per row). */
static eng_status forward(eng_ctx *c, const int32_t *tokens, const int32_t *pos, int n, int decode,
                          int out_rows, float *logits)
{
    const eng_info *hp = c->hp;
    const eng_weights *w = c->w;
    const int E = hp->n_embd, QD = hp->n_head * hp->head_dim;
    const int c0 = c->n_cells;
    int off = 0, R = 1;
    if (!decode) {
        off = c0 % ENG_ROW_TILE;
        R = round_up(off + n, ENG_ROW_TILE);
    }
    if (ensure_rows(c, R) != ENG_OK)
        return ENG_ERR_NOMEM;
    if (!decode) {
        openblas_set_num_threads(1); /* our pool runs the tiles; see ENG_ROW_TILE */
        memset(c->x, 0, sizeof(float) * (size_t)off * E);
        memset(c->x + (size_t)(off + n) * E, 0, sizeof(float) * (size_t)(R - off - n) * E);
    }
    for (int i = 0; i < n; i++) {
        eng_dequant_row(w->tok_embd.type,
                        (const char *)w->tok_embd.data + (size_t)tokens[i] * w->tok_embd.row_bytes,
                        c->x + (size_t)(off + i) * E, E);
        eng_rope_cos_sin(&c->rope, (float)pos[i], 1, c->cs + (size_t)(off + i) * hp->rope.n_rot);
    }
    for (int il = 0; il < hp->n_layer; il++) {
        const eng_layer *L = &w->layers[il];
        norm_arg na = {c->x, L->attn_norm, c->xn, E};
        par_rows(c, R, norm_rows, &na);
        const eng_wmat *wqkv[3] = {&L->wq, &L->wk, &L->wv};
        float *yqkv[3] = {c->q, c->kk, c->vv};
        linear_n(c, decode, 3, wqkv, c->xn, R, yqkv);
        qkv_arg qa = {L, il, off, c0};
        par_rows(c, n, qkv_rows, &qa);
        if (eng_attention(c, il, c->q + (size_t)off * QD, (size_t)QD, c0, n, c->att + (size_t)off * QD,
                          (size_t)QD) != ENG_OK)
            return ENG_ERR_NOMEM;
        if (!decode) {
            memset(c->att, 0, sizeof(float) * (size_t)off * QD);
            memset(c->att + (size_t)(off + n) * QD, 0, sizeof(float) * (size_t)(R - off - n) * QD);
        }
        const eng_wmat *wo[1] = {&L->wo};
        float *yo[1] = {c->xn};
        linear_n(c, decode, 1, wo, c->att, R, yo);
        add_arg aa = {c->x, c->xn, (size_t)E};
        par_rows(c, R, add_rows, &aa);
        norm_arg nf = {c->x, L->ffn_norm, c->xn, E};
        par_rows(c, R, norm_rows, &nf);
        const eng_wmat *wgu[2] = {&L->gate, &L->up};
        float *ygu[2] = {c->g, c->u};
        linear_n(c, decode, 2, wgu, c->xn, R, ygu);
        par_rows(c, R, swiglu_rows, NULL);
        const eng_wmat *wd[1] = {&L->down};
        float *yd[1] = {c->xn};
        linear_n(c, decode, 1, wd, c->g, R, yd);
        add_arg ad = {c->x, c->xn, (size_t)E};
        par_rows(c, R, add_rows, &ad);
    }
    for (int i = 0; i < n; i++)
        c->pos[c0 + i] = pos[i];
    c->n_cells = c0 + n;
    /* logits rows: one matvec per row, the same code for prefill and decode */
    for (int t = 0; t < out_rows; t++) {
        const int r = off + n - out_rows + t;
        float *xr = c->xn + (size_t)r * E;
        rmsnorm_row(c->x + (size_t)r * E, w->output_norm, E, hp->norm_eps, xr);
        const eng_wmat *wout[1] = {&w->output};
        const float *xs[1] = {round_vec(w->output.type, xr, E, c->xr)};
        float *ys[1] = {logits + (size_t)t * hp->n_vocab};
        matvec_n(c, 1, wout, xs, ys);
    }
    return ENG_OK;
}

static eng_status check_tokens(const eng_ctx *c, const int32_t *tokens, const int32_t *pos, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= c->hp->n_vocab)
            return ENG_ERR_RANGE;
        if (pos && pos[i] < 0)
            return ENG_ERR_RANGE;
    }
    return ENG_OK;
}

eng_status eng_prefill(eng_ctx *c, const int32_t *tokens, const int32_t *pos, size_t n,
                       float *logits, float *all_logits)
{
    if (!c || (!tokens && n))
        return ENG_ERR_ARG;
    if (n == 0)
        return ENG_OK;
    if (n > (size_t)(c->n_ctx - c->n_cells))
        return ENG_ERR_RANGE;
    eng_status st = check_tokens(c, tokens, pos, n);
    if (st)
        return st;
    const int V = c->hp->n_vocab;
    int32_t next = eng_kv_next_pos(c);
    if (!pos && (int64_t)next + (int64_t)n > INT32_MAX)
        return ENG_ERR_RANGE;
    int32_t *pbuf = NULL;
    if (!pos) {
        pbuf = malloc(n * sizeof(int32_t));
        if (!pbuf)
            return ENG_ERR_NOMEM;
        for (size_t i = 0; i < n; i++)
            pbuf[i] = next + (int32_t)i;
        pos = pbuf;
    }
    size_t done = 0;
    while (done < n) {
        int off = c->n_cells % ENG_ROW_TILE;
        size_t chunk = (size_t)(ENG_MAX_ROWS - ENG_ROW_TILE - off);
        if (chunk > n - done)
            chunk = n - done;
        const int last = done + chunk == n;
        float *lg = NULL;
        int rows = 0;
        if (all_logits) {
            lg = all_logits + done * (size_t)V;
            rows = (int)chunk;
        } else if (logits && last) {
            lg = logits;
            rows = 1;
        }
        st = forward(c, tokens + done, pos + done, (int)chunk, 0, rows, lg);
        if (st)
            break;
        done += chunk;
    }
    if (!st && all_logits && logits)
        memcpy(logits, all_logits + (n - 1) * (size_t)V, sizeof(float) * (size_t)V);
    free(pbuf);
    return st;
}

eng_status eng_decode(eng_ctx *c, int32_t token, int32_t pos, float *logits)
{
    if (!c)
        return ENG_ERR_ARG;
    if (c->n_cells >= c->n_ctx)
        return ENG_ERR_RANGE;
    if (pos < 0)
        pos = eng_kv_next_pos(c);
    eng_status st = check_tokens(c, &token, &pos, 1);
    if (st)
        return st;
    return forward(c, &token, &pos, 1, 1, logits ? 1 : 0, logits);
}
