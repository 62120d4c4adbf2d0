/* fetch.c: kvf_get: cache lookup, verifying streamed download with resumption, cache insert.
 * Every byte is written to the partial file, hashed (blob id) and fed to a kvb reader. */
#include "fetch/fetch.h"

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

#define PIECE (1u << 20)
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

/* One verification pass over a byte stream (a partial file, a download, a cached file). */
typedef struct vstream {
    const kvf_get_opts *o;
    kvb_reader *r;
    kvc_sha256_ctx *h;
    int fd;                /* partial file to append to; -1 = only verify */
    uint64_t got;          /* bytes consumed */
    uint8_t head[KVB_HEADER_LEN];
    uint64_t prefix;       /* header+manifest+signature bytes, once the header is known */
    uint64_t size;         /* whole blob size, once the manifest is verified */
    int no_room;           /* a write failed for lack of space (disk full, quota, file limit) */
    kvb_status vst;
} vstream;

static kvb_status on_manifest(void *user, const kvb_manifest *m, const kvb_header *h, char *err,
                              size_t errlen)
{
    vstream *v = user;
    v->size = h->file_size;
    return KVB_OK;
}

static kvf_status vs_begin(vstream *v, const kvf_get_opts *o, int fd, char *err, size_t errlen)
{
    memset(v, 0, sizeof *v);
    v->o = o;
    v->fd = fd;
    kvb_read_opts ro = {0};
    ro.trust = o->trust;
    ro.now = o->now;
    ro.no_decode = 1;
    ro.n_threads = 1;
    ro.on_manifest = on_manifest;
    ro.user = v;
    v->r = kvb_reader_create(&ro);
    v->h = kvc_sha256_create();
    if (!v->r || !v->h) {
        kvb_reader_free(v->r);
        kvc_sha256_free(v->h);
        v->r = NULL;
        v->h = NULL;
        return kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
    }
    return KVF_OK;
}

static void vs_end(vstream *v)
{
    kvb_reader_free(v->r);
    kvc_sha256_free(v->h);
    v->r = NULL;
    v->h = NULL;
}

/* Consumes bytes: refuses more than the blob's declared size, appends them to the partial
 * file (when store), hashes and verifies them. The reader is fed up to the end of the signed
 * prefix first, so the size limit is known before any byte past it is accepted. */
static kvf_status vs_consume(vstream *v, const uint8_t *p, size_t n, int store, char *err, size_t errlen)
{
    while (n) {
        size_t take = n;
        if (v->size) {
            if (v->got + n > v->size)
                return kvf_fail(err, errlen, KVF_ERR_TOO_BIG,
                            "refusing a body larger than the blob: the manifest declares %llu bytes",
                            (unsigned long long)v->size);
        } else if (v->got < KVB_HEADER_LEN) {
            take = KVB_HEADER_LEN - v->got < n ? KVB_HEADER_LEN - v->got : n;
            memcpy(v->head + v->got, p, take);
        } else {
            if (!v->prefix) {
                kvb_status pst;
                v->prefix = kvb_prefix_len(v->head, KVB_HEADER_LEN, &pst);
                /* a bad header: let the reader (already fed it) report it below */
            }
            if (v->prefix && v->got < v->prefix && v->prefix - v->got < n)
                take = (size_t)(v->prefix - v->got);
        }
        if (store && v->fd >= 0 && base_write_all(v->fd, p, take) != 0) {
            /* no room: the partial file could only grow the problem; it is removed */
            v->no_room = errno == ENOSPC || errno == EDQUOT || errno == EFBIG;
            return kvf_fail(err, errlen, KVF_ERR_IO, "writing the partial download: %s%s", strerror(errno),
                            v->no_room ? " (the partial download was removed)" : "");
        }
        kvc_sha256_update(v->h, p, take);
        kvb_status st = kvb_reader_feed(v->r, p, take, err, errlen);
        if (st != KVB_OK) {
            v->vst = st;
            return KVF_ERR_VERIFY;
        }
        v->got += take;
        p += take;
        n -= take;
        if (!v->size && v->prefix && v->got >= v->prefix) {
            const kvb_header *h = kvb_reader_header(v->r);
            if (h && h->file_size)
                v->size = h->file_size;
        }
    }
    return KVF_OK;
}

