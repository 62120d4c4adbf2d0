/* bench_fairness.c: small-request latency under download load: --clients libcurl transfers
 * (one multi handle, each client from its own loopback address) download large blobs over and
 * over while a probe thread sends small requests (catalog, manifest, HEAD of a blob) one at a
 * time, every fourth on a new connection. Prints p50/p90/p99/max of the probe's latencies,
 * of all requests (probe and downloads' time to first byte) and of whole downloads, and the
 * download throughput. Run by scripts/bench-fairness.sh against a kvpubd it starts. */
#include "bench/bench_util.h"

#include <pthread.h>
#include <stdint.h>

#include <curl/curl.h>

#define MAX_CLIENTS 1024
#define MAX_SAMPLES 200000
#define PROBE_GAP_MS 10
#define WARMUP_S 1.0

typedef struct samples {
    double *v;
    int n;
} samples;

static void add(samples *s, double x)
{
    if (s->n < MAX_SAMPLES)
        s->v[s->n++] = x;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Nearest-rank percentile p (0..100) of sorted v[0..n). */
static double pct(const double *v, int n, double p)
{
    int i = (int)(p / 100.0 * n + 0.999999) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static void report(const char *what, samples *s)
{
    if (!s->n) {
        printf("%-32s no samples\n", what);
        return;
    }
    qsort(s->v, (size_t)s->n, sizeof *s->v, bench_cmp_double);
    printf("%-32s n=%-6d p50 %7.1f ms  p90 %7.1f ms  p99 %7.1f ms  max %7.1f ms\n", what, s->n,
           pct(s->v, s->n, 50) * 1e3, pct(s->v, s->n, 90) * 1e3, pct(s->v, s->n, 99) * 1e3, s->v[s->n - 1] * 1e3);
}

typedef struct run {
    const char *base, *cacert, *blob; /* blob: the id the probe asks about */
    double start, warm, end;          /* recording from warm to end */
    samples probe, probe_new, all, whole;
    long probe_errors, dl_errors;
    double dl_bytes;
    pthread_mutex_t mu; /* `all` is shared by both threads */
} run;

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    if (ud)
        *(double *)ud += (double)(size * n);
    return size * n;
}

static void common(CURL *e, const run *r)
{
    curl_easy_setopt(e, CURLOPT_CAINFO, r->cacert);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 120L);
}

static void *probe_main(void *arg)
{
    run *r = arg;
    CURL *e = curl_easy_init();
    char urls[3][512];
    snprintf(urls[0], sizeof urls[0], "%s/v1/catalog", r->base);
    snprintf(urls[1], sizeof urls[1], "%s/v1/blobs/%s/manifest", r->base, r->blob);
    snprintf(urls[2], sizeof urls[2], "%s/v1/blobs/%s", r->base, r->blob);
    common(e, r);
    curl_easy_setopt(e, CURLOPT_INTERFACE, "host!127.0.0.2");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, NULL);
    for (unsigned i = 0; now_s() < r->end; i++) {
        int fresh = i % 4 == 3;
        curl_easy_setopt(e, CURLOPT_URL, urls[i % 3]);
        curl_easy_setopt(e, CURLOPT_NOBODY, i % 3 == 2 ? 1L : 0L);
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, (long)fresh);
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, (long)fresh);
        double t0 = now_s();
        CURLcode rc = curl_easy_perform(e);
        double dt = now_s() - t0;
        long code = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        if (t0 >= r->warm) {
            if (rc != CURLE_OK || code != 200)
                r->probe_errors++;
            add(&r->probe, dt);
            if (fresh)
                add(&r->probe_new, dt);
            pthread_mutex_lock(&r->mu);
            add(&r->all, dt);
            pthread_mutex_unlock(&r->mu);
        }
        struct timespec gap = {0, PROBE_GAP_MS * 1000000L};
        nanosleep(&gap, NULL);
    }
    curl_easy_cleanup(e);
    return NULL;
}

