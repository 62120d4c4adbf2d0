/* server.c: the kvpubd HTTPS daemon's lifecycle and routing: libmicrohttpd (thread pool,
 * epoll, GnuTLS) started over a store/, each request routed through one table onto the
 * endpoints of spec/http-api.md (api.h, metrics.h), with request limits and access logs. */
#include "kvpubd/server.h"
#include "kvpubd/api.h"
#include "kvpubd/http.h"
#include "kvpubd/metrics.h"
#include "kvpubd/prune.h"
#include "kvpubd/ratelimit.h"
#include "kvpubd/watchdog.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Per-connection memory pool: the request line + headers must fit in about half of it, and
 * it bounds the send buffer each TLS write is cut from (64 KiB: ~550 MB/s for 8 concurrent
 * downloads here; 256 KiB: ~650 MB/s). */
#define CONN_MEMORY_LIMIT (256 * 1024)
/* Request line + headers we accept (431 above); the pool bounds what MHD buffers first. */
#define MAX_HEADER_BYTES (32 * 1024)
#define MAX_LOG_PATH 200

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

/* ---- routing ---- */

#define GET_HEAD "GET, HEAD"

/* What the access handler calls for each endpoint. */
typedef struct endpoint {
    const char *path;  /* the exact URL path; NULL: /v1/blobs/{id}[/manifest], parsed by route() */
    const char *allow; /* the methods it takes (405's Allow header); a body endpoint takes one */
    /* an endpoint with a request body: begin once the headers are complete, body for each
     * piece of it and once more at its end (api.h) */
    enum MHD_Result (*begin)(kvsrv_req *r);
    enum MHD_Result (*body)(kvsrv_req *r, const char *data, size_t *size);
    /* an endpoint without one (GET, HEAD): the answer */
    enum MHD_Result (*answer)(kvsrv_req *r);
    /* on completion, whatever the outcome; NULL: nothing to do */
    void (*finish)(kvsrv_req *r, int completed_ok);
} endpoint;

static const endpoint endpoints[EP_COUNT] = {
    [EP_CATALOG] = {.path = "/v1/catalog", .allow = GET_HEAD, .answer = kvsrv_catalog},
    [EP_MANIFEST] = {.allow = GET_HEAD, .answer = kvsrv_manifest},
    [EP_BLOB] = {.allow = GET_HEAD, .answer = kvsrv_download, .finish = kvsrv_download_finish},
    [EP_PURCHASE] = {.path = "/v1/purchases", .allow = MHD_HTTP_METHOD_POST, .begin = kvsrv_purchase_begin,
                     .body = kvsrv_purchase_body},
    [EP_UPLOAD] = {.path = "/v1/blobs", .allow = MHD_HTTP_METHOD_PUT, .begin = kvsrv_upload_begin,
                   .body = kvsrv_upload_body},
    [EP_KEYS] = {.path = "/v1/keys", .allow = GET_HEAD, .answer = kvsrv_keys},
    [EP_HEALTHZ] = {.path = "/healthz", .allow = GET_HEAD, .answer = kvsrv_healthz},
    [EP_METRICS] = {.path = "/metrics", .allow = GET_HEAD, .answer = kvsrv_metrics},
    [EP_SNAPSHOT] = {.path = "/v1/snapshot", .allow = GET_HEAD, .answer = kvsrv_snapshot},
    [EP_OTHER] = {0},
};

/* Splits the URL path into an endpoint and, for /v1/blobs/{id}[/manifest] and
 * /v1/manifests/{id} (the static repository's name for the manifest, spec/repository.md), the
 * id. */
