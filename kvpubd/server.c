/* server.c: the kvpubd HTTPS daemon: libmicrohttpd (thread pool, epoll, GnuTLS) routing the
 * endpoints of spec/http-api.md onto store/, with limits, metrics and structured logs. */
#include "kvpubd/server.h"
#include "kvpubd/server_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

/* Bodies we accept besides uploads (purchase requests) are tiny JSON objects. */
#define SMALL_BODY_MAX 4096
/* Blob bodies are read and handed to TLS in blocks of this size: MHD's own fd responses use
 * 4 KiB blocks, which become 4 KiB TLS records (4x the records and syscalls of 16 KiB). */
#define FILE_BLOCK (256 * 1024)
#define CORK_MIN (1u << 20) /* bodies at least this large are sent corked */
/* Per-connection memory pool: the request line + headers must fit in about half of it, and
 * it bounds the send buffer each TLS write is cut from (64 KiB: ~550 MB/s for 8 concurrent
 * downloads here; 256 KiB: ~650 MB/s). */
#define CONN_MEMORY_LIMIT (256 * 1024)
/* Request line + headers we accept (431 above); the pool bounds what MHD buffers first. */
#define MAX_HEADER_BYTES (32 * 1024)
#define MAX_LOG_PATH 200

/* ---- metrics ---- */

static const char *const ep_names[EP_COUNT] = {
    "catalog", "manifest", "blob", "purchase", "upload", "keys", "healthz", "metrics", "other",
};
static const unsigned metric_codes[] = {200, 201, 206, 304, 400, 401, 403, 404, 405, 409, 410, 411,
                                        413, 415, 416, 422, 500, 503};
#define N_CODES (sizeof metric_codes / sizeof metric_codes[0])
_Static_assert(N_CODES + 1 == KVSRV_N_CODES, "KVSRV_N_CODES counts metric_codes plus 'other'");

static unsigned code_slot(unsigned code)
{
    for (unsigned i = 0; i < N_CODES; i++)
        if (metric_codes[i] == code)
            return i;
    return N_CODES; /* "other" */
}

/* ---- logging ---- */

__attribute__((format(printf, 3, 0)))
static void log_vwrite(kvsrv *s, const char *level, const char *fmt, va_list ap)
{
    char ts[32];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    pthread_mutex_lock(&s->log_mu);
    FILE *f = s->log ? s->log : stderr;
    fprintf(f, "ts=%s.%03ldZ level=%s ", ts, now.tv_nsec / 1000000, level);
    vfprintf(f, fmt, ap);
    fputc('\n', f);
    fflush(f);
    pthread_mutex_unlock(&s->log_mu);
}

void kvsrv_log(kvsrv *s, const char *level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(s, level, fmt, ap);
    va_end(ap);
}

void kvsrv_reopen_log(kvsrv *s)
{
    if (!s->log_path)
        return;
    FILE *f = fopen(s->log_path, "a");
    if (!f) {
        kvsrv_log(s, "error", "event=log_reopen path=%s error=\"%s\"", s->log_path, strerror(errno));
        return;
    }
    pthread_mutex_lock(&s->log_mu);
    FILE *old = s->log;
    s->log = f;
    pthread_mutex_unlock(&s->log_mu);
    if (old)
        fclose(old);
    kvsrv_log(s, "info", "event=log_reopen path=%s", s->log_path);
}

/* MHD's own diagnostics (TLS handshake failures, limits hit) become error lines. */
__attribute__((format(printf, 2, 0)))
static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    char esc[1024];
    kvsrv_log(cls, "error", "event=mhd msg=\"%s\"", kvsrv_log_escape(msg, esc, sizeof esc));
}

/* ---- request state ---- */

static double mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void req_free(kvsrv_req *r)
{
    if (!r)
        return;
    if (r->up_reader)
        kvb_reader_free(r->up_reader);
    if (r->up_fd >= 0)
        close(r->up_fd);
    kvc_key_free(r->up_key);
    kvc_wipe(r->token, sizeof r->token);
    free(r->body);
    free(r);
}

/* ---- responses ---- */

