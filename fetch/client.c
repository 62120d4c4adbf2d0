/* client.c: the HTTPS client on libcurl: downloads streamed into a sink with Range resumption,
 * bounded exponential-backoff retries and stall timeouts; small JSON requests; uploads. */
#include "fetch/fetch.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto/kvcrypto.h"

#define MAX_BACKOFF_S 8.0
#define ERRBODY_MAX 512
#define DEADLINE_BASE_S 60.0 /* the automatic deadline: this, plus the length at the floor rate */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

/* curl_global_init is not thread-safe on older libcurl: run it exactly once. */
static void curl_init_once(void) { curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* A new easy handle in *h (libcurl initialised once before). */
static kvf_status new_handle(CURL **h, char *err, size_t errlen)
{
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK)
        return kvf_fail(err, errlen, KVF_ERR_NET, "libcurl initialisation failed");
    if (!(*h = curl_easy_init()))
        return kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
    return KVF_OK;
}

/* State of one download across its attempts. */
typedef struct xfer {
    const kvf_http_opts *o;
    kvf_sink_fn sink;
    kvf_restart_fn restart;
    void *user;
    uint64_t pos;        /* absolute offset of the next byte the sink expects */
    uint64_t req_from;   /* Range start of the current request (0 = none) */
    long code;           /* status of the current response, once known */
    int started;         /* body of the current response seen */
    int range_ok;        /* Content-Range of a 206 starts where we asked */
    int have_crange;
    uint64_t crange_start, crange_total;
    kvf_status sink_st;  /* set when the sink (or a status check) aborted */
    char *err;
    size_t errlen;
    char errbody[ERRBODY_MAX + 1];
    size_t errbody_len;
    double t0, last_draw;
    double attempt_t0;   /* start of the current request */
    uint64_t attempt_bytes; /* body bytes of the current request */
    int slow;            /* the current request fell below the mean-rate floor (retried) */
    uint64_t total_seen; /* the body's whole length, once a response said it (0 = unknown) */
    int drew;
    kvf_http_stats *stats;
} xfer;

static int hdr_is(const char *line, size_t n, const char *name)
{
    size_t k = strlen(name);
    return n > k && strncasecmp(line, name, k) == 0 && line[k] == ':';
}

/* Copies a header value (after "Name:") into out, trimmed; values too long for
 * KVF_VALIDATOR_MAX or holding control characters are dropped (out = ""). */
static void keep_validator(const char *v, size_t n, char *out)
{
    while (n && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    out[0] = 0;
    if (n > KVF_VALIDATOR_MAX)
        return;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e)
            return;
    memcpy(out, v, n);
    out[n] = 0;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userp)
{
    xfer *x = userp;
    size_t n = size * nitems;
    if (n >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        /* a new response (after a redirect or 100-continue): forget the previous one's */
        x->have_crange = 0;
        x->stats->etag[0] = 0;
        x->stats->last_modified[0] = 0;
        return n;
    }
    if (hdr_is(buf, n, "ETag"))
        keep_validator(buf + 5, n - 5, x->stats->etag);
    else if (hdr_is(buf, n, "Last-Modified"))
        keep_validator(buf + 14, n - 14, x->stats->last_modified);
    if (hdr_is(buf, n, "Content-Range")) {
        /* "Content-Range: bytes START-END/TOTAL" */
        char tmp[128];
        size_t m = n < sizeof tmp - 1 ? n : sizeof tmp - 1;
        memcpy(tmp, buf, m);
        tmp[m] = 0;
        unsigned long long s = 0, e = 0, t = 0;
        if (sscanf(tmp + 14, " bytes %llu-%llu/%llu", &s, &e, &t) >= 2) {
            x->have_crange = 1;
            x->crange_start = s;
            x->crange_total = t;
        }
    }
    return n;
}

