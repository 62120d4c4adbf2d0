/* metrics.c: the daemon's request counters by endpoint and status, and the operational
 * endpoints GET /metrics (Prometheus text exposition, format 0.0.4) and GET /healthz. */
#include "kvpubd/metrics.h"

#include <inttypes.h>
#include <stdlib.h>

static const char *const ep_names[EP_COUNT] = {
    "catalog", "manifest", "blob", "purchase", "upload", "keys", "healthz", "metrics", "snapshot", "other",
};
static const unsigned metric_codes[] = {200, 201, 206, 304, 400, 401, 403, 404, 405, 409, 410, 411,
                                        413, 415, 416, 422, 429, 500, 503};
#define N_CODES (sizeof metric_codes / sizeof metric_codes[0])
_Static_assert(N_CODES + 1 == KVSRV_N_CODES, "KVSRV_N_CODES counts metric_codes plus 'other'");

static unsigned code_slot(unsigned code)
{
    for (unsigned i = 0; i < N_CODES; i++)
        if (metric_codes[i] == code)
            return i;
    return N_CODES; /* "other" */
}

const char *kvsrv_ep_name(kvsrv_ep ep)
{
    return ep_names[ep];
}

void kvsrv_metrics_request_done(kvsrv_req *r, int completed_ok)
{
    kvsrv *s = r->srv;
    if (!r->file_response && completed_ok)
        atomic_fetch_add_explicit(&s->bytes_sent, r->bytes, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->requests[r->ep][code_slot(r->status)], 1, memory_order_relaxed);
    if (r->status >= 500 || !completed_ok)
        atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
}

enum MHD_Result kvsrv_healthz(kvsrv_req *r)
{
    return kvsrv_respond_json(r, MHD_HTTP_OK, json_pack("{s:s}", "status",
                                                          atomic_load(&r->srv->stopping) ? "stopping" : "ok"));
}

enum MHD_Result kvsrv_metrics(kvsrv_req *r)
{
    kvsrv *s = r->srv;
    size_t cap = 64 * 1024, len = 0;
    char *out = malloc(cap);
    if (!out)
        return MHD_NO;
#define EMIT(...) \
    do { \
        int n_ = snprintf(out + len, cap - len, __VA_ARGS__); \
        if (n_ > 0 && (size_t)n_ < cap - len) \
            len += (size_t)n_; \
    } while (0)
    EMIT("# HELP kvpubd_requests_total Requests answered, by endpoint and HTTP status.\n"
         "# TYPE kvpubd_requests_total counter\n");
    for (int e = 0; e < EP_COUNT; e++)
        for (unsigned c = 0; c <= N_CODES; c++) {
            uint64_t v = atomic_load_explicit(&s->requests[e][c], memory_order_relaxed);
            if (!v)
                continue;
            if (c < N_CODES)
                EMIT("kvpubd_requests_total{endpoint=\"%s\",status=\"%u\"} %" PRIu64 "\n",
                     ep_names[e], metric_codes[c], v);
            else
                EMIT("kvpubd_requests_total{endpoint=\"%s\",status=\"other\"} %" PRIu64 "\n",
                     ep_names[e], v);
        }
    /* one scalar metric: its HELP, TYPE and value lines from one line here */
#define METRIC(name, type, help, value) \
    EMIT("# HELP " name " " help "\n# TYPE " name " " type "\n" name " %" PRId64 "\n", (int64_t)(value))
    METRIC("kvpubd_response_bytes_total", "counter", "Body bytes handed to TLS.", atomic_load(&s->bytes_sent));
    METRIC("kvpubd_errors_total", "counter", "Requests answered 5xx or cut before completion.",
           atomic_load(&s->errors));
    METRIC("kvpubd_active_connections", "gauge", "Open client connections.", atomic_load(&s->active_conns));
    METRIC("kvpubd_inflight_requests", "gauge", "Requests being handled or sent.", atomic_load(&s->inflight));
    METRIC("kvpubd_header_timeouts_total", "counter",
           "Connections cut for not completing request headers in time.", atomic_load(&s->header_timeouts));
    METRIC("kvpubd_body_timeouts_total", "counter", "Connections cut for sending a request body too slowly.",
           atomic_load(&s->body_timeouts));
    METRIC("kvpubd_busy_total", "counter", "Connections past --max-conns answered 503 busy and closed.",
           atomic_load(&s->busy));
    METRIC("kvpubd_rate_limited_total", "counter", "Purchases refused 429 by the per-address rate limit.",
           atomic_load(&s->rate_limited));
    METRIC("kvpubd_uploads_rejected_total", "counter", "Uploads refused (auth, size, verification).",
           atomic_load(&s->uploads_rejected));
    METRIC("kvpubd_active_uploads", "gauge", "Uploads being received and verified.", atomic_load(&s->uploads_active));
    METRIC("kvpubd_kept_buffer_bytes", "gauge", "Verification buffers kept for the next upload.", kvb_buffers_kept());
#undef METRIC
#undef EMIT
    return kvsrv_respond_text(r, MHD_HTTP_OK, "text/plain; version=0.0.4", out, len);
}

