/* attention.c: blocked causal attention over the KV cache with an online softmax; never an
 * n x n matrix, and no f32 copy of the cache: each work item converts the f16 key blocks it
 * visits into per-thread scratch once for all of its queries. Keys are visited in blocks
 * aligned to absolute cell indices, in order, and every query runs the same operation sequence
 * whatever else is in its batch, which makes prefill results independent of how a sequence was
 * split. A short batch after a long context (a few query heads per kv head) takes the
 * AVX-512 kernel with query heads in the lanes (attention_avx512.c), same bits; decode (one
 * query) is attention_decode.c. */
#include "engine/ctx_internal.h"
#include "engine/kernels/attention_internal.h"
#include "engine/kernels/attention_shared.h"
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
enum { QB = 32 };

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
    const size_t lanes = eng_att_lanes_scratch_floats(hp->head_dim), most = pre > dec ? pre : dec;
    return most > lanes ? most : lanes;
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
    const int *cells; /* query i's cell: cells[i] (ascending) when given, else c0 + i */
    float *out;
    size_t ldo;
    blk_fn fn;
} att_job;

static int q_cell(const att_job *J, int i) { return J->cells ? J->cells[i] : J->c0 + i; }


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
    const int last = q_cell(J, i1 - 1); /* last cell any query of the item sees */
    const size_t ld = (size_t)hd;
    const int v16 = v_in_place(J, G * nqi);
    for (int b0 = 0; b0 <= last; b0 += KB) {
        load_block(c, J->il, h, b0, last + 1 - b0 < KB ? last + 1 - b0 : KB, Kt, v16 ? NULL : Vb);
        for (int phase = 0; phase < 2; phase++)
            for (int g = 0; g < G; g++) {
                const int head = h * G + g;
                for (int i = i0; i < i1; i++) {
                    const int ci = q_cell(J, i);
                    if (ci < b0)
                        continue;
                    const int jend = ci - b0 + 1 < KB ? ci - b0 + 1 : KB;
                    const size_t t = (size_t)(g * nqi + (i - i0));
                    float *a = st + t * (hd + 2);
#if defined(__x86_64__)
                    const uint16_t *vh = (const uint16_t *)c->v[J->il] + eng_kv_off(c, b0, h);
                    if (v16 && phase == 1 && J->fn == blk_avx2) {
                        blk_v16(vh, ld, hd, jend, S + t * KB, &a[hd], &a[hd + 1], a);
                        continue;
                    }
                    if (J->fn == eng_att_blk_avx512) {
                        /* two queries at once when the next one exists (it sees this block too) */
                        const int nq = i + 1 < i1 ? 2 : 1;
                        const int cn = q_cell(J, i + nq - 1);
                        const int je[2] = {jend, cn - b0 + 1 < KB ? cn - b0 + 1 : KB};
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
                            eng_att_phase1x2_avx512(v16 ? (const void *)vh : Vb, v16 ? ld : (size_t)hd,
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
/* Keys of 8 consecutive cells of one kv head (f16 rows ld apart) into 8 columns of a
 * transposed block: kt[d * KB] receives dim d of the first cell. 8x8 transposes in registers
 * instead of strided scalar stores. */
__attribute__((target("avx2,fma,f16c"))) static void k8_f16c(const uint16_t *k, size_t ld, int hd,
                                                             float *kt)
{
    for (int d = 0; d < hd; d += 8) {
        __m256 r[8], t[8], u[8];
        for (int i = 0; i < 8; i++)
            r[i] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + (size_t)i * ld + d)));
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
    const size_t ld = (size_t)hd, off = eng_kv_off(c, b0, h);
    int j = 0;
    if (c->kv_f32) {
        const float *k = (const float *)c->k[il] + off, *v = (const float *)c->v[il] + off;
        for (; j < n; j++) {
            for (int d = 0; d < hd; d++)
                Kt[(size_t)d * KB + j] = k[(size_t)j * ld + d];
            memcpy(Vb + (size_t)j * hd, v + (size_t)j * ld, sizeof(float) * (size_t)hd);
        }
    } else {
        const uint16_t *k = (const uint16_t *)c->k[il] + off, *v = (const uint16_t *)c->v[il] + off;
#if defined(__x86_64__)
        if (hd % 8 == 0 && base_cpu_has(CPU_F16C_PATHS))
            for (; j + 8 <= n; j += 8) {
                /* the same 8 cells of the next block, into L1 ahead of need */
                for (int i = 0; i < 8; i++)
                    for (int d = 0; d < hd; d += 32)
                        __builtin_prefetch(k + (size_t)(j + i + KB) * ld + d);
                k8_f16c(k + (size_t)j * ld, ld, hd, Kt + j);
            }
#endif
        float row[512];
        for (int jj = j; jj < n; jj++) {
            eng_f16_to_f32_row(k + (size_t)jj * ld, row, (size_t)hd);
            for (int d = 0; d < hd; d++)
                Kt[(size_t)d * KB + jj] = row[d];
        }
        /* the next block's V rows, like the keys: converted here or read in place
         * by the V product, the next block's reads then come from cache */
        for (int jj = 0; jj < KB; jj++)
            for (int d = 0; d < hd; d += 32)
                __builtin_prefetch(v + (size_t)(jj + KB) * ld + d);
        for (j = 0; Vb && j < n; j++)
            eng_f16_to_f32_row(v + (size_t)j * ld, Vb + (size_t)j * hd, (size_t)hd);
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

/* Batches of more than LANES_MIN and at most ENG_ATT_LANES_MAX query heads per kv head take
 * the lane kernel; fewer do better in the blocked kernels, reading V in place. */
enum { LANES_MIN = 8 };

/* Unit: a kv head with all of its query heads. The lanes take them last query first, so that
 * a partial group of 16 holds the earliest queries: those of held cells (eng_prefill_held) see
 * only the first key blocks, and the kernel skips a group for the blocks none of its lanes see. */
static void lanes_worker(void *arg, int u0, int u1, int ith)
{
#if defined(__x86_64__)
    const att_job *J = arg;
    const eng_ctx *c = J->c;
    const int nkv = c->hp->n_head_kv, G = c->hp->n_head / nkv, hd = c->hp->head_dim, np = J->nq * G;
    float *scr = c->att_scratch + (size_t)ith * c->att_scratch_per;
    const float *qp[ENG_ATT_LANES_MAX];
    float *op[ENG_ATT_LANES_MAX];
    int cell[ENG_ATT_LANES_MAX];
    for (int h = u0; h < u1; h++) {
        for (int k = 0; k < np; k++) {
            const int i = k / G, head = h * G + k % G, lane = np - 1 - k;
            qp[lane] = J->q + (size_t)i * J->ldq + (size_t)head * hd;
            op[lane] = J->out + (size_t)i * J->ldo + (size_t)head * hd;
            cell[lane] = q_cell(J, i);
        }
        const size_t off = eng_kv_off(c, 0, h);
        eng_att_lanes_avx512((const uint16_t *)c->k[J->il] + off, (const uint16_t *)c->v[J->il] + off,
                             (size_t)hd, hd, np, qp, cell, 1.0f / sqrtf((float)hd), op, scr);
    }
#else
    (void)arg, (void)u0, (void)u1, (void)ith;
#endif
}

eng_status eng_attention(eng_ctx *c, int il, const float *q, size_t ldq, int c0, const int *cells, int nq,
                         float *out, size_t ldo)
{
    att_job J = {c, il, q, ldq, c0, nq, cells, out, ldo, pick_kernel(c->hp->head_dim)};
#if defined(__x86_64__)
    const int np = nq * (c->hp->n_head / c->hp->n_head_kv);
    if (J.fn == eng_att_blk_avx512 && !c->kv_f32 && np > LANES_MIN && np <= ENG_ATT_LANES_MAX) {
        eng_pool_for(c->pool, c->hp->n_head_kv, 1, lanes_worker, &J);
        return ENG_OK;
    }
#endif
    eng_pool_for(c->pool, c->hp->n_head_kv * ((nq + QB - 1) / QB), 1, att_worker, &J);
    return ENG_OK;
}
