/* attention.c: blocked causal attention over the KV cache with an online softmax; never an
 * n x n matrix, and no f32 copy of the cache: each work item converts the f16 key blocks it
 * visits into per-thread scratch once for all of its queries. Keys are visited in blocks aligned to absolute cell indices, in order, and
 * every query runs the same operation sequence whatever else is in its batch, which makes
 * prefill results independent of how a sequence was split. */
#include "engine/ctx_internal.h"
#include "engine/kernels/attention_internal.h"
#include "engine/kernels/gemm_internal.h"
#include "engine/kernels/quant_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* QB: queries per work item; each item converts every key block it visits once, for all of
 * its QB * (n_head / n_head_kv) query heads. */
enum { KB = ENG_KEY_BLOCK, QB = 32 };

/* What the AVX2 kernels need, and the ones that also read the f16 cache with F16C. */
enum {
    CPU_AVX2_PATHS = BASE_CPU_AVX2 | BASE_CPU_FMA,
    CPU_F16C_PATHS = BASE_CPU_AVX2 | BASE_CPU_FMA | BASE_CPU_F16C,
};

size_t eng_attention_scratch_floats(const eng_info *hp)
{
    size_t hd = (size_t)hp->head_dim, G = (size_t)(hp->n_head / hp->n_head_kv);
    const size_t nkv = (size_t)hp->n_head_kv;
    const size_t pre = G * QB * KB         /* scores / probabilities per query */
                       + 2 * KB * hd       /* the key block in f32: K transposed, V */
                       + QB * G * (hd + 2) /* per query: acc (head_dim), running max, sum */
                       + 64;               /* alignment slack */
    /* decode, with one thread taking every kv head: scores and scratch, accumulators */
    const size_t dec = 2 * G * KB + nkv * G * (hd + 2) + 64;
    return pre > dec ? pre : dec;
}

/* One query against one key block, in two phases so that a work item can run phase 0 (the
 * scores, reading Kt) for all of its queries and then phase 1 (softmax and the V product,
 * reading Vb) for all of them, each with one f32 block hot in L1. Phase 0 fills s (KB); phase
 * 1 takes that s and updates the running max *m, sum *l and acc (head_dim). Splitting does not
 * change a query's operations or their order. */
typedef void (*blk_fn)(const float *q, const float *Kt, const float *Vb, int hd, int jend,
                       float scale, float *s, float *m, float *l, float *acc, int phase);

static void blk_scalar(const float *q, const float *Kt, const float *Vb, int hd, int jend,
                       float scale, float *s, float *m, float *l, float *acc, int phase)
{
    if (phase == 1)
        goto softmax;
    for (int j = 0; j < KB; j++)
        s[j] = 0;
    for (int d = 0; d < hd; d++) {
        const float qd = q[d];
        const float *kr = Kt + (size_t)d * KB;
        for (int j = 0; j < KB; j++)
            s[j] += qd * kr[j];
    }
    return;
softmax:;
    float bmax = -INFINITY;
    for (int j = 0; j < jend; j++) {
        s[j] *= scale;
        bmax = fmaxf(bmax, s[j]);
    }
    const float mnew = fmaxf(*m, bmax);
    float lsum = 0;
    for (int j = 0; j < jend; j++) {
        s[j] = expf(s[j] - mnew);
        lsum += s[j];
    }
    const float alpha = expf(*m - mnew);
    *l = *l * alpha + lsum;
    *m = mnew;
    if (alpha != 1.0f)
        for (int d = 0; d < hd; d++)
            acc[d] *= alpha;
    for (int j = 0; j < jend; j++) {
        const float p = s[j];
        const float *vr = Vb + (size_t)j * hd;
        for (int d = 0; d < hd; d++)
            acc[d] += p * vr[d];
    }
}

#if defined(__x86_64__)
/* exp for x <= 0 (what softmax needs); exp(-inf) = 0 exactly. Cephes-style polynomial, about
 * 1 ulp. Every lane runs the same operations, so the result does not depend on lane. */
__attribute__((target("avx2,fma"))) static inline __m256 exp_neg_avx2(__m256 x)
{
    const __m256 lo = _mm256_set1_ps(-87.0f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    __m256 r2 = _mm256_mul_ps(r, r);
    __m256 y = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, y);
}

