/* vstream.c: the verifying byte stream of a download: bytes go to the partial file as they
 * arrive and to the kvb reader one whole section at a time, so the download can always go back
 * to the last verified section boundary (another mirror, a tampered chunk). */
#include "fetch/fetch_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PIECE (1u << 20)

static kvb_status on_manifest(void *user, const kvb_manifest *m, const kvb_header *h, char *err,
                              size_t errlen)
{
    (void)m;
    (void)err;
    (void)errlen;
    kvf_vstream *v = user;
    v->size = h->file_size;
    return KVB_OK;
}

kvf_status kvf_vs_begin(kvf_vstream *v, const kvf_get_opts *o, int fd, char *err, size_t errlen)
{
    memset(v, 0, sizeof *v);
    v->o = o;
    v->fd = fd;
    kvb_read_opts ro = {0};
    ro.trust = o->trust;
    ro.now = o->now;
    ro.no_decode = 1;
    ro.n_threads = 1; /* hashes are checked inside each feed: `fed` is verified when it returns */
    ro.on_manifest = on_manifest;
    ro.user = v;
    v->r = kvb_reader_create(&ro);
    v->h = kvc_sha256_create();
    if (!v->r || !v->h) {
        kvf_vs_end(v);
        return kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
    }
    return KVF_OK;
}

void kvf_vs_end(kvf_vstream *v)
{
    kvb_reader_free(v->r);
    kvc_sha256_free(v->h);
    free(v->pend);
    v->r = NULL;
    v->h = NULL;
    v->pend = NULL;
    v->pend_len = v->pend_cap = 0;
}

uint64_t kvf_section_end(const kvb_header *h, const kvb_manifest *m, uint32_t i)
{
    const kvb_section *s = i == 0 ? &m->tokens : &m->chunks[i - 1];
    return h->data_offset + s->offset + s->length;
}

/* The end of the section the next byte belongs to: the header, the signed prefix, the token
 * ids, then each chunk (padding before a section belongs to it). 0 while the header is bad. */
static uint64_t next_boundary(kvf_vstream *v)
{
    if (v->fed < KVB_HEADER_LEN)
        return KVB_HEADER_LEN;
    if (!v->prefix) {
        kvb_status st;
        v->prefix = kvb_prefix_len(v->head, KVB_HEADER_LEN, &st);
        if (!v->prefix)
            return 0;
    }
    const kvb_manifest *m = kvb_reader_manifest(v->r);
    const kvb_header *h = kvb_reader_header(v->r);
    if (v->fed < v->prefix || !m || !h)
        return v->prefix;
    while (v->next_chunk <= m->n_chunks && kvf_section_end(h, m, v->next_chunk) <= v->fed)
        v->next_chunk++;
    return v->next_chunk <= m->n_chunks ? kvf_section_end(h, m, v->next_chunk) : v->size;
}

/* Hashes and verifies n bytes that complete a section (from p, or the held-back bytes). */
static kvf_status feed(kvf_vstream *v, const uint8_t *p, size_t n, char *err, size_t errlen)
{
    if (v->fed < KVB_HEADER_LEN)
        memcpy(v->head + v->fed, p, n < KVB_HEADER_LEN - v->fed ? n : KVB_HEADER_LEN - v->fed);
    kvc_sha256_update(v->h, p, n);
    kvb_status st = kvb_reader_feed(v->r, p, n, err, errlen);
    if (st != KVB_OK) {
        v->vst = st;
        return KVF_ERR_VERIFY;
    }
    v->fed += n;
    return KVF_OK;
}

static kvf_status hold(kvf_vstream *v, const uint8_t *p, size_t n, char *err, size_t errlen)
{
    if (v->pend_len + n > v->pend_cap) {
        size_t cap = v->pend_cap ? v->pend_cap : 64 * 1024;
        while (cap < v->pend_len + n)
            cap *= 2;
        uint8_t *q = realloc(v->pend, cap);
        if (!q)
            return kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
        v->pend = q;
        v->pend_cap = cap;
    }
    memcpy(v->pend + v->pend_len, p, n);
    v->pend_len += n;
    return KVF_OK;
}

