/* test_quant.c: engine/quant*.c against independent references: f16 arithmetic definitions,
 * hand-built ggml blocks with known values, double-precision dots, and real GGUF tensors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/kernels/quant_blocks.h"
#include "engine/kernels/quant_internal.h"

/* ---- helpers ---- */

static uint64_t rng_next(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rng_unit(uint64_t *s) /* uniform in [-1, 1) */
{
    return (float)((double)(rng_next(s) >> 11) * 0x1p-52 - 1.0);
}

static float bits_f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static int f16_is_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff); }

/* f16 value from its definition, in double. */
static double f16_ref(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? INFINITY : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static size_t row_bytes(uint32_t type, int64_t n)
{
    size_t rb = ggml_row_bytes(type, (uint64_t)n);
    assert_true(rb > 0);
    return rb;
}

/* ---- f16 / bf16 ---- */

static void test_f16_all_patterns(void **state)
{
    (void)state;
    static uint16_t hs[65536];
    static float fs[65536], fr[65536];
    for (uint32_t h = 0; h < 65536; h++) {
        hs[h] = (uint16_t)h;
        float f = base_f16_to_f32((uint16_t)h);
        fs[h] = f;
        if (f16_is_nan((uint16_t)h)) {
            assert_true(isnan(f));
            assert_true(f16_is_nan(base_f32_to_f16(f)));
            continue;
        }
        assert_true((double)f == f16_ref((uint16_t)h));
        assert_int_equal(base_f32_to_f16(f), h); /* exact round trip */
    }
    /* the row (F16C where present) versions agree bit for bit with the scalar ones */
    eng_f16_to_f32_row(hs, fr, 65536);
    for (uint32_t h = 0; h < 65536; h++) {
        if (f16_is_nan((uint16_t)h))
            assert_true(isnan(fr[h]));
        else
            assert_int_equal(f_bits(fr[h]), f_bits(fs[h]));
    }
    assert_true(base_f16_to_f32(0x3c00) == 1.0f);
    assert_true(base_f16_to_f32(0xc000) == -2.0f);
    assert_true(base_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(base_f16_to_f32(0x0001) == 0x1p-24f);
    assert_true(base_f16_to_f32(0x03ff) == 1023 * 0x1p-24f);
    assert_true(base_f16_to_f32(0x0400) == 0x1p-14f);
    assert_true(isinf(base_f16_to_f32(0xfc00)) && base_f16_to_f32(0xfc00) < 0);
    assert_int_equal(f_bits(base_f16_to_f32(0x8000)), 0x80000000u);
}

static void test_f32_to_f16_rounding(void **state)
{
    (void)state;
    static const struct { float f; uint16_t h; } cases[] = {
        {1.0f + 0x1p-11f, 0x3c00},          /* tie between 1 and 1+2^-10: even (down) */
        {1.0f + 3 * 0x1p-11f, 0x3c02},      /* tie between odd and even: up to even */
        {1.0f + 0x1p-11f + 0x1p-20f, 0x3c01}, /* just above the tie */
        {65504.0f, 0x7bff},
        {65519.996f, 0x7bff},
        {65520.0f, 0x7c00},                  /* tie to even = 2^16 = inf */
        {1e10f, 0x7c00},
        {-1e10f, 0xfc00},
        {0x1p-25f, 0x0000},                  /* tie between 0 and the smallest subnormal */
        {0x1p-25f * 1.0000001f, 0x0001},
        {3 * 0x1p-25f, 0x0002},              /* tie between subnormals 1 and 2 */
        {5 * 0x1p-25f, 0x0002},              /* tie between 2 and 3 */
        {0x1p-14f - 0x1p-25f, 0x0400},       /* tie at the subnormal/normal border */
        {0x1p-30f, 0x0000},
        {-0x1p-30f, 0x8000},
        {0x1p-140f, 0x0000},                 /* f32 subnormal */
        {-0.0f, 0x8000},
        {0.333333343f, 0x3555},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = base_f32_to_f16(cases[i].f);
        if (h != cases[i].h)
            fail_msg("f32 %a -> f16 %04x, want %04x", (double)cases[i].f, h, cases[i].h);
    }
    assert_int_equal(base_f32_to_f16(INFINITY), 0x7c00);
    assert_true(f16_is_nan(base_f32_to_f16(NAN)));

    /* random finite values: the result is a nearest f16, ties to an even mantissa */
    uint64_t s = 42;
    enum { N = 1 << 18 };
    static float src[N];
    static uint16_t rowh[N];
    for (int i = 0; i < N; i++) {
        uint32_t u = (uint32_t)rng_next(&s);
        if (i < N / 2) /* concentrate half of them on the f16 range */
            u = (u & 0x80000000u) | (0x33000000u + (u & 0x7fffffffu) % (0x477ff000u - 0x33000000u));
        src[i] = bits_f(u);
    }
    for (int i = 0; i < N; i++) {
        float f = src[i];
        uint16_t h = base_f32_to_f16(f);
        if (isnan(f)) {
            assert_true(f16_is_nan(h));
            continue;
        }
        if (fabsf(f) >= 65520.0f) {
            assert_int_equal(h & 0x7fff, 0x7c00);
            continue;
        }
        double err = fabs(f16_ref(h) - (double)f);
        uint16_t mag = h & 0x7fff;
        double up = fabs(f16_ref((uint16_t)((h & 0x8000) | (mag + 1))) - (double)f);
        double dn = mag ? fabs(f16_ref((uint16_t)((h & 0x8000) | (mag - 1))) - (double)f) : INFINITY;
        assert_true(err <= up && err <= dn);
        if (err == up || err == dn)
            assert_int_equal(h & 1, 0);
    }
    /* the F16C row conversion (where present) agrees bit for bit, NaNs included */
    eng_f32_to_f16_row(src, rowh, N);
    for (int i = 0; i < N; i++)
        if (rowh[i] != base_f32_to_f16(src[i]))
            fail_msg("row %04x vs scalar %04x for %08x", rowh[i], base_f32_to_f16(src[i]), f_bits(src[i]));
}

static void test_bf16(void **state)
{
    (void)state;
    assert_true(base_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(base_bf16_to_f32(0xc000) == -2.0f);
    assert_true(base_bf16_to_f32(0x3e80) == 0.25f);
    float src[4] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -1.0f - 0x1p-8f - 0x1p-20f, NAN};
    uint8_t dst[8];
    assert_int_equal(eng_quantize_row(GGML_T_BF16, src, dst, 4), 8);
    assert_int_equal(dst[0] | dst[1] << 8, 0x3f80); /* tie: even */
    assert_int_equal(dst[2] | dst[3] << 8, 0x3f82); /* tie: up to even */
    assert_int_equal(dst[4] | dst[5] << 8, 0xbf81);
    float back[4];
    eng_dequant_row(GGML_T_BF16, dst, back, 4);
    assert_true(back[0] == 1.0f && back[1] == 1.0f + 0x1p-6f && isnan(back[3]));
}

static void test_dequant_f16_paths(void **state)
{
    (void)state;
    /* aligned (F16C) and odd-address (byte loads) rows, fast and forced-scalar: all exact */
    enum { N = 203 };
    uint8_t buf[2 * N + 1];
    uint64_t s = 5;
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)rng_next(&s);
    for (int i = 0; i < N; i++) /* no NaNs, so values compare exactly */
        if ((buf[2 * i + 1] & 0x7c) == 0x7c)
            buf[2 * i + 1] &= 0xbf;
    float y[N];
    for (int scalar = 0; scalar < 2; scalar++) {
        eng_quant_force_scalar(scalar);
        for (int off = 0; off < 2; off++) {
            eng_dequant_row(GGML_T_F16, buf + off, y, N);
            for (int i = 0; i < N; i++) {
                uint16_t h = (uint16_t)(buf[off + 2 * i] | buf[off + 2 * i + 1] << 8);
                if (!f16_is_nan(h) && (double)y[i] != f16_ref(h))
                    fail_msg("scalar %d offset %d elem %d: %04x -> %g", scalar, off, i, h, (double)y[i]);
            }
        }
    }
    eng_quant_force_scalar(0);
}

/* ---- hand-built blocks ---- */

static void test_dequant_q4_0_block(void **state)
{
    (void)state;
    uint8_t b[2 * 18];
    for (int k = 0; k < 2; k++) {
        b[18 * k] = 0x00;
        b[18 * k + 1] = k ? 0xc0 : 0x38; /* d = 0.5, then -2 */
        for (int j = 0; j < 16; j++)
            b[18 * k + 2 + j] = (uint8_t)(j | ((15 - j) << 4));
    }
    float y[64];
    eng_dequant_row(GGML_T_Q4_0, b, y, 64);
    for (int j = 0; j < 16; j++) {
        assert_true(y[j] == (float)(j - 8) * 0.5f);        /* low nibbles: elements 0..15 */
        assert_true(y[16 + j] == (float)(7 - j) * 0.5f);   /* high nibbles: 16..31 */
        assert_true(y[32 + j] == (float)(j - 8) * -2.0f);
        assert_true(y[48 + j] == (float)(7 - j) * -2.0f);
    }
}

static void test_dequant_q8_0_block(void **state)
{
    (void)state;
    uint8_t b[34 * 3];
    for (int k = 0; k < 3; k++) {
        b[34 * k] = 0x00;
        b[34 * k + 1] = 0x34; /* d = 0.25 */
        for (int j = 0; j < 32; j++)
            b[34 * k + 2 + j] = (uint8_t)(int8_t)(j - 16 + 37 * k);
    }
    b[2] = 0x80; /* -128 */
    float y[96];
    eng_dequant_row(GGML_T_Q8_0, b, y, 96);
    assert_true(y[0] == -32.0f);
    for (int k = 0; k < 3; k++)
        for (int j = (k == 0); j < 32; j++)
            assert_true(y[32 * k + j] == (float)(int8_t)(j - 16 + 37 * k) * 0.25f);
    eng_quant_force_scalar(1);
    float z[96];
    eng_dequant_row(GGML_T_Q8_0, b, z, 96);
    eng_quant_force_scalar(0);
    assert_memory_equal(y, z, sizeof y);
}

/* Q6_K packing from the GGUF layout: per half h of 128, element 32k + l keeps its low 4 bits
 * in ql[64h + l + 32 (k & 1)] (low nibble for k < 2, high for k >= 2) and its top 2 bits in
 * bits 2k..2k+1 of qh[32h + l]. */
static void pack_q6_k(const int v[256], const int8_t sc[16], uint16_t d, uint8_t b[210])
{
    memset(b, 0, 210);
    for (int h = 0; h < 2; h++) {
        const int *w = v + 128 * h;
        for (int l = 0; l < 32; l++) {
            b[64 * h + l] = (uint8_t)((w[l] & 15) | ((w[l + 64] & 15) << 4));
            b[64 * h + 32 + l] = (uint8_t)((w[l + 32] & 15) | ((w[l + 96] & 15) << 4));
            b[128 + 32 * h + l] = (uint8_t)((w[l] >> 4) | ((w[l + 32] >> 4) << 2) |
                                            ((w[l + 64] >> 4) << 4) | ((w[l + 96] >> 4) << 6));
        }
    }
    memcpy(b + 192, sc, 16);
    b[208] = (uint8_t)d;
    b[209] = (uint8_t)(d >> 8);
}

static void test_dequant_q6_k_block(void **state)
{
    (void)state;
    int v[256];
    int8_t sc[16];
    for (int e = 0; e < 256; e++)
        v[e] = (e * 37 + 11) % 64;
    for (int j = 0; j < 16; j++)
        sc[j] = (int8_t)((j * 7) % 31 - 15 + (j == 5 ? -100 : 0));
    uint8_t b[210];
    pack_q6_k(v, sc, 0x3800 /* 0.5 */, b);
    float y[256];
    eng_dequant_row(GGML_T_Q6_K, b, y, 256);
    for (int e = 0; e < 256; e++)
        if (y[e] != 0.5f * (float)sc[e / 16] * (float)(v[e] - 32))
            fail_msg("q6_k elem %d: %g", e, (double)y[e]);

    /* literal bytes: ql[0] = 0x21, qh[0] = 0x01 makes element 0 = 1 | 16 = 17, element 64 = 2 */
    memset(b, 0, sizeof b);
    b[0] = 0x21;
    b[128] = 0x01;
    for (int j = 0; j < 16; j++)
        b[192 + j] = 1;
    b[209] = 0x3c; /* d = 1 */
    eng_dequant_row(GGML_T_Q6_K, b, y, 256);
    assert_true(y[0] == 17 - 32);
    assert_true(y[64] == 2 - 32);
    assert_true(y[32] == -32 && y[96] == -32 && y[1] == -32);
}

/* ---- quantize -> dequantize ---- */

/* eng_dequant_row_panel (the prefill's weight panels, SIMD where a type has it): the floats of
 * eng_dequant_row on the portable path, each at its panel place, for every type it takes. */
static void test_dequant_panels(void **state)
{
    (void)state;
    enum { N = 1024, STRIDE = 24 };
    static float x[N], ref[N], pan[N / 8 * STRIDE];
    static uint8_t q[N * 4];
    uint64_t s = 11;
    for (int i = 0; i < N; i++)
        x[i] = rng_unit(&s) * (i < 512 ? 1.0f : 0.001f);
    for (int i = 256; i < 320; i++)
        x[i] = 0; /* an all-zero stretch: mins of +0, zero values */
    static const uint32_t types[] = {GGML_T_F16,  GGML_T_Q8_0, GGML_T_Q2_K, GGML_T_Q3_K,
                                     GGML_T_Q4_K, GGML_T_Q5_K, GGML_T_Q6_K};
    int taken = 0;
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        assert_int_equal(eng_quantize_row(types[t], x, q, N), row_bytes(types[t], N));
        const int prev = eng_quant_force_scalar(1);
        eng_dequant_row(types[t], q, ref, N);
        eng_quant_force_scalar(prev);
        memset(pan, 0xff, sizeof pan);
        if (!eng_dequant_row_panel(types[t], q, pan, N, STRIDE))
            continue; /* no panel kernel on this CPU: the caller dequantizes rows */
        taken++;
        for (int k = 0; k < N; k++)
            assert_memory_equal(&ref[k], &pan[(k / 8) * STRIDE + k % 8], sizeof(float));
    }
    printf("panel dequantizers checked: %d of %zu types\n", taken, sizeof types / sizeof types[0]);
}