static void route(const char *url, kvsrv_req *r)
{
    r->ep = EP_OTHER;
    for (int e = 0; e < EP_COUNT; e++)
        if (endpoints[e].path && strcmp(url, endpoints[e].path) == 0) {
            r->ep = (kvsrv_ep)e;
            return;
        }
    int manifests = strncmp(url, "/v1/manifests/", 14) == 0;
    if (manifests || strncmp(url, "/v1/blobs/", 10) == 0) {
        const char *id = url + (manifests ? 14 : 10);
        const char *slash = strchr(id, '/');
        size_t n = slash ? (size_t)(slash - id) : strlen(id);
        if (slash && (manifests || strcmp(slash, "/manifest") != 0))
            return;
        if (manifests)
            slash = id + n; /* a manifest, as /v1/blobs/{id}/manifest */
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
                                   kvsrv_log_escape(r->method, method, sizeof method), kvsrv_ep_name(r->ep), allow);
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

/* Connections MHD accepts past --max-conns only to answer them 503 busy at once (instead of
 * leaving them in the listen queue): an eighth more, at least 4 and at most 64. Past those,
 * new connections wait in the listen queue. */
static unsigned busy_slots(unsigned max_conns)
{
    unsigned n = max_conns / 8;
    return n < 4 ? 4 : n > 64 ? 64 : n;
}

/* What the header scan found that RFC 9112 framing forbids. */
typedef struct header_scan {
    unsigned content_length, host;
    int bad_name;  /* a name with a character a token may not have: whitespace before the colon */
    int bad_value; /* a CR or LF inside a value (MHD keeps a bare CR) */
} header_scan;

static int token_char(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    header_scan *h = cls;
    if (!*key)
        h->bad_name = 1;
    for (const char *k = key; *k; k++)
        h->bad_name |= !token_char((unsigned char)*k);
    if (value && strpbrk(value, "\r\n"))
        h->bad_value = 1;
    h->content_length += strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0;
    h->host += strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0;
    return MHD_YES;
}

/* RFC 9112 framing MHD lets through, where a proxy in front could read the request otherwise
 * (smuggling): a second Content-Length; a header name with whitespace before its colon
 * ("Content-Length : 38" is no Content-Length to MHD, which then serves the body as a second
 * request) or other non-token bytes; a bare CR inside a value; a second Host; and HTTP/1.1
 * (or any 1.x past 1.0) without Host. NULL when the request is well framed, else why not. */
static const char *request_framing(struct MHD_Connection *conn, const char *version)
{
    header_scan h = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, scan_header, &h);
    if (h.bad_name)
        return "a header name with a character a token may not have (whitespace before the colon?)";
    if (h.bad_value)
        return "a header value with a CR or LF in it";
    if (h.content_length > 1)
        return "more than one Content-Length header";
    if (h.host > 1)
        return "more than one Host header";
    if (strncmp(version, "HTTP/1.", 7) == 0 && strcmp(version, MHD_HTTP_VERSION_1_0) != 0 && !h.host)
        return "an HTTP/1.1 request must carry a Host header";
    return NULL;
}

/* Sums the bytes of the request's header lines (name, value and ": \r\n"). */
static enum MHD_Result add_header_bytes(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    *(size_t *)cls += strlen(key) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

/* The client's numeric address, or "?" / "-". */
static void client_address(struct MHD_Connection *conn, char *out, size_t n)
{
    snprintf(out, n, "-");
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        socklen_t sl = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        if (getnameinfo(sa, sl, out, (socklen_t)n, NULL, 0, NI_NUMERICHOST) != 0)
            snprintf(out, n, "?");
    }
}

