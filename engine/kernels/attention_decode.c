/* attention_decode.c: attention for one query (a decode step), keys read straight from the
 * f16 cache; prefill attention is attention.c. */
#include "engine/ctx_internal.h"
#include "engine/kernels/attention_shared.h"
#include "engine/kernels/quant_internal.h"

#include <math.h>
#include <string.h>

/* ---- decode: one query, keys read straight from the f16 cache ----
 * A decode step has one query per head, so converting key blocks for reuse (as prefill does)
 * would cost more than the products. Here each key row is converted in registers and dotted
 * with the query heads that share it (8-lane FMA chains, 4 keys in flight). Only eng_decode
 * uses this; its results need not match a prefill of the same token bit for bit. */

typedef struct dec_job {
    eng_ctx *c;
    int il;
    const float *q;  /* (n_head, head_dim) */
    int cell;        /* the query's cell; keys 0..cell */
    float *out;      /* (n_head, head_dim) */
} dec_job;

/* Scores of keys [b0, b0 + n) against query heads q (G of them, hd apart), times scale, into
 * s (G, KB); portable version, also for the f32 cache. */
static void dec_scores_scalar(const eng_ctx *c, int il, int h, const float *q, int G, int b0, int n,
                              float scale, float *s)
{
    const int hd = c->hp->head_dim;
    float row[512];
    for (int j = 0; j < n; j++) {
        const size_t off = eng_kv_off(c, b0 + j, h);
        if (c->kv_f32)
            memcpy(row, (const float *)c->k[il] + off, sizeof(float) * (size_t)hd);
        else
            eng_f16_to_f32_row((const uint16_t *)c->k[il] + off, row, (size_t)hd);
        for (int g = 0; g < G; g++) {
            float acc = 0;
            for (int d = 0; d < hd; d++)
                acc += q[(size_t)g * hd + d] * row[d];
            s[g * KB + j] = acc * scale;
        }
    }
}

#if defined(__x86_64__)
#define F16C_FN __attribute__((target("avx2,fma,f16c")))
/* Keys j0..j0+3 (f16 rows ld apart) against one or two query heads q0, q1 (q1 may be NULL). */
static F16C_FN void dec_dot4(const uint16_t *k, size_t ld, int hd, const float *q0, const float *q1,
                             float scale, float *s0, float *s1)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int d = 0; d < hd; d += 8) {
        const __m256 k0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + d)));
        const __m256 k1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + ld + d)));
        const __m256 k2 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + 2 * ld + d)));
        const __m256 k3 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + 3 * ld + d)));
        const __m256 x = _mm256_loadu_ps(q0 + d);
        a0 = _mm256_fmadd_ps(x, k0, a0);
        a1 = _mm256_fmadd_ps(x, k1, a1);
        a2 = _mm256_fmadd_ps(x, k2, a2);
        a3 = _mm256_fmadd_ps(x, k3, a3);
        if (q1) {
            const __m256 y = _mm256_loadu_ps(q1 + d);
            b0 = _mm256_fmadd_ps(y, k0, b0);
            b1 = _mm256_fmadd_ps(y, k1, b1);
            b2 = _mm256_fmadd_ps(y, k2, b2);
            b3 = _mm256_fmadd_ps(y, k3, b3);
        }
    }
    s0[0] = hsum8(a0) * scale;
    s0[1] = hsum8(a1) * scale;
    s0[2] = hsum8(a2) * scale;
    s0[3] = hsum8(a3) * scale;
    if (q1) {
        s1[0] = hsum8(b0) * scale;
        s1[1] = hsum8(b1) * scale;
        s1[2] = hsum8(b2) * scale;
        s1[3] = hsum8(b3) * scale;
    }
}

/* s[j] = exp(s[j] - m) for j < n (m >= every s[j]); returns their sum. */
static F16C_FN float dec_exp_avx2(float *s, int n, float m)
{
    const __m256 vm = _mm256_set1_ps(m);
    __m256 sum = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 p = exp_neg_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
        _mm256_storeu_ps(s + j, p);
        sum = _mm256_add_ps(sum, p);
    }
    float tail = 0;
    for (; j < n; j++) {
        s[j] = expf(s[j] - m);
        tail += s[j];
    }
    return hsum8(sum) + tail;
}

