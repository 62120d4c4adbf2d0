/* watchdog.c: the per-connection watch: a header deadline and a minimum body rate enforced by
 * one thread (libmicrohttpd's idle timeout alone cannot), and connections past --max-conns
 * marked for an immediate 503. */
#include "kvpubd/watchdog.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

/* One per watched connection (its MHD socket context), linked in s->watch_head. */
typedef struct kvsrv_watch {
    struct kvsrv_watch *prev, *next;
    int fd;
    double since;      /* base_now_s(): accept, the end of the previous request, or headers done */
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

void kvsrv_watch_body(kvsrv *s, struct MHD_Connection *conn, size_t bytes, int done)
{
    kvsrv_watch *w = watch_of(conn);
    if (!w)
        return;
    pthread_mutex_lock(&s->watch_mu);
    w->in_body = !done;
    w->body_bytes += bytes;
    pthread_mutex_unlock(&s->watch_mu);
}

int kvsrv_watch_mark(kvsrv *s, struct MHD_Connection *conn, int in_request)
{
    kvsrv_watch *w = watch_of(conn);
    if (!w)
        return 0;
    pthread_mutex_lock(&s->watch_mu);
    w->in_request = in_request;
    w->in_body = 0;
    w->body_bytes = 0;
    w->since = base_now_s();
    pthread_mutex_unlock(&s->watch_mu);
    return w->over;
}

static void *watchdog_main(void *arg)
{
    kvsrv *s = arg;
    double limit_s = (double)s->cfg.timeout_s;
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
        double now = base_now_s();
        /* MHD closes the socket only after its CLOSED notification, which unlinks the entry
         * under watch_mu: every fd on this list still belongs to its connection */
        for (kvsrv_watch *w = s->watch_head; w && !s->watchdog_stop; w = w->next) {
            if (w->cut)
                continue;
            if (!w->in_request && now - w->since > limit_s) {
                w->cut = CUT_HEADERS;
                atomic_fetch_add_explicit(&s->header_timeouts, 1, memory_order_relaxed);
            } else if (w->in_body && now - w->since > limit_s + (double)w->body_bytes / BODY_MIN_RATE) {
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

void kvsrv_watch_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
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
        w->since = base_now_s();
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

int kvsrv_watchdog_start(kvsrv *s)
{
    if (pthread_create(&s->watchdog, NULL, watchdog_main, s) != 0)
        return -1;
    s->watchdog_running = 1;
    return 0;
}

void kvsrv_watchdog_halt(kvsrv *s)
{
    if (!s->watchdog_running)
        return;
    base_threads_stop(&s->watch_mu, &s->watch_cv, &s->watchdog_stop, &s->watchdog, 1);
    s->watchdog_running = 0;
}
