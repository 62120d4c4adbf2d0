/* quant_avx2.c: AVX2/FMA/F16C row conversions, the activation quantizer, and the matrix-vector
 * kernels of the float and 32-element block types (quant_k_avx2.c has the K-quants'). Compiled
 * for any x86-64 (per-function target attributes); quant.c calls them only after checking the
 * CPU. */
#include "engine/kernels/quant_internal.h"
#include "engine/kernels/quant_avx2_internal.h"

#if defined(__x86_64__)


AVX2 void eng_f16_to_f32_row_f16c(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = base_f16_to_f32(src[i]);
}

AVX2 void eng_f32_to_f16_row_f16c(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        dst[i] = base_f32_to_f16(src[i]);
}

/* Panel variants for the prefill GEMM: element k goes to y[(k / 8) * stride + k % 8]. The
 * values are those of eng_dequant_q8_0_avx2 / eng_f16_to_f32_row_f16c. */
AVX2 void eng_dequant_q8_0_panel_avx2(const uint8_t *b, float *y, int64_t n, size_t stride)
{
    for (int64_t i = 0; i < n; i += QB_QK, b += QB_Q8_0_BYTES) {
        __m256 d = _mm256_set1_ps(f16s(b));
        for (int k = 0; k < 4; k++, y += stride) {
            __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + 8 * k)));
            _mm256_storeu_ps(y, _mm256_mul_ps(d, _mm256_cvtepi32_ps(q)));
        }
    }
}

AVX2 void eng_f16_panel_f16c(const uint8_t *src, float *y, int64_t n, size_t stride)
{
    for (int64_t i = 0; i < n; i += 8, src += 16, y += stride)
        _mm256_storeu_ps(y, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)src)));
}

AVX2 void eng_dequant_q8_0_avx2(const uint8_t *b, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i += QB_QK, b += QB_Q8_0_BYTES, y += QB_QK) {
        __m256 d = _mm256_set1_ps(f16s(b));
        for (int k = 0; k < 4; k++) {
            __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + 2 + 8 * k)));
            _mm256_storeu_ps(y + 8 * k, _mm256_mul_ps(d, _mm256_cvtepi32_ps(q)));
        }
    }
}

static AVX2 inline float hmax_ps(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Same numbers as eng_xq_quantize (the same float products, rounded to nearest even by
 * cvtps2dq as lrintf does), without a libm call per element: this runs in every call. */
AVX2 void eng_xq_quantize_avx2(const float *x, int64_t n, int blk, eng_xq *out)
{
    const __m256 nosign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    out->nb = n / blk;
    for (int64_t i = 0; i < out->nb; i++) {
        const float *xb = x + i * blk;
        __m256 m = _mm256_setzero_ps();
        for (int j = 0; j < blk; j += 8)
            m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(xb + j), nosign));
        float d = hmax_ps(m) / 127.0f;
        float id = d > 0 ? 1.0f / d : 0;
        __m256 vid = _mm256_set1_ps(id);
        int total = 0;
        for (int j = 0; j < blk; j += 32) {
            __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + j), vid));
            __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + j + 8), vid));
            __m256i q2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + j + 16), vid));
            __m256i q3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + j + 24), vid));
            /* the packs interleave 128-bit lanes; the permute puts elements back in order */
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
            p = _mm256_permutevar8x32_epi32(p, order);
            _mm256_store_si256((__m256i *)(out->q + i * blk + j), p);
            /* sums of elements 0-15 and 16-31: one per 128-bit lane */
            __m256i s4 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), p), _mm256_set1_epi16(1));
            s4 = _mm256_hadd_epi32(s4, s4);
            s4 = _mm256_hadd_epi32(s4, s4);
            int lo = _mm256_extract_epi32(s4, 0), hi = _mm256_extract_epi32(s4, 4);
            if (out->bsum) {
                out->bsum[i * (blk / 16) + j / 16] = (int16_t)lo;
                out->bsum[i * (blk / 16) + j / 16 + 1] = (int16_t)hi;
            }
            total += lo + hi;
        }
        out->d[i] = d;
        if (out->dsum)
            out->dsum[i] = d * (float)total;
    }
}