/* Feeds a whole local file (a partial download or a cached blob) without rewriting it. */
static kvf_status vs_feed_file(vstream *v, int fd, char *err, size_t errlen)
{
    uint8_t *buf = malloc(PIECE);
    if (!buf)
        return kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
    kvf_status st = KVF_OK;
    for (;;) {
        ssize_t r = read(fd, buf, PIECE);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = kvf_fail(err, errlen, KVF_ERR_IO, "read: %s", strerror(errno));
            break;
        }
        if (r == 0)
            break;
        st = vs_consume(v, buf, (size_t)r, 0, err, errlen);
        if (st != KVF_OK)
            break;
    }
    free(buf);
    return st;
}

static kvf_status sink(void *user, const void *data, size_t len, char *err, size_t errlen)
{
    return vs_consume(user, data, len, 1, err, errlen);
}

static kvf_status restart(void *user, char *err, size_t errlen)
{
    vstream *v = user;
    int fd = v->fd;
    const kvf_get_opts *o = v->o;
    vs_end(v);
    if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0)
        return kvf_fail(err, errlen, KVF_ERR_IO, "truncating the partial download: %s", strerror(errno));
    return vs_begin(v, o, fd, err, errlen);
}

/* Completes verification; fills res (manifest copy, id). */
static kvf_status vs_finish(vstream *v, kvf_get_result *res, char *err, size_t errlen)
{
    kvb_status st = kvb_reader_finish(v->r, err, errlen);
    if (st != KVB_OK) {
        v->vst = st;
        return KVF_ERR_VERIFY;
    }
    kvc_sha256_final(v->h, res->id);
    res->bytes = v->got;
    const kvb_header *h = kvb_reader_header(v->r);
    if (h)
        res->header = *h;
    return KVF_OK;
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
    vstream v;
    uint8_t want[32];
    memcpy(want, res->id, 32);
    kvf_status st = vs_begin(&v, o, -1, err, errlen);
    if (st == KVF_OK)
        st = vs_feed_file(&v, fd, err, errlen);
    if (st == KVF_OK)
        st = vs_finish(&v, res, err, errlen);
    if (st == KVF_OK && memcmp(want, res->id, 32) != 0)
        st = kvf_fail(err, errlen, KVF_ERR_VERIFY, "cached file %s does not hash to its name", path);
    res->vst = v.vst;
    vs_end(&v);
    close(fd);
    return st;
}

/* Statuses after which a cached or partial file is evidence of corruption, not of policy. */
static int is_corruption(kvb_status st)
{
    return st == KVB_ERR_CHUNK_HASH || st == KVB_ERR_TOKENS_HASH || st == KVB_ERR_TRUNCATED ||
           st == KVB_ERR_MALFORMED || st == KVB_ERR_BAD_SIG || st == KVB_ERR_MAGIC || st == KVB_OK;
}

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