/* First body bytes of a response: decide whether they belong to the blob. */
static int check_response(xfer *x, CURL *h)
{
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &x->code);
    x->started = 1;
    if (x->code == 206) {
        if (!x->have_crange || x->crange_start != x->req_from) {
            x->sink_st = kvf_fail(x->err, x->errlen, KVF_ERR_HTTP,
                              "server answered Range %llu- with a different range",
                              (unsigned long long)x->req_from);
            return -1;
        }
        if (x->stats)
            x->stats->resumed++;
        return 0;
    }
    if (x->code == 200 && x->req_from > 0) {
        /* the server ignored Range: the body starts again at byte 0 */
        kvf_status st = x->restart ? x->restart(x->user, x->err, x->errlen)
                                   : kvf_fail(x->err, x->errlen, KVF_ERR_HTTP, "server ignored Range");
        if (st != KVF_OK) {
            x->sink_st = st;
            return -1;
        }
        x->pos = 0;
        x->req_from = 0;
    }
    return 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    void **pp = userp;
    xfer *x = pp[0];
    CURL *h = pp[1];
    size_t n = size * nmemb;
    if (!x->started && check_response(x, h) != 0)
        return 0;
    if (x->code < 200 || x->code >= 300) {
        /* keep the start of an error body for the message; swallow the rest */
        size_t room = ERRBODY_MAX - x->errbody_len, m = n < room ? n : room;
        memcpy(x->errbody + x->errbody_len, data, m);
        x->errbody_len += m;
        x->errbody[x->errbody_len] = 0;
        return n;
    }
    kvf_status st = x->sink(x->user, data, n, x->err, x->errlen);
    if (st != KVF_OK) {
        x->sink_st = st;
        return 0;
    }
    x->pos += n;
    x->attempt_bytes += n;
    if (x->stats)
        x->stats->bytes += n;
    return n;
}

static long stall_window(const kvf_http_opts *o)
{
    return o->stall_timeout_s > 0 ? o->stall_timeout_s : 20L;
}

static int64_t floor_bps(const kvf_http_opts *o)
{
    return o->min_avg_bps == 0 ? KVF_DEFAULT_MIN_AVG_BPS : o->min_avg_bps;
}

/* The time by which the whole download must be over (0 = none): --timeout, else 60 s plus
 * the body's length (total, 0 while unknown) at the floor rate. */
static double deadline_of(const xfer *x, uint64_t total)
{
    const kvf_http_opts *o = x->o;
    const double t0 = o->start_s > 0 ? o->start_s : x->t0;
    if (o->timeout_s > 0)
        return t0 + o->timeout_s;
    if (o->timeout_s < 0 || floor_bps(o) < 0)
        return 0;
    return t0 + DEADLINE_BASE_S + (double)total / (double)floor_bps(o);
}

/* Called by libcurl about once a second and as bytes arrive: enforces the deadline and the
 * floor on the mean rate (a server that drips bytes just above the stall limit, or sends
 * nothing between retries, cannot hold the caller for ever), and draws progress. */
static int on_progress(void *userp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    xfer *x = userp;
    double t = base_now_s();
    uint64_t total = dltotal > 0 ? x->req_from + (uint64_t)dltotal : 0;
    if (total > x->total_seen)
        x->total_seen = total;
    double deadline = deadline_of(x, x->total_seen);
    if (deadline && t > deadline) {
        x->sink_st = kvf_fail(x->err, x->errlen, KVF_ERR_NET,
                              "gave up after %.0f s: the download's deadline passed (--timeout)",
                              t - (x->o->start_s > 0 ? x->o->start_s : x->t0));
        return 1;
    }
    double el = t - x->attempt_t0;
    int64_t fl = floor_bps(x->o);
    if (fl > 0 && el > stall_window(x->o) && (double)x->attempt_bytes < (double)fl * el) {
        x->slow = 1;
        kvf_fail(x->err, x->errlen, KVF_ERR_NET,
                              "too slow: %.0f bytes/s on average over %.0f s, the minimum is %lld (--min-rate)",
                              (double)x->attempt_bytes / el, el, (long long)fl);
        return 1;
    }
    if (!x->o->progress || t - x->last_draw < 0.1)
        return 0;
    x->last_draw = t;
    uint64_t have = x->req_from + (uint64_t)dlnow;
    x->o->progress(x->o->progress_user, have, total, t > x->t0 ? (double)x->stats->bytes / (t - x->t0) : 0, 0);
    x->drew = 1;
    return 0;
}

