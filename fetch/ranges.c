/* ranges.c: one blob's chunks from two sources at once. The chunks left after the verified
 * manifest and token ids are cut in two contiguous halves; a thread per half GETs its byte
 * range, checks each chunk's digest against the signed manifest as it completes and writes it
 * at its offset in the partial file; a source that fails gives the rest of its half back, and
 * whichever source is still good takes it. */
#include "fetch/fetch_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PENDING (2 * KVF_SOURCES_MAX + 2)

typedef struct run {
    uint32_t from, to; /* sections [from, to): 0 = the token ids, 1 + c = chunk c */
} run;

typedef struct shared {
    pthread_mutex_t mu;
    const kvf_vstream *v;
    const kvb_manifest *m;
    const kvb_header *h;
    uint64_t *ends;       /* ends[s]: the file offset where section s ends */
    uint8_t *done;        /* done[s]: section s written and verified */
    kvf_sources *srcs;
    const kvf_http_opts *http;
    kvf_http_stats *stats; /* the download's, summed over both threads */
    int in_use[KVF_SOURCES_MAX];
    run pending[MAX_PENDING];
    int n_pending;
    int failed;
    kvf_status last;      /* the most telling failure (kvf_telling), the latest among equals */
    kvb_status last_vst;  /* how its bytes failed, with KVF_ERR_VERIFY */
    char last_err[1024];
    int no_room;          /* a write failed for lack of space: v->no_room once both stopped */
} shared;

/* One worker's transfer of a run from one source: the section being assembled. */
typedef struct job {
    shared *sh;
    int src;
    run r;
    uint32_t cur;         /* the section the next byte belongs to */
    uint64_t have;        /* its bytes so far (padding included) */
    uint8_t *buf;
    kvb_status vst;       /* how the bytes failed, with KVF_ERR_VERIFY */
    char err[1024];
} job;

static uint64_t sec_begin(const shared *sh, uint32_t s) { return sh->ends[s - 1]; }

/* A complete section in j->buf: zero padding, the digest the signed manifest gives, then the
 * bytes go to their place in the partial file. */
static kvf_status finish_section(job *j, char *err, size_t errlen)
{
    shared *sh = j->sh;
    uint32_t s = j->cur;
    const kvb_section *sec = &sh->m->chunks[s - 1];
    uint64_t pad = sh->h->data_offset + sec->offset - sec_begin(sh, s);
    for (uint64_t i = 0; i < pad; i++)
        if (j->buf[i]) {
            j->vst = KVB_ERR_MALFORMED;
            return kvf_fail(err, errlen, KVF_ERR_VERIFY, "padding before chunk %u of %u is not zero", s - 1,
                            sh->m->n_chunks);
        }
    uint8_t d[KVC_SHA256_LEN];
    if (sh->h->version == 1) /* the chunk digest by container version (spec/kvblob.md 4.1) */
        kvc_sha256(j->buf + pad, sec->length, d);
    else
        kvc_leaf_digest(j->buf + pad, sec->length, d);
    if (memcmp(d, sec->sha256, KVC_SHA256_LEN) != 0) {
        j->vst = KVB_ERR_CHUNK_HASH;
        return kvf_fail(err, errlen, KVF_ERR_VERIFY, "chunk %u of %u: sha256 mismatch", s - 1, sh->m->n_chunks);
    }
    if (base_pwrite_all(sh->v->fd, j->buf, (size_t)j->have, sec_begin(sh, s)) != 0) {
        /* no room: as vstream.c, the partial file could only grow the problem; it is removed */
        const int e = errno, none = e == ENOSPC || e == EDQUOT || e == EFBIG;
        if (none) {
            pthread_mutex_lock(&sh->mu);
            sh->no_room = 1;
            pthread_mutex_unlock(&sh->mu);
        }
        return kvf_fail(err, errlen, KVF_ERR_IO, "writing the partial download: %s%s", strerror(e),
                        none ? " (the partial download was removed)" : "");
    }
    pthread_mutex_lock(&sh->mu);
    sh->done[s] = 1;
    sh->srcs->rep[j->src]->bytes += j->have;
    pthread_mutex_unlock(&sh->mu);
    j->cur++;
    j->have = 0;
    return KVF_OK;
}