/* ---- float weights: 4 independent accumulators hide the FMA latency ---- */

static AVX2 inline __m256 ld_f16x8(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static AVX2 inline __m256 ld_bf16x8(const uint16_t *p)
{
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

enum wkind { W_F32, W_F16, W_BF16 };

/* 8 weights from element i of row w, and one: kind is a constant at every call, so each
 * kernel below compiles to its own loads with no branch left. */
static AVX2 INLINE_ALWAYS __m256 w8(enum wkind kind, const void *w, int64_t i)
{
    return kind == W_F32   ? _mm256_loadu_ps((const float *)w + i)
           : kind == W_F16 ? ld_f16x8((const uint16_t *)w + i)
                           : ld_bf16x8((const uint16_t *)w + i);
}

static AVX2 INLINE_ALWAYS float w1(enum wkind kind, const void *w, int64_t i)
{
    return kind == W_F32   ? ((const float *)w)[i]
           : kind == W_F16 ? _cvtsh_ss(((const uint16_t *)w)[i])
                           : base_bf16_to_f32(((const uint16_t *)w)[i]);
}

static AVX2 INLINE_ALWAYS void mv_float(enum wkind kind, const uint8_t *W, size_t rb, int64_t ncols,
                                         const float *x, float *y, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const void *w = W + (size_t)r * rb;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int64_t i = 0;
        for (; i + 32 <= ncols; i += 32) {
            a0 = _mm256_fmadd_ps(w8(kind, w, i), _mm256_loadu_ps(x + i), a0);
            a1 = _mm256_fmadd_ps(w8(kind, w, i + 8), _mm256_loadu_ps(x + i + 8), a1);
            a2 = _mm256_fmadd_ps(w8(kind, w, i + 16), _mm256_loadu_ps(x + i + 16), a2);
            a3 = _mm256_fmadd_ps(w8(kind, w, i + 24), _mm256_loadu_ps(x + i + 24), a3);
        }
        for (; i + 8 <= ncols; i += 8)
            a0 = _mm256_fmadd_ps(w8(kind, w, i), _mm256_loadu_ps(x + i), a0);
        float s = hsum_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; i < ncols; i++)
            s += w1(kind, w, i) * x[i];
        y[r] = s;
    }
}

/* ---- integer kernels over Q8 activations ---- */

/* 8 int32 lanes of sum(w * x) for 32 signed bytes each: maddubs wants one unsigned operand,
 * so |w| times x carrying w's sign (|w| <= 128, |x| <= 127: pair sums fit in int16). */
static AVX2 inline __m256i dot_s8(__m256i w, __m256i x)
{
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

static AVX2 void mv_q8_0(const uint8_t *W, size_t rb, const eng_xq *xq, float *y, int64_t r0, int64_t r1)
{
    const int64_t nb = xq->nb;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = W + (size_t)r * rb;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        int64_t i = 0;
        for (; i + 2 <= nb; i += 2, b += 2 * QB_Q8_0_BYTES) {
            __m256i p0 = dot_s8(_mm256_loadu_si256((const __m256i *)(b + 2)),
                                _mm256_load_si256((const __m256i *)(xq->q + i * QB_QK)));
            __m256i p1 = dot_s8(_mm256_loadu_si256((const __m256i *)(b + QB_Q8_0_BYTES + 2)),
                                _mm256_load_si256((const __m256i *)(xq->q + (i + 1) * QB_QK)));
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(f16s(b) * xq->d[i]), _mm256_cvtepi32_ps(p0), a0);
            a1 = _mm256_fmadd_ps(_mm256_set1_ps(f16s(b + QB_Q8_0_BYTES) * xq->d[i + 1]),
                                 _mm256_cvtepi32_ps(p1), a1);
        }
        if (i < nb) {
            __m256i p0 = dot_s8(_mm256_loadu_si256((const __m256i *)(b + 2)),
                                _mm256_load_si256((const __m256i *)(xq->q + i * QB_QK)));
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(f16s(b) * xq->d[i]), _mm256_cvtepi32_ps(p0), a0);
        }
        y[r] = hsum_ps(_mm256_add_ps(a0, a1));
    }
}

