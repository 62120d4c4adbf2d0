/* quant.c: f16/bf16 row conversion, the 32-element ggml block types (Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0: dequantizers, quantizers, portable matrix-vector kernels), and the run-time choice of
 * kernels for every type (quant_k.c holds the K-quants, quant*_avx2.c the AVX2 kernels). */
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
static int g_cpu_vnni; /* and AVX-512 with VNNI */

__attribute__((constructor)) static void cpu_detect(void)
{
    g_cpu_avx2 = base_cpu_has(BASE_CPU_AVX2 | BASE_CPU_FMA | BASE_CPU_F16C);
    g_cpu_vnni = g_cpu_avx2 && base_cpu_has(BASE_CPU_AVX512 | BASE_CPU_AVX512VNNI);
}

static int have_avx2(void) { return g_cpu_avx2 && !g_force_scalar; }

const char *eng_quant_kernels(void) { return have_avx2() ? "avx2" : "scalar"; }

/* ---- dequantization ---- */

static void dequant_q8_0(const uint8_t *b, float *y, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, b += QB_Q8_0_BYTES, y += QB_QK) {
        float d = base_f16_to_f32(qb_ld16(b));
        for (int j = 0; j < 32; j++)
            y[j] = (float)(int8_t)b[2 + j] * d;
    }
}

/* ---- Q4_0, Q4_1, Q5_0, Q5_1: a 4-bit code, maybe a fifth bit, maybe a min ---- */

/* Where a type's fields sit in its block (0: the type has none) and the offset subtracted
 * from the stored code (Q4_0's 8, Q5_0's 16: their codes are symmetric around 0). d is at
 * byte 0. */
typedef struct qb32 {
    size_t bytes;
    int m_at, qh_at, qs_at, off;
} qb32;

static const qb32 k_q4_0 = {QB_Q4_0_BYTES, 0, 0, QB_Q4_0_QS, 8};
static const qb32 k_q4_1 = {QB_Q4_1_BYTES, QB_Q4_1_M, 0, QB_Q4_1_QS, 0};
static const qb32 k_q5_0 = {QB_Q5_0_BYTES, 0, QB_Q5_0_QH, QB_Q5_0_QS, 16};
static const qb32 k_q5_1 = {QB_Q5_1_BYTES, QB_Q5_1_M, QB_Q5_1_QH, QB_Q5_1_QS, 0};

static const qb32 *qb32_of(uint32_t type)
{
    switch (type) {
    case GGML_T_Q4_0: return &k_q4_0;
    case GGML_T_Q4_1: return &k_q4_1;
    case GGML_T_Q5_0: return &k_q5_0;
    case GGML_T_Q5_1: return &k_q5_1;
    default: return NULL;
    }
}

/* Element j < 16 is the low nibble of qs[j], element j + 16 its high nibble; the fifth bit of
 * element j is bit j of qh read as a little-endian 32-bit word. The bits are tested against a
 * table rather than shifted out, so that the loop over j vectorizes (SSE2 has no per-lane
 * shift): the prefill dequantizes every weight row through here. */
static const uint32_t k_bit[32] = {
    1u << 0,  1u << 1,  1u << 2,  1u << 3,  1u << 4,  1u << 5,  1u << 6,  1u << 7,
    1u << 8,  1u << 9,  1u << 10, 1u << 11, 1u << 12, 1u << 13, 1u << 14, 1u << 15,
    1u << 16, 1u << 17, 1u << 18, 1u << 19, 1u << 20, 1u << 21, 1u << 22, 1u << 23,
    1u << 24, 1u << 25, 1u << 26, 1u << 27, 1u << 28, 1u << 29, 1u << 30, 1u << 31};

