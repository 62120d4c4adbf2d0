/* threads.c: base_threads_stop, how every owner of worker threads (the decode pool, the blob
 * writer and reader, the daemon's pruner and watchdog) tells them to exit and waits for them. */
#include "base/base.h"

void base_threads_stop(pthread_mutex_t *mu, pthread_cond_t *cv, int *stop, const pthread_t *th, int n)
{
    pthread_mutex_lock(mu);
    *stop = 1;
    pthread_cond_broadcast(cv);
    pthread_mutex_unlock(mu);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
}
