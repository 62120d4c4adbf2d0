/* prune.c: the daemon's housekeeping thread (prune.h): bounded kvs_store_prune batches with
 * pauses between them, one pass at start and then one every --prune-interval. */
#include "kvpubd/prune.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <time.h>

/* Rows of each kind deleted per transaction, and the pause after a full batch: a batch holds
 * the write lock for milliseconds, and the pause lets waiting purchases and download log
 * writes through before the next one. */
#define BATCH 500
#define PAUSE_MS 20

struct kvsrv_pruner {
    kvsrv *srv;
    kvs_store *store;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled to stop; waits on CLOCK_MONOTONIC */
    int stop;
};

static struct timespec deadline_after(double seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double ns = ts.tv_nsec + (seconds - (time_t)seconds) * 1e9;
    ts.tv_sec += (time_t)seconds + (time_t)(ns / 1e9);
    ts.tv_nsec = (long)ns % 1000000000L;
    return ts;
}

/* Waits up to seconds; returns 1 when asked to stop. */
static int sleep_or_stop(struct kvsrv_pruner *p, double seconds)
{
    struct timespec until = deadline_after(seconds);
    pthread_mutex_lock(&p->mu);
    while (!p->stop && pthread_cond_timedwait(&p->cv, &p->mu, &until) != ETIMEDOUT)
        ;
    int stop = p->stop;
    pthread_mutex_unlock(&p->mu);
    return stop;
}

/* A cut-off `age` seconds before now; age 0 turns that kind of pruning off. */
static int64_t before(int64_t now, unsigned age)
{
    return age ? now - (int64_t)age : 0;
}

/* One pass: batches until nothing of any kind is left to delete. Returns 1 when asked to stop. */
static int prune_pass(struct kvsrv_pruner *p)
{
    const kvsrv_config *cfg = &p->srv->cfg;
    kvs_prune_counts total = {0};
    double t0 = base_now_s();
    int full, stop = 0;
    do {
        int64_t now = (int64_t)time(NULL);
        kvs_prune_policy pol = {.now = now, .unpaid_before = before(now, cfg->unpaid_retention_s),
                                .tokens_expired_before = before(now, cfg->token_retention_s),
                                .log_before = before(now, cfg->log_retention_s), .batch = BATCH};
        kvs_prune_counts c;
        char e[256], esc[600];
        kvs_status st = kvs_store_prune(p->store, &pol, &c, e, sizeof e);
        if (st != KVS_OK) {
            kvsrv_log(p->srv, "error", "event=prune status=\"%s\" detail=\"%s\"", kvs_status_str(st),
                      kvsrv_log_escape(e, esc, sizeof esc));
            break;
        }
        total.purchases += c.purchases, total.tokens += c.tokens, total.log_rows += c.log_rows;
        full = c.purchases == BATCH || c.tokens >= BATCH || c.log_rows == BATCH;
    } while (full && !(stop = sleep_or_stop(p, PAUSE_MS / 1e3)));
    if (total.purchases || total.tokens || total.log_rows)
        kvsrv_log(p->srv, "info",
                  "event=prune purchases=%" PRIu64 " tokens=%" PRIu64 " log_rows=%" PRIu64 " ms=%.1f",
                  total.purchases, total.tokens, total.log_rows, (base_now_s() - t0) * 1e3);
    return stop;
}

static void *pruner_main(void *arg)
{
    struct kvsrv_pruner *p = arg;
    while (!prune_pass(p) && !sleep_or_stop(p, p->srv->cfg.prune_interval_s))
        ;
    return NULL;
}

int kvsrv_prune_start(kvsrv *s, char *err, size_t errlen)
{
    if (!s->cfg.prune_interval_s)
        return 0;
    struct kvsrv_pruner *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->srv = s;
    char e[256];
    kvs_status st = kvs_store_open(s->cfg.store_dir, &p->store, e, sizeof e);
    if (st != KVS_OK) {
        snprintf(err, errlen, "store %s: %s", s->cfg.store_dir, e);
        free(p);
        return -1;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&p->mu, NULL);
    if (pthread_create(&p->thread, NULL, pruner_main, p) != 0) {
        snprintf(err, errlen, "cannot start the pruning thread");
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        kvs_store_close(p->store);
        free(p);
        return -1;
    }
    s->pruner = p;
    return 0;
}

void kvsrv_prune_halt(kvsrv *s)
{
    struct kvsrv_pruner *p = s->pruner;
    if (!p)
        return;
    base_threads_stop(&p->mu, &p->cv, &p->stop, &p->thread, 1);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    kvs_store_close(p->store);
    free(p);
    s->pruner = NULL;
}
