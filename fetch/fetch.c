/* fetch.c: kvf_get: cache lookup, verifying streamed download with resumption, cache insert.
 * Every byte is written to the partial file, hashed (blob id) and fed to a kvb reader. */
#include "fetch/fetch_internal.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_SHORT_RETRIES 3 /* a body that ended early without a transport error */

int kvf_is_url(const char *s)
{
    return strncmp(s, "https://", 8) == 0 || strncmp(s, "http://", 7) == 0;
}

int kvf_url_origin(const char *url, char *out, size_t outlen)
{
    size_t sl = strncasecmp(url, "https://", 8) == 0 ? 5 : strncasecmp(url, "http://", 7) == 0 ? 4 : 0;
    if (!sl)
        return -1;
    const char *host = url + sl + 3;
    size_t hl = strcspn(host, "/?#");
    const char *at = memchr(host, '@', hl); /* userinfo is not part of the origin */
    if (at) {
        hl -= (size_t)(at + 1 - host);
        host = at + 1;
    }
    /* the port: after the last ':' that is not inside an IPv6 literal's brackets */
    const char *close = host[0] == '[' ? memchr(host, ']', hl) : NULL;
    if (host[0] == '[' && !close)
        return -1;
    const char *colon = NULL;
    for (const char *p = close ? close : host; p < host + hl; p++)
        if (*p == ':')
            colon = p;
    size_t namelen = colon ? (size_t)(colon - host) : hl;
    const char *port = colon ? colon + 1 : sl == 5 ? "443" : "80";
    size_t portlen = colon ? hl - namelen - 1 : strlen(port);
    if (!namelen || !portlen || portlen > 5 || strspn(port, "0123456789") < portlen)
        return -1;
    if (sl + 3 + namelen + 1 + portlen + 1 > outlen)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < sl; i++)
        out[n++] = (char)tolower((unsigned char)url[i]);
    memcpy(out + n, "://", 3);
    n += 3;
    for (size_t i = 0; i < namelen; i++)
        out[n++] = (char)tolower((unsigned char)host[i]);
    out[n++] = ':';
    memcpy(out + n, port, portlen);
    out[n + portlen] = 0;
    return 0;
}

int kvf_url_blob_id(const char *url, uint8_t id[32])
{
    const char *end = url + strcspn(url, "?#");
    const char *seg = end;
    while (seg > url && seg[-1] != '/')
        seg--;
    if (end - seg < 64)
        return 0;
    if (end - seg > 64 && seg[64] != '.')
        return 0;
    char hex[65];
    memcpy(hex, seg, 64);
    hex[64] = 0;
    return kvc_unhex(hex, id, 32) == KVC_OK;
}

void kvf_get_result_clear(kvf_get_result *res)
{
    if (!res)
        return;
    kvb_manifest_free(res->manifest);
    res->manifest = NULL;
}

/* A manifest copy for the result: re-parse the verified prefix without the signature check
 * (it was just verified over these very bytes). */
static void keep_manifest(kvf_get_result *res)
{
    char e[256];
    kvb_manifest_free(res->manifest);
    res->manifest = NULL;
    if (kvb_peek_file(res->path, NULL, &res->header, &res->manifest, e, sizeof e) != KVB_OK)
        res->manifest = NULL;
}

/* Verifies a cached blob again (hashes only): it may have been corrupted on disk, and trust,
 * revocations and expiry are re-checked today. */
