/* metrics.h: the daemon's counters and its operational endpoints, GET /metrics (Prometheus
 * text exposition) and GET /healthz. Built on http.h; calls nothing above it. */
#ifndef KVPUB_KVPUBD_METRICS_H
#define KVPUB_KVPUBD_METRICS_H

#include "kvpubd/http.h"

/* The endpoint's label in metrics, access log lines and 405 details ("catalog", "blob", ...). */
const char *kvsrv_ep_name(kvsrv_ep ep);

/* Counts a finished request under its endpoint and status (an error if 5xx or !completed_ok)
 * and adds its buffer body to the bytes sent (file bodies are counted as they are read). */
void kvsrv_metrics_request_done(kvsrv_req *r, int completed_ok);

enum MHD_Result kvsrv_metrics(kvsrv_req *r); /* GET /metrics */
enum MHD_Result kvsrv_healthz(kvsrv_req *r); /* GET /healthz */

#endif
