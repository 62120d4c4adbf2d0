/* server.h: the HTTPS daemon behind `kvpubd serve` (libmicrohttpd + GnuTLS over a store/).
 * Private to kvpubd; spec/http-api.md is the contract it implements. */
#ifndef KVPUB_KVPUBD_SERVER_H
#define KVPUB_KVPUBD_SERVER_H

#include <stddef.h>
#include <stdint.h>

#define KVSRV_PER_IP_AUTO 0xFFFFFFFFu
/* What `kvpubd serve` starts with (spec/http-api.md). */
#define KVSRV_PURCHASE_BURST_DEFAULT 20
#define KVSRV_PURCHASE_PER_MIN_DEFAULT 60
#define KVSRV_PRUNE_INTERVAL_DEFAULT 600u               /* 10 min */
#define KVSRV_UNPAID_RETENTION_DEFAULT (7u * 86400)     /* 7 d */
#define KVSRV_TOKEN_RETENTION_DEFAULT (7u * 86400)      /* 7 d after expiry */
#define KVSRV_LOG_RETENTION_DEFAULT (90u * 86400)       /* 90 d */

typedef struct kvsrv_config {
    const char *store_dir;     /* the store to serve (opened read-write: purchases, uploads) */
    const char *listen;        /* "ADDR:PORT", "[v6]:PORT"; PORT 0 = any free port */
    const char *tls_cert;      /* PEM certificate chain file */
    const char *tls_key;       /* PEM private key file */
    const char *log_path;      /* access + error log; NULL = stderr */
    unsigned threads;          /* MHD worker threads (thread pool); 0 = 2 */
    unsigned max_conns;        /* total connection limit; 0 = 256 */
    unsigned max_conns_per_ip; /* 0 = no per-address limit; KVSRV_PER_IP_AUTO = a quarter of
                                * max_conns, at least 8, so one address cannot hold every slot */
    unsigned timeout_s;        /* idle connection timeout; 0 = 30 */
    uint64_t max_upload;       /* bytes of one PUT /v1/blobs body; 0 = 4 GiB */
    unsigned token_ttl_s;      /* lifetime of a purchased token; 0 = 24 h */
    unsigned token_downloads;  /* download budget of a purchased token; 0 = 5 */
    /* POST /v1/purchases per client address (ratelimit.h): a bucket of purchase_burst,
     * refilled at purchase_per_min a minute; either 0 = no limit */
    unsigned purchase_burst, purchase_per_min;
    /* housekeeping (prune.h), all in seconds: every prune_interval_s (0 = never) delete unpaid
     * purchases older than unpaid_retention_s, tokens expired more than token_retention_s ago
     * and download log rows older than log_retention_s; a retention of 0 keeps that kind */
    unsigned prune_interval_s, unpaid_retention_s, token_retention_s, log_retention_s;
    unsigned snapshot_ttl_s;   /* lifetime of the snapshots /v1/snapshot signs; 0 = 1 day */
} kvsrv_config;

typedef struct kvsrv kvsrv;

/* Opens the store, reads the certificate and key, binds the listening socket and starts the
 * worker threads. Returns 0 and *out on success, else an exit code (2) with a one-line
 * reason in err. Call with SIGTERM/SIGHUP/SIGINT blocked so workers never take them. */
int kvsrv_start(const kvsrv_config *cfg, kvsrv **out, char *err, size_t errlen);

/* The bound port (useful with PORT 0). */
unsigned kvsrv_port(const kvsrv *s);

/* The log (http.c, so that every layer of the daemon can write to it). */

/* Reopens the log file (SIGHUP, after logrotate moved it). Safe while serving. */
void kvsrv_reopen_log(kvsrv *s);

/* Writes one structured line to the log ("event=..." key=value pairs after ts= and level=). */
void kvsrv_log(kvsrv *s, const char *level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Graceful stop: stops accepting, lets in-flight requests (downloads) finish for up to
 * deadline_s seconds, then stops the workers. Returns the number of requests still running
 * at the deadline (0 = clean). kvsrv_free afterwards. */
unsigned kvsrv_shutdown(kvsrv *s, unsigned deadline_s);

/* Stops (abruptly if still running) and frees. NULL is a no-op. */
void kvsrv_free(kvsrv *s);

#endif
