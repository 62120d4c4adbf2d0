/* test_kvblob_fast.c: the fast paths of format/ give the same bytes as the plain ones: writer
 * output identical whatever the thread count (add_layers and add_chunk), SIMD and scalar
 * (KVB_NO_SIMD=1) codecs identical on odd shapes, the row placement (kvb_copy_rows,
 * kvb_merge_planes) the same at every width and alignment, and zero-copy reading (kvb_reader_buffer /
 * commit, kvb_read_file) identical to kvb_reader_feed, errors included; a signed chunk whose
 * zstd frame is broken does not decode; freed big buffers are kept and reused, dirty, and
 * kvb_reader_reserve readies a reader's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "format/kvb_internal.h"
#include "format/kvblob.h"
#include "tests/unit/test_util.h"

typedef struct shape {
    uint32_t n_layer, n_head_kv, head_dim, n_tokens, chunk_tokens;
} shape;

/* odd sizes reach every SIMD tail; 16-multiples reach the vector q8/q4 rows; the last one has
 * a chunk big enough for the non-temporal merge */
static const shape shapes[] = {
    {2, 1, 3, 37, 5},
    {3, 2, 16, 100, 32},
    {1, 3, 8, 19, 19},
    {2, 8, 128, 131, 128},
};

static kvc_key *g_key;
static uint32_t rng = 777;
static uint32_t rnd(void)
{
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}

typedef struct data {
    shape s;
    uint32_t kv_dim;
    uint16_t **k, **v; /* n_layer arrays of (n_tokens, kv_dim) */
    int32_t *tok;
} data;

/* lossless codecs get every bit pattern (NaN, inf, subnormals); q8/q4 finite values */
static void make(data *d, const shape *s, int finite)
{
    d->s = *s;
    d->kv_dim = s->n_head_kv * s->head_dim;
    size_t nv = (size_t)s->n_tokens * d->kv_dim;
    d->k = calloc(s->n_layer, sizeof *d->k);
    d->v = calloc(s->n_layer, sizeof *d->v);
    for (uint32_t l = 0; l < s->n_layer; l++) {
        d->k[l] = malloc(nv * 2);
        d->v[l] = malloc(nv * 2);
        for (size_t i = 0; i < nv; i++) {
            uint16_t a = (uint16_t)rnd(), b = (uint16_t)rnd();
            if (finite) { /* exponent 1..24: finite, wide range */
                a = (uint16_t)((a & 0x83ff) | ((1 + rnd() % 24) << 10));
                b = (uint16_t)((b & 0x83ff) | ((1 + rnd() % 24) << 10));
            }
            d->k[l][i] = a;
            d->v[l][i] = b;
        }
    }
    d->tok = malloc(4ull * s->n_tokens);
    for (uint32_t i = 0; i < s->n_tokens; i++)
        d->tok[i] = (int32_t)(rnd() % 50000);
}

static void unmake(data *d)
{
    for (uint32_t l = 0; l < d->s.n_layer; l++) {
        free(d->k[l]);
        free(d->v[l]);
    }
    free(d->k);
    free(d->v);
    free(d->tok);
}

static void meta(kvb_manifest *m, const data *d, kvb_codec codec)
{
    memset(m, 0, sizeof *m);
    m->model_arch = "test";
    m->n_layer = d->s.n_layer;
    m->n_embd = 64;
    m->n_head = 4;
    m->n_head_kv = d->s.n_head_kv;
    m->head_dim = d->s.head_dim;
    m->rope_n_rot = d->s.head_dim;
    m->rope_freq_base = 10000.0;
    m->rope_freq_scale = 1.0;
    m->pos0 = 1;
    m->n_tokens = d->s.n_tokens;
    m->codec = codec;
    m->chunk_tokens = d->s.chunk_tokens;
    m->created = 1700000000;
    m->serial = 7;
}

static uint8_t *write_blob(const data *d, kvb_codec codec, int threads, size_t *len)
{
    kvb_manifest m;
    meta(&m, d, codec);
    kvb_write_opts wo = {0, threads, NULL};
    uint8_t *blob = NULL;
    char err[256] = "";
    kvb_status st = kvb_write(&m, d->tok, (const uint16_t *const *)d->k, (const uint16_t *const *)d->v, &wo, g_key,
                              NULL, &blob, len, err, sizeof err);
    if (st)
        fail_msg("write %s threads %d: %s", kvb_codec_name(codec), threads, err);
    return blob;
}

