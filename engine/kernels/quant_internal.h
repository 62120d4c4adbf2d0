/* quant_internal.h: f16/bf16 row conversion and which tensor types have kernels, inside
 * engine/ (the row dequantizer itself is public, in gguf.h). The decode path's matrix-vector products (AVX2/FMA/F16C when the CPU has them,
 * chosen at run time, with a portable scalar fallback) are declared in engine.h for bench/,
 * the row quantizer and dequantizer in gguf.h. Block layouts follow ggml's (F32, F16, BF16,
 * Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K). */
#ifndef KVPUB_QUANT_INTERNAL_H
#define KVPUB_QUANT_INTERNAL_H

#include "base/base.h"
#include "engine/engine.h"
#include "engine/gguf.h"

#include <stddef.h>
#include <stdint.h>

void eng_f16_to_f32_row(const uint16_t *src, float *dst, size_t n);
void eng_f32_to_f16_row(const float *src, uint16_t *dst, size_t n);

/* 1 if the type has a dequantizer and a matvec kernel here. */
int eng_type_supported(uint32_t type);


#endif
