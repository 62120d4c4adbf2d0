/* kvb_writer.c: builds a blob: encodes chunks as they are added (kept in memory, or in a spill
 * file, because the signed manifest that precedes them lists their hashes), then signs and
 * emits it. Chunks are encoded and hashed on a small pthread pool; each chunk's bytes depend
 * only on its values and the zstd level, and offsets are assigned in chunk order afterwards,
 * so the blob is the same whatever the thread count. */
#include "format/kvb_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { ERRLEN = 256, MAX_THREADS = 64 };

/* One chunk waiting for or being encoded by a worker: a private copy of its values. */
typedef struct job {
    uint16_t *raw;     /* (n_layer, 2, n, kv_dim) */
    uint32_t index, n;
    int busy;          /* queued or running */
} job;

struct kvb_writer {
    kvb_manifest m;        /* copy of the caller's "in" fields; strings below */
    char *strs[4];
    uint8_t *tok;          /* n_tokens LE int32 */
    int32_t *ctx;          /* the declared context's ids (a copy), or NULL */
    kvb_section *secs;     /* n_chunks */
    uint8_t **enc;         /* encoded chunk bytes (NULL once spilled) */
    int spill_fd;          /* -1: chunks stay in enc[] */
    uint64_t spill_end;    /* bytes reserved in the spill file (atomic) */
    uint64_t *spill_off;   /* n_chunks: where chunk i lies in it */
    char *spill_dir;       /* copy of kvb_write_opts.spill_dir, for messages */
    uint32_t added;        /* chunks added so far */
    int settled;           /* offsets assigned (all chunks encoded) */
    int zstd_level;
    kvb_codec_ctx *codec;  /* the caller's thread (no pool) */
    /* encode pool: jobs form a ring indexed by chunk number */
    int nthreads;
    pthread_t thr[MAX_THREADS];
    job *jobs;
    uint32_t njobs, next_run, done;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    int shutdown;
    kvb_status st;         /* first failure by chunk index */
    uint32_t st_index;
    char err[ERRLEN];
};

static void *encode_worker(void *arg);

/* Starts up to want workers (fewer is still correct: 0 = encode on the caller's thread). */
static void start_pool(kvb_writer *w, int want)
{
    if (want <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        want = n > 0 ? (int)n : 1;
    }
    if (want > MAX_THREADS)
        want = MAX_THREADS;
    /* each job holds a copy of one raw chunk: keep them under 1 GiB together */
    uint64_t raw = 2 * kvb_chunk_values(w->m.n_layer, w->m.chunk_tokens, w->m.kv_dim);
    uint64_t fit = ((uint64_t)1 << 30) / (raw ? raw : 1);
    if ((uint64_t)want + 1 > fit)
        want = fit > 3 ? (int)fit - 1 : 2;
    if (want < 2 || w->m.n_chunks < 2)
        return;
    w->njobs = (uint32_t)want + 1; /* one being filled while the workers encode the others */
    w->jobs = calloc(w->njobs, sizeof *w->jobs);
    if (!w->jobs)
        return;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv_work, NULL);
    pthread_cond_init(&w->cv_done, NULL);
    for (int i = 0; i < want; i++) {
        if (pthread_create(&w->thr[i], NULL, encode_worker, w) != 0)
            break;
        w->nthreads++;
    }
    if (w->nthreads == 0) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv_work);
        pthread_cond_destroy(&w->cv_done);
        free(w->jobs);
        w->jobs = NULL;
        w->njobs = 0;
    }
}

/* Moves encoded chunk i to the spill file (any thread: space is reserved atomically, in
 * completion order; the offset is remembered). */
static kvb_status spill(kvb_writer *w, uint32_t i, char *err, size_t errlen)
{
    uint64_t len = w->secs[i].length;
    uint64_t off = __atomic_fetch_add(&w->spill_end, len, __ATOMIC_RELAXED);
    if (base_pwrite_all(w->spill_fd, w->enc[i], len, off) != 0)
        return kvb_fail(err, errlen, KVB_ERR_IO, "writer: cannot spill chunk %u to a temporary file in %s: %s", i,
                        w->spill_dir, strerror(errno));
    w->spill_off[i] = off;
    free(w->enc[i]);
    w->enc[i] = NULL;
    return KVB_OK;
}