kvf_status kvf_vs_consume(kvf_vstream *v, const uint8_t *p, size_t n, int store, char *err, size_t errlen)
{
    while (n) {
        if (v->size && v->got + n > v->size)
            return kvf_fail(err, errlen, KVF_ERR_TOO_BIG,
                            "refusing a body larger than the blob: the manifest declares %llu bytes",
                            (unsigned long long)v->size);
        uint64_t b = next_boundary(v);
        if (!b) { /* unreachable: the reader refused the header when it was fed */
            v->vst = KVB_ERR_MALFORMED;
            return kvf_fail(err, errlen, KVF_ERR_VERIFY, "not a kvblob header");
        }
        if (b <= v->got) { /* unreachable: past the prefix the manifest is known */
            v->vst = KVB_ERR_MALFORMED;
            return kvf_fail(err, errlen, KVF_ERR_VERIFY, "no section boundary after byte %llu",
                            (unsigned long long)v->got);
        }
        size_t take = b - v->got < n ? (size_t)(b - v->got) : n;
        if (store && v->fd >= 0 && base_write_all(v->fd, p, take) != 0) {
            /* no room: the partial file could only grow the problem; it is removed */
            v->no_room = errno == ENOSPC || errno == EDQUOT || errno == EFBIG;
            return kvf_fail(err, errlen, KVF_ERR_IO, "writing the partial download: %s%s", strerror(errno),
                            v->no_room ? " (the partial download was removed)" : "");
        }
        v->got += take;
        kvf_status st;
        if (v->got < b)
            st = hold(v, p, take, err, errlen);
        else if (!v->pend_len)
            st = feed(v, p, take, err, errlen); /* the whole section in this piece: no copy */
        else if ((st = hold(v, p, take, err, errlen)) == KVF_OK) {
            st = feed(v, v->pend, v->pend_len, err, errlen);
            v->pend_len = 0;
        }
        if (st != KVF_OK)
            return st;
        p += take;
        n -= take;
        const kvb_manifest *m = v->stop_after_tokens ? kvb_reader_manifest(v->r) : NULL;
        if (m && m->n_chunks >= 2 && v->got == v->fed &&
            v->fed == kvf_section_end(kvb_reader_header(v->r), m, 0)) {
            v->stopped = 1;
            return kvf_fail(err, errlen, KVF_ERR_USAGE, "stopped at byte %llu to split the rest",
                            (unsigned long long)v->fed);
        }
    }
    return KVF_OK;
}

kvf_status kvf_vs_feed_file(kvf_vstream *v, int fd, char *err, size_t errlen)
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
        st = kvf_vs_consume(v, buf, (size_t)r, 0, err, errlen);
        if (st != KVF_OK)
            break;
    }
    free(buf);
    return st;
}

kvf_status kvf_vs_sink(void *user, const void *data, size_t len, char *err, size_t errlen)
{
    return kvf_vs_consume(user, data, len, 1, err, errlen);
}

kvf_status kvf_vs_restart(void *user, char *err, size_t errlen)
{
    kvf_vstream *v = user;
    int fd = v->fd;
    const kvf_get_opts *o = v->o;
    int stop = v->stop_after_tokens;
    kvf_vs_end(v);
    if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0)
        return kvf_fail(err, errlen, KVF_ERR_IO, "truncating the partial download: %s", strerror(errno));
    kvf_status st = kvf_vs_begin(v, o, fd, err, errlen);
    v->stop_after_tokens = stop;
    return st;
}

kvf_status kvf_vs_rewind(kvf_vstream *v, int rebuild, char *err, size_t errlen)
{
    uint64_t keep = v->fed;
    if (ftruncate(v->fd, (off_t)keep) != 0 || lseek(v->fd, (off_t)keep, SEEK_SET) != (off_t)keep)
        return kvf_fail(err, errlen, KVF_ERR_IO, "truncating the partial download: %s", strerror(errno));
    v->got = keep;
    v->pend_len = 0;
    v->stopped = 0;
    if (!rebuild)
        return KVF_OK;
    int fd = v->fd;
    const kvf_get_opts *o = v->o;
    kvf_vs_end(v);
    kvf_status st = kvf_vs_begin(v, o, fd, err, errlen);
    if (st == KVF_OK && lseek(fd, 0, SEEK_SET) != 0)
        st = kvf_fail(err, errlen, KVF_ERR_IO, "seek: %s", strerror(errno));
    if (st == KVF_OK)
        st = kvf_vs_feed_file(v, fd, err, errlen);
    return st == KVF_OK && v->got != keep
               ? kvf_fail(err, errlen, KVF_ERR_IO, "the partial download changed under us") : st;
}

kvf_status kvf_vs_finish(kvf_vstream *v, kvf_get_result *res, char *err, size_t errlen)
{
    if (v->pend_len) { /* a file that ends inside a section: the reader says it is truncated */
        kvf_status st = feed(v, v->pend, v->pend_len, err, errlen);
        v->pend_len = 0;
        if (st != KVF_OK)
            return st;
    }
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

uint32_t kvf_split_half(const uint64_t *ends, uint32_t first, uint32_t n, uint64_t from)
{
    if (n < first + 2)
        return first;
    uint64_t half = from + (ends[n - 1] - from) / 2;
    uint32_t best = first + 1;
    /* the cut after section k - 1 nearest the middle byte; each run keeps at least one section */
    for (uint32_t k = first + 2; k < n; k++) {
        uint64_t d = ends[k - 1] > half ? ends[k - 1] - half : half - ends[k - 1];
        uint64_t bd = ends[best - 1] > half ? ends[best - 1] - half : half - ends[best - 1];
        if (d < bd)
            best = k;
    }
    return best;
}