/* Does the token go to url? Only to the origin it was bought from: a mirror or a redirect to
 * another origin never sees it. */
static int token_goes_to(const kvf_http_opts *o, const char *url)
{
    char a[512], b[512];
    return o->token && o->token_origin && kvf_url_origin(o->token_origin, a, sizeof a) == 0 &&
           kvf_url_origin(url, b, sizeof b) == 0 && strcmp(a, b) == 0;
}

/* Options every request shares: TLS verification on, https only, timeouts, bearer token (to its
 * own origin only; curl drops it on a redirect to another host, port or scheme). */
static kvf_status setup_common(CURL *h, const kvf_http_opts *o, const char *url,
                               struct curl_slist **hdrs, char *err, size_t errlen)
{
    const char *protos = o->allow_http ? "https,http" : "https";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, protos);
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, protos);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "kvfetch/1");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, o->connect_timeout_s > 0 ? o->connect_timeout_s : 10L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, stall_window(o));
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, o->stall_min_bps > 0 ? o->stall_min_bps : 1024L);
    if (o->max_recv_bps)
        curl_easy_setopt(h, CURLOPT_MAX_RECV_SPEED_LARGE, (curl_off_t)o->max_recv_bps);
    if (o->cacert && curl_easy_setopt(h, CURLOPT_CAINFO, o->cacert) != CURLE_OK)
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "libcurl refuses --cacert %s", o->cacert);
    if (token_goes_to(o, url)) {
        char line[600];
        if (strlen(o->token) > 512 || strpbrk(o->token, "\r\n"))
            return kvf_fail(err, errlen, KVF_ERR_USAGE, "token is longer than 512 bytes or has a newline");
        snprintf(line, sizeof line, "Authorization: Bearer %s", o->token);
        struct curl_slist *l = curl_slist_append(*hdrs, line);
        kvc_wipe(line, sizeof line);
        if (!l)
            return kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
        *hdrs = l;
    }
    return KVF_OK;
}

static int transient_curl(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_COULDNT_RESOLVE_HOST:
        return 1;
    default:
        return 0;
    }
}

/* The first line of an error body, for messages. */
static const char *errbody_line(xfer *x)
{
    for (size_t i = 0; i < x->errbody_len; i++)
        if (x->errbody[i] == '\n' || x->errbody[i] == '\r' || (unsigned char)x->errbody[i] < 0x20) {
            x->errbody[i] = 0;
            break;
        }
    return x->errbody;
}

/* The header list of a request from byte 0 when the caller revalidates a copy it holds: base
 * plus If-None-Match / If-Modified-Since (*out stays NULL when there is nothing to add). The
 * values come from our cache records; a control character in them is refused. */
static kvf_status conditional_headers(const kvf_http_opts *o, const struct curl_slist *base,
                                      struct curl_slist **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *name[2] = {"If-None-Match", "If-Modified-Since"};
    const char *val[2] = {o->if_none_match, o->if_modified_since};
    if (!(val[0] && *val[0]) && !(val[1] && *val[1]))
        return KVF_OK;
    for (const struct curl_slist *b = base; b; b = b->next) {
        struct curl_slist *l = curl_slist_append(*out, b->data);
        if (!l)
            goto nomem;
        *out = l;
    }
    for (int i = 0; i < 2; i++) {
        if (!val[i] || !*val[i])
            continue;
        char line[KVF_VALIDATOR_MAX + 32];
        if (strlen(val[i]) > KVF_VALIDATOR_MAX || strpbrk(val[i], "\r\n")) {
            curl_slist_free_all(*out);
            *out = NULL;
            return kvf_fail(err, errlen, KVF_ERR_USAGE, "%s value is too long or has a newline", name[i]);
        }
        snprintf(line, sizeof line, "%s: %s", name[i], val[i]);
        struct curl_slist *l = curl_slist_append(*out, line);
        if (!l)
            goto nomem;
        *out = l;
    }
    return KVF_OK;
nomem:
    curl_slist_free_all(*out);
    *out = NULL;
    return kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
}

