/* pool.c: a fixed set of worker threads per context that share out the units of one job and
 * join, so the decode path does not create threads per token.
 *
 * Units are claimed from a shared counter, not split up front. When the machine is busy and a
 * worker is not running, the threads that are running take its share instead of waiting for
 * it: a decode step joins a few hundred times, and with a fixed split every join waited for
 * the slowest thread's time slice (F16 decode fell 4-12x beside two CPU-bound neighbours). A
 * worker that wakes after the job has been closed stays out of it, so a join waits only for
 * workers that are inside the job and thus working. Workers spin briefly before sleeping: the
 * joins of a decode step are microseconds apart. Which thread computes a unit never changes
 * the unit's result. */
#include "engine/ctx_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

enum { POOL_MAX = 64, SPIN_ITERS = 2000 };

/* state: job generation (high 32 bits) | CLOSED | number of workers inside the job */
#define ST_CLOSED ((uint64_t)1 << 16)
#define ST_INSIDE ((uint64_t)0xffff)
#define ST_GEN(s) ((uint32_t)((s) >> 32))

struct eng_pool {
    int n;
    pthread_t th[POOL_MAX];
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_cond_t done;
    _Atomic uint64_t state;
    atomic_int next;          /* first unclaimed unit of the current job */
    int quit;                 /* read and written under mu */
    /* the current job: written before its generation is published, read after entering */
    eng_pool_fn fn;
    void *arg;
    int units, grain;
};

typedef struct worker_arg {
    eng_pool *p;
    int ith;
} worker_arg;

static void claim_units(eng_pool *p, int ith)
{
    const int units = p->units, grain = p->grain;
    for (;;) {
        const int i0 = atomic_fetch_add_explicit(&p->next, grain, memory_order_relaxed);
        if (i0 >= units)
            return;
        p->fn(p->arg, i0, i0 + grain < units ? i0 + grain : units, ith);
    }
}

/* Joins job gen unless it is closed or over; 1 when inside. */
static int enter_job(eng_pool *p, uint32_t gen)
{
    uint64_t s = atomic_load_explicit(&p->state, memory_order_acquire);
    while (ST_GEN(s) == gen && !(s & ST_CLOSED))
        if (atomic_compare_exchange_weak_explicit(&p->state, &s, s + 1, memory_order_acq_rel,
                                                  memory_order_acquire))
            return 1;
    return 0;
}

static void leave_job(eng_pool *p)
{
    const uint64_t s = atomic_fetch_sub_explicit(&p->state, 1, memory_order_acq_rel) - 1;
    if ((s & ST_INSIDE) == 0 && (s & ST_CLOSED)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
}

static void *worker(void *a)
{
    eng_pool *p = ((worker_arg *)a)->p;
    const int ith = ((worker_arg *)a)->ith;
    free(a);
    uint32_t seen = 0;
    for (;;) {
        uint32_t g;
        int spins = 0;
        while ((g = ST_GEN(atomic_load_explicit(&p->state, memory_order_acquire))) == seen &&
               spins < SPIN_ITERS) {
            CPU_RELAX();
            spins++;
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = ST_GEN(atomic_load_explicit(&p->state, memory_order_acquire))) == seen && !p->quit)
                pthread_cond_wait(&p->wake, &p->mu);
            const int quit = p->quit;
            pthread_mutex_unlock(&p->mu);
            if (quit && g == seen) /* no job is running when the pool is freed */
                return NULL;
        }
        seen = g;
        if (enter_job(p, g)) {
            claim_units(p, ith);
            leave_job(p);
        }
    }
}

eng_status eng_pool_create(int n_threads, eng_pool **out)
{
    *out = NULL;
    if (n_threads < 1)
        n_threads = 1;
    if (n_threads > POOL_MAX)
        n_threads = POOL_MAX;
    eng_pool *p = calloc(1, sizeof *p);
    if (!p)
        return ENG_ERR_NOMEM;
    p->n = 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->state, 0);
    atomic_init(&p->next, 0);
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa)
            break;
        wa->p = p;
        wa->ith = i;
        if (pthread_create(&p->th[i], NULL, worker, wa) != 0) {
            free(wa);
            break;
        }
        p->n = i + 1;
    }
    *out = p;
    return ENG_OK;
}

void eng_pool_free(eng_pool *p)
{
    if (!p)
        return;
    base_threads_stop(&p->mu, &p->wake, &p->quit, p->th + 1, p->n - 1); /* th[0] is the caller */
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p);
}

int eng_pool_size(const eng_pool *p) { return p->n; }

int eng_pool_grain(const eng_pool *p, int units, int per_thread)
{
    const int g = units / (p->n * per_thread);
    return g > 1 ? g : 1;
}

void eng_pool_for(eng_pool *p, int units, int grain, eng_pool_fn fn, void *arg)
{
    if (grain < 1)
        grain = 1;
    if (p->n == 1 || units <= grain) {
        if (units > 0)
            fn(arg, 0, units, 0);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->units = units;
    p->grain = grain;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    const uint32_t gen = ST_GEN(atomic_load_explicit(&p->state, memory_order_relaxed)) + 1;
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->state, (uint64_t)gen << 32, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    claim_units(p, 0);
    /* every unit is claimed: no one may enter now; wait for those inside */
    uint64_t s = atomic_fetch_or_explicit(&p->state, ST_CLOSED, memory_order_acq_rel) | ST_CLOSED;
    for (int spins = 0; (s & ST_INSIDE) && spins < SPIN_ITERS; spins++) {
        CPU_RELAX();
        s = atomic_load_explicit(&p->state, memory_order_acquire);
    }
    if (s & ST_INSIDE) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load_explicit(&p->state, memory_order_acquire) & ST_INSIDE)
            pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