/* Q4_0 block's 32 nibbles as unsigned bytes 0..15, elements 0-15 (low nibbles) in the low
 * lane. The -8 offset is applied per block from the sum of x's block instead, which lets
 * maddubs take the nibbles directly (fewer instructions: this kernel is compute-bound). */
static AVX2 inline __m256i q4_0_unpack(const uint8_t *qs)
{
    __m128i v = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(0x0f));
}

static AVX2 void mv_q4_0(const uint8_t *W, size_t rb, const eng_xq *xq, float *y, int64_t r0, int64_t r1)
{
    const int64_t nb = xq->nb;
    const __m256i ones = _mm256_set1_epi16(1);
    /* d_x * sum(q_x) per block: times 8 d_w, what the -8 offset subtracts */
    const float *corr = xq->dsum;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = W + (size_t)r * rb;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        float c = 0;
        int64_t i = 0;
        for (; i + 2 <= nb; i += 2, b += 2 * QB_Q4_0_BYTES) {
            __m256i p0 = _mm256_maddubs_epi16(q4_0_unpack(b + 2),
                                              _mm256_load_si256((const __m256i *)(xq->q + i * QB_QK)));
            __m256i p1 = _mm256_maddubs_epi16(q4_0_unpack(b + QB_Q4_0_BYTES + 2),
                                              _mm256_load_si256((const __m256i *)(xq->q + (i + 1) * QB_QK)));
            float d0 = f16s(b), d1 = f16s(b + QB_Q4_0_BYTES);
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(d0 * xq->d[i]), _mm256_cvtepi32_ps(_mm256_madd_epi16(p0, ones)), a0);
            a1 = _mm256_fmadd_ps(_mm256_set1_ps(d1 * xq->d[i + 1]), _mm256_cvtepi32_ps(_mm256_madd_epi16(p1, ones)), a1);
            c += d0 * corr[i] + d1 * corr[i + 1];
        }
        if (i < nb) {
            __m256i p0 = _mm256_maddubs_epi16(q4_0_unpack(b + 2),
                                              _mm256_load_si256((const __m256i *)(xq->q + i * QB_QK)));
            float d0 = f16s(b);
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(d0 * xq->d[i]), _mm256_cvtepi32_ps(_mm256_madd_epi16(p0, ones)), a0);
            c += d0 * corr[i];
        }
        y[r] = hsum_ps(_mm256_add_ps(a0, a1)) - 8.0f * c;
    }
}

/* Q4_1 / Q5_0 / Q5_1: the block's 32 codes, fifth bit included, as unsigned bytes in element
 * order. The fifth bits: byte k of the vector gets qh byte k / 8 (pshufb), then the test of
 * bit k % 8. */
static AVX2 INLINE_ALWAYS __m256i qb32_codes(const uint8_t *b, int qh_at, int qs_at)
{
    __m256i v = q4_0_unpack(b + qs_at);
    if (qh_at) {
        uint32_t qh;
        memcpy(&qh, b + qh_at, 4);
        const __m256i spread = _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202,
                                                  0x0303030303030303);
        const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
        __m256i h = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), spread);
        h = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit);
        v = _mm256_or_si256(v, _mm256_and_si256(h, _mm256_set1_epi8(0x10)));
    }
    return v;
}

