/* quant_k_avx512.c: the Q3_K matrix-vector kernel with AVX-512VL and VNNI (on 256-bit vectors),
 * for the CPUs that have them; the AVX2 one (quant_k_avx2.c) gives the same floats elsewhere.
 * Compiled for any x86-64; quant.c calls it only after checking the CPU. */
#include "engine/kernels/quant_internal.h"
#include "engine/kernels/quant_avx2_internal.h"

#if defined(__x86_64__)

#define AVX512VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512dq,avx512bw,avx512vl,avx512vnni")))

/* Q3_K chunk k of half h (p = 4h + k, both constants at each call; see q3k_code in
 * quant_k_avx2.c) against its 32 x values, scaled by sc and added to sumi. */
static AVX512VNNI INLINE_ALWAYS __m256i q3k_chunk_vnni(__m256i sumi, __m256i v, __m256i hm, int k, int p,
                                                       const int8_t *q, __m256i sc)
{
    const __m256i lo = k ? _mm256_srli_epi16(v, 2 * k) : v;
    const __m256i hi = p > 2 ? _mm256_srli_epi16(hm, p - 2) : p < 2 ? _mm256_slli_epi16(hm, 2 - p) : hm;
    /* (lo & 3) | (hi & 4) */
    const __m256i c = _mm256_ternarylogic_epi32(lo, _mm256_and_si256(hi, _mm256_set1_epi8(4)), _mm256_set1_epi8(3), 0xec);
    const __m256i pk = _mm256_maddubs_epi16(c, _mm256_load_si256((const __m256i *)q));
    return _mm256_dpwssd_epi32(sumi, pk, sc);
}

/* vpternlogd merges a chunk's low bits and its masked hmask bit in one instruction, vpdpwssd
 * scales and accumulates in one, and 32 registers keep the accumulator out of memory: fewer
 * instructions than the AVX2 kernel, which is bound by them. The int32 lanes hold the same
 * sums as mv_sym_k's (exact integer sums, only added in another order), so the floats are
 * the same. */
AVX512VNNI void eng_mv_q3_k_avx512vnni(uint32_t type, const uint8_t *W, size_t rb, int64_t ncols,
                                       const float *x, const eng_xq *xq, float *y, int64_t r0, int64_t r1)
{
    (void)type, (void)ncols, (void)x;
    const int64_t nb = xq->nb;
    __m256i sel[4];
    half_sel(sel);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = W + (size_t)r * rb;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t i = 0; i < nb; i++, b += QB_Q3_K_BYTES) {
            const int8_t *q = xq->q + i * QB_QK_K;
            const __m256i sc_all = _mm256_cvtepi8_epi16(q3k_scales(b));
            /* starts at the offset: -4 * sum_j sc[j] * bsum[j] */
            const __m256i bs = _mm256_loadu_si256((const __m256i *)(xq->bsum + i * 16));
            __m256i sumi = _mm256_slli_epi32(_mm256_madd_epi16(bs, _mm256_sub_epi16(_mm256_setzero_si256(), sc_all)), 2);
            const __m256i hm = _mm256_loadu_si256((const __m256i *)b);
            const __m256i s0 = _mm256_permute4x64_epi64(sc_all, 0x44), s1 = _mm256_permute4x64_epi64(sc_all, 0xee);
            const __m256i v0 = _mm256_loadu_si256((const __m256i *)(b + QB_Q3_K_QS));
            const __m256i v1 = _mm256_loadu_si256((const __m256i *)(b + QB_Q3_K_QS + 32));
            sumi = q3k_chunk_vnni(sumi, v0, hm, 0, 0, q, _mm256_shuffle_epi8(s0, sel[0]));
            sumi = q3k_chunk_vnni(sumi, v0, hm, 1, 1, q + 32, _mm256_shuffle_epi8(s0, sel[1]));
            sumi = q3k_chunk_vnni(sumi, v0, hm, 2, 2, q + 64, _mm256_shuffle_epi8(s0, sel[2]));
            sumi = q3k_chunk_vnni(sumi, v0, hm, 3, 3, q + 96, _mm256_shuffle_epi8(s0, sel[3]));
            /* the second half in its own chain of vpdpwssd, half as long */
            __m256i sum1 = _mm256_setzero_si256();
            sum1 = q3k_chunk_vnni(sum1, v1, hm, 0, 4, q + 128, _mm256_shuffle_epi8(s1, sel[0]));
            sum1 = q3k_chunk_vnni(sum1, v1, hm, 1, 5, q + 160, _mm256_shuffle_epi8(s1, sel[1]));
            sum1 = q3k_chunk_vnni(sum1, v1, hm, 2, 6, q + 192, _mm256_shuffle_epi8(s1, sel[2]));
            sum1 = q3k_chunk_vnni(sum1, v1, hm, 3, 7, q + 224, _mm256_shuffle_epi8(s1, sel[3]));
            sumi = _mm256_add_epi32(sumi, sum1);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(xq->d[i] * f16s(b + QB_Q3_K_D)), _mm256_cvtepi32_ps(sumi), acc);
        }
        y[r] = hsum_ps(acc);
    }
}

#else
/* Keeps the translation unit non-empty where there is nothing to compile. */
typedef int eng_quant_k_avx512_unused;
#endif
