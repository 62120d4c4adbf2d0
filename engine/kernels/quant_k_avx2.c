/* quant_k_avx2.c: AVX2 matrix-vector kernels of ggml's K-quant types (Q2_K, Q3_K, Q4_K, Q5_K,
 * Q6_K) over Q8 activations with 16-element sums (eng_xq.bsum), and their dequantizers into
 * the prefill's GEMM panels. Compiled for any x86-64; quant.c calls them only after checking
 * the CPU. */
#include "engine/kernels/quant_internal.h"
#include "engine/kernels/quant_avx2_internal.h"

#if defined(__x86_64__)

/* Sub-blocks 2g and 2g+1 of a Q4_K/Q5_K super-block (codes lo, hi as unsigned bytes) against
 * their 64 x values, each scaled by its 6-bit scale (sa, sb: the scale broadcast as int16).
 * Codes are unsigned, so maddubs takes them directly (31 * 127 * 2 fits in int16). */
static AVX2 inline __m256i k_pair(__m256i lo, __m256i hi, const int8_t *q, __m256i sa, __m256i sb)
{
    __m256i p0 = _mm256_maddubs_epi16(lo, _mm256_load_si256((const __m256i *)q));
    __m256i p1 = _mm256_maddubs_epi16(hi, _mm256_load_si256((const __m256i *)(q + 32)));
    return _mm256_add_epi32(_mm256_madd_epi16(p0, sa), _mm256_madd_epi16(p1, sb));
}

/* One 32-byte group of Q4_K nibbles: sub-block 2g in the low nibbles, 2g+1 in the high ones. */
static AVX2 inline __m256i q4k_group(const uint8_t *qs, const int8_t *q, __m256i sa, __m256i sb)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i v = _mm256_loadu_si256((const __m256i *)qs);
    return k_pair(_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4), q, sa, sb);
}

/* Q5_K: as Q4_K, with the fifth bits of sub-blocks 2g and 2g+1 in bits 0 and 1 of each byte
 * of h (qh shifted right by 2g; 16-bit shifts are safe: the masks keep one bit per byte). */
static AVX2 inline __m256i q5k_group(const uint8_t *qs, __m256i h, const int8_t *q, __m256i sa, __m256i sb)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), m16 = _mm256_set1_epi8(0x10);
    __m256i v = _mm256_loadu_si256((const __m256i *)qs);
    __m256i lo = _mm256_or_si256(_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m16));
    __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
                                 _mm256_and_si256(_mm256_slli_epi16(h, 3), m16));
    return k_pair(lo, hi, q, sa, sb);
}

