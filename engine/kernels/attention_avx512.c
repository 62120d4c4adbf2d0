/* attention_avx512.c: the blocked attention's AVX-512 kernels. Each output lane runs the same
 * operations in the same order as in attention.c's AVX2 kernels (a key's score over the head
 * dimensions; an accumulator dimension over the keys; the same exp polynomial; the same
 * summation tree for the block's softmax sum), so results are bit-identical; the registers
 * are twice as wide, and phase 0 can take two queries at once to keep enough FMA chains. */
#include "engine/kernels/attention_internal.h"
#include "engine/kernels/attention_shared.h"

#include <math.h>

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
#endif