static F16C_FN void dec_scores_f16c(const eng_ctx *c, int il, int h, const float *q, int G, int b0,
                                    int n, float scale, float *s)
{
    const int hd = c->hp->head_dim;
    const size_t ld = (size_t)hd;
    const uint16_t *k = (const uint16_t *)c->k[il] + eng_kv_off(c, b0, h);
    /* whole groups of 4 keys; the cache is zero-filled past the filled cells, and columns
     * past n are masked by the caller */
    const int n4 = (n + 3) / 4 * 4 <= c->n_ctx - b0 ? (n + 3) / 4 * 4 : n / 4 * 4;
    for (int g = 0; g < G; g += 2) {
        const float *q0 = q + (size_t)g * hd, *q1 = g + 1 < G ? q0 + hd : NULL;
        for (int j = 0; j < n4; j += 4)
            dec_dot4(k + (size_t)j * ld, ld, hd, q0, q1, scale, s + g * KB + j,
                     q1 ? s + (g + 1) * KB + j : NULL);
    }
    if (n4 < n) {
        float *tmp = s + G * KB; /* the scratch rows past the G score rows */
        dec_scores_scalar(c, il, h, q, G, b0 + n4, n - n4, scale, tmp);
        for (int g = 0; g < G; g++)
            for (int j = n4; j < n; j++)
                s[g * KB + j] = tmp[g * KB + j - n4];
    }
}

/* acc (hd) = acc * alpha + sum_j p[j] * V_j over keys [b0, b0 + n), for two heads sharing V
 * (acc1 / p1 NULL for one). */
static F16C_FN void dec_pv_f16c(const uint16_t *v, size_t ld, int hd, int n, const float *p0,
                                const float *p1, float *acc0, float *acc1)
{
    for (int d = 0; d < hd; d += 32) {
        __m256 a0 = _mm256_loadu_ps(acc0 + d), a1 = _mm256_loadu_ps(acc0 + d + 8);
        __m256 a2 = _mm256_loadu_ps(acc0 + d + 16), a3 = _mm256_loadu_ps(acc0 + d + 24);
        __m256 b0 = a0, b1 = a1, b2 = a2, b3 = a3;
        if (p1) {
            b0 = _mm256_loadu_ps(acc1 + d);
            b1 = _mm256_loadu_ps(acc1 + d + 8);
            b2 = _mm256_loadu_ps(acc1 + d + 16);
            b3 = _mm256_loadu_ps(acc1 + d + 24);
        }
        for (int j = 0; j < n; j++) {
            const uint16_t *r = v + (size_t)j * ld + d;
            const __m256 v0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)r));
            const __m256 v1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 8)));
            const __m256 v2 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 16)));
            const __m256 v3 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 24)));
            const __m256 pa = _mm256_broadcast_ss(p0 + j);
            a0 = _mm256_fmadd_ps(pa, v0, a0);
            a1 = _mm256_fmadd_ps(pa, v1, a1);
            a2 = _mm256_fmadd_ps(pa, v2, a2);
            a3 = _mm256_fmadd_ps(pa, v3, a3);
            if (p1) {
                const __m256 pb = _mm256_broadcast_ss(p1 + j);
                b0 = _mm256_fmadd_ps(pb, v0, b0);
                b1 = _mm256_fmadd_ps(pb, v1, b1);
                b2 = _mm256_fmadd_ps(pb, v2, b2);
                b3 = _mm256_fmadd_ps(pb, v3, b3);
            }
        }
        _mm256_storeu_ps(acc0 + d, a0);
        _mm256_storeu_ps(acc0 + d + 8, a1);
        _mm256_storeu_ps(acc0 + d + 16, a2);
        _mm256_storeu_ps(acc0 + d + 24, a3);
        if (p1) {
            _mm256_storeu_ps(acc1 + d, b0);
            _mm256_storeu_ps(acc1 + d + 8, b1);
            _mm256_storeu_ps(acc1 + d + 16, b2);
            _mm256_storeu_ps(acc1 + d + 24, b3);
        }
    }
}
#endif

/* One key block [b0, b0 + n) for kv head h: scores into s (scratch, 2 * G * KB floats), then
 * the online-softmax update of acc (G, hd + 2): accumulators, running max, running sum. */