enum MHD_Result kvsrv_queue(kvsrv_req *r, unsigned status, struct MHD_Response *resp)
{
    if (!resp)
        return MHD_NO;
    r->status = status;
    if (atomic_load(&r->srv->stopping))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* A compact JSON response with a trailing newline (readable in curl output and logs). Takes
 * body. Returns NULL when out of memory; *len gets the body's bytes. */
static struct MHD_Response *json_response(json_t *body, size_t *len)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    char *t2 = realloc(text, n + 2);
    if (!t2) {
        free(text);
        return NULL;
    }
    t2[n] = '\n';
    t2[n + 1] = 0;
    struct MHD_Response *resp = MHD_create_response_from_buffer(n + 1, t2, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(t2);
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    *len = n + 1;
    return resp;
}

enum MHD_Result kvsrv_respond_json(kvsrv_req *r, unsigned status, json_t *body)
{
    size_t len = 0;
    struct MHD_Response *resp = json_response(body, &len);
    if (!resp)
        return MHD_NO;
    r->bytes = len;
    return kvsrv_queue(r, status, resp);
}

static enum MHD_Result respond_error_v(kvsrv_req *r, unsigned status, const char *error, const char *hdr,
                                       const char *hdr_value, const char *fmt, va_list ap)
    __attribute__((format(printf, 6, 0)));
static enum MHD_Result respond_error_v(kvsrv_req *r, unsigned status, const char *error, const char *hdr,
                                       const char *hdr_value, const char *fmt, va_list ap)
{
    char detail[512];
    vsnprintf(detail, sizeof detail, fmt, ap);
    snprintf(r->err, sizeof r->err, "%.60s: %.190s", error, detail);
    json_t *o = json_pack("{s:s, s:s}", "error", error, "detail", detail);
    if (!o) {
        /* the detail quoted request bytes that are not UTF-8: send them escaped instead */
        char esc[sizeof detail * 4];
        o = json_pack("{s:s, s:s}", "error", error, "detail", kvsrv_log_escape(detail, esc, sizeof esc));
    }
    if (!o)
        return MHD_NO;
    size_t len = 0;
    struct MHD_Response *resp = json_response(o, &len);
    if (!resp)
        return MHD_NO;
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"kvpub\"");
    if (hdr)
        MHD_add_response_header(resp, hdr, hdr_value);
    r->bytes = len;
    return kvsrv_queue(r, status, resp);
}

enum MHD_Result kvsrv_respond_error(kvsrv_req *r, unsigned status, const char *error,
                                    const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    enum MHD_Result ret = respond_error_v(r, status, error, NULL, NULL, fmt, ap);
    va_end(ap);
    return ret;
}

enum MHD_Result kvsrv_respond_error_hdr(kvsrv_req *r, unsigned status, const char *error, const char *hdr,
                                        const char *hdr_value, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    enum MHD_Result ret = respond_error_v(r, status, error, hdr, hdr_value, fmt, ap);
    va_end(ap);
    return ret;
}

enum MHD_Result kvsrv_respond_text(kvsrv_req *r, unsigned status, const char *ctype, char *text_take,
                                   size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text_take, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text_take);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    r->bytes = len;
    return kvsrv_queue(r, status, resp);
}

/* ---- file bodies ---- */

typedef struct file_body {
    int fd;
    uint64_t offset;          /* file offset of the response's first byte */
    _Atomic uint64_t *bytes;  /* the request's counter; valid until the request completes */
    kvsrv *srv;
} file_body;

static ssize_t file_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    file_body *fb = cls;
    ssize_t n;
    do
        n = pread(fb->fd, buf, max, (off_t)(fb->offset + pos));
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return MHD_CONTENT_READER_END_WITH_ERROR; /* the file shrank or vanished: cut the body */
    atomic_fetch_add_explicit(fb->bytes, (uint64_t)n, memory_order_relaxed);
    atomic_fetch_add_explicit(&fb->srv->bytes_sent, (uint64_t)n, memory_order_relaxed);
    return n;
}

static void file_free(void *cls)
{
    file_body *fb = cls;
    close(fb->fd);
    free(fb);
}

