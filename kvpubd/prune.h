/* prune.h: the daemon's housekeeping thread: on a schedule it deletes unpaid purchases,
 * expired access tokens and old download log rows from the store (kvs_store_prune), in
 * small batches so that requests' own writes are never held up for long. */
#ifndef KVPUB_KVPUBD_PRUNE_H
#define KVPUB_KVPUBD_PRUNE_H

#include "kvpubd/http.h"

/* Opens its own store handle and starts the thread, which prunes at once and then every
 * s->cfg.prune_interval_s seconds. A no-op returning 0 when the interval is 0. Returns -1
 * with a one-line reason in err when the store or the thread cannot be had. */
int kvsrv_prune_start(kvsrv *s, char *err, size_t errlen);
/* Stops the thread (a running batch finishes first), joins it and closes its store handle;
 * a no-op when it is not running. */
void kvsrv_prune_halt(kvsrv *s);

#endif
