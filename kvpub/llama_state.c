/* llama_state.c: a context's KV written as a llama.cpp sequence-state file, the file
 * llama_state_seq_save_file writes and llama_state_seq_load_file (and llama-server's slot
 * restore) reads, for the llama.cpp release kvpub pins (spec/llama-state.md): so a verified,
 * placed blob drops into llama.cpp without a prefill. */
#include "base/base.h"
#include "kvpub/kvpub_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    LLAMA_STATE_MAGIC = 0x67677371,   /* 'ggsq' */
    LLAMA_STATE_VERSION = 3,
    GGML_TYPE_F16_ID = 1,
};

/* A little-endian byte sink over a file descriptor, buffered; the first error sticks. */
typedef struct sink {
    int fd;
    unsigned char buf[1 << 16];
    size_t n;
    int bad;
} sink;

static void flush(sink *s)
{
    if (!s->bad && s->n && base_write_all(s->fd, s->buf, s->n) != 0)
        s->bad = 1;
    s->n = 0;
}

static void put(sink *s, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n) {
        if (s->n == sizeof s->buf)
            flush(s);
        size_t k = sizeof s->buf - s->n < n ? sizeof s->buf - s->n : n;
        memcpy(s->buf + s->n, b, k);
        s->n += k;
        b += k;
        n -= k;
    }
}

static void put_u32(sink *s, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    put(s, b, 4);
}

static void put_u64(sink *s, uint64_t v)
{
    put_u32(s, (uint32_t)v);
    put_u32(s, (uint32_t)(v >> 32));
}

/* f16 values in the host's order as little-endian bytes: one copy on a little-endian host. */
static void put_f16(sink *s, const uint16_t *v, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    put(s, v, n * 2);
#else
    for (size_t i = 0; i < n; i++) {
        unsigned char b[2] = {(unsigned char)v[i], (unsigned char)(v[i] >> 8)};
        put(s, b, 2);
    }
#endif
}

/* k, v: room for one layer's n cells; col: for n values (one transposed V column). */
static void write_state(sink *s, eng_ctx *ctx, const eng_info *in, const int32_t *tokens, uint32_t n, int v_trans,
                        uint16_t *k, uint16_t *v, uint16_t *col)
{
    const size_t kvd = (size_t)in->n_head_kv * (size_t)in->head_dim;
    put_u32(s, LLAMA_STATE_MAGIC);
    put_u32(s, LLAMA_STATE_VERSION);
    put_u32(s, n);
    for (uint32_t i = 0; i < n; i++)
        put_u32(s, (uint32_t)tokens[i]);
    put_u32(s, 1); /* streams: one, a unified cache */
    put_u32(s, n); /* cells of the sequence */
    for (uint32_t i = 0; i < n; i++) {
        put_u32(s, i); /* position: cell i holds position i */
        put_u32(s, 1); /* one sequence id */
        put_u32(s, 0); /* sequence 0 (the loader puts it in its destination sequence) */
    }
    put_u32(s, (uint32_t)v_trans);
    put_u32(s, (uint32_t)in->n_layer);
    for (int pass = 0; pass < 2; pass++) { /* every layer's K, then every layer's V */
        for (int il = 0; il < in->n_layer && !s->bad; il++) {
            if (eng_kv_export_layer(ctx, il, 0, (int)n, k, v) != ENG_OK) {
                s->bad = 2;
                return;
            }
            put_u32(s, GGML_TYPE_F16_ID);
            if (pass == 0 || !v_trans) { /* rows: one per cell */
                put_u64(s, kvd * 2);
                put_f16(s, pass == 0 ? k : v, (size_t)n * kvd);
                continue;
            }
            put_u32(s, 2); /* transposed V: element size, width, then column by column */
            put_u32(s, (uint32_t)kvd);
            for (size_t j = 0; j < kvd; j++) {
                for (uint32_t c = 0; c < n; c++)
                    col[c] = v[(size_t)c * kvd + j];
                put_f16(s, col, n);
            }
        }
    }
    flush(s);
}