/* Q4_K (five = 0) and Q5_K (five = 1), a constant at each call. */
static AVX2 INLINE_ALWAYS void mv_q45_k(int five, const uint8_t *W, size_t rb, const eng_xq *xq,
                                        float *y, int64_t r0, int64_t r1)
{
    const int64_t nb = xq->nb;
    const size_t bytes = five ? QB_Q5_K_BYTES : QB_Q4_K_BYTES;
    __m256i sel[8];
    for (int j = 0; j < 8; j++)
        sel[j] = word_bcast(j, j);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = W + (size_t)r * rb;
        __m256 acc = _mm256_setzero_ps(), accm = acc;
        for (int64_t i = 0; i < nb; i++, b += bytes) {
            uint32_t sm[4];
            qb_q4k_scale_min_words(b + 4, sm);
            /* built in registers: a byte array would cost a store-forwarding stall */
            __m128i scm = _mm_set_epi32((int)sm[3], (int)sm[2], (int)sm[1], (int)sm[0]);
            /* the 8 scales as int16 in both lanes; pshufb picks one per sub-block */
            __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scm));
            __m128i mn16 = _mm_cvtepu8_epi16(_mm_srli_si128(scm, 8));
            const int8_t *q = xq->q + i * QB_QK_K;
            __m256i s01, s23, s45, s67;
            if (five) {
                const uint8_t *qs = b + QB_Q5_K_QS;
                __m256i h = _mm256_loadu_si256((const __m256i *)(b + QB_Q5_K_QH));
                s01 = q5k_group(qs, h, q, _mm256_shuffle_epi8(sc16, sel[0]), _mm256_shuffle_epi8(sc16, sel[1]));
                s23 = q5k_group(qs + 32, _mm256_srli_epi16(h, 2), q + 64, _mm256_shuffle_epi8(sc16, sel[2]),
                                _mm256_shuffle_epi8(sc16, sel[3]));
                s45 = q5k_group(qs + 64, _mm256_srli_epi16(h, 4), q + 128, _mm256_shuffle_epi8(sc16, sel[4]),
                                _mm256_shuffle_epi8(sc16, sel[5]));
                s67 = q5k_group(qs + 96, _mm256_srli_epi16(h, 6), q + 192, _mm256_shuffle_epi8(sc16, sel[6]),
                                _mm256_shuffle_epi8(sc16, sel[7]));
            } else {
                const uint8_t *qs = b + 16;
                s01 = q4k_group(qs, q, _mm256_shuffle_epi8(sc16, sel[0]), _mm256_shuffle_epi8(sc16, sel[1]));
                s23 = q4k_group(qs + 32, q + 64, _mm256_shuffle_epi8(sc16, sel[2]), _mm256_shuffle_epi8(sc16, sel[3]));
                s45 = q4k_group(qs + 64, q + 128, _mm256_shuffle_epi8(sc16, sel[4]), _mm256_shuffle_epi8(sc16, sel[5]));
                s67 = q4k_group(qs + 96, q + 192, _mm256_shuffle_epi8(sc16, sel[6]), _mm256_shuffle_epi8(sc16, sel[7]));
            }
            __m256i sumi = _mm256_add_epi32(_mm256_add_epi32(s01, s23), _mm256_add_epi32(s45, s67));
            /* mins: sum over sub-blocks j of mn[j] * (bsum[2j] + bsum[2j+1]) */
            __m256i mnv = _mm256_set_m128i(_mm_unpackhi_epi16(mn16, mn16), _mm_unpacklo_epi16(mn16, mn16));
            __m256i summ = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xq->bsum + i * 16)), mnv);
            float xd = xq->d[i];
            acc = _mm256_fmadd_ps(_mm256_set1_ps(xd * f16s(b)), _mm256_cvtepi32_ps(sumi), acc);
            accm = _mm256_fmadd_ps(_mm256_set1_ps(xd * f16s(b + 2)), _mm256_cvtepi32_ps(summ), accm);
        }
        y[r] = hsum_ps(_mm256_sub_ps(acc, accm));
    }
}

/* Four chunks of 32 unsigned codes (v0..v3) against their 128 x values, each 16 scaled by its
 * scale: sc16 holds scales as int16, and pshufb with sel[k] gives chunk k the scales of its
 * low and high lanes (Q2_K and Q6_K: a half super-block's 8 scales in both lanes and
 * half_sel's controls, sub-block 2k to the low lane and 2k+1 to the high one). */
static AVX2 inline __m256i half_dot(__m256i v0, __m256i v1, __m256i v2, __m256i v3, const int8_t *q,
                                    __m256i sc16, const __m256i sel[4])
{
    __m256i p0 = _mm256_maddubs_epi16(v0, _mm256_load_si256((const __m256i *)q));
    __m256i p1 = _mm256_maddubs_epi16(v1, _mm256_load_si256((const __m256i *)(q + 32)));
    __m256i p2 = _mm256_maddubs_epi16(v2, _mm256_load_si256((const __m256i *)(q + 64)));
    __m256i p3 = _mm256_maddubs_epi16(v3, _mm256_load_si256((const __m256i *)(q + 96)));
    p0 = _mm256_madd_epi16(p0, _mm256_shuffle_epi8(sc16, sel[0]));
    p1 = _mm256_madd_epi16(p1, _mm256_shuffle_epi8(sc16, sel[1]));
    p2 = _mm256_madd_epi16(p2, _mm256_shuffle_epi8(sc16, sel[2]));
    p3 = _mm256_madd_epi16(p3, _mm256_shuffle_epi8(sc16, sel[3]));
    return _mm256_add_epi32(_mm256_add_epi32(p0, p1), _mm256_add_epi32(p2, p3));
}

