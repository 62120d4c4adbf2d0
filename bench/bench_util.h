/* bench_util.h: the timing and summary helpers the benchmarks share (header-only, libc and
 * POSIX only, so that scripts/llamacpp/llama_bench.c, built outside the Makefile against
 * llama.h alone, measures and prints exactly as bench/bench_engine.c does). */
#ifndef KVPUB_BENCH_UTIL_H
#define KVPUB_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* The run options both engine benchmarks take, so that their figures are of the same runs. */
typedef struct bench_opts {
    int threads; /* --threads N */
    int runs;    /* --runs N: figures are medians over this many runs */
    int n_dec;   /* --decode N: tokens per decode figure */
    int brief;   /* --brief 1: only the 2048-token prefill and the decode after it */
} bench_opts;

/* Stores "NAME VALUE" in o when NAME is one of bench_opts' options. Returns 1 if it was, 0 for
 * any other option (the caller's own, or unknown). */
static inline int bench_take_opt(bench_opts *o, const char *name, const char *value)
{
    int *at = strcmp(name, "--threads") == 0 ? &o->threads
              : strcmp(name, "--runs") == 0  ? &o->runs
              : strcmp(name, "--decode") == 0 ? &o->n_dec
              : strcmp(name, "--brief") == 0  ? &o->brief
                                              : NULL;
    if (at)
        *at = atoi(value);
    return at != NULL;
}

/* CPU seconds of this process: on a shared machine wall time measures the neighbours too,
 * so per-core figures use CPU time (single-threaded runs use exactly one core). */
static inline double bench_cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of v[0..n), n >= 1; sorts v in place. */
static inline double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Prints the process's peak resident set, the last line of both engine benchmarks. */
static inline void bench_print_peak_rss(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak RSS: %.1f MiB\n", (double)ru.ru_maxrss / 1024.0);
}

#endif