__attribute__((target("avx2,fma"))) static float hsum8(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

__attribute__((target("avx2,fma"))) static float hmax8(__m256 v)
{
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

#define AVX2_F16C __attribute__((target("avx2,fma,f16c")))

/* 8 values of V at offset off: f32 (v16 = 0, a constant at each call) or f16 converted exactly. */
static AVX2_F16C inline __attribute__((always_inline)) __m256 v8(const void *V, size_t off, int v16)
{
    if (v16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)V + off)));
    return _mm256_loadu_ps((const float *)V + off);
}

/* Phase 1 of blk_avx2 (softmax of s, then the V product) with V row j at V + j * ldv, in f32
 * (the converted block) or read straight from the f16 cache: the same values either way. */
static AVX2_F16C inline __attribute__((always_inline)) void phase1_avx2(const void *V, size_t ldv,
                                                                        int v16, int hd, int jend,
                                                                        float *s, float *m, float *l,
                                                                        float *acc)
{
    __m256 mx = _mm256_loadu_ps(s);
    for (int j = 8; j < KB; j += 8)
        mx = _mm256_max_ps(mx, _mm256_loadu_ps(s + j));
    const float mnew = fmaxf(*m, hmax8(mx));
    const __m256 vm = _mm256_set1_ps(mnew);
    __m256 sum[8];
    for (int t = 0; t < 8; t++) {
        __m256 p = exp_neg_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + 8 * t), vm));
        _mm256_storeu_ps(s + 8 * t, p);
        sum[t] = p;
    }
    __m256 t0 = _mm256_add_ps(_mm256_add_ps(sum[0], sum[1]), _mm256_add_ps(sum[2], sum[3]));
    __m256 t1 = _mm256_add_ps(_mm256_add_ps(sum[4], sum[5]), _mm256_add_ps(sum[6], sum[7]));
    const float lsum = hsum8(_mm256_add_ps(t0, t1));
    const float alpha = expf(*m - mnew);
    *l = *l * alpha + lsum;
    *m = mnew;
    if (alpha != 1.0f) {
        const __m256 va = _mm256_set1_ps(alpha);
        for (int d = 0; d < hd; d += 8)
            _mm256_storeu_ps(acc + d, _mm256_mul_ps(_mm256_loadu_ps(acc + d), va));
    }
    /* acc[d] = fma(p_j, v_j[d], acc[d]) in j order for every d, in either loop shape */
    int d = 0;
    for (; d + 64 <= hd; d += 64) {
        __m256 c0 = _mm256_loadu_ps(acc + d), c1 = _mm256_loadu_ps(acc + d + 8);
        __m256 c2 = _mm256_loadu_ps(acc + d + 16), c3 = _mm256_loadu_ps(acc + d + 24);
        __m256 c4 = _mm256_loadu_ps(acc + d + 32), c5 = _mm256_loadu_ps(acc + d + 40);
        __m256 c6 = _mm256_loadu_ps(acc + d + 48), c7 = _mm256_loadu_ps(acc + d + 56);
        for (int j = 0; j < jend; j++) {
            const __m256 p = _mm256_broadcast_ss(s + j);
            const size_t vr = (size_t)j * ldv + (size_t)d;
            c0 = _mm256_fmadd_ps(p, v8(V, vr + 0, v16), c0);
            c1 = _mm256_fmadd_ps(p, v8(V, vr + 8, v16), c1);
            c2 = _mm256_fmadd_ps(p, v8(V, vr + 16, v16), c2);
            c3 = _mm256_fmadd_ps(p, v8(V, vr + 24, v16), c3);
            c4 = _mm256_fmadd_ps(p, v8(V, vr + 32, v16), c4);
            c5 = _mm256_fmadd_ps(p, v8(V, vr + 40, v16), c5);
            c6 = _mm256_fmadd_ps(p, v8(V, vr + 48, v16), c6);
            c7 = _mm256_fmadd_ps(p, v8(V, vr + 56, v16), c7);
        }
        _mm256_storeu_ps(acc + d, c0);
        _mm256_storeu_ps(acc + d + 8, c1);
        _mm256_storeu_ps(acc + d + 16, c2);
        _mm256_storeu_ps(acc + d + 24, c3);
        _mm256_storeu_ps(acc + d + 32, c4);
        _mm256_storeu_ps(acc + d + 40, c5);
        _mm256_storeu_ps(acc + d + 48, c6);
        _mm256_storeu_ps(acc + d + 56, c7);
    }
    for (; d < hd; d += 8) {
        __m256 c0 = _mm256_loadu_ps(acc + d);
        for (int j = 0; j < jend; j++)
            c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(s + j), v8(V, (size_t)j * ldv + (size_t)d, v16), c0);
        _mm256_storeu_ps(acc + d, c0);
    }
}