/* One 128-element half of a Q6_K super-block: 64 bytes of ql, 32 of qh, its 8 scales. */
static AVX2 inline __m256i q6k_half(const uint8_t *ql, const uint8_t *qh, const uint8_t *sc,
                                    const int8_t *q, const __m256i sel[4])
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    __m256i ql0 = _mm256_loadu_si256((const __m256i *)ql);
    __m256i ql1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
    __m256i h = _mm256_loadu_si256((const __m256i *)qh);
    /* 6-bit values 0..63: qh bit pair k lands in bits 4-5 (16-bit shifts are safe because the
     * mask drops what crossed a byte boundary) */
    __m256i v0 = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m30));
    __m256i v1 = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m30));
    __m256i v2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(h, m30));
    __m256i v3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                 _mm256_and_si256(_mm256_srli_epi16(h, 2), m30));
    /* unsigned 6-bit values: 63 * 127 * 2 fits int16 */
    __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)sc)));
    return half_dot(v0, v1, v2, v3, q, sc16, sel);
}

/* Q2_K: bits 2k..2k+1 of a half's 32 qs bytes are chunk k; scales low nibbles, mins high. */
static AVX2 inline __m256i q2k_half(const uint8_t *qs, __m128i sc8, const int8_t *q, const __m256i sel[4])
{
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256i v = _mm256_loadu_si256((const __m256i *)qs);
    __m256i v0 = _mm256_and_si256(v, m3), v1 = _mm256_and_si256(_mm256_srli_epi16(v, 2), m3);
    __m256i v2 = _mm256_and_si256(_mm256_srli_epi16(v, 4), m3), v3 = _mm256_and_si256(_mm256_srli_epi16(v, 6), m3);
    return half_dot(v0, v1, v2, v3, q, _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sc8)), sel);
}

static AVX2 void mv_q2_k(const uint8_t *W, size_t rb, const eng_xq *xq, float *y, int64_t r0, int64_t r1)
{
    const int64_t nb = xq->nb;
    const __m128i m4 = _mm_set1_epi8(0x0f);
    __m256i sel[4];
    for (int k = 0; k < 4; k++)
        sel[k] = word_bcast(2 * k, 2 * k + 1);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = W + (size_t)r * rb;
        __m256 acc = _mm256_setzero_ps(), accm = acc;
        for (int64_t i = 0; i < nb; i++, b += QB_Q2_K_BYTES) {
            const int8_t *q = xq->q + i * QB_QK_K;
            __m128i s = _mm_loadu_si128((const __m128i *)b);
            __m128i sc = _mm_and_si128(s, m4), mn = _mm_and_si128(_mm_srli_epi16(s, 4), m4);
            __m256i sumi = _mm256_add_epi32(q2k_half(b + QB_Q2_K_QS, sc, q, sel),
                                            q2k_half(b + QB_Q2_K_QS + 32, _mm_srli_si128(sc, 8), q + 128, sel));
            /* mins: sum over the 16 sub-blocks of mn[j] * bsum[j] */
            __m256i summ = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xq->bsum + i * 16)),
                                             _mm256_cvtepu8_epi16(mn));
            float xd = xq->d[i];
            acc = _mm256_fmadd_ps(_mm256_set1_ps(xd * f16s(b + QB_Q2_K_D)), _mm256_cvtepi32_ps(sumi), acc);
            accm = _mm256_fmadd_ps(_mm256_set1_ps(xd * f16s(b + QB_Q2_K_D + 2)), _mm256_cvtepi32_ps(summ), accm);
        }
        y[r] = hsum_ps(_mm256_sub_ps(acc, accm));
    }
}

/* One chunk of Q3_K codes: bits 2k..2k+1 of v, plus 4 where hmask bit p is set. k and p are
 * constants at each call, so every shift is an immediate (16-bit shifts are safe: the masks
 * keep bits that come from the same byte). */