kvf_status kvf_http_download(const kvf_http_opts *o, const char *url, uint64_t offset, uint64_t end,
                             kvf_sink_fn sink, kvf_restart_fn restart, void *user,
                             kvf_http_stats *stats, char *err, size_t errlen)
{
    if (!o || !url || !sink)
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "kvf_http_download: NULL argument");
    kvf_http_stats local = {0};
    if (!stats)
        stats = &local;
    memset(stats, 0, sizeof *stats);
    CURL *h;
    kvf_status hst = new_handle(&h, err, errlen);
    if (hst != KVF_OK)
        return hst;
    struct curl_slist *hdrs = NULL, *cond = NULL;
    xfer x = {.o = o, .sink = sink, .restart = restart, .user = user, .pos = offset,
              .err = err, .errlen = errlen, .stats = stats, .t0 = base_now_s()};
    kvf_status st = setup_common(h, o, url, &hdrs, err, errlen);
    if (st != KVF_OK)
        goto out;
    if ((st = conditional_headers(o, hdrs, &cond, err, errlen)) != KVF_OK)
        goto out;
    void *pp[2] = {&x, h};
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, pp);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &x);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    int max_retries = o->max_retries == 0 ? 6 : o->max_retries < 0 ? 0 : o->max_retries;
    double delay = o->backoff_s > 0 ? o->backoff_s : 0.5;
    char cerr[CURL_ERROR_SIZE];
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);

    for (int attempt = 0;; attempt++) {
        char range[48];
        x.req_from = x.pos;
        x.code = 0;
        x.started = 0;
        x.have_crange = 0;
        x.errbody_len = 0;
        x.errbody[0] = 0;
        x.sink_st = KVF_OK;
        x.attempt_t0 = base_now_s();
        x.attempt_bytes = 0;
        x.slow = 0;
        cerr[0] = 0;
        if (end && x.pos >= end) {
            st = KVF_OK; /* a retry after the last byte asked for had arrived */
            goto out;
        }
        if (x.pos > 0 || end) {
            if (end)
                snprintf(range, sizeof range, "%llu-%llu", (unsigned long long)x.pos, (unsigned long long)end - 1);
            else
                snprintf(range, sizeof range, "%llu-", (unsigned long long)x.pos);
            curl_easy_setopt(h, CURLOPT_RANGE, range);
            curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        } else {
            curl_easy_setopt(h, CURLOPT_RANGE, NULL);
            curl_easy_setopt(h, CURLOPT_HTTPHEADER, cond ? cond : hdrs);
        }
        stats->attempts++;
        CURLcode rc = curl_easy_perform(h);
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        stats->last_http_code = code;
        int transient = 0;
        if (x.sink_st != KVF_OK) {
            st = x.sink_st; /* the sink refused the bytes, or the deadline passed: never retried */
            goto out;
        }
        if (x.slow) {
            transient = 1; /* like a stall: try again, resuming (the deadline bounds the tries) */
        } else if (code == 304 && x.req_from == 0 && (o->if_none_match || o->if_modified_since)) {
            stats->not_modified = 1; /* the copy the caller holds is current */
            st = KVF_OK;
            goto out;
        } else if (code == 401 || code == 402 || code == 403) {
            const char *why = errbody_line(&x);
            char origin[512];
            int withheld = o->token && !token_goes_to(o, url) && kvf_url_origin(url, origin, sizeof origin) == 0;
            st = kvf_fail(err, errlen, KVF_ERR_DENIED, "HTTP %ld from %s%s%s%s%s%s", code, url,
                          *why ? ": " : "", why, withheld ? " (the token was not sent to " : "",
                          withheld ? origin : "",
                          withheld ? ": a token goes only to the origin that sold it, see --token-origin)" : "");
            goto out;
        } else if (code == 408 || code == 429 || code >= 500) {
            transient = 1;
            kvf_fail(err, errlen, KVF_ERR_NET, "HTTP %ld from %s: %s", code, url, errbody_line(&x));
        } else if (code >= 300 || (rc == CURLE_OK && code != 200 && code != 206)) {
            const char *why = errbody_line(&x);
            st = kvf_fail(err, errlen, KVF_ERR_HTTP, "HTTP %ld from %s%s%s", code, url, *why ? ": " : "", why);
            goto out;
        } else if (rc == CURLE_OK) {
            st = KVF_OK;
            goto out;
        } else if (transient_curl(rc)) {
            transient = 1;
            kvf_fail(err, errlen, KVF_ERR_NET, "%s: %s", url, cerr[0] ? cerr : curl_easy_strerror(rc));
        } else {
            st = kvf_fail(err, errlen, KVF_ERR_NET, "%s: %s", url, cerr[0] ? cerr : curl_easy_strerror(rc));
            goto out;
        }
        if (!transient || attempt >= max_retries) {
            st = KVF_ERR_NET;
            if (attempt > 0 && err && errlen) {
                size_t m = strlen(err);
                snprintf(err + m, errlen - m, " (after %d attempts)", attempt + 1);
            }
            goto out;
        }
        double deadline = deadline_of(&x, x.total_seen);
        if (deadline && base_now_s() + delay > deadline) {
            size_t m = err && errlen ? strlen(err) : 0;
            if (m)
                snprintf(err + m, errlen - m, " (no time left for a retry before the deadline, --timeout)");
            st = KVF_ERR_NET;
            goto out;
        }
        usleep((useconds_t)(delay * 1e6));
        delay = delay * 2 > MAX_BACKOFF_S ? MAX_BACKOFF_S : delay * 2;
    }