struct MHD_Response *kvsrv_file_response(kvsrv_req *r, int fd_take, uint64_t offset, uint64_t len)
{
    file_body *fb = malloc(sizeof *fb);
    if (!fb) {
        close(fd_take);
        return NULL;
    }
    fb->fd = fd_take;
    fb->offset = offset;
    fb->bytes = &r->file_bytes;
    fb->srv = r->srv;
    size_t block = len < FILE_BLOCK ? (size_t)(len ? len : 1) : FILE_BLOCK;
    struct MHD_Response *resp = MHD_create_response_from_callback(len, block, file_read, fb, file_free);
    if (!resp) {
        file_free(fb);
        return NULL;
    }
    /* Large bodies go out corked: MHD's epoll loop sends one 16 KiB TLS record per connection
     * per turn and pushes each at once, so with several downloads every record woke its client
     * on its own; corked, the kernel sends full-size segments (4 records on loopback) and the
     * tail leaves when the request completes (on_completed uncorks). spec/http-api.md has the
     * measurements. */
    if (len >= CORK_MIN) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        int on = 1;
        if (ci && setsockopt(ci->connect_fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on) == 0)
            r->cork_fd = ci->connect_fd;
    }
    return resp;
}

/* ---- small helpers shared by the handlers ---- */

const char *kvsrv_header(kvsrv_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *kvsrv_arg(kvsrv_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *kvsrv_bearer(kvsrv_req *r)
{
    return kvsrv_bearer_token(kvsrv_header(r, MHD_HTTP_HEADER_AUTHORIZATION));
}

/* ---- routing ---- */

/* Splits the URL path into an endpoint and, for /v1/blobs/{id}[/manifest], the id. */
static void route(const char *url, kvsrv_req *r)
{
    r->ep = EP_OTHER;
    if (strcmp(url, "/v1/catalog") == 0)
        r->ep = EP_CATALOG;
    else if (strcmp(url, "/v1/purchases") == 0)
        r->ep = EP_PURCHASE;
    else if (strcmp(url, "/v1/blobs") == 0)
        r->ep = EP_UPLOAD;
    else if (strcmp(url, "/v1/keys") == 0)
        r->ep = EP_KEYS;
    else if (strcmp(url, "/healthz") == 0)
        r->ep = EP_HEALTHZ;
    else if (strcmp(url, "/metrics") == 0)
        r->ep = EP_METRICS;
    else if (strncmp(url, "/v1/blobs/", 10) == 0) {
        const char *id = url + 10;
        const char *slash = strchr(id, '/');
        size_t n = slash ? (size_t)(slash - id) : strlen(id);
        if (slash && strcmp(slash, "/manifest") != 0)
            return;
        /* the id is checked character by character, so "..", "%2e" or "/" never reach a path */
        if (n != 64)
            r->ep = slash ? EP_MANIFEST : EP_BLOB, r->bad_id = 1;
        else {
            memcpy(r->id, id, 64);
            r->id[64] = 0;
            r->ep = slash ? EP_MANIFEST : EP_BLOB;
            r->bad_id = !kvsrv_is_id(r->id);
        }
    }
}

static enum MHD_Result method_not_allowed(kvsrv_req *r, const char *allow)
{
    char method[sizeof r->method * 4];
    return kvsrv_respond_error_hdr(r, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed", MHD_HTTP_HEADER_ALLOW, allow,
                                   "%s %s is not supported (allowed: %s)",
                                   kvsrv_log_escape(r->method, method, sizeof method), ep_names[r->ep], allow);
}

static int is_get(const char *m)
{
    return strcmp(m, MHD_HTTP_METHOD_GET) == 0 || strcmp(m, MHD_HTTP_METHOD_HEAD) == 0;
}

/* First call for a request without a body (GET/HEAD): a body is refused so that nothing is
 * left unread on the connection. */
static int has_body(kvsrv_req *r)
{
    const char *te = kvsrv_header(r, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    const char *cl = kvsrv_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    return te != NULL || (cl && strcmp(cl, "0") != 0);
}

static enum MHD_Result handle_healthz(kvsrv_req *r)
{
    return kvsrv_respond_json(r, MHD_HTTP_OK, json_pack("{s:s}", "status",
                                                          atomic_load(&r->srv->stopping) ? "stopping" : "ok"));
}

static enum MHD_Result handle_metrics(kvsrv_req *r)
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
    METRIC("kvpubd_uploads_rejected_total", "counter", "Uploads refused (auth, size, verification).",
           atomic_load(&s->uploads_rejected));
#undef METRIC
#undef EMIT
    return kvsrv_respond_text(r, MHD_HTTP_OK, "text/plain; version=0.0.4", out, len);
}

/* ---- header deadline (see struct kvsrv) ---- */

typedef struct kvsrv_watch {
    struct kvsrv_watch *prev, *next;
    int fd;
    double since;      /* mono ms: accept, the end of the previous request, or headers done */
    int in_request;    /* headers complete: the request is being handled or answered */
    int in_body;       /* its body (upload, purchase) is still arriving */
    uint64_t body_bytes;
    int cut;           /* shut down by the watchdog: CUT_HEADERS or CUT_BODY */
    int over;          /* opened past --max-conns: its first request is answered 503 busy */
} kvsrv_watch;

enum { CUT_HEADERS = 1, CUT_BODY = 2 };
/* A request body must average BODY_MIN_RATE bytes/s after a grace of --timeout seconds (the
 * idle timeout alone lets a client trickle a byte every timeout - 1 seconds for ever). */
#define BODY_MIN_RATE 1024.0

static kvsrv_watch *watch_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* A body starts arriving (bytes 0), goes on (bytes > 0) or is complete (done). */
static void watch_body(kvsrv *s, struct MHD_Connection *conn, size_t bytes, int done)
{
    kvsrv_watch *w = watch_of(conn);
    if (!w)
        return;
    pthread_mutex_lock(&s->watch_mu);
    w->in_body = !done;
    w->body_bytes += bytes;
    pthread_mutex_unlock(&s->watch_mu);
}

/* Marks the connection's request started (headers complete) or ended (idle again). Returns
 * its watch (NULL: unwatched). */
static const kvsrv_watch *watch_mark(kvsrv *s, struct MHD_Connection *conn, int in_request)
{
    kvsrv_watch *w = watch_of(conn);
    if (!w)
        return NULL;
    pthread_mutex_lock(&s->watch_mu);
    w->in_request = in_request;
    w->in_body = 0;
    w->body_bytes = 0;
    w->since = mono_ms();
    pthread_mutex_unlock(&s->watch_mu);
    return w;
}

static void *watchdog_main(void *arg)
{
    kvsrv *s = arg;
    double limit_ms = s->cfg.timeout_s * 1e3;
    pthread_mutex_lock(&s->watch_mu);
    while (!s->watchdog_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 250 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->watch_cv, &s->watch_mu, &until);
        double now = mono_ms();
        /* MHD closes the socket only after its CLOSED notification, which unlinks the entry
         * under watch_mu: every fd on this list still belongs to its connection */
        for (kvsrv_watch *w = s->watch_head; w && !s->watchdog_stop; w = w->next) {
            if (w->cut)
                continue;
            if (!w->in_request && now - w->since > limit_ms) {
                w->cut = CUT_HEADERS;
                atomic_fetch_add_explicit(&s->header_timeouts, 1, memory_order_relaxed);
            } else if (w->in_body && now - w->since > limit_ms + (double)w->body_bytes / BODY_MIN_RATE * 1e3) {
                w->cut = CUT_BODY;
                atomic_fetch_add_explicit(&s->body_timeouts, 1, memory_order_relaxed);
            } else {
                continue;
            }
            (void)shutdown(w->fd, SHUT_RDWR); /* MHD sees the end of the stream and closes it */
        }
    }
    pthread_mutex_unlock(&s->watch_mu);
    return NULL;
}

/* Connections MHD accepts past --max-conns only to answer them 503 busy at once (instead of
 * leaving them in the listen queue): an eighth more, at least 4 and at most 64. Past those,
 * new connections wait in the listen queue. */
static unsigned busy_slots(unsigned max_conns)
{
    unsigned n = max_conns / 8;
    return n < 4 ? 4 : n > 64 ? 64 : n;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    kvsrv *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        long open = atomic_fetch_add(&s->active_conns, 1) + 1;
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        kvsrv_watch *w = ci ? calloc(1, sizeof *w) : NULL;
        if (!w)
            return; /* unwatched: MHD's idle timeout still applies */
        w->fd = ci->connect_fd;
        w->over = open > (long)s->cfg.max_conns;
        w->since = mono_ms();
        pthread_mutex_lock(&s->watch_mu);
        w->next = s->watch_head;
        if (w->next)
            w->next->prev = w;
        s->watch_head = w;
        pthread_mutex_unlock(&s->watch_mu);
        *socket_context = w;
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        atomic_fetch_sub(&s->active_conns, 1);
        kvsrv_watch *w = *socket_context;
        if (!w)
            return;
        pthread_mutex_lock(&s->watch_mu);
        if (w->prev)
            w->prev->next = w->next;
        else
            s->watch_head = w->next;
        if (w->next)
            w->next->prev = w->prev;
        pthread_mutex_unlock(&s->watch_mu);
        if (w->cut == CUT_HEADERS)
            kvsrv_log(s, "info", "event=header_timeout detail=\"request headers not complete within %us\"",
                      s->cfg.timeout_s);
        else if (w->cut == CUT_BODY)
            kvsrv_log(s, "info", "event=body_timeout detail=\"request body slower than %.0f bytes/s after %us\"",
                      BODY_MIN_RATE, s->cfg.timeout_s);
        free(w);
        *socket_context = NULL;
    }
}

