/* quant_blocks.h: private to engine/kernels/quant*.c (and forward.c's packing hook at the end): byte offsets of ggml's block formats, the
 * Q8 activation blocks the integer kernels consume, and the per-ISA kernel entry points. */
#ifndef KVPUB_QUANT_BLOCKS_H
#define KVPUB_QUANT_BLOCKS_H

#include "base/base.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Blocks are addressed as bytes, never as C structs: rows sit at whatever offsets the GGUF
 * file gives, and a 2-byte f16 field may be unaligned for a caller's buffer. */
enum {
    QB_QK = 32,            /* elements per Q4_0 / Q8_0 block */
    QB_QK_K = 256,         /* elements per K-quant super-block */
    QB_Q4_0_BYTES = 18,    /* f16 d, 16 bytes of nibbles */
    QB_Q4_0_QS = 2,
    QB_Q4_1_BYTES = 20,    /* f16 d, f16 m, 16 bytes of nibbles */
    QB_Q4_1_M = 2,
    QB_Q4_1_QS = 4,
    QB_Q5_0_BYTES = 22,    /* f16 d, 4 bytes of high bits, 16 bytes of nibbles */
    QB_Q5_0_QH = 2,
    QB_Q5_0_QS = 6,
    QB_Q5_1_BYTES = 24,    /* f16 d, f16 m, 4 bytes of high bits, 16 bytes of nibbles */
    QB_Q5_1_M = 2,
    QB_Q5_1_QH = 4,
    QB_Q5_1_QS = 8,
    QB_Q8_0_BYTES = 34,    /* f16 d, 32 int8 */
    QB_Q2_K_BYTES = 84,    /* 16 bytes 4-bit scales/mins, 64 bytes 2-bit q, f16 d, f16 dmin */
    QB_Q2_K_QS = 16,
    QB_Q2_K_D = 80,
    QB_Q3_K_BYTES = 110,   /* 32 bytes hmask, 64 bytes 2-bit q, 12 bytes 6-bit scales, f16 d */
    QB_Q3_K_QS = 32,
    QB_Q3_K_SC = 96,
    QB_Q3_K_D = 108,
    QB_Q4_K_BYTES = 144,   /* f16 d, f16 dmin, 12 bytes 6-bit scales/mins, 128 bytes nibbles */
    QB_Q5_K_BYTES = 176,   /* as Q4_K, with 32 bytes of high bits before the nibbles */
    QB_Q5_K_QH = 16,
    QB_Q5_K_QS = 48,
    QB_Q6_K_BYTES = 210,   /* 128 bytes ql, 64 bytes qh, 16 int8 scales, f16 d */
    QB_Q6_K_QH = 128,      /* offsets inside a Q6_K block */
    QB_Q6_K_SC = 192,
    QB_Q6_K_D = 208,
};

static inline uint16_t qb_ld16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline void qb_st16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

/* Q4_K: unpacks the 12 bytes of 6-bit scales and mins of 8 sub-blocks of 32. Bytes 0-3 hold
 * scales 0-3 in their low 6 bits, bytes 4-7 mins 0-3; sub-blocks 4-7 keep their low 4 bits in
 * bytes 8-11 (scale low nibble, min high nibble) and their top 2 bits in the spare top bits
 * of bytes 0-3 (scales) and 4-7 (mins). Done on 32-bit words, as 4 words of 4 bytes (scales
 * 0-7, then mins 0-7; little-endian byte order): this runs once per 256 weights in matvec. */
static inline void qb_q4k_scale_min_words(const uint8_t *s, uint32_t w[4])
{
    uint32_t a, b, c;
    memcpy(&a, s, 4);
    memcpy(&b, s + 4, 4);
    memcpy(&c, s + 8, 4);
    w[0] = a & 0x3f3f3f3fu;                                               /* scales 0-3 */
    w[1] = (c & 0x0f0f0f0fu) | (((a >> 6) & 0x03030303u) << 4);           /* scales 4-7 */
    w[2] = b & 0x3f3f3f3fu;                                               /* mins 0-3 */
    w[3] = ((c >> 4) & 0x0f0f0f0fu) | (((b >> 6) & 0x03030303u) << 4);    /* mins 4-7 */
}

static inline void qb_q4k_scale_min(const uint8_t *s, uint8_t sc[8], uint8_t mn[8])
{
    uint32_t w[4];
    qb_q4k_scale_min_words(s, w);
    memcpy(sc, w, 8);
    memcpy(mn, w + 2, 8);
}

/* Q3_K: the 16 6-bit scales (stored + 32) from 12 bytes, as 4 words of 4 bytes. Scales 0-7
 * keep their low 4 bits in the low nibbles of bytes 0-7, scales 8-15 in the high nibbles; the
 * top 2 bits of scale 4w + k (w = 0..3) are bits 2w..2w+1 of byte 8 + k. */