static kvf_status range_sink(void *user, const void *data, size_t len, char *err, size_t errlen)
{
    job *j = user;
    const uint8_t *p = data;
    while (len) {
        if (j->cur >= j->r.to)
            return kvf_fail(err, errlen, KVF_ERR_TOO_BIG, "the server sent more than the range asked for");
        uint64_t need = j->sh->ends[j->cur] - sec_begin(j->sh, j->cur) - j->have;
        size_t take = need < len ? (size_t)need : len;
        memcpy(j->buf + j->have, p, take);
        j->have += take;
        p += take;
        len -= take;
        if (take == need) {
            kvf_status st = finish_section(j, err, errlen);
            if (st != KVF_OK)
                return st;
        }
    }
    return KVF_OK;
}

/* Transfers j->r from j->src; KVF_OK once every section of it verified. */
static kvf_status transfer(job *j)
{
    shared *sh = j->sh;
    uint64_t big = 0;
    for (uint32_t s = j->r.from; s < j->r.to; s++)
        if (sh->ends[s] - sec_begin(sh, s) > big)
            big = sh->ends[s] - sec_begin(sh, s);
    j->cur = j->r.from; /* before anything can fail: the worker gives back [cur, to) */
    j->have = 0;
    j->buf = malloc(big ? (size_t)big : 1);
    if (!j->buf)
        return kvf_fail(j->err, sizeof j->err, KVF_ERR_NOMEM, "out of memory");
    kvf_http_opts http = *sh->http;
    http.progress = NULL; /* two threads would draw over each other */
    kvf_http_stats hs;
    memset(&hs, 0, sizeof hs);
    kvf_status st = kvf_http_download(&http, sh->srcs->url[j->src], sec_begin(sh, j->r.from), sh->ends[j->r.to - 1],
                                      range_sink, NULL, j, &hs, j->err, sizeof j->err);
    pthread_mutex_lock(&sh->mu);
    sh->stats->attempts += hs.attempts;
    sh->stats->resumed += hs.resumed;
    sh->stats->bytes += hs.bytes;
    sh->stats->last_http_code = hs.last_http_code;
    pthread_mutex_unlock(&sh->mu);
    if (st == KVF_OK && j->cur < j->r.to)
        st = kvf_fail(j->err, sizeof j->err, KVF_ERR_NET, "%s: the body ended at byte %llu of the range",
                      sh->srcs->url[j->src], (unsigned long long)(sec_begin(sh, j->cur) + j->have));
    free(j->buf);
    j->buf = NULL;
    return st;
}

/* A fresh source for the rest of a run: good and not serving another run now; -1 = none. */
static int free_source(shared *sh)
{
    for (int i = 0; i < sh->srcs->n; i++)
        if (!sh->srcs->bad[i] && !sh->in_use[i])
            return i;
    return -1;
}

/* Works through runs: its own first, then whatever another source gave back. A failing source
 * is abandoned, the sections it did not verify go back to the queue, and the worker goes on
 * with a source nobody uses, if there is one. */
static void *worker(void *arg)
{
    job *j = arg;
    shared *sh = j->sh;
    for (;;) {
        kvf_status st = transfer(j);
        pthread_mutex_lock(&sh->mu);
        if (st == KVF_OK) {
            sh->srcs->rep[j->src]->ok = 1;
        } else {
            kvf_source_abandon(sh->srcs, j->src, st, j->err);
            if (!sh->failed || kvf_telling(st) >= kvf_telling(sh->last)) {
                sh->failed = 1;
                sh->last = st;
                sh->last_vst = j->vst;
                snprintf(sh->last_err, sizeof sh->last_err, "%s", j->err);
            }
            sh->in_use[j->src] = 0;
            if (sh->n_pending < MAX_PENDING)
                sh->pending[sh->n_pending++] = (run){j->cur, j->r.to};
            j->src = st == KVF_ERR_IO || st == KVF_ERR_NOMEM ? -1 : free_source(sh);
            if (j->src >= 0)
                sh->in_use[j->src] = 1;
        }
        if (j->src < 0 || sh->n_pending == 0) {
            if (j->src >= 0)
                sh->in_use[j->src] = 0;
            pthread_mutex_unlock(&sh->mu);
            return NULL;
        }
        j->r = sh->pending[--sh->n_pending];
        kvf_source_report *rep = sh->srcs->rep[j->src];
        if (!rep->used)
            rep->from = sec_begin(sh, j->r.from);
        rep->used = 1;
        pthread_mutex_unlock(&sh->mu);
    }
}