static void watchdog_halt(kvsrv *s)
{
    if (!s->watchdog_running)
        return;
    pthread_mutex_lock(&s->watch_mu);
    s->watchdog_stop = 1;
    pthread_cond_signal(&s->watch_cv);
    pthread_mutex_unlock(&s->watch_mu);
    pthread_join(s->watchdog, NULL);
    s->watchdog_running = 0;
}

/* Sums the bytes of the request's header lines (name, value and ": \r\n"). */
static enum MHD_Result add_header_bytes(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    *(size_t *)cls += strlen(key) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    kvsrv *s = cls;
    kvsrv_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->srv = s;
        r->conn = conn;
        r->up_fd = -1;
        r->cork_fd = -1;
        r->t0 = mono_ms();
        snprintf(r->method, sizeof r->method, "%s", method);
        kvsrv_log_escape(url, r->path, sizeof r->path);
        atomic_fetch_add(&s->inflight, 1);
        *con_cls = r;
        const kvsrv_watch *w = watch_mark(s, conn, 1);
        route(url, r);
        size_t hbytes = strlen(url) + strlen(method) + 12;
        MHD_get_connection_values(conn, MHD_HEADER_KIND, add_header_bytes, &hbytes);
        if (hbytes > MAX_HEADER_BYTES)
            return kvsrv_respond_error(r, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large",
                                       "request line and headers are %zu bytes, over %d", hbytes,
                                       MAX_HEADER_BYTES);
        if (w && w->over) { /* answered now, in the first call: MHD then closes the connection */
            atomic_fetch_add_explicit(&s->busy, 1, memory_order_relaxed);
            return kvsrv_respond_error_hdr(r, MHD_HTTP_SERVICE_UNAVAILABLE, "busy", MHD_HTTP_HEADER_RETRY_AFTER,
                                           "1", "the server already has its %u connections open (--max-conns); "
                                           "retry later", s->cfg.max_conns);
        }
        /* Requests with a body set up their state here and return before reading it (an
         * early refusal queued now also makes MHD close the connection: the body is never
         * read). Other requests are answered on the next call: MHD 0.9.7x closes any
         * connection whose response is queued in the first call, which would cost a TLS
         * handshake per request. */
        switch (r->ep) {
        case EP_UPLOAD:
            if (strcmp(method, MHD_HTTP_METHOD_PUT) != 0)
                return method_not_allowed(r, "PUT");
            watch_body(s, conn, 0, 0);
            return kvsrv_upload_begin(r);
        case EP_PURCHASE:
            if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
                return method_not_allowed(r, "POST");
            watch_body(s, conn, 0, 0);
            return kvsrv_purchase_begin(r);
        default:
            if (r->ep != EP_OTHER && !is_get(method))
                return method_not_allowed(r, "GET, HEAD");
            if (has_body(r))
                return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request",
                                           "a %s request to this endpoint must not have a body", method);
            return MHD_YES;
        }
    }
    if (r->status) { /* already answered (refused early): discard what still arrives */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->ep != EP_UPLOAD && r->ep != EP_PURCHASE) {
        if (r->ep == EP_OTHER)
            return kvsrv_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found", "no endpoint at this path");
        if (!is_get(method))
            return method_not_allowed(r, "GET, HEAD");
        if (r->bad_id)
            return kvsrv_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found",
                                       "blob ids are 64 lowercase hex digits (the blob's SHA-256)");
        switch (r->ep) {
        case EP_HEALTHZ: return handle_healthz(r);
        case EP_METRICS: return handle_metrics(r);
        case EP_CATALOG: return kvsrv_catalog(r);
        case EP_KEYS: return kvsrv_keys(r);
        case EP_MANIFEST: return kvsrv_manifest(r);
        case EP_BLOB: return kvsrv_download(r);
        default: return MHD_NO;
        }
    }
    watch_body(s, conn, *upload_data_size, *upload_data_size == 0);
    if (r->ep == EP_UPLOAD)
        return kvsrv_upload_data(r, upload_data, upload_data_size);
    if (r->ep == EP_PURCHASE) {
        if (*upload_data_size) {
            if (r->body_len + *upload_data_size > SMALL_BODY_MAX) {
                *upload_data_size = 0;
                return kvsrv_respond_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
                                           "request body over %d bytes", SMALL_BODY_MAX);
            }
            memcpy(r->body + r->body_len, upload_data, *upload_data_size);
            r->body_len += *upload_data_size;
            *upload_data_size = 0;
            return MHD_YES;
        }
        r->body[r->body_len] = 0;
        return kvsrv_purchase(r);
    }
    (void)version;
    return MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    kvsrv *s = cls;
    kvsrv_req *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    if (r->cork_fd >= 0) { /* push the tail of a corked download now, not after the 200 ms cork timer */
        int off = 0;
        (void)setsockopt(r->cork_fd, IPPROTO_TCP, TCP_CORK, &off, sizeof off);
    }
    uint64_t bytes = r->bytes + atomic_load(&r->file_bytes);
    if (!r->file_response && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        atomic_fetch_add_explicit(&s->bytes_sent, r->bytes, memory_order_relaxed);
    unsigned st = r->status;
    atomic_fetch_add_explicit(&s->requests[r->ep][code_slot(st)], 1, memory_order_relaxed);
    if (st >= 500 || toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
    char addr[INET6_ADDRSTRLEN + 8] = "-";
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        socklen_t sl = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        if (getnameinfo(sa, sl, addr, sizeof addr, NULL, 0, NI_NUMERICHOST) != 0)
            snprintf(addr, sizeof addr, "?");
    }
    snprintf(r->remote, sizeof r->remote, "%s", addr);
    static const char *const toe_names[] = {"ok", "error", "timeout", "shutdown", "read_error", "client_abort"};
    const char *how = (unsigned)toe < sizeof toe_names / sizeof toe_names[0] ? toe_names[toe] : "?";
    char err[300], method[70];
    kvsrv_log_escape(r->err, err, sizeof err);
    kvsrv_log_escape(r->method, method, sizeof method);
    kvsrv_log(s, st >= 500 || toe != MHD_REQUEST_TERMINATED_COMPLETED_OK ? "error" : "info",
              "event=access remote=%s method=%s path=\"%s\" endpoint=%s status=%u bytes=%" PRIu64
              " ms=%.1f end=%s%s%s%s",
              addr, method, r->path, ep_names[r->ep], st, bytes, mono_ms() - r->t0, how,
              err[0] ? " detail=\"" : "", err, err[0] ? "\"" : "");
    kvsrv_req_finish(r, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
    req_free(r);
    (void)watch_mark(s, conn, 0); /* keep-alive: the next request's headers have timeout_s again */
    atomic_fetch_sub(&s->inflight, 1);
}

/* ---- lifecycle ---- */

/* Reads a whole small file (PEM) into a NUL-terminated buffer. */
static char *slurp(const char *path, size_t max, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad || n == 0 || n > max) {
        snprintf(err, errlen, "%s: %s", path, !buf ? "out of memory" : bad ? "read error"
                                                 : n == 0 ? "empty file" : "larger than 1 MiB");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

/* Parses "ADDR:PORT" / "[ADDR]:PORT" and binds a listening socket. */
static int bind_listen(const char *spec, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof host) {
        snprintf(err, errlen, "--listen '%s': expected ADDR:PORT, e.g. 127.0.0.1:8443 or [::1]:8443", spec);
        return -1;
    }
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = 0;
    if (host[0] == '[') {
        size_t hl = strlen(host);
        if (hl < 3 || host[hl - 1] != ']') {
            snprintf(err, errlen, "--listen '%s': unbalanced [ ] around the IPv6 address", spec);
            return -1;
        }
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = 0;
    }
    uint64_t port;
    if (kvsrv_parse_u64(colon + 1, &port) != 0 || port > 65535) {
        snprintf(err, errlen, "--listen '%s': port must be 0..65535", spec);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char ps[8];
    snprintf(ps, sizeof ps, "%u", (unsigned)port);
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "--listen '%s': '%s' is not a numeric IPv4/IPv6 address (%s)", spec, host,
                 gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 512) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

int kvsrv_start(const kvsrv_config *cfg, kvsrv **out, char *err, size_t errlen)
{
    *out = NULL;
    kvsrv *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return 2;
    }
    pthread_mutex_init(&s->log_mu, NULL);
    pthread_mutex_init(&s->watch_mu, NULL);
    pthread_cond_init(&s->watch_cv, NULL);
    s->listen_fd = -1;
    s->cfg = *cfg;
    if (!s->cfg.threads)
        s->cfg.threads = 2;
    if (!s->cfg.max_conns)
        s->cfg.max_conns = 256;
    if (!s->cfg.timeout_s)
        s->cfg.timeout_s = 30;
    if (!s->cfg.max_upload)
        s->cfg.max_upload = (uint64_t)4 << 30;
    if (!s->cfg.token_ttl_s)
        s->cfg.token_ttl_s = 24 * 3600;
    if (!s->cfg.token_downloads)
        s->cfg.token_downloads = 5;
    if (cfg->log_path) {
        if (strlen(cfg->log_path) > MAX_LOG_PATH * 20) {
            snprintf(err, errlen, "--log path too long");
            goto fail;
        }
        s->log_path = strdup(cfg->log_path);
        s->log = s->log_path ? fopen(s->log_path, "a") : NULL;
        if (!s->log) {
            snprintf(err, errlen, "cannot open log %s: %s", cfg->log_path, strerror(errno));
            goto fail;
        }
    }
    if (kvsrv_store_open(s, err, errlen) != 0)
        goto fail;
    if (!(s->cert = slurp(cfg->tls_cert, 1 << 20, err, errlen)) ||
        !(s->key = slurp(cfg->tls_key, 1 << 20, err, errlen)))
        goto fail;
    s->listen_fd = bind_listen(cfg->listen, err, errlen);
    if (s->listen_fd < 0)
        goto fail;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(s->listen_fd, (struct sockaddr *)&ss, &sl) == 0)
        s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    s->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TLS | MHD_USE_ITC | MHD_USE_ERROR_LOG,
        0, NULL, NULL, on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, s,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)s->listen_fd,
        MHD_OPTION_HTTPS_MEM_CERT, s->cert,
        MHD_OPTION_HTTPS_MEM_KEY, s->key,
        MHD_OPTION_THREAD_POOL_SIZE, s->cfg.threads,
        MHD_OPTION_CONNECTION_LIMIT, s->cfg.max_conns + busy_slots(s->cfg.max_conns),
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->cfg.max_conns_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, s->cfg.timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY_LIMIT,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_END);
    if (!s->daemon) {
        snprintf(err, errlen, "cannot start the HTTPS daemon on %s (bad certificate/key pair?)", cfg->listen);
        goto fail;
    }
    if (pthread_create(&s->watchdog, NULL, watchdog_main, s) != 0) {
        snprintf(err, errlen, "cannot start the connection watchdog thread");
        goto fail;
    }
    s->watchdog_running = 1;
    *out = s;
    return 0;