static inline __attribute__((always_inline)) void qb32_unpack(const qb32 *t, const uint8_t *b,
                                                              int8_t v[QB_QK])
{
    const uint8_t *qs = b + t->qs_at, *h = b + t->qh_at;
    uint32_t qh = t->qh_at ? (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24 : 0;
    for (int j = 0; j < 16; j++) {
        v[j] = (int8_t)(((qs[j] & 0xf) | ((qh & k_bit[j]) ? 16 : 0)) - t->off);
        v[j + 16] = (int8_t)(((qs[j] >> 4) | ((qh & k_bit[j + 16]) ? 16 : 0)) - t->off);
    }
}

/* value * d (+ m): ggml's dequantize_row_q4_0/q4_1/q5_0/q5_1 operations, so the same floats.
 * Inlined with t constant at each call, so that each type's loops are its own. */
static inline __attribute__((always_inline)) void dequant_qb32(const qb32 *t, const uint8_t *b, float *y,
                                                               int64_t nb)
{
    int8_t v[QB_QK];
    for (int64_t i = 0; i < nb; i++, b += t->bytes, y += QB_QK) {
        float d = base_f16_to_f32(qb_ld16(b));
        qb32_unpack(t, b, v);
        if (t->m_at) {
            float m = base_f16_to_f32(qb_ld16(b + t->m_at));
            for (int j = 0; j < QB_QK; j++)
                y[j] = (float)v[j] * d + m;
        } else {
            for (int j = 0; j < QB_QK; j++)
                y[j] = (float)v[j] * d;
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
    case GGML_T_Q8_0:
#if defined(__x86_64__)
        if (have_avx2()) {
            eng_dequant_q8_0_avx2(b, dst, n);
            break;
        }
#endif
        dequant_q8_0(b, dst, n / QB_QK);
        break;
    case GGML_T_Q4_0: dequant_qb32(&k_q4_0, b, dst, n / QB_QK); break;
    case GGML_T_Q4_1: dequant_qb32(&k_q4_1, b, dst, n / QB_QK); break;
    case GGML_T_Q5_0: dequant_qb32(&k_q5_0, b, dst, n / QB_QK); break;
    case GGML_T_Q5_1: dequant_qb32(&k_q5_1, b, dst, n / QB_QK); break;
    default: eng_kq_dequant(type, b, dst, n / QB_QK_K); break;
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
        if (n % QB_QK_K == 0) {
            void (*k_panel)(const uint8_t *, float *, int64_t, size_t) =
                type == GGML_T_Q2_K   ? eng_dequant_q2_k_panel_avx2
                : type == GGML_T_Q3_K ? eng_dequant_q3_k_panel_avx2
                : type == GGML_T_Q4_K ? eng_dequant_q4_k_panel_avx2
                : type == GGML_T_Q5_K ? eng_dequant_q5_k_panel_avx2
                : type == GGML_T_Q6_K ? eng_dequant_q6_k_panel_avx2
                                      : NULL;
            if (k_panel) {
                k_panel(src, dst, n, stride);
                return 1;
            }
        }
    }
#endif
    (void)type, (void)src, (void)dst, (void)n, (void)stride;
    return 0;
}

/* ---- quantization (simple absmax / min-max rounding; valid blocks, not optimal ones) ---- */

static void quant_q8_0(const float *x, uint8_t *b, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++, x += QB_QK, b += QB_Q8_0_BYTES) {
        uint16_t dh = qb_f16_ceil(qb_absmax(x, QB_QK) / 127.0f);
        float d = base_f16_to_f32(dh);
        float id = d > 0 ? 1.0f / d : 0;
        qb_st16(b, dh);
        for (int j = 0; j < QB_QK; j++)
            b[2 + j] = (uint8_t)(int8_t)qb_clampi((int)lrintf(x[j] * id), -127, 127);
    }
}

static void quant_qb32(const qb32 *t, const float *x, uint8_t *b, int64_t nb)
{
    const int nmax = t->qh_at ? 31 : 15;
    for (int64_t i = 0; i < nb; i++, x += QB_QK, b += t->bytes) {
        memset(b, 0, t->bytes);
        float d, m = 0;
        if (t->m_at) { /* x ~= d * q + m, q in 0..nmax, m the block's minimum in f16 */
            float lo = x[0], hi = x[0];
            for (int j = 1; j < QB_QK; j++) {
                lo = fminf(lo, x[j]);
                hi = fmaxf(hi, x[j]);
            }
            uint16_t mh = base_f32_to_f16(lo);
            m = base_f16_to_f32(mh);
            qb_st16(b + t->m_at, mh);
            qb_st16(b, qb_f16_ceil(fmaxf(hi - m, 0) / (float)nmax));
        } else { /* the value of largest magnitude maps to -off (the sign of d follows it),
                  * the full range of the asymmetric code */
            float mx = 0;
            for (int j = 0; j < QB_QK; j++)
                if (fabsf(x[j]) > fabsf(mx))
                    mx = x[j];
            qb_st16(b, base_f32_to_f16(mx / (float)-t->off));
        }
        d = base_f16_to_f32(qb_ld16(b));
        float id = d != 0 ? 1.0f / d : 0;
        uint8_t *qs = b + t->qs_at, *qh = b + t->qh_at;
        for (int j = 0; j < QB_QK; j++) {
            int q = qb_clampi((int)lrintf((x[j] - m) * id) + t->off, 0, nmax);
            qs[j & 15] |= (uint8_t)((q & 0xf) << (j < 16 ? 0 : 4));
            if (t->qh_at)
                qh[j / 8] |= (uint8_t)((q >> 4) << (j % 8));
        }
    }
}

size_t eng_quantize_row(uint32_t type, const float *src, void *dst, int64_t n)
{
    uint32_t blk, bytes;
    if (!eng_type_supported(type) || !ggml_type_traits(type, &blk, &bytes, NULL) || n < 0 ||
        n % blk != 0)
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
    case GGML_T_Q8_0: quant_q8_0(src, b, n / blk); break;
    default:
        if (qb32_of(type))
            quant_qb32(qb32_of(type), src, b, n / blk);
        else
            eng_kq_quantize(type, src, b, n / blk);
        break;
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
        float d = qb_absmax(xb, blk) / 127.0f;
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

/* Columns whose Q8 copy of x fits on the stack (about 20 KB); longer rows allocate. */
enum { XQ_STACK_COLS = 16384 };

/* Through the dequantizer, QB_QK_K elements at a time, summing in f32 in column order: the
 * portable kernel of the float types, and every type's last resort when x's Q8 scratch
 * cannot be allocated. */
static void mv_dequant(uint32_t type, const uint8_t *W, size_t rb, int64_t ncols, const float *x,
                       const eng_xq *xq, float *y, int64_t r0, int64_t r1)
{
    float buf[QB_QK_K];
    uint32_t blk, bytes;
    ggml_type_traits(type, &blk, &bytes, NULL);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *w = W + (size_t)r * rb;
        float s = 0;
        for (int64_t c = 0; c < ncols; c += QB_QK_K) {
            int64_t n = ncols - c < QB_QK_K ? ncols - c : QB_QK_K;
            eng_dequant_row(type, w + (size_t)(c / blk) * bytes, buf, n);
            for (int64_t j = 0; j < n; j++)
                s += buf[j] * x[c + j];
        }
        y[r] = s;
    }
}

static void mv_q8_0(uint32_t type, const uint8_t *W, size_t rb, int64_t ncols, const float *x,
                    const eng_xq *xq, float *y, int64_t r0, int64_t r1)
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

/* sum over blocks of d_w d_x sum(v q) (+ m_w d_x sum(q): the min times x's block sum) */
static void mv_qb32(uint32_t type, const uint8_t *W, size_t rb, int64_t ncols, const float *x,
                    const eng_xq *xq, float *y, int64_t r0, int64_t r1)
{
    const qb32 *t = qb32_of(type);
    int8_t v[QB_QK];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *b = W + (size_t)r * rb;
        float s = 0;
        for (int64_t i = 0; i < xq->nb; i++, b += t->bytes) {
            const int8_t *q = xq->q + i * QB_QK;
            qb32_unpack(t, b, v);
            int sum = 0;
            for (int j = 0; j < QB_QK; j++)
                sum += v[j] * q[j];
            s += base_f16_to_f32(qb_ld16(b)) * xq->d[i] * (float)sum;
            if (t->m_at)
                s += base_f16_to_f32(qb_ld16(b + t->m_at)) * xq->dsum[i];
        }
        y[r] = s;
    }
}