/* hd must be a multiple of 8. Needs F16C as well as AVX2 and FMA: phase1_avx2 can read f16. */
AVX2_F16C static void blk_avx2(const float *q, const float *Kt, const float *Vb, int hd, int jend,
                               float scale, float *s, float *m, float *l, float *acc, int phase)
{
    if (phase == 1) {
        phase1_avx2(Vb, (size_t)hd, 0, hd, jend, s, m, l, acc);
        return;
    }
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int d = 0; d < hd; d++) {
        const __m256 qd = _mm256_broadcast_ss(q + d);
        const float *kr = Kt + (size_t)d * KB;
        a0 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kr + 0), a0);
        a1 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kr + 8), a1);
        a2 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kr + 16), a2);
        a3 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kr + 24), a3);
        a4 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kr + 32), a4);
        a5 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kr + 40), a5);
        a6 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kr + 48), a6);
        a7 = _mm256_fmadd_ps(qd, _mm256_loadu_ps(kr + 56), a7);
    }
    const __m256 vs = _mm256_set1_ps(scale);
    _mm256_storeu_ps(s + 0, _mm256_mul_ps(a0, vs));
    _mm256_storeu_ps(s + 8, _mm256_mul_ps(a1, vs));
    _mm256_storeu_ps(s + 16, _mm256_mul_ps(a2, vs));
    _mm256_storeu_ps(s + 24, _mm256_mul_ps(a3, vs));
    _mm256_storeu_ps(s + 32, _mm256_mul_ps(a4, vs));
    _mm256_storeu_ps(s + 40, _mm256_mul_ps(a5, vs));
    _mm256_storeu_ps(s + 48, _mm256_mul_ps(a6, vs));
    _mm256_storeu_ps(s + 56, _mm256_mul_ps(a7, vs));
    for (int j = jend; j < KB; j++)
        s[j] = -INFINITY; /* keys after this query's cell */
}

/* Phase 1 for a few queries with V read from the f16 cache (v16: kv head's first cell of the
 * block, rows ldv apart): the block's f32 copy of V is not worth making for them. */
AVX2_F16C static void blk_v16(const uint16_t *v16, size_t ldv, int hd, int jend, float *s, float *m,
                              float *l, float *acc)
{
    phase1_avx2(v16, ldv, 1, hd, jend, s, m, l, acc);
}
#endif

/* The kernel level follows the products' (eng_gemm_level), so one test hook narrows both. */
static blk_fn pick_kernel(int hd)
{
#if defined(__x86_64__)
    const int level = eng_gemm_level();
    if (level == ENG_GEMM_AVX512 && hd % 16 == 0 && base_cpu_has(CPU_F16C_PATHS))
        return eng_att_blk_avx512;
    if (level >= ENG_GEMM_AVX2 && hd % 8 == 0 && base_cpu_has(CPU_F16C_PATHS))
        return blk_avx2;
#endif
    (void)hd;
    return blk_scalar;
}

typedef struct att_job {
    eng_ctx *c;
    int il;
    const float *q;
    size_t ldq;
    int c0, nq;
    float *out;
    size_t ldo;
    blk_fn fn;
} att_job;

static float *align32(float *p)
{
    return (float *)(((uintptr_t)p + 31) & ~(uintptr_t)31);
}

static void load_block(const eng_ctx *c, int il, int h, int b0, int n, float *Kt, float *Vb);