static char g_spill[64]; /* a temporary directory for spilled chunks */

/* The same blob through create + add_chunk (the publisher's path), chunks spilled to a
 * temporary file in spill_dir when it is not NULL. */
static uint8_t *write_by_chunks(const data *d, kvb_codec codec, int threads, const char *spill_dir, size_t *len)
{
    kvb_manifest m;
    meta(&m, d, codec);
    kvb_write_opts wo = {0, threads, spill_dir};
    kvb_writer *w = NULL;
    char err[256] = "";
    assert_int_equal(kvb_writer_create(&m, d->tok, &wo, &w, err, sizeof err), KVB_OK);
    uint32_t ct = d->s.chunk_tokens, kvd = d->kv_dim;
    uint16_t *buf = malloc((size_t)d->s.n_layer * 2 * ct * kvd * 2);
    for (uint32_t t0 = 0; t0 < d->s.n_tokens; t0 += ct) {
        uint32_t n = d->s.n_tokens - t0 < ct ? d->s.n_tokens - t0 : ct;
        for (uint32_t l = 0; l < d->s.n_layer; l++) {
            memcpy(buf + (size_t)(2 * l) * n * kvd, d->k[l] + (size_t)t0 * kvd, (size_t)n * kvd * 2);
            memcpy(buf + (size_t)(2 * l + 1) * n * kvd, d->v[l] + (size_t)t0 * kvd, (size_t)n * kvd * 2);
        }
        /* the caller may reuse its buffer at once: scribble over it after each add */
        assert_int_equal(kvb_writer_add_chunk(w, buf, n, err, sizeof err), KVB_OK);
        memset(buf, 0xa5, (size_t)d->s.n_layer * 2 * ct * kvd * 2);
    }
    free(buf);
    uint8_t *blob = NULL;
    assert_int_equal(kvb_writer_finish_mem(w, g_key, &blob, len, err, sizeof err), KVB_OK);
    kvb_writer_free(w);
    return blob;
}

/* ---- reading into one (n_layer, 2, n_tokens, kv_dim) array ---- */

typedef struct sink {
    const data *d;
    uint16_t *kv;
    uint32_t next;
} sink;

static kvb_status collect(void *user, const kvb_chunk *c, char *err, size_t errlen)
{
    sink *s = user;
    const data *d = s->d;
    assert_int_equal(c->index, s->next);
    s->next++;
    size_t n = c->t1 - c->t0, row = d->kv_dim;
    for (uint32_t l = 0; l < c->n_layer; l++) {
        memcpy(s->kv + ((size_t)(2 * l) * d->s.n_tokens + c->t0) * row, kvb_chunk_k(c, l), n * row * 2);
        memcpy(s->kv + ((size_t)(2 * l + 1) * d->s.n_tokens + c->t0) * row, kvb_chunk_v(c, l), n * row * 2);
    }
    (void)err;
    (void)errlen;
    return KVB_OK;
}

enum mode { FEED_WHOLE, FEED_RANDOM, DIRECT, MIXED };

/* Options that check the signature with g_key and hand each chunk to on_chunk(user). */
static kvb_read_opts opts_for(int threads, kvb_status (*on_chunk)(void *, const kvb_chunk *, char *, size_t),
                              void *user)
{
    kvb_read_opts o;
    memset(&o, 0, sizeof o);
    o.key = g_key;
    o.n_threads = threads;
    o.on_chunk = on_chunk;
    o.user = user;
    return o;
}

