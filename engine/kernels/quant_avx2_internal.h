/* quant_avx2_internal.h: private to quant_avx2.c and quant_k_avx2.c: the target attribute of
 * their AVX2/FMA/F16C functions and the small helpers both families use. */
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

#endif
#endif