kvp_status kvp_llama_state_write(eng_ctx *ctx, const eng_model *m, const int32_t *tokens, size_t n, int v_trans,
                                 const char *path, char *err, size_t errlen)
{
    const eng_info *in = eng_model_info(m);
    if (n == 0 || n > UINT32_MAX || (size_t)eng_kv_len(ctx) != n || eng_kv_next_pos(ctx) != (int32_t)n)
        return kvp_fail(err, errlen, KVP_ERR_USAGE,
                        "the context holds %d cells up to position %d, not the %zu tokens to export from position 0",
                        eng_kv_len(ctx), (int)eng_kv_next_pos(ctx), n);
    const size_t kvd = (size_t)in->n_head_kv * (size_t)in->head_dim;
    uint16_t *k = malloc(n * kvd * sizeof *k), *v = malloc(n * kvd * sizeof *v), *col = malloc(n * sizeof *col);
    sink *s = malloc(sizeof *s);
    base_replace r = {.fd = -1};
    kvp_status st = KVP_OK;
    if (!k || !v || !col || !s) {
        st = kvp_fail(err, errlen, KVP_ERR_NOMEM, "out of memory for %zu cells", n);
        goto out;
    }
    /* written beside the destination and renamed over it: a reader never sees half a file */
    if (base_replace_open(&r, path) != 0) {
        st = kvp_fail(err, errlen, KVP_ERR_IO, "cannot create a file beside %s: %s", path, strerror(errno));
        goto out;
    }
    s->fd = r.fd;
    s->n = 0;
    s->bad = 0;
    write_state(s, ctx, in, tokens, (uint32_t)n, v_trans, k, v, col);
    if (s->bad) {
        const int e = errno ? errno : EIO;
        base_replace_abort(&r);
        st = s->bad == 2 ? kvp_fail(err, errlen, KVP_ERR_ENGINE, "cannot read the context's KV")
                         : kvp_fail(err, errlen, KVP_ERR_IO, "writing %s: %s", path, strerror(e));
    } else if (base_replace_commit(&r) != 0) {
        st = kvp_fail(err, errlen, KVP_ERR_IO, "writing %s: %s", path, strerror(errno));
    }
out:
    free(s);
    free(k);
    free(v);
    free(col);
    return st;
}

/* ---- reading: a state file llama.cpp saved, into a context (kvpubd publish --from-llama-state) */

typedef struct src {
    FILE *f;
    const char *path;
    int bad;
} src;

