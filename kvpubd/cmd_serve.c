/* cmd_serve.c: `kvpubd serve`: argument parsing and signal handling around the HTTPS daemon
 * (kvpubd/server.c). SIGTERM/SIGINT stop gracefully, SIGHUP reopens the log. */
#include "kvpubd/kvpubd.h"
#include "kvpubd/server.h"
#include "base/base.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char serve_usage[] =
    "usage: kvpubd serve --store DIR --listen ADDR:PORT --tls-cert CERT.pem --tls-key KEY.pem [options]\n"
    "Serves the store over HTTPS (spec/http-api.md).\n"
    "  --threads N           worker threads (default 2)\n"
    "  --max-conns N         connections served (default 256); a few more are answered 503 busy\n"
    "  --max-conns-per-ip N  per client address (default: a quarter of --max-conns, at least 8;\n"
    "                        0 = no limit)\n"
    "  --timeout SECONDS     idle connection timeout (default 30)\n"
    "  --max-upload SIZE     largest PUT /v1/blobs body, e.g. 512M, 4G (default 4G)\n"
    "  --token-ttl DURATION  lifetime of purchased tokens, e.g. 30m, 24h, 7d (default 24h)\n"
    "  --token-downloads N   downloads per purchased token (default 5)\n"
    "  --snapshot-ttl DURATION  lifetime of the snapshots GET /v1/snapshot signs (default 1d);\n"
    "                        one is signed again when the catalog changes or half of it is gone\n"
    "  --purchase-rate N     purchases a minute per client address (IPv6: per /64), after a\n"
    "                        burst of --purchase-burst (default 60; 0 = no limit); past it\n"
    "                        POST /v1/purchases is answered 429 with Retry-After\n"
    "  --purchase-burst N    purchases an address may make at once (default 20)\n"
    "  --prune-interval DURATION  how often old records are deleted from the index (default\n"
    "                        10m; 0 = never), in small batches:\n"
    "  --unpaid-retention DURATION  unpaid purchases (free, or nothing ever delivered) whose\n"
    "                        token can no longer download, this long after purchase (default 7d)\n"
    "  --token-retention DURATION  access tokens this long after they expired (default 7d;\n"
    "                        until then they are answered token_expired, after invalid_token)\n"
    "  --log-retention DURATION  download log rows this old (default 90d); a retention of 0\n"
    "                        keeps that kind of record for ever\n"
    "  --grace SECONDS       on SIGTERM, wait this long for running downloads (default 10)\n"
    "  --log FILE            access and error log (default stderr); SIGHUP reopens it\n"
    "  --port-file FILE      write the bound port there once listening (for PORT 0)\n"
    "PORT 0 picks a free port. Exit: 0 stopped cleanly, 2 usage or start-up error.\n";

static int write_port_file(const char *path, unsigned port)
{
    base_replace r;
    if (base_replace_open(&r, path) != 0)
        return -1;
    char line[16];
    const int n = snprintf(line, sizeof line, "%u\n", port);
    if (base_write_all(r.fd, line, (size_t)n) != 0) {
        base_replace_abort(&r);
        return -1;
    }
    return base_replace_commit(&r);
}