static kvf_status verify_cached(const kvf_get_opts *o, const char *path, kvf_get_result *res,
                                char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return kvf_fail(err, errlen, KVF_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    kvf_vstream v;
    uint8_t want[32];
    memcpy(want, res->id, 32);
    kvf_status st = kvf_vs_begin(&v, o, -1, err, errlen);
    if (st == KVF_OK)
        st = kvf_vs_feed_file(&v, fd, err, errlen);
    if (st == KVF_OK)
        st = kvf_vs_finish(&v, res, err, errlen);
    if (st == KVF_OK && memcmp(want, res->id, 32) != 0)
        st = kvf_fail(err, errlen, KVF_ERR_VERIFY, "cached file %s does not hash to its name", path);
    res->vst = v.vst;
    kvf_vs_end(&v);
    close(fd);
    return st;
}

/* Statuses after which a cached or partial file is evidence of corruption, not of policy. */
static int is_corruption(kvb_status st) { return st == KVB_OK || kvb_bytes_bad(st); }

/* Answers from the cache: the blob want, verified again unless o->trust_cached. Returns
 * KVF_ERR_HTTP (never otherwise returned here) when it must be downloaded: not cached, or
 * corrupted on disk (then removed). Other errors (trust, revocation, expiry) are final. */
static kvf_status from_cache(kvf_cache *cache, const kvf_get_opts *o, const uint8_t want[32],
                             kvf_get_result *res, double t0, char *err, size_t errlen)
{
    if (!kvf_cache_lookup(cache, want, res->path, sizeof res->path))
        return KVF_ERR_HTTP;
    memcpy(res->id, want, 32);
    kvf_status st = KVF_OK;
    if (!o->trust_cached)
        st = verify_cached(o, res->path, res, err, errlen);
    if (st == KVF_OK) {
        struct stat sb;
        if (stat(res->path, &sb) == 0)
            res->bytes = (uint64_t)sb.st_size;
        res->from_cache = 1;
        keep_manifest(res);
        res->seconds = base_now_s() - t0;
        return KVF_OK;
    }
    if (st != KVF_ERR_VERIFY || !is_corruption(res->vst))
        return st; /* trust, revocation, expiry: refused without asking the network */
    kvf_cache_remove(cache, want); /* corrupted on disk: fetch it again */
    memset(res->id, 0, 32);
    return KVF_ERR_HTTP;
}

/* Opens and locks the partial file, so two kvfetch processes never write one file. */
static int open_part_locked(const char *path)
{
    for (int tries = 0; tries < 10; tries++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
            return -1;
        if (flock(fd, LOCK_EX) != 0) {
            close(fd);
            return -1;
        }
        /* the holder may have renamed or removed it meanwhile: then lock the new file */
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
            return fd;
        close(fd);
    }
    errno = EAGAIN;
    return -1;
}


static void add_stats(kvf_http_stats *sum, const kvf_http_stats *hs)
{
    sum->attempts += hs->attempts;
    sum->resumed += hs->resumed;
    sum->bytes += hs->bytes;
    sum->seconds += hs->seconds;
    sum->last_http_code = hs->last_http_code;
}

/* One source's turn: downloads from v->got on, resuming a body that ended early without a
 * transport error, all of it under one deadline (a source sending short bodies cannot restart
 * it). *last gets the last response's validators. */
static kvf_status pull(kvf_vstream *v, const char *url, const kvf_http_opts *http0, kvf_get_result *res,
                       kvf_http_stats *last, char *err, size_t errlen)
{
    kvf_http_opts http = *http0;
    if (!http.start_s)
        http.start_s = base_now_s();
    for (int round = 0; round <= MAX_SHORT_RETRIES; round++) {
        if (v->size && v->got >= v->size)
            return KVF_OK;
        memset(last, 0, sizeof *last); /* filled even when the download fails before a request */
        kvf_status st = kvf_http_download(&http, url, v->got, 0, kvf_vs_sink, kvf_vs_restart, v, last, err, errlen);
        add_stats(&res->http, last);
        if (st != KVF_OK || last->not_modified)
            return st;
        if (!v->size) /* the body ended, whole, before the header and manifest did: the reader
                       * says where, and this source is abandoned like one that sent bad bytes */
            return kvf_vs_finish(v, res, err, errlen);
    }
    if (v->got >= v->size)
        return KVF_OK;
    return kvf_fail(err, errlen, KVF_ERR_NET, "%s: the body ended early %d times (at byte %llu of %llu)", url,
                    MAX_SHORT_RETRIES + 1, (unsigned long long)v->got, (unsigned long long)v->size);
}

/* The parallel split applies from here: the manifest and token ids are verified and at least
 * two chunks are left. */
static int can_split(const kvf_vstream *v)
{
    const kvb_manifest *m = kvb_reader_manifest(v->r);
    const kvb_header *h = kvb_reader_header(v->r);
    if (!m || !h || v->fed < kvf_section_end(h, m, 0))
        return 0;
    uint32_t left = 0;
    for (uint32_t c = 1; c <= m->n_chunks; c++)
        left += kvf_section_end(h, m, c) > v->fed;
    return left >= 2;
}

/* Downloads the rest of the blob into v from the sources in rank order, each failing source
 * abandoned and the download going on from the last verified byte. Returns KVF_OK with every
 * byte received (the caller finishes the verification), or the most telling failure. */
static kvf_status download(kvf_vstream *v, kvf_sources *srcs, const kvf_http_opts *http, int parallel,
                           kvf_get_result *res, kvf_http_stats *last, char *err, size_t errlen)
{
    kvf_status worst = KVF_ERR_NET;
    int have_worst = 0, retried_mixed = 0;
    char werr[1024] = "";
    kvb_status wvst = KVB_OK;
    for (int i = 0; i < srcs->n; i++) {
        if (srcs->bad[i])
            continue;
        int j = i + 1; /* the second source of a parallel download */
        while (j < srcs->n && srcs->bad[j])
            j++;
        kvf_source_report *rep = srcs->rep[i];
        if (!rep->used)
            rep->from = v->got;
        rep->used = 1;
        uint64_t start = v->got, fed0 = v->fed;
        kvf_status st;
        if (parallel && j < srcs->n && can_split(v)) {
            if ((st = kvf_vs_rewind(v, 0, err, errlen)) != KVF_OK)
                return st;
            res->parallel_used = 1;
            st = kvf_ranges_fetch(v, srcs, http, i, j, &res->http, err, errlen);
            if (st != KVF_OK && st != KVF_ERR_IO && st != KVF_ERR_NOMEM && have_worst && kvf_telling(worst) > kvf_telling(st)) {
                st = worst; /* an earlier source's failure says more */
                v->vst = wvst;
                if (err && errlen)
                    snprintf(err, errlen, "%s", werr);
            }
            return st;
        }
        if (parallel && j < srcs->n)
            v->stop_after_tokens = 1;
        st = pull(v, srcs->url[i], http, res, last, err, errlen);
        v->stop_after_tokens = 0;
        if (v->fed > fed0) /* (a server that ignored Range started the blob again) */
            rep->bytes += v->fed - fed0;
        if (st != KVF_OK && v->stopped) {
            i--; /* the manifest and token ids are in: the rest goes in two halves */
            continue;
        }
        if (st == KVF_OK) {
            rep->ok = 1;
            return KVF_OK;
        }
        if (st == KVF_ERR_IO || st == KVF_ERR_NOMEM || st == KVF_ERR_USAGE || v->no_room)
            return st;
        if (st == KVF_ERR_VERIFY && is_corruption(v->vst) && v->fed < start && !retried_mixed) {
            /* the bad section began in an earlier run's partial file: not this source's fault */
            retried_mixed = 1;
            res->discarded_partial = 1;
            if ((st = kvf_vs_rewind(v, 1, err, errlen)) != KVF_OK)
                return st;
            i--;
            continue;
        }
        kvf_source_abandon(srcs, i, st, err ? err : "");
        if (!have_worst || kvf_telling(st) >= kvf_telling(worst)) {
            worst = st;
            wvst = v->vst;
            snprintf(werr, sizeof werr, "%s", err ? err : "");
            have_worst = 1;
        }
        kvf_status rs = kvf_vs_rewind(v, st == KVF_ERR_VERIFY, err, errlen);
        if (rs != KVF_OK)
            return rs;
    }
    if (err && errlen)
        snprintf(err, errlen, "%s", werr);
    v->vst = wvst;
    return worst;
}

static kvf_status get_blob(kvf_cache *cache, const kvf_get_opts *o, kvf_get_result *res, char *err,
                           size_t errlen)
{
    double t0 = base_now_s();
    memset(res, 0, sizeof *res);
    if (!cache || !o || !o->trust)
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "kvf_get: cache and trust store are required");
    char url[4096] = "";
    uint8_t want[32];
    int have_want = 0;
    if (o->blob_id) {
        if (strlen(o->blob_id) != 64 || kvc_unhex(o->blob_id, want, 32) != KVC_OK)
            return kvf_fail(err, errlen, KVF_ERR_USAGE, "blob id '%s' is not 64 hex digits", o->blob_id);
        have_want = 1;
    }
    int have_mirrors = o->mirrors && o->mirrors->n > 0;
    if (o->url) {
        if (snprintf(url, sizeof url, "%s", o->url) >= (int)sizeof url)
            return kvf_fail(err, errlen, KVF_ERR_USAGE, "URL longer than %zu bytes", sizeof url - 1);
        uint8_t uid[32];
        if (kvf_url_blob_id(url, uid)) {
            if (have_want && memcmp(uid, want, 32) != 0)
                return kvf_fail(err, errlen, KVF_ERR_USAGE, "--blob %s differs from the id in the URL", o->blob_id);
            memcpy(want, uid, 32);
            have_want = 1;
        }
    } else if (o->server && have_want) {
        size_t n = strlen(o->server);
        while (n && o->server[n - 1] == '/')
            n--;
        char hex[65];
        if (snprintf(url, sizeof url, "%.*s/v1/blobs/%s", (int)n, o->server, kvc_hex(want, 32, hex)) >= (int)sizeof url)
            return kvf_fail(err, errlen, KVF_ERR_USAGE, "server URL too long");
    } else if (!(have_want && have_mirrors)) {
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "give a blob URL, or --server URL (or --mirror URL) and --blob ID");
    }
    if (*url && !kvf_is_url(url))
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "'%s' is not an https:// URL", url);
    /* a token goes to the origin that sold it: the one named, else the API server's, else (only
     * when given for this very URL) the URL's own; never to whatever host a URL names, never to
     * a mirror */
    kvf_http_opts http = o->http;
    if (http.token && !http.token_origin)
        http.token_origin = o->server ? o->server : http.token_bind_url && *url ? url : NULL;
    /* a URL without an id may serve another blob tomorrow: ask whether the one it served
     * last is still current (a 304 costs a round trip, not the blob) */
    kvf_url_rec rec;
    int revalidate = !have_want && kvf_cache_url_get(cache, url, &rec) &&
                     kvf_cache_lookup(cache, rec.id, NULL, 0);
    if (revalidate) {
        http.if_none_match = rec.etag[0] ? rec.etag : NULL;
        http.if_modified_since = rec.last_modified[0] ? rec.last_modified : NULL;
    }

    /* 1. the cache */
    kvf_status st;
    if (have_want && (st = from_cache(cache, o, want, res, t0, err, errlen)) != KVF_ERR_HTTP)
        return st;

    /* 2. download, resuming a partial file named after the id (or the URL) */
    char key[65], part[PATH_MAX];
    if (have_want) {
        kvc_hex(want, 32, key);
    } else {
        uint8_t uh[32];
        kvc_sha256(url, strlen(url), uh);
        kvc_hex(uh, 32, key);
    }
    kvf_sources *srcs = malloc(sizeof *srcs);
    if (!srcs)
        return kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
    if ((st = kvf_sources_build(srcs, o, &http, *url ? url : NULL, have_want ? key : NULL, res, err, errlen)) !=
        KVF_OK) {
        free(srcs);
        return st;
    }
    /* with somewhere else to go, a failing source is not worth the whole backoff ladder */
    if (srcs->n > 1 && (http.max_retries == 0 || http.max_retries > 2))
        http.max_retries = 2;
    if (kvf_cache_part_path(cache, key, part, sizeof part) != 0) {
        free(srcs);
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "cache path too long");
    }
    int fd = open_part_locked(part);
    if (fd < 0) {
        free(srcs);
        return kvf_fail(err, errlen, KVF_ERR_IO, "cannot open %s: %s", part, strerror(errno));
    }
    if (have_want && kvf_cache_lookup(cache, want, res->path, sizeof res->path)) {
        /* another kvfetch finished it while we waited for the lock (and open_part_locked
         * created a new, empty partial file: remove it while we hold the lock) */
        struct stat sb;
        if (fstat(fd, &sb) == 0 && sb.st_size == 0)
            (void)unlink(part);
        close(fd);
        free(srcs);
        kvf_get_opts again = *o;
        return get_blob(cache, &again, res, err, errlen);
    }

    kvf_vstream v;
    kvf_url_rec fresh;
    memset(&fresh, 0, sizeof fresh);
    st = kvf_vs_begin(&v, o, fd, err, errlen);
    if (st != KVF_OK) {
        close(fd);
        free(srcs);
        return st;
    }
    st = kvf_vs_feed_file(&v, fd, err, errlen);
    if (st == KVF_OK) {
        res->reused = v.got;
    } else if (st == KVF_ERR_VERIFY && !is_corruption(v.vst)) {
        res->vst = v.vst; /* e.g. untrusted signer: the server's copy will say the same */
        goto fail_delete;
    } else {
        /* the partial bytes do not verify: start from zero */
        res->discarded_partial = 1;
        st = kvf_vs_restart(&v, err, errlen);
        if (st != KVF_OK)
            goto fail_keep;
    }
    kvf_http_stats hs;
    memset(&hs, 0, sizeof hs);
    st = download(&v, srcs, &http, o->parallel >= 2, res, &hs, err, errlen);
    if (!have_want && res->reused && !res->discarded_partial && !v.no_room &&
        (st == KVF_ERR_TOO_BIG || (st == KVF_ERR_VERIFY && is_corruption(v.vst)))) {
        /* A URL that names no blob may serve another one than an earlier, interrupted run began
         * (the mirror published a new latest.kvb): the resumed bytes then do not fit the old
         * bytes. Start afresh from byte 0, once, with every source back in the running. */
        res->discarded_partial = 1;
        res->reused = 0;
        if ((st = kvf_vs_restart(&v, err, errlen)) == KVF_OK) {
            for (int i = 0; i < srcs->n; i++) {
                kvf_source_report *rp = srcs->rep[i];
                srcs->bad[i] = 0;
                rp->used = rp->ok = rp->abandoned = 0;
                rp->st = KVF_OK;
                rp->bytes = rp->from = 0;
                rp->why[0] = 0;
            }
            memset(&hs, 0, sizeof hs);
            st = download(&v, srcs, &http, o->parallel >= 2, res, &hs, err, errlen);
        }
    }
    memcpy(fresh.etag, hs.etag, sizeof fresh.etag);
    memcpy(fresh.last_modified, hs.last_modified, sizeof fresh.last_modified);
    if (revalidate && v.got == 0 && (hs.not_modified || st == KVF_ERR_NET)) {
        /* nothing new arrived: the blob the URL served last stands; when the server could not
         * be asked it is used all the same, marked stale */
        if (st == KVF_ERR_NET) {
            res->stale = 1;
            snprintf(res->stale_why, sizeof res->stale_why, "%s", err ? err : "network error");
        } else {
            res->revalidated = 1;
        }
        (void)unlink(part); /* empty, and still ours under the lock */
        kvf_vs_end(&v);
        close(fd);
        free(srcs);
        st = from_cache(cache, o, rec.id, res, t0, err, errlen);
        if (st != KVF_ERR_HTTP)
            return st;
        kvf_get_opts again = *o; /* it left the cache meanwhile: download it afresh */
        return get_blob(cache, &again, res, err, errlen);
    }
    if (st == KVF_ERR_VERIFY) {
        res->vst = v.vst;
        goto fail_delete;
    }
    if (st == KVF_ERR_TOO_BIG || v.no_room)
        goto fail_delete;
    if (st != KVF_OK)
        goto fail_keep;
    if (res->parallel_used) {
        /* the halves were checked chunk by chunk; now the whole file, as one stream, once */
        kvf_vs_end(&v);
        if ((st = kvf_vs_begin(&v, o, fd, err, errlen)) != KVF_OK)
            goto fail_delete;
        if (lseek(fd, 0, SEEK_SET) != 0 || (st = kvf_vs_feed_file(&v, fd, err, errlen)) != KVF_OK) {
            res->vst = v.vst;
            st = st == KVF_OK ? kvf_fail(err, errlen, KVF_ERR_IO, "seek: %s", strerror(errno)) : st;
            goto fail_delete;
        }
    }
    st = kvf_vs_finish(&v, res, err, errlen);
    if (st != KVF_OK) {
        res->vst = v.vst;
        goto fail_delete;
    }
    if (have_want && memcmp(res->id, want, 32) != 0) {
        char a[65], b[65];
        st = kvf_fail(err, errlen, KVF_ERR_REFUSED, "blob id mismatch: asked for %s, the server sent sha256 %s",
                  kvc_hex(want, 32, a), kvc_hex(res->id, 32, b));
        goto fail_delete;
    }
    kvf_vs_end(&v);
    free(srcs);
    st = kvf_cache_insert(cache, part, res->id, res->path, sizeof res->path, err, errlen);
    close(fd); /* after the rename: a waiting process then finds the blob in the cache */
    if (st != KVF_OK)
        return st;
    memcpy(fresh.id, res->id, 32);
    if (*url)
        kvf_cache_url_put(cache, url, &fresh);
    keep_manifest(res);
    res->seconds = base_now_s() - t0;
    return KVF_OK;