/* Encodes and hashes chunk i from kv (then spills it, when spilling); on failure records it if
 * it is the earliest so far (called with w->mu held when pooled: only the recording). */
static kvb_status encode_chunk(kvb_writer *w, kvb_codec_ctx *cc, const uint16_t *kv, uint32_t i, uint32_t n,
                               char *err, size_t errlen)
{
    size_t len = 0;
    if (!cc)
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory");
    kvb_status st = kvb_chunk_encode(cc, w->m.codec, kv, w->m.n_layer, n, w->m.kv_dim, &w->enc[i], &len, err, errlen);
    if (st)
        return st;
    kvb_section *s = &w->secs[i];
    s->length = len;
    s->t0 = i * w->m.chunk_tokens;
    s->t1 = s->t0 + n;
    kvb_chunk_digest(KVB_VERSION, w->enc[i], len, s->sha256);
    if (w->m.has_raw) /* lossless: the decoded bytes are kv's (spec 4.2) */
        kvc_leaf_digest(kv, 2 * kvb_chunk_values(w->m.n_layer, n, w->m.kv_dim), s->raw_sha256);
    return w->spill_fd >= 0 ? spill(w, i, err, errlen) : KVB_OK;
}

static void *encode_worker(void *arg)
{
    kvb_writer *w = arg;
    kvb_codec_ctx *cc = kvb_codec_ctx_create(w->zstd_level);
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->shutdown && w->next_run == w->added)
            pthread_cond_wait(&w->cv_work, &w->mu);
        if (w->next_run == w->added) /* shutdown and nothing left */
            break;
        job *j = &w->jobs[w->next_run % w->njobs];
        w->next_run++;
        pthread_mutex_unlock(&w->mu);
        char e[ERRLEN];
        kvb_status st = encode_chunk(w, cc, j->raw, j->index, j->n, e, sizeof e);
        pthread_mutex_lock(&w->mu);
        if (st && (!w->st || j->index < w->st_index)) {
            w->st = st;
            w->st_index = j->index;
            snprintf(w->err, sizeof w->err, "%s", e);
        }
        j->busy = 0;
        w->done++;
        pthread_cond_broadcast(&w->cv_done);
    }
    pthread_mutex_unlock(&w->mu);
    kvb_codec_ctx_free(cc);
    return NULL;
}

/* Waits for every queued chunk; then assigns offsets in chunk order (once). */
static kvb_status settle(kvb_writer *w, char *err, size_t errlen)
{
    if (w->nthreads) {
        pthread_mutex_lock(&w->mu);
        while (w->done != w->added)
            pthread_cond_wait(&w->cv_done, &w->mu);
        pthread_mutex_unlock(&w->mu);
    }
    if (w->st)
        return kvb_fail(err, errlen, w->st, "%s", w->err);
    if (w->added != w->m.n_chunks)
        return kvb_fail(err, errlen, KVB_ERR_USAGE, "writer: %u of %u chunks added", w->added, w->m.n_chunks);
    if (w->settled)
        return KVB_OK;
    uint64_t end = w->m.tokens.length;
    w->m.stored_bytes = 0;
    for (uint32_t i = 0; i < w->m.n_chunks; i++) {
        w->secs[i].offset = kvb_align(end);
        end = w->secs[i].offset + w->secs[i].length;
        w->m.stored_bytes += w->secs[i].length;
    }
    w->settled = 1;
    return KVB_OK;
}

/* Reserves the job for chunk w->added, waiting for the one that last used it. NULL on OOM. */
static job *take_job(kvb_writer *w)
{
    job *j = &w->jobs[w->added % w->njobs];
    pthread_mutex_lock(&w->mu);
    while (j->busy)
        pthread_cond_wait(&w->cv_done, &w->mu);
    pthread_mutex_unlock(&w->mu);
    if (!j->raw)
        j->raw = malloc(2 * kvb_chunk_values(w->m.n_layer, w->m.chunk_tokens, w->m.kv_dim));
    return j->raw ? j : NULL;
}