kvf_status kvf_get(kvf_cache *cache, const kvf_get_opts *o, kvf_get_result *res,
                   char *err, size_t errlen)
{
    double t0 = base_now_s();
    memset(res, 0, sizeof *res);
    if (!cache || !o || !o->trust)
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "kvf_get: cache and trust store are required");
    char url[4096];
    uint8_t want[32];
    int have_want = 0;
    if (o->blob_id) {
        if (strlen(o->blob_id) != 64 || kvc_unhex(o->blob_id, want, 32) != KVC_OK)
            return kvf_fail(err, errlen, KVF_ERR_USAGE, "blob id '%s' is not 64 hex digits", o->blob_id);
        have_want = 1;
    }
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
    } else {
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "give a blob URL, or --server URL and --blob ID");
    }
    if (!kvf_is_url(url))
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "'%s' is not an https:// URL", url);
    /* a token goes to the origin that sold it: the one named, else the API server's, else (only
     * when given for this very URL) the URL's own; never to whatever host a URL names */
    kvf_http_opts http = o->http;
    if (http.token && !http.token_origin)
        http.token_origin = o->server ? o->server : http.token_bind_url ? url : NULL;
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
    if (kvf_cache_part_path(cache, key, part, sizeof part) != 0)
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "cache path too long");
    int fd = open_part_locked(part);
    if (fd < 0)
        return kvf_fail(err, errlen, KVF_ERR_IO, "cannot open %s: %s", part, strerror(errno));
    if (have_want && kvf_cache_lookup(cache, want, res->path, sizeof res->path)) {
        /* another kvfetch finished it while we waited for the lock (and open_part_locked
         * created a new, empty partial file: remove it while we hold the lock) */
        struct stat sb;
        if (fstat(fd, &sb) == 0 && sb.st_size == 0)
            (void)unlink(part);
        close(fd);
        kvf_get_opts again = *o;
        return kvf_get(cache, &again, res, err, errlen);
    }

    vstream v;
    kvf_url_rec fresh;
    memset(&fresh, 0, sizeof fresh);
    st = vs_begin(&v, o, fd, err, errlen);
    if (st != KVF_OK) {
        close(fd);
        return st;
    }
    st = vs_feed_file(&v, fd, err, errlen);
    if (st == KVF_OK) {
        res->reused = v.got;
    } else if (st == KVF_ERR_VERIFY && !is_corruption(v.vst)) {
        res->vst = v.vst; /* e.g. untrusted signer: the server's copy will say the same */
        goto fail_delete;
    } else {
        /* the partial bytes do not verify: start from zero */
        res->discarded_partial = 1;
        st = restart(&v, err, errlen);
        if (st != KVF_OK)
            goto fail_keep;
    }
    for (int round = 0;; round++) {
        if (!v.size || v.got < v.size) {
            kvf_http_stats hs;
            memset(&hs, 0, sizeof hs); /* filled even when the download fails before a request */
            st = kvf_http_download(&http, url, v.got, sink, restart, &v, &hs, err, errlen);
            res->http.attempts += hs.attempts;
            res->http.resumed += hs.resumed;
            res->http.bytes += hs.bytes;
            res->http.seconds += hs.seconds;
            res->http.last_http_code = hs.last_http_code;
            memcpy(fresh.etag, hs.etag, sizeof fresh.etag);
            memcpy(fresh.last_modified, hs.last_modified, sizeof fresh.last_modified);
            if (revalidate && v.got == 0 && (hs.not_modified || st == KVF_ERR_NET)) {
                /* nothing new arrived: the blob the URL served last stands; when the server
                 * could not be asked it is used all the same, marked stale */
                if (st == KVF_ERR_NET) {
                    res->stale = 1;
                    snprintf(res->stale_why, sizeof res->stale_why, "%s", err ? err : "network error");
                } else {
                    res->revalidated = 1;
                }
                (void)unlink(part); /* empty, and still ours under the lock */
                vs_end(&v);
                close(fd);
                st = from_cache(cache, o, rec.id, res, t0, err, errlen);
                if (st != KVF_ERR_HTTP)
                    return st;
                kvf_get_opts again = *o; /* it left the cache meanwhile: download it afresh */
                return kvf_get(cache, &again, res, err, errlen);
            }
            if (st == KVF_ERR_VERIFY && is_corruption(v.vst) && res->reused && !res->discarded_partial) {
                /* the bad bytes may be the old partial file's (a chunk spanning the resume
                 * point): drop it and fetch the whole blob once more */
                res->discarded_partial = 1;
                res->reused = 0;
                if ((st = restart(&v, err, errlen)) != KVF_OK)
                    goto fail_keep;
                round = -1;
                continue;
            }
            if (st == KVF_ERR_VERIFY) {
                res->vst = v.vst;
                goto fail_delete;
            }
            if (st == KVF_ERR_TOO_BIG || v.no_room)
                goto fail_delete;
            if (st != KVF_OK)
                goto fail_keep;
        }
        if (v.size && v.got < v.size && round < MAX_SHORT_RETRIES)
            continue; /* the body ended early without a transport error: resume */
        break;
    }
    st = vs_finish(&v, res, err, errlen);
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
    vs_end(&v);
    st = kvf_cache_insert(cache, part, res->id, res->path, sizeof res->path, err, errlen);
    close(fd); /* after the rename: a waiting process then finds the blob in the cache */
    if (st != KVF_OK)
        return st;
    memcpy(fresh.id, res->id, 32);
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
    vs_end(&v);
    close(fd);
    res->seconds = base_now_s() - t0;
    return st;
}
