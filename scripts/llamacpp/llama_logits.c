/* llama_logits.c: llama.cpp's logits for a token sequence, through the prebuilt libllama's C API,
 * held against ours: the model-feature tests (tests/cli/llamacpp_model_features.sh) run `kvfetch generate
 * --logits` and this on the same file and ids. One llama_decode of the whole sequence, the last
 * position's logits; f32 K/V cache and flash attention off, so that the comparison is the exact
 * configuration (the tolerance of the golden files: 1e-4 absolute for f32 weights).
 *
 * usage: llama_logits LIBDIR MODEL.gguf ID,ID,... OUT.f32 [--compare OURS.f32 --tol T]
 * Writes n_vocab little-endian f32 to OUT.f32. With --compare, prints the largest absolute
 * difference to OURS.f32 and exits 2 when it exceeds T. Exit 1 on any failure, with one line. */
#define _POSIX_C_SOURCE 200809L
#include "llama.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet(enum ggml_log_level level, const char *text, void *user)
{
    (void)level, (void)text, (void)user;
}

static int fail(const char *what)
{
    fprintf(stderr, "llama_logits: %s\n", what);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 5 && argc != 9)
        return fail("usage: llama_logits LIBDIR MODEL.gguf ID,ID,... OUT.f32 [--compare OURS.f32 --tol T]");
    const char *ours = NULL;
    double tol = 0;
    if (argc == 9) {
        if (strcmp(argv[5], "--compare") || strcmp(argv[7], "--tol"))
            return fail("expected --compare OURS.f32 --tol T");
        ours = argv[6];
        tol = atof(argv[8]);
    }
    int32_t ids[4096];
    int n = 0;
    for (char *p = argv[3]; *p && n < 4096;) {
        ids[n++] = (int32_t)strtol(p, &p, 10);
        if (*p == ',')
            p++;
    }
    llama_log_set(quiet, NULL);
    ggml_backend_load_all_from_path(argv[1]);
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *model = llama_model_load_from_file(argv[2], mp);
    if (!model)
        return fail("llama.cpp cannot load the model");
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = cp.n_batch = cp.n_ubatch = (uint32_t)n;
    cp.n_seq_max = 1;
    cp.n_threads = cp.n_threads_batch = 2;
    cp.type_k = cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    struct llama_context *c = llama_init_from_model(model, cp);
    if (!c)
        return fail("llama_init_from_model failed");
    if (llama_decode(c, llama_batch_get_one(ids, n)) != 0)
        return fail("llama_decode failed");
    const float *lg = llama_get_logits_ith(c, -1);
    int nv = llama_vocab_n_tokens(llama_model_get_vocab(model));
    if (!lg)
        return fail("no logits");
    FILE *f = fopen(argv[4], "wb");
    if (!f || fwrite(lg, sizeof *lg, (size_t)nv, f) != (size_t)nv || fclose(f) != 0)
        return fail("cannot write the logits");
    int rc = 0;
    if (ours) {
        float *o = malloc((size_t)nv * sizeof *o);
        FILE *g = fopen(ours, "rb");
        if (!o || !g || fread(o, sizeof *o, (size_t)nv, g) != (size_t)nv || fgetc(g) != EOF)
            return fail("cannot read our logits (or their count is not n_vocab)");
        fclose(g);
        double worst = 0;
        int at = 0;
        for (int i = 0; i < nv; i++) {
            double d = fabs((double)o[i] - (double)lg[i]);
            if (!(d <= worst)) { /* NaN counts as the worst */
                worst = isnan(d) ? INFINITY : d;
                at = i;
            }
        }
        printf("max |ours - llama.cpp| = %.3g at token %d (tolerance %.3g)\n", worst, at, tol);
        rc = worst <= tol ? 0 : 2;
        free(o);
    }
    llama_free(c);
    llama_model_free(model);
    return rc;
}
