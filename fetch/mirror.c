/* mirror.c: the mirror list (command line and mirrors file) and the sources of one download:
 * the primary source and each mirror's URL of the blob, ranked as given or by a timed probe. */
#include "fetch/fetch_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROBE_BYTES (16 * 1024)

kvf_status kvf_mirrors_add(kvf_mirror_list *l, const char *url, int allow_http, char *err, size_t errlen)
{
    size_t n = strlen(url);
    while (n && url[n - 1] == '/')
        n--;
    char origin[512];
    int https = strncmp(url, "https://", 8) == 0;
    if (!(https || (allow_http && strncmp(url, "http://", 7) == 0)) || n >= KVF_MIRROR_URL_MAX ||
        kvf_url_origin(url, origin, sizeof origin) != 0 || strpbrk(url, "?# \t\r\n"))
        return kvf_fail(err, errlen, KVF_ERR_USAGE,
                        "mirror '%.200s' is not a repository base URL (https://host[:port][/prefix])", url);
    for (int i = 0; i < l->n; i++)
        if (strlen(l->url[i]) == n && strncmp(l->url[i], url, n) == 0)
            return KVF_OK;
    if (l->n == KVF_MIRRORS_MAX)
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "more than %d mirrors", KVF_MIRRORS_MAX);
    memcpy(l->url[l->n], url, n);
    l->url[l->n++][n] = 0;
    return KVF_OK;
}

kvf_status kvf_mirrors_parse(kvf_mirror_list *l, const char *text, size_t len, int allow_http, char *err,
                             size_t errlen)
{
    size_t i = 0;
    for (int line = 1; i < len; line++) {
        size_t end = i;
        while (end < len && text[end] != '\n')
            end++;
        size_t a = i, b = end;
        while (a < b && (text[a] == ' ' || text[a] == '\t' || text[a] == '\r'))
            a++;
        for (size_t k = a; k < b; k++) /* a comment: '#' first on the line or after a blank */
            if (text[k] == '#' && (k == a || text[k - 1] == ' ' || text[k - 1] == '\t')) {
                b = k;
                break;
            }
        while (b > a && (text[b - 1] == ' ' || text[b - 1] == '\t' || text[b - 1] == '\r'))
            b--;
        i = end + 1;
        if (a == b)
            continue;
        char url[4096];
        if (b - a >= sizeof url || memchr(text + a, 0, b - a))
            return kvf_fail(err, errlen, KVF_ERR_USAGE, "line %d: not a URL", line);
        memcpy(url, text + a, b - a);
        url[b - a] = 0;
        char e[400];
        kvf_status st = kvf_mirrors_add(l, url, allow_http, e, sizeof e);
        if (st != KVF_OK)
            return kvf_fail(err, errlen, st, "line %d: %s", line, e);
    }
    return KVF_OK;
}

void kvf_mirrors_clear(kvf_mirror_list *l)
{
    if (l)
        l->n = 0;
}

/* Adds url as the next source unless it is one already. */
static kvf_status add_source(kvf_sources *s, kvf_get_result *res, const char *url, int mirror, char *err,
                             size_t errlen)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->url[i], url) == 0)
            return KVF_OK;
    if (s->n == KVF_SOURCES_MAX || strlen(url) >= sizeof s->url[0])
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "too many sources, or a source URL too long");
    snprintf(s->url[s->n], sizeof s->url[0], "%s", url);
    kvf_source_report *r = &res->sources[s->n];
    memset(r, 0, sizeof *r);
    snprintf(r->url, sizeof r->url, "%.1023s", url);
    r->mirror = mirror;
    r->probe_s = -1;
    s->rep[s->n] = r;
    s->bad[s->n] = 0;
    s->n++;
    res->n_sources = s->n;
    return KVF_OK;
}

kvf_status kvf_sources_build(kvf_sources *s, const kvf_get_opts *o, const kvf_http_opts *http, const char *primary,
                             const char *id_hex, kvf_get_result *res, char *err, size_t errlen)
{
    s->n = 0;
    kvf_status st = KVF_OK;
    if (primary)
        st = add_source(s, res, primary, 0, err, errlen);
    for (int i = 0; st == KVF_OK && o->mirrors && id_hex && i < o->mirrors->n; i++) {
        char url[4096];
        if (snprintf(url, sizeof url, "%s/v1/blobs/%s", o->mirrors->url[i], id_hex) >= (int)sizeof url)
            return kvf_fail(err, errlen, KVF_ERR_USAGE, "mirror URL too long");
        st = add_source(s, res, url, 1, err, errlen);
    }
    if (st != KVF_OK || o->order != KVF_ORDER_SPEED || s->n < 2)
        return st;
    /* the probe is a small ranged GET: its time is latency plus a first taste of throughput */
    char e[256];
    for (int i = 0; i < s->n; i++) {
        double t = 0;
        if (kvf_http_probe(http, s->url[i], PROBE_BYTES, &t, e, sizeof e) == KVF_OK)
            s->rep[i]->probe_s = t;
    }
    /* a stable insertion sort: failed probes last, ties keep the given order */
    for (int i = 1; i < s->n; i++) {
        for (int j = i; j > 0; j--) {
            double a = s->rep[j - 1]->probe_s, b = s->rep[j]->probe_s;
            if (!(b >= 0 && (a < 0 || b < a)))
                break;
            char tmp[4096];
            memcpy(tmp, s->url[j], sizeof tmp);
            memcpy(s->url[j], s->url[j - 1], sizeof tmp);
            memcpy(s->url[j - 1], tmp, sizeof tmp);
            kvf_source_report r = *s->rep[j];
            *s->rep[j] = *s->rep[j - 1];
            *s->rep[j - 1] = r;
        }
    }
    return KVF_OK;
}

void kvf_source_abandon(kvf_sources *s, int i, kvf_status st, const char *why)
{
    s->bad[i] = 1;
    s->rep[i]->abandoned = 1;
    s->rep[i]->ok = 0;
    s->rep[i]->st = st;
    snprintf(s->rep[i]->why, sizeof s->rep[i]->why, "%s", why);
}