static void dec_block(const dec_job *J, int h, int b0, int n, float *s, float *acc)
{
    const eng_ctx *c = J->c;
    const int hd = c->hp->head_dim, G = c->hp->n_head / c->hp->n_head_kv, il = J->il;
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t ld = (size_t)hd;
    const float *q = J->q + (size_t)h * G * hd;
#if defined(__x86_64__)
    const int fast = !c->kv_f32 && hd % 32 == 0 && base_cpu_has(CPU_F16C_PATHS);
    if (fast)
        dec_scores_f16c(c, il, h, q, G, b0, n, scale, s);
    else
#endif
        dec_scores_scalar(c, il, h, q, G, b0, n, scale, s);
    for (int g = 0; g < G; g++) {
        float *sg = s + g * KB, *a = acc + (size_t)g * (hd + 2);
        float bmax = -INFINITY;
        for (int j = 0; j < n; j++)
            bmax = fmaxf(bmax, sg[j]);
        const float mnew = fmaxf(a[hd], bmax);
        float lsum = 0;
#if defined(__x86_64__)
        if (fast)
            lsum = dec_exp_avx2(sg, n, mnew);
        else
#endif
            for (int j = 0; j < n; j++) {
                sg[j] = expf(sg[j] - mnew);
                lsum += sg[j];
            }
        const float alpha = expf(a[hd] - mnew);
        a[hd + 1] = a[hd + 1] * alpha + lsum;
        a[hd] = mnew;
        if (alpha != 1.0f)
            for (int d = 0; d < hd; d++)
                a[d] *= alpha;
    }
    const size_t voff = eng_kv_off(c, b0, h);
#if defined(__x86_64__)
    if (fast) {
        for (int g = 0; g < G; g += 2) {
            const int two = g + 1 < G;
            dec_pv_f16c((const uint16_t *)c->v[il] + voff, ld, hd, n, s + g * KB,
                        two ? s + (g + 1) * KB : NULL, acc + (size_t)g * (hd + 2),
                        two ? acc + (size_t)(g + 1) * (hd + 2) : NULL);
        }
        return;
    }
#endif
    float row[512];
    for (int j = 0; j < n; j++) {
        if (c->kv_f32)
            memcpy(row, (const float *)c->v[il] + voff + (size_t)j * ld, sizeof(float) * (size_t)hd);
        else
            eng_f16_to_f32_row((const uint16_t *)c->v[il] + voff + (size_t)j * ld, row, (size_t)hd);
        for (int g = 0; g < G; g++) {
            float *a = acc + (size_t)g * (hd + 2);
            const float p = s[g * KB + j];
            for (int d = 0; d < hd; d++)
                a[d] += p * row[d];
        }
    }
}

/* A unit is a range of kv heads: the key blocks are walked once for all of them, so it streams
 * one contiguous part of every cache row. A head's result does not depend on the split. */
static void dec_worker(void *arg, int h0, int h1, int ith)
{
    const dec_job *J = arg;
    const eng_ctx *c = J->c;
    const int hd = c->hp->head_dim, G = c->hp->n_head / c->hp->n_head_kv;
    float *s = align32(c->att_scratch + (size_t)ith * c->att_scratch_per);
    float *acc = s + (size_t)(2 * G) * KB; /* (h1 - h0, G, hd + 2) */
    for (int t = 0; t < (h1 - h0) * G; t++) {
        float *a = acc + (size_t)t * (hd + 2);
        memset(a, 0, sizeof(float) * (size_t)hd);
        a[hd] = -INFINITY;
        a[hd + 1] = 0;
    }
    for (int b0 = 0; b0 <= J->cell; b0 += KB) {
        const int n = J->cell + 1 - b0 < KB ? J->cell + 1 - b0 : KB;
        for (int h = h0; h < h1; h++)
            dec_block(J, h, b0, n, s, acc + (size_t)(h - h0) * G * (hd + 2));
    }
    for (int h = h0; h < h1; h++)
        for (int g = 0; g < G; g++) {
            const float *a = acc + (size_t)((h - h0) * G + g) * (hd + 2);
            float *o = J->out + (size_t)(h * G + g) * hd;
            const float inv = 1.0f / a[hd + 1];
            for (int d = 0; d < hd; d++)
                o[d] = a[d] * inv;
        }
}

eng_status eng_attention_decode(eng_ctx *c, int il, const float *q, int cell, float *out)
{
    dec_job J = {c, il, q, cell, out};
    const int nkv = c->hp->n_head_kv;
    eng_pool_for(c->pool, nkv, eng_pool_grain(c->pool, nkv, 2), dec_worker, &J);
    return ENG_OK;
}