/* ---- matvec entry ---- */

/* Each type's portable kernel and the Q8 block of x its integer kernels read (0: they read x
 * as floats). The AVX2 kernels are eng_mv_k_avx2 for the K-quants, eng_mv_avx2 otherwise
 * (Q3_K's is eng_mv_q3_k_avx512vnni where the CPU has AVX-512 VNNI). */
static const struct mv_kernels {
    uint32_t type;
    eng_mv_fn scalar;
    int qblk;
} k_mv[] = {
    {GGML_T_F32, mv_dequant, 0},        {GGML_T_F16, mv_dequant, 0},
    {GGML_T_BF16, mv_dequant, 0},       {GGML_T_Q8_0, mv_q8_0, QB_QK},
    {GGML_T_Q4_0, mv_qb32, QB_QK},      {GGML_T_Q4_1, mv_qb32, QB_QK},
    {GGML_T_Q5_0, mv_qb32, QB_QK},      {GGML_T_Q5_1, mv_qb32, QB_QK},
    {GGML_T_Q2_K, eng_kq_mv, QB_QK_K},  {GGML_T_Q3_K, eng_kq_mv, QB_QK_K},
    {GGML_T_Q4_K, eng_kq_mv, QB_QK_K},  {GGML_T_Q5_K, eng_kq_mv, QB_QK_K},
    {GGML_T_Q6_K, eng_kq_mv, QB_QK_K},
};

static const struct mv_kernels *mv_of(uint32_t type)
{
    for (size_t i = 0; i < sizeof k_mv / sizeof k_mv[0]; i++)
        if (k_mv[i].type == type)
            return &k_mv[i];
    return NULL;
}

int eng_type_supported(uint32_t type) { return mv_of(type) != NULL; }

void eng_matvec(uint32_t type, const void *W, size_t row_bytes, int64_t ncols, const float *x,
                float *y, int64_t r0, int64_t r1)
{
    const struct mv_kernels *k = mv_of(type);
    if (!k)
        return;
    const int qblk = k->qblk, avx2 = have_avx2();
    eng_mv_fn fn = k->scalar;
#if defined(__x86_64__)
    if (avx2)
        fn = type == GGML_T_Q3_K && g_cpu_vnni ? eng_mv_q3_k_avx512vnni
             : qblk == QB_QK_K                 ? eng_mv_k_avx2
                                               : eng_mv_avx2;
#endif
    if (r1 <= r0)
        return;
    if (!qblk) {
        fn(type, W, row_bytes, ncols, x, NULL, y, r0, r1);
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
            mv_dequant(type, W, row_bytes, ncols, x, NULL, y, r0, r1);
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
    fn(type, W, row_bytes, ncols, x, &xq, y, r0, r1);
    free(heap);
}
