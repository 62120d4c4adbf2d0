/* gemm_q8.c: Y = X W^T for Q8_0 weights against Q8_0-rounded activations, in integers per
 * block: the order documented in gemm_internal.h, with an AVX-512 VNNI kernel, an AVX2 kernel
 * and a scalar one that all give the same bits.
 *
 * Why: converting Q8_0 weights to f32 panels and multiplying in f32 made Q8_0 prefill no
 * faster than F16, while llama.cpp multiplies the int8 values directly. A block's integer dot
 * product is exact whatever the instructions, so the kernels only have to agree on the float
 * steps after it, which are written out once below. */
#include "engine/kernels/gemm_internal.h"
#include "base/base.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

enum {
    QK = 32,                         /* values per block */
    QSTEPS = QK / 4,                 /* 4-column steps per block */
    WQ = QSTEPS * ENG_Q8_NV * 4,     /* a panel block's value bytes */
    WBLK = WQ + ENG_Q8_NV * 4,       /* and its scales */
    WQ16 = QK * ENG_Q8_NV * 2,       /* an int16 panel block's values (AVX2 kernel) */
    WBLK16 = WQ16 + ENG_Q8_NV * 4,   /* and its scales */
    SRC_BLK = 2 + QK,                /* a Q8_0 block in the file: f16 scale, 32 int8 */
};

size_t eng_q8x_stride(int K) { return (size_t)K + (size_t)(K / QK) * 8; }

/* The panels the current level's kernel reads: int16 for AVX2 without VNNI, bytes otherwise. */
static int panels_i16(void)
{
#if defined(__x86_64__)
    const int level = eng_gemm_level();
    return level >= ENG_GEMM_AVX2 && !(level == ENG_GEMM_AVX512 && base_cpu_has(BASE_CPU_AVX512VNNI));
#else
    return 0;
#endif
}

static size_t panel_bytes(int rows, int K, size_t blk)
{
    return (size_t)((rows + ENG_Q8_NV - 1) / ENG_Q8_NV) * (size_t)(K / QK) * blk;
}

size_t eng_q8w_bytes(int rows, int K) { return panel_bytes(rows, K, panels_i16() ? WBLK16 : WBLK); }

size_t eng_q8w_bytes_max(int rows, int K) { return panel_bytes(rows, K, WBLK16 > WBLK ? WBLK16 : WBLK); }

static void quantize_scalar(const float *x, int K, uint8_t *dst)
{
    const int nb = K / QK;
    float *ds = (float *)(dst + K);
    int32_t *cs = (int32_t *)(dst + K + 4 * (size_t)nb);
    for (int b = 0; b < nb; b++, x += QK) {
        float amax = 0;
        for (int j = 0; j < QK; j++) {
            const float v = fabsf(x[j]);
            amax = v > amax ? v : amax;
        }
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < QK; j++) {
            /* |x * id| <= 127: adding and removing 1.5 * 2^23 rounds to the nearest integer,
             * ties to even, as ggml's _mm256_round_ps does */
            volatile float t = x[j] * id + 12582912.0f;
            const float r = t - 12582912.0f;
            /* a NaN activation gives -128, as the AVX2 conversion and packs do (no UB cast) */
            const int q = r >= -128.0f && r <= 127.0f ? (int)r : -128;
            dst[b * QK + j] = (uint8_t)(int8_t)q;
            sum += q;
        }
        const float d = base_f16_to_f32(base_f32_to_f16(amax / 127.0f));
        memcpy(ds + b, &d, 4);
        const int32_t c = -128 * sum;
        memcpy(cs + b, &c, 4);
    }
}