static AVX2 INLINE_ALWAYS __m256i q3k_code(__m256i v, __m256i hm, int k, int p)
{
    const __m256i m3 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
    __m256i lo = _mm256_and_si256(k ? _mm256_srli_epi16(v, 2 * k) : v, m3);
    __m256i hi = p > 2 ? _mm256_srli_epi16(hm, p - 2) : p < 2 ? _mm256_slli_epi16(hm, 2 - p) : hm;
    return _mm256_or_si256(lo, _mm256_and_si256(hi, four));
}

/* One 128-element half of a Q3_K super-block (qs: its 32 bytes; te, to: its hmask bits from
 * the tables of mv_q3_k) against its x values. Codes go two to a byte: e holds chunks 0 and 2,
 * o chunks 1 and 3, each as bits 2k..2k+1 of qs with the hmask bit put above them. The high
 * nibbles are taken in place, 16 times the code (at most 112, and 112 * 128 * 2 fits int16,
 * so maddubs cannot saturate); the low nibbles' scales are 16 times larger instead (sc, see
 * mv_q3_k). sel: the pshufb controls of the half's 4 chunks in sc. */
static AVX2 INLINE_ALWAYS __m256i q3k_half(const uint8_t *qs, __m256i te, __m256i to, const int8_t *q, __m256i sc,
                                           const __m256i *sel)
{
    const __m256i m33 = _mm256_set1_epi8(0x33), lo = _mm256_set1_epi8(0x0f), hi = _mm256_set1_epi8((char)0xf0);
    const __m256i v = _mm256_loadu_si256((const __m256i *)qs);
    /* a 16-bit shift: the mask drops what crossed a byte */
    const __m256i e = _mm256_or_si256(_mm256_and_si256(v, m33), te);
    const __m256i o = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 2), m33), to);
    return half_dot(_mm256_and_si256(e, lo), _mm256_and_si256(o, lo), _mm256_and_si256(e, hi),
                    _mm256_and_si256(o, hi), q, sc, sel);
}

/* Q3_K's 16 scales times 4 as signed bytes, 4 * (stored - 32): scales 0-7 in lo, 8-15 in hi.
 * qb_q3k_scale_words on 64-bit words, in the integer units, which the vector kernel leaves
 * idle (in vector registers this took 9 vector instructions per block). g holds the top-bit
 * bytes twice, the copy 30 bits up, so one shift brings the top bits of scales k and 4 + k
 * (lo) or 8 + k and 12 + k (hi) to bits 6-7 of bytes k and 4 + k. 4 * stored is under 256,
 * and flipping its bit 7 takes 128 off. */
static inline void q3k_scales4(const uint8_t *b, uint64_t *lo, uint64_t *hi)
{
    uint64_t l;
    uint32_t h;
    memcpy(&l, b + QB_Q3_K_SC, 8);
    memcpy(&h, b + QB_Q3_K_SC + 8, 4);
    const uint64_t g = (uint64_t)h | ((uint64_t)h << 30), m = 0x3c3c3c3c3c3c3c3cu, t = 0xc0c0c0c0c0c0c0c0u;
    *lo = (((l << 2) & m) | ((g << 6) & t)) ^ 0x8080808080808080u;
    *hi = (((l >> 2) & m) | ((g << 2) & t)) ^ 0x8080808080808080u;
}

/* One Q3_K super-block (b) against its x values (q, bsum, xd), added to acc. Q2_K's low bits
 * plus 4 where hmask bit 4h + k is set for chunk k of half h (codes 0..7, value = code - 4),
 * signed 6-bit scales per 16 elements, no mins. Every product comes 64 times too large
 * (exact, and under 2^31 summed), and each int32 lane ends with the same sum as
 * eng_mv_q3_k_avx512vnni's, so the floats are the same. Built for fewer vector instructions,
 * which bound this loop: two codes per byte, hmask bits by table, scales in the integer
 * units. The constants are mv_q3_k's (kept in registers across its loop). */
