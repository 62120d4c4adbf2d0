/* test_kvblob.c: format/ round trips for every codec, streaming in random pieces, the tamper
 * matrix (each case asserting its specific status and message), writer misuse, f16 and time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base.h"
#include "format/kvblob.h"
#include "tests/unit/test_util.h"

enum { NL = 3, NKV = 2, HD = 16, KVD = NKV * HD, NT = 100, CT = 32, NCH = 4 };

static kvc_key *g_key, *g_other;
static uint16_t g_k[NL][NT * KVD], g_v[NL][NT * KVD];
static int32_t g_tok[NT];
static const uint16_t *g_kp[NL], *g_vp[NL]; /* per-layer rows of g_k / g_v, as kvb_write takes them */

/* Independent of format/: IEEE half -> double, used to check decoded values. */
static double h2d(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

static uint32_t rng_state = 12345;
static uint32_t rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return rng_state >> 8;
}

static void make_data(void)
{
    for (int l = 0; l < NL; l++)
        for (int t = 0; t < NT; t++)
            for (int c = 0; c < KVD; c++) {
                /* smooth per-channel structure plus noise, like real K/V; a few outlier channels */
                double s = (1 + c % 5) * (c == 7 ? 20.0 : 1.0);
                double n = ((double)(rnd() % 2001) - 1000.0) / 10000.0;
                g_k[l][t * KVD + c] = base_f32_to_f16((float)(s * sin(0.05 * t + c + l) + n));
                g_v[l][t * KVD + c] = base_f32_to_f16((float)(0.5 * cos(0.03 * t * (c + 1)) + n));
            }
    for (int l = 0; l < NL; l++) {
        g_kp[l] = g_k[l];
        g_vp[l] = g_v[l];
    }
    for (int i = 0; i < NT; i++)
        g_tok[i] = (int32_t)(i * 31 + 7);
    g_tok[5] = -1; /* ids are opaque int32: negative values must survive too */
}

static void base_meta(kvb_manifest *m, kvb_codec codec)
{
    memset(m, 0, sizeof *m);
    memset(m->doc_sha256, 0xd0, 32);
    memset(m->model_fingerprint, 0xa1, 32);
    memset(m->tokenizer_fingerprint, 0x70, 32);
    m->doc_title = "Test \"document\" \xc3\xa9";
    m->doc_source_uri = "https://example.invalid/doc";
    m->doc_media_type = "text/markdown";
    m->doc_bytes = 4242;
    m->model_arch = "qwen3";
    m->n_layer = NL;
    m->n_embd = 128;
    m->n_head = 4;
    m->n_head_kv = NKV;
    m->head_dim = HD;
    m->rope_type = KVB_ROPE_NEOX;
    m->rope_n_rot = HD;
    m->rope_freq_base = 1000000.0;
    m->rope_freq_scale = 0.25;
    m->rope_scaling = KVB_SCALING_YARN;
    m->rope_n_ctx_orig = 32768;
    m->yarn_ext_factor = 1.5;
    m->yarn_attn_factor = 1.0;
    m->yarn_beta_fast = 32.0;
    m->yarn_beta_slow = 1.0;
    m->pos0 = 1;
    m->n_tokens = NT;
    m->codec = codec;
    m->chunk_tokens = CT;
    m->created = 1700000000;
    m->expires = 0;
    m->serial = 18446744073709551615ull; /* u64 max survives the JSON round trip */
}

static uint8_t *make_blob(kvb_codec codec, int64_t expires, size_t *len)
{
    kvb_manifest m;
    base_meta(&m, codec);
    m.expires = expires;
    uint8_t *blob = NULL;
    char err[256] = "";
    kvb_status st = kvb_write(&m, g_tok, g_kp, g_vp, NULL, g_key, NULL, &blob, len, err, sizeof err);
    if (st)
        fprintf(stderr, "write: %s\n", err);
    assert_int_equal(st, KVB_OK);
    return blob;
}

/* ---- a reader run that collects what it delivers ---- */

typedef struct got {
    uint16_t k[NL][NT * KVD], v[NL][NT * KVD];
    uint32_t next_chunk, chunks;
    int manifest_seen;
} got;

static kvb_status on_chunk(void *user, const kvb_chunk *c, char *err, size_t errlen)
{
    got *g = user;
    assert_int_equal(c->index, g->next_chunk); /* strictly in order */
    assert_int_equal(c->t0, c->index * CT);
    assert_int_equal(c->n_layer, NL);
    assert_int_equal(c->kv_dim, KVD);
    g->next_chunk++;
    g->chunks++;
    size_t n = c->t1 - c->t0;
    for (uint32_t l = 0; l < NL; l++) {
        memcpy(g->k[l] + (size_t)c->t0 * KVD, kvb_chunk_k(c, l), n * KVD * 2);
        memcpy(g->v[l] + (size_t)c->t0 * KVD, kvb_chunk_v(c, l), n * KVD * 2);
    }
    (void)err;
    (void)errlen;
    return KVB_OK;
}

static kvb_status on_manifest(void *user, const kvb_manifest *m, const kvb_header *h, char *err, size_t errlen)
{
    got *g = user;
    g->manifest_seen = 1;
    (void)m;
    (void)h;
    (void)err;
    (void)errlen;
    return KVB_OK;
}

/* read_blob's piece for: written to a file and read with kvb_reader_feed_fd, after the first
 * 100 bytes are fed from memory (a caller may start either way). */
enum { VIA_FILE = 1 << 30 };

/* Feeds blob in pieces (piece 0 = whole; <0 = random sizes up to -piece; VIA_FILE). */
static kvb_status read_blob(const uint8_t *blob, size_t len, kvb_read_opts *o, long piece, got *g,
                            char *err, size_t errlen, int32_t *tokens_out)
{
    if (g) {
        memset(g, 0, sizeof *g);
        o->on_chunk = on_chunk;
        o->on_manifest = on_manifest;
        o->user = g;
    }
    kvb_reader *r = kvb_reader_create(o);
    assert_non_null(r);
    kvb_status st = KVB_OK;
    size_t off = 0;
    if (piece == VIA_FILE) {
        char path[] = "/tmp/kvblob-fd-XXXXXX";
        const int fd = mkstemp(path);
        assert_true(fd >= 0);
        unlink(path);
        assert_int_equal(write(fd, blob, len), (ssize_t)len);
        off = len < 100 ? len : 100;
        st = kvb_reader_feed(r, blob, off, err, errlen);
        if (!st)
            st = kvb_reader_feed_fd(r, fd, err, errlen);
        close(fd);
        off = len;
    }
    while (!st && off < len) {
        size_t n = piece == 0 ? len : piece > 0 ? (size_t)piece : 1 + rnd() % (size_t)-piece;
        if (n > len - off)
            n = len - off;
        st = kvb_reader_feed(r, blob + off, n, err, errlen);
        off += n;
    }
    if (!st)
        st = kvb_reader_finish(r, err, errlen);
    if (tokens_out && kvb_reader_tokens(r))
        memcpy(tokens_out, kvb_reader_tokens(r), sizeof(int32_t) * NT);
    kvb_reader_free(r);
    return st;
}

static kvb_read_opts key_opts(int threads)
{
    kvb_read_opts o;
    memset(&o, 0, sizeof o);
    o.key = g_key;
    o.n_threads = threads;
    return o;
}

static got g_got; /* large: keep off the stack */

static void roundtrip_lossless(kvb_codec codec)
{
    size_t len;
    uint8_t *blob = make_blob(codec, 0, &len);
    int threads[] = {1, 3};
    for (int ti = 0; ti < 2; ti++) {
        char err[256] = "";
        int32_t tok[NT];
        kvb_read_opts o = key_opts(threads[ti]);
        kvb_status st = read_blob(blob, len, &o, 0, &g_got, err, sizeof err, tok);
        if (st)
            fprintf(stderr, "%s\n", err);
        assert_int_equal(st, KVB_OK);
        assert_int_equal(g_got.chunks, NCH);
        assert_true(g_got.manifest_seen);
        assert_memory_equal(g_got.k, g_k, sizeof g_k);
        assert_memory_equal(g_got.v, g_v, sizeof g_v);
        assert_memory_equal(tok, g_tok, sizeof tok);
    }
    free(blob);
}

