/* opts.c: the options kvfetch get, run, compare and search share (trust, TLS, token, cache,
 * retries), the exit codes they map fetch statuses to, their download progress bar, the model
 * fingerprint of a GGUF, and opening a verified, current snapshot. */
#include "kvfetch/kvfetch.h"
#include "kvfetch/opts.h"

#include "engine/engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int kvf_exit_code(kvf_status st, kvb_status vst)
{
    switch (st) {
    case KVF_OK: return KVF_EXIT_OK;
    case KVF_ERR_VERIFY: return kvb_exit_code(vst);
    case KVF_ERR_REFUSED:
    case KVF_ERR_SNAPSHOT:
    case KVF_ERR_UNLISTED:
    case KVF_ERR_TOO_BIG: return KVF_EXIT_REFUSED;
    case KVF_ERR_ROLLBACK: return KVF_EXIT_ROLLBACK;
    case KVF_ERR_FROZEN: return KVF_EXIT_FROZEN;
    case KVF_ERR_DENIED: return KVF_EXIT_DENIED;
    default: return KVF_EXIT_USAGE;
    }
}

int kvf_parse_long(const char *s, long lo, long hi, long *out)
{
    /* base_parse_u64's digits, after a '-' at most: strtol would take leading blanks and '+' */
    const int neg = *s == '-';
    uint64_t u;
    if (base_parse_u64(s + neg, &u) != 0 || u > (uint64_t)LONG_MAX)
        return -1;
    const long v = neg ? -(long)u : (long)u;
    if (v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int kvf_common_opt(kvf_common *co, int c, const char *arg, const char *prog)
{
    long v;
    switch (c) {
    case KVF_OPT_TRUST: co->trust_dir = arg; return 1;
    case KVF_OPT_CACERT: co->http.cacert = arg; return 1;
    case KVF_OPT_TOKEN: co->http.token = arg; co->http.token_bind_url = 1; return 1;
    case KVF_OPT_TOKEN_ORIGIN:
        if (kvf_url_origin(arg, (char[512]){0}, 512) != 0) {
            fprintf(stderr, "%s: --token-origin '%s' is not an https://host[:port] URL\n", prog, arg);
            return -1;
        }
        co->http.token_origin = arg;
        return 1;
    case KVF_OPT_CACHE_DIR: co->cache_dir = arg; return 1;
    case KVF_OPT_QUIET: co->quiet = 1; return 1;
    case KVF_OPT_CACHE_MAX:
        if (base_parse_size(arg, &co->cache_max) != 0 || co->cache_max == 0) {
            fprintf(stderr, "%s: --cache-max '%s' is not a size (e.g. 512M, 10G)\n", prog, arg);
            return -1;
        }
        return 1;
    case KVF_OPT_RETRIES:
        if (kvf_parse_long(arg, 0, 100, &v) != 0) {
            fprintf(stderr, "%s: --retries '%s' is not a number in 0..100\n", prog, arg);
            return -1;
        }
        co->http.max_retries = v == 0 ? -1 : (int)v;
        return 1;
    case KVF_OPT_CONNECT_TIMEOUT:
    case KVF_OPT_STALL_TIMEOUT:
        if (kvf_parse_long(arg, 1, 3600, &v) != 0) {
            fprintf(stderr, "%s: timeout '%s' is not a number of seconds in 1..3600\n", prog, arg);
            return -1;
        }
        if (c == KVF_OPT_CONNECT_TIMEOUT)
            co->http.connect_timeout_s = v;
        else
            co->http.stall_timeout_s = v;
        return 1;
    case KVF_OPT_LIMIT_RATE:
        if (base_parse_size(arg, &co->http.max_recv_bps) != 0 || co->http.max_recv_bps == 0) {
            fprintf(stderr, "%s: --limit-rate '%s' is not a rate in bytes/s (e.g. 500K, 2M)\n", prog, arg);
            return -1;
        }
        return 1;
    case KVF_OPT_MIN_RATE: {
        uint64_t r;
        if (strcmp(arg, "0") != 0 && (base_parse_size(arg, &r) != 0 || r == 0 || r > INT64_MAX)) {
            fprintf(stderr, "%s: --min-rate '%s' is not a rate in bytes/s (e.g. 32K; 0 = none)\n", prog, arg);
            return -1;
        }
        co->http.min_avg_bps = strcmp(arg, "0") == 0 ? -1 : (int64_t)r;
        return 1;
    }
    case KVF_OPT_TIMEOUT:
        if (kvf_parse_long(arg, 0, 30L * 86400, &v) != 0) {
            fprintf(stderr, "%s: --timeout '%s' is not a number of seconds (0 = none)\n", prog, arg);
            return -1;
        }
        co->http.timeout_s = v == 0 ? -1 : (double)v;
        return 1;
    case KVF_OPT_MIRROR: {
        char e[512];
        if (kvf_mirrors_add(&co->mirrors, arg, 0, e, sizeof e) != KVF_OK) {
            fprintf(stderr, "%s: --mirror: %s\n", prog, e);
            return -1;
        }
        return 1;
    }
    case KVF_OPT_MIRRORS: co->mirrors_file = arg; return 1;
    case KVF_OPT_MIRROR_ORDER:
        if (strcmp(arg, "given") != 0 && strcmp(arg, "speed") != 0) {
            fprintf(stderr, "%s: --mirror-order '%s' is not 'given' or 'speed'\n", prog, arg);
            return -1;
        }
        co->order = strcmp(arg, "speed") == 0 ? KVF_ORDER_SPEED : KVF_ORDER_GIVEN;
        return 1;
    case KVF_OPT_PARALLEL:
        if (kvf_parse_long(arg, 1, 2, &v) != 0) {
            fprintf(stderr, "%s: --parallel '%s' is not 1 or 2\n", prog, arg);
            return -1;
        }
        co->parallel = (int)v;
        return 1;
    case KVF_OPT_NOW:
        if (kvf_parse_long(arg, 1, 0x7fffffffffffL, &v) != 0) {
            fprintf(stderr, "%s: --now '%s' is not unix seconds\n", prog, arg);
            return -1;
        }
        co->now = v;
        return 1;
    default:
        return 0;
    }
}

int kvf_common_hook(void *co, int c, const char *arg, const char *prog)
{
    return kvf_common_opt(co, c, arg, prog);
}

static void human(double b, char *out, size_t len)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) {
        b /= 1024;
        i++;
    }
    snprintf(out, len, "%.1f %s", b, u[i]);
}

