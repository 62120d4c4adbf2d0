/* quant_internal.h: f16/bf16 conversion, dequantization of ggml tensor rows to f32, and the
 * fast matrix-vector products of the decode path (AVX2/FMA/F16C when the CPU has them,
 * chosen at run time, with a portable scalar fallback). Block layouts follow ggml's
 * (F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q6_K). */
#ifndef KVPUB_QUANT_INTERNAL_H
#define KVPUB_QUANT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

float eng_f16_to_f32(uint16_t h);
uint16_t eng_f32_to_f16(float f);          /* round to nearest even, as F16C does */
float eng_bf16_to_f32(uint16_t h);
void eng_f16_to_f32_row(const uint16_t *src, float *dst, size_t n);
void eng_f32_to_f16_row(const float *src, uint16_t *dst, size_t n);

/* 1 if the type has a dequantizer and a matvec kernel here. */
int eng_type_supported(uint32_t type);

/* Dequantizes n elements (a multiple of the type's block size) of one row. */
void eng_dequant_row(uint32_t type, const void *src, float *dst, int64_t n);

/* y[r] = dot(row r of W, x) for r in [r0, r1). W: nrows rows of ncols elements of `type`,
 * row_bytes apart. x: ncols floats. Kernels may quantize x internally (as ggml does for
 * Q8_0/Q4_K/Q6_K, to Q8); results then match ggml's to within that rounding. ncols must be a
 * multiple of the block size (else y is left untouched). Thread-safe; each call quantizes x
 * itself (O(ncols), on the stack up to 16384 columns), so threads may split [r0, r1). */
void eng_matvec(uint32_t type, const void *W, size_t row_bytes, int64_t ncols,
                const float *x, float *y, int64_t r0, int64_t r1);

/* Quantizes n f32 values (multiple of the block size) into one row of `type`; for kvsynth
 * and tests. Returns the bytes written, 0 for a type it cannot produce. */
size_t eng_quantize_row(uint32_t type, const float *src, void *dst, int64_t n);

/* Which kernels eng_matvec / the row conversions use now: "avx2" or "scalar". */
const char *eng_quant_kernels(void);
/* Test and benchmark hook: on = 1 forces the portable scalar kernels even where the CPU has
 * AVX2 (process-wide, not thread-safe against running kernels); 0 restores the CPU's choice.
 * Returns the previous setting. */
int eng_quant_force_scalar(int on);

#endif