/* The K-quant panel dequantizers on arbitrary blocks (random bytes: every scale, min and code
 * a file may hold) whose f16 d and dmin take extreme values in turn: +-0, the smallest
 * subnormal, the largest finite, +-infinity (NaN products of 0 * inf), a NaN, ordinary ones.
 * Each float must have the scalar dequantizer's bits. */
static void test_dequant_panels_random(void **state)
{
    (void)state;
    enum { NB = 24, N = NB * 256, STRIDE = 16 };
    static const uint16_t ext[] = {0x0000, 0x8000, 0x0001, 0x8001, 0x7bff, 0xfbff, 0x7c00,
                                   0xfc00, 0x7e01, 0x3c00, 0xb555, 0x0400};
    static const struct {
        uint32_t type;
        int d, dmin; /* byte offsets of the f16 d and dmin (-1: none) */
    } kt[] = {
        {GGML_T_Q2_K, 80, 82}, {GGML_T_Q3_K, 108, -1}, {GGML_T_Q4_K, 0, 2},
        {GGML_T_Q5_K, 0, 2},   {GGML_T_Q6_K, 208, -1},
    };
    static float ref[N], pan[N / 8 * STRIDE];
    static uint8_t q[NB * 210];
    uint64_t s = 29;
    for (size_t t = 0; t < sizeof kt / sizeof kt[0]; t++) {
        const size_t bytes = row_bytes(kt[t].type, 256);
        for (size_t round = 0; round < sizeof ext / sizeof ext[0]; round++) {
            for (size_t i = 0; i < NB * bytes; i++)
                q[i] = (uint8_t)rng_next(&s);
            for (size_t i = 0; i < NB; i++) { /* every (d, dmin) pair of extremes over the rounds */
                const size_t e = sizeof ext / sizeof ext[0];
                qb_st16(q + i * bytes + kt[t].d, ext[i % e]);
                if (kt[t].dmin >= 0)
                    qb_st16(q + i * bytes + kt[t].dmin, ext[(i + round) % e]);
            }
            const int prev = eng_quant_force_scalar(1);
            eng_dequant_row(kt[t].type, q, ref, N);
            eng_quant_force_scalar(prev);
            memset(pan, 0xff, sizeof pan);
            if (!eng_dequant_row_panel(kt[t].type, q, pan, N, STRIDE))
                break; /* no panel kernel on this CPU */
            for (int k = 0; k < N; k++)
                if (memcmp(&ref[k], &pan[(k / 8) * STRIDE + k % 8], sizeof(float)))
                    fail_msg("type %u round %zu elem %d: panel %a, scalar %a", kt[t].type, round, k,
                             (double)pan[(k / 8) * STRIDE + k % 8], (double)ref[k]);
        }
    }
}

