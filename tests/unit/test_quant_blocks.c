/* test_quant_blocks.c: the dequantizers of Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K and Q5_K on
 * blocks built by hand from ggml's layouts (ggml-common.h), against values computed here
 * (test_quant.c has Q4_0, Q8_0 and Q6_K's). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "engine/gguf.h"
#include "engine/kernels/quant_internal.h"

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void expect(const char *what, const float *y, const float *want, int n)
{
    for (int i = 0; i < n; i++)
        if (y[i] != want[i])
            fail_msg("%s elem %d: %g, want %g", what, i, (double)y[i], (double)want[i]);
}

/* ---- 32-element blocks: d (and m) f16, then qh (4 bytes, bit j = element j's fifth bit),
 * then 16 bytes: element j in the low nibble of byte j, element j + 16 in the high one ---- */

static void pack32(uint8_t *qh, uint8_t *qs, const int v[32])
{
    memset(qs, 0, 16);
    if (qh)
        memset(qh, 0, 4);
    for (int j = 0; j < 32; j++) {
        qs[j % 16] |= (uint8_t)((v[j] & 15) << (j < 16 ? 0 : 4));
        if (qh)
            qh[j / 8] |= (uint8_t)((v[j] >> 4) << (j % 8));
    }
}

static void test_q4_1(void **state)
{
    (void)state;
    uint8_t b[2 * 20];
    int v[32];
    float want[64], y[64];
    for (int k = 0; k < 2; k++) {
        put16(b + 20 * k, k ? 0xc000 : 0x3800);     /* d = 0.5, then -2 */
        put16(b + 20 * k + 2, k ? 0x4200 : 0xbd00); /* m = -1.25, then 3 */
        for (int j = 0; j < 32; j++) {
            v[j] = (j * 7 + k) % 16;
            want[32 * k + j] = (float)v[j] * (k ? -2.0f : 0.5f) + (k ? 3.0f : -1.25f);
        }
        pack32(NULL, b + 20 * k + 4, v);
    }
    eng_dequant_row(GGML_T_Q4_1, b, y, 64);
    expect("q4_1", y, want, 64);
}

static void test_q5_0_q5_1(void **state)
{
    (void)state;
    uint8_t b0[22], b1[24];
    int v[32];
    float want0[32], want1[32], y[32];
    for (int j = 0; j < 32; j++) {
        v[j] = (j * 13 + 5) % 32; /* every code 0..31 once */
        want0[j] = (float)(v[j] - 16) * 0.25f;
        want1[j] = (float)v[j] * 0.25f + -0.5f;
    }
    put16(b0, 0x3400); /* d = 0.25 */
    pack32(b0 + 2, b0 + 6, v);
    eng_dequant_row(GGML_T_Q5_0, b0, y, 32);
    expect("q5_0", y, want0, 32);
    put16(b1, 0x3400);
    put16(b1 + 2, 0xb800); /* m = -0.5 */
    pack32(b1 + 4, b1 + 8, v);
    eng_dequant_row(GGML_T_Q5_1, b1, y, 32);
    expect("q5_1", y, want1, 32);
    /* literal bytes: qh bit 17 set and qs[1] = 0x20 make element 17 = 2 | 16 = 18 */
    memset(b0, 0, sizeof b0);
    put16(b0, 0x3c00);
    b0[2 + 2] = 0x02;
    b0[6 + 1] = 0x20;
    eng_dequant_row(GGML_T_Q5_0, b0, y, 32);
    for (int j = 0; j < 32; j++)
        assert_true(y[j] == (j == 17 ? 2.0f : -16.0f));
}

/* ---- K-quants: 256 elements; element 128h + 32k + l of Q2_K/Q3_K is bits 2k..2k+1 of
 * qs[32h + l] ---- */

static void pack2bit(uint8_t *qs, const int v[256])
{
    memset(qs, 0, 64);
    for (int e = 0; e < 256; e++)
        qs[32 * (e / 128) + e % 32] |= (uint8_t)((v[e] & 3) << (2 * ((e / 32) % 4)));
}