/* Reads blob with mode and threads into *out (malloc'd). */
static kvb_status read_blob(const data *d, const uint8_t *blob, size_t len, enum mode mode, int threads,
                            uint16_t **out, char *err, size_t errlen)
{
    size_t nv = (size_t)d->s.n_layer * 2 * d->s.n_tokens * d->kv_dim;
    sink s = {d, calloc(nv ? nv : 1, 2), 0};
    kvb_read_opts o = opts_for(threads, collect, &s);
    kvb_reader *r = kvb_reader_create(&o);
    assert_non_null(r);
    kvb_status st = KVB_OK;
    size_t off = 0;
    while (!st && off < len) {
        size_t n = mode == FEED_WHOLE ? len - off : 1 + rnd() % 300;
        if (n > len - off)
            n = len - off;
        if (mode == DIRECT || (mode == MIXED && rnd() % 2)) {
            void *buf;
            size_t cap;
            st = kvb_reader_buffer(r, &buf, &cap, err, errlen);
            if (st)
                break;
            assert_true(cap > 0);
            if (mode == DIRECT && rnd() % 4 == 0)
                n = cap; /* fill it all */
            if (n > cap)
                n = cap;
            memcpy(buf, blob + off, n);
            st = kvb_reader_commit(r, n, err, errlen);
        } else {
            st = kvb_reader_feed(r, blob + off, n, err, errlen);
        }
        off += n;
    }
    if (!st)
        st = kvb_reader_finish(r, err, errlen);
    kvb_reader_free(r);
    *out = s.kv;
    return st;
}

/* The input values in the decoded layout. */
static uint16_t *expected(const data *d)
{
    size_t nv = (size_t)d->s.n_tokens * d->kv_dim;
    uint16_t *e = malloc(2 * nv * d->s.n_layer * 2);
    for (uint32_t l = 0; l < d->s.n_layer; l++) {
        memcpy(e + (size_t)(2 * l) * nv, d->k[l], nv * 2);
        memcpy(e + (size_t)(2 * l + 1) * nv, d->v[l], nv * 2);
    }
    return e;
}

/* Reads blob with threads workers and checks the decoded values against d (lossless codecs). */
static void read_exact(const data *d, const uint8_t *blob, size_t len, int threads)
{
    char err[256];
    uint16_t *got = NULL, *want = expected(d);
    if (read_blob(d, blob, len, FEED_RANDOM, threads, &got, err, sizeof err))
        fail_msg("threads %d: %s", threads, err);
    assert_memory_equal(got, want, (size_t)d->s.n_layer * 2 * d->s.n_tokens * d->kv_dim * 2);
    free(got);
    free(want);
}

/* Freed big buffers are kept for the next allocations (their bytes as they were), within
 * KVB_KEEP_BYTES; kvb_reader_reserve keeps what a reader will take; and readers decode the
 * same values from kept, dirty buffers as from fresh ones. Under ASan nothing is kept
 * (malloc, whose bounds it checks): only the reading part runs. */