static void test_roundtrip_f16(void **s) { (void)s; roundtrip_lossless(KVB_CODEC_F16); }
static void test_roundtrip_f16_zstd(void **s) { (void)s; roundtrip_lossless(KVB_CODEC_F16_ZSTD); }

/* spec/kvblob.md error bound: |x - x'| <= s/2 + 2^-11 |x'| + 2^-25 with s the stored scale, and
 * s <= maxabs/qmax * (1 + 2^-10) + 2^-24. The test derives maxabs from the input itself. */
static void roundtrip_lossy(kvb_codec codec, int qmax)
{
    size_t len;
    uint8_t *blob = make_blob(codec, 0, &len);
    char err[256] = "";
    kvb_read_opts o = key_opts(2);
    assert_int_equal(read_blob(blob, len, &o, 0, &g_got, err, sizeof err, NULL), KVB_OK);
    double worst = 0.0;
    for (int l = 0; l < NL; l++) {
        for (int c0 = 0; c0 < NT / CT + 1; c0++) {
            int t0 = c0 * CT, t1 = t0 + CT < NT ? t0 + CT : NT;
            for (int t = t0; t < t1; t++)
                for (int c = 0; c < KVD; c++) {
                    double kmax = 0, vmax = 0;
                    for (int u = t0; u < t1; u++) /* K: per channel within the chunk */
                        kmax = fmax(kmax, fabs(h2d(g_k[l][u * KVD + c])));
                    for (int d = 0; d < KVD; d++) /* V: per token */
                        vmax = fmax(vmax, fabs(h2d(g_v[l][t * KVD + d])));
                    double pairs[2][3] = {{h2d(g_k[l][t * KVD + c]), h2d(g_got.k[l][t * KVD + c]), kmax},
                                          {h2d(g_v[l][t * KVD + c]), h2d(g_got.v[l][t * KVD + c]), vmax}};
                    for (int w = 0; w < 2; w++) {
                        double x = pairs[w][0], y = pairs[w][1];
                        double sc = pairs[w][2] / qmax * (1 + ldexp(1, -10)) + ldexp(1, -24);
                        double bound = sc / 2 + ldexp(fabs(y), -11) + ldexp(1, -25);
                        if (fabs(x - y) > bound)
                            fail_msg("layer %d %s t %d c %d: |%g - %g| > %g", l, w ? "V" : "K", t, c, x, y, bound);
                        worst = fmax(worst, fabs(x - y) / sc);
                    }
                }
        }
    }
    /* the bound is not vacuous: errors do reach a good part of half a step */
    assert_true(worst > 0.2);
    assert_true(worst <= 0.5 + ldexp(qmax, -11) + 1e-2); /* half a step plus f16 rounding of x' */
    free(blob);
}

static void test_roundtrip_q8(void **s) { (void)s; roundtrip_lossy(KVB_CODEC_Q8, 127); }
static void test_roundtrip_q4(void **s) { (void)s; roundtrip_lossy(KVB_CODEC_Q4, 7); }

/* on_dest: chunks decode straight into the caller's rows (a KV cache's cells), here every
 * other chunk, on 1 and 3 threads, for every codec; the rest take the reader's buffer. */
typedef struct cache {
    uint16_t k[NL][NT * KVD], v[NL][NT * KVD];
    int null_row, in_place, copied;
    uint32_t seg; /* 0: rows one after another; else pieces of seg, each piece's cells together */
} cache;
static cache g_cache;

/* Where value j of row t goes in the cache's layout (the pieces of one cell range start at
 * row t0's place, seg_stride = NT * seg apart). */
static size_t cache_at(const cache *c, uint32_t t, uint32_t j)
{
    return c->seg ? (size_t)(j / c->seg) * NT * c->seg + (size_t)t * c->seg + j % c->seg : (size_t)t * KVD + j;
}

static int dest_rows(void *user, uint32_t index, uint32_t t0, uint32_t t1, uint16_t **k, uint16_t **v,
                     kvb_rows *rows)
{
    cache *c = user;
    (void)t1;
    if (index % 2)
        return 0;
    for (uint32_t l = 0; l < NL; l++) {
        k[l] = c->k[l] + cache_at(c, t0, 0);
        v[l] = c->null_row && l == NL - 1 ? NULL : c->v[l] + cache_at(c, t0, 0);
    }
    *rows = (kvb_rows){c->seg, (size_t)NT * c->seg};
    return 1;
}

static kvb_status dest_chunk(void *user, const kvb_chunk *ch, char *err, size_t errlen)
{
    cache *c = user;
    (void)err;
    (void)errlen;
    assert_int_equal(ch->in_place, ch->index % 2 == 0);
    size_t n = ch->t1 - ch->t0;
    for (uint32_t l = 0; l < NL; l++) {
        assert_ptr_equal(kvb_chunk_k(ch, l) == c->k[l] + cache_at(c, ch->t0, 0), ch->in_place);
        if (!ch->in_place)
            for (uint32_t t = 0; t < n; t++)
                for (uint32_t j = 0; j < KVD; j++) {
                    c->k[l][cache_at(c, ch->t0 + t, j)] = kvb_chunk_k(ch, l)[(size_t)t * KVD + j];
                    c->v[l][cache_at(c, ch->t0 + t, j)] = kvb_chunk_v(ch, l)[(size_t)t * KVD + j];
                }
    }
    c->in_place += ch->in_place;
    c->copied += !ch->in_place;
    return KVB_OK;
}

static void test_decode_in_place(void **s)
{
    (void)s;
    for (int codec = 0; codec < KVB_CODEC_COUNT; codec++) {
        size_t len;
        uint8_t *blob = make_blob((kvb_codec)codec, 0, &len);
        /* each layout on 1 and 3 threads: fed from memory, then from a file (kvb_reader_feed_fd,
         * where f16 chunks are copied to their rows as they are hashed) */
        for (int ti = 0; ti < 12; ti++) {
            const int k = ti % 6, threads = k % 2 ? 3 : 1;
            const long how = ti < 6 ? 0 : VIA_FILE;
            if (k >= 4) /* the head-piece layout again, through the scalar paths */
                setenv("KVB_NO_SIMD", "1", 1);
            char err[256] = "";
            kvb_read_opts o = key_opts(threads);
            kvb_status st = read_blob(blob, len, &o, 0, &g_got, err, sizeof err, NULL); /* reference */
            assert_int_equal(st, KVB_OK);
            memset(&g_cache, 0, sizeof g_cache);
            g_cache.seg = k < 2 ? 0 : KVD / 4; /* then as a cache keeping 4 heads apart */
            o = key_opts(threads);
            o.on_dest = dest_rows;
            o.on_chunk = dest_chunk;
            o.user = &g_cache;
            st = read_blob(blob, len, &o, how, NULL, err, sizeof err, NULL);
            if (st)
                fprintf(stderr, "%s\n", err);
            assert_int_equal(st, KVB_OK);
            assert_int_equal(g_cache.in_place, (NCH + 1) / 2);
            assert_int_equal(g_cache.copied, NCH / 2);
            for (uint32_t l = 0; l < NL; l++)
                for (uint32_t t = 0; t < NT; t++)
                    for (uint32_t j = 0; j < KVD; j++) {
                        assert_int_equal(g_cache.k[l][cache_at(&g_cache, t, j)], g_got.k[l][(size_t)t * KVD + j]);
                        assert_int_equal(g_cache.v[l][cache_at(&g_cache, t, j)], g_got.v[l][(size_t)t * KVD + j]);
                    }
            /* a destination without rows is the caller's mistake, named */
            const uint32_t seg = g_cache.seg;
            memset(&g_cache, 0, sizeof g_cache);
            g_cache.null_row = 1;
            st = read_blob(blob, len, &o, how, NULL, err, sizeof err, NULL);
            assert_int_equal(st, KVB_ERR_USAGE);
            assert_non_null(strstr(err, "on_dest gave no rows for layer"));
            /* so are pieces that do not divide a row */
            if (seg) {
                memset(&g_cache, 0, sizeof g_cache);
                g_cache.seg = KVD - 1;
                st = read_blob(blob, len, &o, how, NULL, err, sizeof err, NULL);
                assert_int_equal(st, KVB_ERR_USAGE);
                assert_non_null(strstr(err, "into pieces of"));
            }
            unsetenv("KVB_NO_SIMD");
        }
        free(blob);
    }
}