/* Called with the raw request target, before MHD decodes it (what it returns becomes the
 * request's state): MHD decodes %00 to a NUL that silently cuts the path or a query value short,
 * and %2f to a slash that moves a request to another endpoint, so both are found here, where
 * they are still visible. The request's state and its client address start here too, so every
 * answer (the purchase's buyer included) knows who asked. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    kvsrv *s = cls;
    kvsrv_req *r = kvsrv_req_create(s, conn, "", uri);
    if (!r)
        return NULL;
    r->fresh = 1; /* in flight from its first on_request, once its headers are whole */
    client_address(conn, r->remote, sizeof r->remote);
    const char *q = strchr(uri, '?');
    size_t plen = q ? (size_t)(q - uri) : strlen(uri);
    for (size_t i = 0; i + 2 < plen; i++)
        if (uri[i] == '%' && ((uri[i + 1] == '0' && uri[i + 2] == '0') ||
                              (uri[i + 1] == '2' && (uri[i + 2] | 0x20) == 'f')))
            r->raw_bad_path = 1;
    r->raw_bad_query = q && strstr(q, "%00") != NULL;
    return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    kvsrv *s = cls;
    kvsrv_req *r = *con_cls;
    if (!r)
        return MHD_NO; /* on_uri could not allocate it */
    if (r->fresh) {
        r->fresh = 0;
        atomic_fetch_add(&s->inflight, 1);
        snprintf(r->method, sizeof r->method, "%s", method);
        int over = kvsrv_watch_mark(s, conn, 1);
        route(url, r);
        size_t hbytes = strlen(url) + strlen(method) + 12;
        MHD_get_connection_values(conn, MHD_HEADER_KIND, add_header_bytes, &hbytes);
        if (hbytes > MAX_HEADER_BYTES)
            return kvsrv_respond_error(r, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large",
                                       "request line and headers are %zu bytes, over %d", hbytes,
                                       MAX_HEADER_BYTES);
        const char *bad = request_framing(conn, version);
        if (bad)
            return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "%s", bad);
        if (r->raw_bad_path)
            return kvsrv_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found",
                                       "the path holds an encoded NUL or slash (%%00, %%2f): no endpoint there");
        if (r->raw_bad_query)
            return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "the query holds an encoded NUL (%%00)");
        if (over) { /* answered now, in the first call: MHD then closes the connection */
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
        const endpoint *ep = &endpoints[r->ep];
        if (ep->begin) {
            if (strcmp(method, ep->allow) != 0)
                return method_not_allowed(r, ep->allow);
            kvsrv_watch_body(s, conn, 0, 0);
            return ep->begin(r);
        }
        if (r->ep != EP_OTHER && !is_get(method))
            return method_not_allowed(r, ep->allow);
        if (has_body(r))
            return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request",
                                       "a %s request to this endpoint must not have a body", method);
        return MHD_YES;
    }
    if (r->status) { /* already answered (refused early): discard what still arrives */
        *upload_data_size = 0;
        return MHD_YES;
    }
    const endpoint *ep = &endpoints[r->ep];
    if (!ep->begin) {
        if (r->ep == EP_OTHER)
            return kvsrv_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found", "no endpoint at this path");
        if (!is_get(method))
            return method_not_allowed(r, ep->allow);
        if (r->bad_id)
            return kvsrv_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found",
                                       "blob ids are 64 lowercase hex digits (the blob's SHA-256)");
        return ep->answer(r);
    }
    kvsrv_watch_body(s, conn, *upload_data_size, *upload_data_size == 0);
    (void)version;
    return ep->body(r, upload_data, upload_data_size);
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
    int ok = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK;
    kvsrv_metrics_request_done(r, ok);
    unsigned st = r->status;
    const char *addr = r->remote;
    static const char *const toe_names[] = {"ok", "error", "timeout", "shutdown", "read_error", "client_abort"};
    const char *how = (unsigned)toe < sizeof toe_names / sizeof toe_names[0] ? toe_names[toe] : "?";
    char err[300], method[70];
    kvsrv_log_escape(r->err, err, sizeof err);
    kvsrv_log_escape(r->method, method, sizeof method);
    kvsrv_log(s, st >= 500 || !ok ? "error" : "info",
              "event=access remote=%s method=%s path=\"%s\" endpoint=%s status=%u bytes=%" PRIu64
              " ms=%.1f end=%s%s%s%s",
              addr, method, r->path, kvsrv_ep_name(r->ep), st, bytes, (base_now_s() - r->t0) * 1e3, how,
              err[0] ? " detail=\"" : "", err, err[0] ? "\"" : "");
    if (endpoints[r->ep].finish)
        endpoints[r->ep].finish(r, ok);
    const int counted = !r->fresh; /* a request whose headers never completed was not in flight */
    kvsrv_req_free(r);
    (void)kvsrv_watch_mark(s, conn, 0); /* keep-alive: the next request's headers have timeout_s again */
    if (counted)
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
    if (base_parse_u64(colon + 1, &port) != 0 || port > 65535) {
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
    if (s->cfg.max_conns_per_ip == KVSRV_PER_IP_AUTO)
        s->cfg.max_conns_per_ip = s->cfg.max_conns / 4 > 8 ? s->cfg.max_conns / 4 : 8;
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
    if (kvsrv_pool_open(s, err, errlen) != 0)
        goto fail;
    if (s->cfg.purchase_burst && s->cfg.purchase_per_min &&
        !(s->purchase_limit = kvsrv_ratelimit_create(s->cfg.purchase_burst, s->cfg.purchase_per_min))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
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
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
        MHD_OPTION_NOTIFY_CONNECTION, kvsrv_watch_connection, s,
        MHD_OPTION_END);
    if (!s->daemon) {
        snprintf(err, errlen, "cannot start the HTTPS daemon on %s (bad certificate/key pair?)", cfg->listen);
        goto fail;
    }
    if (kvsrv_watchdog_start(s) != 0) {
        snprintf(err, errlen, "cannot start the connection watchdog thread");
        goto fail;
    }
    if (kvsrv_prune_start(s, err, errlen) != 0)
        goto fail;
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
    double end = base_now_s() + deadline_s;
    while (atomic_load(&s->inflight) > 0 && base_now_s() < end) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    unsigned left = (unsigned)atomic_load(&s->inflight);
    kvsrv_prune_halt(s);
    kvsrv_watchdog_halt(s);
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
    return left;
}

void kvsrv_free(kvsrv *s)
{
    if (!s)
        return;
    kvsrv_prune_halt(s);
    kvsrv_watchdog_halt(s);
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    kvsrv_pool_close(s);
    kvsrv_ratelimit_free(s->purchase_limit);
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
