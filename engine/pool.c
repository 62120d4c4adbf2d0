/* pool.c: a fixed set of worker threads per context that run one function in parallel and
 * join, so the decode path does not create threads per token. Workers spin briefly before
 * sleeping: a decode step hands out a few hundred small jobs. */
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

struct eng_pool {
    int n;
    pthread_t th[POOL_MAX];
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_cond_t done;
    atomic_uint gen;          /* bumped per job */
    atomic_int pending;       /* workers still running the current job */
    int quit;
    eng_pool_fn fn;
    void *arg;
};

typedef struct worker_arg {
    eng_pool *p;
    int ith;
} worker_arg;

static void *worker(void *a)
{
    eng_pool *p = ((worker_arg *)a)->p;
    int ith = ((worker_arg *)a)->ith;
    free(a);
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen && spins < SPIN_ITERS) {
            CPU_RELAX();
            spins++;
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen && !p->quit)
                pthread_cond_wait(&p->wake, &p->mu);
            int quit = p->quit;
            pthread_mutex_unlock(&p->mu);
            if (quit && g == seen)
                return NULL;
        }
        seen = g;
        if (p->quit)
            return NULL;
        p->fn(p->arg, ith, p->n);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
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
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
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

void eng_pool_run(eng_pool *p, eng_pool_fn fn, void *arg)
{
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0, p->n);
    int spins = 0;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0 && spins < SPIN_ITERS) {
        CPU_RELAX();
        spins++;
    }
    if (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0)
            pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