static void test_sizes_and_ratio(void **s)
{
    (void)s;
    size_t lf, lz, l8, l4;
    uint8_t *bf = make_blob(KVB_CODEC_F16, 0, &lf), *bz = make_blob(KVB_CODEC_F16_ZSTD, 0, &lz);
    uint8_t *b8 = make_blob(KVB_CODEC_Q8, 0, &l8), *b4 = make_blob(KVB_CODEC_Q4, 0, &l4);
    size_t raw = (size_t)NL * 2 * NT * KVD * 2;
    assert_true(lf > raw); /* raw KV plus token ids, manifest, padding */
    assert_true(lz < lf && l8 < lz && l4 < l8);
    kvb_manifest *m = NULL;
    char err[256];
    assert_int_equal(kvb_peek(bf, lf, g_key, NULL, &m, err, sizeof err), KVB_OK);
    assert_int_equal(m->raw_bytes, raw);
    assert_int_equal(m->stored_bytes, raw); /* f16 stores raw */
    kvb_manifest_free(m);
    free(bf);
    free(bz);
    free(b8);
    free(b4);
}

static void test_streaming_pieces(void **s)
{
    (void)s;
    for (int c = 0; c < KVB_CODEC_COUNT; c++) {
        size_t len;
        uint8_t *blob = make_blob((kvb_codec)c, 0, &len);
        char err[256];
        kvb_read_opts o = key_opts(1);
        assert_int_equal(read_blob(blob, len, &o, 0, &g_got, err, sizeof err, NULL), KVB_OK);
        static got whole;
        whole = g_got;
        long pieces[] = {1, 7, -50, -5000, 64};
        for (size_t p = 0; p < sizeof pieces / sizeof *pieces; p++) {
            int32_t tok[NT];
            o = key_opts(p % 2 ? 4 : 1);
            assert_int_equal(read_blob(blob, len, &o, pieces[p], &g_got, err, sizeof err, tok), KVB_OK);
            assert_memory_equal(g_got.k, whole.k, sizeof whole.k);
            assert_memory_equal(g_got.v, whole.v, sizeof whole.v);
            assert_memory_equal(tok, g_tok, sizeof tok);
        }
        /* a tampered blob fails with the same message whether whole or in pieces */
        blob[len - 3] ^= 0x10;
        char e1[256], e2[256];
        o = key_opts(1);
        assert_int_equal(read_blob(blob, len, &o, 0, NULL, e1, sizeof e1, NULL), KVB_ERR_CHUNK_HASH);
        o = key_opts(3);
        assert_int_equal(read_blob(blob, len, &o, -33, NULL, e2, sizeof e2, NULL), KVB_ERR_CHUNK_HASH);
        assert_string_equal(e1, e2);
        assert_string_equal(e1, "chunk 3 of 4: sha256 mismatch");
        free(blob);
    }
}

/* ---- tamper matrix ---- */

static uint64_t data_offset(const uint8_t *b)
{
    uint32_t ml = (uint32_t)b[16] | (uint32_t)b[17] << 8 | (uint32_t)b[18] << 16 | (uint32_t)b[19] << 24;
    return (32 + ml + 64 + 63) & ~(uint64_t)63;
}

static void expect(const uint8_t *blob, size_t len, kvb_read_opts *o, kvb_status want, const char *substr)
{
    char err[256] = "";
    kvb_status st = read_blob(blob, len, o, 0, NULL, err, sizeof err, NULL);
    if (st != want || !strstr(err, substr))
        fail_msg("got status %d (%s) \"%s\", wanted %d with \"%s\"", st, kvb_status_str(st), err, want, substr);
    /* and the same in small pieces, and from a file */
    st = read_blob(blob, len, o, -97, NULL, err, sizeof err, NULL);
    if (st != want || !strstr(err, substr))
        fail_msg("pieces: got status %d \"%s\", wanted %d with \"%s\"", st, err, want, substr);
    st = read_blob(blob, len, o, VIA_FILE, NULL, err, sizeof err, NULL);
    if (st != want || !strstr(err, substr))
        fail_msg("file: got status %d \"%s\", wanted %d with \"%s\"", st, err, want, substr);
}

static void flip(const uint8_t *blob, size_t len, size_t at, uint8_t bit, kvb_status want, const char *substr)
{
    uint8_t *b = malloc(len);
    memcpy(b, blob, len);
    b[at] ^= bit;
    kvb_read_opts o = key_opts(2);
    expect(b, len, &o, want, substr);
    free(b);
}

static void test_tamper_bits(void **s)
{
    (void)s;
    size_t len;
    uint8_t *blob = make_blob(KVB_CODEC_F16_ZSTD, 0, &len);
    uint64_t d = data_offset(blob);
    uint32_t ml = (uint32_t)(d > 0 ? blob[16] | blob[17] << 8 | blob[18] << 16 : 0);
    kvb_manifest *m = NULL;
    char err[256];
    assert_int_equal(kvb_peek(blob, len, NULL, NULL, &m, err, sizeof err), KVB_OK);
    flip(blob, len, 0, 0x01, KVB_ERR_MAGIC, "bad magic");
    flip(blob, len, 8, 0x04, KVB_ERR_VERSION, "unsupported container version 6");
    flip(blob, len, 8, 0x02, KVB_ERR_VERSION, "unsupported container version 0");
    flip(blob, len, 11, 0x80, KVB_ERR_UNSUPPORTED, "unknown flags 0x8000");
    flip(blob, len, 12, 0x02, KVB_ERR_UNSUPPORTED, "signature algorithm 3");
    flip(blob, len, 14, 0x01, KVB_ERR_MALFORMED, "reserved");
    flip(blob, len, 16, 0x01, KVB_ERR_BAD_SIG, "signature does not verify"); /* manifest length */
    flip(blob, len, 19, 0x40, KVB_ERR_LIMIT, "exceeds the limit");            /* absurd length */
    flip(blob, len, 24, 0x01, KVB_ERR_WRONG_KEY, "expected key id");          /* key id */
    flip(blob, len, 40, 0x04, KVB_ERR_BAD_SIG, "signature does not verify");  /* manifest */
    flip(blob, len, 32 + ml - 1, 0x01, KVB_ERR_BAD_SIG, "signature");          /* last manifest byte */
    flip(blob, len, 32 + ml + 10, 0x01, KVB_ERR_BAD_SIG, "signature");         /* signature */
    if (d > 32 + ml + 64)
        flip(blob, len, d - 1, 0x01, KVB_ERR_MALFORMED, "padding byte");
    flip(blob, len, d + 3, 0x01, KVB_ERR_TOKENS_HASH, "token ids: sha256 mismatch");
    for (uint32_t i = 0; i < m->n_chunks; i++) {
        char want[64];
        snprintf(want, sizeof want, "chunk %u of %u: sha256 mismatch", i, m->n_chunks);
        flip(blob, len, d + m->chunks[i].offset, 0x01, KVB_ERR_CHUNK_HASH, want);
        flip(blob, len, d + m->chunks[i].offset + m->chunks[i].length - 1, 0x80, KVB_ERR_CHUNK_HASH, want);
    }
    /* padding between chunks */
    if (m->chunks[1].offset > m->chunks[0].offset + m->chunks[0].length)
        flip(blob, len, d + m->chunks[1].offset - 1, 0x01, KVB_ERR_MALFORMED, "before chunk 1 of 4");
    kvb_manifest_free(m);
    free(blob);
}

/* ---- kvb_reader_feed_fd on chunks of several pieces ---- */

typedef struct big {
    uint32_t nl, nt, kvd, seg;
    uint16_t **k, **v; /* per layer: nt rows, or the pieces' layout (seg) */
    uint32_t delivered;
} big;

static size_t big_at(const big *b, uint32_t t, uint32_t j)
{
    return b->seg ? (size_t)(j / b->seg) * b->nt * b->seg + (size_t)t * b->seg + j % b->seg : (size_t)t * b->kvd + j;
}

static int big_dest(void *user, uint32_t index, uint32_t t0, uint32_t t1, uint16_t **k, uint16_t **v, kvb_rows *rows)
{
    big *b = user;
    (void)index, (void)t1;
    for (uint32_t l = 0; l < b->nl; l++) {
        k[l] = b->k[l] + big_at(b, t0, 0);
        v[l] = b->v[l] + big_at(b, t0, 0);
    }
    *rows = (kvb_rows){b->seg, (size_t)b->nt * b->seg};
    return 1;
}