/* A download's progress bar on stderr (a terminal), erased when the download is over. */
static void draw_progress(void *user, uint64_t have, uint64_t total, double rate, int done)
{
    (void)user;
    if (done) {
        fputs("\r\033[K", stderr);
        return;
    }
    char a[32], b[32], r[32];
    human((double)have, a, sizeof a);
    human(rate, r, sizeof r);
    if (total) {
        int w = 30, fill = (int)((double)have / (double)total * w);
        char bar[31];
        for (int i = 0; i < w; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[w] = 0;
        human((double)total, b, sizeof b);
        fprintf(stderr, "\r  [%s] %3d%%  %s / %s  %s/s   ", bar, (int)(100.0 * have / total), a, b, r);
    } else {
        fprintf(stderr, "\r  %s  %s/s   ", a, r);
    }
}

int kvf_common_load_mirrors(kvf_common *co, const char *prog)
{
    if (co->mirrors_loaded)
        return 0;
    co->mirrors_loaded = 1;
    char path[4096];
    const char *file = co->mirrors_file;
    if (!file) {
        const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
        int n = xdg && *xdg ? snprintf(path, sizeof path, "%s/kvpub/mirrors", xdg)
                : home && *home ? snprintf(path, sizeof path, "%s/.config/kvpub/mirrors", home) : -1;
        if (n < 0 || n >= (int)sizeof path || access(path, F_OK) != 0)
            return 0;
        file = path;
    }
    char e[512];
    size_t len = 0;
    FILE *f = fopen(file, "rb");
    char *text = f ? base_read_stream(f, 1u << 20, &len) : NULL;
    if (!text) {
        fprintf(stderr, "%s: mirrors file %s: %s\n", prog, file, errno == EFBIG ? "over 1 MiB" : strerror(errno));
        if (f)
            fclose(f);
        return 2;
    }
    fclose(f);
    kvf_status st = kvf_mirrors_parse(&co->mirrors, text, len, 0, e, sizeof e);
    free(text);
    if (st != KVF_OK) {
        fprintf(stderr, "%s: mirrors file %s: %s\n", prog, file, e);
        return 2;
    }
    return 0;
}

void kvf_common_mirrors(const kvf_common *co, kvf_get_opts *go)
{
    go->mirrors = co->mirrors.n ? &co->mirrors : NULL;
    go->order = co->order;
    go->parallel = co->parallel;
}

void kvf_report_sources(const kvf_get_result *res, const char *prog)
{
    /* with one source its failure is the command's own message */
    for (int i = 0; res->n_sources > 1 && i < res->n_sources; i++) {
        const kvf_source_report *r = &res->sources[i];
        if (r->abandoned)
            fprintf(stderr, "%s: %s %s abandoned: %s\n", prog, r->mirror ? "mirror" : "source", r->url, r->why);
    }
}

int kvf_common_open(kvf_common *co, const char *prog)
{
    char err[512];
    if (!co->trust_dir) {
        fprintf(stderr, "%s: --trust DIR is required (the publisher keys you trust)\n", prog);
        return 2;
    }
    if (!co->http.token) {
        /* a token in the environment is not tied to any URL on this command line: it goes to
         * --token-origin, $KVPUB_TOKEN_ORIGIN or the --server that sold it, nowhere else */
        const char *t = getenv("KVPUB_TOKEN"), *origin = getenv("KVPUB_TOKEN_ORIGIN");
        if (t && *t)
            co->http.token = t;
        if (!co->http.token_origin && origin && *origin)
            co->http.token_origin = origin;
    }
    if (!co->quiet && isatty(2))
        co->http.progress = draw_progress;
    if (kvf_common_load_mirrors(co, prog) != 0)
        return 2;
    if (kvc_trust_open(co->trust_dir, &co->trust, err, sizeof err) != KVC_OK) {
        fprintf(stderr, "%s: trust store %s: %s\n", prog, co->trust_dir, err);
        return 2;
    }
    if (kvf_cache_open(co->cache_dir, co->cache_max, &co->cache, err, sizeof err) != KVF_OK) {
        fprintf(stderr, "%s: %s\n", prog, err);
        kvf_common_close(co);
        return 2;
    }
    return 0;
}

void kvf_common_close(kvf_common *co)
{
    if (co->trust)
        kvc_trust_free(co->trust);
    kvf_cache_free(co->cache);
    kvf_mirrors_clear(&co->mirrors);
    co->trust = NULL;
    co->cache = NULL;
}

int kvf_model_fp_hex(const char *path, char hex[65], const char *prog)
{
    char err[512], dir[4096];
    eng_model *m = NULL;
    uint8_t fp[32];
    /* only its fingerprint is wanted, usually from the cache: mapped, not copied */
    if (eng_model_load_held(path, "map", &m, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, err);
        return 2;
    }
    eng_model_set_fingerprint_cache(m, base_cache_dir(NULL, dir, sizeof dir));
    eng_status st = eng_model_fingerprint(m, fp, err, sizeof err);
    eng_model_free(m);
    if (st != ENG_OK) {
        fprintf(stderr, "%s: fingerprinting %s: %s\n", prog, path, err);
        return 2;
    }
    kvc_hex(fp, 32, hex);
    return 0;
}

int kvf_repo_open(kvf_common *co, const char *where, const char *prog, kvf_snapshot **out, char *base,
                  size_t basecap)
{
    char err[1024], dir[4200];
    char *bytes = NULL;
    size_t len = 0;
    *out = NULL;
    kvf_status st = kvf_snapshot_fetch(&co->http, where, &bytes, &len, base, basecap, err, sizeof err);
    if (st == KVF_OK)
        st = kvf_snapshot_open(bytes, len, co->trust, co->now, out, err, sizeof err);
    free(bytes);
    snprintf(dir, sizeof dir, "%s/snapshots", kvf_cache_dir(co->cache));
    uint64_t seen = 0;
    if (st == KVF_OK && (st = kvf_snapshot_remember(dir, *out, &seen, err, sizeof err)) != KVF_OK) {
        kvf_snapshot_free(*out);
        *out = NULL;
    }
    if (st != KVF_OK) {
        fprintf(stderr, "%s: %s: %s\n", prog, where, err);
        return kvf_exit_code(st, KVB_OK);
    }
    return 0;
}

/* The mirrors are tried in their order; a refused one is dropped, so that the one accepted is
 * the first left. */
int kvf_repo_open_any(kvf_common *co, const char *where, const char *prog, kvf_snapshot **snap, char *base,
                      size_t basecap)
{
    int rc = kvf_repo_open(co, where, prog, snap, base, basecap);
    while (rc != 0 && co->mirrors.n > 0) {
        if ((rc = kvf_repo_open(co, co->mirrors.url[0], prog, snap, base, basecap)) == 0)
            break;
        /* refused: not a source of the blob either */
        memmove(co->mirrors.url[0], co->mirrors.url[1], (size_t)(co->mirrors.n - 1) * sizeof co->mirrors.url[0]);
        co->mirrors.n--;
    }
    return rc;
}