static void pack_scalar(const uint8_t *src, size_t row_bytes, int rows, int K, uint8_t *dst)
{
    const int nb = K / QK;
    for (int g = 0; g * ENG_Q8_NV < rows; g++) {
        const int r0 = g * ENG_Q8_NV, n = rows - r0 < ENG_Q8_NV ? rows - r0 : ENG_Q8_NV;
        for (int b = 0; b < nb; b++, dst += WBLK) {
            float sc[ENG_Q8_NV] = {0};
            memset(dst, 0x80, WQ); /* padding rows hold the value 0 */
            for (int l = 0; l < n; l++) {
                const uint8_t *blk = src + (size_t)(r0 + l) * row_bytes + (size_t)b * SRC_BLK;
                uint16_t h;
                memcpy(&h, blk, 2);
                sc[l] = base_f16_to_f32(h);
                for (int s = 0; s < QSTEPS; s++)
                    for (int t = 0; t < 4; t++)
                        dst[(s * ENG_Q8_NV + l) * 4 + t] = blk[2 + s * 4 + t] ^ 0x80;
            }
            memcpy(dst + WQ, sc, sizeof sc);
        }
    }
}

/* A row's scales and corrections, after its K values. */
static const float *x_scales(const uint8_t *x, int K) { return (const float *)(x + K); }
static const int32_t *x_corr(const uint8_t *x, int K) { return (const int32_t *)(x + K + 4 * (size_t)(K / QK)); }

/* ---- scalar: the reference ---- */

static void gemm_q8_scalar(const uint8_t *Xq, int M, const uint8_t *Wq, int N, int K, float *Y,
                           size_t ldy)
{
    const int nb = K / QK;
    const size_t xs = eng_q8x_stride(K), gs = (size_t)nb * WBLK;
    for (int i = 0; i < M; i++) {
        const uint8_t *x = Xq + (size_t)i * xs;
        const float *dx = x_scales(x, K);
        for (int j = 0; j < N; j++) {
            const uint8_t *w = Wq + (size_t)(j / ENG_Q8_NV) * gs;
            const int l = j % ENG_Q8_NV;
            float acc = 0.0f;
            for (int b = 0; b < nb; b++, w += WBLK) {
                int32_t isum = 0;
                for (int s = 0; s < QSTEPS; s++)
                    for (int t = 0; t < 4; t++)
                        isum += (int32_t)(int8_t)(w[(s * ENG_Q8_NV + l) * 4 + t] ^ 0x80) *
                                (int32_t)(int8_t)x[b * QK + s * 4 + t];
                float dw;
                memcpy(&dw, w + WQ + 4 * l, 4);
                acc = fmaf((float)isum, dx[b] * dw, acc);
            }
            Y[(size_t)i * ldy + j] = acc;
        }
    }
}

#if defined(__x86_64__)

#define AVX2 __attribute__((target("avx2,fma")))

static inline int32_t ld32(const uint8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* ---- AVX2 conversions: the same values as quantize_scalar and pack_scalar ---- */

static AVX2 void quantize_avx2(const float *x, int K, uint8_t *dst)
{
    const int nb = K / QK;
    float *ds = (float *)(dst + K);
    int32_t *cs = (int32_t *)(dst + K + 4 * (size_t)nb);
    const __m256 nosign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int b = 0; b < nb; b++, x += QK) {
        __m256 v[4], m = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            m = _mm256_max_ps(m, _mm256_and_ps(v[k], nosign));
        }
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
        __m256i q[4];
        for (int k = 0; k < 4; k++) /* rounds to nearest, ties to even (the default MXCSR mode) */
            q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], id));
        const __m256i sum4 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(sum4), _mm256_extracti128_si256(sum4, 1));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
        /* the packs interleave 128-bit lanes; the permute puts the values back in order */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)(dst + b * QK), _mm256_permutevar8x32_epi32(p, order));
        const float d = base_f16_to_f32(base_f32_to_f16(amax / 127.0f));
        memcpy(ds + b, &d, 4);
        const int32_t c = -128 * _mm_cvtsi128_si32(t);
        memcpy(cs + b, &c, 4);
    }
}