static void test_quantize_roundtrip(void **state)
{
    (void)state;
    enum { N = 2048 };
    static float x[N], y[N];
    static uint8_t q[N * 4];
    uint64_t s = 7;
    for (int i = 0; i < N; i++)
        x[i] = rng_unit(&s) * (i < 1024 ? 1.0f : 0.01f);
    for (int i = 256; i < 288; i++) /* one all-zero Q4_0/Q8_0 block, half a K sub-block run */
        x[i] = 0;
    x[700] = 9.0f;  /* outliers */
    x[1500] = -3.0f;
    x[1501] = 4.0f;

    static const uint32_t types[] = {GGML_T_F32, GGML_T_F16, GGML_T_BF16, GGML_T_Q8_0,
                                     GGML_T_Q4_0, GGML_T_Q4_K, GGML_T_Q6_K, GGML_T_Q4_1,
                                     GGML_T_Q5_0, GGML_T_Q5_1, GGML_T_Q2_K, GGML_T_Q3_K,
                                     GGML_T_Q5_K};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        uint32_t type = types[t];
        size_t rb = eng_quantize_row(type, x, q, N);
        assert_int_equal(rb, row_bytes(type, N));
        eng_dequant_row(type, q, y, N);
        double se = 0, sx = 0;
        uint32_t blck, bb;
        assert_true(ggml_type_traits(type, &blck, &bb, NULL));
        for (int i = 0; i < N; i++) {
            double e = fabs((double)y[i] - x[i]), bound = 0;
            const float *sb = x + i / 256 * 256, *sub = x + i / 16 * 16;
            float lo = 0, hi = 0, amax = 0, asub = 0;
            for (int l = 0; l < 256; l++) {
                lo = fminf(lo, sb[l]);
                hi = fmaxf(hi, sb[l]);
                amax = fmaxf(amax, fabsf(sb[l]));
            }
            for (int l = 0; l < 16; l++)
                asub = fmaxf(asub, fabsf(sub[l]));
            /* d of the element's block where it is at byte 0 (Q4_1, Q5_0, Q5_1) */
            const uint8_t *qb = q + (size_t)bb * (size_t)(i / (int)blck);
            double d32 = fabs(f16_ref((uint16_t)(qb[0] | qb[1] << 8)));
            se += e * e;
            sx += (double)x[i] * x[i];
            switch (type) {
            case GGML_T_F32: bound = 0; break;
            case GGML_T_F16: bound = fabs(x[i]) * 0x1p-11 + 0x1p-25; break;
            case GGML_T_BF16: bound = fabs(x[i]) * 0x1p-8; break;
            case GGML_T_Q8_0: /* d rounded up to f16, so no clipping: half a step */
                bound = 0.5 * f16_ref((uint16_t)(q[34 * (i / 32)] | q[34 * (i / 32) + 1] << 8)) * 1.0001;
                break;
            case GGML_T_Q4_0: /* the +max side may clip by up to one step */
                bound = fabs(f16_ref((uint16_t)(q[18 * (i / 32)] | q[18 * (i / 32) + 1] << 8))) * 1.001;
                break;
            case GGML_T_Q4_K: /* half a step or the min's rounding, see quant_q4_k */
                bound = (hi - lo) / 30 * 1.02 + amax / 60 + 1e-7;
                break;
            case GGML_T_Q6_K:
                bound = asub / 62 * 1.001 + amax / (31 * 254) * 1.01 + 1e-7;
                break;
            case GGML_T_Q4_1: /* half a step, or the min rounded to f16 clipping */
            case GGML_T_Q5_1:
                bound = d32 * 0.5 * 1.001 + fabs(x[i]) * 0x1p-10 + 0x1p-20;
                break;
            case GGML_T_Q5_0: /* the +max side may clip by up to one step, as Q4_0 */
                bound = d32 * 1.001;
                break;
            case GGML_T_Q5_K:
                bound = (hi - lo) / 62 * 1.02 + amax / 60 + 1e-7;
                break;
            case GGML_T_Q2_K: /* half a step of up to (hi - lo) / 3, the scale's and min's rounding */
                bound = (hi - lo) / 6 * 1.02 + (hi - lo) / 90 + amax / 15 + 1e-7;
                break;
            case GGML_T_Q3_K: /* the +max side may clip by up to one step of asub / 4 */
                bound = asub / 4 * 1.2 + amax / 100 + 1e-7;
                break;
            }
            if (e > bound)
                fail_msg("type %u elem %d: x %g -> %g, error %g > bound %g", type, i, (double)x[i],
                         (double)y[i], e, bound);
        }
        double rel = sqrt(se / sx);
        static const double max_rel[] = {0, 3e-4, 3e-3, 1e-2, 0.12, 0.10, 0.03, 0.12, 0.08, 0.06,
                                         0.45, 0.22, 0.06};
        if (rel > max_rel[t])
            fail_msg("type %u: relative RMS error %g > %g", type, rel, max_rel[t]);
        print_message("quantize %-5u rel rms error %.3g\n", type, rel);
    }
    /* blocks we cannot write */
    assert_int_equal(eng_quantize_row(GGML_T_Q8_K, x, q, 256), 0);
    assert_int_equal(eng_quantize_row(GGML_T_Q8_0, x, q, 33), 0);
}