static kvb_status big_chunk(void *user, const kvb_chunk *c, char *err, size_t errlen)
{
    big *b = user;
    (void)err, (void)errlen;
    assert_int_equal(c->index, b->delivered);
    assert_true(c->in_place);
    b->delivered++;
    return KVB_OK;
}

/* Rows of 1280 bytes (5 heads of 128) go in pieces of whole rows and leaves, copied to their
 * rows as each is hashed; rows of 1820 bytes (7 heads of 130) have no such piece of a sane
 * size and go through the chunk's buffer. Chunks of 256 tokens span several pieces. Both land
 * as the reader fed from memory puts them, in either layout, on 1 and 2 threads; a byte
 * flipped in a later piece of chunk 1 fails that chunk, after chunk 0 was delivered. */
static void test_fd_pieces(void **s)
{
    (void)s;
    static const uint32_t shapes[][2] = {{5, 128}, {7, 130}};
    for (size_t si = 0; si < 2; si++) {
        const uint32_t nl = 2, nt = 700, nkv = shapes[si][0], hd = shapes[si][1], kvd = nkv * hd;
        kvb_manifest m;
        base_meta(&m, KVB_CODEC_F16);
        m.n_layer = nl;
        m.n_head = 2 * nkv;
        m.n_head_kv = nkv;
        m.head_dim = hd;
        m.rope_n_rot = hd;
        m.n_tokens = nt;
        m.chunk_tokens = 256;
        uint16_t *k[2], *v[2], *rk[2], *rv[2];
        int32_t *tok = malloc(sizeof(int32_t) * nt);
        for (uint32_t i = 0; i < nt; i++)
            tok[i] = (int32_t)i;
        for (uint32_t l = 0; l < nl; l++) {
            k[l] = malloc(2 * (size_t)nt * kvd);
            v[l] = malloc(2 * (size_t)nt * kvd);
            rk[l] = malloc(2 * (size_t)nt * kvd);
            rv[l] = malloc(2 * (size_t)nt * kvd);
            for (size_t i = 0; i < (size_t)nt * kvd; i++) {
                k[l][i] = (uint16_t)(rnd() & 0x7bff);
                v[l][i] = (uint16_t)(rnd() & 0xfbff);
            }
        }
        uint8_t *blob = NULL;
        size_t len = 0;
        char err[256] = "";
        assert_int_equal(kvb_write(&m, tok, (const uint16_t *const *)k, (const uint16_t *const *)v, NULL, g_key,
                                   NULL, &blob, &len, err, sizeof err),
                         KVB_OK);
        kvb_manifest *pm = NULL;
        assert_int_equal(kvb_peek(blob, len, NULL, NULL, &pm, err, sizeof err), KVB_OK);
        assert_true(pm->chunks[1].length > 3 * (16 * KVC_LEAF_LEN) / 2); /* several pieces */
        for (int t = 0; t < 4; t++) {
            big b = {nl, nt, kvd, t / 2 ? hd : 0, rk, rv, 0};
            for (uint32_t l = 0; l < nl; l++) {
                memset(rk[l], 0xff, 2 * (size_t)nt * kvd);
                memset(rv[l], 0xff, 2 * (size_t)nt * kvd);
            }
            kvb_read_opts o = key_opts(t % 2 + 1);
            o.on_dest = big_dest;
            o.on_chunk = big_chunk;
            o.user = &b;
            assert_int_equal(read_blob(blob, len, &o, VIA_FILE, NULL, err, sizeof err, NULL), KVB_OK);
            assert_int_equal(b.delivered, pm->n_chunks);
            for (uint32_t l = 0; l < nl; l++)
                for (uint32_t r = 0; r < nt; r++)
                    for (uint32_t j = 0; j < kvd; j++)
                        if (rk[l][big_at(&b, r, j)] != k[l][(size_t)r * kvd + j] ||
                            rv[l][big_at(&b, r, j)] != v[l][(size_t)r * kvd + j])
                            fail_msg("kv_dim %u, layout %u, %d threads: layer %u row %u value %u differs", kvd,
                                     b.seg, t % 2 + 1, l, r, j);
            b.delivered = 0;
            blob[data_offset(blob) + pm->chunks[1].offset + pm->chunks[1].length - 100] ^= 4;
            assert_int_equal(read_blob(blob, len, &o, VIA_FILE, NULL, err, sizeof err, NULL), KVB_ERR_CHUNK_HASH);
            assert_non_null(strstr(err, "chunk 1 of 3: sha256 mismatch"));
            assert_int_equal(b.delivered, 1);
            blob[data_offset(blob) + pm->chunks[1].offset + pm->chunks[1].length - 100] ^= 4;
        }
        kvb_manifest_free(pm);
        for (uint32_t l = 0; l < nl; l++)
            BASE_FREE_ALL(k[l], v[l], rk[l], rv[l]);
        BASE_FREE_ALL(tok, blob);
    }
    /* a pipe has no offsets to read at */
    int p[2];
    assert_int_equal(pipe(p), 0);
    kvb_read_opts o = key_opts(2);
    kvb_reader *r = kvb_reader_create(&o);
    char err[256] = "";
    assert_int_equal(kvb_reader_feed_fd(r, p[0], err, sizeof err), KVB_ERR_USAGE);
    assert_non_null(strstr(err, "regular file"));
    kvb_reader_free(r);
    close(p[0]);
    close(p[1]);
}

static void test_truncated_and_trailing(void **s)
{
    (void)s;
    size_t len;
    uint8_t *blob = make_blob(KVB_CODEC_F16, 0, &len);
    kvb_read_opts o = key_opts(2);
    size_t cuts[] = {0, 5, 31, 32, 100, 700, (size_t)data_offset(blob) + 10, len / 2, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++)
        expect(blob, cuts[i], &o, KVB_ERR_TRUNCATED, "truncated");
    expect(blob, len - 1, &o, KVB_ERR_TRUNCATED, "inside chunk 3 of 4");
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, blob, len);
    longer[len] = 0;
    expect(longer, len + 1, &o, KVB_ERR_MALFORMED, "trailing data");
    /* kvb_peek on too little */
    kvb_manifest *m = NULL;
    char err[256];
    assert_int_equal(kvb_peek(blob, 20, NULL, NULL, &m, err, sizeof err), KVB_ERR_TRUNCATED);
    assert_int_equal(kvb_peek(blob, 200, NULL, NULL, &m, err, sizeof err), KVB_ERR_TRUNCATED);
    assert_null(m);
    free(longer);
    free(blob);
}