/* Transposes 8 rows of 8 dwords (r[i] = row i) into 8 columns (r[k] = dword k of each row). */
static AVX2 inline void transpose8(__m256i r[8])
{
    __m256i a[8], b[8];
    for (int i = 0; i < 8; i += 2) {
        a[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
        a[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4)
        for (int k = 0; k < 2; k++) {
            b[i + 2 * k] = _mm256_unpacklo_epi64(a[i + k], a[i + k + 2]);
            b[i + 2 * k + 1] = _mm256_unpackhi_epi64(a[i + k], a[i + k + 2]);
        }
    for (int k = 0; k < 4; k++) {
        r[k] = _mm256_permute2x128_si256(b[k], b[k + 4], 0x20);
        r[k + 4] = _mm256_permute2x128_si256(b[k], b[k + 4], 0x31);
    }
}

/* Weight row r0 + row's block b for packing, with its scale put into sc[row]. 16 rows are read
 * side by side: each fetches ahead. */
static inline const uint8_t *pack_block(const uint8_t *src, size_t row_bytes, int r0, int row, int b,
                                        float *sc)
{
    const uint8_t *blk = src + (size_t)(r0 + row) * row_bytes + (size_t)b * SRC_BLK;
    uint16_t hb;
    memcpy(&hb, blk, 2);
    sc[row] = base_f16_to_f32(hb);
    _mm_prefetch((const char *)blk + 8 * SRC_BLK, _MM_HINT_T0);
    return blk + 2;
}

static AVX2 void pack_u8_avx2(const uint8_t *src, size_t row_bytes, int rows, int K, uint8_t *dst)
{
    const int nb = K / QK;
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    for (int g = 0; g * ENG_Q8_NV < rows; g++) {
        const int r0 = g * ENG_Q8_NV, n = rows - r0 < ENG_Q8_NV ? rows - r0 : ENG_Q8_NV;
        for (int b = 0; b < nb; b++, dst += WBLK) {
            float sc[ENG_Q8_NV] = {0};
            for (int h = 0; h < 2; h++) {
                __m256i r[8];
                for (int l = 0; l < 8; l++) {
                    const int row = h * 8 + l;
                    if (row >= n) {
                        r[l] = flip; /* padding rows hold the value 0 */
                        continue;
                    }
                    const uint8_t *v = pack_block(src, row_bytes, r0, row, b, sc);
                    r[l] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)v), flip);
                }
                transpose8(r);
                for (int s = 0; s < QSTEPS; s++)
                    _mm256_store_si256((__m256i *)(dst + s * 64 + h * 32), r[s]);
            }
            memcpy(dst + WQ, sc, sizeof sc);
        }
    }
}

/* The int16 panels of the AVX2 kernel: per block, 16 steps of 2 columns, each ENG_Q8_NV rows x 2
 * int16 values, then ENG_Q8_NV float scales. A row's 32 values widen into 16 dwords of 2 values,
 * and transposing 8 rows' dwords gives each step's register. */
static AVX2 void pack_i16_avx2(const uint8_t *src, size_t row_bytes, int rows, int K, uint8_t *dst)
{
    const int nb = K / QK;
    for (int g = 0; g * ENG_Q8_NV < rows; g++) {
        const int r0 = g * ENG_Q8_NV, n = rows - r0 < ENG_Q8_NV ? rows - r0 : ENG_Q8_NV;
        for (int b = 0; b < nb; b++, dst += WBLK16) {
            float sc[ENG_Q8_NV] = {0};
            for (int h = 0; h < 2; h++) {
                __m256i lo[8], hi[8];
                for (int l = 0; l < 8; l++) {
                    const int row = h * 8 + l;
                    if (row >= n) {
                        lo[l] = hi[l] = _mm256_setzero_si256(); /* padding rows hold 0 */
                        continue;
                    }
                    const uint8_t *v = pack_block(src, row_bytes, r0, row, b, sc);
                    lo[l] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)v));
                    hi[l] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(v + 16)));
                }
                transpose8(lo);
                transpose8(hi);
                for (int q = 0; q < 8; q++) {
                    _mm256_store_si256((__m256i *)(dst + q * 64 + h * 32), lo[q]);
                    _mm256_store_si256((__m256i *)(dst + (q + 8) * 64 + h * 32), hi[q]);
                }
            }
            memcpy(dst + WQ16, sc, sizeof sc);
        }
    }
}

