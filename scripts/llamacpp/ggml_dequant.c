/* ggml_dequant.c: ggml's own dequantization of random blocks, through the prebuilt libggml-base's
 * type traits (ggml_get_type_traits(type)->to_float), for the bit-exactness test
 * (tests/cli/llamacpp_quant.sh) that holds `kvsynth dequant` to it.
 *
 * usage: ggml_dequant TYPE NBLOCKS SEED BLOCKS.bin FLOATS.f32
 * TYPE is ggml's type name, any case (q4_1, q2_K, ...). Writes NBLOCKS random blocks (splitmix64
 * from SEED) with every f16 (bf16) field made finite, then the n_elements f32 that ggml's to_float
 * gives for them. Exit 1 on any failure, with one line. */
#define _POSIX_C_SOURCE 200809L
#include "ggml.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int fail(const char *what)
{
    fprintf(stderr, "ggml_dequant: %s\n", what);
    return 1;
}

static uint64_t next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Byte offsets of the half-precision fields in one block, from ggml-common.h's structs (the
 * block size checks them against the library's), -1 terminated; step 2 = every 2 bytes. */
typedef struct layout {
    const char *name;
    size_t bytes;
    int f16[3];
    int step2;
    int bf16;
} layout;

static const layout k_layouts[] = {
    {"q4_0", 18, {0, -1, -1}, 0, 0}, {"q4_1", 20, {0, 2, -1}, 0, 0},
    {"q5_0", 22, {0, -1, -1}, 0, 0}, {"q5_1", 24, {0, 2, -1}, 0, 0},
    {"q8_0", 34, {0, -1, -1}, 0, 0}, {"q2_K", 84, {80, 82, -1}, 0, 0},
    {"q3_K", 110, {108, -1, -1}, 0, 0}, {"q4_K", 144, {0, 2, -1}, 0, 0},
    {"q5_K", 176, {0, 2, -1}, 0, 0}, {"q6_K", 210, {208, -1, -1}, 0, 0},
    {"f16", 2, {-1, -1, -1}, 1, 0}, {"bf16", 2, {-1, -1, -1}, 1, 1},
};

/* A NaN or infinity becomes finite: clearing the exponent's top bit. */
static void make_finite(uint8_t *p, int bf16)
{
    uint16_t v = (uint16_t)(p[0] | p[1] << 8);
    uint16_t exp = bf16 ? 0x7f80 : 0x7c00;
    if ((v & exp) == exp)
        v &= (uint16_t)~0x4000;
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

int main(int argc, char **argv)
{
    if (argc != 6)
        return fail("usage: ggml_dequant TYPE NBLOCKS SEED BLOCKS.bin FLOATS.f32");
    const layout *lay = NULL;
    for (size_t i = 0; i < sizeof k_layouts / sizeof k_layouts[0]; i++)
        if (strcasecmp(k_layouts[i].name, argv[1]) == 0)
            lay = &k_layouts[i];
    const struct ggml_type_traits *tr = NULL;
    for (int t = 0; t < GGML_TYPE_COUNT && lay; t++) {
        const struct ggml_type_traits *c = ggml_get_type_traits((enum ggml_type)t);
        if (c && c->type_name && strcasecmp(c->type_name, lay->name) == 0)
            tr = c;
    }
    if (!lay || !tr || !tr->to_float)
        return fail("unknown type, or ggml has no to_float for it");
    if (tr->type_size != lay->bytes)
        return fail("block size differs from ggml's: the field offsets here are wrong");
    long nblocks = atol(argv[2]);
    uint64_t seed = strtoull(argv[3], NULL, 10);
    if (nblocks <= 0 || nblocks > 1 << 16)
        return fail("NBLOCKS must be 1..65536");
    size_t nbytes = (size_t)nblocks * lay->bytes;
    int64_t nel = nblocks * tr->blck_size;
    uint8_t *b = malloc(nbytes);
    float *y = malloc((size_t)nel * sizeof *y);
    if (!b || !y)
        return fail("out of memory");
    for (size_t i = 0; i < nbytes; i++)
        b[i] = (uint8_t)next(&seed);
    for (long k = 0; k < nblocks; k++) {
        uint8_t *blk = b + (size_t)k * lay->bytes;
        if (lay->step2)
            make_finite(blk, lay->bf16);
        for (int j = 0; j < 3 && lay->f16[j] >= 0; j++)
            make_finite(blk + lay->f16[j], 0);
    }
    tr->to_float(b, y, nel);
    FILE *f = fopen(argv[4], "wb");
    if (!f || fwrite(b, 1, nbytes, f) != nbytes || fclose(f) != 0)
        return fail("cannot write the blocks");
    f = fopen(argv[5], "wb");
    if (!f || fwrite(y, sizeof *y, (size_t)nel, f) != (size_t)nel || fclose(f) != 0)
        return fail("cannot write the floats");
    free(b);
    free(y);
    return 0;
}
