/* engine_test_util.h: helpers shared by the tests that run models (test_engine_*.c,
 * test_kvpub_*.c; header-only, so nothing is linked into other tests): paths and models under
 * $KVPUB_SHARED, golden JSON/bin loading, comparisons. */
#ifndef KVPUB_ENGINE_TEST_UTIL_H
#define KVPUB_ENGINE_TEST_UTIL_H

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/engine.h"

/* Tolerances on the last-position logits per weight type and KV config, set at about twice
 * what we measured against llama.cpp (measured worst in brackets; each run prints them).
 * exact, F32 weights: both engines compute in f32 and differ by summation order only
 * [2.7e-5 / 1.5e-6]. F16 / Q8_0 weights: we round activations as ggml feeds them to these
 * weight types (f16, Q8_0 blocks) [2.7e-3 / 4.1e-4]. f16kv additionally rounds K/V to f16 and
 * ggml then also rounds q and the softmax weights to f16; we round q but keep the softmax
 * weights in f32 (online softmax), so the V product differs by f16 noise [F32 1.0e-2 / 6.8e-4,
 * F16 6.7e-3 / 1.0e-3]. The Q8_0 synthetic models amplify such noise through the Q8_0
 * activation rounding: llama.cpp's own exact and f16kv logits for them differ by up to 0.14,
 * and ours are within that [0.15 / 0.024]. */
typedef struct tol {
    double maxabs;
    double nerr;
} tol;

enum { W_F32, W_F16, W_Q80 };
__attribute__((unused)) static const tol k_tol[3][2] = {
    /* exact,        f16kv */
    {{1e-4, 1e-5}, {2e-2, 1.5e-3}}, /* F32 */
    {{5e-3, 8e-4}, {1.5e-2, 2e-3}}, /* F16 */
    {{5e-3, 8e-4}, {0.3, 0.05}},    /* Q8_0 */
};
/* Argmax / greedy steps whose top-1 / top-2 margin is below twice the logit tolerance, and at
 * least MIN_MARGIN (decode steps accumulate their own rounding over 32 steps), may
 * legitimately differ: comparisons stop (greedy) or accept the flip (argmax) there. */
__attribute__((unused)) static const double MIN_MARGIN = 0.05;

/* The models llama.cpp's goldens cover (shared/golden/{models,kshift}/NAME.json), with the
 * weight type that picks their row of k_tol. */
typedef struct et_golden_model {
    const char *name;
    int wtype;
} et_golden_model;

enum { ET_N_GOLDEN = 10 };
__attribute__((unused)) static const et_golden_model k_golden_models[ET_N_GOLDEN] = {
    {"stories260K", W_F32},
    {"synth-llama-tiny-f32", W_F32}, {"synth-llama-tiny-f16", W_F16}, {"synth-llama-tiny-q80", W_Q80},
    {"synth-qwen2-tiny-f32", W_F32}, {"synth-qwen2-tiny-f16", W_F16}, {"synth-qwen2-tiny-q80", W_Q80},
    {"synth-qwen3-tiny-f32", W_F32}, {"synth-qwen3-tiny-f16", W_F16}, {"synth-qwen3-tiny-q80", W_Q80},
};

/* The K/V cache of a golden case's config: 1 for "exact" (f32 cells), 0 for "f16kv", -1 for
 * any other (llama.cpp's "default" is flash attention, covered by f16kv's tolerance). */
static inline int et_config_kv_f32(const char *config)
{
    if (strcmp(config, "exact") == 0)
        return 1;
    return strcmp(config, "f16kv") == 0 ? 0 : -1;
}

static inline const char *et_shared(void)
{
    const char *s = getenv("KVPUB_SHARED");
    return s && *s ? s : "../shared";
}

/* "shared/golden/x" (as golden JSON stores paths) or "golden/x" -> $KVPUB_SHARED/golden/x */
static inline void et_path(char *out, size_t n, const char *rel)
{
    if (strncmp(rel, "shared/", 7) == 0)
        rel += 7;
    snprintf(out, n, "%s/%s", et_shared(), rel);
}

static inline float *et_read_f32(const char *rel, size_t want)
{
    char p[1024];
    et_path(p, sizeof p, rel);
    FILE *f = fopen(p, "rb");
    if (!f)
        return NULL;
    float *buf = malloc(want * sizeof(float));
    size_t got = buf ? fread(buf, sizeof(float), want, f) : 0;
    fclose(f);
    if (got != want) {
        free(buf);
        return NULL;
    }
    return buf;
}

static inline json_t *et_load_json(const char *rel)
{
    char p[1024];
    et_path(p, sizeof p, rel);
    json_error_t e;
    return json_load_file(p, 0, &e);
}

static inline int32_t *et_json_ids(json_t *arr, size_t *n)
{
    *n = json_array_size(arr);
    int32_t *ids = malloc((*n + 1) * sizeof(int32_t));
    for (size_t i = 0; i < *n; i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    return ids;
}

static inline eng_model *et_load_model(const char *rel)
{
    char p[1024], err[512];
    et_path(p, sizeof p, rel);
    eng_model *m = NULL;
    eng_status st = eng_model_load(p, &m, err, sizeof err);
    if (st != ENG_OK)
        fprintf(stderr, "load %s: %s\n", p, err);
    return m;
}

/* Writes a model with `$BUILD/kvsynth ARGS -o OUT` (out: a path unique to this process and
 * tag) and loads it; NULL, with the reason on stderr, when kvsynth or the load fails. */
static inline eng_model *et_synth(const char *tag, const char *args, char *out, size_t n)
{
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    char cmd[1536], err[256];
    snprintf(out, n, "/tmp/kvpub-test-%s-%d.gguf", tag, (int)getpid());
    snprintf(cmd, sizeof cmd, "%s/kvsynth %s -o %s >/dev/null", build, args, out);
    eng_model *m = NULL;
    if (system(cmd) != 0 || eng_model_load(out, &m, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "kvsynth %s: failed\n", args);
        return NULL;
    }
    return m;
}

static inline eng_ctx *et_ctx(eng_model *m, int n_ctx, int kv_f32)
{
    eng_ctx_params cp = {n_ctx, 2, kv_f32};
    eng_ctx *c = NULL;
    char err[256];
    if (eng_ctx_create(m, &cp, &c, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "ctx: %s\n", err);
        return NULL;
    }
    return c;
}

typedef struct et_err {
    double maxabs;
    double nerr; /* ||a - b||_2 / ||b||_2 */
} et_err;

static inline et_err et_compare(const float *a, const float *b, size_t n)
{
    double d2 = 0, b2 = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        if (isnan(d))
            d = INFINITY;
        d2 += d * d;
        b2 += (double)b[i] * b[i];
        if (fabs(d) > mx)
            mx = fabs(d);
    }
    et_err e = {mx, b2 > 0 ? sqrt(d2 / b2) : sqrt(d2)};
    return e;
}

static inline int et_argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

#endif