/* ---- AVX-512 VNNI: 16 weight rows per register, X's 4 values broadcast ----
 * vpdpbusd multiplies unsigned by signed bytes: the panels hold w + 128, and each block's
 * accumulator starts at -128 * sum(x) (x_corr), so it ends at the exact sum of x * w. */
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")))

enum { ZMR = 4, ZNV = 3 }; /* X rows x panels per tile: 12 int + 12 float accumulators */

static VNNI inline __attribute__((always_inline)) void ztile_q8(const uint8_t *x, size_t xs, int mr,
                                                                const uint8_t *w, size_t gs, int nv,
                                                                int ncols, int K, float *Y,
                                                                size_t ldy)
{
    const int nb = K / QK;
    __m512 f[ZMR][ZNV];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++)
            f[i][v] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m512i s[ZMR][ZNV];
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            const __m512i c = _mm512_set1_epi32(x_corr(x + (size_t)i * xs, K)[b]);
#pragma GCC unroll 3
            for (int v = 0; v < nv; v++)
                s[i][v] = c;
        }
        const uint8_t *wb = w + (size_t)b * WBLK;
#pragma GCC unroll 8
        for (int q = 0; q < QSTEPS; q++) {
            __m512i wv[ZNV];
#pragma GCC unroll 3
            for (int v = 0; v < nv; v++)
                wv[v] = _mm512_load_si512((const void *)(wb + (size_t)v * gs + q * 64));
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++) {
                const __m512i xb = _mm512_set1_epi32(ld32(x + (size_t)i * xs + b * QK + q * 4));
#pragma GCC unroll 3
                for (int v = 0; v < nv; v++)
                    s[i][v] = _mm512_dpbusd_epi32(s[i][v], wv[v], xb);
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            const __m512 dx = _mm512_set1_ps(x_scales(x + (size_t)i * xs, K)[b]);
#pragma GCC unroll 3
            for (int v = 0; v < nv; v++) {
                const __m512 sc = _mm512_mul_ps(dx, _mm512_load_ps((const void *)(wb + (size_t)v * gs + WQ)));
                f[i][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[i][v]), sc, f[i][v]);
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 3
        for (int v = 0; v < nv; v++) {
            const int n = ncols - v * ENG_Q8_NV;
            const __mmask16 m = n >= ENG_Q8_NV ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
            _mm512_mask_storeu_ps(Y + (size_t)i * ldy + v * ENG_Q8_NV, m, f[i][v]);
        }
}

typedef void (*q8_tile_fn)(const uint8_t *x, size_t xs, const uint8_t *w, size_t gs, int ncols,
                           int K, float *Y, size_t ldy);

#define Q8_SHAPES(X) X(1, 1) X(1, 2) X(1, 3) X(2, 1) X(2, 2) X(2, 3) X(3, 1) X(3, 2) X(3, 3) \
                     X(4, 1) X(4, 2) X(4, 3)
