/* kvsynth/dequant.c: `kvsynth dequant TYPE IN OUT`, our side of the bit-exactness test against
 * ggml (tests/cli/llamacpp_quant.sh): raw blocks of a ggml type in, the engine's dequantized
 * floats out (little-endian f32, what eng_dequant_row gives). */
#include "kvsynth/kvsynth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/gguf.h"

enum { MAX_IN = 64 << 20 }; /* a test input, not a model */

static int fail(const char *what, const char *arg)
{
    fprintf(stderr, "kvsynth dequant: %s%s%s\n", what, arg ? ": " : "", arg ? arg : "");
    return 2;
}

/* ggml's names as engine/gguf/types.c spells them (q4_k, not Q4_K). */
static int type_by_name(const char *s, uint32_t *type)
{
    for (uint32_t t = 0; t < 64; t++) {
        const char *name;
        if (ggml_type_traits(t, NULL, NULL, &name) && strcmp(name, s) == 0) {
            *type = t;
            return 1;
        }
    }
    return 0;
}

int kvsynth_dequant_main(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs("usage: kvsynth dequant [--scalar] TYPE IN.bin OUT.f32\n"
              "Reads whole blocks of the ggml tensor type TYPE (q4_0, q4_1, q5_0, q5_1, q8_0, q2_k,\n"
              "q3_k, q4_k, q5_k, q6_k, f16, bf16, f32) and writes the engine's dequantized values\n"
              "as little-endian f32. --scalar: the portable code even where the CPU has AVX2.\n",
              stdout);
        return 0;
    }
    if (argc == 5 && strcmp(argv[1], "--scalar") == 0) {
        eng_quant_force_scalar(1);
        argc--, argv++;
    }
    if (argc != 4)
        return fail("expected [--scalar] TYPE IN.bin OUT.f32 (try --help)", NULL);
    uint32_t type, blck, bytes;
    if (!type_by_name(argv[1], &type) || !ggml_type_traits(type, &blck, &bytes, NULL))
        return fail("unknown type", argv[1]);
    FILE *f = fopen(argv[2], "rb");
    if (!f)
        return fail("cannot open", argv[2]);
    uint8_t *in = malloc(MAX_IN + 1);
    size_t n = in ? fread(in, 1, MAX_IN + 1, f) : 0;
    fclose(f);
    if (!in || n > MAX_IN || n % bytes != 0) {
        free(in);
        return fail("input is not a whole number of blocks (or over 64 MiB)", argv[2]);
    }
    int64_t nel = (int64_t)(n / bytes) * blck;
    float *out = malloc((size_t)nel * sizeof *out + 1);
    if (!out) {
        free(in);
        return fail("out of memory", NULL);
    }
    memset(out, 0xff, (size_t)nel * sizeof *out); /* NaN: a type without a dequantizer shows */
    eng_dequant_row(type, in, out, nel);
    FILE *g = fopen(argv[3], "wb");
    int ok = g && fwrite(out, sizeof *out, (size_t)nel, g) == (size_t)nel;
    if (g && fclose(g) != 0)
        ok = 0;
    free(in);
    free(out);
    return ok ? 0 : fail("cannot write", argv[3]);
}
