/* quant_k.c: ggml's K-quant super-block types (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K; 256 elements per
 * block): dequantizers that give ggml's dequantize_row_* floats bit for bit, quantizers for the
 * writers, and the portable matvec kernels. quant.c dispatches to them. */
#include "engine/kernels/quant_internal.h"
#include "engine/kernels/quant_blocks.h"
#include "engine/gguf.h"

#include <math.h>
#include <string.h>

static float f16at(const uint8_t *p) { return base_f16_to_f32(qb_ld16(p)); }

/* ---- every K-quant through one unpacked form ---- */

/* A super-block as the dequantizer and the portable kernel read it: 256 integer values, a
 * scale and a min per 16 elements (Q4_K/Q5_K's per-32 ones repeated; Q3_K and Q6_K have no
 * mins), d and dmin (0 without mins). Element e is d * sc[e / 16] * v[e] - dmin * mn[e / 16].
 * The unpackers walk the bytes in order (l innermost) so that the compiler vectorizes them:
 * the prefill dequantizes every weight row through here. */
typedef struct kq_vals {
    int8_t v[QB_QK_K];
    int sc[16], mn[16];
    float d, dmin;
} kq_vals;

/* Q2_K: element 128h + 32k + l is bits 2k..2k+1 of qs[32h + l]; byte j of the scales holds
 * sub-block j's scale (low nibble) and min (high nibble). */
static void q2k_unpack(const uint8_t *b, kq_vals *u)
{
    const uint8_t *qs = b + QB_Q2_K_QS;
    for (int j = 0; j < 16; j++) {
        u->sc[j] = b[j] & 0xf;
        u->mn[j] = b[j] >> 4;
    }
    for (int h = 0; h < 2; h++)
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l++)
                u->v[128 * h + 32 * k + l] = (int8_t)((qs[32 * h + l] >> (2 * k)) & 3);
    u->d = f16at(b + QB_Q2_K_D);
    u->dmin = f16at(b + QB_Q2_K_D + 2);
}

/* Q3_K: the low 2 bits as Q2_K's; bit 4h + k of hmask[l] set means +4, so the value is
 * low - 4 when it is clear (-4..3). Scales are stored + 32 (qb_q3k_scale_words). */
static void q3k_unpack(const uint8_t *b, kq_vals *u)
{
    const uint8_t *qs = b + QB_Q3_K_QS;
    uint32_t w[4];
    uint8_t s[16];
    qb_q3k_scale_words(b + QB_Q3_K_SC, w);
    memcpy(s, w, 16);
    for (int j = 0; j < 16; j++) {
        u->sc[j] = s[j] - 32;
        u->mn[j] = 0;
    }
    for (int h = 0; h < 2; h++)
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l++)
                u->v[128 * h + 32 * k + l] = (int8_t)(((qs[32 * h + l] >> (2 * k)) & 3) +
                                                      4 * ((b[l] >> (4 * h + k)) & 1) - 4);
    u->d = f16at(b + QB_Q3_K_D);
    u->dmin = 0;
}

/* Q4_K (qh NULL) and Q5_K: each 32 bytes of qs hold sub-block 2g in their low nibbles, 2g+1
 * in the high ones; bit j of qh[l] is the fifth bit of element 32j + l. */
static inline __attribute__((always_inline)) void q45k_unpack(const uint8_t *b, const uint8_t *qh,
                                                            const uint8_t *qs, kq_vals *u)
{
    uint8_t sc[8], mn[8];
    qb_q4k_scale_min(b + 4, sc, mn);
    for (int j = 0; j < 16; j++) {
        u->sc[j] = sc[j / 2];
        u->mn[j] = mn[j / 2];
    }
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++) {
            int h = qh ? qh[l] >> (2 * g) : 0;
            u->v[64 * g + l] = (int8_t)((qs[32 * g + l] & 0xf) | (h & 1) << 4);
            u->v[64 * g + 32 + l] = (int8_t)((qs[32 * g + l] >> 4) | (h & 2) << 3);
        }
    u->d = f16at(b);
    u->dmin = f16at(b + 2);
}

static void q4k_unpack(const uint8_t *b, kq_vals *u) { q45k_unpack(b, NULL, b + 16, u); }

static void q5k_unpack(const uint8_t *b, kq_vals *u) { q45k_unpack(b, b + QB_Q5_K_QH, b + QB_Q5_K_QS, u); }