static void test_kept_buffers(void **st)
{
    (void)st;
    kvb_buffers_release();
    assert_int_equal(kvb_buffers_kept(), 0);
    size_t ca, cb, cc;
    uint8_t *a = kvb_big_alloc(3u << 20, &ca);
    assert_non_null(a);
    assert_true(ca >= 3u << 20);
    memset(a, 0x5a, ca);
    kvb_big_free(a, ca);
    const int keeps = kvb_buffers_kept() == ca;
    if (keeps) {
        uint8_t *b = kvb_big_alloc(2u << 20, &cb); /* at least half of the kept one: reused */
        assert_ptr_equal(b, a);
        assert_int_equal(cb, ca);
        assert_int_equal(b[ca - 1], 0x5a);
        assert_int_equal(kvb_buffers_kept(), 0);
        uint8_t *c = kvb_big_alloc(64u << 10, &cc); /* far smaller: a buffer of its own */
        assert_ptr_not_equal(c, b);
        assert_true(cc >= 64u << 10 && cc < 2u << 20);
        kvb_big_free(c, cc);
        kvb_big_free(b, cb);
        void *p[24];
        size_t cp[24];
        for (int i = 0; i < 24; i++)
            assert_non_null(p[i] = kvb_big_alloc(15u << 20, &cp[i]));
        for (int i = 0; i < 24; i++)
            kvb_big_free(p[i], cp[i]);
        assert_true(kvb_buffers_kept() > 0 && kvb_buffers_kept() <= KVB_KEEP_BYTES);
    } else {
        printf("kvb_big_alloc keeps nothing in this build (ASan): reading part only\n");
    }
    /* kept buffers full of 0xff (f16 NaN): decoding must not rely on zeroed memory */
    kvb_buffers_release();
    for (size_t n = 4096; n <= (8u << 20); n *= 2) {
        size_t cn;
        uint8_t *q = kvb_big_alloc(n, &cn);
        assert_non_null(q);
        memset(q, 0xff, cn);
        kvb_big_free(q, cn);
    }
    static const kvb_codec lossless[] = {KVB_CODEC_F16, KVB_CODEC_F16_ZSTD};
    for (size_t ci = 0; ci < 2; ci++) {
        data d;
        make(&d, &shapes[3], 0);
        size_t len;
        uint8_t *blob = write_blob(&d, lossless[ci], 0, &len);
        read_exact(&d, blob, len, 1);
        read_exact(&d, blob, len, 3);
        /* reserve for 3 workers, decoding into the reader's own buffers: 4 slots of stored and
         * decoded bytes and 3 decode scratches (none for f16) are kept, then taken */
        kvb_manifest *m = NULL;
        char err[256];
        assert_int_equal(kvb_peek(blob, len, g_key, NULL, &m, err, sizeof err), KVB_OK);
        kvb_buffers_release();
        kvb_reader_reserve(m, 3, 0);
        uint64_t longest = 0;
        for (uint32_t i = 0; i < m->n_chunks; i++)
            longest = m->chunks[i].length > longest ? m->chunks[i].length : longest;
        const uint64_t out = 2ull * m->n_layer * 2 * m->chunk_tokens * m->kv_dim;
        const uint64_t scr = lossless[ci] == KVB_CODEC_F16 ? 0 : out / 2;
        if (keeps)
            assert_true(kvb_buffers_kept() >= 4 * (longest + out) + 3 * scr);
        read_exact(&d, blob, len, 3);
        /* read from a file into on_dest's rows: f16 chunks go piece by piece and take no
         * chunk buffer, only each worker's piece buffer (32 leaves, in a 2 MiB page); f16-zstd
         * chunks still take theirs, one per slot */
        kvb_buffers_release();
        kvb_reader_reserve(m, 3, KVB_RESERVE_IN_PLACE | KVB_RESERVE_FILE);
        if (keeps && lossless[ci] == KVB_CODEC_F16)
            assert_int_equal(kvb_buffers_kept(), 3 * (2u << 20));
        else if (keeps)
            assert_true(kvb_buffers_kept() >= 4 * longest + 3 * scr);
        kvb_manifest_free(m);
        free(blob);
        unmake(&d);
    }
}

static void test_writer_threads_same_bytes(void **st)
{
    (void)st;
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
        for (int c = 0; c < KVB_CODEC_COUNT; c++) {
            data d;
            make(&d, &shapes[si], c == KVB_CODEC_Q8 || c == KVB_CODEC_Q4);
            size_t l1, ln;
            uint8_t *b1 = write_blob(&d, (kvb_codec)c, 1, &l1);
            int threads[] = {2, 3, 0};
            for (size_t t = 0; t < 3; t++) {
                uint8_t *bn = write_blob(&d, (kvb_codec)c, threads[t], &ln);
                assert_int_equal(ln, l1);
                assert_memory_equal(bn, b1, l1);
                free(bn);
                for (int sp = 0; sp < 2; sp++) {
                    bn = write_by_chunks(&d, (kvb_codec)c, threads[t], sp ? g_spill : NULL, &ln);
                    assert_int_equal(ln, l1);
                    assert_memory_equal(bn, b1, l1);
                    free(bn);
                }
            }
            free(b1);
            unmake(&d);
        }
}

/* A writer of d on `threads` threads under a 40000-byte file size limit, in a child process;
 * it reports "STATUS MESSAGE" to fd. */
typedef struct spill_job {
    const kvb_manifest *m;
    const data *d;
    int threads;
} spill_job;

