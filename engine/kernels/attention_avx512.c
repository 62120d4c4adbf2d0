/* attention_avx512.c: the blocked attention's AVX-512 kernels. Each output lane runs the same
 * operations in the same order as in attention.c's AVX2 kernels (a key's score over the head
 * dimensions; an accumulator dimension over the keys; the same exp polynomial; the same
 * summation tree for the block's softmax sum), so results are bit-identical; the registers
 * are twice as wide, and phase 0 can take two queries at once to keep enough FMA chains.
 * For a few queries, a kernel with the query heads in the lanes computes the same bits
 * without transposing key blocks (eng_att_lanes_avx512). */
#include "engine/kernels/attention_internal.h"
#include "engine/kernels/attention_shared.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c")))

enum { KV = KB / 16 };

/* attention_shared.h's exp_neg_avx2, lane for lane. */
static AVX512 inline __m512 exp_neg(__m512 x)
{
    const __m512 lo = _mm512_set1_ps(-87.0f);
    const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_max_ps(x, lo);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    const __m512 r2 = _mm512_mul_ps(r, r);
    __m512 y = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    y = _mm512_mul_ps(y, _mm512_castsi512_ps(e));
    return _mm512_maskz_mov_ps((__mmask16)~under, y);
}

static AVX512 inline __m512 v16(const void *V, size_t off, int f16)
{
    if (f16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)V + off)));
    return _mm512_loadu_ps((const float *)V + off);
}

/* The first half of attention.c's phase1_avx2 at twice the width: s (KB scores) becomes the
 * probabilities, and the running max m, sum l and the accumulator acc (hd) are updated. */
static AVX512 inline __attribute__((always_inline)) void softmax(int hd, float *s, float *m,
                                                                float *l, float *acc)
{
    __m512 z[KV];
    __m512 mx = _mm512_loadu_ps(s);
#pragma GCC unroll 4
    for (int k = 1; k < KV; k++)
        mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + 16 * k));
    const float mnew = fmaxf(*m, _mm512_reduce_max_ps(mx));
    const __m512 vm = _mm512_set1_ps(mnew);
#pragma GCC unroll 4
    for (int k = 0; k < KV; k++) {
        z[k] = exp_neg(_mm512_sub_ps(_mm512_loadu_ps(s + 16 * k), vm));
        _mm512_storeu_ps(s + 16 * k, z[k]);
    }
    /* the AVX2 tree over eight 8-key sums: sum[2k] and sum[2k + 1] are z[k]'s halves */
#define LO(k) _mm512_castps512_ps256(z[k])
#define HI(k) _mm512_extractf32x8_ps(z[k], 1)
    const __m256 t0 = _mm256_add_ps(_mm256_add_ps(LO(0), HI(0)), _mm256_add_ps(LO(1), HI(1)));
    const __m256 t1 = _mm256_add_ps(_mm256_add_ps(LO(2), HI(2)), _mm256_add_ps(LO(3), HI(3)));
#undef LO
#undef HI
    const float lsum = hsum8(_mm256_add_ps(t0, t1));
    const float alpha = expf(*m - mnew);
    *l = *l * alpha + lsum;
    *m = mnew;
    if (alpha != 1.0f) {
        const __m512 va = _mm512_set1_ps(alpha);
        for (int d = 0; d < hd; d += 16)
            _mm512_storeu_ps(acc + d, _mm512_mul_ps(_mm512_loadu_ps(acc + d), va));
    }
}

/* acc_i[d] = fma(p_j, v_j[d], acc_i[d]) for j < jend[i], in j order, for nq (1 or 2) queries
 * sharing each load of V: the keys both see first, then each one's own. */