static AVX2 INLINE_ALWAYS __m256 q3k_block(const uint8_t *b, const int8_t *q, const int16_t *bsum, float xd,
                                           __m256 acc, __m256i tab_e, __m256i tab_o, __m128i order, __m256i x16,
                                           const __m256i *sel)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    uint64_t slo, shi;
    q3k_scales4(b, &slo, &shi);
    const __m128i sc4 = _mm_insert_epi64(_mm_cvtsi64_si128((long long)slo), (long long)shi, 1);
    const __m256i sc = _mm256_mullo_epi16(_mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc4, order)), x16);
    const __m256i hm = _mm256_loadu_si256((const __m256i *)b);
    const __m256i n0 = _mm256_and_si256(hm, m4), n1 = _mm256_and_si256(_mm256_srli_epi16(hm, 4), m4);
    __m256i sumi = _mm256_add_epi32(
        q3k_half(b + QB_Q3_K_QS, _mm256_shuffle_epi8(tab_e, n0), _mm256_shuffle_epi8(tab_o, n0), q, sc, sel),
        q3k_half(b + QB_Q3_K_QS + 32, _mm256_shuffle_epi8(tab_e, n1), _mm256_shuffle_epi8(tab_o, n1), q + 128, sc,
                 sel + 4));
    /* the offset: 4 * sum_j sc[j] * bsum[j] over the 16 sub-blocks, two per lane */
    const __m256i off = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)bsum), _mm256_cvtepi8_epi16(sc4));
    sumi = _mm256_sub_epi32(_mm256_srai_epi32(sumi, 6), off);
    return _mm256_fmadd_ps(_mm256_set1_ps(xd * f16s(b + QB_Q3_K_D)), _mm256_cvtepi32_ps(sumi), acc);
}

/* Q3_K, two super-blocks an iteration, which takes the loop's own instructions half out. */
static AVX2 INLINE_ALWAYS void mv_q3_k(const uint8_t *W, size_t rb, const eng_xq *xq, float *y, int64_t r0,
                                       int64_t r1)
{
    const int64_t nb = xq->nb;
    /* hmask nibble n (bit k: chunk k of a half) to the bits of chunks 0 and 2 (tab_e) or 1 and
     * 3 (tab_o), each at bit 2 of its nibble */
    const __m256i tab_e = _mm256_broadcastsi128_si256(
        _mm_setr_epi8(0, 4, 0, 4, 64, 68, 64, 68, 0, 4, 0, 4, 64, 68, 64, 68));
    const __m256i tab_o = _mm256_broadcastsi128_si256(
        _mm_setr_epi8(0, 0, 4, 4, 0, 0, 4, 4, 64, 64, 68, 68, 64, 64, 68, 68));
    /* the scales in q3k_block: word 4h + k of the low lane is the scale of sub-block 8h + 2k
     * (the low lane of chunk k of half h), of the high lane 8h + 2k + 1; 4 times the scale,
     * and 64 times for chunks 0 and 1, whose codes q3k_half takes as they are */
    const __m128i order = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m256i x16 = _mm256_setr_epi16(16, 16, 1, 1, 16, 16, 1, 1, 16, 16, 1, 1, 16, 16, 1, 1);
    __m256i sel[8];
    for (int j = 0; j < 8; j++)
        sel[j] = word_bcast(j, j);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = W + (size_t)r * rb;
        __m256 acc = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 1 < nb; i += 2, b += 2 * QB_Q3_K_BYTES) {
            acc = q3k_block(b, xq->q + i * QB_QK_K, xq->bsum + i * 16, xq->d[i], acc, tab_e, tab_o, order, x16, sel);
            acc = q3k_block(b + QB_Q3_K_BYTES, xq->q + (i + 1) * QB_QK_K, xq->bsum + (i + 1) * 16, xq->d[i + 1], acc,
                            tab_e, tab_o, order, x16, sel);
        }
        if (i < nb)
            acc = q3k_block(b, xq->q + i * QB_QK_K, xq->bsum + i * 16, xq->d[i], acc, tab_e, tab_o, order, x16, sel);
        y[r] = hsum_ps(acc);
    }
}

/* Q6_K: unsigned 6-bit codes with 32 taken off per block, signed 8-bit scales per 16
 * elements, no mins. */
