/* api_store.c: what the endpoints share to reach store/: the pool of per-thread store handles,
 * the lookup of the blob a request names, and the 500 answer to an index error. */
#include "kvpubd/api.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

int kvsrv_pool_open(kvsrv *s, char *err, size_t errlen)
{
    pthread_mutex_init(&s->pool_mu, NULL);
    pthread_mutex_init(&s->snap_mu, NULL);
    pthread_cond_init(&s->pool_cv, NULL);
    /* one per worker thread, plus one so the metrics of a busy pool never wait */
    size_t n = (size_t)s->cfg.threads + 1;
    s->pool = calloc(n, sizeof *s->pool);
    if (!s->pool) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char e[256];
        kvs_status st = kvs_store_open(s->cfg.store_dir, &s->pool[i], e, sizeof e);
        if (st != KVS_OK) {
            snprintf(err, errlen, "store %s: %s", s->cfg.store_dir, e);
            return -1;
        }
        s->pool_n = s->pool_free = i + 1;
    }
    size_t dl = strlen(s->cfg.store_dir) + 6;
    s->keys_dir = malloc(dl);
    if (!s->keys_dir) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(s->keys_dir, dl, "%s/keys", s->cfg.store_dir);
    return 0;
}

void kvsrv_pool_close(kvsrv *s)
{
    if (s->pool) {
        for (size_t i = 0; i < s->pool_n; i++)
            kvs_store_close(s->pool[i]);
        free(s->pool);
        pthread_mutex_destroy(&s->pool_mu);
        pthread_mutex_destroy(&s->snap_mu);
        pthread_cond_destroy(&s->pool_cv);
    }
    s->pool = NULL;
    free(s->keys_dir);
    s->keys_dir = NULL;
    free(s->snap);
    s->snap = NULL;
}

/* The free handles are s->pool[0 .. pool_free). */
kvs_store *kvsrv_pool_get(kvsrv *s)
{
    pthread_mutex_lock(&s->pool_mu);
    while (s->pool_free == 0)
        pthread_cond_wait(&s->pool_cv, &s->pool_mu);
    kvs_store *st = s->pool[--s->pool_free];
    pthread_mutex_unlock(&s->pool_mu);
    return st;
}

void kvsrv_pool_put(kvsrv *s, kvs_store *st)
{
    pthread_mutex_lock(&s->pool_mu);
    s->pool[s->pool_free++] = st;
    pthread_cond_signal(&s->pool_cv);
    pthread_mutex_unlock(&s->pool_mu);
}

enum MHD_Result kvsrv_store_error(kvsrv_req *r, kvs_status st, const char *e)
{
    char esc[1024];
    kvsrv_log(r->srv, "error", "event=store status=\"%s\" detail=\"%s\"", kvs_status_str(st),
              kvsrv_log_escape(e, esc, sizeof esc));
    return kvsrv_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "index error (%s)",
                               kvs_status_str(st));
}

int kvsrv_blob_find(kvsrv_req *r, kvsrv_blob_ref *b)
{
    if (kvc_unhex(r->id, b->id, 32) != KVC_OK) {
        b->done = kvsrv_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found", "bad blob id");
        return -1;
    }
    char e[256];
    kvs_blob *blob = NULL;
    kvs_store *st = kvsrv_pool_get(r->srv);
    kvs_status s1 = kvs_store_blob_get(st, b->id, &blob, e, sizeof e);
    kvs_status s2 = s1 == KVS_OK ? kvs_store_blob_path(st, b->id, b->path, sizeof b->path, e, sizeof e) : s1;
    kvsrv_pool_put(r->srv, st);
    if (s2 != KVS_OK) {
        if (s1 == KVS_OK)
            kvs_blob_free(blob);
        b->done = s2 == KVS_ERR_NOTFOUND
                    ? kvsrv_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found", "no blob %s", r->id)
                    : kvsrv_store_error(r, s2, e);
        return -1;
    }
    if (blob->revoked) {
        char pub[17];
        b->done = kvsrv_respond_error(r, MHD_HTTP_GONE, "revoked", "blob %s is withdrawn: its publisher key %s is "
                                    "revoked", r->id, kvc_hex(blob->publisher_id, 8, pub));
        kvs_blob_free(blob);
        return -1;
    }
    b->size = blob->size;
    b->price = blob->price;
    int64_t expires = blob->expires;
    kvs_blob_free(blob);
    if (expires && expires <= (int64_t)time(NULL)) {
        char ts[32];
        b->done = kvsrv_respond_error(r, MHD_HTTP_GONE, "expired", "blob %s expired at %s", r->id,
                                    kvb_time_format(expires, ts, sizeof ts));
        return -1;
    }
    return 0;
}