static AVX512 inline __attribute__((always_inline)) void v_product(const void *V, size_t ldv,
                                                                  int f16, int hd, int nq,
                                                                  const int *jend,
                                                                  float *const *s,
                                                                  float *const *acc, int wide)
{
    const int both = nq == 2 && jend[1] < jend[0] ? jend[1] : jend[0];
    for (int d = 0; d < hd; d += 128) {
        /* registers of 16 dims: 8 (a constant) when hd is a multiple of 128 */
        const int w = wide ? 8 : hd - d < 128 ? (hd - d) / 16 : 8;
        __m512 c[2][8];
#pragma GCC unroll 2
        for (int i = 0; i < nq; i++)
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++)
                c[i][k] = k < w ? _mm512_loadu_ps(acc[i] + d + 16 * k) : _mm512_setzero_ps();
        for (int j = 0; j < both; j++) {
            const size_t vr = (size_t)j * ldv + (size_t)d;
            const __m512 pa = _mm512_set1_ps(s[0][j]), pb = _mm512_set1_ps(s[nq - 1][j]);
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++) {
                if (k >= w)
                    break;
                const __m512 v = v16(V, vr + 16 * (size_t)k, f16);
                c[0][k] = _mm512_fmadd_ps(pa, v, c[0][k]);
                if (nq == 2)
                    c[1][k] = _mm512_fmadd_ps(pb, v, c[1][k]);
            }
        }
#pragma GCC unroll 2
        for (int i = 0; i < nq; i++) {
            for (int j = both; j < jend[i]; j++) {
                const __m512 p = _mm512_set1_ps(s[i][j]);
#pragma GCC unroll 8
                for (int k = 0; k < 8; k++)
                    if (k < w)
                        c[i][k] = _mm512_fmadd_ps(p, v16(V, (size_t)j * ldv + (size_t)d + 16 * (size_t)k, f16), c[i][k]);
            }
#pragma GCC unroll 8
            for (int k = 0; k < 8; k++)
                if (k < w)
                    _mm512_storeu_ps(acc[i] + d + 16 * k, c[i][k]);
        }
    }
}

/* Scores of nq (1 or 2) queries: s[j] = (sum over d in order of q[d] * Kt[d][j]) * scale, keys
 * from jend on masked. */
static AVX512 inline __attribute__((always_inline)) void scores(const float *const *q, int nq,
                                                               const float *Kt, int hd,
                                                               const int *jend, float scale,
                                                               float *const *s)
{
    __m512 a[2][KV];
#pragma GCC unroll 2
    for (int i = 0; i < nq; i++)
#pragma GCC unroll 4
        for (int k = 0; k < KV; k++)
            a[i][k] = _mm512_setzero_ps();
    for (int d = 0; d < hd; d++) {
        const float *kr = Kt + (size_t)d * KB;
        __m512 kv[KV];
#pragma GCC unroll 4
        for (int k = 0; k < KV; k++)
            kv[k] = _mm512_loadu_ps(kr + 16 * k);
#pragma GCC unroll 2
        for (int i = 0; i < nq; i++) {
            const __m512 qd = _mm512_set1_ps(q[i][d]);
#pragma GCC unroll 4
            for (int k = 0; k < KV; k++)
                a[i][k] = _mm512_fmadd_ps(qd, kv[k], a[i][k]);
        }
    }
    const __m512 vs = _mm512_set1_ps(scale);
#pragma GCC unroll 2
    for (int i = 0; i < nq; i++) {
#pragma GCC unroll 4
        for (int k = 0; k < KV; k++)
            _mm512_storeu_ps(s[i] + 16 * k, _mm512_mul_ps(a[i][k], vs));
        for (int j = jend[i]; j < KB; j++)
            s[i][j] = -INFINITY; /* keys after this query's cell */
    }
}

AVX512 void eng_att_blk_avx512(const float *q, const float *Kt, const float *Vb, int hd, int jend,
                               float scale, float *s, float *m, float *l, float *acc, int phase)
{
    if (phase == 1) {
        softmax(hd, s, m, l, acc);
        v_product(Vb, (size_t)hd, 0, hd, 1, &jend, &s, &acc, 0);
        return;
    }
    scores(&q, 1, Kt, hd, &jend, scale, &s);
}

AVX512 void eng_att_scores2_avx512(const float *qa, const float *qb, const float *Kt, int hd,
                                   int jend_a, int jend_b, float scale, float *sa, float *sb)
{
    const float *q[2] = {qa, qb};
    const int jend[2] = {jend_a, jend_b};
    float *s[2] = {sa, sb};
    scores(q, 2, Kt, hd, jend, scale, s);
}