static void spill_child(int fd, void *arg)
{
    const spill_job *j = arg;
    char err[256] = "";
    kvb_writer *w = NULL;
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {40000, 40000}; /* chunk 0 is 1 MiB, chunk 1 24 KiB */
    setrlimit(RLIMIT_FSIZE, &rl);
    kvb_write_opts so = {0, j->threads, g_spill};
    kvb_status s2 = kvb_writer_create(j->m, j->d->tok, &so, &w, err, sizeof err);
    if (!s2)
        s2 = kvb_writer_add_layers(w, (const uint16_t *const *)j->d->k, (const uint16_t *const *)j->d->v, err,
                                   sizeof err);
    uint8_t *blob = NULL;
    size_t len = 0;
    if (!s2)
        s2 = kvb_writer_finish_mem(w, g_key, &blob, &len, err, sizeof err);
    kvb_writer_free(w);
    free(blob);
    dprintf(fd, "%d %s", (int)s2, err);
    _exit(0);
}

/* Spilling fails cleanly: a spill directory that cannot hold a file is refused at create, and
 * a spill file that cannot grow (RLIMIT_FSIZE, in a child process) fails the writer with one
 * line naming the chunk; the spill directory is left empty either way. */
static void test_writer_spill_failures(void **st)
{
    (void)st;
    data d;
    make(&d, &shapes[3], 0);
    kvb_manifest m;
    meta(&m, &d, KVB_CODEC_F16);
    char err[256] = "";
    kvb_writer *w = NULL;
    kvb_write_opts wo = {0, 1, "/nonexistent/kvpub-spill"};
    assert_int_equal(kvb_writer_create(&m, d.tok, &wo, &w, err, sizeof err), KVB_ERR_IO);
    assert_null(w);
    assert_non_null(strstr(err, "cannot create a temporary file in /nonexistent/kvpub-spill"));
    for (int threads = 1; threads <= 3; threads += 2) {
        spill_job job = {&m, &d, threads};
        char got[300];
        int status = tu_run_child(spill_child, &job, got, sizeof got);
        assert_true(got[0] && WIFEXITED(status));
        if (atoi(got) != KVB_ERR_IO || !strstr(got, "cannot spill chunk 0 to a temporary file in") ||
            !strstr(got, "File too large"))
            fail_msg("%d threads: %s", threads, got);
    }
    DIR *dir = opendir(g_spill);
    assert_non_null(dir);
    int entries = 0;
    for (struct dirent *e; (e = readdir(dir)) != NULL;)
        entries += e->d_name[0] != '.';
    closedir(dir);
    assert_int_equal(entries, 0);
    unmake(&d);
}

static void test_simd_and_scalar_agree(void **st)
{
    (void)st;
    char err[256];
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
        for (int c = 0; c < KVB_CODEC_COUNT; c++) {
            data d;
            int lossy = c == KVB_CODEC_Q8 || c == KVB_CODEC_Q4;
            make(&d, &shapes[si], lossy);
            size_t ls, lv;
            setenv("KVB_NO_SIMD", "1", 1);
            uint8_t *bs = write_blob(&d, (kvb_codec)c, 2, &ls);
            uint16_t *ds = NULL, *dv = NULL;
            assert_int_equal(read_blob(&d, bs, ls, FEED_WHOLE, 1, &ds, err, sizeof err), KVB_OK);
            unsetenv("KVB_NO_SIMD");
            uint8_t *bv = write_blob(&d, (kvb_codec)c, 2, &lv);
            assert_int_equal(lv, ls);
            assert_memory_equal(bv, bs, ls);
            assert_int_equal(read_blob(&d, bv, lv, FEED_WHOLE, 1, &dv, err, sizeof err), KVB_OK);
            size_t bytes = (size_t)d.s.n_layer * 2 * d.s.n_tokens * d.kv_dim * 2;
            assert_memory_equal(dv, ds, bytes);
            if (!lossy) {
                uint16_t *e = expected(&d);
                assert_memory_equal(dv, e, bytes);
                free(e);
            }
            free(ds);
            free(dv);
            free(bs);
            free(bv);
            unmake(&d);
        }
}

/* kvb_copy_rows and kvb_merge_planes place rows of pieces where kvb_rows says, the same bytes
 * at every SIMD width (the copy's 64-byte streaming stores where the CPU has AVX-512,
 * KVB_NO_SIMD=avx512: AVX2's 32-byte ones, KVB_NO_SIMD=1: scalar), streamed or not, whatever
 * the destination's alignment (pieces whose heads end before, at and after a line), and touch
 * nothing else. */