static AVX2 INLINE_ALWAYS void mv_q6_k(const uint8_t *W, size_t rb, const eng_xq *xq, float *y, int64_t r0, int64_t r1)
{
    const int64_t nb = xq->nb;
    __m256i sel[4];
    half_sel(sel);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = W + (size_t)r * rb;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t i = 0; i < nb; i++, b += QB_Q6_K_BYTES) {
            const int8_t *q = xq->q + i * QB_QK_K;
            const uint8_t *sc = b + QB_Q6_K_SC;
            __m256i sumi = _mm256_add_epi32(q6k_half(b, b + QB_Q6_K_QH, sc, q, sel),
                                            q6k_half(b + 64, b + QB_Q6_K_QH + 32, sc + 8, q + 128, sel));
            __m256i sc_all = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
            /* the offset: 32 * sum_j sc[j] * bsum[j] over the 16 sub-blocks */
            __m256i bs = _mm256_loadu_si256((const __m256i *)(xq->bsum + i * 16));
            sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(_mm256_madd_epi16(bs, sc_all), 5));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(xq->d[i] * f16s(b + QB_Q6_K_D)), _mm256_cvtepi32_ps(sumi), acc);
        }
        y[r] = hsum_ps(acc);
    }
}

/* The family's kernel is a constant at each call, so each type gets its own copy. */
AVX2 void eng_mv_k_avx2(uint32_t type, const uint8_t *W, size_t rb, int64_t ncols, const float *x,
                        const eng_xq *xq, float *y, int64_t r0, int64_t r1)
{
    switch (type) {
    case GGML_T_Q2_K: mv_q2_k(W, rb, xq, y, r0, r1); break;
    case GGML_T_Q3_K: mv_q3_k(W, rb, xq, y, r0, r1); break;
    case GGML_T_Q4_K: mv_q45_k(0, W, rb, xq, y, r0, r1); break;
    case GGML_T_Q5_K: mv_q45_k(1, W, rb, xq, y, r0, r1); break;
    default: mv_q6_k(W, rb, xq, y, r0, r1); break;
    }
}

/* Q4_K (five = 0) and Q5_K (five = 1, a constant at each call) into a GEMM panel: element k
 * at dst[(k / 8) * stride + k % 8]. Each value is (d * sc) * q - (dmin * mn), a product and
 * then a difference as in the scalar dequantizer (ggml's order), so the floats are the same;
 * subtracting a min of +0 changes no value. */
static AVX2 INLINE_ALWAYS void dequant_q45_k_panel(int five, const uint8_t *b, float *y, int64_t n,
                                                   size_t stride)
{
    const __m256i low = _mm256_set1_epi8(0x0f), bit4 = _mm256_set1_epi8(0x10);
    const size_t bytes = five ? QB_Q5_K_BYTES : QB_Q4_K_BYTES;
    for (int64_t i = 0; i < n; i += QB_QK_K, b += bytes) {
        uint8_t sc[8], mn[8];
        qb_q4k_scale_min(b + 4, sc, mn);
        const float d = f16s(b), dmin = f16s(b + 2);
        const uint8_t *qs = b + (five ? QB_Q5_K_QS : 16);
        const __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(b + QB_Q5_K_QH)) : low;
        for (int g = 0; g < 4; g++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * g));
            __m256i nib[2] = {_mm256_and_si256(q, low), _mm256_and_si256(_mm256_srli_epi16(q, 4), low)};
            if (five) { /* bits 2g and 2g + 1 of qh: the fifth bits of sub-blocks 2g, 2g + 1 */
                const __m256i h = _mm256_srli_epi16(qh, 2 * g);
                nib[0] = _mm256_or_si256(nib[0], _mm256_and_si256(_mm256_slli_epi16(h, 4), bit4));
                nib[1] = _mm256_or_si256(nib[1], _mm256_and_si256(_mm256_slli_epi16(h, 3), bit4));
            }
            for (int h = 0; h < 2; h++) { /* sub-block 2g + h: 32 values */
                const __m256 dl = _mm256_set1_ps(d * (float)sc[2 * g + h]);
                const __m256 ml = _mm256_set1_ps(dmin * (float)mn[2 * g + h]);
                const __m128i lo = _mm256_castsi256_si128(nib[h]), hi = _mm256_extracti128_si256(nib[h], 1);
                const __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
                float *o = y + (size_t)((i + 64 * g + 32 * h) / 8) * stride;
                for (int t = 0; t < 4; t++, o += stride) {
                    const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(part[t]));
                    _mm256_storeu_ps(o, _mm256_sub_ps(_mm256_mul_ps(dl, v), ml));
                }
            }
        }
    }
}