/* Hands the filled job for chunk w->added (n tokens) to the pool. */
static void queue_job(kvb_writer *w, job *j, uint32_t n)
{
    j->index = w->added;
    j->n = n;
    j->busy = 1;
    pthread_mutex_lock(&w->mu);
    w->added++;
    pthread_cond_signal(&w->cv_work);
    pthread_mutex_unlock(&w->mu);
}

static char *dupstr(const char *s)
{
    return strdup(s ? s : "");
}

kvb_status kvb_writer_create(const kvb_manifest *meta, const int32_t *tokens,
                             const kvb_write_opts *opts, kvb_writer **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!meta || !tokens || (meta->n_context && !meta->context_ids))
        return kvb_fail(err, errlen, KVB_ERR_USAGE, "writer: metadata, token ids and context ids are required");
    kvb_manifest m = *meta;
    if (m.chunk_tokens == 0)
        m.chunk_tokens = 256;
    kvb_status st = kvb_manifest_check_shape(&m, err, errlen);
    if (st)
        return st;
    kvb_writer *w = calloc(1, sizeof *w);
    if (!w)
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory");
    w->m = m;
    w->m.kv_dim = m.n_head_kv * m.head_dim;
    w->m.n_chunks = (m.n_tokens + m.chunk_tokens - 1) / m.chunk_tokens;
    w->strs[0] = dupstr(m.doc_title);
    w->strs[1] = dupstr(m.doc_source_uri);
    w->strs[2] = dupstr(m.doc_media_type);
    w->strs[3] = dupstr(m.model_arch);
    w->tok = malloc(4ull * m.n_tokens);
    if (m.n_context && m.context_ids && (w->ctx = malloc(m.n_context * sizeof *w->ctx)))
        memcpy(w->ctx, m.context_ids, m.n_context * sizeof *w->ctx);
    w->secs = calloc(w->m.n_chunks, sizeof *w->secs);
    w->enc = calloc(w->m.n_chunks, sizeof *w->enc);
    w->zstd_level = opts ? opts->zstd_level : 0;
    w->codec = kvb_codec_ctx_create(w->zstd_level);
    w->spill_fd = -1;
    if (opts && opts->spill_dir) {
        w->spill_dir = strdup(opts->spill_dir);
        w->spill_off = calloc(w->m.n_chunks, sizeof *w->spill_off);
        if (w->spill_dir && w->spill_off && (w->spill_fd = base_tmpfd(opts->spill_dir)) < 0) {
            st = kvb_fail(err, errlen, KVB_ERR_IO, "writer: cannot create a temporary file in %s: %s",
                          opts->spill_dir, strerror(errno));
            kvb_writer_free(w);
            return st;
        }
    }
    if (!w->strs[0] || !w->strs[1] || !w->strs[2] || !w->strs[3] || !w->tok || !w->secs || !w->enc || !w->codec ||
        (m.n_context && (!w->ctx || kvb_ids_sha256(w->ctx, m.n_context, w->m.context_sha256) != 0)) ||
        (opts && opts->spill_dir && (!w->spill_dir || !w->spill_off))) {
        kvb_writer_free(w);
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory");
    }
    w->m.doc_title = w->strs[0];
    w->m.doc_source_uri = w->strs[1];
    w->m.doc_media_type = w->strs[2];
    w->m.model_arch = w->strs[3];
    w->m.chunks = w->secs;
    w->m.has_raw = w->m.codec == KVB_CODEC_F16_ZSTD;
    w->m.context_ids = w->ctx;
    for (uint32_t i = 0; i < m.n_tokens; i++)
        kvb_put32(w->tok + 4ull * i, (uint32_t)tokens[i]);
    w->m.tokens.offset = 0;
    w->m.tokens.length = 4ull * m.n_tokens;
    w->m.tokens.t0 = 0;
    w->m.tokens.t1 = m.n_tokens;
    kvc_sha256(w->tok, 4ull * m.n_tokens, w->m.tokens.sha256);
    memcpy(w->m.tokens_sha256, w->m.tokens.sha256, KVC_SHA256_LEN);
    start_pool(w, opts ? opts->n_threads : 0);
    *out = w;
    return KVB_OK;
}