#define Q8_TABLE(p)                                                                               \
    {                                                                                             \
        {p##1_1, p##1_2, p##1_3}, {p##2_1, p##2_2, p##2_3}, {p##3_1, p##3_2, p##3_3},             \
            {p##4_1, p##4_2, p##4_3},                                                             \
    }
#define DEF_ZTILE_Q8(m, n)                                                                        \
    static VNNI void ztile_q8_##m##_##n(const uint8_t *x, size_t xs, const uint8_t *w, size_t gs, \
                                        int ncols, int K, float *Y, size_t ldy)                   \
    {                                                                                             \
        ztile_q8(x, xs, m, w, gs, n, ncols, K, Y, ldy);                                           \
    }
Q8_SHAPES(DEF_ZTILE_Q8)
#undef DEF_ZTILE_Q8
static const q8_tile_fn k_ztiles_q8[ZMR][ZNV] = Q8_TABLE(ztile_q8_);

/* ---- AVX2: int16 panels, 8 weight rows per register ----
 * Without VNNI the byte products need maddubs, whose 16-bit sums saturate unless one side is
 * made unsigned with the sign trick: sign, maddubs, madd and add per 32 products, an abs and
 * undoing the panels' +128 per step besides, and no way to negate -128. Int16 weights take two
 * madd and two adds per 32 products and nothing else (two products per lane, exact in int32);
 * measured faster (spec/engine.md section 1). */
/* X rows per tile, against one panel (two registers): six accumulators. Four rows spilled one
 * of eight, whose store and reload then chained every step; two rows by two panels spilled too. */
enum { YMR = 3 };

static AVX2 inline __attribute__((always_inline)) void ytile_q8(const uint8_t *x, size_t xs, int mr,
                                                                const uint8_t *w, int ncols, int K,
                                                                float *Y, size_t ldy)
{
    const int nb = K / QK;
    __m256 f[YMR][2];
    _Alignas(32) int16_t xw[YMR][QK];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
        f[i][0] = f[i][1] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m256i s[YMR][2];
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            s[i][0] = s[i][1] = _mm256_setzero_si256();
            const uint8_t *xb = x + (size_t)i * xs + b * QK;
            _mm256_store_si256((__m256i *)xw[i], _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)xb)));
            _mm256_store_si256((__m256i *)(xw[i] + 16), _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(xb + 16))));
        }
        const uint8_t *wb = w + (size_t)b * WBLK16;
#pragma GCC unroll 4
        for (int q = 0; q < QK / 2; q++) {
            const __m256i w0 = _mm256_load_si256((const __m256i *)(wb + q * 64));
            const __m256i w1 = _mm256_load_si256((const __m256i *)(wb + q * 64 + 32));
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++) {
                const __m256i xp = _mm256_set1_epi32(ld32((const uint8_t *)(xw[i] + 2 * q)));
                s[i][0] = _mm256_add_epi32(s[i][0], _mm256_madd_epi16(w0, xp));
                s[i][1] = _mm256_add_epi32(s[i][1], _mm256_madd_epi16(w1, xp));
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            const __m256 dx = _mm256_set1_ps(x_scales(x + (size_t)i * xs, K)[b]);
            for (int h = 0; h < 2; h++) {
                const __m256 sc = _mm256_mul_ps(dx, _mm256_load_ps((const float *)(wb + WQ16) + h * 8));
                f[i][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[i][h]), sc, f[i][h]);
            }
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
        float out[ENG_Q8_NV];
        _mm256_storeu_ps(out, f[i][0]);
        _mm256_storeu_ps(out + 8, f[i][1]);
        memcpy(Y + (size_t)i * ldy, out, sizeof(float) * (size_t)(ncols < ENG_Q8_NV ? ncols : ENG_Q8_NV));
    }
}

typedef void (*q8_ytile_fn)(const uint8_t *x, size_t xs, const uint8_t *w, int ncols, int K,
                            float *Y, size_t ldy);
#define DEF_YTILE_Q8(m)                                                                            \
    static AVX2 void ytile_q8_##m(const uint8_t *x, size_t xs, const uint8_t *w, int ncols, int K, \
                                  float *Y, size_t ldy)                                            \
    {                                                                                              \
        ytile_q8(x, xs, m, w, ncols, K, Y, ldy);                                                   \
    }
DEF_YTILE_Q8(1)
DEF_YTILE_Q8(2)
DEF_YTILE_Q8(3)
#undef DEF_YTILE_Q8
static const q8_ytile_fn k_ytiles_q8[YMR] = {ytile_q8_1, ytile_q8_2, ytile_q8_3};
#endif