static void test_rows_every_width(void **st)
{
    (void)st;
    static const struct {
        size_t rows, np, seg, gap;
    } cases[] = {{3, 8, 128, 0}, {2, 3, 40, 5}, {4, 2, 7, 1}, {1, 1, 300, 0}, {5, 4, 33, 2}, {2, 2, 16, 0}};
    static const char *const levels[] = {NULL, "avx512", "1"};
    enum { GUARD = 96 };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const size_t rows = cases[ci].rows, np = cases[ci].np, seg = cases[ci].seg;
        const size_t ss = rows * seg + cases[ci].gap, n = rows * np * seg, span = (np - 1) * ss + rows * seg;
        uint8_t *src = malloc(2 * n), *lo = malloc(n), *hi = malloc(n);
        uint16_t *want = malloc(2 * (span + 2 * GUARD)), *got = malloc(2 * (span + 2 * GUARD) + 128);
        assert_non_null(src);
        assert_non_null(lo);
        assert_non_null(hi);
        assert_non_null(want);
        assert_non_null(got);
        for (size_t i = 0; i < n; i++) {
            const uint16_t v = (uint16_t)(i * 40503u + ci * 7u);
            src[2 * i] = lo[i] = (uint8_t)v;
            src[2 * i + 1] = hi[i] = (uint8_t)(v >> 8);
        }
        /* expected: the guard value everywhere but the pieces */
        for (size_t i = 0; i < span + 2 * GUARD; i++)
            want[i] = 0xdead;
        for (size_t r = 0; r < rows; r++)
            for (size_t p = 0; p < np; p++)
                for (size_t e = 0; e < seg; e++) {
                    const size_t i = (r * np + p) * seg + e;
                    want[GUARD + p * ss + r * seg + e] = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
                }
        for (size_t li = 0; li < sizeof levels / sizeof *levels; li++) {
            if (levels[li])
                setenv("KVB_NO_SIMD", levels[li], 1);
            else
                unsetenv("KVB_NO_SIMD");
            for (size_t off = 0; off < 64; off += 2) /* destination byte offsets from a line */
                for (int big = 0; big <= 1; big++)
                    for (int merge = 0; merge <= 1; merge++) {
                        uint16_t *x = (uint16_t *)(((uintptr_t)got + 63) / 64 * 64 + off);
                        for (size_t i = 0; i < span + 2 * GUARD; i++)
                            x[i] = 0xdead;
                        if (merge)
                            kvb_merge_planes(lo, hi, rows, np, seg, ss, x + GUARD, big);
                        else
                            kvb_copy_rows(src, rows, np, seg, ss, x + GUARD, big);
                        if (memcmp(x, want, 2 * (span + 2 * GUARD)) != 0)
                            fail_msg("case %zu, %s, offset %zu, big %d, %s: wrong bytes", ci,
                                     levels[li] ? levels[li] : "widest", off, big, merge ? "merge" : "copy");
                    }
        }
        unsetenv("KVB_NO_SIMD");
        free(src);
        free(lo);
        free(hi);
        free(want);
        free(got);
    }
}