kvf_status kvf_ranges_fetch(kvf_vstream *v, kvf_sources *srcs, const kvf_http_opts *http, int first, int second,
                            kvf_http_stats *stats, char *err, size_t errlen)
{
    shared sh = {.v = v, .m = kvb_reader_manifest(v->r), .h = kvb_reader_header(v->r), .srcs = srcs,
                 .http = http, .stats = stats, .last = KVF_ERR_NET};
    uint32_t n = sh.m->n_chunks + 1;
    sh.ends = malloc(n * sizeof *sh.ends);
    sh.done = calloc(n, 1);
    if (!sh.ends || !sh.done) {
        free(sh.ends);
        free(sh.done);
        return kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
    }
    uint32_t s0 = 0;
    for (uint32_t s = 0; s < n; s++) {
        sh.ends[s] = kvf_section_end(sh.h, sh.m, s);
        if (sh.ends[s] <= v->fed) {
            sh.done[s] = 1;
            s0 = s + 1;
        }
    }
    pthread_mutex_init(&sh.mu, NULL);
    uint32_t k = kvf_split_half(sh.ends, s0, n, sec_begin(&sh, s0));
    job a = {.sh = &sh, .src = first, .r = {s0, k}}, b = {.sh = &sh, .src = second, .r = {k, n}};
    sh.in_use[first] = sh.in_use[second] = 1;
    if (!srcs->rep[second]->used)
        srcs->rep[second]->from = sec_begin(&sh, k);
    srcs->rep[first]->used = srcs->rep[second]->used = 1;
    pthread_t tb;
    int threaded = pthread_create(&tb, NULL, worker, &b) == 0;
    if (!threaded) { /* no thread: the second half waits for the first */
        sh.in_use[second] = 0;
        sh.pending[sh.n_pending++] = b.r;
    }
    worker(&a);
    if (threaded)
        pthread_join(tb, NULL);
    /* runs given back after both workers stopped: any source still good takes them */
    while (sh.n_pending > 0) {
        int src = free_source(&sh);
        if (src < 0)
            break;
        job c = {.sh = &sh, .src = src, .r = sh.pending[--sh.n_pending]};
        sh.in_use[src] = 1;
        if (!srcs->rep[src]->used)
            srcs->rep[src]->from = sec_begin(&sh, c.r.from);
        srcs->rep[src]->used = 1;
        worker(&c);
    }
    kvf_status st = KVF_OK;
    for (uint32_t s = 0; s < n; s++)
        if (!sh.done[s]) {
            st = kvf_fail(err, errlen, sh.last, "%s", sh.last_err);
            break;
        }
    /* what stays for a resume: the verified sections from the start, none after a gap */
    uint64_t keep = v->fed;
    for (uint32_t s = s0; s < n && sh.done[s]; s++)
        keep = sh.ends[s];
    if (st != KVF_OK) {
        v->vst = sh.last_vst;
        v->no_room = sh.no_room;
        if (ftruncate(v->fd, (off_t)keep) != 0)
            st = kvf_fail(err, errlen, KVF_ERR_IO, "truncating the partial download: %s", strerror(errno));
        v->got = keep;
    } else {
        v->got = sh.ends[n - 1];
    }
    pthread_mutex_destroy(&sh.mu);
    free(sh.ends);
    free(sh.done);
    return st;
}