/* ---- few X rows: weights read in place from their Q8_0 blocks ----
 * Packing costs a pass over every weight, which a handful of rows cannot amortize. A block's
 * integer dot product is exact whatever order its 32 products are added in, so reading each
 * block as it sits in the file (lanes across its columns, then a horizontal sum) gives the
 * same isum, and the float steps after it are the documented ones: the bits of eng_gemm_q8. */

/* The exact isum of one block of weight row w against X row x. */
static int32_t block_isum(const uint8_t *w, const uint8_t *x)
{
    int32_t isum = 0;
    for (int k = 0; k < QK; k++)
        isum += (int32_t)(int8_t)w[k] * (int32_t)(int8_t)x[k];
    return isum;
}

static void rows_scalar(const uint8_t *Xq, int M, const uint8_t *W, size_t rb, int N, int K,
                        float *Y, size_t ldy)
{
    const int nb = K / QK;
    const size_t xs = eng_q8x_stride(K);
    for (int j = 0; j < N; j++) {
        const uint8_t *w = W + (size_t)j * rb;
        for (int i = 0; i < M; i++) {
            const uint8_t *x = Xq + (size_t)i * xs;
            const float *dx = x_scales(x, K);
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                const uint8_t *blk = w + (size_t)b * SRC_BLK;
                uint16_t h;
                memcpy(&h, blk, 2);
                acc = fmaf((float)block_isum(blk + 2, x + b * QK), dx[b] * base_f16_to_f32(h), acc);
            }
            Y[(size_t)i * ldy + j] = acc;
        }
    }
}

#if defined(__x86_64__)
#define AVX2F16 __attribute__((target("avx2,fma,f16c")))

/* Up to this many X rows per pass over a weight row (its blocks stay in L1 between rows). */
enum { RMR = 4 };

/* Sums of 8 vectors of 8 int32 partials, one per block: lane t of the result is the total of
 * p[t] (exact; the order of integer additions does not matter). */
static AVX2F16 inline __m256i reduce8(const __m256i p[8])
{
    const __m256i h01 = _mm256_hadd_epi32(p[0], p[1]), h23 = _mm256_hadd_epi32(p[2], p[3]);
    const __m256i h45 = _mm256_hadd_epi32(p[4], p[5]), h67 = _mm256_hadd_epi32(p[6], p[7]);
    const __m256i a = _mm256_hadd_epi32(h01, h23), b = _mm256_hadd_epi32(h45, h67);
    /* a: blocks 0-3 of the low 128-bit halves, then of the high ones; b: blocks 4-7 */
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

/* Eight weight rows at once, lane r of every vector for row j0 + r: per block, the eight exact
 * isums (reduce8 across the rows instead of across blocks) and one vector FMA, so each lane runs
 * its row's documented chain acc = fma(isum, dx * dw, acc) while eight chains are in flight.
 * With one row at a time the chain's latency bounds a 1-token prefill. The next group's rows are
 * prefetched: several weight rows streaming at once outrun the hardware prefetcher. */
static AVX2F16 void rows8_avx2(const uint8_t *Xq, int M, const uint8_t *W, size_t rb, int N8, int K,
                               float *Y, size_t ldy)
{
    const int nb = K / QK;
    const size_t xs = eng_q8x_stride(K);
    const __m256i ones = _mm256_set1_epi16(1), m128 = _mm256_set1_epi8((char)0x80);
    for (int j0 = 0; j0 < N8; j0 += 8) {
        const uint8_t *w = W + (size_t)j0 * rb;
        for (int i = 0; i < M; i++) {
            const uint8_t *xr = Xq + (size_t)i * xs;
            const float *dx = x_scales(xr, K);
            __m256 acc = _mm256_setzero_ps();
            for (int b = 0; b < nb; b++) {
                const size_t off = (size_t)b * SRC_BLK;
                if (i == 0 && b % 2 == 0)
                    for (int r = 0; r < 8; r++)
                        _mm_prefetch((const char *)(w + (size_t)(8 + r) * rb + off), _MM_HINT_T0);
                const __m256i xv = _mm256_loadu_si256((const __m256i *)(xr + (size_t)b * QK));
                const __m256i xa = _mm256_abs_epi8(xv);
                __m256i p[8], bad = _mm256_setzero_si256();
                uint16_t h[8];
                for (int r = 0; r < 8; r++) {
                    const uint8_t *blk = w + (size_t)r * rb + off;
                    const __m256i wv = _mm256_loadu_si256((const __m256i *)(blk + 2));
                    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi8(wv, m128));
                    p[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(xa, _mm256_sign_epi8(wv, xv)), ones);
                    h[r] = (uint16_t)(blk[0] | blk[1] << 8);
                }
                __m256i isum = reduce8(p);
                if (!_mm256_testz_si256(bad, bad)) { /* the sign trick cannot negate -128 */
                    int32_t is[8];
                    for (int r = 0; r < 8; r++)
                        is[r] = block_isum(w + (size_t)r * rb + off + 2, xr + (size_t)b * QK);
                    isum = _mm256_loadu_si256((const __m256i *)is);
                }
                const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(_mm256_set1_ps(dx[b]), dw), acc);
            }
            _mm256_storeu_ps(Y + (size_t)i * ldy + j0, acc);
        }
    }
}