AVX512 void eng_att_phase1x2_avx512(const void *V, size_t ldv, int f16, int hd, int nq,
                                    const int *jend, float *const *s, float *const *m,
                                    float *const *l, float *const *acc)
{
    for (int i = 0; i < nq; i++)
        softmax(hd, s[i], m[i], l[i], acc[i]);
    /* constant arguments, so that each case compiles to its own straight loop */
#define V_CASES(wide)                                                                             \
    if (f16 && nq == 2)                                                                           \
        v_product(V, ldv, 1, hd, 2, jend, s, acc, wide);                                          \
    else if (f16)                                                                                 \
        v_product(V, ldv, 1, hd, 1, jend, s, acc, wide);                                          \
    else if (nq == 2)                                                                             \
        v_product(V, ldv, 0, hd, 2, jend, s, acc, wide);                                          \
    else                                                                                          \
        v_product(V, ldv, 0, hd, 1, jend, s, acc, wide);
    if (hd % 128 == 0) {
        V_CASES(1)
    } else {
        V_CASES(0)
    }
#undef V_CASES
}

/* ---- a few queries: query heads in the lanes ----
 * A short prompt after a long document has only a few query heads per kv head: too few to
 * pay for transposing each key block (the blocked kernels' layout, keys in the lanes). Here
 * the lanes are the query heads instead: a key row is converted once, and each of its values
 * is broadcast against up to 16 query heads at once; V likewise. Every lane still runs its own
 * query's operations in the blocked kernels' order (scores over d; one softmax per key block
 * with the same max, exp and summation tree; the V product over keys), so the bits are the
 * same as theirs. */

enum { NL = ENG_ATT_LANES };

/* Rows [b0, b0 + n) of one kv head (f16, rows ld apart) converted into R (KB rows of hd
 * floats; rows n.. up to a multiple of 8 zeroed). The products of the block before have
 * prefetched them (pf_line). */
static AVX512 void rows_f32(const uint16_t *X, size_t ld, int hd, int b0, int n, float *R)
{
    for (int j = 0; j < n; j++) {
        const uint16_t *x = X + (size_t)(b0 + j) * ld;
        for (int d = 0; d < hd; d += 16)
            _mm512_store_ps(R + (size_t)j * hd + d, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + d))));
    }
    for (int j = n; j < (n + 7) / 8 * 8; j++)
        memset(R + (size_t)j * hd, 0, sizeof(float) * (size_t)hd);
}

/* The next block's rows, npf of them (rows ld apart), prefetched a line at a time between the
 * products of this block: line k of rows [t0, t0 + per), when there is one (rows of under 64
 * bytes are left to the hardware). A burst of a block's prefetches stalled on the miss queue;
 * spread out, the lines arrive while the FMAs run. always_inline: GCC judged an outlined
 * prefetch-only function free of effects and deleted its calls. */
static AVX512 inline __attribute__((always_inline)) void pf_line(const uint16_t *pf, size_t ld, int hd,
                                                                 int npf, int t0, int per, int k)
{
    const int lines = hd / 32; /* 64-byte lines per row */
    if (lines == 0)
        return;
    const int t = t0 + k / lines;
    if (t < npf && t < t0 + per)
        _mm_prefetch((const char *)(pf + (size_t)t * ld + (size_t)(k % lines) * 32), _MM_HINT_T0);
}

/* S[j] (lanes) = the lanes' scores against key row j of R, scaled, for j < n; -inf where the
 * key is after a lane's cell (mask[j] clear) and for j >= n. */
static AVX512 void lane_scores(const float *Qt, const float *R, int hd, int n, const __mmask16 *mask,
                               float scale, float *S, const uint16_t *pf, size_t ld, int npf)
{
    const __m512 vs = _mm512_set1_ps(scale), ninf = _mm512_set1_ps(-INFINITY);
    for (int j0 = 0; j0 < n; j0 += 8) {
        __m512 a[8];
#pragma GCC unroll 8
        for (int t = 0; t < 8; t++)
            a[t] = _mm512_setzero_ps();
        const float *r = R + (size_t)j0 * hd;
        for (int d = 0; d < hd; d++) {
            if (d % 4 == 0) /* next block's rows j0..j0 + 7, a line per 4 dims */
                pf_line(pf, ld, hd, npf, j0, 8, d / 4);
            const __m512 qd = _mm512_load_ps(Qt + (size_t)d * NL);
#pragma GCC unroll 8
            for (int t = 0; t < 8; t++)
                a[t] = _mm512_fmadd_ps(qd, _mm512_set1_ps(r[(size_t)t * hd + d]), a[t]);
        }
#pragma GCC unroll 8
        for (int t = 0; t < 8; t++) {
            const int j = j0 + t;
            _mm512_store_ps(S + (size_t)j * NL,
                            j < n ? _mm512_mask_mov_ps(ninf, mask[j], _mm512_mul_ps(a[t], vs)) : ninf);
        }
    }
    for (int j = (n + 7) / 8 * 8; j < KB; j++)
        _mm512_store_ps(S + (size_t)j * NL, ninf);
}