void kvb_writer_free(kvb_writer *w)
{
    if (!w)
        return;
    if (w->nthreads) {
        /* workers finish what is queued, then exit */
        base_threads_stop(&w->mu, &w->cv_work, &w->shutdown, w->thr, w->nthreads);
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv_work);
        pthread_cond_destroy(&w->cv_done);
    }
    for (uint32_t i = 0; i < w->njobs; i++)
        free(w->jobs[i].raw);
    free(w->jobs);
    for (int i = 0; i < 4; i++)
        free(w->strs[i]);
    if (w->enc)
        for (uint32_t i = 0; i < w->m.n_chunks; i++)
            free(w->enc[i]);
    free(w->enc);
    if (w->spill_fd >= 0)
        close(w->spill_fd);
    kvb_codec_ctx_free(w->codec);
    BASE_FREE_ALL(w->spill_off, w->spill_dir, w->secs, w->tok, w->ctx, w);
}

/* Tokens in chunk i. */
static uint32_t chunk_n(const kvb_writer *w, uint32_t i)
{
    uint32_t t0 = i * w->m.chunk_tokens;
    return w->m.n_tokens - t0 < w->m.chunk_tokens ? w->m.n_tokens - t0 : w->m.chunk_tokens;
}

/* Common checks before adding a chunk of n tokens. */
static kvb_status can_add(kvb_writer *w, uint32_t n, char *err, size_t errlen)
{
    kvb_status st = KVB_OK;
    if (w->nthreads)
        pthread_mutex_lock(&w->mu);
    if (w->st)
        st = kvb_fail(err, errlen, w->st, "%s", w->err); /* a worker's failure, reported once known */
    if (w->nthreads)
        pthread_mutex_unlock(&w->mu);
    if (st)
        return st;
    if (w->added >= w->m.n_chunks)
        return kvb_fail(err, errlen, KVB_ERR_USAGE, "writer: all %u chunks were already added", w->m.n_chunks);
    uint32_t want = chunk_n(w, w->added);
    if (n != want)
        return kvb_fail(err, errlen, KVB_ERR_USAGE, "writer: chunk %u of %u has %u tokens, expected %u", w->added,
                        w->m.n_chunks, n, want);
    return KVB_OK;
}

/* Adds chunk w->added from kv (chunk layout) on the caller's thread. */
static kvb_status add_sync(kvb_writer *w, const uint16_t *kv, uint32_t n, char *err, size_t errlen)
{
    kvb_status st = encode_chunk(w, w->codec, kv, w->added, n, err, errlen);
    if (!st)
        w->added++;
    return st;
}

kvb_status kvb_writer_add_chunk(kvb_writer *w, const uint16_t *kv, uint32_t n, char *err, size_t errlen)
{
    kvb_status st = can_add(w, n, err, errlen);
    if (st)
        return st;
    if (!w->nthreads)
        return add_sync(w, kv, n, err, errlen);
    /* refuse bad values now, on the caller's thread, rather than at finish */
    st = kvb_chunk_check(w->m.codec, kv, w->m.n_layer, n, w->m.kv_dim, err, errlen);
    if (st)
        return st;
    job *j = take_job(w);
    if (!j)
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory");
    memcpy(j->raw, kv, 2 * kvb_chunk_values(w->m.n_layer, n, w->m.kv_dim));
    queue_job(w, j, n);
    return KVB_OK;
}

/* Copies rows [t0, t0+n) of every layer into buf in chunk layout (n_layer, 2, n, kv_dim). */
static void gather(const kvb_writer *w, const uint16_t *const *k, const uint16_t *const *v, uint32_t t0, uint32_t n,
                   uint16_t *buf)
{
    size_t row = w->m.kv_dim;
    for (uint32_t l = 0; l < w->m.n_layer; l++) { /* rows [t0, t0+n) are contiguous per layer */
        memcpy(buf + (size_t)(2 * l) * n * row, k[l] + (size_t)t0 * row, (size_t)n * row * 2);
        memcpy(buf + (size_t)(2 * l + 1) * n * row, v[l] + (size_t)t0 * row, (size_t)n * row * 2);
    }
}