/* Whether an item of nqs query heads reads V straight from the f16 cache (blk_v16) instead of
 * converting each block first: worth it for a few queries (a short prompt after a long cached
 * document), each of which passes over V once. */
static int v_in_place(const att_job *J, int nqs)
{
    enum { V_IN_PLACE_MAX = 8 };
#if defined(__x86_64__)
    return nqs <= V_IN_PLACE_MAX && !J->c->kv_f32 && (J->fn == blk_avx2 || J->fn == eng_att_blk_avx512);
#else
    (void)J, (void)nqs;
    return 0;
#endif
}

/* Work item: one kv head and up to QB consecutive queries, for all query heads of its group. */
static void att_item(const att_job *J, float *scr, int h, int i0, int i1)
{
    const eng_ctx *c = J->c;
    const int hd = c->hp->head_dim, G = c->hp->n_head / c->hp->n_head_kv;
    const float scale = 1.0f / sqrtf((float)hd);
    const int nqi = i1 - i0;
    /* scores (G * nqi, KB), key block, accumulators */
    float *S = align32(scr), *Kt = S + (size_t)G * QB * KB, *Vb = Kt + (size_t)KB * hd;
    float *st = Vb + (size_t)KB * hd;
    /* per (g, i): acc[hd], m, l */
    for (int t = 0; t < G * nqi; t++) {
        float *a = st + (size_t)t * (hd + 2);
        memset(a, 0, sizeof(float) * (size_t)hd);
        a[hd] = -INFINITY;
        a[hd + 1] = 0;
    }
    const int last = J->c0 + i1 - 1; /* last cell any query of the item sees */
    const size_t kvd = (size_t)c->kv_dim;
    const int v16 = v_in_place(J, G * nqi);
    for (int b0 = 0; b0 <= last; b0 += KB) {
        load_block(c, J->il, h, b0, last + 1 - b0 < KB ? last + 1 - b0 : KB, Kt, v16 ? NULL : Vb);
        for (int phase = 0; phase < 2; phase++)
            for (int g = 0; g < G; g++) {
                const int head = h * G + g;
                for (int i = i0; i < i1; i++) {
                    const int ci = J->c0 + i;
                    if (ci < b0)
                        continue;
                    const int jend = ci - b0 + 1 < KB ? ci - b0 + 1 : KB;
                    const size_t t = (size_t)(g * nqi + (i - i0));
                    float *a = st + t * (hd + 2);
#if defined(__x86_64__)
                    const uint16_t *vh = (const uint16_t *)c->v[J->il] + (size_t)b0 * kvd + (size_t)h * hd;
                    if (v16 && phase == 1 && J->fn == blk_avx2) {
                        blk_v16(vh, kvd, hd, jend, S + t * KB, &a[hd], &a[hd + 1], a);
                        continue;
                    }
                    if (J->fn == eng_att_blk_avx512) {
                        /* two queries at once when the next one exists (it sees this block too) */
                        const int nq = i + 1 < i1 ? 2 : 1;
                        const int je[2] = {jend, ci + 1 - b0 + 1 < KB ? ci + 1 - b0 + 1 : KB};
                        float *sp[2] = {S + t * KB, S + (t + nq - 1) * KB};
                        if (phase == 0 && nq == 1) {
                            J->fn(J->q + (size_t)i * J->ldq + (size_t)head * hd, Kt, Vb, hd, jend,
                                  scale, sp[0], &a[hd], &a[hd + 1], a, 0);
                        } else if (phase == 0) {
                            eng_att_scores2_avx512(J->q + (size_t)i * J->ldq + (size_t)head * hd,
                                                   J->q + (size_t)(i + nq - 1) * J->ldq + (size_t)head * hd,
                                                   Kt, hd, je[0], je[nq - 1], scale, sp[0], sp[1]);
                        } else {
                            float *b = a + (size_t)(nq - 1) * (hd + 2);
                            float *mp[2] = {&a[hd], &b[hd]}, *lp[2] = {&a[hd + 1], &b[hd + 1]};
                            float *ap[2] = {a, b};
                            eng_att_phase1x2_avx512(v16 ? (const void *)vh : Vb, v16 ? kvd : (size_t)hd,
                                                    v16, hd, nq, je, sp, mp, lp, ap);
                        }
                        i += nq - 1;
                        continue;
                    }
#endif
                    J->fn(J->q + (size_t)i * J->ldq + (size_t)head * hd, Kt, Vb, hd, jend, scale,
                          S + t * KB, &a[hd], &a[hd + 1], a, phase);
                }
            }
    }
    for (int g = 0; g < G; g++) {
        const int head = h * G + g;
        for (int i = i0; i < i1; i++) {
            const float *a = st + (size_t)(g * nqi + (i - i0)) * (hd + 2);
            float *o = J->out + (size_t)i * J->ldo + (size_t)head * hd;
            const float inv = 1.0f / a[hd + 1];
            for (int d = 0; d < hd; d++)
                o[d] = a[d] * inv;
        }
    }
}

