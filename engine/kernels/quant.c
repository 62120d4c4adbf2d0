/* quant.c: f16/bf16 row conversion, ggml block dequantizers and quantizers, the portable scalar
 * matrix-vector kernels, and the run-time choice between them and quant_avx2.c's. */
#include "engine/kernels/quant_internal.h"
#include "engine/kernels/quant_blocks.h"
#include "engine/gguf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- f16 / bf16 rows ---- */

static int have_avx2(void);

void eng_f16_to_f32_row(const uint16_t *src, float *dst, size_t n)
{
#if defined(__x86_64__)
    if (have_avx2()) {
        eng_f16_to_f32_row_f16c(src, dst, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        dst[i] = base_f16_to_f32(src[i]);
}

void eng_f32_to_f16_row(const float *src, uint16_t *dst, size_t n)
{
#if defined(__x86_64__)
    if (have_avx2()) {
        eng_f32_to_f16_row_f16c(src, dst, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        dst[i] = base_f32_to_f16(src[i]);
}

/* ---- dispatch ---- */

static int g_force_scalar;

int eng_quant_force_scalar(int on)
{
    int prev = g_force_scalar;
    g_force_scalar = on;
    return prev;
}

static int g_cpu_avx2; /* AVX2 + FMA + F16C, set once before main */

__attribute__((constructor)) static void cpu_detect(void)
{
    g_cpu_avx2 = base_cpu_has(BASE_CPU_AVX2 | BASE_CPU_FMA | BASE_CPU_F16C);
}

static int have_avx2(void) { return g_cpu_avx2 && !g_force_scalar; }

const char *eng_quant_kernels(void) { return have_avx2() ? "avx2" : "scalar"; }

/* ---- types ---- */

static int type_layout(uint32_t type, int64_t *blk, size_t *bytes)
{
    switch (type) {
    case GGML_T_F32: *blk = 1; *bytes = 4; return 1;
    case GGML_T_F16: *blk = 1; *bytes = 2; return 1;
    case GGML_T_BF16: *blk = 1; *bytes = 2; return 1;
    case GGML_T_Q4_0: *blk = QB_QK; *bytes = QB_Q4_0_BYTES; return 1;
    case GGML_T_Q8_0: *blk = QB_QK; *bytes = QB_Q8_0_BYTES; return 1;
    case GGML_T_Q4_K: *blk = QB_QK_K; *bytes = QB_Q4_K_BYTES; return 1;
    case GGML_T_Q6_K: *blk = QB_QK_K; *bytes = QB_Q6_K_BYTES; return 1;
    default: return 0;
    }
}

int eng_type_supported(uint32_t type)
{
    int64_t blk;
    size_t bytes;
    return type_layout(type, &blk, &bytes);
}

/* ---- dequantization ---- */

static void dequant_q4_0(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += QB_Q4_0_BYTES, y += QB_QK) {
        float d = base_f16_to_f32(qb_ld16(b));
        for (int j = 0; j < 16; j++) {
            y[j] = (float)((b[2 + j] & 0xf) - 8) * d;
            y[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
        }
    }
}

static void dequant_q8_0(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += QB_Q8_0_BYTES, y += QB_QK) {
        float d = base_f16_to_f32(qb_ld16(b));
        for (int j = 0; j < 32; j++)
            y[j] = (float)(int8_t)b[2 + j] * d;
    }
}

static void dequant_q4_k(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += QB_Q4_K_BYTES) {
        float d = base_f16_to_f32(qb_ld16(b));
        float dmin = base_f16_to_f32(qb_ld16(b + 2));
        uint8_t sc[8], mn[8];
        qb_q4k_scale_min(b + 4, sc, mn);
        const uint8_t *qs = b + 16;
        /* each 32 bytes of qs: sub-block 2g in the low nibbles, 2g+1 in the high ones */
        for (int g = 0; g < 4; g++, qs += 32) {
            float d0 = d * sc[2 * g], m0 = dmin * mn[2 * g];
            float d1 = d * sc[2 * g + 1], m1 = dmin * mn[2 * g + 1];
            for (int l = 0; l < 32; l++)
                *y++ = d0 * (float)(qs[l] & 0xf) - m0;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)(qs[l] >> 4) - m1;
        }
    }
}

/* Q6_K: the values q - 32 (-32..31) of one super-block. Each 128-element half h uses 64 bytes
 * of ql and 32 of qh; within it, element 32k + l (k = 0..3, l = 0..31) takes the low (k < 2)
 * or high (k >= 2) nibble of ql[64h + l + 32 (k & 1)] and bits 2k..2k+1 of qh[32h + l]. */
static void q6k_unpack(const uint8_t *b, int8_t v[QB_QK_K])
{
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b + 64 * h, *qh = b + QB_Q6_K_QH + 32 * h;
        int8_t *o = v + 128 * h;
        for (int l = 0; l < 32; l++) {
            o[l] = (int8_t)(((ql[l] & 0xf) | ((qh[l] & 3) << 4)) - 32);
            o[l + 32] = (int8_t)(((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32);
            o[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            o[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
}

static void dequant_q6_k(const uint8_t *b, float *y, int64_t nb)
{
    int8_t v[QB_QK_K];
    for (int64_t i = 0; i < nb; i++, b += QB_Q6_K_BYTES, y += QB_QK_K) {
        float d = base_f16_to_f32(qb_ld16(b + QB_Q6_K_D));
        const int8_t *sc = (const int8_t *)(b + QB_Q6_K_SC);
        q6k_unpack(b, v);
        for (int j = 0; j < 16; j++) {
            float ds = d * (float)sc[j];
            for (int l = 0; l < 16; l++)
                y[16 * j + l] = ds * (float)v[16 * j + l];
        }
    }
}

void eng_dequant_row(uint32_t type, const void *src, float *dst, int64_t n)
{
    const uint8_t *b = src;
    switch (type) {
    case GGML_T_F32:
        memcpy(dst, src, (size_t)n * 4);
        break;
    case GGML_T_F16:
        if (((uintptr_t)src & 1) == 0) { /* GGUF rows are aligned: F16C when available */
            eng_f16_to_f32_row(src, dst, (size_t)n);
            break;
        }
        for (int64_t i = 0; i < n; i++)
            dst[i] = base_f16_to_f32(qb_ld16(b + 2 * i));
        break;
    case GGML_T_BF16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = base_bf16_to_f32(qb_ld16(b + 2 * i));
        break;
    case GGML_T_Q4_0: dequant_q4_0(b, dst, n / QB_QK); break;
    case GGML_T_Q8_0:
#if defined(__x86_64__)
        if (have_avx2()) {
            eng_dequant_q8_0_avx2(b, dst, n);
            break;
        }
#endif
        dequant_q8_0(b, dst, n / QB_QK);
        break;
    case GGML_T_Q4_K: dequant_q4_k(b, dst, n / QB_QK_K); break;
    case GGML_T_Q6_K: dequant_q6_k(b, dst, n / QB_QK_K); break;
    default: break;
    }
}

int eng_dequant_row_panel(uint32_t type, const void *src, float *dst, int64_t n, size_t stride)
{
#if defined(__x86_64__)
    if (have_avx2() && n % 8 == 0) {
        if (type == GGML_T_Q8_0 && n % QB_QK == 0) {
            eng_dequant_q8_0_panel_avx2(src, dst, n, stride);
            return 1;
        }
        if (type == GGML_T_F16) {
            eng_f16_panel_f16c(src, dst, n, stride);
            return 1;
        }
    }
#endif
    (void)type, (void)src, (void)dst, (void)n, (void)stride;
    return 0;
}

/* ---- quantization (simple absmax / min-max rounding; valid blocks, not optimal ones) ---- */

static float absmax(const float *x, int n)
{
    float m = 0;
    for (int i = 0; i < n; i++)
        m = fmaxf(m, fabsf(x[i]));
    return m;
}

/* The smallest f16 >= v (v >= 0, finite), so scales rounded to f16 never clip. */
static uint16_t f16_ceil(float v)
{
    uint16_t h = base_f32_to_f16(v);
    if (base_f16_to_f32(h) < v && h < 0x7bff)
        h++;
    return h;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static void quant_q8_0(const float *x, uint8_t *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QB_QK, b += QB_Q8_0_BYTES) {
        uint16_t dh = f16_ceil(absmax(x, QB_QK) / 127.0f);
        float d = base_f16_to_f32(dh);
        float id = d > 0 ? 1.0f / d : 0;
        qb_st16(b, dh);
        for (int j = 0; j < QB_QK; j++)
            b[2 + j] = (uint8_t)(int8_t)clampi((int)lrintf(x[j] * id), -127, 127);
    }
}

static void quant_q4_0(const float *x, uint8_t *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QB_QK, b += QB_Q4_0_BYTES) {
        /* the value of largest magnitude maps to -8 (the sign of d follows it), the full
         * range of the asymmetric 4-bit code */
        float mx = 0;
        for (int j = 0; j < QB_QK; j++)
            if (fabsf(x[j]) > fabsf(mx))
                mx = x[j];
        uint16_t dh = base_f32_to_f16(mx / -8.0f);
        float d = base_f16_to_f32(dh);
        float id = d != 0 ? 1.0f / d : 0;
        qb_st16(b, dh);
        for (int j = 0; j < 16; j++) {
            int q0 = clampi((int)lrintf(x[j] * id) + 8, 0, 15);
            int q1 = clampi((int)lrintf(x[j + 16] * id) + 8, 0, 15);
            b[2 + j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quant_q4_k(const float *x, uint8_t *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QB_QK_K, b += QB_Q4_K_BYTES) {
        /* per sub-block: x ~= scale * q - min with q in 0..15 and min >= 0 (0 is covered) */
        float scale[8], mins[8], maxscale = 0, maxmin = 0;
        for (int j = 0; j < 8; j++) {
            float lo = 0, hi = 0;
            for (int l = 0; l < 32; l++) {
                lo = fminf(lo, x[32 * j + l]);
                hi = fmaxf(hi, x[32 * j + l]);
            }
            scale[j] = (hi - lo) / 15.0f;
            mins[j] = -lo;
            maxscale = fmaxf(maxscale, scale[j]);
            maxmin = fmaxf(maxmin, mins[j]);
        }
        uint16_t dh = f16_ceil(maxscale / 63.0f), mh = f16_ceil(maxmin / 63.0f);
        float d = base_f16_to_f32(dh), dmin = base_f16_to_f32(mh);
        uint8_t ls[8], lm[8];
        for (int j = 0; j < 8; j++) {
            /* rounded up so that the 6-bit scale and min still cover the sub-block's range */
            ls[j] = (uint8_t)(d > 0 ? clampi((int)ceilf(scale[j] / d), 0, 63) : 0);
            lm[j] = (uint8_t)(dmin > 0 ? clampi((int)ceilf(mins[j] / dmin), 0, 63) : 0);
        }
        qb_st16(b, dh);
        qb_st16(b + 2, mh);
        uint8_t *s = b + 4;
        for (int j = 0; j < 4; j++) {
            s[j] = (uint8_t)(ls[j] | ((ls[j + 4] >> 4) << 6));
            s[j + 4] = (uint8_t)(lm[j] | ((lm[j + 4] >> 4) << 6));
            s[j + 8] = (uint8_t)((ls[j + 4] & 0xf) | ((lm[j + 4] & 0xf) << 4));
        }
        uint8_t *qs = b + 16;
        memset(qs, 0, 128);
        for (int j = 0; j < 8; j++) {
            float sd = d * ls[j], sm = dmin * lm[j];
            float id = sd > 0 ? 1.0f / sd : 0;
            for (int l = 0; l < 32; l++) {
                int q = clampi((int)lrintf((x[32 * j + l] + sm) * id), 0, 15);
                qs[32 * (j / 2) + l] |= (uint8_t)(q << (4 * (j & 1)));
            }
        }
    }
}

static void quant_q6_k(const float *x, uint8_t *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QB_QK_K, b += QB_Q6_K_BYTES) {
        /* per sub-block of 16: x ~= d * sc * (q - 32), symmetric in -31..31 */
        float scale[16], maxscale = 0;
        for (int j = 0; j < 16; j++) {
            scale[j] = absmax(x + 16 * j, 16) / 31.0f;
            maxscale = fmaxf(maxscale, scale[j]);
        }
        uint16_t dh = f16_ceil(maxscale / 127.0f);
        float d = base_f16_to_f32(dh);
        memset(b, 0, QB_Q6_K_BYTES);
        qb_st16(b + QB_Q6_K_D, dh);
        int8_t *sc = (int8_t *)(b + QB_Q6_K_SC);
        for (int j = 0; j < 16; j++)
            sc[j] = (int8_t)(d > 0 ? clampi((int)ceilf(scale[j] / d), 0, 127) : 0);
        for (int e = 0; e < QB_QK_K; e++) {
            float sd = d * sc[e >> 4];
            int q = sd > 0 ? clampi((int)lrintf(x[e] / sd), -32, 31) + 32 : 32;
            int h = e >> 7, k = (e >> 5) & 3, l = e & 31;
            b[64 * h + l + 32 * (k & 1)] |= (uint8_t)((q & 0xf) << (k < 2 ? 0 : 4));
            b[QB_Q6_K_QH + 32 * h + l] |= (uint8_t)((q >> 4) << (2 * k));
        }
    }
}

size_t eng_quantize_row(uint32_t type, const float *src, void *dst, int64_t n)
{
    int64_t blk;
    size_t bytes;
    if (!type_layout(type, &blk, &bytes) || n < 0 || n % blk != 0)
        return 0;
    uint8_t *b = dst;
    switch (type) {
    case GGML_T_F32: memcpy(dst, src, (size_t)n * 4); break;
    case GGML_T_F16:
        for (int64_t i = 0; i < n; i++)
            qb_st16(b + 2 * i, base_f32_to_f16(src[i]));
        break;
    case GGML_T_BF16:
        for (int64_t i = 0; i < n; i++)
            qb_st16(b + 2 * i, base_f32_to_bf16(src[i]));
        break;
    case GGML_T_Q4_0: quant_q4_0(src, b, n / blk); break;
    case GGML_T_Q8_0: quant_q8_0(src, b, n / blk); break;
    case GGML_T_Q4_K: quant_q4_k(src, b, n / blk); break;
    case GGML_T_Q6_K: quant_q6_k(src, b, n / blk); break;
    default: return 0;
    }
    return (size_t)(n / blk) * bytes;
}

/* ---- activations to Q8 ---- */

void eng_xq_quantize(const float *x, int64_t n, int blk, eng_xq *out)
{
    out->nb = n / blk;
    for (int64_t i = 0; i < out->nb; i++) {
        const float *xb = x + i * blk;
        int8_t *q = out->q + i * blk;
        float d = absmax(xb, blk) / 127.0f;
        float id = d > 0 ? 1.0f / d : 0;
        out->d[i] = d;
        for (int j = 0; j < blk; j++)
            q[j] = (int8_t)lrintf(xb[j] * id); /* |x * id| <= 127 up to rounding */
        if (out->dsum) {
            int sum = 0;
            for (int j = 0; j < blk; j++)
                sum += q[j];
            out->dsum[i] = d * (float)sum;
        }
        if (out->bsum) {
            for (int j = 0; j < blk / 16; j++) {
                int s = 0;
                for (int l = 0; l < 16; l++)
                    s += q[16 * j + l];
                out->bsum[i * (blk / 16) + j] = (int16_t)s;
            }
        }
    }
}

/* ---- scalar matvec kernels ---- */

static void mv_f32(const uint8_t *W, size_t rb, int64_t ncols, const float *x, const eng_xq *xq,
                   float *y, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = W + (size_t)r * rb;
        float s = 0;
        for (int64_t i = 0; i < ncols; i++) {
            float v;
            memcpy(&v, w + 4 * i, 4);
            s += v * x[i];
        }
        y[r] = s;
    }
}

static void mv_f16(const uint8_t *W, size_t rb, int64_t ncols, const float *x, const eng_xq *xq,
                   float *y, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = W + (size_t)r * rb;
        float s = 0;
        for (int64_t i = 0; i < ncols; i++)
            s += base_f16_to_f32(qb_ld16(w + 2 * i)) * x[i];
        y[r] = s;
    }
}

static void mv_bf16(const uint8_t *W, size_t rb, int64_t ncols, const float *x, const eng_xq *xq,
                    float *y, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = W + (size_t)r * rb;
        float s = 0;
        for (int64_t i = 0; i < ncols; i++)
            s += base_bf16_to_f32(qb_ld16(w + 2 * i)) * x[i];
        y[r] = s;
    }
}

static void mv_q8_0(const uint8_t *W, size_t rb, int64_t ncols, const float *x, const eng_xq *xq,
                    float *y, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = W + (size_t)r * rb;
        float s = 0;
        for (int64_t i = 0; i < xq->nb; i++, b += QB_Q8_0_BYTES) {
            const int8_t *q = xq->q + i * QB_QK;
            int sum = 0;
            for (int j = 0; j < QB_QK; j++)
                sum += (int8_t)b[2 + j] * q[j];
            s += base_f16_to_f32(qb_ld16(b)) * xq->d[i] * (float)sum;
        }
        y[r] = s;
    }
}

static void mv_q4_0(const uint8_t *W, size_t rb, int64_t ncols, const float *x, const eng_xq *xq,
                    float *y, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = W + (size_t)r * rb;
        float s = 0;
        for (int64_t i = 0; i < xq->nb; i++, b += QB_Q4_0_BYTES) {
            const int8_t *q = xq->q + i * QB_QK;
            int sum = 0;
            for (int j = 0; j < 16; j++)
                sum += ((b[2 + j] & 0xf) - 8) * q[j] + ((b[2 + j] >> 4) - 8) * q[j + 16];
            s += base_f16_to_f32(qb_ld16(b)) * xq->d[i] * (float)sum;
        }
        y[r] = s;
    }
}

static void mv_q4_k(const uint8_t *W, size_t rb, int64_t ncols, const float *x, const eng_xq *xq,
                    float *y, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = W + (size_t)r * rb;
        float s = 0;
        for (int64_t i = 0; i < xq->nb; i++, b += QB_Q4_K_BYTES) {
            uint8_t sc[8], mn[8];
            qb_q4k_scale_min(b + 4, sc, mn);
            const int8_t *q = xq->q + i * QB_QK_K;
            const int16_t *bs = xq->bsum + i * 16;
            const uint8_t *qs = b + 16;
            int sumq = 0, summ = 0;
            for (int j = 0; j < 8; j++) {
                int dot = 0, shift = 4 * (j & 1);
                for (int l = 0; l < 32; l++)
                    dot += ((qs[32 * (j / 2) + l] >> shift) & 0xf) * q[32 * j + l];
                sumq += sc[j] * dot;
                summ += mn[j] * (bs[2 * j] + bs[2 * j + 1]);
            }
            s += xq->d[i] * (base_f16_to_f32(qb_ld16(b)) * (float)sumq -
                             base_f16_to_f32(qb_ld16(b + 2)) * (float)summ);
        }
        y[r] = s;
    }
}

static void mv_q6_k(const uint8_t *W, size_t rb, int64_t ncols, const float *x, const eng_xq *xq,
                    float *y, int64_t r0, int64_t r1)
{
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = W + (size_t)r * rb;
        float s = 0;
        for (int64_t i = 0; i < xq->nb; i++, b += QB_Q6_K_BYTES) {
            const int8_t *sc = (const int8_t *)(b + QB_Q6_K_SC);
            const int8_t *q = xq->q + i * QB_QK_K;
            int8_t v[QB_QK_K];
            q6k_unpack(b, v);
            int sum = 0;
            for (int j = 0; j < 16; j++) {
                int dot = 0;
                for (int l = 0; l < 16; l++)
                    dot += v[16 * j + l] * q[16 * j + l];
                sum += sc[j] * dot;
            }
            s += xq->d[i] * base_f16_to_f32(qb_ld16(b + QB_Q6_K_D)) * (float)sum;
        }
        y[r] = s;
    }
}