static uint32_t get_u32(src *s)
{
    unsigned char b[4];
    if (fread(b, 1, 4, s->f) != 4) {
        s->bad = 1;
        return 0;
    }
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t get_u64(src *s)
{
    uint64_t lo = get_u32(s);
    return lo | (uint64_t)get_u32(s) << 32;
}

/* n f16 values, little-endian in the file, read in one call (and put in host order in place
 * where the host is not little-endian) */
static void get_f16(src *s, uint16_t *v, size_t n)
{
    if (s->bad || fread(v, 2, n, s->f) != n) {
        s->bad = 1;
        return;
    }
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    const unsigned char *b = (const unsigned char *)v;
    for (size_t i = 0; i < n; i++)
        v[i] = (uint16_t)(b[2 * i] | b[2 * i + 1] << 8);
#endif
}

/* Reads every layer's K, then every layer's V, straight into the cells [0, n) of ctx: a
 * layer's block at a time through buf (n * kvd values), its rows spread over the cache's kv
 * heads; a transposed V block (kvd rows of n cells) is turned 16 cells at a time on the way. */
static kvp_status read_kv(src *s, eng_ctx *ctx, const eng_info *in, uint32_t n, uint16_t *buf, char *err,
                          size_t errlen)
{
    const size_t hd = (size_t)in->head_dim, kvd = (size_t)in->n_head_kv * hd, blk = (size_t)n * kvd;
    uint32_t v_trans = get_u32(s), n_layer = get_u32(s);
    if (!s->bad && (v_trans > 1 || n_layer != (uint32_t)in->n_layer))
        return kvp_fail(err, errlen, KVP_ERR_REFUSED, "%s: %u layers (v_trans %u), the model has %d", s->path, n_layer,
                        v_trans, in->n_layer);
    for (int pass = 0; pass < 2 && !s->bad; pass++) {
        for (int il = 0; il < in->n_layer && !s->bad; il++) {
            uint16_t *k, *v;
            size_t hs;
            if (eng_kv_rows_f16(ctx, il, 0, (int)n, &k, &v, &hs) != ENG_OK)
                return kvp_fail(err, errlen, KVP_ERR_ENGINE, "the context cannot take %u f16 cells", n);
            uint16_t *dst = pass ? v : k;
            uint32_t type = get_u32(s);
            if (pass == 0 || !v_trans) {
                uint64_t row = get_u64(s);
                if (!s->bad && (type != GGML_TYPE_F16_ID || row != kvd * 2))
                    return kvp_fail(err, errlen, KVP_ERR_REFUSED,
                                    "%s: layer %d %s is type %u with %llu-byte rows; the model's f16 rows are %zu "
                                    "bytes (only f16 K/V caches are read)",
                                    s->path, il, pass ? "V" : "K", type, (unsigned long long)row, kvd * 2);
                get_f16(s, buf, blk); /* n rows of kvd */
                for (uint32_t c = 0; c < n && !s->bad; c++)
                    for (size_t h = 0; h < (size_t)in->n_head_kv; h++)
                        memcpy(dst + h * hs + (size_t)c * hd, buf + (size_t)c * kvd + h * hd, hd * sizeof *buf);
                continue;
            }
            uint32_t el = get_u32(s), width = get_u32(s);
            if (!s->bad && (type != GGML_TYPE_F16_ID || el != 2 || width != kvd))
                return kvp_fail(err, errlen, KVP_ERR_REFUSED, "%s: layer %d V is type %u, %u wide; the model needs f16, %zu",
                                s->path, il, type, width, kvd);
            get_f16(s, buf, blk); /* kvd rows of n cells */
            for (uint32_t c0 = 0; c0 < n && !s->bad; c0 += 16) {
                const uint32_t c1 = n - c0 < 16 ? n : c0 + 16;
                for (size_t j = 0; j < kvd; j++)
                    for (uint32_t c = c0; c < c1; c++)
                        dst[j / hd * hs + (size_t)c * hd + j % hd] = buf[j * n + c];
            }
        }
    }
    return KVP_OK;
}

kvp_status kvp_llama_state_read(eng_ctx *ctx, const eng_model *m, const char *path, const int32_t *want,
                                size_t n_want, char *err, size_t errlen)
{
    const eng_info *in = eng_model_info(m);
    src s = {fopen(path, "rb"), path, 0};
    if (!s.f)
        return kvp_fail(err, errlen, KVP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    kvp_status st = KVP_OK;
    uint16_t *buf = NULL;
    uint32_t magic = get_u32(&s), version = get_u32(&s), n = get_u32(&s);
    if (!s.bad && (magic != LLAMA_STATE_MAGIC || version != LLAMA_STATE_VERSION)) {
        st = kvp_fail(err, errlen, KVP_ERR_FORMAT, "%s: not a llama.cpp sequence state of version %d (magic %08x, "
                      "version %u)", path, LLAMA_STATE_VERSION, magic, version);
        goto out;
    }
    if (!s.bad && n != n_want) {
        st = kvp_fail(err, errlen, KVP_ERR_REFUSED, "%s: %u tokens, but BOS and the document under this model's "
                      "tokenizer are %zu", path, n, n_want);
        goto out;
    }
    for (uint32_t i = 0; i < n && !s.bad; i++) {
        int32_t t = (int32_t)get_u32(&s);
        if (!s.bad && t != want[i]) {
            st = kvp_fail(err, errlen, KVP_ERR_REFUSED, "%s: token %u is %d, but the document under this model's "
                          "tokenizer has %d there", path, i, t, want[i]);
            goto out;
        }
    }
    uint32_t n_stream = get_u32(&s), cells = get_u32(&s);
    if (!s.bad && (n_stream != 1 || cells != n)) {
        st = kvp_fail(err, errlen, KVP_ERR_REFUSED, "%s: %u streams with %u cells; one stream of %u cells expected",
                      path, n_stream, cells, n);
        goto out;
    }
    for (uint32_t i = 0; i < n && !s.bad; i++) {
        uint32_t pos = get_u32(&s), n_seq = get_u32(&s);
        (void)get_u32(&s); /* the sequence id it was saved from */
        if (!s.bad && (pos != i || n_seq != 1)) {
            st = kvp_fail(err, errlen, KVP_ERR_REFUSED, "%s: cell %u holds position %u (%u sequences); positions "
                          "0..n-1 of one sequence expected", path, i, pos, n_seq);
            goto out;
        }
    }
    buf = malloc(((size_t)n * (size_t)in->n_head_kv * (size_t)in->head_dim + 1) * sizeof *buf);
    if (!buf) {
        st = kvp_fail(err, errlen, KVP_ERR_NOMEM, "out of memory for %u cells", n);
        goto out;
    }
    if ((st = read_kv(&s, ctx, in, n, buf, err, errlen)) != KVP_OK)
        goto out;
    if (s.bad || fgetc(s.f) != EOF) {
        st = kvp_fail(err, errlen, KVP_ERR_FORMAT, "%s: %s", path, s.bad ? "truncated" : "bytes after the state");
        goto out;
    }
    if (eng_kv_commit(ctx, 0, (int)n, 0) != ENG_OK)
        st = kvp_fail(err, errlen, KVP_ERR_ENGINE, "committing %u cells failed", n);
out:
    fclose(s.f);
    free(buf);
    return st;
}
