/* kvb_reader.c: the streaming reader. Bytes arrive in pieces of any size; the signature over
 * the raw header+manifest is checked before the manifest is parsed, each section's SHA-256
 * before it is decoded; chunks are hashed and decoded on a small pthread pool and handed to
 * the caller strictly in order, on the caller's thread. A chunk that arrives whole inside one
 * piece is hashed and decoded straight from the caller's bytes (feed waits for those jobs
 * before it returns); otherwise its bytes are gathered once into the chunk's slot, or read
 * there directly through kvb_reader_buffer/commit, or read by the worker itself from a file
 * (kvb_reader_fd.c). */
#include "format/kvb_reader_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

kvb_status kvb_rd_err(kvb_reader *r, kvb_status st, const char *fmt, ...)
{
    if (r->st)
        return r->st;
    va_list ap;
    va_start(ap, fmt);
    base_verrf(r->err, sizeof r->err, fmt, ap);
    va_end(ap);
    return r->st = st;
}

kvb_status kvb_rd_ret(const kvb_reader *r, char *err, size_t errlen)
{
    if (r->st && err && errlen)
        snprintf(err, errlen, "%s", r->err);
    return r->st;
}

kvb_reader *kvb_reader_create(const kvb_read_opts *opts)
{
    kvb_reader *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (opts)
        r->o = *opts;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv_work, NULL);
    pthread_cond_init(&r->cv_done, NULL);
    return r;
}

static void stop_workers(kvb_reader *r)
{
    base_threads_stop(&r->mu, &r->cv_work, &r->shutdown, r->thr, r->nthreads);
    r->nthreads = 0;
}

void kvb_reader_free(kvb_reader *r)
{
    if (!r)
        return;
    stop_workers(r);
    for (uint32_t i = 0; i < r->nslots; i++) {
        kvb_big_free(r->slots[i].in, r->slots[i].in_cap);
        kvb_big_free(r->slots[i].out, r->slots[i].out_cap);
    }
    kvb_manifest_free(r->m);
    kvb_codec_ctx_free(r->inline_ctx);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv_work);
    pthread_cond_destroy(&r->cv_done);
    kvb_rd_piece_free(&r->piece);
    BASE_FREE_ALL(r->slots, r->prefix, r->tokbuf, r->tokens, r->stage, r);
}

const kvb_manifest *kvb_reader_manifest(const kvb_reader *r) { return r->m; }
const kvb_header *kvb_reader_header(const kvb_reader *r) { return r->m ? &r->h : NULL; }
const int32_t *kvb_reader_tokens(const kvb_reader *r) { return r->tokens; }

/* ---- the work on one chunk: hash, then (maybe) decode; runs on a worker or inline ---- */

void kvb_rd_decode(const kvb_reader *r, slot *s, kvb_codec_ctx *cc)
{
    const kvb_manifest *m = r->m;
    const kvb_section *sec = &m->chunks[s->index];
    if (!s->decode) {
        s->st = KVB_OK;
        return;
    }
    if (!cc) {
        s->st = kvb_fail(s->err, sizeof s->err, KVB_ERR_NOMEM, "chunk %u of %u: out of memory", s->index, m->n_chunks);
        return;
    }
    char e[ERRLEN - 40];
    s->st = kvb_chunk_decode(cc, m->codec, s->data, s->in_len, m->n_layer, sec->t1 - sec->t0, m->kv_dim, s->sec,
                             &s->rows, e, sizeof e);
    if (s->st) {
        snprintf(s->err, sizeof s->err, "chunk %u of %u: %s", s->index, m->n_chunks, e);
        return;
    }
    if (r->o.check_raw && m->has_raw && !s->in_place) { /* the reader's buffer: decoded order */
        uint8_t h[KVC_SHA256_LEN];
        kvc_leaf_digest(s->out, 2 * kvb_chunk_values(m->n_layer, sec->t1 - sec->t0, m->kv_dim), h);
        if (memcmp(h, sec->raw_sha256, KVC_SHA256_LEN) != 0)
            s->st = kvb_fail(s->err, sizeof s->err, KVB_ERR_CHUNK_HASH,
                             "chunk %u of %u: its decoded bytes differ from the signed raw_sha256", s->index,
                             m->n_chunks);
    }
}