out:
    if (x.drew)
        o->progress(o->progress_user, 0, 0, 0, 1);
    stats->seconds = base_now_s() - x.t0;
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    curl_slist_free_all(cond);
    return st;
}

static size_t on_discard(char *data, size_t size, size_t nmemb, void *userp)
{
    (void)data;
    (void)userp;
    return size * nmemb;
}

kvf_status kvf_http_probe(const kvf_http_opts *o, const char *url, uint64_t bytes, double *seconds, char *err,
                          size_t errlen)
{
    CURL *h;
    kvf_status hst = new_handle(&h, err, errlen);
    if (hst != KVF_OK)
        return hst;
    struct curl_slist *hdrs = NULL;
    char range[48];
    snprintf(range, sizeof range, "0-%llu", (unsigned long long)(bytes ? bytes - 1 : 0));
    kvf_status st = setup_common(h, o, url, &hdrs, err, errlen);
    if (st == KVF_OK) {
        long limit = o->connect_timeout_s > 0 ? o->connect_timeout_s : 10L;
        if (hdrs)
            curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_RANGE, range);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_discard);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, limit);
        double t0 = base_now_s();
        CURLcode rc = curl_easy_perform(h);
        long code = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        *seconds = base_now_s() - t0;
        if (rc != CURLE_OK)
            st = kvf_fail(err, errlen, KVF_ERR_NET, "%s: %s", url, curl_easy_strerror(rc));
        else if (code != 200 && code != 206)
            st = kvf_fail(err, errlen, code == 401 || code == 402 || code == 403 ? KVF_ERR_DENIED : KVF_ERR_HTTP,
                          "HTTP %ld from %s", code, url);
    }
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    return st;
}

typedef struct membuf {
    char *p;
    size_t len, max;
    int over;
} membuf;