/* The block's softmax for every active lane: S becomes the probabilities; m, l and the
 * accumulators (hd rows of NL lanes) are updated as softmax() does for one query. */
static AVX512 void lane_softmax(float *S, __mmask16 act, __m512 *m, __m512 *l,
                                float *acc, int hd)
{
    __m512 mx = _mm512_load_ps(S);
    for (int j = 1; j < KB; j++)
        mx = _mm512_max_ps(mx, _mm512_load_ps(S + (size_t)j * NL));
    /* inactive lanes (no key of the block is theirs) keep everything: mnew 0 makes their
     * probabilities exp(-inf) = 0 */
    const __m512 mnew = _mm512_maskz_mov_ps(act, _mm512_max_ps(*m, mx));
    for (int j = 0; j < KB; j++)
        _mm512_store_ps(S + (size_t)j * NL, exp_neg(_mm512_sub_ps(_mm512_load_ps(S + (size_t)j * NL), mnew)));
    /* softmax()'s tree: u[t] sums keys t, t + 8, ..., t + 56 as its eight 8-key sums do, then
     * hsum8 takes (u0 + u4) + (u2 + u6) + ((u1 + u5) + (u3 + u7)) */
#define P(j) _mm512_load_ps(S + (size_t)(j) * NL)
    __m512 u[8];
    for (int t = 0; t < 8; t++)
        u[t] = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(P(t), P(8 + t)), _mm512_add_ps(P(16 + t), P(24 + t))),
                             _mm512_add_ps(_mm512_add_ps(P(32 + t), P(40 + t)), _mm512_add_ps(P(48 + t), P(56 + t))));
#undef P
    const __m512 lsum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(u[0], u[4]), _mm512_add_ps(u[2], u[6])),
                                      _mm512_add_ps(_mm512_add_ps(u[1], u[5]), _mm512_add_ps(u[3], u[7])));
    float mo[NL], mn[NL], al[NL];
    _mm512_storeu_ps(mo, *m);
    _mm512_storeu_ps(mn, mnew);
    int moved = 0;
    for (int i = 0; i < NL; i++) {
        /* libm's expf, as softmax(); where the max did not move (the difference is exactly
         * 0, so neither is infinite or NaN) that is expf(0) = 1 exactly, and multiplying by
         * 1 changes no float: the block leaves those lanes' accumulators as they are */
        const float dm = mo[i] - mn[i];
        al[i] = act >> i & 1 && dm != 0.0f ? expf(dm) : 1.0f;
        moved |= al[i] != 1.0f;
    }
    const __m512 alpha = _mm512_loadu_ps(al);
    *l = _mm512_mask_add_ps(*l, act, _mm512_mul_ps(*l, alpha), lsum);
    *m = _mm512_mask_mov_ps(*m, act, mnew);
    if (moved)
        for (int d = 0; d < hd; d++)
            _mm512_store_ps(acc + (size_t)d * NL, _mm512_mul_ps(_mm512_load_ps(acc + (size_t)d * NL), alpha));
}

/* acc[d] += p_j * v_j[d] in key order for each lane, only for keys the lane sees (mask[j]). */
static AVX512 void lane_vproduct(const float *S, const float *R, int hd, int n, const __mmask16 *mask,
                                 float *acc, const uint16_t *pf, size_t ld, int npf)
{
    const int per = (KB * 16 + hd - 1) / hd; /* next block's rows per pass over 16 dims */
    for (int d0 = 0; d0 < hd; d0 += 16) {
        __m512 c[16];
#pragma GCC unroll 16
        for (int t = 0; t < 16; t++)
            c[t] = _mm512_load_ps(acc + (size_t)(d0 + t) * NL);
        for (int j = 0; j < n; j++) {
            if (j % 2 == 0) /* a line per 2 keys */
                pf_line(pf, ld, hd, npf, d0 / 16 * per, per, j / 2);
            const __m512 p = _mm512_load_ps(S + (size_t)j * NL);
            const float *v = R + (size_t)j * hd + d0;
#pragma GCC unroll 16
            for (int t = 0; t < 16; t++)
                c[t] = _mm512_mask3_fmadd_ps(p, _mm512_set1_ps(v[t]), c[t], mask[j]);
        }
#pragma GCC unroll 16
        for (int t = 0; t < 16; t++)
            _mm512_store_ps(acc + (size_t)(d0 + t) * NL, c[t]);
    }
}