static void run_job(const kvb_reader *r, slot *s, kvb_codec_ctx *cc, kvb_piece *piece)
{
    if (s->pread) {
        kvb_rd_pread_job(r, s, cc, piece);
        return;
    }
    const kvb_manifest *m = r->m;
    uint8_t h[KVC_SHA256_LEN];
    kvb_chunk_digest(r->h.version, s->data, s->in_len, h);
    if (memcmp(h, m->chunks[s->index].sha256, KVC_SHA256_LEN) != 0) {
        s->st = kvb_fail(s->err, sizeof s->err, KVB_ERR_CHUNK_HASH, "chunk %u of %u: sha256 mismatch", s->index,
                         m->n_chunks);
        return;
    }
    kvb_rd_decode(r, s, cc);
}

static void *worker(void *arg)
{
    kvb_reader *r = arg;
    kvb_codec_ctx *cc = kvb_codec_ctx_create(0);
    kvb_piece piece = {0};
    pthread_mutex_lock(&r->mu);
    for (;;) {
        r->idle++;
        while (!r->shutdown && r->next_run == r->next_submit)
            pthread_cond_wait(&r->cv_work, &r->mu);
        r->idle--;
        if (r->shutdown)
            break;
        slot *s = &r->slots[r->next_run % r->nslots];
        r->next_run++;
        s->state = S_RUNNING;
        pthread_mutex_unlock(&r->mu);
        run_job(r, s, cc, &piece);
        pthread_mutex_lock(&r->mu);
        s->state = S_DONE;
        pthread_cond_broadcast(&r->cv_done);
    }
    pthread_mutex_unlock(&r->mu);
    kvb_codec_ctx_free(cc);
    kvb_rd_piece_free(&piece);
    return NULL;
}

/* With r->mu held, on the caller's thread, which is one of the reader's n_threads (start_pool
 * starts one worker fewer): runs a queued chunk that no worker waking up will take. Returns 1
 * if it ran one (r->mu held again), 0 if there was none. A caller that only waited left two
 * workers it had just created to the scheduler, which put both on one core and took about 10
 * ms to move one (the first chunks of a load at half speed, on the benchmarks' VM). */
static int help(kvb_reader *r)
{
    if (r->next_submit - r->next_run <= (uint32_t)r->idle)
        return 0;
    slot *s = &r->slots[r->next_run % r->nslots];
    r->next_run++;
    s->state = S_RUNNING;
    pthread_mutex_unlock(&r->mu);
    run_job(r, s, r->inline_ctx, &r->piece);
    pthread_mutex_lock(&r->mu);
    s->state = S_DONE;
    pthread_cond_broadcast(&r->cv_done);
    return 1;
}

/* Hands the oldest finished chunk to the caller, running queued ones while it waits.
 * wait=0: only if it is done already. Returns 1 if one was delivered, 0 if none, -1 on error
 * (r->st set). */
