/* watchdog.h: the daemon's per-connection watch: a thread that cuts connections whose request
 * headers, or whose request body, arrive too slowly (see struct kvsrv), and the marking of
 * connections opened past --max-conns. Built on http.h; calls nothing above it. */
#ifndef KVPUB_KVPUBD_WATCHDOG_H
#define KVPUB_KVPUBD_WATCHDOG_H

#include "kvpubd/http.h"

/* Starts the watchdog thread. Returns 0, or -1 if the thread could not be created. */
int kvsrv_watchdog_start(kvsrv *s);
/* Stops and joins the thread; a no-op when it is not running. */
void kvsrv_watchdog_halt(kvsrv *s);

/* MHD's connection notification (cls = the kvsrv): counts open connections, watches each
 * from accept and unwatches it (logging why if the watchdog cut it) when it closes. */
void kvsrv_watch_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                            enum MHD_ConnectionNotificationCode toe);

/* Marks the connection's request started (headers complete) or ended (idle again: the next
 * request's headers have timeout_s again). Returns 1 when the connection was opened past
 * --max-conns (its request is to be answered 503 busy), else 0. */
int kvsrv_watch_mark(kvsrv *s, struct MHD_Connection *conn, int in_request);

/* A request body starts arriving (bytes 0), goes on (bytes > 0) or is complete (done). */
void kvsrv_watch_body(kvsrv *s, struct MHD_Connection *conn, size_t bytes, int done);

#endif