AVX2 void eng_dequant_q4_k_panel_avx2(const uint8_t *b, float *y, int64_t n, size_t stride)
{
    dequant_q45_k_panel(0, b, y, n, stride);
}

AVX2 void eng_dequant_q5_k_panel_avx2(const uint8_t *b, float *y, int64_t n, size_t stride)
{
    dequant_q45_k_panel(1, b, y, n, stride);
}

/* 32 codes of Q2_K or Q3_K (c: two sub-blocks of 16, one per 128-bit lane) through their
 * sub-blocks' tables: lane j's element is tab[j][code & 7], stored at o, o + stride, ... The
 * tables hold the finished floats of the 8 codes, so vpermps does the whole conversion. */
static AVX2 INLINE_ALWAYS void panel_lookup32(__m256i c, __m256 tab0, __m256 tab1, float *o, size_t stride)
{
    const __m128i lo = _mm256_castsi256_si128(c), hi = _mm256_extracti128_si256(c, 1);
    _mm256_storeu_ps(o, _mm256_permutevar8x32_ps(tab0, _mm256_cvtepu8_epi32(lo)));
    _mm256_storeu_ps(o + stride, _mm256_permutevar8x32_ps(tab0, _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))));
    _mm256_storeu_ps(o + 2 * stride, _mm256_permutevar8x32_ps(tab1, _mm256_cvtepu8_epi32(hi)));
    _mm256_storeu_ps(o + 3 * stride, _mm256_permutevar8x32_ps(tab1, _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))));
}

/* Q2_K (three = 0) and Q3_K (three = 1, a constant at each call) into a GEMM panel. Both
 * have 4 (8) codes per 16-element sub-block, so each sub-block's values are a table of 8
 * floats computed as the scalar dequantizer does: Q2_K's (d * sc) * c - (dmin * mn) for
 * c = 0..3 (repeated: a code's bit 2 may be left over from the next pair), Q3_K's
 * (d * sc) * (c - 4) for c = 0..7 (no min: the scalar code subtracts none). */
static AVX2 INLINE_ALWAYS void dequant_q23_k_panel(int three, const uint8_t *b, float *y, int64_t n,
                                                   size_t stride)
{
    const __m256 codes = three ? _mm256_setr_ps(-4, -3, -2, -1, 0, 1, 2, 3) : _mm256_setr_ps(0, 1, 2, 3, 0, 1, 2, 3);
    const size_t bytes = three ? QB_Q3_K_BYTES : QB_Q2_K_BYTES;
    for (int64_t i = 0; i < n; i += QB_QK_K, b += bytes) {
        __m256 tab[16];
        __m256i hm = _mm256_setzero_si256();
        const uint8_t *qs;
        if (three) {
            const __m128i sc = q3k_scales(b);
            const __m256 d = _mm256_set1_ps(f16s(b + QB_Q3_K_D));
            float dl[16];
            _mm256_storeu_ps(dl, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))));
            _mm256_storeu_ps(dl + 8,
                             _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)))));
            for (int j = 0; j < 16; j++)
                tab[j] = _mm256_mul_ps(_mm256_set1_ps(dl[j]), codes);
            hm = _mm256_loadu_si256((const __m256i *)b);
            qs = b + QB_Q3_K_QS;
        } else {
            const __m128i s = _mm_loadu_si128((const __m128i *)b), m4 = _mm_set1_epi8(0x0f);
            const __m256 d = _mm256_set1_ps(f16s(b + QB_Q2_K_D)), dmin = _mm256_set1_ps(f16s(b + QB_Q2_K_D + 2));
            const __m128i sc = _mm_and_si128(s, m4), mn = _mm_and_si128(_mm_srli_epi16(s, 4), m4);
            float dl[16], ml[16];
            for (int t = 0; t < 2; t++) {
                const __m128i st = t ? _mm_unpackhi_epi64(sc, sc) : sc, mt = t ? _mm_unpackhi_epi64(mn, mn) : mn;
                _mm256_storeu_ps(dl + 8 * t, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(st))));
                _mm256_storeu_ps(ml + 8 * t, _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(mt))));
            }
            for (int j = 0; j < 16; j++)
                tab[j] = _mm256_sub_ps(_mm256_mul_ps(_mm256_set1_ps(dl[j]), codes), _mm256_set1_ps(ml[j]));
            qs = b + QB_Q2_K_QS;
        }
        for (int h = 0; h < 2; h++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
            float *o = y + (size_t)((i + 128 * h) / 8) * stride;
            /* chunk k: elements 128h + 32k + l, sub-blocks 8h + 2k (l < 16) and 8h + 2k + 1 */
            for (int k = 0; k < 4; k++, o += 4 * stride) {
                __m256i c = k ? _mm256_srli_epi16(v, 2 * k) : v;
                if (three)
                    c = q3k_code(v, hm, k, 4 * h + k);
                panel_lookup32(c, tab[8 * h + 2 * k], tab[8 * h + 2 * k + 1], o, stride);
            }
        }
    }
}