static AVX2F16 void rows_avx2(const uint8_t *Xq, int M, const uint8_t *W, size_t rb, int N, int K,
                              float *Y, size_t ldy)
{
    const int nb = K / QK;
    const size_t xs = eng_q8x_stride(K);
    const __m256i ones = _mm256_set1_epi16(1), m128 = _mm256_set1_epi8((char)0x80);
    for (int j = 0; j < N; j++) {
        const uint8_t *w = W + (size_t)j * rb;
        for (int i0 = 0; i0 < M; i0 += RMR) {
            const int mr = M - i0 < RMR ? M - i0 : RMR;
            float acc[RMR] = {0};
            int b = 0;
            for (; b + 8 <= nb; b += 8) {
                /* eight blocks at a time: their weights, scales and whether any weight is -128 */
                __m256i wv[8], bad = _mm256_setzero_si256();
                float dw[8];
                for (int t = 0; t < 8; t++) {
                    const uint8_t *blk = w + (size_t)(b + t) * SRC_BLK;
                    wv[t] = _mm256_loadu_si256((const __m256i *)(blk + 2));
                    bad = _mm256_or_si256(bad, _mm256_cmpeq_epi8(wv[t], m128));
                    dw[t] = _cvtsh_ss((unsigned short)(blk[0] | blk[1] << 8));
                }
                const int slow = !_mm256_testz_si256(bad, bad); /* the sign trick cannot negate -128 */
                for (int i = 0; i < mr; i++) {
                    const uint8_t *xr = Xq + (size_t)(i0 + i) * xs;
                    const float *dx = x_scales(xr, K) + b;
                    int32_t is[8];
                    if (slow) {
                        for (int t = 0; t < 8; t++)
                            is[t] = block_isum(w + (size_t)(b + t) * SRC_BLK + 2, xr + (size_t)(b + t) * QK);
                    } else {
                        __m256i p[8];
                        for (int t = 0; t < 8; t++) {
                            const __m256i xv = _mm256_loadu_si256((const __m256i *)(xr + (size_t)(b + t) * QK));
                            p[t] = _mm256_madd_epi16(
                                _mm256_maddubs_epi16(_mm256_abs_epi8(xv), _mm256_sign_epi8(wv[t], xv)), ones);
                        }
                        _mm256_storeu_si256((__m256i *)is, reduce8(p));
                    }
                    float a = acc[i];
                    for (int t = 0; t < 8; t++)
                        a = fmaf((float)is[t], dx[t] * dw[t], a);
                    acc[i] = a;
                }
            }
            for (; b < nb; b++) {
                const uint8_t *blk = w + (size_t)b * SRC_BLK;
                const float dw = _cvtsh_ss((unsigned short)(blk[0] | blk[1] << 8));
                for (int i = 0; i < mr; i++) {
                    const uint8_t *xr = Xq + (size_t)(i0 + i) * xs;
                    acc[i] = fmaf((float)block_isum(blk + 2, xr + (size_t)b * QK), x_scales(xr, K)[b] * dw, acc[i]);
                }
            }
            for (int i = 0; i < mr; i++)
                Y[(size_t)(i0 + i) * ldy + j] = acc[i];
        }
    }
}
#endif