/* ---- matvec ---- */

typedef struct mv_case {
    uint32_t type;
    int64_t nrows, ncols;
    double tol; /* relative to sum |w * x| */
} mv_case;

static void check_matvec(const mv_case *c, uint64_t seed)
{
    size_t rb = row_bytes(c->type, c->ncols);
    uint8_t *W = malloc(rb * (size_t)c->nrows);
    float *x = malloc(sizeof(float) * (size_t)c->ncols);
    float *w = malloc(sizeof(float) * (size_t)c->ncols);
    float *y = malloc(sizeof(float) * (size_t)(c->nrows + 2));
    float *ys = malloc(sizeof(float) * (size_t)(c->nrows + 2));
    assert_true(W && x && w && y && ys);
    uint64_t s = seed;
    for (int64_t i = 0; i < c->ncols; i++)
        x[i] = rng_unit(&s) * (i % 7 == 0 ? 3.0f : 1.0f);
    for (int64_t r = 0; r < c->nrows; r++) {
        for (int64_t i = 0; i < c->ncols; i++)
            w[i] = rng_unit(&s) + (r % 3 == 0 ? 0.3f : 0.0f); /* some rows with a mean */
        assert_int_equal(eng_quantize_row(c->type, w, W + rb * (size_t)r, c->ncols), rb);
    }
    /* y[0] and y[nrows+1] are guards; rows computed as three ranges like threads would */
    for (int pass = 0; pass < 2; pass++) {
        float *out = pass ? ys : y;
        eng_quant_force_scalar(pass);
        for (int64_t r = 0; r < c->nrows + 2; r++)
            out[r] = -12345.0f;
        int64_t a = c->nrows / 3, b = 2 * c->nrows / 3;
        eng_matvec(c->type, W, rb, c->ncols, x, out + 1, 0, a);
        eng_matvec(c->type, W, rb, c->ncols, x, out + 1, a, b);
        eng_matvec(c->type, W, rb, c->ncols, x, out + 1, b, c->nrows);
        eng_matvec(c->type, W, rb, c->ncols, x, out + 1, 5, 5); /* empty range */
        assert_true(out[0] == -12345.0f && out[c->nrows + 1] == -12345.0f);
    }
    eng_quant_force_scalar(0);
    for (int64_t r = 0; r < c->nrows; r++) {
        eng_dequant_row(c->type, W + rb * (size_t)r, w, c->ncols);
        double ref = 0, mag = 0;
        for (int64_t i = 0; i < c->ncols; i++) {
            ref += (double)w[i] * x[i];
            mag += fabs((double)w[i] * x[i]);
        }
        double e = fabs(y[r + 1] - ref) / mag, es = fabs(ys[r + 1] - ref) / mag;
        double ed = fabs((double)y[r + 1] - ys[r + 1]) / mag;
        if (e > c->tol || es > c->tol || ed > 1e-5)
            fail_msg("type %u %lldx%lld row %lld: fast %g scalar %g ref %g (rel err %g, %g; "
                     "fast vs scalar %g)", c->type, (long long)c->nrows, (long long)c->ncols,
                     (long long)r, (double)y[r + 1], (double)ys[r + 1], ref, e, es, ed);
    }
    free(W);
    free(x);
    free(w);
    free(y);
    free(ys);
}

