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
/* Whether eng_gemm_f16 computes on this CPU at the current level. */
int eng_gemm_f16_in_place(void);

/* ---- Q8_0 weights against Q8_0-rounded activations (gemm_q8.c) ----
 * Both operands are 32-element blocks of int8 values with a float scale, so each block's dot
 * product is an exact integer. For K a multiple of 32, nb = K / 32, every element is
 *   acc = +0; for b = 0 .. nb-1 in order: acc = fma((float)isum_b, dx_b * dw_b, acc); y = acc
 * with isum_b = sum of qx * qw over block b (exact in int32), dx_b the activation block's
 * scale (its f16 value, as ggml stores it) and dw_b the weight block's (f16 -> f32). Every kernel
 * (AVX-512 VNNI, AVX2, scalar) and every M computes exactly this, as in eng_gemm_packed.
 *
 * Activations: row r at Xq + r * eng_q8x_stride(K) holds K int8 values, then nb float scales,
 * then nb int32 values -128 * (sum of the block's int8 values) that the VNNI kernel needs.
 * Weights: panels of ENG_Q8_NV rows (the last may be shorter, zero-padded) in the form the
 * current level's kernel reads, per block: for the VNNI and scalar kernels 8 steps of 4 columns,
 * each ENG_Q8_NV rows x 4 bytes (value + 128, as unsigned); for the AVX2 one 16 steps of 2
 * columns, each ENG_Q8_NV rows x 2 int16 values; then ENG_Q8_NV float scales. Pack and multiply
 * at the same level (eng_gemm_force between them would mismatch the forms). */
enum { ENG_Q8_NV = 16 };

size_t eng_q8x_stride(int K);
/* Rounds x (K floats, K % 32 == 0) to Q8_0 blocks as ggml's quantize_row_q8_0 does (scale
 * amax / 127 stored as f16, values rounded to nearest, ties to even) into one row at dst. */
void eng_q8x_quantize_row(const float *x, int K, uint8_t *dst);
/* Bytes of the panels of `rows` weight rows (at the current level: AVX2's are twice as big). */
size_t eng_q8w_bytes(int rows, int K);
/* The most eng_q8w_bytes gives at any level: what a buffer sized once must hold. */
size_t eng_q8w_bytes_max(int rows, int K);
/* Packs `rows` Q8_0 weight rows (row i at src + i * row_bytes) into panels at dst (64-byte
 * aligned, eng_q8w_bytes). */
void eng_q8w_pack(const uint8_t *src, size_t row_bytes, int rows, int K, uint8_t *dst);
/* Y[i * ldy + j] for i < M, j < N. Thread-safe; no allocation. */
void eng_gemm_q8(const uint8_t *Xq, int M, const uint8_t *Wq, int N, int K, float *Y, size_t ldy);
/* The same product with the weights read in place: N Q8_0 rows, row j at W + j * row_bytes.
 * For few X rows, where packing would cost more than the product. Same bits. */
void eng_gemm_q8_rows(const uint8_t *Xq, int M, const uint8_t *W, size_t row_bytes, int N, int K,
                      float *Y, size_t ldy);

/* The kernels, narrowest first. All give the same bits; eng_gemm_force picks one for tests and
 * benchmarks. */
enum { ENG_GEMM_AUTO, ENG_GEMM_SCALAR, ENG_GEMM_AVX2, ENG_GEMM_AVX512 };

/* The kernel level the products run now (never ENG_GEMM_AUTO). */
int eng_gemm_level(void);
/* Which kernel eng_gemm_packed runs: "avx512", "avx2" or "scalar". */
const char *eng_gemm_kernel(void);
/* Test hook: caps the kernel at `level` (ENG_GEMM_AUTO: the CPU's best; process-wide, not
 * thread-safe against running products); returns the previous setting. */
int eng_gemm_force(int level);

#endif