#if defined(__x86_64__)
/* Keys of 8 consecutive cells of one kv head (f16 rows kvd apart) into 8 columns of a
 * transposed block: kt[d * KB] receives dim d of the first cell. 8x8 transposes in registers
 * instead of strided scalar stores. */
__attribute__((target("avx2,fma,f16c"))) static void k8_f16c(const uint16_t *k, size_t kvd, int hd,
                                                             float *kt)
{
    for (int d = 0; d < hd; d += 8) {
        __m256 r[8], t[8], u[8];
        for (int i = 0; i < 8; i++)
            r[i] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + (size_t)i * kvd + d)));
        for (int i = 0; i < 8; i += 2) { /* t[i]: dims 0,1 | 4,5 of cells i, i+1 interleaved */
            t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int q = 0; q < 8; q += 4) { /* u[q + j]: dim j | dim j + 4 of cells q .. q + 3 */
            u[q + 0] = _mm256_shuffle_ps(t[q], t[q + 2], 0x44);
            u[q + 1] = _mm256_shuffle_ps(t[q], t[q + 2], 0xee);
            u[q + 2] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0x44);
            u[q + 3] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0xee);
        }
        for (int j = 0; j < 4; j++) {
            _mm256_storeu_ps(kt + (size_t)(d + j) * KB, _mm256_permute2f128_ps(u[j], u[j + 4], 0x20));
            _mm256_storeu_ps(kt + (size_t)(d + j + 4) * KB, _mm256_permute2f128_ps(u[j], u[j + 4], 0x31));
        }
    }
}
#endif

/* Cells [b0, b0 + n) (n <= KB) of kv head h of layer il, straight from the cache, into Kt (hd,
 * KB) transposed and Vb (KB, hd) in f32; key columns n.. of Kt are zeroed (they are scored
 * and then masked, so they must be finite); Vb NULL skips V (f16 cache only). The conversion
 * is exact, so the values are the cache's whatever block or batch asks for them. */
static void load_block(const eng_ctx *c, int il, int h, int b0, int n, float *Kt, float *Vb)
{
    const int hd = c->hp->head_dim;
    const size_t kvd = (size_t)c->kv_dim, off = (size_t)b0 * kvd + (size_t)h * hd;
    int j = 0;
    if (c->kv_f32) {
        const float *k = (const float *)c->k[il] + off, *v = (const float *)c->v[il] + off;
        for (; j < n; j++) {
            for (int d = 0; d < hd; d++)
                Kt[(size_t)d * KB + j] = k[(size_t)j * kvd + d];
            memcpy(Vb + (size_t)j * hd, v + (size_t)j * kvd, sizeof(float) * (size_t)hd);
        }
    } else {
        const uint16_t *k = (const uint16_t *)c->k[il] + off, *v = (const uint16_t *)c->v[il] + off;
#if defined(__x86_64__)
        if (hd % 8 == 0 && base_cpu_has(CPU_F16C_PATHS))
            for (; j + 8 <= n; j += 8)
                k8_f16c(k + (size_t)j * kvd, kvd, hd, Kt + j);
#endif
        float row[512];
        for (int jj = j; jj < n; jj++) {
            eng_f16_to_f32_row(k + (size_t)jj * kvd, row, (size_t)hd);
            for (int d = 0; d < hd; d++)
                Kt[(size_t)d * KB + jj] = row[d];
        }
        for (j = 0; Vb && j < n; j++)
            eng_f16_to_f32_row(v + (size_t)j * kvd, Vb + (size_t)j * hd, (size_t)hd);
    }
    if (n < KB)
        for (int d = 0; d < hd; d++)
            memset(Kt + (size_t)d * KB + n, 0, sizeof(float) * (size_t)(KB - n));
}

