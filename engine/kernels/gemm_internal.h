/* gemm_internal.h: the engine's batched product Y = X W^T with one fixed, documented
 * accumulation order per output element, so that a token's result never depends on how many
 * other rows share the call, where its row sits, or which kernel (AVX-512, AVX2 or scalar) ran it. */
#ifndef KVPUB_GEMM_INTERNAL_H
#define KVPUB_GEMM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Every element Y[i][j] = dot(X row i, W row j) over K is computed the same way:
 *   lane l (0..7) starts at +0 and accumulates fma(x[k], w[k], lane) for k = l, l+8, ...
 *   in increasing k (k >= K reads as 0), then
 *   y = ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)).
 * That is the order of an 8-wide FMA dot product, so a register-blocked many-row kernel and a
 * one-row kernel agree bit for bit.
 *
 * Operands are packed into panels: X in groups of ENG_GEMM_MR rows, W in groups of
 * ENG_GEMM_NR rows (the last group of each may be shorter); a group of g rows starting at
 * row r0 sits at offset r0 * Kr (Kr = K rounded up to 8) and stores, for each step of 8
 * columns, its g rows' 8 values one after the other; columns K..Kr-1 are zero. Panel buffers
 * hold rows * Kr floats, 32-byte aligned. */
enum { ENG_GEMM_MR = 4, ENG_GEMM_NR = 3 };

static inline int eng_gemm_kr(int K) { return (K + 7) / 8 * 8; }

/* Where row r of a `rows`-row matrix starts in its panels (offset in floats) and the distance
 * between its consecutive 8-column steps. */
static inline size_t eng_gemm_row_at(int r, int rows, int group, int K, size_t *step)
{
    const int r0 = r / group * group, g = rows - r0 < group ? rows - r0 : group;
    *step = (size_t)g * 8;
    return (size_t)r0 * (size_t)eng_gemm_kr(K) + (size_t)(r - r0) * 8;
}

/* Packs row r (K floats) of a matrix of `rows` rows into panels of `group` rows at dst. */
void eng_gemm_pack_row(const float *src, int K, int r, int rows, int group, float *dst);

/* Y[i * ldy + j] for i < M, j < N from packed Xp (M rows, groups of ENG_GEMM_MR) and Wp
 * (N rows, groups of ENG_GEMM_NR). Thread-safe; no allocation. */
void eng_gemm_packed(const float *Xp, int M, const float *Wp, int N, int K, float *Y, size_t ldy);

/* The same product with W given as N rows of K f16 values (row j at W + j * ldw), read in
 * place and converted in registers: the bits of converting W exactly to f32, packing it and
 * calling eng_gemm_packed. For few X rows, where packing W would cost more than the product.
 * Returns 0 (and computes nothing) where the CPU lacks AVX2 + FMA + F16C or the scalar kernel
 * is forced: callers then pack. */
int eng_gemm_f16(const float *Xp, int M, const uint16_t *W, size_t ldw, int N, int K, float *Y, size_t ldy);

/* The kernels, narrowest first. All give the same bits; eng_gemm_force picks one for tests and
 * benchmarks. */
enum { ENG_GEMM_AUTO, ENG_GEMM_SCALAR, ENG_GEMM_AVX2, ENG_GEMM_AVX512 };

/* Which kernel eng_gemm_packed runs: "avx512", "avx2" or "scalar". */
const char *eng_gemm_kernel(void);
/* Test hook: caps the kernel at `level` (ENG_GEMM_AUTO: the CPU's best; process-wide, not
 * thread-safe against running products); returns the previous setting. */
int eng_gemm_force(int level);

#endif