static inline void qb_q3k_scale_words(const uint8_t *s, uint32_t w[4])
{
    uint32_t a, b, c;
    memcpy(&a, s, 4);
    memcpy(&b, s + 4, 4);
    memcpy(&c, s + 8, 4);
    w[0] = (a & 0x0f0f0f0fu) | ((c & 0x03030303u) << 4);
    w[1] = (b & 0x0f0f0f0fu) | (((c >> 2) & 0x03030303u) << 4);
    w[2] = ((a >> 4) & 0x0f0f0f0fu) | (((c >> 4) & 0x03030303u) << 4);
    w[3] = ((b >> 4) & 0x0f0f0f0fu) | (((c >> 6) & 0x03030303u) << 4);
}

/* ---- helpers of the quantizers (quant.c, quant_k.c) ---- */

static inline float qb_absmax(const float *x, int n)
{
    float m = 0;
    for (int i = 0; i < n; i++)
        m = fmaxf(m, fabsf(x[i]));
    return m;
}

/* The smallest f16 >= v (v >= 0, finite), so scales rounded to f16 never clip. */
static inline uint16_t qb_f16_ceil(float v)
{
    uint16_t h = base_f32_to_f16(v);
    if (base_f16_to_f32(h) < v && h < 0x7bff)
        h++;
    return h;
}

static inline int qb_clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* x quantized to int8 blocks (ggml's q8_0 for blk 32, q8_K for blk 256) so that weight blocks
 * can be dotted in integers. q is 32-byte aligned. */
typedef struct eng_xq {
    int64_t nb;        /* blocks */
    float *d;          /* (nb) scale: x ~= d * q */
    int8_t *q;         /* (nb * blk) */
    int16_t *bsum;     /* (nb * blk / 16) sums of 16 consecutive q, or NULL (K-quants use it) */
    float *dsum;       /* (nb) d * sum of the block's q, or NULL (Q4_0 uses it) */
} eng_xq;

/* n must be a multiple of 32 (resp. 256); the arrays in out must be large enough. */
void eng_xq_quantize(const float *x, int64_t n, int blk, eng_xq *out);

/* Kernel signature: y[r] = dot(row r, x) for r in [r0, r1). Float kernels read x; integer
 * kernels read xq. A kernel may serve several types of one family: type says which. */
typedef void eng_mv_kernel(uint32_t type, const uint8_t *W, size_t row_bytes, int64_t ncols,
                           const float *x, const eng_xq *xq, float *y, int64_t r0, int64_t r1);
typedef eng_mv_kernel *eng_mv_fn;

#if defined(__x86_64__)
/* quant_avx2.c, needing AVX2 + FMA + F16C at run time: the matvec kernel of the float and
 * 32-element block types (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1), and in quant_k_avx2.c
 * that of the K-quants. */
eng_mv_kernel eng_mv_avx2, eng_mv_k_avx2;
void eng_xq_quantize_avx2(const float *x, int64_t n, int blk, eng_xq *out);
void eng_f16_to_f32_row_f16c(const uint16_t *src, float *dst, size_t n);
void eng_f32_to_f16_row_f16c(const float *src, uint16_t *dst, size_t n);
void eng_dequant_q8_0_avx2(const uint8_t *src, float *dst, int64_t n);
void eng_dequant_q8_0_panel_avx2(const uint8_t *src, float *dst, int64_t n, size_t stride);
void eng_f16_panel_f16c(const uint8_t *src, float *dst, int64_t n, size_t stride);
/* K-quant rows (n a multiple of 256) into a GEMM panel, the values of the scalar
 * dequantizer. */
void eng_dequant_q2_k_panel_avx2(const uint8_t *src, float *dst, int64_t n, size_t stride);
void eng_dequant_q3_k_panel_avx2(const uint8_t *src, float *dst, int64_t n, size_t stride);
void eng_dequant_q4_k_panel_avx2(const uint8_t *src, float *dst, int64_t n, size_t stride);
void eng_dequant_q5_k_panel_avx2(const uint8_t *src, float *dst, int64_t n, size_t stride);
void eng_dequant_q6_k_panel_avx2(const uint8_t *src, float *dst, int64_t n, size_t stride);
/* quant_k_avx512.c, needing AVX-512 (F, DQ, BW, VL) and VNNI too: a Q3_K kernel (only that
 * type) giving eng_mv_k_avx2's floats in fewer instructions. */
eng_mv_kernel eng_mv_q3_k_avx512vnni;
#endif

/* quant_k.c: the K-quant super-block types (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K). Each returns 0
 * for a type outside that family (doing nothing), 1 otherwise; nb counts super-blocks. */
int eng_kq_dequant(uint32_t type, const uint8_t *b, float *y, int64_t nb);
int eng_kq_quantize(uint32_t type, const float *x, uint8_t *b, int64_t nb);
/* The portable matvec kernel of every K-quant type. */
eng_mv_kernel eng_kq_mv;

/* For engine/forward.c's GEMM packing: dequantizes n elements (a multiple of 8) of one row
 * to exactly the values eng_dequant_row gives, element k at dst[(k / 8) * stride + k % 8].
 * Returns 0 (writing nothing) for types without such a kernel here; the caller then
 * dequantizes a row and copies it. */
int eng_dequant_row_panel(uint32_t type, const void *src, float *dst, int64_t n, size_t stride);

#endif