kvb_status kvb_writer_add_layers(kvb_writer *w, const uint16_t *const *k, const uint16_t *const *v,
                                 char *err, size_t errlen)
{
    if (w->added)
        return kvb_fail(err, errlen, KVB_ERR_USAGE, "writer: add_layers after add_chunk");
    const kvb_manifest *m = &w->m;
    uint16_t *buf = NULL;
    if (!w->nthreads && !(buf = malloc(2 * kvb_chunk_values(m->n_layer, m->chunk_tokens, m->kv_dim))))
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory");
    kvb_status st = KVB_OK;
    for (uint32_t i = 0; i < m->n_chunks && !st; i++) {
        uint32_t n = chunk_n(w, i), t0 = i * m->chunk_tokens;
        if (!w->nthreads) {
            gather(w, k, v, t0, n, buf);
            st = add_sync(w, buf, n, err, errlen);
            continue;
        }
        job *j = take_job(w); /* gathered straight into the job: one copy */
        if (!j) {
            st = kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory");
            break;
        }
        gather(w, k, v, t0, n, j->raw);
        st = kvb_chunk_check(m->codec, j->raw, m->n_layer, n, m->kv_dim, err, errlen);
        if (!st)
            queue_job(w, j, n);
    }
    free(buf);
    return st;
}

/* Emits header+manifest+signature; the sink gets (header+manifest+sig, padding, sections). */
typedef int (*sink_fn)(void *ctx, const void *p, size_t n);

/* Everything emit needs that can fail before a byte is written: all chunks encoded, a
 * signing key, the manifest JSON (*json malloc'd, handed to emit). */
static kvb_status prepare(kvb_writer *w, const kvc_key *key, char **json, size_t *jlen, char *err, size_t errlen)
{
    kvb_status st = settle(w, err, errlen);
    if (st)
        return st;
    if (!key || !kvc_key_is_private(key))
        return kvb_fail(err, errlen, KVB_ERR_USAGE, "writer: a private key is required to sign");
    return kvb_manifest_serialize(&w->m, json, jlen, err, errlen);
}

/* Takes json (from prepare) and frees it. */
static kvb_status emit(kvb_writer *w, const kvc_key *key, char *json, size_t jlen, sink_fn sink, void *ctx,
                       char *err, size_t errlen)
{
    size_t plen = KVB_HEADER_LEN + jlen + KVC_SIG_LEN;
    uint64_t data_off = kvb_align(plen);
    uint8_t *pre = calloc(1, data_off);
    if (!pre) {
        free(json);
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory");
    }
    uint8_t kid[KVC_KEYID_LEN];
    kvc_key_id(key, kid);
    kvb_header_write(pre, (uint32_t)jlen, kid);
    memcpy(pre + KVB_HEADER_LEN, json, jlen);
    free(json);
    if (kvc_sign(key, pre, KVB_HEADER_LEN + jlen, pre + KVB_HEADER_LEN + jlen) != KVC_OK) {
        free(pre);
        return kvb_fail(err, errlen, KVB_ERR_INTERNAL, "signing failed");
    }
    static const uint8_t zeros[KVB_ALIGN];
    int bad = sink(ctx, pre, data_off) || sink(ctx, w->tok, w->m.tokens.length);
    free(pre);
    enum { PIECE = 1 << 20 };
    uint8_t *buf = w->spill_fd >= 0 ? malloc(PIECE) : NULL;
    if (w->spill_fd >= 0 && !buf)
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory");
    uint64_t end = w->m.tokens.length;
    for (uint32_t i = 0; i < w->m.n_chunks && !bad; i++) {
        const kvb_section *s = &w->secs[i];
        bad = sink(ctx, zeros, s->offset - end);
        if (w->enc[i]) {
            bad = bad || sink(ctx, w->enc[i], s->length);
        } else { /* spilled: read back piece by piece */
            for (uint64_t at = 0; at < s->length && !bad; at += PIECE) {
                size_t n = s->length - at < PIECE ? (size_t)(s->length - at) : PIECE;
                ssize_t got = pread(w->spill_fd, buf, n, (off_t)(w->spill_off[i] + at));
                if (got != (ssize_t)n) {
                    free(buf);
                    return kvb_fail(err, errlen, KVB_ERR_IO, "writer: cannot read chunk %u back from the temporary file: %s",
                                    i, got < 0 ? strerror(errno) : "short read");
                }
                bad = sink(ctx, buf, n);
            }
        }
        end = s->offset + s->length;
    }
    free(buf);
    return bad ? kvb_fail(err, errlen, KVB_ERR_IO, "write failed: %s", strerror(errno)) : KVB_OK;
}

