/* quant_avx2_internal.h: private to quant_avx2.c, quant_k_avx2.c and quant_k_avx512.c: the
 * target attribute of their AVX2/FMA/F16C functions and the small helpers they share. */
#ifndef KVPUB_QUANT_AVX2_INTERNAL_H
#define KVPUB_QUANT_AVX2_INTERNAL_H

#if defined(__x86_64__)
#include "engine/kernels/quant_blocks.h"

#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE_ALWAYS inline __attribute__((always_inline))

static AVX2 inline float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static AVX2 inline float f16s(const uint8_t *p) { return _cvtsh_ss(qb_ld16(p)); }

/* pshufb control that broadcasts int16 word w of each 128-bit lane (lo for the low lane, hi
 * for the high one) across that lane. */
static AVX2 inline __m256i word_bcast(int lo, int hi)
{
    return _mm256_set_m128i(_mm_set1_epi16((short)(((2 * hi + 1) << 8) | (2 * hi))),
                            _mm_set1_epi16((short)(((2 * lo + 1) << 8) | (2 * lo))));
}

/* half_dot's pshufb controls: chunk k's sub-blocks 2k (low lane) and 2k+1 (high lane). */
static AVX2 inline void half_sel(__m256i sel[4])
{
    for (int k = 0; k < 4; k++)
        sel[k] = word_bcast(2 * k, 2 * k + 1);
}

/* Q3_K's 16 scales as signed bytes (the stored value - 32): qb_q3k_scale_words done in vector
 * registers, where the matvec kernels and the panel dequantizer want them. One load of bytes
 * 94..109 (still inside the block) brings the 12 bytes. */
static AVX2 inline __m128i q3k_scales(const uint8_t *b)
{
    const __m128i x = _mm_loadu_si128((const __m128i *)(b + QB_Q3_K_SC - 2));
    /* low nibbles: scales 0-7 from bytes 0-7, scales 8-15 from their high nibbles */
    const __m128i ab = _mm_shuffle_epi8(x, _mm_setr_epi8(2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5, 6, 7, 8, 9));
    const __m128i lo = _mm_and_si128(_mm_srlv_epi64(ab, _mm_set_epi64x(4, 0)), _mm_set1_epi8(0x0f));
    /* top bits: bits 2w..2w+1 of bytes 8-11 for scales 4w..4w+3 */
    const __m128i c = _mm_shuffle_epi8(x, _mm_setr_epi8(10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13));
    const __m128i hi = _mm_and_si128(_mm_srlv_epi32(c, _mm_setr_epi32(0, 2, 4, 6)), _mm_set1_epi8(3));
    return _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), _mm_set1_epi8(32));
}

#endif
#endif