static size_t on_mem(char *data, size_t size, size_t nmemb, void *userp)
{
    membuf *b = userp;
    size_t n = size * nmemb;
    if (n > b->max - b->len) {
        b->over = 1;
        return 0;
    }
    char *q = realloc(b->p, b->len + n + 1);
    if (!q)
        return 0;
    b->p = q;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = 0;
    return n;
}

/* Runs h with its body collected into b (at most b->max bytes): on KVF_OK *out owns the body
 * (NUL-terminated, *outlen bytes when outlen is non-NULL) and *code is the HTTP status. */
static kvf_status perform_into(CURL *h, membuf *b, const char *url, char **out, size_t *outlen, long *code,
                               char *err, size_t errlen)
{
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_mem);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
    CURLcode rc = curl_easy_perform(h);
    kvf_status st = KVF_OK;
    if (b->over)
        st = kvf_fail(err, errlen, KVF_ERR_TOO_BIG, "%s: response larger than %zu bytes", url, b->max);
    else if (rc != CURLE_OK)
        st = kvf_fail(err, errlen, KVF_ERR_NET, "%s: %s", url, curl_easy_strerror(rc));
    else if (!b->p && !(b->p = calloc(1, 1)))
        st = kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
    if (st == KVF_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, code);
        *out = b->p;
        b->p = NULL;
        if (outlen)
            *outlen = b->len;
    }
    free(b->p);
    b->p = NULL;
    return st;
}

kvf_status kvf_http_request(const kvf_http_opts *o, const char *method, const char *url,
                            const char *json_body, size_t max, char **out, size_t *outlen,
                            long *code, char *err, size_t errlen)
{
    if (!o || !method || !url || !out)
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "kvf_http_request: NULL argument");
    *out = NULL;
    CURL *h;
    kvf_status hst = new_handle(&h, err, errlen);
    if (hst != KVF_OK)
        return hst;
    struct curl_slist *hdrs = NULL;
    membuf b = {.max = max};
    kvf_status st = setup_common(h, o, url, &hdrs, err, errlen);
    if (st != KVF_OK)
        goto out;
    if (json_body) {
        struct curl_slist *l = curl_slist_append(hdrs, "Content-Type: application/json");
        if (!l) {
            st = kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
            goto out;
        }
        hdrs = l;
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, json_body);
    }
    if (strcmp(method, "POST") == 0 && !json_body)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    if (hdrs)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    st = perform_into(h, &b, url, out, outlen, code, err, errlen);
out:
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    return st;
}

kvf_status kvf_http_upload(const kvf_http_opts *o, const char *url, const char *path, const char *credential,
                           char **out, long *code, char *err, size_t errlen)
{
    if (!o || !url || !path || !credential || !out)
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "kvf_http_upload: NULL argument");
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK)
        return kvf_fail(err, errlen, KVF_ERR_NET, "libcurl initialisation failed");
    *out = NULL;
    FILE *f = fopen(path, "rb");
    struct stat sb;
    if (!f || fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        kvf_status st = kvf_fail(err, errlen, KVF_ERR_IO, "%s: %s", path, f ? "not a regular file" : strerror(errno));
        if (f)
            fclose(f);
        return st;
    }
    CURL *h = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    membuf b = {.max = 64 * 1024};
    /* the credential is the token of this one request, bound to the URL's own origin */
    kvf_http_opts po = *o;
    po.token = credential;
    po.token_origin = url;
    kvf_status st = h ? setup_common(h, &po, url, &hdrs, err, errlen) : kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
    struct curl_slist *l = st == KVF_OK ? curl_slist_append(hdrs, "Expect: 100-continue") : NULL;
    if (st == KVF_OK && !l)
        st = kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
    if (st == KVF_OK) {
        hdrs = l;
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L); /* a body and a credential go nowhere else */
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READDATA, f);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)sb.st_size);
        curl_easy_setopt(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 10000L);
        st = perform_into(h, &b, url, out, NULL, code, err, errlen);
    }
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    fclose(f);
    return st;
}