/* One download of client i: its easy handle, (re)started by the loop. */
static CURL *download(const run *r, const char *const *ids, int n_ids, int i, double *bytes)
{
    CURL *e = curl_easy_init();
    char url[512], ifc[64];
    snprintf(url, sizeof url, "%s/v1/blobs/%s", r->base, ids[i % n_ids]);
    snprintf(ifc, sizeof ifc, "host!127.0.1.%d", i % 250 + 1);
    common(e, r);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_INTERFACE, ifc);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, bytes);
    curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)(intptr_t)i);
    return e;
}

static void download_loop(run *r, const char *const *ids, int n_ids, int clients)
{
    CURLM *m = curl_multi_init();
    CURL *h[MAX_CLIENTS];
    double bytes = 0;
    for (int i = 0; i < clients; i++)
        curl_multi_add_handle(m, h[i] = download(r, ids, n_ids, i, &bytes));
    int running = clients;
    while (running && now_s() < r->end) {
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 100, NULL);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            CURL *e = msg->easy_handle;
            double ttfb = 0, total = 0;
            long code = 0;
            curl_easy_getinfo(e, CURLINFO_STARTTRANSFER_TIME, &ttfb);
            curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &total);
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
            if (now_s() - total >= r->warm) {
                if (msg->data.result != CURLE_OK || code != 200)
                    r->dl_errors++;
                pthread_mutex_lock(&r->mu);
                add(&r->all, ttfb);
                pthread_mutex_unlock(&r->mu);
                add(&r->whole, total);
            }
            curl_multi_remove_handle(m, e); /* again: the client downloads the next one */
            curl_multi_add_handle(m, e);
            running++;
        }
    }
    r->dl_bytes = bytes;
    for (int i = 0; i < clients; i++) {
        curl_multi_remove_handle(m, h[i]);
        curl_easy_cleanup(h[i]);
    }
    curl_multi_cleanup(m);
}

int main(int argc, char **argv)
{
    const char *base = NULL, *cacert = NULL, *ids[64];
    int n_ids = 0, clients = 64;
    double seconds = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--base"))
            base = argv[i + 1];
        else if (!strcmp(argv[i], "--cacert"))
            cacert = argv[i + 1];
        else if (!strcmp(argv[i], "--blob") && n_ids < 64)
            ids[n_ids++] = argv[i + 1];
        else if (!strcmp(argv[i], "--clients"))
            clients = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[i + 1]);
    }
    if (!base || !cacert || !n_ids || clients < 1 || clients > MAX_CLIENTS || seconds <= 0) {
        fprintf(stderr, "usage: bench_fairness --base https://HOST:PORT --cacert PEM --blob ID [--blob ID...] "
                        "[--clients N (64)] [--seconds S (10)]\n");
        return 2;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    run r = {.base = base, .cacert = cacert, .blob = ids[0]};
    pthread_mutex_init(&r.mu, NULL);
    samples *all[] = {&r.probe, &r.probe_new, &r.all, &r.whole};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!(all[i]->v = malloc(MAX_SAMPLES * sizeof(double))))
            return 2;
    r.start = now_s();
    r.warm = r.start + WARMUP_S;
    r.end = r.warm + seconds;
    pthread_t probe;
    if (pthread_create(&probe, NULL, probe_main, &r) != 0)
        return 2;
    download_loop(&r, ids, n_ids, clients);
    pthread_join(probe, NULL);
    double span = now_s() - r.start;
    printf("%d downloading clients, %.0f s (after %.0f s warm-up)\n", clients, seconds, WARMUP_S);
    report("probe (catalog, manifest, HEAD)", &r.probe);
    report("probe, new connection", &r.probe_new);
    /* a download's time to first byte includes this process's own loop, busy decrypting them all */
    report("all requests (time to 1st byte)", &r.all);
    report("whole downloads", &r.whole);
    printf("download throughput %.0f MB/s; errors: probe %ld, downloads %ld\n", r.dl_bytes / span / 1e6,
           r.probe_errors, r.dl_errors);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]->v);
    curl_global_cleanup();
    return 0;
}