fail_keep:
    /* a partial file is kept for a resume only if it holds bytes: an empty one (a 404, a
     * refusal, no connection) would be litter in the cache's tmp/ */
    if (v.got > 0)
        goto fail_close;
fail_delete:
    /* bytes that failed verification are never kept for a resume */
    (void)unlink(part);
fail_close:
    kvf_vs_end(&v);
    close(fd);
    free(srcs);
    res->seconds = base_now_s() - t0;
    return st;
}

/* Writes the decoded copy of the blob in res->path beside it, unless it is there already. A
 * blob whose decoded bytes differ from its signed raw digests is refused and removed, as any
 * blob that fails verification; a copy that cannot be written (disk full) leaves the blob as
 * it is, loaded the slower way, with res->decoded_note saying why. */
static kvf_status ensure_decoded(kvf_cache *cache, const kvf_get_opts *o, kvf_get_result *res, char *err,
                                 size_t errlen)
{
    char copy[sizeof res->path];
    struct stat sb;
    const int n = snprintf(copy, sizeof copy, "%s%s", res->path, KVB_DECODED_SUFFIX);
    if (n < 0 || (size_t)n >= sizeof copy)
        return KVF_OK;
    if (stat(copy, &sb) == 0 && S_ISREG(sb.st_mode)) {
        snprintf(res->decoded, sizeof res->decoded, "%s", copy);
        return KVF_OK;
    }
    kvb_read_opts ro = {.trust = o->trust, .now = o->now};
    char e[256];
    const double t = base_now_s();
    kvb_status st = kvb_decoded_write(res->path, copy, &ro, e, sizeof e);
    res->decoded_s = base_now_s() - t;
    res->seconds += res->decoded_s;
    if (st == KVB_OK) {
        snprintf(res->decoded, sizeof res->decoded, "%s", copy);
        kvf_cache_evict(cache, res->id); /* the cap counts the copy too */
        return KVF_OK;
    }
    const int code = kvb_exit_code(st);
    if (st == KVB_ERR_UNSUPPORTED || (code != 1 && code != 3)) { /* no copy possible, or not the blob's fault */
        snprintf(res->decoded_note, sizeof res->decoded_note, "%s", e);
        return KVF_OK;
    }
    res->vst = st;
    kvf_cache_remove(cache, res->id);
    return kvf_fail(err, errlen, KVF_ERR_VERIFY, "%s", e);
}

kvf_status kvf_get(kvf_cache *cache, const kvf_get_opts *o, kvf_get_result *res, char *err, size_t errlen)
{
    kvf_status st = get_blob(cache, o, res, err, errlen);
    if (st != KVF_OK || o->no_decoded_copy || !res->manifest || !res->manifest->has_raw)
        return st;
    return ensure_decoded(cache, o, res, err, errlen);
}