/* Q6_K: values q - 32 (-32..31), int8 scales, no mins. Each 128-element half h uses 64 bytes
 * of ql and 32 of qh; within it, element 32k + l (k = 0..3, l = 0..31) takes the low (k < 2)
 * or high (k >= 2) nibble of ql[64h + l + 32 (k & 1)] and bits 2k..2k+1 of qh[32h + l]. */
static void q6k_unpack(const uint8_t *b, kq_vals *u)
{
    for (int j = 0; j < 16; j++) {
        u->sc[j] = (int8_t)b[QB_Q6_K_SC + j];
        u->mn[j] = 0;
    }
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b + 64 * h, *qh = b + QB_Q6_K_QH + 32 * h;
        int8_t *o = u->v + 128 * h;
        for (int l = 0; l < 32; l++) {
            o[l] = (int8_t)(((ql[l] & 0xf) | ((qh[l] & 3) << 4)) - 32);
            o[l + 32] = (int8_t)(((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32);
            o[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            o[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
    u->d = f16at(b + QB_Q6_K_D);
    u->dmin = 0;
}

typedef void (*kq_unpack_fn)(const uint8_t *b, kq_vals *u);

static kq_unpack_fn kq_unpacker(uint32_t type, size_t *bytes)
{
    switch (type) {
    case GGML_T_Q2_K: *bytes = QB_Q2_K_BYTES; return q2k_unpack;
    case GGML_T_Q3_K: *bytes = QB_Q3_K_BYTES; return q3k_unpack;
    case GGML_T_Q4_K: *bytes = QB_Q4_K_BYTES; return q4k_unpack;
    case GGML_T_Q5_K: *bytes = QB_Q5_K_BYTES; return q5k_unpack;
    case GGML_T_Q6_K: *bytes = QB_Q6_K_BYTES; return q6k_unpack;
    default: return NULL;
    }
}

/* In ggml's order of operations (scale products first, then value * scale - min), so that
 * the floats are dequantize_row_q*_K's bit for bit. A min term of +0 (always, without mins)
 * leaves every product unchanged (-0 - +0 is -0), so it is skipped. */
static void dequant_kq(kq_unpack_fn unpack, size_t bytes, const uint8_t *b, float *y, int64_t nb)
{
    kq_vals u;
    for (int64_t i = 0; i < nb; i++, b += bytes, y += QB_QK_K) {
        unpack(b, &u);
        for (int j = 0; j < 16; j++) {
            float dl = u.d * (float)u.sc[j], ml = u.dmin * (float)u.mn[j];
            if (ml == 0 && !signbit(ml))
                for (int l = 0; l < 16; l++)
                    y[16 * j + l] = dl * (float)u.v[16 * j + l];
            else
                for (int l = 0; l < 16; l++)
                    y[16 * j + l] = dl * (float)u.v[16 * j + l] - ml;
        }
    }
}

void eng_kq_mv(uint32_t type, const uint8_t *W, size_t rb, int64_t ncols, const float *x,
               const eng_xq *xq, float *y, int64_t r0, int64_t r1)
{
    size_t bytes = 0;
    kq_unpack_fn unpack = kq_unpacker(type, &bytes);
    kq_vals u;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = W + (size_t)r * rb;
        float s = 0;
        for (int64_t i = 0; i < xq->nb; i++, b += bytes) {
            unpack(b, &u);
            const int8_t *q = xq->q + i * QB_QK_K;
            const int16_t *bs = xq->bsum + i * 16;
            int sumq = 0, summ = 0;
            for (int j = 0; j < 16; j++) {
                int dot = 0;
                for (int l = 0; l < 16; l++)
                    dot += u.v[16 * j + l] * q[16 * j + l];
                sumq += u.sc[j] * dot;
                summ += u.mn[j] * bs[j];
            }
            /* Q6_K's sum has always been rounded in this order */
            if (type == GGML_T_Q6_K)
                s += xq->d[i] * u.d * (float)sumq;
            else
                s += xq->d[i] * (u.d * (float)sumq - u.dmin * (float)summ);
        }
        y[r] = s;
    }
}

/* ---- quantization (min-max / absmax rounding; valid blocks, not optimal ones) ---- */

/* Scales and mins of nsub sub-blocks of len values for x ~= d * ls * q - dmin * lm with q in
 * 0..nmax, min >= 0 (0 is covered) and ls, lm in 0..lmax; d and dmin are rounded up to f16
 * and ls, lm up, so that they still cover each sub-block's range. */
static void kq_scale_min(const float *x, int nsub, int len, int nmax, int lmax, uint16_t *dh,
                         uint16_t *mh, uint8_t *ls, uint8_t *lm)
{
    float scale[16], mins[16], maxscale = 0, maxmin = 0;
    for (int j = 0; j < nsub; j++) {
        float lo = 0, hi = 0;
        for (int l = 0; l < len; l++) {
            lo = fminf(lo, x[len * j + l]);
            hi = fmaxf(hi, x[len * j + l]);
        }
        scale[j] = (hi - lo) / (float)nmax;
        mins[j] = -lo;
        maxscale = fmaxf(maxscale, scale[j]);
        maxmin = fmaxf(maxmin, mins[j]);
    }
    *dh = qb_f16_ceil(maxscale / (float)lmax);
    *mh = qb_f16_ceil(maxmin / (float)lmax);
    float d = base_f16_to_f32(*dh), dmin = base_f16_to_f32(*mh);
    for (int j = 0; j < nsub; j++) {
        ls[j] = (uint8_t)(d > 0 ? qb_clampi((int)ceilf(scale[j] / d), 0, lmax) : 0);
        lm[j] = (uint8_t)(dmin > 0 ? qb_clampi((int)ceilf(mins[j] / dmin), 0, lmax) : 0);
    }
}

/* One value of a sub-block with scale sd and min sm, in 0..nmax. */
static int kq_level(float x, float sd, float sm, int nmax)
{
    float id = sd > 0 ? 1.0f / sd : 0;
    return qb_clampi((int)lrintf((x + sm) * id), 0, nmax);
}

/* Q4_K (nmax 15) and Q5_K (nmax 31: the fifth bit goes to qh). */
static void quant_q45_k(const float *x, uint8_t *b, int64_t nb, int nmax)
{
    size_t bytes = nmax == 15 ? QB_Q4_K_BYTES : QB_Q5_K_BYTES;
    for (int64_t i = 0; i < nb; i++, x += QB_QK_K, b += bytes) {
        uint16_t dh, mh;
        uint8_t ls[8], lm[8];
        kq_scale_min(x, 8, 32, nmax, 63, &dh, &mh, ls, lm);
        float d = base_f16_to_f32(dh), dmin = base_f16_to_f32(mh);
        memset(b, 0, bytes);
        qb_st16(b, dh);
        qb_st16(b + 2, mh);
        uint8_t *s = b + 4;
        for (int j = 0; j < 4; j++) {
            s[j] = (uint8_t)(ls[j] | ((ls[j + 4] >> 4) << 6));
            s[j + 4] = (uint8_t)(lm[j] | ((lm[j + 4] >> 4) << 6));
            s[j + 8] = (uint8_t)((ls[j + 4] & 0xf) | ((lm[j + 4] & 0xf) << 4));
        }
        uint8_t *qh = b + QB_Q5_K_QH, *qs = nmax == 15 ? b + 16 : b + QB_Q5_K_QS;
        for (int j = 0; j < 8; j++) {
            for (int l = 0; l < 32; l++) {
                int q = kq_level(x[32 * j + l], d * ls[j], dmin * lm[j], nmax);
                qs[32 * (j / 2) + l] |= (uint8_t)((q & 0xf) << (4 * (j & 1)));
                if (nmax == 31)
                    qh[l] |= (uint8_t)((q >> 4) << j);
            }
        }
    }
}

static void quant_q2_k(const float *x, uint8_t *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QB_QK_K, b += QB_Q2_K_BYTES) {
        uint16_t dh, mh;
        uint8_t ls[16], lm[16];
        kq_scale_min(x, 16, 16, 3, 15, &dh, &mh, ls, lm);
        float d = base_f16_to_f32(dh), dmin = base_f16_to_f32(mh);
        memset(b, 0, QB_Q2_K_BYTES);
        for (int j = 0; j < 16; j++)
            b[j] = (uint8_t)(ls[j] | (lm[j] << 4));
        for (int e = 0; e < QB_QK_K; e++) {
            int q = kq_level(x[e], d * ls[e >> 4], dmin * lm[e >> 4], 3);
            b[QB_Q2_K_QS + 32 * (e >> 7) + (e & 31)] |= (uint8_t)(q << (2 * ((e >> 5) & 3)));
        }
        qb_st16(b + QB_Q2_K_D, dh);
        qb_st16(b + QB_Q2_K_D + 2, mh);
    }
}

static void quant_q3_k(const float *x, uint8_t *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QB_QK_K, b += QB_Q3_K_BYTES) {
        /* per sub-block of 16: the value of largest magnitude maps to -4 (the scale takes its
         * sign), the full range of the signed 3-bit code */
        float scale[16], maxscale = 0;
        for (int j = 0; j < 16; j++) {
            float mx = 0;
            for (int l = 0; l < 16; l++)
                if (fabsf(x[16 * j + l]) > fabsf(mx))
                    mx = x[16 * j + l];
            scale[j] = mx / -4.0f;
            maxscale = fmaxf(maxscale, fabsf(scale[j]));
        }
        uint16_t dh = qb_f16_ceil(maxscale / 31.0f);
        float d = base_f16_to_f32(dh);
        int ls[16];
        for (int j = 0; j < 16; j++)
            ls[j] = d > 0 ? qb_clampi((int)lrintf(scale[j] / d), -32, 31) : 0;
        memset(b, 0, QB_Q3_K_BYTES);
        uint8_t *s = b + QB_Q3_K_SC;
        for (int j = 0; j < 16; j++) { /* stored + 32; see qb_q3k_scale_words */
            int v = ls[j] + 32;
            s[j & 7] |= (uint8_t)((v & 0xf) << (j < 8 ? 0 : 4));
            s[8 + (j & 3)] |= (uint8_t)((v >> 4) << (2 * (j >> 2)));
        }
        for (int e = 0; e < QB_QK_K; e++) {
            float sd = d * (float)ls[e >> 4];
            int q = sd != 0 ? qb_clampi((int)lrintf(x[e] / sd), -4, 3) + 4 : 4;
            int h = e >> 7, k = (e >> 5) & 3, l = e & 31;
            b[QB_Q3_K_QS + 32 * h + l] |= (uint8_t)((q & 3) << (2 * k));
            b[l] |= (uint8_t)((q >> 2) << (4 * h + k));
        }
        qb_st16(b + QB_Q3_K_D, dh);
    }
}

static void quant_q6_k(const float *x, uint8_t *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QB_QK_K, b += QB_Q6_K_BYTES) {
        /* per sub-block of 16: x ~= d * sc * (q - 32), symmetric in -31..31 */
        float scale[16], maxscale = 0;
        for (int j = 0; j < 16; j++) {
            scale[j] = qb_absmax(x + 16 * j, 16) / 31.0f;
            maxscale = fmaxf(maxscale, scale[j]);
        }
        uint16_t dh = qb_f16_ceil(maxscale / 127.0f);
        float d = base_f16_to_f32(dh);
        memset(b, 0, QB_Q6_K_BYTES);
        qb_st16(b + QB_Q6_K_D, dh);
        int8_t *sc = (int8_t *)(b + QB_Q6_K_SC);
        for (int j = 0; j < 16; j++)
            sc[j] = (int8_t)(d > 0 ? qb_clampi((int)ceilf(scale[j] / d), 0, 127) : 0);
        for (int e = 0; e < QB_QK_K; e++) {
            float sd = d * sc[e >> 4];
            int q = sd > 0 ? qb_clampi((int)lrintf(x[e] / sd), -32, 31) + 32 : 32;
            int h = e >> 7, k = (e >> 5) & 3, l = e & 31;
            b[64 * h + l + 32 * (k & 1)] |= (uint8_t)((q & 0xf) << (k < 2 ? 0 : 4));
            b[QB_Q6_K_QH + 32 * h + l] |= (uint8_t)((q >> 4) << (2 * k));
        }
    }
}

/* ---- entry points for quant.c ---- */

int eng_kq_dequant(uint32_t type, const uint8_t *b, float *y, int64_t nb)
{
    size_t bytes;
    kq_unpack_fn unpack = kq_unpacker(type, &bytes);
    if (!unpack)
        return 0;
    dequant_kq(unpack, bytes, b, y, nb);
    return 1;
}

int eng_kq_quantize(uint32_t type, const float *x, uint8_t *b, int64_t nb)
{
    switch (type) {
    case GGML_T_Q2_K: quant_q2_k(x, b, nb); return 1;
    case GGML_T_Q3_K: quant_q3_k(x, b, nb); return 1;
    case GGML_T_Q4_K: quant_q45_k(x, b, nb, 15); return 1;
    case GGML_T_Q5_K: quant_q45_k(x, b, nb, 31); return 1;
    case GGML_T_Q6_K: quant_q6_k(x, b, nb); return 1;
    default: return 0;
    }
}
