/* bench_engine.c: engine throughput on one GGUF: prefill tokens/s at 512 and 2048 tokens,
 * decode tokens/s at 2048 context, the latency of small prefills (1, 8, 16, 32, 64 tokens) after the
 * 2048-token context (time to first token after loading a cached document), a decode step and
 * a 1-token prefill each after a 3 s pause (the first pass over the weights after a pause
 * costs more on a machine whose kernel ages pages, e.g. DAMON: both pay it), peak RSS; median
 * of --runs runs (default 3), one line per figure. Wall and process CPU seconds are both
 * printed for prefills: the machine may be shared.
 * usage: bench_engine MODEL.gguf [--threads N] [--runs N] [--decode N] [--brief 1] */
#include "base/base.h"
#include "bench/bench_util.h"
#include "engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { PAUSE_S = 3 };

/* With the cache cut back to n cells: one decode step, then (cut back again) one 1-token
 * prefill, each after PAUSE_S seconds of sleep: the first call after a pause, like for like. */
static int after_pause(eng_ctx *c, int n, int32_t tok, float *logits, double *dec_s, double *pre_s)
{
    if (eng_kv_truncate(c, n) != ENG_OK)
        return -1;
    sleep(PAUSE_S);
    double t = base_now_s();
    if (eng_decode(c, tok, -1, logits) != ENG_OK)
        return -1;
    *dec_s = base_now_s() - t;
    if (eng_kv_truncate(c, n) != ENG_OK)
        return -1;
    sleep(PAUSE_S);
    t = base_now_s();
    if (eng_prefill(c, &tok, NULL, 1, logits, NULL) != ENG_OK)
        return -1;
    *pre_s = base_now_s() - t;
    return eng_kv_truncate(c, n) == ENG_OK ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        fputs("usage: bench_engine MODEL.gguf [--threads N] [--runs N] [--decode N] [--brief 1]\n", argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    bench_opts o = {0, 3, 32, 0};
    for (int i = 2; i + 1 < argc; i += 2)
        bench_take_opt(&o, argv[i], argv[i + 1]);
    const int threads = o.threads, runs = o.runs, n_dec = o.n_dec;
    if (runs < 1 || runs > 99 || n_dec < 1) {
        fputs("bench_engine: bad --runs / --decode\n", stderr);
        return 2;
    }
    char err[512];
    eng_model *m = NULL;
    if (eng_model_load(argv[1], &m, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "bench_engine: %s\n", err);
        return 2;
    }
    const eng_info *hp = eng_model_info(m);
    enum { NMAX = 2048 };
    int32_t *toks = malloc(sizeof(int32_t) * (NMAX + 1));
    float *logits = malloc(sizeof(float) * (size_t)hp->n_vocab);
    uint64_t s = 1;
    for (int i = 0; i <= NMAX; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        toks[i] = i == 0 && hp->bos_id >= 0 ? hp->bos_id : (int32_t)((s >> 33) % (uint64_t)hp->n_vocab);
    }
    /* room for the decode steps or the largest small prefill after NMAX, whichever is more */
    enum { SMALL_MAX = 64 };
    eng_ctx_params cp = {NMAX + (n_dec > SMALL_MAX ? n_dec : SMALL_MAX) + 1, threads, 0};
    printf("model %s: %s, %d layers, n_embd %d, weight type %d, threads %d\n", argv[1], hp->arch,
           hp->n_layer, hp->n_embd, hp->weight_type, threads ? threads : eng_default_threads());
    const int lens[2] = {512, NMAX};
    enum { NSMALL = 5 };
    const int small[NSMALL] = {1, 8, 16, 32, SMALL_MAX};
    /* per small size: the first call after the 2048-token prefill (it also pays for the first
     * writes into the cache's next huge pages at exactly 2048 cells: one 2 MiB page per layer
     * for K and for V) and the median of SMALL_REPS calls after it (the steady cost, as the
     * decode steps are measured) */
    enum { SMALL_REPS = 3 };
    double dec[99], sm[NSMALL][99], sm1[NSMALL][99], pdec[99], ppre[99];
    const int nsmall = o.brief ? 0 : NSMALL;
    for (int li = o.brief ? 1 : 0; li < 2; li++) {
        double tps[99], cpu[99];
        for (int r = 0; r < runs; r++) {
            eng_ctx *c = NULL;
            if (eng_ctx_create(m, &cp, &c, err, sizeof err) != ENG_OK) {
                fprintf(stderr, "bench_engine: %s\n", err);
                return 2;
            }
            double t0 = base_now_s(), u0 = bench_cpu_s();
            if (eng_prefill(c, toks, NULL, (size_t)lens[li], logits, NULL) != ENG_OK) {
                fputs("bench_engine: prefill failed\n", stderr);
                return 2;
            }
            tps[r] = lens[li] / (base_now_s() - t0);
            cpu[r] = bench_cpu_s() - u0;
            if (lens[li] == NMAX) {
                for (int k = 0; k < nsmall; k++) {
                    double rep[SMALL_REPS + 1];
                    for (int q = 0; q <= SMALL_REPS; q++) {
                        double t1 = base_now_s();
                        if (eng_prefill(c, toks + 1, NULL, (size_t)small[k], logits, NULL) != ENG_OK) {
                            fputs("bench_engine: small prefill failed\n", stderr);
                            return 2;
                        }
                        rep[q] = base_now_s() - t1;
                        if (eng_kv_truncate(c, NMAX) != ENG_OK) {
                            fputs("bench_engine: truncate failed\n", stderr);
                            return 2;
                        }
                    }
                    sm1[k][r] = rep[0];
                    sm[k][r] = bench_median(rep + 1, SMALL_REPS);
                }
                int32_t t = toks[NMAX];
                double t1 = base_now_s();
                for (int i = 0; i < n_dec; i++) {
                    if (eng_decode(c, t, -1, logits) != ENG_OK) {
                        fputs("bench_engine: decode failed\n", stderr);
                        return 2;
                    }
                    t = (t * 7 + 3) % hp->n_vocab;
                }
                dec[r] = n_dec / (base_now_s() - t1);
                if (nsmall && after_pause(c, NMAX, toks[1], logits, &pdec[r], &ppre[r]) != 0) {
                    fputs("bench_engine: step after a pause failed\n", stderr);
                    return 2;
                }
            }
            eng_ctx_free(c);
        }
        printf("prefill %d tokens: %.2f tok/s (median of %d), %.2f CPU s per run\n", lens[li],
               bench_median(tps, runs), runs, bench_median(cpu, runs));
    }
    for (int k = 0; k < nsmall; k++)
        printf("prefill %d token(s) after %d: %.4f s (median of %d; the first call after the prefill: %.4f s)\n",
               small[k], NMAX, bench_median(sm[k], runs), runs, bench_median(sm1[k], runs));
    printf("decode at %d context: %.2f tok/s (median of %d, %d tokens each)\n", NMAX, bench_median(dec, runs), runs,
           n_dec);
    if (nsmall) {
        const double d = bench_median(pdec, runs), p1 = bench_median(ppre, runs);
        printf("after a %d s pause at %d context: decode step %.4f s, 1-token prefill %.4f s (%.2fx; median of %d)\n",
               PAUSE_S, NMAX, d, p1, p1 / d, runs);
    }
    bench_print_peak_rss();
    free(toks);
    free(logits);
    eng_model_free(m);
    return 0;
}