fail:
    kvsrv_free(s);
    return 2;
}

unsigned kvsrv_port(const kvsrv *s)
{
    return s->port;
}

unsigned kvsrv_shutdown(kvsrv *s, unsigned deadline_s)
{
    if (!s->daemon)
        return 0;
    atomic_store(&s->stopping, 1);
    MHD_socket lfd = MHD_quiesce_daemon(s->daemon);
    if (lfd != MHD_INVALID_SOCKET) {
        close(lfd);
        s->listen_fd = -1;
    }
    double end = mono_ms() + deadline_s * 1e3;
    while (atomic_load(&s->inflight) > 0 && mono_ms() < end) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    unsigned left = (unsigned)atomic_load(&s->inflight);
    watchdog_halt(s);
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
    return left;
}

void kvsrv_free(kvsrv *s)
{
    if (!s)
        return;
    watchdog_halt(s);
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    kvsrv_store_close(s);
    free(s->cert);
    if (s->key) {
        kvc_wipe(s->key, strlen(s->key));
        free(s->key);
    }
    if (s->log)
        fclose(s->log);
    free(s->log_path);
    pthread_mutex_destroy(&s->log_mu);
    /* MHD_stop_daemon sent every CLOSED notification: the list is empty */
    pthread_mutex_destroy(&s->watch_mu);
    pthread_cond_destroy(&s->watch_cv);
    free(s);
}
