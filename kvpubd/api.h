/* api.h: the endpoints of spec/http-api.md over store/ (api_read.c: catalog, keys, manifests,
 * downloads; api_write.c: purchases, uploads) and what they share (api_store.c). server.c
 * reaches the endpoints through its routing table; they call only down, into http.h. */
#ifndef KVPUB_KVPUBD_API_H
#define KVPUB_KVPUBD_API_H

#include "kvpubd/http.h"

/* ---- api_store.c: the endpoints' access to store/ ---- */

/* Opens s->pool (one store handle per worker thread, plus one) and s->keys_dir from
 * s->cfg.store_dir. Returns 0, or -1 with a one-line reason in err; kvsrv_pool_close frees
 * what was opened either way. */
int kvsrv_pool_open(kvsrv *s, char *err, size_t errlen);
void kvsrv_pool_close(kvsrv *s);
/* Checks a store handle out of the pool, waiting for one if all are in use; give it back with
 * kvsrv_pool_put before answering. */
kvs_store *kvsrv_pool_get(kvsrv *s);
void kvsrv_pool_put(kvsrv *s, kvs_store *st);

/* Logs an index error (status and detail e) and answers 500. */
enum MHD_Result kvsrv_store_error(kvsrv_req *r, kvs_status st, const char *e);

/* The indexed blob a request names (r->id). */
typedef struct kvsrv_blob_ref {
    uint8_t id[32];
    uint64_t size, price;
    char path[4096]; /* its file in the store */
    enum MHD_Result done; /* after kvsrv_blob_find failed: the queued response's result */
} kvsrv_blob_ref;

/* Finds the blob of r->id: 0 and *b, or -1 with a response (404 unknown, 410 expired, 500)
 * queued and its result in b->done. */
int kvsrv_blob_find(kvsrv_req *r, kvsrv_blob_ref *b);

/* ---- the endpoints, as server.c's routing table calls them ---- */

/* Requests without a body: called once, after the headers, to answer. */
enum MHD_Result kvsrv_catalog(kvsrv_req *r);  /* GET /v1/catalog */
enum MHD_Result kvsrv_keys(kvsrv_req *r);     /* GET /v1/keys */
enum MHD_Result kvsrv_snapshot(kvsrv_req *r); /* GET /v1/snapshot */
enum MHD_Result kvsrv_manifest(kvsrv_req *r); /* GET /v1/blobs/{id}/manifest */
enum MHD_Result kvsrv_download(kvsrv_req *r); /* GET /v1/blobs/{id} */
/* On completion of a download: refunds what was not delivered, writes the download log row. */
void kvsrv_download_finish(kvsrv_req *r, int completed_ok);

/* Requests with a body: _begin once the headers are complete (checks them and may refuse
 * before the body is read), then _body for each piece of it (*size bytes, consumed by setting
 * *size to 0) and once more with *size == 0 at its end, to answer. */
enum MHD_Result kvsrv_purchase_begin(kvsrv_req *r); /* POST /v1/purchases */
enum MHD_Result kvsrv_purchase_body(kvsrv_req *r, const char *data, size_t *size);
enum MHD_Result kvsrv_upload_begin(kvsrv_req *r);   /* PUT /v1/blobs */
enum MHD_Result kvsrv_upload_body(kvsrv_req *r, const char *data, size_t *size);

#endif
