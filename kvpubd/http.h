/* http.h: the bottom layer of the kvpubd daemon, shared by server.c (lifecycle, routing) and
 * the endpoint files: the daemon and per-request state, the respond helpers, request
 * accessors and the structured log. It calls none of them back. */
#ifndef KVPUB_KVPUBD_HTTP_H
#define KVPUB_KVPUBD_HTTP_H

#include "kvpubd/server.h"
#include "kvpubd/reqparse.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include <jansson.h>
#include <microhttpd.h>

#include "base/base.h"
#include "crypto/kvcrypto.h"
#include "format/kvblob.h"
#include "store/kvstore.h"

/* What a request is for; the metrics and the access log are kept per endpoint. */
typedef enum kvsrv_ep {
    EP_CATALOG, EP_MANIFEST, EP_BLOB, EP_PURCHASE, EP_UPLOAD, EP_KEYS, EP_HEALTHZ, EP_METRICS,
    EP_SNAPSHOT, EP_OTHER, EP_COUNT
} kvsrv_ep;

#define KVSRV_N_CODES 20 /* metrics.c metric_codes plus one "other" slot */

struct kvsrv {
    kvsrv_config cfg;
    struct MHD_Daemon *daemon;
    int listen_fd;
    unsigned port;
    char *cert, *key;              /* PEM text handed to GnuTLS; key wiped on free */
    /* store handles: SQLite connections are not shared between threads, so each request
     * checks one out of this pool (one per worker thread, so nobody ever waits long) */
    kvs_store **pool;
    size_t pool_n, pool_free;
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cv;
    char *keys_dir;                /* STORE/keys: trust-directory layout served at /v1/keys */
    /* the signed snapshot served at /v1/snapshot (api_read.c): signed again when the catalog
     * generation moves or half its lifetime has passed, checked at most once a second */
    pthread_mutex_t snap_mu;
    char *snap;                    /* the envelope; NULL until first asked for */
    size_t snap_len;
    uint64_t snap_gen;
    int64_t snap_issued, snap_expires, snap_checked;
    /* logging */
    pthread_mutex_t log_mu;
    FILE *log;                     /* NULL = stderr */
    char *log_path;
    /* header deadline (watchdog.c): libmicrohttpd's timeout is an idle timer that every byte
     * resets, so a client trickling header lines could hold a connection slot for ever. Each
     * connection is watched from accept (or the end of its previous request) until its
     * request's headers are complete; past timeout_s the watchdog shuts the socket down. */
    pthread_mutex_t watch_mu;
    pthread_cond_t watch_cv;
    struct kvsrv_watch *watch_head;
    pthread_t watchdog;
    int watchdog_running, watchdog_stop;
    _Atomic uint64_t header_timeouts;
    _Atomic uint64_t body_timeouts;
    _Atomic uint64_t busy;          /* connections past --max-conns answered 503 */
    struct kvsrv_ratelimit *purchase_limit; /* NULL: purchases are not rate-limited */
    _Atomic uint64_t rate_limited;  /* purchases answered 429 */
    struct kvsrv_pruner *pruner;    /* prune.c's thread; NULL when not running */
    /* lifecycle and metrics */
    atomic_int stopping;
    atomic_long inflight;          /* requests between first call and completion */
    atomic_long active_conns;
    _Atomic uint64_t requests[EP_COUNT][KVSRV_N_CODES];
    _Atomic uint64_t bytes_sent, errors, uploads_rejected;
    atomic_int uploads_active;      /* requests holding an upload reader */
};

/* Per-request state: created on the first access-handler call, freed on completion. */
typedef struct kvsrv_req {
    kvsrv *srv;
    struct MHD_Connection *conn;
    kvsrv_ep ep;
    char id[65];                   /* blob id for EP_BLOB / EP_MANIFEST */
    int bad_id;
    char method[16];
    char path[256];                /* sanitized, for the log */
    double t0;                     /* base_now_s() when it arrived */
    unsigned status;               /* 0 until a response is queued */
    uint64_t bytes;                /* buffer body bytes */
    _Atomic uint64_t file_bytes;   /* file body bytes handed to TLS */
    int file_response;
    int cork_fd;                   /* >= 0: socket corked for this download, uncorked when done */
    char err[256];                 /* detail for the log line */
    char remote[64];               /* client address, from the request's start */
    int fresh;                     /* made by on_uri; the access handler has not seen it yet */
    int raw_bad_path, raw_bad_query; /* %00 or %2f in the raw path, %00 in the raw query */
    /* download bookkeeping, written to the store's download log on completion */
    int log_download;
    int64_t purchase_id;
    /* a priced GET: bytes spent from the token's budget, refunded in part if not delivered */
    uint8_t token[KVS_TOKEN_LEN];
    uint64_t spent;
    /* small JSON bodies (purchases) */
    char *body;
    size_t body_len;
    /* uploads */
    int up_fd;                     /* anonymous temp file holding the body */
    uint64_t up_expected, up_received;
    uint64_t up_price;             /* ?price=, checked before the body is read */
    kvb_reader *up_reader;
    kvc_key *up_key;
    kvb_status up_st;
    char up_err[256];
    uint8_t up_key_id[KVC_KEYID_LEN];
} kvsrv_req;

/* A request of method to url (both copied) on conn. Returns NULL when out of memory. */
kvsrv_req *kvsrv_req_create(kvsrv *s, struct MHD_Connection *conn, const char *method, const char *url);
/* Frees r and whatever its handler left open (upload reader, temp file, key). NULL is a no-op. */
void kvsrv_req_free(kvsrv_req *r);

/* Respond helpers: each queues a response, records the status and returns MHD's result. */
enum MHD_Result kvsrv_queue(kvsrv_req *r, unsigned status, struct MHD_Response *resp);
/* Takes ownership of body (a jansson reference). */
enum MHD_Result kvsrv_respond_json(kvsrv_req *r, unsigned status, json_t *body);
/* {"error": error, "detail": printf(fmt, ...)} */
enum MHD_Result kvsrv_respond_error(kvsrv_req *r, unsigned status, const char *error, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The same with one more response header (Allow on 405, Content-Range on 416, Retry-After on
 * 429 and 503). */
enum MHD_Result kvsrv_respond_error_hdr(kvsrv_req *r, unsigned status, const char *error, const char *hdr,
                                        const char *hdr_value, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Takes ownership of text_take (malloc'd). */
enum MHD_Result kvsrv_respond_text(kvsrv_req *r, unsigned status, const char *ctype, char *text_take,
                                   size_t len);
/* A response of len bytes of text_take (malloc'd, owned by the response or freed here) with
 * Content-Type ctype, for a caller that adds headers before kvsrv_queue. NULL: out of memory. */
struct MHD_Response *kvsrv_text_response(kvsrv_req *r, const char *ctype, char *text_take, size_t len);
/* A response sending len bytes of fd_take from offset (the fd is closed with the response). */
struct MHD_Response *kvsrv_file_response(kvsrv_req *r, int fd_take, uint64_t offset, uint64_t len);

const char *kvsrv_header(kvsrv_req *r, const char *name);
const char *kvsrv_arg(kvsrv_req *r, const char *name);
const char *kvsrv_bearer(kvsrv_req *r); /* the token of "Authorization: Bearer X", or NULL */

#endif