int kvpubd_serve_main(int argc, char **argv)
{
    kvsrv_config cfg = {.max_conns_per_ip = KVSRV_PER_IP_AUTO, .purchase_burst = KVSRV_PURCHASE_BURST_DEFAULT,
                        .purchase_per_min = KVSRV_PURCHASE_PER_MIN_DEFAULT,
                        .prune_interval_s = KVSRV_PRUNE_INTERVAL_DEFAULT,
                        .unpaid_retention_s = KVSRV_UNPAID_RETENTION_DEFAULT,
                        .token_retention_s = KVSRV_TOKEN_RETENTION_DEFAULT,
                        .log_retention_s = KVSRV_LOG_RETENTION_DEFAULT};
    const char *port_file = NULL;
    uint64_t grace = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        unsigned *dur;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(serve_usage, stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "kvpubd serve: %s needs a value (or is unknown)\n%s", a, serve_usage);
            return 2;
        }
        i++;
        if (strcmp(a, "--store") == 0)
            cfg.store_dir = v;
        else if (strcmp(a, "--listen") == 0)
            cfg.listen = v;
        else if (strcmp(a, "--tls-cert") == 0)
            cfg.tls_cert = v;
        else if (strcmp(a, "--tls-key") == 0)
            cfg.tls_key = v;
        else if (strcmp(a, "--log") == 0)
            cfg.log_path = v;
        else if (strcmp(a, "--port-file") == 0)
            port_file = v;
        else if (strcmp(a, "--max-upload") == 0) {
            if (base_parse_size(v, &cfg.max_upload) != 0 || !cfg.max_upload) {
                fprintf(stderr, "kvpubd serve: --max-upload '%s': expected a size such as 512M or 4G\n", v);
                return 2;
            }
        } else if ((dur = strcmp(a, "--token-ttl") == 0      ? &cfg.token_ttl_s
                          : strcmp(a, "--snapshot-ttl") == 0 ? &cfg.snapshot_ttl_s
                                                             : NULL)) {
            if (base_parse_duration(v, &n) != 0 || n == 0 || n > 366u * 86400) {
                fprintf(stderr, "kvpubd serve: %s '%s': expected a duration such as 30m, 24h, 7d\n", a, v);
                return 2;
            }
            *dur = (unsigned)n;
        } else if ((dur = strcmp(a, "--prune-interval") == 0        ? &cfg.prune_interval_s
                          : strcmp(a, "--unpaid-retention") == 0    ? &cfg.unpaid_retention_s
                          : strcmp(a, "--token-retention") == 0     ? &cfg.token_retention_s
                          : strcmp(a, "--log-retention") == 0       ? &cfg.log_retention_s
                                                                    : NULL)) {
            if (base_parse_duration(v, &n) != 0 || n > 3660u * 86400) {
                fprintf(stderr, "kvpubd serve: %s '%s': expected a duration such as 0, 30s, 10m, 7d\n", a, v);
                return 2;
            }
            *dur = (unsigned)n;
        } else {
            unsigned *dst = strcmp(a, "--threads") == 0            ? &cfg.threads
                            : strcmp(a, "--max-conns") == 0        ? &cfg.max_conns
                            : strcmp(a, "--max-conns-per-ip") == 0 ? &cfg.max_conns_per_ip
                            : strcmp(a, "--timeout") == 0          ? &cfg.timeout_s
                            : strcmp(a, "--token-downloads") == 0  ? &cfg.token_downloads
                            : strcmp(a, "--purchase-rate") == 0    ? &cfg.purchase_per_min
                            : strcmp(a, "--purchase-burst") == 0   ? &cfg.purchase_burst
                                                                   : NULL;
            uint64_t *dst64 = strcmp(a, "--grace") == 0 ? &grace : NULL;
            if (!dst && !dst64) {
                fprintf(stderr, "kvpubd serve: unknown option %s\n%s", a, serve_usage);
                return 2;
            }
            if (base_parse_u64(v, &n) != 0 || n > 100000 || (dst == &cfg.threads && (n < 1 || n > 256))) {
                fprintf(stderr, "kvpubd serve: %s '%s': expected a whole number%s\n", a, v,
                        dst == &cfg.threads ? " in 1..256" : "");
                return 2;
            }
            if (dst)
                *dst = (unsigned)n;
            else
                *dst64 = n;
        }
    }
    if (!cfg.store_dir || !cfg.listen || !cfg.tls_cert || !cfg.tls_key) {
        fprintf(stderr, "kvpubd serve: --store, --listen, --tls-cert and --tls-key are required\n%s", serve_usage);
        return 2;
    }
    /* Workers inherit this mask, so only sigwait below ever sees these signals. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[512];
    kvsrv *s = NULL;
    if (kvsrv_start(&cfg, &s, err, sizeof err) != 0) {
        fprintf(stderr, "kvpubd serve: %s\n", err);
        return 2;
    }
    unsigned port = kvsrv_port(s);
    if (port_file && write_port_file(port_file, port) != 0) {
        fprintf(stderr, "kvpubd serve: cannot write --port-file %s: %s\n", port_file, strerror(errno));
        kvsrv_free(s);
        return 2;
    }
    kvsrv_log(s, "info", "event=start listen=%s port=%u store=%s", cfg.listen, port, cfg.store_dir);
    printf("kvpubd: serving %s on port %u\n", cfg.store_dir, port);
    fflush(stdout);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            kvsrv_reopen_log(s);
            continue;
        }
        kvsrv_log(s, "info", "event=stopping signal=%s grace_s=%u", sig == SIGTERM ? "TERM" : "INT",
                  (unsigned)grace);
        unsigned left = kvsrv_shutdown(s, (unsigned)grace);
        kvsrv_log(s, "info", "event=stopped cut_requests=%u", left);
        break;
    }
    kvsrv_free(s);
    if (port_file)
        unlink(port_file);
    return 0;
}