/* The AVX2 activation quantizer must give the scalar one's numbers exactly. */
static void test_xq_paths_agree(void **state)
{
    (void)state;
#if defined(__x86_64__)
    if (strcmp(eng_quant_kernels(), "avx2") != 0)
        skip();
    enum { N = 1024 };
    static float x[N];
    _Alignas(32) static int8_t q1[N], q2[N];
    static float d1[N / 32], d2[N / 32], s1[N / 32], s2[N / 32];
    static int16_t b1[N / 16], b2[N / 16];
    uint64_t s = 9;
    for (int i = 0; i < N; i++)
        x[i] = rng_unit(&s) * (float)(1 + i % 5);
    for (int i = 64; i < 96; i++)
        x[i] = 0;
    x[200] = 127.5f; /* exact .5 products appear at the block maximum's neighbours */
    for (int blk = 32; blk <= 256; blk *= 8) {
        eng_xq a = {.d = d1, .q = q1, .bsum = b1, .dsum = s1};
        eng_xq b = {.d = d2, .q = q2, .bsum = b2, .dsum = s2};
        eng_xq_quantize(x, N, blk, &a);
        eng_xq_quantize_avx2(x, N, blk, &b);
        assert_int_equal(a.nb, b.nb);
        assert_memory_equal(q1, q2, N);
        assert_memory_equal(d1, d2, sizeof(float) * (size_t)a.nb);
        assert_memory_equal(s1, s2, sizeof(float) * (size_t)a.nb);
        assert_memory_equal(b1, b2, sizeof(int16_t) * N / 16);
    }
#else
    skip();
#endif
}

