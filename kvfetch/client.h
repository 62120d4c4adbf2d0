/* client.h: kvfetch's HTTPS client (libcurl): resumable, retrying, stall-guarded downloads
 * streamed into a caller sink, and small JSON requests. Certificate verification is always on. */
#ifndef KVPUB_KVFETCH_CLIENT_H
#define KVPUB_KVFETCH_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "kvfetch/status.h"

/* Zero-initialise; zero fields take the defaults noted. */
typedef struct kvf_http_opts {
    const char *cacert;        /* PEM bundle to trust instead of the system's (test servers) */
    const char *token;         /* Bearer token for priced blobs; NULL = none */
    long connect_timeout_s;    /* 0 = 10 */
    long stall_timeout_s;      /* abort a transfer slower than stall_min_bps for this long; 0 = 20 */
    long stall_min_bps;        /* 0 = 1024 bytes/s */
    int max_retries;           /* transient failures retried this many times; 0 = 6, <0 = none */
    double backoff_s;          /* first retry delay, doubled each time, capped at 8 s; 0 = 0.5 */
    int progress;              /* 1 = draw a progress bar on stderr (caller checks isatty) */
    int allow_http;            /* 1 = accept plain http:// (never the default) */
    uint64_t max_recv_bps;     /* cap on the download rate in bytes/s; 0 = none */
} kvf_http_opts;

/* Receives the body bytes in order. Returning non-OK aborts the download without retrying
 * (the status is returned from kvf_http_download and err is kept). */
typedef kvf_status (*kvf_sink_fn)(void *user, const void *data, size_t len, char *err, size_t errlen);
/* Called when the server ignored a Range request and sends the body from byte 0: the sink
 * must discard what it holds. Non-OK aborts. */
typedef kvf_status (*kvf_restart_fn)(void *user, char *err, size_t errlen);

/* Counters of one download, for reports and tests. */
typedef struct kvf_http_stats {
    int attempts;              /* HTTP requests made */
    int resumed;               /* requests that asked for a Range and got 206 */
    uint64_t bytes;            /* body bytes handed to the sink */
    double seconds;
    long last_http_code;
} kvf_http_stats;

/* GETs url, asking for bytes [offset, end) with a Range header when offset > 0, and hands the
 * body to sink. Transient failures (connect, TLS handshake reset, timeout/stall, a transfer cut
 * short, 408/429/5xx) are retried with exponential backoff, each retry resuming with Range from
 * the last byte the sink accepted. 401/402/403 give KVF_ERR_DENIED, other 4xx KVF_ERR_HTTP, a
 * certificate that does not verify KVF_ERR_NET at once. stats may be NULL. */
kvf_status kvf_http_download(const kvf_http_opts *o, const char *url, uint64_t offset,
                             kvf_sink_fn sink, kvf_restart_fn restart, void *user,
                             kvf_http_stats *stats, char *err, size_t errlen) KVF_WUR;

/* One request with a small body in memory (at most max bytes, else KVF_ERR_TOO_BIG):
 * method "GET" or "POST"; json_body (NUL-terminated) is sent as application/json when non-NULL.
 * On success *out is malloc'd NUL-terminated (caller frees) and *code the HTTP status (any
 * status is success here: the caller decides). Not retried. */
kvf_status kvf_http_request(const kvf_http_opts *o, const char *method, const char *url,
                            const char *json_body, size_t max, char **out, size_t *outlen,
                            long *code, char *err, size_t errlen) KVF_WUR;

#endif
