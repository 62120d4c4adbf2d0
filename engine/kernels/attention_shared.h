/* attention_shared.h: what prefill attention (attention.c) and decode attention
 * (attention_decode.c) share: the key block, the CPU features of their fast paths, scratch
 * alignment, and the AVX2 exp and horizontal sum. Private to engine/kernels. */
#ifndef KVPUB_ATTENTION_SHARED_H
#define KVPUB_ATTENTION_SHARED_H

#include "engine/ctx_internal.h"

#include <stdint.h>

enum { KB = ENG_KEY_BLOCK };

/* What the AVX2 kernels need, and the ones that also read the f16 cache with F16C. */
enum {
    CPU_AVX2_PATHS = BASE_CPU_AVX2 | BASE_CPU_FMA,
    CPU_F16C_PATHS = BASE_CPU_AVX2 | BASE_CPU_FMA | BASE_CPU_F16C,
};

static inline float *align32(float *p)
{
    return (float *)(((uintptr_t)p + 31) & ~(uintptr_t)31);
}

#if defined(__x86_64__)
#include <immintrin.h>

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

__attribute__((target("avx2,fma"))) static inline float hsum8(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}
#endif

#endif