/* ---- matvec entry ---- */

/* Columns whose Q8 copy of x fits on the stack (about 20 KB); longer rows allocate. */
enum { XQ_STACK_COLS = 16384 };

/* Last resort when the Q8 scratch cannot be allocated: dequantize and dot in f32. */
static void mv_dequant(uint32_t type, const uint8_t *W, size_t rb, int64_t ncols, const float *x,
                       float *y, int64_t r0, int64_t r1)
{
    float buf[QB_QK_K];
    int64_t blk;
    size_t bytes;
    type_layout(type, &blk, &bytes);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = W + (size_t)r * rb;
        float s = 0;
        for (int64_t c = 0; c < ncols; c += blk) {
            eng_dequant_row(type, w + (size_t)(c / blk) * bytes, buf, blk);
            for (int j = 0; j < blk; j++)
                s += buf[j] * x[c + j];
        }
        y[r] = s;
    }
}

void eng_matvec(uint32_t type, const void *W, size_t row_bytes, int64_t ncols, const float *x,
                float *y, int64_t r0, int64_t r1)
{
    int avx2 = have_avx2();
    eng_mv_fn fn = NULL;
    int qblk = 0; /* Q8 block of x the kernel wants, 0 = reads x as floats */
    switch (type) {
    case GGML_T_F32: fn = mv_f32; break;
    case GGML_T_F16: fn = mv_f16; break;
    case GGML_T_BF16: fn = mv_bf16; break;
    case GGML_T_Q8_0: fn = mv_q8_0; qblk = QB_QK; break;
    case GGML_T_Q4_0: fn = mv_q4_0; qblk = QB_QK; break;
    case GGML_T_Q4_K: fn = mv_q4_k; qblk = QB_QK_K; break;
    case GGML_T_Q6_K: fn = mv_q6_k; qblk = QB_QK_K; break;
    default: return;
    }
#if defined(__x86_64__)
    if (avx2) {
        switch (type) {
        case GGML_T_F32: fn = eng_mv_f32_avx2; break;
        case GGML_T_F16: fn = eng_mv_f16_avx2; break;
        case GGML_T_BF16: fn = eng_mv_bf16_avx2; break;
        case GGML_T_Q8_0: fn = eng_mv_q8_0_avx2; break;
        case GGML_T_Q4_0: fn = eng_mv_q4_0_avx2; break;
        case GGML_T_Q4_K: fn = eng_mv_q4_k_avx2; break;
        case GGML_T_Q6_K: fn = eng_mv_q6_k_avx2; break;
        default: break;
        }
    }
#else
    (void)avx2;
#endif
    if (r1 <= r0)
        return;
    if (!qblk) {
        fn(W, row_bytes, ncols, x, NULL, y, r0, r1);
        return;
    }
    if (ncols % qblk != 0)
        return;
    _Alignas(32) int8_t q_stack[XQ_STACK_COLS];
    float d_stack[XQ_STACK_COLS / QB_QK];
    int16_t bs_stack[XQ_STACK_COLS / 16];
    float ds_stack[XQ_STACK_COLS / QB_QK];
    eng_xq xq = {.d = d_stack, .q = q_stack, .bsum = qblk == QB_QK_K ? bs_stack : NULL,
                 .dsum = qblk == QB_QK ? ds_stack : NULL};
    void *heap = NULL;
    if (ncols > XQ_STACK_COLS) {
        /* q (32-aligned) | d | dsum | bsum */
        size_t n = (size_t)ncols;
        heap = aligned_alloc(32, (n + 2 * (n / QB_QK) * sizeof(float) + n / 16 * sizeof(int16_t) +
                                  31) & ~(size_t)31);
        if (!heap) {
            mv_dequant(type, W, row_bytes, ncols, x, y, r0, r1);
            return;
        }
        xq.q = heap;
        xq.d = (float *)((char *)heap + n);
        float *ds = xq.d + n / QB_QK;
        xq.dsum = qblk == QB_QK ? ds : NULL;
        xq.bsum = qblk == QB_QK_K ? (int16_t *)(ds + n / QB_QK) : NULL;
    }
#if defined(__x86_64__)
    if (avx2)
        eng_xq_quantize_avx2(x, ncols, qblk, &xq);
    else
#endif
        eng_xq_quantize(x, ncols, qblk, &xq);
    fn(W, row_bytes, ncols, x, &xq, y, r0, r1);
    free(heap);
}