static void test_keys_trust_revocation(void **s)
{
    (void)s;
    size_t len;
    uint8_t *blob = make_blob(KVB_CODEC_Q8, 0, &len);
    kvb_read_opts o = key_opts(1);
    o.key = g_other;
    expect(blob, len, &o, KVB_ERR_WRONG_KEY, "expected key id");

    char dir[] = "/tmp/test_kvblob_trust_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char prefix[128], path[160], err[256];
    snprintf(prefix, sizeof prefix, "%s/pub", dir);
    assert_int_equal(kvc_key_write_pair(g_key, prefix, err, sizeof err), KVC_OK);
    snprintf(path, sizeof path, "%s/pub.key", dir);
    unlink(path); /* a trust dir holds public keys only */
    kvc_trust *t = NULL;
    assert_int_equal(kvc_trust_open(dir, &t, err, sizeof err), KVC_OK);
    memset(&o, 0, sizeof o);
    o.trust = t;
    char got_err[256];
    assert_int_equal(read_blob(blob, len, &o, 0, NULL, got_err, sizeof got_err, NULL), KVB_OK);
    kvc_trust_free(t);

    uint8_t id[KVC_KEYID_LEN];
    char hex[17], line[64];
    kvc_key_id(g_key, id);
    kvc_hex(id, KVC_KEYID_LEN, hex);
    snprintf(path, sizeof path, "%s/revoked", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    snprintf(line, sizeof line, "# test\n%s\n", hex);
    fputs(line, f);
    fclose(f);
    assert_int_equal(kvc_trust_open(dir, &t, err, sizeof err), KVC_OK);
    o.trust = t;
    char want[64];
    snprintf(want, sizeof want, "signer key id %s is revoked", hex);
    expect(blob, len, &o, KVB_ERR_REVOKED, want);
    kvc_trust_free(t);

    unlink(path);
    snprintf(path, sizeof path, "%s/pub.pub", dir);
    unlink(path);
    assert_int_equal(kvc_trust_open(dir, &t, err, sizeof err), KVC_OK);
    o.trust = t;
    expect(blob, len, &o, KVB_ERR_UNTRUSTED, "is not in the trust store");
    kvc_trust_free(t);
    rmdir(dir);

    memset(&o, 0, sizeof o); /* neither trust nor key nor skip: refused */
    expect(blob, len, &o, KVB_ERR_USAGE, "no trust store or key");
    o.skip_signature = 1;
    expect(blob, len, &o, KVB_OK, "");
    free(blob);
}

static void test_expiry(void **s)
{
    (void)s;
    size_t len;
    uint8_t *blob = make_blob(KVB_CODEC_F16, 1800000000, &len);
    kvb_read_opts o = key_opts(1);
    o.now = 1799999999;
    expect(blob, len, &o, KVB_OK, "");
    o.now = 1800000000;
    expect(blob, len, &o, KVB_ERR_EXPIRED, "blob expired at 2027-01-15T08:00:00Z");
    o.now = -1; /* skip the check */
    expect(blob, len, &o, KVB_OK, "");
    free(blob);
}

/* Re-signs blob with an edited manifest: the layout of the data section is unchanged because
 * section offsets are relative to its start. */
static uint8_t *resign(const uint8_t *blob, size_t len, void (*edit)(json_t *), size_t *outlen)
{
    uint32_t ml = (uint32_t)blob[16] | (uint32_t)blob[17] << 8 | (uint32_t)blob[18] << 16;
    uint64_t d = data_offset(blob);
    json_t *root = json_loadb((const char *)blob + 32, ml, 0, NULL);
    assert_non_null(root);
    edit(root);
    char *js = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(root);
    size_t nl = strlen(js), nd = (32 + nl + 64 + 63) & ~(size_t)63;
    *outlen = nd + (len - d);
    uint8_t *b = calloc(1, *outlen);
    memcpy(b, blob, 32);
    b[16] = (uint8_t)nl;
    b[17] = (uint8_t)(nl >> 8);
    b[18] = (uint8_t)(nl >> 16);
    b[19] = (uint8_t)(nl >> 24);
    memcpy(b + 32, js, nl);
    free(js);
    assert_int_equal(kvc_sign(g_key, b, 32 + nl, b + 32 + nl), KVC_OK);
    memcpy(b + nd, blob + d, len - d);
    return b;
}

static json_t *chunk(json_t *root, size_t i) { return json_array_get(json_object_get(root, "chunks"), i); }
static void ed_codec(json_t *r) { json_object_set_new(r, "codec", json_string("f32-brotli")); }
static void ed_overlap(json_t *r) { json_object_set(chunk(r, 1), "offset", json_object_get(chunk(r, 0), "offset")); }
static void ed_outside(json_t *r) { json_object_set_new(chunk(r, 3), "length", json_integer(1LL << 40)); }
static void ed_bigtokens(json_t *r) { json_object_set_new(r, "n_tokens", json_integer(1LL << 31)); }
static void ed_layers(json_t *r) { json_object_set_new(json_object_get(r, "model"), "n_layer", json_integer(100000)); }
static void ed_kvdim(json_t *r) { json_object_set_new(json_object_get(r, "model"), "head_dim", json_integer(1 << 20)); }
static void ed_nchunks(json_t *r) { json_array_remove(json_object_get(r, "chunks"), 3); }
static void ed_range(json_t *r) { json_object_set_new(chunk(r, 2), "t1", json_integer(95)); }
static void ed_missing(json_t *r) { json_object_del(json_object_get(r, "rope"), "pos0"); }
static void ed_badhash(json_t *r) { json_object_set_new(json_object_get(r, "model"), "fingerprint", json_string("xyz")); }
static void ed_unknown(json_t *r) { json_object_set_new(r, "x_future_field", json_string("ignored")); }
static void ed_time(json_t *r) { json_object_set_new(r, "created", json_string("2024-02-30T00:00:00Z")); }
static void ed_serial(json_t *r) { json_object_set_new(r, "serial", json_string("18446744073709551616")); }
static void ed_toklen(json_t *r) { json_object_set_new(json_object_get(r, "tokens"), "length", json_integer(396)); }
static void ed_rope(json_t *r) { json_object_set_new(json_object_get(r, "rope"), "type", json_string("glm")); }
/* a declared context of ids 1, 2, 3: its sha256 computed here from the LE int32 bytes */
static void ctx_obj(json_t *r, json_int_t n, int good_sha, json_int_t pos0)
{
    static const uint8_t le[12] = {1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0};
    uint8_t h[32];
    char hex[65];
    kvc_sha256(le, sizeof le, h);
    if (!good_sha)
        h[0] ^= 1;
    json_t *c = json_object(), *ids = json_array();
    for (int i = 1; i <= 3; i++)
        json_array_append_new(ids, json_integer(i));
    json_object_set_new(c, "n_tokens", json_integer(n));
    json_object_set_new(c, "ids", ids);
    json_object_set_new(c, "sha256", json_string(kvc_hex(h, 32, hex)));
    json_object_set_new(r, "context", c);
    json_object_set_new(json_object_get(r, "rope"), "pos0", json_integer(pos0));
}
static void ed_ctx_ok(json_t *r) { ctx_obj(r, 3, 1, 4); }
static void ed_ctx_sha(json_t *r) { ctx_obj(r, 3, 0, 4); }
static void ed_ctx_count(json_t *r) { ctx_obj(r, 4, 1, 5); }
static void ed_ctx_pos0(json_t *r) { ctx_obj(r, 3, 1, 1); }
static void ed_ctx_type(json_t *r) { json_object_set_new(r, "context", json_string("system prompt")); }
static void ed_chunk_sha(json_t *r)
{
    json_object_set_new(chunk(r, 2), "sha256",
                        json_string("0000000000000000000000000000000000000000000000000000000000000000"));
}

static const char ZERO_HEX[] = "0000000000000000000000000000000000000000000000000000000000000000";
static void ed_raw_some(json_t *r) { json_object_del(chunk(r, 1), "raw_sha256"); }
static void ed_raw_hex(json_t *r) { json_object_set_new(chunk(r, 0), "raw_sha256", json_string("xyz")); }
static void ed_raw_wrong(json_t *r) { json_object_set_new(chunk(r, 2), "raw_sha256", json_string(ZERO_HEX)); }
static void ed_raw_add(json_t *r)
{
    for (size_t i = 0; i < json_array_size(json_object_get(r, "chunks")); i++)
        json_object_set(chunk(r, i), "raw_sha256", json_object_get(chunk(r, i), "sha256"));
}

/* ---- a chunk's length against its codec's bounds; bytes after a zstd frame ---- */

static json_int_t jint(json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }
/* raw f16 bytes of chunk i, from the manifest's own shape fields */
static json_int_t decoded_bytes(json_t *r, size_t i)
{
    json_t *md = json_object_get(r, "model");
    return jint(md, "n_layer") * 2 * (jint(chunk(r, i), "t1") - jint(chunk(r, i), "t0")) * jint(md, "n_head_kv") *
           jint(md, "head_dim") * 2;
}
static json_int_t g_set_len;
static char g_set_sha[65];
static void ed_len(json_t *r) { json_object_set_new(chunk(r, 3), "length", json_integer(g_set_len)); }
static void ed_len_sha(json_t *r)
{
    ed_len(r);
    json_object_set_new(chunk(r, 3), "sha256", json_string(g_set_sha));
}

static json_t *manifest_of(const uint8_t *blob)
{
    uint32_t ml = (uint32_t)blob[16] | (uint32_t)blob[17] << 8 | (uint32_t)blob[18] << 16;
    json_t *root = json_loadb((const char *)blob + 32, ml, 0, NULL);
    assert_non_null(root);
    return root;
}

static void test_chunk_length_bounds(void **s)
{
    (void)s;
    char want[200];
    kvb_read_opts o = key_opts(2);
    /* f16: a stored chunk is exactly its decoded size; 2 bytes short is refused from the
     * manifest alone (hash-only verification and uploads never decode it) */
    size_t len, n;
    uint8_t *blob = make_blob(KVB_CODEC_F16, 0, &len);
    json_t *root = manifest_of(blob);
    const json_int_t full = decoded_bytes(root, 3);
    assert_int_equal(jint(chunk(root, 3), "length"), full); /* what the writer wrote */
    json_decref(root);
    g_set_len = full - 2;
    uint8_t *b = resign(blob, len, ed_len, &n);
    snprintf(want, sizeof want, "chunk 3 of 4: length %lld out of range %lld..%lld for f16", (long long)full - 2,
             (long long)full, (long long)full);
    expect(b, n, &o, KVB_ERR_MALFORMED, want);
    free(b);
    free(blob);

    /* f16-zstd: more than its N raw low bytes (a frame of at least a byte comes first) */
    blob = make_blob(KVB_CODEC_F16_ZSTD, 0, &len);
    root = manifest_of(blob);
    const json_int_t low = decoded_bytes(root, 3) / 2;
    json_decref(root);
    g_set_len = low;
    b = resign(blob, len, ed_len, &n);
    snprintf(want, sizeof want, "chunk 3 of 4: length %lld out of range %lld..", (long long)low, (long long)low + 1);
    expect(b, n, &o, KVB_ERR_MALFORMED, want);
    free(b);
    free(blob);

    /* q8: a signed chunk whose frame is followed by a skippable frame (magic 0x184D2A50, 4
     * bytes of content), its digest and length in the manifest: the frame must span the chunk */
    blob = make_blob(KVB_CODEC_Q8, 0, &len);
    root = manifest_of(blob);
    const json_int_t clen = jint(chunk(root, 3), "length"), coff = jint(chunk(root, 3), "offset");
    json_decref(root);
    static const uint8_t skip[12] = {0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 'x', 'y', 'z', 'w'};
    uint8_t *longer = malloc(len + sizeof skip);
    assert_non_null(longer);
    memcpy(longer, blob, len);
    memcpy(longer + len, skip, sizeof skip);
    assert_int_equal((json_int_t)(len - data_offset(blob)), coff + clen); /* chunk 3 ends the file */
    uint8_t sha[32];
    kvc_leaf_digest(longer + data_offset(blob) + coff, (size_t)clen + sizeof skip, sha);
    kvc_hex(sha, 32, g_set_sha);
    g_set_len = clen + (json_int_t)sizeof skip;
    b = resign(longer, len + sizeof skip, ed_len_sha, &n);
    snprintf(want, sizeof want, "chunk 3 of 4: zstd frame is %lld bytes, expected %lld", (long long)clen,
             (long long)g_set_len);
    expect(b, n, &o, KVB_ERR_DECODE, want);
    free(b);
    /* the same bytes without the extra frame read back (the edit itself is sound) */
    kvc_leaf_digest(blob + data_offset(blob) + coff, (size_t)clen, sha);
    kvc_hex(sha, 32, g_set_sha);
    g_set_len = clen;
    b = resign(blob, len, ed_len_sha, &n);
    expect(b, n, &o, KVB_OK, "");
    free(b);
    free(longer);
    free(blob);
}

static void test_resigned_manifests(void **s)
{
    (void)s;
    size_t len;
    uint8_t *blob = make_blob(KVB_CODEC_F16_ZSTD, 0, &len);
    static const struct {
        void (*edit)(json_t *);
        kvb_status want;
        const char *substr;
    } cases[] = {
        {ed_codec, KVB_ERR_UNSUPPORTED, "unknown codec \"f32-brotli\""},
        {ed_overlap, KVB_ERR_MALFORMED, "chunk 1 of 4: offset"},
        {ed_outside, KVB_ERR_MALFORMED, "chunk 3 of 4: length 1099511627776 out of range"},
        {ed_bigtokens, KVB_ERR_LIMIT, "n_tokens"},
        {ed_layers, KVB_ERR_LIMIT, "n_layer"},
        {ed_kvdim, KVB_ERR_LIMIT, "head_dim"},
        {ed_nchunks, KVB_ERR_MALFORMED, "3 chunks listed, expected 4"},
        {ed_range, KVB_ERR_MALFORMED, "chunk 2 of 4: token range [64,95), expected [64,96)"},
        {ed_missing, KVB_ERR_MALFORMED, "rope.pos0 is missing"},
        {ed_badhash, KVB_ERR_MALFORMED, "model.fingerprint is not 64 hex digits"},
        {ed_unknown, KVB_OK, ""},
        {ed_time, KVB_ERR_MALFORMED, "not RFC 3339"},
        {ed_serial, KVB_ERR_MALFORMED, "serial"},
        {ed_toklen, KVB_ERR_MALFORMED, "token section"},
        {ed_rope, KVB_ERR_UNSUPPORTED, "rope.type"},
        {ed_chunk_sha, KVB_ERR_CHUNK_HASH, "chunk 2 of 4: sha256 mismatch"},
        {ed_raw_some, KVB_ERR_MALFORMED, "raw_sha256 on 3 of 4 chunks of a f16-zstd blob (all or none"},
        {ed_raw_hex, KVB_ERR_MALFORMED, "chunks[0].raw_sha256 is not 64 hex digits"},
        {ed_raw_wrong, KVB_OK, ""}, /* decoded digests matter only to a decoded copy (below) */
        {ed_ctx_ok, KVB_OK, ""},
        {ed_ctx_sha, KVB_ERR_MALFORMED, "context.sha256 does not match its ids"},
        {ed_ctx_count, KVB_ERR_MALFORMED, "context lists 3 ids for n_tokens 4"},
        {ed_ctx_pos0, KVB_ERR_MALFORMED, "pos0 1 is before the end of the 3-token declared context"},
        {ed_ctx_type, KVB_ERR_MALFORMED, "context is not an object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t n;
        uint8_t *b = resign(blob, len, cases[i].edit, &n);
        kvb_read_opts o = key_opts(2);
        expect(b, n, &o, cases[i].want, cases[i].substr);
        free(b);
    }
    /* header version 3, correctly signed: still refused before the manifest is looked at;
     * version 1, correctly signed: chunks are then hashed whole, which the leaf-list digests
     * in this version 2 manifest do not match */
    static const struct {
        uint8_t version;
        kvb_status want;
        const char *substr;
    } vs[] = {{3, KVB_ERR_VERSION, "unsupported container version 3"},
              {1, KVB_ERR_CHUNK_HASH, "chunk 0 of 4: sha256 mismatch"}};
    for (size_t i = 0; i < sizeof vs / sizeof *vs; i++) {
        uint8_t *b = malloc(len);
        memcpy(b, blob, len);
        b[8] = vs[i].version;
        uint32_t ml = (uint32_t)b[16] | (uint32_t)b[17] << 8 | (uint32_t)b[18] << 16;
        assert_int_equal(kvc_sign(g_key, b, 32 + ml, b + 32 + ml), KVC_OK);
        kvb_read_opts o = key_opts(1);
        expect(b, len, &o, vs[i].want, vs[i].substr);
        free(b);
    }
    free(blob);
}

static kvb_status refuse(void *user, const kvb_chunk *c, char *err, size_t errlen)
{
    (void)user;
    if (c->index == 2) {
        snprintf(err, errlen, "loader: stop at chunk %u", c->index);
        return KVB_ERR_CALLBACK;
    }
    return KVB_OK;
}

static kvb_status count_chunk(void *user, const kvb_chunk *c, char *err, size_t errlen)
{
    (void)c;
    (void)err;
    (void)errlen;
    (*(int *)user)++;
    return KVB_OK;
}

static void test_prefix_verify_only_callback(void **s)
{
    (void)s;
    size_t len;
    uint8_t *blob = make_blob(KVB_CODEC_Q4, 0, &len);
    int count = 0;
    kvb_read_opts o = key_opts(2);
    o.on_chunk = count_chunk;
    o.user = &count;
    o.max_chunks = 2;
    char err[256];
    assert_int_equal(read_blob(blob, len, &o, -300, NULL, err, sizeof err, NULL), KVB_OK);
    assert_int_equal(count, 2);
    count = 0;
    o.max_chunks = 0;
    o.no_decode = 1;
    assert_int_equal(read_blob(blob, len, &o, 0, NULL, err, sizeof err, NULL), KVB_OK);
    assert_int_equal(count, 0);
    o = key_opts(3);
    o.on_chunk = refuse;
    assert_int_equal(read_blob(blob, len, &o, 0, NULL, err, sizeof err, NULL), KVB_ERR_CALLBACK);
    assert_string_equal(err, "loader: stop at chunk 2");
    /* prefix of a partial download is enough for the manifest */
    kvb_status st;
    size_t need = kvb_prefix_len(blob, len, &st);
    assert_int_equal(st, KVB_OK);
    assert_int_equal(kvb_prefix_len(blob, 10, &st), 0);
    kvb_manifest *m = NULL;
    kvb_header h;
    assert_int_equal(kvb_peek(blob, need, g_key, &h, &m, err, sizeof err), KVB_OK);
    assert_int_equal(h.file_size, len);
    assert_int_equal(m->codec, KVB_CODEC_Q4);
    assert_string_equal(m->doc_title, "Test \"document\" \xc3\xa9");
    assert_string_equal(m->model_arch, "qwen3");
    assert_int_equal(m->serial, 18446744073709551615ull);
    assert_true(m->rope_freq_base == 1000000.0 && m->rope_freq_scale == 0.25 && m->yarn_ext_factor == 1.5);
    assert_int_equal(m->rope_scaling, KVB_SCALING_YARN);
    assert_int_equal(m->pos0, 1);
    assert_int_equal(m->n_chunks, NCH);
    assert_int_equal(m->chunks[3].t1, NT);
    kvb_manifest_free(m);
    assert_int_equal(kvb_peek(blob, need, g_other, &h, &m, err, sizeof err), KVB_ERR_WRONG_KEY);
    free(blob);
}

/* A declared context survives writing and parsing: ids, count, and the hash of the ids as LE
 * int32 (computed here from the bytes); without one the manifest has no "context" at all. */
static void test_declared_context(void **s)
{
    (void)s;
    static const int32_t ids[4] = {7, 151643, 0, 2147483647};
    kvb_manifest m;
    base_meta(&m, KVB_CODEC_F16);
    m.n_context = 4;
    m.context_ids = ids;
    m.pos0 = 5;
    uint8_t *blob = NULL;
    size_t len = 0;
    char err[256] = "";
    assert_int_equal(kvb_write(&m, g_tok, g_kp, g_vp, NULL, g_key, NULL, &blob, &len, err, sizeof err), KVB_OK);
    kvb_manifest *p = NULL;
    assert_int_equal(kvb_peek(blob, len, g_key, NULL, &p, err, sizeof err), KVB_OK);
    assert_int_equal(p->n_context, 4);
    assert_int_equal(p->pos0, 5);
    assert_memory_equal(p->context_ids, ids, sizeof ids);
    uint8_t le[16], h[32];
    for (int i = 0; i < 4; i++)
        for (int b = 0; b < 4; b++)
            le[4 * i + b] = (uint8_t)((uint32_t)ids[i] >> (8 * b));
    kvc_sha256(le, sizeof le, h);
    assert_memory_equal(p->context_sha256, h, 32);
    kvb_manifest_free(p);
    free(blob);

    m.n_context = 0;
    m.context_ids = NULL;
    m.pos0 = 1;
    assert_int_equal(kvb_write(&m, g_tok, g_kp, g_vp, NULL, g_key, NULL, &blob, &len, err, sizeof err), KVB_OK);
    assert_null(memmem(blob, len, "\"context\"", 9));
    assert_int_equal(kvb_peek(blob, len, g_key, NULL, &p, err, sizeof err), KVB_OK);
    assert_int_equal(p->n_context, 0);
    assert_null(p->context_ids);
    kvb_manifest_free(p);
    free(blob);

    m.n_context = 2; /* the document cannot start inside its own context */
    m.context_ids = ids;
    m.pos0 = 1;
    assert_int_equal(kvb_write(&m, g_tok, g_kp, g_vp, NULL, g_key, NULL, &blob, &len, err, sizeof err),
                     KVB_ERR_MALFORMED);
    assert_non_null(strstr(err, "declared context"));
}

static void test_writer_misuse(void **s)
{
    (void)s;
    kvb_manifest m;
    base_meta(&m, KVB_CODEC_Q8);
    kvb_writer *w = NULL;
    char err[256];
    assert_int_equal(kvb_writer_create(&m, g_tok, NULL, &w, err, sizeof err), KVB_OK);
    static uint16_t buf[NL * 2 * CT * KVD];
    assert_int_equal(kvb_writer_add_chunk(w, buf, CT - 1, err, sizeof err), KVB_ERR_USAGE);
    assert_non_null(strstr(err, "expected 32"));
    uint8_t *out = NULL;
    size_t len = 0;
    assert_int_equal(kvb_writer_finish_mem(w, g_key, &out, &len, err, sizeof err), KVB_ERR_USAGE);
    buf[5] = 0x7c00; /* +inf cannot be quantised */
    assert_int_equal(kvb_writer_add_chunk(w, buf, CT, err, sizeof err), KVB_ERR_USAGE);
    assert_non_null(strstr(err, "non-finite"));
    kvb_writer_free(w);
    m.n_layer = 0;
    assert_int_equal(kvb_writer_create(&m, g_tok, NULL, &w, err, sizeof err), KVB_ERR_LIMIT);
    /* RoPE frequency factors: n_rot / 2 positive numbers, or none */
    base_meta(&m, KVB_CODEC_Q8);
    m.rope_n_freq_factors = m.rope_n_rot / 2 + 1;
    assert_int_equal(kvb_writer_create(&m, g_tok, NULL, &w, err, sizeof err), KVB_ERR_MALFORMED);
    assert_non_null(strstr(err, "freq_factors has"));
    m.rope_n_freq_factors = m.rope_n_rot / 2;
    for (uint32_t i = 0; i < m.rope_n_freq_factors; i++)
        m.rope_freq_factors[i] = 1;
    m.rope_freq_factors[1] = 0;
    assert_int_equal(kvb_writer_create(&m, g_tok, NULL, &w, err, sizeof err), KVB_ERR_MALFORMED);
    assert_non_null(strstr(err, "freq_factors[1]"));
    kvb_writer_free(NULL);
    kvb_reader_free(NULL);
    kvb_manifest_free(NULL);
}

static void test_write_path_atomic(void **s)
{
    (void)s;
    char dir[] = "/tmp/test_kvblob_path_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/out.kvb", dir);
    kvb_manifest m;
    base_meta(&m, KVB_CODEC_F16_ZSTD);
    assert_int_equal(kvb_write(&m, g_tok, g_kp, g_vp, NULL, g_key, path, NULL, NULL, err, sizeof err), KVB_OK);
    kvb_read_opts o = key_opts(2);
    kvb_manifest *got_m = NULL;
    assert_int_equal(kvb_read_file(path, &o, &got_m, NULL, err, sizeof err), KVB_OK);
    assert_non_null(got_m);
    assert_int_equal(got_m->n_tokens, NT);
    kvb_manifest_free(got_m);
    /* a public key cannot sign: nothing is left behind */
    snprintf(path, sizeof path, "%s/bad.kvb", dir);
    kvc_key *pub = NULL;
    uint8_t raw[32];
    kvc_key_raw_public(g_key, raw);
    assert_int_equal(kvc_key_from_raw_public(raw, &pub), KVC_OK);
    assert_int_equal(kvb_write(&m, g_tok, g_kp, g_vp, NULL, pub, path, NULL, NULL, err, sizeof err), KVB_ERR_USAGE);
    kvc_key_free(pub);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(tu_rm_rf(dir), 0);
    assert_int_equal(kvb_read_file("/nonexistent/x.kvb", &o, NULL, NULL, err, sizeof err), KVB_ERR_IO);
}

static void put_file(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static uint8_t *get_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t *b = (uint8_t *)base_read_stream(f, 64 << 20, n);
    fclose(f);
    assert_non_null(b);
    return b;
}

/* A decoded copy (spec 4.2): the blob's signed prefix and token ids as they are, then each
 * chunk decoded at the next 64-byte boundary; read with decoded = 1 it gives the blob's values,
 * whole, in pieces or from a file. Neither file reads as the other. Decoded bytes that differ
 * from the signed raw_sha256 fail check_raw and the copy, and nothing is left behind; so do a
 * wrong signer, a blob without raw digests and a missing blob. */
static void test_decoded_copy(void **s)
{
    (void)s;
    char dir[] = "/tmp/test_kvblob_decoded_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], copy[160], err[256];
    snprintf(path, sizeof path, "%s/b.kvb", dir);
    snprintf(copy, sizeof copy, "%s/b.kvb" KVB_DECODED_SUFFIX, dir);
    size_t len, clen;
    uint8_t *blob = make_blob(KVB_CODEC_F16_ZSTD, 0, &len);
    put_file(path, blob, len);
    kvb_read_opts o = key_opts(2);
    if (kvb_decoded_write(path, copy, &o, err, sizeof err) != KVB_OK)
        fail_msg("kvb_decoded_write: %s", err);
    uint8_t *c = get_file(copy, &clen);
    const uint64_t d = data_offset(blob);
    assert_memory_equal(c, blob, d + 4 * NT); /* prefix, padding, token ids */
    uint64_t end = 4 * NT;
    for (int i = 0; i < NCH; i++) {
        const uint64_t n = (i + 1) * CT <= NT ? CT : NT - i * CT;
        end = ((end + 63) & ~(uint64_t)63) + 2ull * NL * 2 * n * KVD;
    }
    assert_int_equal(clen, d + end);
    int32_t tok[NT];
    static const long pieces[] = {0, -97, VIA_FILE};
    for (int i = 0; i < 3; i++) {
        kvb_read_opts od = key_opts(i + 1);
        od.decoded = 1;
        assert_int_equal(read_blob(c, clen, &od, pieces[i], &g_got, err, sizeof err, tok), KVB_OK);
        assert_int_equal(g_got.chunks, NCH);
        assert_memory_equal(g_got.k, g_k, sizeof g_k);
        assert_memory_equal(g_got.v, g_v, sizeof g_v);
        assert_memory_equal(tok, g_tok, sizeof tok);
    }
    kvb_read_opts od = key_opts(2);
    od.decoded = 1;
    kvb_manifest *m = NULL;
    assert_int_equal(kvb_read_file(copy, &od, &m, NULL, err, sizeof err), KVB_OK);
    assert_int_equal(m->codec, KVB_CODEC_F16);
    assert_int_equal(m->stored_bytes, m->raw_bytes);
    kvb_manifest_free(m);
    expect(blob, len, &od, KVB_ERR_CHUNK_HASH, "chunk 0 of 4: sha256 mismatch");
    expect(c, clen, &o, KVB_ERR_CHUNK_HASH, "chunk 0 of 4: sha256 mismatch");
    /* f16 has no decoded digests; an f16 manifest that carries them is malformed */
    size_t fl, n;
    uint8_t *f16 = make_blob(KVB_CODEC_F16, 0, &fl);
    expect(f16, fl, &od, KVB_ERR_UNSUPPORTED, "no decoded copy: the manifest carries no decoded chunk digests");
    uint8_t *b = resign(f16, fl, ed_raw_add, &n);
    expect(b, n, &o, KVB_ERR_MALFORMED, "raw_sha256 on 4 of 4 chunks of a f16 blob");
    free(b);
    put_file(path, f16, fl);
    unlink(copy);
    assert_int_equal(kvb_decoded_write(path, copy, &o, err, sizeof err), KVB_ERR_UNSUPPORTED);
    assert_int_equal(access(copy, F_OK), -1);
    /* a wrong decoded digest: check_raw finds it (a plain read does not look), and the copy
     * fails its read-back */
    b = resign(blob, len, ed_raw_wrong, &n);
    kvb_read_opts oc = key_opts(2);
    oc.check_raw = 1;
    expect(b, n, &oc, KVB_ERR_CHUNK_HASH, "chunk 2 of 4: its decoded bytes differ from the signed raw_sha256");
    expect(blob, len, &oc, KVB_OK, "");
    oc.no_decode = 1; /* nothing decoded, nothing to check */
    expect(b, n, &oc, KVB_OK, "");
    put_file(path, b, n);
    free(b);
    assert_int_equal(kvb_decoded_write(path, copy, &o, err, sizeof err), KVB_ERR_CHUNK_HASH);
    assert_string_equal(err, "decoded copy: chunk 2 of 4: sha256 mismatch (the decoded bytes differ from the "
                             "signed raw_sha256)");
    assert_int_equal(access(copy, F_OK), -1);
    /* another signer than the one asked for; no blob */
    put_file(path, blob, len);
    kvb_read_opts other = key_opts(1);
    other.key = g_other;
    assert_int_equal(kvb_decoded_write(path, copy, &other, err, sizeof err), KVB_ERR_WRONG_KEY);
    assert_int_equal(access(copy, F_OK), -1);
    unlink(path);
    assert_int_equal(kvb_decoded_write(path, copy, &o, err, sizeof err), KVB_ERR_IO);
    assert_int_equal(access(copy, F_OK), -1);
    free(f16);
    free(c);
    free(blob);
    assert_int_equal(tu_rm_rf(dir), 0);
}

static void test_f16_and_time(void **s)
{
    (void)s;
    static const struct {
        float f;
        uint16_t h;
    } cases[] = {
        {1.0f, 0x3c00}, {-2.0f, 0xc000}, {65504.0f, 0x7bff}, {65520.0f, 0x7c00}, {65519.0f, 0x7bff},
        {0x1p-24f, 0x0001}, {0x1p-25f, 0x0000}, {0x3p-25f, 0x0002}, {0x1p-14f, 0x0400}, {0.1f, 0x2e66},
        {0.0f, 0x0000}, {-0.0f, 0x8000}, {1e9f, 0x7c00}, {0x1.ffcp-15f, 0x0400}, {1.0009765625f, 0x3c01},
        {1.00048828125f, 0x3c00}, /* tie: to even */ {1.00146484375f, 0x3c02}, /* tie: to even (up) */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (base_f32_to_f16(cases[i].f) != cases[i].h)
            fail_msg("f32_to_f16(%a) = %04x, want %04x", (double)cases[i].f, base_f32_to_f16(cases[i].f), cases[i].h);
    }
    for (uint32_t h = 0; h < 0x10000; h++) { /* every finite half survives f16 -> f32 -> f16 */
        if (((h >> 10) & 0x1f) == 0x1f)
            continue;
        assert_int_equal(base_f32_to_f16(base_f16_to_f32((uint16_t)h)), h);
        assert_true((double)base_f16_to_f32((uint16_t)h) == h2d((uint16_t)h));
    }
    char buf[32];
    assert_string_equal(kvb_time_format(1700000000, buf, sizeof buf), "2023-11-14T22:13:20Z");
    assert_string_equal(kvb_time_format(0, buf, sizeof buf), "1970-01-01T00:00:00Z");
    assert_int_equal(kvb_exit_code(KVB_OK), 0);
    assert_int_equal(kvb_exit_code(KVB_ERR_CHUNK_HASH), 1);
    assert_int_equal(kvb_exit_code(KVB_ERR_EXPIRED), 1);
    assert_int_equal(kvb_exit_code(KVB_ERR_IO), 2);
    assert_int_equal(kvb_exit_code(KVB_ERR_TRUNCATED), 3);
    assert_int_equal(kvb_exit_code(KVB_ERR_UNSUPPORTED), 3);
    kvb_codec c;
    assert_int_equal(kvb_codec_parse("f16-zstd", &c), KVB_OK);
    assert_int_equal(c, KVB_CODEC_F16_ZSTD);
    assert_int_equal(kvb_codec_parse("F16", &c), KVB_ERR_UNSUPPORTED);
}

static int setup(void **s)
{
    (void)s;
    g_key = kvc_key_generate();
    g_other = kvc_key_generate();
    make_data();
    return g_key && g_other ? 0 : -1;
}

static int teardown(void **s)
{
    (void)s;
    kvc_key_free(g_key);
    kvc_key_free(g_other);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_and_time),
        cmocka_unit_test(test_roundtrip_f16),
        cmocka_unit_test(test_roundtrip_f16_zstd),
        cmocka_unit_test(test_roundtrip_q8),
        cmocka_unit_test(test_roundtrip_q4),
        cmocka_unit_test(test_decode_in_place),
        cmocka_unit_test(test_fd_pieces),
        cmocka_unit_test(test_sizes_and_ratio),
        cmocka_unit_test(test_streaming_pieces),
        cmocka_unit_test(test_tamper_bits),
        cmocka_unit_test(test_truncated_and_trailing),
        cmocka_unit_test(test_keys_trust_revocation),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_resigned_manifests),
        cmocka_unit_test(test_chunk_length_bounds),
        cmocka_unit_test(test_prefix_verify_only_callback),
        cmocka_unit_test(test_declared_context),
        cmocka_unit_test(test_writer_misuse),
        cmocka_unit_test(test_write_path_atomic),
        cmocka_unit_test(test_decoded_copy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