static void test_zero_copy_reading(void **st)
{
    (void)st;
    char err[256], e2[256];
    for (int c = 0; c < KVB_CODEC_COUNT; c++) {
        data d;
        int lossy = c == KVB_CODEC_Q8 || c == KVB_CODEC_Q4;
        make(&d, &shapes[1], lossy);
        size_t len;
        uint8_t *blob = write_blob(&d, (kvb_codec)c, 0, &len);
        size_t bytes = (size_t)d.s.n_layer * 2 * d.s.n_tokens * d.kv_dim * 2;
        uint16_t *ref = NULL;
        assert_int_equal(read_blob(&d, blob, len, FEED_WHOLE, 1, &ref, err, sizeof err), KVB_OK);
        enum mode modes[] = {FEED_WHOLE, FEED_RANDOM, DIRECT, MIXED};
        for (size_t mi = 0; mi < 4; mi++)
            for (int threads = 1; threads <= 3; threads += 2) {
                uint16_t *got = NULL;
                kvb_status s = read_blob(&d, blob, len, modes[mi], threads, &got, err, sizeof err);
                if (s)
                    fail_msg("%s mode %zu threads %d: %s", kvb_codec_name((kvb_codec)c), mi, threads, err);
                assert_memory_equal(got, ref, bytes);
                free(got);
            }
        /* kvb_read_file reads straight into the reader's buffers */
        char path[] = "/tmp/test_kvblob_fast_XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, blob, len), (ssize_t)len);
        close(fd);
        size_t nv = bytes / 2;
        sink s = {&d, calloc(nv, 2), 0};
        kvb_read_opts o = opts_for(2, collect, &s);
        kvb_manifest *m = NULL;
        assert_int_equal(kvb_read_file(path, &o, &m, NULL, err, sizeof err), KVB_OK);
        assert_non_null(m);
        assert_int_equal(m->n_tokens, d.s.n_tokens);
        kvb_manifest_free(m);
        assert_memory_equal(s.kv, ref, bytes);
        free(s.kv);
        /* the same failure, the same message, whichever way the bytes came */
        blob[len - 2] ^= 0x40;
        fd = open(path, O_WRONLY | O_TRUNC);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, blob, len), (ssize_t)len);
        close(fd);
        uint16_t *got = NULL;
        assert_int_equal(read_blob(&d, blob, len, FEED_WHOLE, 3, &got, err, sizeof err), KVB_ERR_CHUNK_HASH);
        free(got);
        assert_int_equal(read_blob(&d, blob, len, DIRECT, 1, &got, e2, sizeof e2), KVB_ERR_CHUNK_HASH);
        free(got);
        assert_string_equal(err, e2);
        memset(&o, 0, sizeof o);
        o.key = g_key;
        assert_int_equal(kvb_read_file(path, &o, NULL, NULL, e2, sizeof e2), KVB_ERR_CHUNK_HASH);
        assert_string_equal(err, e2);
        assert_string_equal(err, "chunk 3 of 4: sha256 mismatch");
        /* a failure after the manifest still hands it over, with the pool still running */
        o.n_threads = 3;
        assert_int_equal(kvb_read_file(path, &o, &m, NULL, e2, sizeof e2), KVB_ERR_CHUNK_HASH);
        assert_non_null(m);
        assert_int_equal(m->n_chunks, 4);
        kvb_manifest_free(m);
        unlink(path);
        free(ref);
        free(blob);
        unmake(&d);
    }
    /* commit without a buffer is a usage error (sticky) */
    kvb_read_opts o;
    memset(&o, 0, sizeof o);
    o.key = g_key;
    kvb_reader *r = kvb_reader_create(&o);
    assert_int_equal(kvb_reader_commit(r, 1, err, sizeof err), KVB_ERR_USAGE);
    assert_int_equal(kvb_reader_feed(r, "x", 1, err, sizeof err), KVB_ERR_USAGE);
    kvb_reader_free(r);
}