/* A block's integer dot with its 32 x values, as 8 float lanes (exact: |sum| < 2^24). */
static AVX2 INLINE_ALWAYS __m256 qb32_dot(const uint8_t *b, int qh_at, int qs_at, const int8_t *q)
{
    __m256i p = _mm256_maddubs_epi16(qb32_codes(b, qh_at, qs_at), _mm256_load_si256((const __m256i *)q));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

/* A block's scale d_w d_x and its constant term: the min's m_w d_x sum(q_x), or for Q5_0 the
 * -16 offset's -16 d_w d_x sum(q_x) (codes stay unsigned for maddubs). */
static AVX2 INLINE_ALWAYS float qb32_scale(const uint8_t *b, int m_at, int off, const eng_xq *xq, int64_t i,
                                           float *c)
{
    float d = f16s(b);
    *c = (m_at ? f16s(b + m_at) : (float)-off * d) * xq->dsum[i];
    return d * xq->d[i];
}

static inline int ld32(const uint8_t *p)
{
    int v;
    memcpy(&v, p, 4);
    return v;
}

/* qb32_scale of 8 consecutive blocks at once, the same float products: *dd gets the scales,
 * *cc the constant terms. Each block's first 4 bytes hold d, then m where the type has one
 * (m_at is 2 or 0). */
static AVX2 INLINE_ALWAYS void qb32_scale8(const uint8_t *b, size_t bytes, int m_at, int off, const eng_xq *xq,
                                           int64_t i, __m256 *dd, __m256 *cc)
{
    __m128i g0 = _mm_cvtsi32_si128(ld32(b)), g1 = _mm_cvtsi32_si128(ld32(b + 4 * bytes));
    g0 = _mm_insert_epi32(g0, ld32(b + bytes), 1);
    g1 = _mm_insert_epi32(g1, ld32(b + 5 * bytes), 1);
    g0 = _mm_insert_epi32(g0, ld32(b + 2 * bytes), 2);
    g1 = _mm_insert_epi32(g1, ld32(b + 6 * bytes), 2);
    g0 = _mm_insert_epi32(g0, ld32(b + 3 * bytes), 3);
    g1 = _mm_insert_epi32(g1, ld32(b + 7 * bytes), 3);
    __m256i g = _mm256_set_m128i(g1, g0);
    /* d words of blocks 0-7 in the low 128 bits, m words in the high ones */
    __m256i h = _mm256_packus_epi32(_mm256_and_si256(g, _mm256_set1_epi32(0xffff)), _mm256_srli_epi32(g, 16));
    h = _mm256_permute4x64_epi64(h, _MM_SHUFFLE(3, 1, 2, 0));
    __m256 d = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    __m256 k = m_at ? _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)) : _mm256_mul_ps(_mm256_set1_ps((float)-off), d);
    *dd = _mm256_mul_ps(d, _mm256_loadu_ps(xq->d + i));
    *cc = _mm256_mul_ps(k, _mm256_loadu_ps(xq->dsum + i));
}

/* The layout arguments are constants at each call: one kernel per type, no branch left. Even
 * blocks go to a0/c0, odd ones to a1/c1 (lanes 0 and 1 of c01 while blocks go 8 at a time),
 * in block order, whether their scales come 8 at a time or one. */