typedef struct membuf {
    uint8_t *p;
    size_t len, cap;
} membuf;

static int mem_sink(void *ctx, const void *p, size_t n)
{
    membuf *b = ctx;
    if (n > b->cap - b->len) {
        errno = ENOMEM;
        return -1;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

/* Bytes of the data section: up to the end of the last chunk. */
static uint64_t data_size(const kvb_writer *w)
{
    const kvb_section *last = &w->secs[w->m.n_chunks - 1];
    return last->offset + last->length;
}

kvb_status kvb_writer_finish_mem(kvb_writer *w, const kvc_key *key, uint8_t **out, size_t *len,
                                 char *err, size_t errlen)
{
    *out = NULL;
    *len = 0;
    char *json = NULL;
    size_t jlen = 0;
    kvb_status st = prepare(w, key, &json, &jlen, err, errlen);
    if (st)
        return st;
    uint64_t total = kvb_align(KVB_HEADER_LEN + jlen + KVC_SIG_LEN) + data_size(w);
    membuf b = {total <= SIZE_MAX ? malloc(total) : NULL, 0, total};
    if (!b.p) {
        free(json);
        return total > SIZE_MAX ? kvb_fail(err, errlen, KVB_ERR_LIMIT, "blob too large for memory")
                                : kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory (%llu bytes)",
                                           (unsigned long long)total);
    }
    st = emit(w, key, json, jlen, mem_sink, &b, err, errlen);
    if (st) {
        free(b.p);
        return st;
    }
    *out = b.p;
    *len = b.len;
    return KVB_OK;
}

static int file_sink(void *ctx, const void *p, size_t n)
{
    return n && fwrite(p, 1, n, (FILE *)ctx) != n ? -1 : 0;
}

kvb_status kvb_writer_finish_file(kvb_writer *w, const kvc_key *key, FILE *f, char *err, size_t errlen)
{
    char *json = NULL;
    size_t jlen = 0;
    kvb_status st = prepare(w, key, &json, &jlen, err, errlen);
    if (!st)
        st = emit(w, key, json, jlen, file_sink, f, err, errlen);
    if (!st && fflush(f) != 0)
        return kvb_fail(err, errlen, KVB_ERR_IO, "write failed: %s", strerror(errno));
    return st;
}

kvb_status kvb_writer_finish_path(kvb_writer *w, const kvc_key *key, const char *path, char *err, size_t errlen)
{
    base_replace r;
    if (base_replace_open(&r, path) != 0)
        return kvb_fail(err, errlen, KVB_ERR_IO, "%s: cannot create temporary file: %s", path, strerror(errno));
    int fd = dup(r.fd);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        kvb_status st = kvb_fail(err, errlen, KVB_ERR_IO, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        base_replace_abort(&r);
        return st;
    }
    kvb_status st = kvb_writer_finish_file(w, key, f, err, errlen);
    if (fclose(f) != 0 && !st)
        st = kvb_fail(err, errlen, KVB_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    if (st)
        base_replace_abort(&r);
    else if (base_replace_commit(&r) != 0)
        st = kvb_fail(err, errlen, KVB_ERR_IO, "%s: %s", path, strerror(errno));
    return st;
}

kvb_status kvb_write(const kvb_manifest *meta, const int32_t *tokens, const uint16_t *const *k,
                     const uint16_t *const *v, const kvb_write_opts *opts, const kvc_key *key,
                     const char *path, uint8_t **out, size_t *len, char *err, size_t errlen)
{
    kvb_writer *w = NULL;
    kvb_status st = kvb_writer_create(meta, tokens, opts, &w, err, errlen);
    if (!st)
        st = kvb_writer_add_layers(w, k, v, err, errlen);
    if (!st)
        st = path ? kvb_writer_finish_path(w, key, path, err, errlen)
                  : kvb_writer_finish_mem(w, key, out, len, err, errlen);
    kvb_writer_free(w);
    return st;
}