AVX512 void eng_att_lanes_avx512(const uint16_t *K, const uint16_t *V, size_t ld, int hd, int np,
                                 const float *const *q, const int *cell, float scale, float *const *out,
                                 float *scr)
{
    enum { NG = ENG_ATT_LANES_MAX / NL };
    const int ng = (np + NL - 1) / NL;
    const size_t per = eng_att_lanes_group_floats(hd);
    float *R = (float *)(((uintptr_t)scr + 63) & ~(uintptr_t)63), *G0 = R + (size_t)KB * hd;
    /* group g: Qt (hd x NL, the queries transposed), acc (hd x NL), S (KB x NL) */
#define QT(g) (G0 + (size_t)(g) * per)
#define ACC(g) (QT(g) + (size_t)hd * NL)
#define SC(g) (ACC(g) + (size_t)hd * NL)
    __m512i cv[NG];
    __m512 m[NG], l[NG];
    int last = 0;
    for (int g = 0; g < ng; g++) {
        int cl[NL];
        for (int i = 0; i < NL; i++) {
            const int k = g * NL + i;
            cl[i] = k < np ? cell[k] : -1;
            last = cl[i] > last ? cl[i] : last;
            for (int d = 0; d < hd; d++)
                QT(g)[(size_t)d * NL + i] = k < np ? q[k][d] : 0.0f;
        }
        cv[g] = _mm512_loadu_si512(cl);
        m[g] = _mm512_set1_ps(-INFINITY);
        l[g] = _mm512_setzero_ps();
        memset(ACC(g), 0, sizeof(float) * (size_t)hd * NL);
    }
    __mmask16 mask[NG][KB], act[NG];
    for (int b0 = 0; b0 <= last; b0 += KB) {
        const int n = last + 1 - b0 < KB ? last + 1 - b0 : KB;
        /* the next block's rows, prefetched by the first active group's products */
        const int nn = last + 1 - (b0 + KB) < KB ? last + 1 - (b0 + KB) : KB;
        const uint16_t *Kn = K + (size_t)(b0 + KB) * ld, *Vn = V + (size_t)(b0 + KB) * ld;
        int kpf = nn, vpf = nn;
        rows_f32(K, ld, hd, b0, n, R);
        for (int g = 0; g < ng; g++) {
            act[g] = _mm512_cmpge_epi32_mask(cv[g], _mm512_set1_epi32(b0));
            if (!act[g]) /* no lane sees the block: lane_softmax would leave every lane as it is */
                continue;
            for (int j = 0; j < n; j++)
                mask[g][j] = _mm512_cmpge_epi32_mask(cv[g], _mm512_set1_epi32(b0 + j));
            lane_scores(QT(g), R, hd, n, mask[g], scale, SC(g), Kn, ld, kpf);
            kpf = 0;
            lane_softmax(SC(g), act[g], &m[g], &l[g], ACC(g), hd);
        }
        rows_f32(V, ld, hd, b0, n, R);
        for (int g = 0; g < ng; g++)
            if (act[g]) {
                lane_vproduct(SC(g), R, hd, n, mask[g], ACC(g), Vn, ld, vpf);
                vpf = 0;
            }
    }
    for (int g = 0; g < ng; g++) {
        float inv[NL];
        _mm512_storeu_ps(inv, _mm512_div_ps(_mm512_set1_ps(1.0f), l[g]));
        for (int i = 0; i < NL && g * NL + i < np; i++)
            for (int d = 0; d < hd; d++)
                out[g * NL + i][d] = ACC(g)[(size_t)d * NL + i] * inv[i];
    }
#undef QT
#undef ACC
#undef SC
}
#endif
