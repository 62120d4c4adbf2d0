/* bench_limits.c: the two rates of this machine that bound the time to first token with a
 * cached blob (issue #14 asks for the distance to them), measured with every thread at once:
 *
 *   hash   SHA-256 leaf digests (kvc_leaf_digest, the engine the loader uses) over 512 KiB
 *          pieces in cache, as the loader's workers hash what they have just read;
 *   read   memory read bandwidth: each thread streams its own 256 MiB (huge pages where the
 *          kernel gives them, as the copied weights are), sum of all threads.
 *
 * With --kv-bytes and --weight-bytes it also gives the limit those rates set: a verified load
 * cannot take less than hashing every KV byte on all threads (kv / (threads * hash)), and the
 * prompt's pass cannot take less than reading every weight and every KV byte once ((weights +
 * kv) / read), and the pass needs the verified cells. Copies, page-cache reads, attention's
 * arithmetic and the zstd stage all come on top: the limit is a floor, not a forecast.
 * Figures are medians of --runs runs; JSON on stdout.
 * usage: bench_limits [--threads N] [--runs N] [--kv-bytes B --weight-bytes B] */
#include "base/base.h"
#include "bench/bench_util.h"
#include "crypto/kvcrypto.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MAX_THREADS = 64, PIECE = 512 << 10 };
#define HASH_BYTES ((size_t)256 << 20) /* hashed per thread per run */
#define READ_BYTES ((size_t)256 << 20) /* streamed per thread per run */

typedef struct worker {
    pthread_t th;
    pthread_barrier_t *start;
    int hash; /* 1: hash pieces; 0: stream the region */
    uint8_t *buf;
    size_t len;
    uint64_t sink;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    pthread_barrier_wait(w->start);
    if (w->hash) {
        uint8_t d[KVC_SHA256_LEN];
        for (size_t done = 0; done < HASH_BYTES; done += w->len) {
            kvc_leaf_digest(w->buf, w->len, d);
            w->sink += d[0];
        }
    } else {
        const uint64_t *p = (const uint64_t *)w->buf;
        uint64_t a[8] = {0};
        for (size_t i = 0; i + 8 <= w->len / 8; i += 8)
            for (int k = 0; k < 8; k++)
                a[k] ^= p[i + k];
        for (int k = 0; k < 8; k++)
            w->sink += a[k];
    }
    return NULL;
}

static volatile uint64_t g_sink; /* the sums and digests stay computed */

/* Seconds for every thread to do its share once, from a common start. */
static double run_once(worker *ws, int n, int hash)
{
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n + 1);
    for (int i = 0; i < n; i++) {
        ws[i].start = &start;
        ws[i].hash = hash;
        if (pthread_create(&ws[i].th, NULL, work, &ws[i]) != 0) {
            fputs("bench_limits: cannot start a thread\n", stderr);
            exit(1);
        }
    }
    pthread_barrier_wait(&start);
    const double t0 = base_now_s();
    for (int i = 0; i < n; i++)
        pthread_join(ws[i].th, NULL);
    const double t = base_now_s() - t0;
    pthread_barrier_destroy(&start);
    return t;
}

int main(int argc, char **argv)
{
    bench_opts o = {.threads = 0, .runs = 5};
    double kv = 0, weights = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            puts("usage: bench_limits [--threads N] [--runs N] [--kv-bytes B --weight-bytes B]\n"
                 "SHA-256 leaf-digest rate per core and memory read bandwidth with every thread at once,\n"
                 "and the time-to-first-token floor they set for KV and weights of those sizes (JSON).");
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench_limits: %s needs a value (try --help)\n", argv[i]);
            return 2;
        }
        if (strcmp(argv[i], "--kv-bytes") == 0)
            kv = atof(argv[++i]);
        else if (strcmp(argv[i], "--weight-bytes") == 0)
            weights = atof(argv[++i]);
        else if (!bench_take_opt(&o, argv[i], argv[i + 1])) {
            fprintf(stderr, "bench_limits: unexpected argument '%s' (try --help)\n", argv[i]);
            return 2;
        } else
            i++;
    }
    const int n = o.threads > 0 ? o.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1 || n > MAX_THREADS || o.runs < 1 || o.runs > 100 || kv < 0 || weights < 0) {
        fputs("bench_limits: bad arguments (--threads 1..64, --runs 1..100, sizes >= 0)\n", stderr);
        return 2;
    }
    static worker ws[MAX_THREADS];
    static double th[100], tr[100];
    for (int i = 0; i < n; i++) {
        ws[i].len = READ_BYTES;
        if (!(ws[i].buf = base_alloc_big(READ_BYTES))) {
            fputs("bench_limits: out of memory\n", stderr);
            return 1;
        }
        memset(ws[i].buf, i + 1, READ_BYTES); /* touched before any timing */
    }
    run_once(ws, n, 0); /* warm-up: pages mapped, threads' first runs */
    for (int r = 0; r < o.runs; r++)
        tr[r] = run_once(ws, n, 0);
    for (int i = 0; i < n; i++)
        ws[i].len = PIECE; /* the first 512 KiB of each region: in that core's cache after one pass */
    run_once(ws, n, 1);
    for (int r = 0; r < o.runs; r++)
        th[r] = run_once(ws, n, 1);
    const double hash = HASH_BYTES / bench_median(th, o.runs) / 1e9;      /* GB/s per thread */
    const double rd = (double)n * READ_BYTES / bench_median(tr, o.runs) / 1e9; /* GB/s, all */
    printf("{\n  \"threads\": %d,\n  \"hash_engine\": \"%s\",\n  \"hash_gbps_per_core\": %.3f,\n"
           "  \"read_gbps\": %.3f",
           n, kvc_leaf_digest_engine(), hash, rd);
    if (kv > 0) {
        const double load = kv / 1e9 / (n * hash), pass = (weights + kv) / 1e9 / rd;
        printf(",\n  \"kv_bytes\": %.0f,\n  \"weight_bytes\": %.0f,\n  \"load_floor_s\": %.4f,\n"
               "  \"pass_floor_s\": %.4f,\n  \"ttft_floor_s\": %.4f",
               kv, weights, load, pass, load + pass);
    }
    puts("\n}");
    for (int i = 0; i < n; i++) {
        g_sink += ws[i].sink;
        base_free_big(ws[i].buf, READ_BYTES);
    }
    return 0;
}
