/* http.c: the bottom layer of the kvpubd daemon: the structured log, per-request state, the
 * respond helpers (JSON, errors, text, file bodies) and request accessors (http.h). */
#include "kvpubd/http.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Blob bodies are read and handed to TLS in blocks of this size: MHD's own fd responses use
 * 4 KiB blocks, which become 4 KiB TLS records (4x the records and syscalls of 16 KiB). */
#define FILE_BLOCK (256 * 1024)
#define CORK_MIN (1u << 20) /* bodies at least this large are sent corked */

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

/* ---- request state ---- */

kvsrv_req *kvsrv_req_create(kvsrv *s, struct MHD_Connection *conn, const char *method, const char *url)
{
    kvsrv_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->srv = s;
    r->conn = conn;
    r->up_fd = -1;
    r->cork_fd = -1;
    r->t0 = base_now_s();
    r->ep = EP_OTHER; /* until routed: MHD answers some requests itself before that */
    snprintf(r->method, sizeof r->method, "%s", method);
    kvsrv_log_escape(url, r->path, sizeof r->path);
    return r;
}

void kvsrv_req_free(kvsrv_req *r)
{
    if (!r)
        return;
    if (r->up_reader) {
        kvb_reader_free(r->up_reader);
        /* the reader's chunk buffers are kept for the next one (a chunk of a big model's blob
         * is tens of MB); with no upload left, an idle server gives them back */
        if (atomic_fetch_sub(&r->srv->uploads_active, 1) == 1)
            kvb_buffers_release();
    }
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

struct MHD_Response *kvsrv_text_response(kvsrv_req *r, const char *ctype, char *text_take, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text_take, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text_take);
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    r->bytes = len;
    return resp;
}

enum MHD_Result kvsrv_respond_text(kvsrv_req *r, unsigned status, const char *ctype, char *text_take,
                                   size_t len)
{
    return kvsrv_queue(r, status, kvsrv_text_response(r, ctype, text_take, len));
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