static int deliver_one(kvb_reader *r, int wait)
{
    if (r->next_deliver == r->next_submit)
        return 0;
    slot *s = &r->slots[r->next_deliver % r->nslots];
    pthread_mutex_lock(&r->mu);
    while (s->state != S_DONE) {
        if (!wait) {
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
        if (!help(r))
            pthread_cond_wait(&r->cv_done, &r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    s->state = S_EMPTY;
    r->next_deliver++;
    r->read_s += s->read_s;
    if (s->st) {
        kvb_rd_err(r, s->st, "%s", s->err);
        return -1;
    }
    if (s->decode && r->o.on_chunk) {
        const kvb_section *sec = &r->m->chunks[s->index];
        kvb_chunk c = {s->index, r->m->n_chunks, sec->t0, sec->t1, r->m->n_layer, r->m->kv_dim,
                       (const uint16_t *const *)s->sec, s->in_place};
        char e[ERRLEN] = "refused by the chunk callback";
        kvb_status st = r->o.on_chunk(r->o.user, &c, e, sizeof e);
        if (st) {
            kvb_rd_err(r, st, "%s", e);
            return -1;
        }
    }
    return 1;
}

/* Delivers everything in flight (in order). Returns r->st. */
static kvb_status drain(kvb_reader *r)
{
    while (!r->st && deliver_one(r, 1) > 0) {
    }
    return r->st;
}

kvb_status kvb_rd_feeder_fail(kvb_reader *r, kvb_status st, const char *msg)
{
    if (drain(r))
        return r->st;
    return kvb_rd_err(r, st, "%s", msg);
}

/* Decode workers for n_threads (0: online cores) and a blob of n_chunks; 0: decode inline. */
static int pool_workers(int n_threads, uint32_t n_chunks)
{
    int want = n_threads;
    if (want <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        want = n > 0 ? (int)n : 1;
    }
    if (want > MAX_THREADS)
        want = MAX_THREADS;
    return want > 1 && n_chunks > 1 ? want : 0;
}

/* Chunks in flight for n threads: one each, one being filled, and one queued, so that a
 * worker that finishes while the caller runs a chunk (and so submits none) finds the next one
 * waiting. Each slot's buffers are fresh memory, dear on some machines (about 2 ms/MB on the
 * VM the benchmarks run in) unless kvb_reader_reserve readied them. */
static uint32_t ring_slots(int n) { return (uint32_t)n + 2; }

static kvb_status start_pool(kvb_reader *r)
{
    const int want = pool_workers(r->o.n_threads, r->m->n_chunks);
    if (want) {
        r->nslots = ring_slots(want);
        r->slots = calloc(r->nslots, sizeof *r->slots);
        r->inline_ctx = kvb_codec_ctx_create(0); /* the caller's, for the chunks it runs */
        if (!r->slots || !r->inline_ctx)
            return kvb_rd_err(r, KVB_ERR_NOMEM, "out of memory");
        for (int i = 0; i < want - 1; i++) {
            if (pthread_create(&r->thr[i], NULL, worker, r) != 0)
                break; /* fewer workers is still correct */
            r->nthreads++;
        }
        if (r->nthreads > 0)
            return KVB_OK;
        free(r->slots);
    }
    r->nslots = 1;
    r->slots = calloc(1, sizeof *r->slots);
    if (!r->inline_ctx)
        r->inline_ctx = kvb_codec_ctx_create(0);
    if (!r->slots || !r->inline_ctx)
        return kvb_rd_err(r, KVB_ERR_NOMEM, "out of memory");
    return KVB_OK;
}

/* Reserves the slot for chunk i, delivering older chunks first when the ring is full. */
static kvb_status begin_chunk(kvb_reader *r, uint32_t i)
{
    while (r->next_submit - r->next_deliver >= r->nslots)
        if (deliver_one(r, 1) < 0)
            return r->st;
    slot *s = &r->slots[r->next_submit % r->nslots];
    const kvb_section *sec = &r->m->chunks[i];
    s->index = i;
    s->decode = !r->o.no_decode && (r->o.max_chunks == 0 || i < r->o.max_chunks);
    s->in_place = 0;
    s->rows = (kvb_rows){0, 0};
    uint32_t nl = r->m->n_layer;
    if (s->decode && r->o.on_dest) {
        uint16_t *k[KVB_MAX_LAYERS] = {0}, *v[KVB_MAX_LAYERS] = {0};
        s->in_place = r->o.on_dest(r->o.user, i, sec->t0, sec->t1, k, v, &s->rows) != 0;
        if (s->in_place && s->rows.seg && r->m->kv_dim % s->rows.seg)
            return kvb_rd_err(r, KVB_ERR_USAGE, "chunk %u of %u: on_dest cut rows of %u values into pieces of %u",
                           i, r->m->n_chunks, r->m->kv_dim, s->rows.seg);
        if (!s->in_place)
            s->rows = (kvb_rows){0, 0};
        for (uint32_t l = 0; s->in_place && l < nl; l++) {
            if (!k[l] || !v[l])
                return kvb_rd_err(r, KVB_ERR_USAGE, "chunk %u of %u: on_dest gave no rows for layer %u", i,
                               r->m->n_chunks, l);
            s->sec[2 * l] = k[l];
            s->sec[2 * l + 1] = v[l];
        }
    }
    if (s->decode && !s->in_place) {
        size_t secn = (size_t)(sec->t1 - sec->t0) * r->m->kv_dim; /* the parser bounded the chunk */
        size_t outb = 2 * kvb_chunk_values(nl, sec->t1 - sec->t0, r->m->kv_dim);
        if (s->out_cap < outb) {
            kvb_big_free(s->out, s->out_cap);
            s->out = kvb_big_alloc(outb, &s->out_cap);
        }
        if (!s->out)
            return kvb_rd_err(r, KVB_ERR_NOMEM, "chunk %u of %u: out of memory", i, r->m->n_chunks);
        for (uint32_t j = 0; j < 2 * nl; j++)
            s->sec[j] = s->out + j * secn;
    }
    s->in_len = 0;
    s->data = NULL;
    s->borrowed = 0;
    s->pread = 0;
    s->read_s = 0;
    r->cur = s;
    return KVB_OK;
}

uint64_t kvb_rd_longest_chunk(const kvb_manifest *m)
{
    uint64_t len = 0;
    for (uint32_t i = 0; i < m->n_chunks; i++)
        len = m->chunks[i].length > len ? m->chunks[i].length : len;
    return len;
}

void kvb_reader_reserve(const kvb_manifest *m, int n_threads, int flags)
{
    enum { MAX_BUFS = 2 * (MAX_THREADS + 2) + 2 * MAX_THREADS };
    const int workers = pool_workers(n_threads, m->n_chunks), nslots = workers ? (int)ring_slots(workers) : 1;
    const int in_place = flags & KVB_RESERVE_IN_PLACE;
    const int pieces = in_place && flags & KVB_RESERVE_FILE && kvb_rd_f16_pieces(m);
    const uint32_t t = m->n_chunks > 1 ? m->chunk_tokens : m->n_tokens;
    const uint64_t in = pieces ? 0 : kvb_rd_longest_chunk(m);
    const uint64_t out = in_place ? 0 : 2 * kvb_chunk_values(m->n_layer, t, m->kv_dim);
    const uint64_t scr = kvb_decode_scratch_bytes(m->codec, m->n_layer, t, m->kv_dim);
    const int nscr = workers ? workers : 1; /* threads that decode, each with its own buffers */
    const uint64_t piece = pieces ? KVB_RD_PIECE_BYTES : 0;
    kvc_leaf_reserve(nscr);
    if (nslots * (in + out) + nscr * (scr + piece) > KVB_KEEP_BYTES)
        return;
    void *p[MAX_BUFS];
    size_t cap[MAX_BUFS];
    int n = 0;
    for (int i = 0; i < nslots; i++) {
        if (in)
            p[n] = kvb_big_alloc(in, &cap[n]), n++;
        if (out)
            p[n] = kvb_big_alloc(out, &cap[n]), n++;
    }
    for (int i = 0; i < nscr; i++) {
        if (scr)
            p[n] = kvb_big_alloc(scr, &cap[n]), n++;
        if (piece)
            p[n] = kvb_big_alloc(piece, &cap[n]), n++;
    }
    for (int i = 0; i < n; i++)
        kvb_big_free(p[i], cap[i]);
}

/* A slot's own chunk buffer, allocated on first use for the longest chunk of the blob (the
 * manifest parser bounded each length by the codec's maximum for its chunk shape): stored
 * lengths vary, and growing a slot chunk by chunk mapped fresh memory each time. */
uint8_t *kvb_rd_slot_in(const kvb_manifest *m, slot *s)
{
    if (s->in_cap < m->chunks[s->index].length) {
        kvb_big_free(s->in, s->in_cap);
        s->in = kvb_big_alloc(kvb_rd_longest_chunk(m), &s->in_cap);
    }
    return s->in;
}

/* The current chunk's bytes go to its slot's own buffer. */
static kvb_status own_buffer(kvb_reader *r)
{
    slot *s = r->cur;
    if (!(s->data = kvb_rd_slot_in(r->m, s)))
        return kvb_rd_err(r, KVB_ERR_NOMEM, "chunk %u of %u: out of memory", s->index, r->m->n_chunks);
    return KVB_OK;
}

void kvb_rd_wait_caller(kvb_reader *r)
{
    pthread_mutex_lock(&r->mu);
    for (uint32_t i = 0; i < r->nslots; i++) {
        slot *s = &r->slots[i];
        if (!s->borrowed && !s->pread)
            continue; /* and a worker may be reading those flags: no writing them */
        while (s->state == S_QUEUED || s->state == S_RUNNING)
            if (!help(r))
                pthread_cond_wait(&r->cv_done, &r->mu);
        s->borrowed = 0;
        s->pread = 0;
    }
    pthread_mutex_unlock(&r->mu);
    r->borrowing = 0;
}

static void wait_borrowed(kvb_reader *r)
{
    if (r->borrowing)
        kvb_rd_wait_caller(r);
}

static void submit_chunk(kvb_reader *r)
{
    slot *s = r->cur;
    r->cur = NULL;
    if (r->nthreads == 0) {
        run_job(r, s, r->inline_ctx, &r->piece);
        s->state = S_DONE;
        r->next_submit++;
        r->next_run = r->next_submit;
        return;
    }
    pthread_mutex_lock(&r->mu);
    s->state = S_QUEUED;
    r->next_submit++;
    pthread_cond_signal(&r->cv_work);
    pthread_mutex_unlock(&r->mu);
}

/* ---- the byte-stream state machine ---- */

/* memcpy, except that bytes read straight into place (kvb_reader_buffer) stay where they are. */
static void put(uint8_t *dst, const uint8_t *src, size_t n)
{
    if (dst != src)
        memcpy(dst, src, n);
}

/* Padding done: the next section (token ids or chunk r->sec) starts at r->pos. */
void kvb_rd_enter_section(kvb_reader *r)
{
    r->phase = P_SECTION;
    r->sec_have = 0;
    if (r->sec >= 0)
        begin_chunk(r, (uint32_t)r->sec);
}

static kvb_status on_header(kvb_reader *r)
{
    char e[ERRLEN];
    kvb_status st = kvb_header_parse(r->hdr, &r->h, e, sizeof e);
    if (st)
        return kvb_rd_err(r, st, "%s", e);
    char kid[2 * KVC_KEYID_LEN + 1];
    kvc_hex(r->h.key_id, KVC_KEYID_LEN, kid);
    if (r->o.trust) {
        if ((st = kvb_trust_signer(r->o.trust, r->h.key_id, &r->signer, e, sizeof e)) != KVB_OK)
            return kvb_rd_err(r, st, "%s", e);
    } else if (r->o.key) {
        uint8_t want[KVC_KEYID_LEN];
        char wkid[2 * KVC_KEYID_LEN + 1];
        kvc_key_id(r->o.key, want);
        if (memcmp(want, r->h.key_id, KVC_KEYID_LEN) != 0)
            return kvb_rd_err(r, KVB_ERR_WRONG_KEY, "signed by key id %s, expected key id %s", kid,
                           kvc_hex(want, KVC_KEYID_LEN, wkid));
        r->signer = r->o.key;
    } else if (!r->o.skip_signature) {
        return kvb_rd_err(r, KVB_ERR_USAGE, "reader: no trust store or key to check the signature with");
    }
    r->prefix_len = KVB_HEADER_LEN + (size_t)r->h.manifest_len + KVC_SIG_LEN;
    r->prefix = malloc(r->prefix_len); /* manifest_len <= KVB_MAX_MANIFEST was checked */
    if (!r->prefix)
        return kvb_rd_err(r, KVB_ERR_NOMEM, "out of memory for a %u-byte manifest", r->h.manifest_len);
    memcpy(r->prefix, r->hdr, KVB_HEADER_LEN);
    r->phase = P_PREFIX;
    return KVB_OK;
}

static kvb_status on_prefix(kvb_reader *r)
{
    size_t signed_len = KVB_HEADER_LEN + r->h.manifest_len;
    char kid[2 * KVC_KEYID_LEN + 1];
    kvc_hex(r->h.key_id, KVC_KEYID_LEN, kid);
    if (r->signer && kvc_verify(r->signer, r->prefix, signed_len, r->prefix + signed_len) != KVC_OK)
        return kvb_rd_err(r, KVB_ERR_BAD_SIG, "signature does not verify over header+manifest (signer key id %s)", kid);
    char e[ERRLEN];
    kvb_status st = kvb_manifest_parse(r->prefix + KVB_HEADER_LEN, r->h.manifest_len, &r->m, e, sizeof e);
    if (st)
        return kvb_rd_err(r, st, "%s", e);
    if (r->o.decoded && (st = kvb_manifest_to_decoded(r->m, &r->h, e, sizeof e)) != KVB_OK)
        return kvb_rd_err(r, st, "%s", e);
    const kvb_manifest *m = r->m;
    const kvb_section *last = &m->chunks[m->n_chunks - 1];
    r->h.file_size = r->h.data_offset + last->offset + last->length;
    int64_t now = r->o.now ? r->o.now : (int64_t)time(NULL);
    if (r->o.now >= 0 && m->expires && now >= m->expires) {
        char a[32], b[32];
        return kvb_rd_err(r, KVB_ERR_EXPIRED, "blob expired at %s (now %s)", kvb_time_format(m->expires, a, sizeof a),
                       kvb_time_format(now, b, sizeof b));
    }
    if (r->o.on_manifest) {
        snprintf(e, sizeof e, "refused by the manifest callback");
        st = r->o.on_manifest(r->o.user, m, &r->h, e, sizeof e);
        if (st)
            return kvb_rd_err(r, st, "%s", e);
    }
    r->tokbuf = malloc(m->tokens.length);
    if (!r->tokbuf)
        return kvb_rd_err(r, KVB_ERR_NOMEM, "out of memory");
    if (start_pool(r))
        return r->st;
    r->phase = P_PAD;
    r->pad_to = r->h.data_offset;
    r->sec = -1;
    return KVB_OK;
}

kvb_status kvb_rd_section_done(kvb_reader *r)
{
    const kvb_manifest *m = r->m;
    if (r->sec < 0) {
        uint8_t h[KVC_SHA256_LEN];
        kvc_sha256(r->tokbuf, m->tokens.length, h);
        if (memcmp(h, m->tokens.sha256, KVC_SHA256_LEN) != 0)
            return kvb_rd_err(r, KVB_ERR_TOKENS_HASH, "token ids: sha256 mismatch");
        r->tokens = malloc(4ull * m->n_tokens);
        if (!r->tokens)
            return kvb_rd_err(r, KVB_ERR_NOMEM, "out of memory");
        for (uint32_t i = 0; i < m->n_tokens; i++)
            r->tokens[i] = (int32_t)kvb_le32(r->tokbuf + 4ull * i);
    } else {
        submit_chunk(r);
        while (deliver_one(r, 0) > 0) {
        }
        if (r->st)
            return r->st;
    }
    r->sec++;
    if ((uint64_t)r->sec >= m->n_chunks) {
        r->phase = P_DONE;
        return KVB_OK;
    }
    r->phase = P_PAD;
    r->pad_to = r->h.data_offset + m->chunks[r->sec].offset;
    return KVB_OK;
}

static const char *sec_name(const kvb_reader *r, char *buf, size_t n)
{
    if (r->phase == P_HEADER || r->phase == P_PREFIX)
        return r->phase == P_HEADER ? "the header" : "the manifest or signature";
    if (r->sec < 0)
        return "the token ids";
    snprintf(buf, n, "chunk %lld of %u", (long long)r->sec, r->m->n_chunks);
    return buf;
}

kvb_status kvb_reader_feed(kvb_reader *r, const void *data, size_t len, char *err, size_t errlen)
{
    const uint8_t *p = data;
    while (!r->st && len > 0) {
        size_t take = 0;
        kvb_status (*complete)(kvb_reader *) = NULL; /* the part take completes: handled once consumed */
        switch (r->phase) {
        case P_HEADER:
            take = KVB_HEADER_LEN - r->pos < len ? KVB_HEADER_LEN - r->pos : len;
            put(r->hdr + r->pos, p, take);
            if (r->pos + take == KVB_HEADER_LEN)
                complete = on_header;
            break;
        case P_PREFIX:
            take = r->prefix_len - r->pos < len ? r->prefix_len - r->pos : len;
            put(r->prefix + r->pos, p, take);
            if (r->pos + take == r->prefix_len)
                complete = on_prefix;
            break;
        case P_PAD:
            take = r->pad_to - r->pos < len ? (size_t)(r->pad_to - r->pos) : len;
            for (size_t i = 0; i < take; i++)
                if (p[i]) {
                    char msg[ERRLEN], nb[48];
                    snprintf(msg, sizeof msg, "padding byte at offset %llu before %s is not zero",
                             (unsigned long long)(r->pos + i), sec_name(r, nb, sizeof nb));
                    kvb_rd_feeder_fail(r, KVB_ERR_MALFORMED, msg);
                    break;
                }
            if (!r->st && r->pos + take == r->pad_to)
                kvb_rd_enter_section(r);
            break;
        case P_SECTION: {
            uint64_t slen = r->sec < 0 ? r->m->tokens.length : r->m->chunks[r->sec].length;
            take = slen - r->sec_have < len ? (size_t)(slen - r->sec_have) : len;
            if (r->sec < 0) {
                put(r->tokbuf + r->sec_have, p, take);
            } else {
                slot *s = r->cur;
                if (s->in_len == 0 && take == slen && !(s->in && p == s->in)) {
                    s->data = p; /* whole chunk in this piece: no copy */
                    s->borrowed = 1;
                    r->borrowing = 1;
                } else if (own_buffer(r) != KVB_OK) {
                    break;
                } else {
                    put(s->in + s->in_len, p, take);
                }
                s->in_len += take;
            }
            r->sec_have += take;
            if (r->sec_have == slen)
                complete = kvb_rd_section_done;
            break;
        }
        case P_DONE: {
            char msg[ERRLEN];
            snprintf(msg, sizeof msg, "trailing data: the blob ends at byte %llu but more bytes follow",
                     (unsigned long long)r->h.file_size);
            kvb_rd_feeder_fail(r, KVB_ERR_MALFORMED, msg);
            break;
        }
        }
        r->pos += take;
        p += take;
        len -= take;
        if (complete)
            complete(r);
    }
    wait_borrowed(r);
    return kvb_rd_ret(r, err, errlen);
}

kvb_status kvb_reader_buffer(kvb_reader *r, void **buf, size_t *len, char *err, size_t errlen)
{
    *buf = NULL;
    *len = 0;
    r->lent = NULL;
    if (r->st)
        return kvb_rd_ret(r, err, errlen);
    if (r->phase == P_PAD && r->pos == r->pad_to) {
        kvb_rd_enter_section(r); /* no padding: the section starts here */
        if (r->st)
            return kvb_rd_ret(r, err, errlen);
    }
    uint8_t *p = NULL;
    size_t n = 0;
    switch (r->phase) {
    case P_HEADER:
        p = r->hdr + r->pos;
        n = KVB_HEADER_LEN - r->pos;
        break;
    case P_PREFIX:
        p = r->prefix + r->pos;
        n = r->prefix_len - r->pos;
        break;
    case P_SECTION:
        if (r->sec < 0) {
            p = r->tokbuf + r->sec_have;
            n = r->m->tokens.length - r->sec_have;
        } else if (own_buffer(r) == KVB_OK) {
            p = r->cur->in + r->cur->in_len;
            n = r->m->chunks[r->sec].length - r->sec_have;
        }
        break;
    case P_PAD:
    case P_DONE:
        if (!r->stage && !(r->stage = malloc(STAGE))) {
            kvb_rd_err(r, KVB_ERR_NOMEM, "out of memory");
            break;
        }
        p = r->stage;
        n = r->phase == P_PAD && r->pad_to - r->pos < STAGE ? (size_t)(r->pad_to - r->pos) : STAGE;
        break;
    }
    if (r->st)
        return kvb_rd_ret(r, err, errlen);
    r->lent = p;
    r->lent_len = n;
    *buf = p;
    *len = n;
    return KVB_OK;
}

kvb_status kvb_reader_commit(kvb_reader *r, size_t n, char *err, size_t errlen)
{
    uint8_t *p = r->lent;
    if (r->st)
        return kvb_rd_ret(r, err, errlen);
    if (!p || n > r->lent_len) {
        kvb_rd_err(r, KVB_ERR_USAGE, "reader: commit of %zu bytes without a buffer of that size", n);
        return kvb_rd_ret(r, err, errlen);
    }
    r->lent = NULL;
    return kvb_reader_feed(r, p, n, err, errlen);
}

kvb_status kvb_reader_finish(kvb_reader *r, char *err, size_t errlen)
{
    if (!r->st && r->phase != P_DONE) {
        char msg[ERRLEN], nb[48];
        if (r->m)
            snprintf(msg, sizeof msg, "truncated: input ends at byte %llu inside %s; the blob is %llu bytes",
                     (unsigned long long)r->pos, sec_name(r, nb, sizeof nb), (unsigned long long)r->h.file_size);
        else
            snprintf(msg, sizeof msg, "truncated: input ends at byte %llu inside %s", (unsigned long long)r->pos,
                     sec_name(r, nb, sizeof nb));
        kvb_rd_feeder_fail(r, KVB_ERR_TRUNCATED, msg);
    }
    drain(r);
    return kvb_rd_ret(r, err, errlen);
}

/* ---- for kvb_read_file ---- */

kvb_manifest *kvb_reader_take_manifest(kvb_reader *r)
{
    if (!r->m)
        return NULL;
    stop_workers(r); /* after an error a job may still read r->m */
    kvb_manifest *m = r->m;
    r->m = NULL;
    return m;
}
