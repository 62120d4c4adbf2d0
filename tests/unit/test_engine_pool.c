/* test_engine_pool.c: the engine's worker pool (engine/pool.c): every unit of every job runs
 * exactly once and is finished when eng_pool_for returns; thread indices stay below the pool
 * size; and a worker that is not getting to run does not hold the others back: the threads
 * that run take its units (a fixed split made every join wait for the slowest thread). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "engine/ctx_internal.h"

enum { MAX_UNITS = 4096 };

typedef struct count_job {
    atomic_int runs[MAX_UNITS];
    atomic_int bad_ith;
    atomic_int bad_range;
    int units, threads;
} count_job;

static void count_units(void *arg, int i0, int i1, int ith)
{
    count_job *J = arg;
    if (ith < 0 || ith >= J->threads)
        atomic_fetch_add(&J->bad_ith, 1);
    if (i0 < 0 || i1 > J->units || i0 >= i1)
        atomic_fetch_add(&J->bad_range, 1);
    for (int i = i0; i < i1 && i >= 0 && i < MAX_UNITS; i++)
        atomic_fetch_add(&J->runs[i], 1);
}

/* Many jobs in a row of every size (none, fewer units than threads, grains that do not divide
 * the count): each unit exactly once, each job complete on return. */
static void test_every_unit_once(void **state)
{
    (void)state;
    static const int threads[] = {1, 2, 3, 8};
    count_job *J = malloc(sizeof *J);
    uint64_t s = 5;
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        eng_pool *p = NULL;
        assert_int_equal(eng_pool_create(threads[t], &p), ENG_OK);
        assert_int_equal(eng_pool_size(p), threads[t]);
        for (int job = 0; job < 3000; job++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            const int units = job < 8 ? job : (int)((s >> 33) % (job % 10 == 0 ? MAX_UNITS : 64));
            const int grain = job % 3 == 0 ? eng_pool_grain(p, units, 4) : 1 + (int)((s >> 20) % 7);
            for (int i = 0; i < MAX_UNITS; i++)
                atomic_init(&J->runs[i], 0);
            atomic_init(&J->bad_ith, 0);
            atomic_init(&J->bad_range, 0);
            J->units = units;
            J->threads = threads[t];
            eng_pool_for(p, units, grain, count_units, J);
            for (int i = 0; i < MAX_UNITS; i++)
                if (atomic_load(&J->runs[i]) != (i < units)) {
                    printf("threads %d job %d units %d grain %d: unit %d ran %d times\n", threads[t], job,
                           units, grain, i, atomic_load(&J->runs[i]));
                    fail();
                }
            assert_int_equal(atomic_load(&J->bad_ith), 0);
            assert_int_equal(atomic_load(&J->bad_range), 0);
        }
        eng_pool_free(p);
    }
    free(J);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* A worker stuck in its first unit (as if descheduled) until the caller has done most of the
 * job: with units handed out as threads come for them, the caller does them all; with a fixed
 * split it would stop at its own half and wait. */
typedef struct stall_job {
    atomic_int done_by_caller;
    atomic_int stalled;
    atomic_int reached;
    int units;
} stall_job;

static void stall_units(void *arg, int i0, int i1, int ith)
{
    stall_job *J = arg;
    for (int i = i0; i < i1; i++) {
        if (ith != 0 && atomic_exchange(&J->stalled, 1) == 0) {
            const double end = now_s() + 5.0;
            while (atomic_load(&J->done_by_caller) < J->units - 2 && now_s() < end)
                ;
            atomic_store(&J->reached, atomic_load(&J->done_by_caller) >= J->units - 2);
        } else if (ith == 0) {
            const double end = now_s() + 50e-6; /* long enough for the worker to come for one */
            while (now_s() < end)
                ;
            atomic_fetch_add(&J->done_by_caller, 1);
        }
    }
}

static void test_stalled_worker(void **state)
{
    (void)state;
    eng_pool *p = NULL;
    assert_int_equal(eng_pool_create(2, &p), ENG_OK);
    int stalls = 0;
    int job = 0;
    for (; job < 500 && stalls < 5; job++) {
        stall_job J;
        atomic_init(&J.done_by_caller, 0);
        atomic_init(&J.stalled, 0);
        atomic_init(&J.reached, 0);
        J.units = 64;
        eng_pool_for(p, J.units, 1, stall_units, &J);
        if (atomic_load(&J.stalled)) { /* the worker got a unit (it may have come too late) */
            stalls++;
            assert_int_equal(atomic_load(&J.reached), 1);
        }
    }
    eng_pool_free(p);
    printf("jobs in which the worker stalled: %d of %d\n", stalls, job);
    assert_true(stalls > 0); /* else the test proved nothing */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_unit_once),
        cmocka_unit_test(test_stalled_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