/* Q3_K's AVX-512 VNNI kernel must give the AVX2 one's floats bit for bit (eng_matvec takes the
 * first where the CPU has it, so the AVX2 one is called directly), on quantized rows, on
 * random blocks with finite scales, and on the extremes (every code 7, every scale -32 or 31,
 * x at +-127 in pairs of one sign: the AVX2 kernel's widest maddubs sums), at several widths. */
static void test_q3k_vnni_agrees(void **state)
{
    (void)state;
#if defined(__x86_64__)
    if (strcmp(eng_quant_kernels(), "avx2") != 0 || !base_cpu_has(BASE_CPU_AVX512 | BASE_CPU_AVX512VNNI))
        skip();
    enum { ROWS = 9, MAXC = 3072 };
    static float x[MAXC], w[MAXC], y1[ROWS], y2[ROWS];
    static uint8_t W[ROWS * (MAXC / 256) * 110];
    _Alignas(32) static int8_t q[MAXC];
    static float d[MAXC / 256];
    static int16_t bs[MAXC / 16];
    uint64_t s = 17;
    static const int64_t widths[] = {256, 1024, 2816, 3072};
    for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {
        const int64_t n = widths[wi];
        const size_t rb = row_bytes(GGML_T_Q3_K, n);
        for (int round = 0; round < 3; round++) {
            for (int r = 0; r < ROWS; r++) {
                for (int64_t i = 0; i < n; i++)
                    w[i] = rng_unit(&s) * (r == 3 ? 100.0f : 1.0f);
                assert_int_equal(eng_quantize_row(GGML_T_Q3_K, w, W + (size_t)r * rb, n), rb);
            }
            if (round == 1) /* any scales and codes; d finite (exponent below 16) */
                for (size_t i = 0; i < rb * ROWS; i++)
                    W[i] = (uint8_t)((i % 110 == 109) ? rng_next(&s) & 0xbf : rng_next(&s));
            if (round == 2) /* hmask and codes all ones; scales all 0 or all 63 by row; d = 1 */
                for (size_t i = 0; i < rb * ROWS; i++) {
                    const size_t k = i % 110;
                    W[i] = k == 108 ? 0 : k == 109 ? 0x3c : k >= 96 && (i / rb) % 2 ? 0 : 0xff;
                }
            for (int64_t i = 0; i < n; i++)
                x[i] = round == 2 ? (i / 2 % 2 ? -1.0f : 1.0f) : rng_unit(&s) * (float)(1 + i % 3);
            eng_xq xq = {.d = d, .q = q, .bsum = bs};
            eng_xq_quantize(x, n, 256, &xq);
            eng_mv_k_avx2(GGML_T_Q3_K, W, rb, n, x, &xq, y1, 0, ROWS);
            eng_mv_q3_k_avx512vnni(GGML_T_Q3_K, W, rb, n, x, &xq, y2, 0, ROWS);
            assert_memory_equal(y1, y2, sizeof y1);
        }
    }
#else
    skip();
#endif
}