AVX2 void eng_dequant_q2_k_panel_avx2(const uint8_t *b, float *y, int64_t n, size_t stride)
{
    dequant_q23_k_panel(0, b, y, n, stride);
}

AVX2 void eng_dequant_q3_k_panel_avx2(const uint8_t *b, float *y, int64_t n, size_t stride)
{
    dequant_q23_k_panel(1, b, y, n, stride);
}

/* Q6_K into a GEMM panel: (d * sc) * (q - 32), the scalar dequantizer's product (no mins). */
AVX2 void eng_dequant_q6_k_panel_avx2(const uint8_t *b, float *y, int64_t n, size_t stride)
{
    const __m256i low = _mm256_set1_epi8(0x0f), two = _mm256_set1_epi8(0x30), off = _mm256_set1_epi8(32);
    for (int64_t i = 0; i < n; i += QB_QK_K, b += QB_Q6_K_BYTES) {
        const float d = f16s(b + QB_Q6_K_D);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b + 64 * h, *qhp = b + QB_Q6_K_QH + 32 * h;
            const __m256i qa = _mm256_loadu_si256((const __m256i *)ql);
            const __m256i qb = _mm256_loadu_si256((const __m256i *)(ql + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i *)qhp);
            /* elements 32k + l of the half: a nibble of ql and two bits of qh each */
            const __m256i v[4] = {
                _mm256_or_si256(_mm256_and_si256(qa, low), _mm256_and_si256(_mm256_slli_epi16(qh, 4), two)),
                _mm256_or_si256(_mm256_and_si256(qb, low), _mm256_and_si256(_mm256_slli_epi16(qh, 2), two)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qa, 4), low), _mm256_and_si256(qh, two)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qb, 4), low),
                                _mm256_and_si256(_mm256_srli_epi16(qh, 2), two)),
            };
            for (int k = 0; k < 4; k++) {
                const __m256i q = _mm256_sub_epi8(v[k], off);
                const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
                const __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
                const int e0 = 128 * h + 32 * k; /* element of the super-block */
                float *o = y + (size_t)((i + e0) / 8) * stride;
                for (int t = 0; t < 4; t++, o += stride) {
                    const __m256 dl = _mm256_set1_ps(d * (float)(int8_t)b[QB_Q6_K_SC + (e0 + 8 * t) / 16]);
                    _mm256_storeu_ps(o, _mm256_mul_ps(dl, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part[t]))));
                }
            }
        }
    }
}

#else
/* Keeps the translation unit non-empty where there is nothing to compile. */
typedef int eng_quant_k_avx2_unused;
#endif