static AVX2 INLINE_ALWAYS void mv_qb32(size_t bytes, int m_at, int qh_at, int qs_at, int off,
                                       const uint8_t *W, size_t rb, const eng_xq *xq, float *y,
                                       int64_t r0, int64_t r1)
{
    const int64_t nb = xq->nb;
    const __m256i lane[4] = {_mm256_set1_epi32(0), _mm256_set1_epi32(1), _mm256_set1_epi32(2),
                             _mm256_set1_epi32(3)};
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = W + (size_t)r * rb;
        const int8_t *q = xq->q;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        __m128 c01 = _mm_setzero_ps();
        int64_t i = 0;
        for (; i + 8 <= nb; i += 8, b += 8 * bytes, q += 8 * QB_QK) {
            __m256 dd, cc;
            qb32_scale8(b, bytes, m_at, off, xq, i, &dd, &cc);
            for (int h = 0; h < 2; h++) {
                /* blocks 4h..4h+3: their scales in both 128-bit lanes, then one broadcast each */
                __m128 dh = h ? _mm256_extractf128_ps(dd, 1) : _mm256_castps256_ps128(dd);
                __m128 c4 = h ? _mm256_extractf128_ps(cc, 1) : _mm256_castps256_ps128(cc);
                __m256 d4 = _mm256_set_m128(dh, dh);
                const uint8_t *bh = b + 4 * h * bytes;
                const int8_t *qh = q + 4 * h * QB_QK;
                a0 = _mm256_fmadd_ps(_mm256_permutevar_ps(d4, lane[0]), qb32_dot(bh, qh_at, qs_at, qh), a0);
                a1 = _mm256_fmadd_ps(_mm256_permutevar_ps(d4, lane[1]),
                                     qb32_dot(bh + bytes, qh_at, qs_at, qh + QB_QK), a1);
                c01 = _mm_add_ps(c01, c4);
                a0 = _mm256_fmadd_ps(_mm256_permutevar_ps(d4, lane[2]),
                                     qb32_dot(bh + 2 * bytes, qh_at, qs_at, qh + 2 * QB_QK), a0);
                a1 = _mm256_fmadd_ps(_mm256_permutevar_ps(d4, lane[3]),
                                     qb32_dot(bh + 3 * bytes, qh_at, qs_at, qh + 3 * QB_QK), a1);
                c01 = _mm_add_ps(c01, _mm_movehl_ps(c4, c4));
            }
        }
        float c0 = _mm_cvtss_f32(c01), c1 = _mm_cvtss_f32(_mm_movehdup_ps(c01)), c;
        for (; i < nb; i++, b += bytes, q += QB_QK) {
            __m256 s = _mm256_set1_ps(qb32_scale(b, m_at, off, xq, i, &c));
            if (i & 1) {
                a1 = _mm256_fmadd_ps(s, qb32_dot(b, qh_at, qs_at, q), a1);
                c1 += c;
            } else {
                a0 = _mm256_fmadd_ps(s, qb32_dot(b, qh_at, qs_at, q), a0);
                c0 += c;
            }
        }
        y[r] = hsum_ps(_mm256_add_ps(a0, a1)) + (c0 + c1);
    }
}

/* The layouts are constants at each call, so each type gets its own copy of its family's
 * kernel. */
AVX2 void eng_mv_avx2(uint32_t type, const uint8_t *W, size_t rb, int64_t ncols, const float *x,
                      const eng_xq *xq, float *y, int64_t r0, int64_t r1)
{
    switch (type) {
    case GGML_T_F32: mv_float(W_F32, W, rb, ncols, x, y, r0, r1); break;
    case GGML_T_F16: mv_float(W_F16, W, rb, ncols, x, y, r0, r1); break;
    case GGML_T_BF16: mv_float(W_BF16, W, rb, ncols, x, y, r0, r1); break;
    case GGML_T_Q8_0: mv_q8_0(W, rb, xq, y, r0, r1); break;
    case GGML_T_Q4_0: mv_q4_0(W, rb, xq, y, r0, r1); break;
    case GGML_T_Q4_1: mv_qb32(QB_Q4_1_BYTES, QB_Q4_1_M, 0, QB_Q4_1_QS, 0, W, rb, xq, y, r0, r1); break;
    case GGML_T_Q5_0: mv_qb32(QB_Q5_0_BYTES, 0, QB_Q5_0_QH, QB_Q5_0_QS, 16, W, rb, xq, y, r0, r1); break;
    default: mv_qb32(QB_Q5_1_BYTES, QB_Q5_1_M, QB_Q5_1_QH, QB_Q5_1_QS, 0, W, rb, xq, y, r0, r1); break;
    }
}

#else
/* Keeps the translation unit non-empty where there is nothing to compile. */
typedef int eng_quant_avx2_unused;
#endif