static void test_matvec(void **state)
{
    (void)state;
    print_message("kernels: %s\n", eng_quant_kernels());
    static const mv_case cases[] = {
        {GGML_T_F32, 37, 512, 1e-5}, {GGML_T_F32, 5, 77, 1e-5},
        {GGML_T_F16, 37, 512, 1e-5}, {GGML_T_F16, 5, 77, 1e-5},
        {GGML_T_BF16, 37, 512, 1e-5}, {GGML_T_BF16, 5, 77, 1e-5},
        {GGML_T_Q8_0, 37, 512, 1e-2}, {GGML_T_Q8_0, 5, 96, 1e-2}, /* odd block count */
        {GGML_T_Q4_0, 37, 512, 1e-2}, {GGML_T_Q4_0, 5, 96, 1e-2},
        {GGML_T_Q4_K, 37, 512, 1e-2}, {GGML_T_Q4_K, 5, 256, 1e-2},
        {GGML_T_Q6_K, 37, 512, 1e-2}, {GGML_T_Q6_K, 5, 256, 1e-2},
        {GGML_T_Q4_1, 37, 512, 1e-2}, {GGML_T_Q4_1, 5, 96, 1e-2},
        {GGML_T_Q5_0, 37, 512, 1e-2}, {GGML_T_Q5_0, 5, 96, 1e-2},
        {GGML_T_Q5_1, 37, 512, 1e-2}, {GGML_T_Q5_1, 5, 96, 1e-2},
        {GGML_T_Q2_K, 37, 512, 1e-2}, {GGML_T_Q2_K, 5, 256, 1e-2},
        {GGML_T_Q3_K, 37, 512, 1e-2}, {GGML_T_Q3_K, 5, 256, 1e-2},
        {GGML_T_Q5_K, 37, 512, 1e-2}, {GGML_T_Q5_K, 5, 256, 1e-2},
        /* longer than the on-stack activation scratch */
        {GGML_T_Q8_0, 3, 16384 + 1024, 1e-2}, {GGML_T_Q4_K, 3, 16384 + 1024, 1e-2},
        {GGML_T_Q6_K, 3, 16384 + 1024, 1e-2}, {GGML_T_Q4_0, 3, 16384 + 1024, 1e-2},
        {GGML_T_Q5_1, 3, 16384 + 1024, 1e-2}, {GGML_T_Q3_K, 3, 16384 + 1024, 1e-2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_matvec(&cases[i], 1000 + i);
}

/* ---- real tensors: the synthetic llama files hold the same weights as f32, f16 and q8_0 ---- */

typedef struct real_tensor {
    const char *name;
    size_t n;
    size_t off_f32, off_f16, off_q80; /* from the data section (at byte 12800 in all three) */
} real_tensor;

static uint8_t *read_file(const char *path, size_t want)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *buf = malloc(want + 1);
    size_t got = buf ? fread(buf, 1, want + 1, f) : 0;
    fclose(f);
    if (got != want) {
        free(buf);
        return NULL;
    }
    return buf;
}

static void test_real_tensors(void **state)
{
    (void)state;
    const char *shared = getenv("KVPUB_SHARED");
    char p32[512], p16[512], p80[512];
    const char *dir = "/models/synth/synth-llama-tiny-";
    snprintf(p32, sizeof p32, "%s%sf32.gguf", shared ? shared : "../shared", dir);
    snprintf(p16, sizeof p16, "%s%sf16.gguf", shared ? shared : "../shared", dir);
    snprintf(p80, sizeof p80, "%s%sq80.gguf", shared ? shared : "../shared", dir);
    /* offsets found once with a python struct walk of the GGUF headers; the sizes pin the
     * files (golden/README.md lists their SHA-256) */
    uint8_t *b32 = read_file(p32, 669440), *b16 = read_file(p16, 341760), *b80 = read_file(p80, 188160);
    if (!b32 || !b16 || !b80) {
        free(b32);
        free(b16);
        free(b80);
        print_message("synthetic models not found under %s: skipped\n", shared ? shared : "../shared");
        skip();
    }
    static const real_tensor ts[] = {
        {"token_embd.weight", 64 * 512, 0, 0, 0},
        {"blk.0.ffn_down.weight", 192 * 64, 279040, 139776, 74496},
        {"output.weight", 64 * 512, 525568, 263424, 140544},
    };
    const size_t data = 12800;
    float *f32 = malloc(sizeof(float) * 64 * 512), *f16 = malloc(sizeof(float) * 64 * 512);
    float *q80 = malloc(sizeof(float) * 64 * 512);
    assert_true(f32 && f16 && q80);
    for (size_t t = 0; t < sizeof ts / sizeof ts[0]; t++) {
        size_t n = ts[t].n;
        const uint8_t *h = b16 + data + ts[t].off_f16, *q = b80 + data + ts[t].off_q80;
        eng_dequant_row(GGML_T_F32, b32 + data + ts[t].off_f32, f32, (int64_t)n);
        eng_dequant_row(GGML_T_F16, h, f16, (int64_t)n);
        eng_dequant_row(GGML_T_Q8_0, q, q80, (int64_t)n);
        double maxe = 0;
        for (size_t i = 0; i < n; i++) {
            /* the f16 file is exactly our round-to-nearest-even of the f32 weights */
            uint16_t want = (uint16_t)(h[2 * i] | h[2 * i + 1] << 8);
            if (base_f32_to_f16(f32[i]) != want)
                fail_msg("%s[%zu]: f16(%a) = %04x, file has %04x", ts[t].name, i, (double)f32[i],
                         base_f32_to_f16(f32[i]), want);
            assert_true((double)f16[i] == f16_ref(want));
            /* q8_0 within half a step, plus the scale's own f16 rounding over 127 steps */
            double d = f16_ref((uint16_t)(q[34 * (i / 32)] | q[34 * (i / 32) + 1] << 8));
            double e = fabs((double)q80[i] - f32[i]);
            if (e > d * (0.5 + 127 * 0x1p-11) + 1e-9)
                fail_msg("%s[%zu]: q8_0 %g vs f32 %g (d %g)", ts[t].name, i, (double)q80[i],
                         (double)f32[i], d);
            maxe = fmax(maxe, e);
        }
        print_message("%s: q8_0 max abs error %.3g vs f32\n", ts[t].name, maxe);
    }
    free(f32);
    free(f16);
    free(q80);
    free(b32);
    free(b16);
    free(b80);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_all_patterns),
        cmocka_unit_test(test_f32_to_f16_rounding),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_dequant_f16_paths),
        cmocka_unit_test(test_dequant_q4_0_block),
        cmocka_unit_test(test_dequant_q8_0_block),
        cmocka_unit_test(test_dequant_q6_k_block),
        cmocka_unit_test(test_dequant_panels),
        cmocka_unit_test(test_dequant_panels_random),
        cmocka_unit_test(test_q3k_vnni_agrees),
        cmocka_unit_test(test_quantize_roundtrip),
        cmocka_unit_test(test_xq_paths_agree),
        cmocka_unit_test(test_matvec),
        cmocka_unit_test(test_real_tensors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