void eng_gemm_q8_rows(const uint8_t *Xq, int M, const uint8_t *W, size_t row_bytes, int N, int K,
                      float *Y, size_t ldy)
{
#if defined(__x86_64__)
    if (eng_gemm_level() >= ENG_GEMM_AVX2 && base_cpu_has(BASE_CPU_F16C)) {
        const int N8 = N / 8 * 8;
        rows8_avx2(Xq, M, W, row_bytes, N8, K, Y, ldy);
        if (N8 < N)
            rows_avx2(Xq, M, W + (size_t)N8 * row_bytes, row_bytes, N - N8, K, Y + N8, ldy);
        return;
    }
#endif
    rows_scalar(Xq, M, W, row_bytes, N, K, Y, ldy);
}

void eng_gemm_q8(const uint8_t *Xq, int M, const uint8_t *Wq, int N, int K, float *Y, size_t ldy)
{
    if (M <= 0 || N <= 0)
        return;
    const size_t xs = eng_q8x_stride(K), gs = (size_t)(K / QK) * WBLK;
    const int level = eng_gemm_level();
#if defined(__x86_64__)
    if (level == ENG_GEMM_AVX512 && base_cpu_has(BASE_CPU_AVX512VNNI)) {
        for (int i0 = 0; i0 < M; i0 += ZMR) {
            const int mr = M - i0 < ZMR ? M - i0 : ZMR;
            for (int j0 = 0; j0 < N; j0 += ZNV * ENG_Q8_NV) {
                const int nc = N - j0 < ZNV * ENG_Q8_NV ? N - j0 : ZNV * ENG_Q8_NV;
                k_ztiles_q8[mr - 1][(nc + ENG_Q8_NV - 1) / ENG_Q8_NV - 1](
                    Xq + (size_t)i0 * xs, xs, Wq + (size_t)(j0 / ENG_Q8_NV) * gs, gs, nc, K,
                    Y + (size_t)i0 * ldy + j0, ldy);
            }
        }
        return;
    }
    if (panels_i16()) {
        const size_t gs16 = (size_t)(K / QK) * WBLK16;
        for (int i0 = 0; i0 < M; i0 += YMR) {
            const int mr = M - i0 < YMR ? M - i0 : YMR;
            for (int j0 = 0; j0 < N; j0 += ENG_Q8_NV)
                k_ytiles_q8[mr - 1](Xq + (size_t)i0 * xs, xs, Wq + (size_t)(j0 / ENG_Q8_NV) * gs16,
                                    N - j0, K, Y + (size_t)i0 * ldy + j0, ldy);
        }
        return;
    }
#endif
    gemm_q8_scalar(Xq, M, Wq, N, K, Y, ldy);
}

void eng_q8x_quantize_row(const float *x, int K, uint8_t *dst)
{
#if defined(__x86_64__)
    if (eng_gemm_level() >= ENG_GEMM_AVX2) {
        quantize_avx2(x, K, dst);
        return;
    }
#endif
    quantize_scalar(x, K, dst);
}

void eng_q8w_pack(const uint8_t *src, size_t row_bytes, int rows, int K, uint8_t *dst)
{
#if defined(__x86_64__)
    if (panels_i16()) {
        pack_i16_avx2(src, row_bytes, rows, K, dst);
        return;
    }
    if (eng_gemm_level() >= ENG_GEMM_AVX2) {
        pack_u8_avx2(src, row_bytes, rows, K, dst);
        return;
    }
#endif
    pack_scalar(src, row_bytes, rows, K, dst);
}