/* Threads of this process, from /proc/self/task. */
static int task_count(void)
{
    DIR *dir = opendir("/proc/self/task");
    int n = 0;
    assert_non_null(dir);
    for (struct dirent *e; (e = readdir(dir)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(dir);
    return n;
}

typedef struct counting_sink {
    sink s;
    int most; /* the most threads seen during a delivery */
} counting_sink;

static kvb_status collect_counting(void *user, const kvb_chunk *c, char *err, size_t errlen)
{
    counting_sink *cs = user;
    const int n = task_count();
    cs->most = n > cs->most ? n : cs->most;
    return collect(&cs->s, c, err, errlen);
}

/* The caller's thread is one of a reader's n_threads: it runs queued chunks while it waits
 * for the oldest, so the reader starts n_threads - 1 workers (idle, it left the two workers it
 * had just started to share one core for their first chunks). Every way of feeding, every
 * thread count, the same values, in order. */
static void test_caller_is_one_of_the_threads(void **st)
{
    (void)st;
    char err[256];
    data d;
    make(&d, &shapes[3], 0);
    size_t len;
    uint8_t *blob = write_blob(&d, KVB_CODEC_F16, 0, &len);
    const size_t bytes = (size_t)d.s.n_layer * 2 * d.s.n_tokens * d.kv_dim * 2;
    uint16_t *want = expected(&d);
    char path[] = "/tmp/test_kvblob_fast_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, blob, len), (ssize_t)len);
    close(fd);
    const int before = task_count();
    for (int threads = 2; threads <= 4; threads++) {
        counting_sink cs = {{&d, calloc(bytes / 2, 2), 0}, 0};
        kvb_read_opts o = opts_for(threads, collect_counting, &cs);
        assert_int_equal(kvb_read_file(path, &o, NULL, NULL, err, sizeof err), KVB_OK);
        assert_int_equal(cs.s.next, 2); /* both chunks, in order (collect checks) */
        assert_int_equal(cs.most, before + threads - 1);
        assert_memory_equal(cs.s.kv, want, bytes);
        free(cs.s.kv);
        for (int mode = FEED_WHOLE; mode <= MIXED; mode++) {
            uint16_t *got = NULL;
            if (read_blob(&d, blob, len, (enum mode)mode, threads, &got, err, sizeof err))
                fail_msg("mode %d threads %d: %s", mode, threads, err);
            assert_memory_equal(got, want, bytes);
            free(got);
        }
    }
    unlink(path);
    free(want);
    free(blob);
    unmake(&d);
}

/* A hash-valid, correctly signed f16-zstd chunk whose zstd frame is broken does not decode:
 * change a stored byte, put the new chunk digest in the manifest (same length) and sign again. */
static void test_signed_chunk_that_does_not_decode(void **st)
{
    (void)st;
    data d;
    make(&d, &shapes[1], 0);
    size_t len;
    uint8_t *blob = write_blob(&d, KVB_CODEC_F16_ZSTD, 2, &len);
    kvb_manifest *m = NULL;
    kvb_header h;
    char err[256];
    assert_int_equal(kvb_peek(blob, len, g_key, &h, &m, err, sizeof err), KVB_OK);
    const kvb_section *c1 = &m->chunks[1];
    uint8_t *chunk = blob + h.data_offset + c1->offset;
    char oldhex[65], newhex[65];
    kvc_hex(c1->sha256, 32, oldhex);
    chunk[0] ^= 0xff; /* zstd magic: no frame */
    uint8_t sha[32];
    kvc_leaf_digest(chunk, c1->length, sha);
    kvc_hex(sha, 32, newhex);
    char *json = (char *)blob + KVB_HEADER_LEN;
    char *at = memmem(json, h.manifest_len, oldhex, 64);
    assert_non_null(at);
    memcpy(at, newhex, 64);
    assert_int_equal(kvc_sign(g_key, blob, KVB_HEADER_LEN + h.manifest_len, blob + KVB_HEADER_LEN + h.manifest_len),
                     KVC_OK);
    uint16_t *got = NULL;
    assert_int_equal(read_blob(&d, blob, len, FEED_RANDOM, 3, &got, err, sizeof err), KVB_ERR_DECODE);
    free(got);
    assert_string_equal(err, "chunk 1 of 4: zstd frame declares -1 bytes, expected 6144");
    assert_int_equal(kvb_exit_code(KVB_ERR_DECODE), 3);
    kvb_manifest_free(m);
    free(blob);
    unmake(&d);
}

static int setup(void **s)
{
    (void)s;
    g_key = kvc_key_generate();
    snprintf(g_spill, sizeof g_spill, "/tmp/kvb-spill.XXXXXX");
    return g_key && mkdtemp(g_spill) ? 0 : -1;
}

static int teardown(void **s)
{
    (void)s;
    kvc_key_free(g_key);
    rmdir(g_spill);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writer_threads_same_bytes),
        cmocka_unit_test(test_writer_spill_failures),
        cmocka_unit_test(test_simd_and_scalar_agree),
        cmocka_unit_test(test_rows_every_width),
        cmocka_unit_test(test_zero_copy_reading),
        cmocka_unit_test(test_caller_is_one_of_the_threads),
        cmocka_unit_test(test_signed_chunk_that_does_not_decode),
        cmocka_unit_test(test_kept_buffers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