static void test_q2_k(void **state)
{
    (void)state;
    uint8_t b[84];
    int v[256], sc[16], mn[16];
    for (int j = 0; j < 16; j++) {
        sc[j] = (j * 5 + 3) % 16;
        mn[j] = (j * 11 + 1) % 16;
        b[j] = (uint8_t)(sc[j] | mn[j] << 4);
    }
    for (int e = 0; e < 256; e++)
        v[e] = (e * 7 + e / 64) % 4;
    pack2bit(b + 16, v);
    put16(b + 80, 0x3800); /* d = 0.5 */
    put16(b + 82, 0x3400); /* dmin = 0.25 */
    float y[256], want[256];
    for (int e = 0; e < 256; e++)
        want[e] = 0.5f * (float)sc[e / 16] * (float)v[e] - 0.25f * (float)mn[e / 16];
    eng_dequant_row(GGML_T_Q2_K, b, y, 256);
    expect("q2_k", y, want, 256);
}

static void test_q3_k(void **state)
{
    (void)state;
    uint8_t b[110];
    int v[256], sc[16];
    memset(b, 0, sizeof b);
    for (int j = 0; j < 16; j++)
        sc[j] = (j * 23 + 7) % 64 - 32; /* -32..31, several using the top 2 bits */
    /* 6-bit scale + 32: low 4 bits of scale j in byte j % 8 (low nibble for j < 8, high for
     * j >= 8); top 2 bits of scale 4w + k in bits 2w..2w+1 of byte 8 + k */
    for (int j = 0; j < 16; j++) {
        int s = sc[j] + 32;
        b[96 + j % 8] |= (uint8_t)((s & 15) << (j < 8 ? 0 : 4));
        b[96 + 8 + j % 4] |= (uint8_t)((s >> 4) << (2 * (j / 4)));
    }
    /* values -4..3: the low 2 bits of v + 4 in qs, its bit 2 in hmask[l] bit 4h + k */
    for (int e = 0; e < 256; e++) {
        v[e] = (e * 5 + e / 32) % 8 - 4;
        int c = v[e] + 4, h = e / 128, k = (e / 32) % 4, l = e % 32;
        b[l] |= (uint8_t)((c >> 2) << (4 * h + k));
        b[32 + 32 * h + l] |= (uint8_t)((c & 3) << (2 * k));
    }
    put16(b + 108, 0xb800); /* d = -0.5 */
    float y[256], want[256];
    for (int e = 0; e < 256; e++)
        want[e] = -0.5f * (float)sc[e / 16] * (float)v[e];
    eng_dequant_row(GGML_T_Q3_K, b, y, 256);
    expect("q3_k", y, want, 256);
}

/* Q4_K and Q5_K: 8 distinct 6-bit scales and mins, several using the top 2 bits (>= 16 for
 * 4..7), packed by hand from the GGUF layout. Element 32j + l (j = 0..7) keeps its low 4 bits
 * in qs[32 (j / 2) + l] (low nibble for even j); Q5_K's fifth bit is bit j of qh[l]. */
static void test_q4_k_q5_k(void **state)
{
    (void)state;
    static const int sc[8] = {1, 5, 17, 63, 33, 48, 7, 62};
    static const int mn[8] = {2, 9, 60, 31, 40, 3, 55, 16};
    static const uint8_t packed[12] = {0x81, 0xc5, 0x11, 0xff, 0x82, 0x09,
                                       0xfc, 0x5f, 0x81, 0x30, 0x77, 0x0e};
    for (int five = 0; five < 2; five++) {
        uint8_t b[176];
        memset(b, 0, sizeof b);
        put16(b, 0x3800);     /* d = 0.5 */
        put16(b + 2, 0x3400); /* dmin = 0.25 */
        memcpy(b + 4, packed, 12);
        uint8_t *qh = b + 16, *qs = b + (five ? 48 : 16);
        float y[256], want[256];
        for (int e = 0; e < 256; e++) {
            int j = e / 32, l = e % 32, v = (e * 11 + j) % (five ? 32 : 16);
            qs[32 * (j / 2) + l] |= (uint8_t)((v & 15) << (4 * (j % 2)));
            if (five)
                qh[l] |= (uint8_t)((v >> 4) << j);
            want[e] = 0.5f * (float)sc[j] * (float)v - 0.25f * (float)mn[j];
        }
        eng_dequant_row(five ? GGML_T_Q5_K : GGML_T_Q4_K, b, y, 256);
        expect(five ? "q5_k" : "q4_k", y, want, 256);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q4_1),
        cmocka_unit_test(test_q5_0_q5_1),
        cmocka_unit_test(test_q2_k),
        cmocka_unit_test(test_q3_k),
        cmocka_unit_test(test_q4_k_q5_k),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