/* later query blocks see more keys: they are the first units */
static void att_worker(void *arg, int u0, int u1, int ith)
{
    const att_job *J = arg;
    const eng_ctx *c = J->c;
    float *scr = c->att_scratch + (size_t)ith * c->att_scratch_per;
    const int nkv = c->hp->n_head_kv, nqb = (J->nq + QB - 1) / QB;
    for (int it = u0; it < u1; it++) {
        int qb = nqb - 1 - it / nkv, h = it % nkv;
        int i0 = qb * QB, i1 = i0 + QB < J->nq ? i0 + QB : J->nq;
        att_item(J, scr, h, i0, i1);
    }
}

eng_status eng_attention(eng_ctx *c, int il, const float *q, size_t ldq, int c0, int nq, float *out,
                         size_t ldo)
{
    att_job J = {c, il, q, ldq, c0, nq, out, ldo, pick_kernel(c->hp->head_dim)};
    eng_pool_for(c->pool, c->hp->n_head_kv * ((nq + QB - 1) / QB), 1, att_worker, &J);
    return ENG_OK;
}

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
    const size_t kvd = (size_t)c->kv_dim;
    float row[512];
    for (int j = 0; j < n; j++) {
        const size_t off = (size_t)(b0 + j) * kvd + (size_t)h * hd;
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
/* Keys j0..j0+3 (f16 rows kvd apart) against one or two query heads q0, q1 (q1 may be NULL). */
static F16C_FN void dec_dot4(const uint16_t *k, size_t kvd, int hd, const float *q0, const float *q1,
                             float scale, float *s0, float *s1)
{
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int d = 0; d < hd; d += 8) {
        const __m256 k0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + d)));
        const __m256 k1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + kvd + d)));
        const __m256 k2 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + 2 * kvd + d)));
        const __m256 k3 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + 3 * kvd + d)));
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
    const size_t kvd = (size_t)c->kv_dim;
    const uint16_t *k = (const uint16_t *)c->k[il] + (size_t)b0 * kvd + (size_t)h * hd;
    /* whole groups of 4 keys; the cache is zero-filled past the filled cells, and columns
     * past n are masked by the caller */
    const int n4 = (n + 3) / 4 * 4 <= c->n_ctx - b0 ? (n + 3) / 4 * 4 : n / 4 * 4;
    for (int g = 0; g < G; g += 2) {
        const float *q0 = q + (size_t)g * hd, *q1 = g + 1 < G ? q0 + hd : NULL;
        for (int j = 0; j < n4; j += 4)
            dec_dot4(k + (size_t)j * kvd, kvd, hd, q0, q1, scale, s + g * KB + j,
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
static F16C_FN void dec_pv_f16c(const uint16_t *v, size_t kvd, int hd, int n, const float *p0,
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
            const uint16_t *r = v + (size_t)j * kvd + d;
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
    const size_t kvd = (size_t)c->kv_dim;
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
    const size_t voff = (size_t)b0 * kvd + (size_t)h * hd;
#if defined(__x86_64__)
    if (fast) {
        for (int g = 0; g < G; g += 2) {
            const int two = g + 1 < G;
            dec_pv_f16c((const uint16_t *)c->v[il] + voff, kvd, hd, n, s + g * KB,
                        two ? s + (g + 1) * KB : NULL, acc + (size_t)g * (hd + 2),
                        two ? acc + (size_t)(g + 1) * (hd + 2) : NULL);
        }
        return;
    }
#endif
    float row[512];
    for (int j = 0; j < n; j++) {
        if (c->kv_f32)
            memcpy(row, (const float *)c->v[il] + voff + (size_t)j * kvd, sizeof(float) * (size_t)hd);
        else
            eng_f16_to_f32_row((const uint16_t *)c->v[il] + voff + (size_t)j * kvd, row, (size_t)hd);
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
