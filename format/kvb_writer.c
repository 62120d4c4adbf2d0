/* kvb_writer.c: builds a blob: encodes chunks as they are added (kept in memory, because the
 * signed manifest that precedes them lists their hashes), then signs and emits it. */
#include "format/kvb_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct kvb_writer {
    kvb_manifest m;        /* copy of the caller's "in" fields; strings below */
    char *strs[4];
    uint8_t *tok;          /* n_tokens LE int32 */
    kvb_section *secs;     /* n_chunks */
    uint8_t **enc;         /* encoded chunk bytes */
    uint32_t added;        /* chunks added so far */
    kvb_codec_ctx *codec;
};

static char *dupstr(const char *s)
{
    return strdup(s ? s : "");
}

kvb_status kvb_writer_create(const kvb_manifest *meta, const int32_t *tokens,
                             const kvb_write_opts *opts, kvb_writer **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!meta || !tokens)
        return kvb_fail(err, errlen, KVB_ERR_USAGE, "writer: metadata and token ids are required");
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
    w->secs = calloc(w->m.n_chunks, sizeof *w->secs);
    w->enc = calloc(w->m.n_chunks, sizeof *w->enc);
    w->codec = kvb_codec_ctx_create(opts ? opts->zstd_level : 0);
    if (!w->strs[0] || !w->strs[1] || !w->strs[2] || !w->strs[3] || !w->tok || !w->secs || !w->enc || !w->codec) {
        kvb_writer_free(w);
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory");
    }
    w->m.doc_title = w->strs[0];
    w->m.doc_source_uri = w->strs[1];
    w->m.doc_media_type = w->strs[2];
    w->m.model_arch = w->strs[3];
    w->m.chunks = w->secs;
    for (uint32_t i = 0; i < m.n_tokens; i++)
        kvb_put32(w->tok + 4ull * i, (uint32_t)tokens[i]);
    w->m.tokens.offset = 0;
    w->m.tokens.length = 4ull * m.n_tokens;
    w->m.tokens.t0 = 0;
    w->m.tokens.t1 = m.n_tokens;
    kvc_sha256(w->tok, 4ull * m.n_tokens, w->m.tokens.sha256);
    memcpy(w->m.tokens_sha256, w->m.tokens.sha256, KVC_SHA256_LEN);
    *out = w;
    return KVB_OK;
}

void kvb_writer_free(kvb_writer *w)
{
    if (!w)
        return;
    for (int i = 0; i < 4; i++)
        free(w->strs[i]);
    if (w->enc)
        for (uint32_t i = 0; i < w->m.n_chunks; i++)
            free(w->enc[i]);
    free(w->enc);
    free(w->secs);
    free(w->tok);
    kvb_codec_ctx_free(w->codec);
    free(w);
}

kvb_status kvb_writer_add_chunk(kvb_writer *w, const uint16_t *kv, uint32_t n, char *err, size_t errlen)
{
    if (w->added >= w->m.n_chunks)
        return kvb_fail(err, errlen, KVB_ERR_USAGE, "writer: all %u chunks were already added", w->m.n_chunks);
    uint32_t i = w->added, t0 = i * w->m.chunk_tokens;
    uint32_t want = w->m.n_tokens - t0 < w->m.chunk_tokens ? w->m.n_tokens - t0 : w->m.chunk_tokens;
    if (n != want)
        return kvb_fail(err, errlen, KVB_ERR_USAGE, "writer: chunk %u of %u has %u tokens, expected %u", i,
                        w->m.n_chunks, n, want);
    size_t len = 0;
    kvb_status st = kvb_chunk_encode(w->codec, w->m.codec, kv, w->m.n_layer, n, w->m.kv_dim, &w->enc[i], &len,
                                     err, errlen);
    if (st)
        return st;
    kvb_section *s = &w->secs[i];
    uint64_t prev_end = i ? w->secs[i - 1].offset + w->secs[i - 1].length : w->m.tokens.length;
    s->offset = kvb_align(prev_end);
    s->length = len;
    s->t0 = t0;
    s->t1 = t0 + n;
    kvc_sha256(w->enc[i], len, s->sha256);
    w->m.stored_bytes += len;
    w->added++;
    return KVB_OK;
}

kvb_status kvb_writer_add_layers(kvb_writer *w, const uint16_t *const *k, const uint16_t *const *v,
                                 char *err, size_t errlen)
{
    if (w->added)
        return kvb_fail(err, errlen, KVB_ERR_USAGE, "writer: add_layers after add_chunk");
    const kvb_manifest *m = &w->m;
    size_t row = m->kv_dim;
    uint16_t *buf = malloc(2 * kvb_chunk_values(m->n_layer, m->chunk_tokens, m->kv_dim));
    if (!buf)
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory");
    kvb_status st = KVB_OK;
    for (uint32_t t0 = 0; t0 < m->n_tokens && !st; t0 += m->chunk_tokens) {
        uint32_t n = m->n_tokens - t0 < m->chunk_tokens ? m->n_tokens - t0 : m->chunk_tokens;
        for (uint32_t l = 0; l < m->n_layer; l++) { /* rows [t0, t0+n) are contiguous per layer */
            memcpy(buf + (size_t)(2 * l) * n * row, k[l] + (size_t)t0 * row, (size_t)n * row * 2);
            memcpy(buf + (size_t)(2 * l + 1) * n * row, v[l] + (size_t)t0 * row, (size_t)n * row * 2);
        }
        st = kvb_writer_add_chunk(w, buf, n, err, errlen);
    }
    free(buf);
    return st;
}

/* Emits header+manifest+signature; the sink gets (header+manifest+sig, padding, sections). */
typedef int (*sink_fn)(void *ctx, const void *p, size_t n);

static kvb_status emit(kvb_writer *w, const kvc_key *key, sink_fn sink, void *ctx, char *err, size_t errlen)
{
    if (w->added != w->m.n_chunks)
        return kvb_fail(err, errlen, KVB_ERR_USAGE, "writer: %u of %u chunks added", w->added, w->m.n_chunks);
    if (!key || !kvc_key_is_private(key))
        return kvb_fail(err, errlen, KVB_ERR_USAGE, "writer: a private key is required to sign");
    char *json = NULL;
    size_t jlen = 0;
    kvb_status st = kvb_manifest_serialize(&w->m, &json, &jlen, err, errlen);
    if (st)
        return st;
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
    uint64_t end = w->m.tokens.length;
    for (uint32_t i = 0; i < w->m.n_chunks && !bad; i++) {
        const kvb_section *s = &w->secs[i];
        bad = sink(ctx, zeros, s->offset - end) || sink(ctx, w->enc[i], s->length);
        end = s->offset + s->length;
    }
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
    if (w->added != w->m.n_chunks)
        return kvb_fail(err, errlen, KVB_ERR_USAGE, "writer: %u of %u chunks added", w->added, w->m.n_chunks);
    char *json = NULL;
    size_t jlen = 0;
    kvb_status st = kvb_manifest_serialize(&w->m, &json, &jlen, err, errlen);
    if (st)
        return st;
    free(json);
    uint64_t total = kvb_align(KVB_HEADER_LEN + jlen + KVC_SIG_LEN) + data_size(w);
    if (total > SIZE_MAX)
        return kvb_fail(err, errlen, KVB_ERR_LIMIT, "blob too large for memory");
    membuf b = {malloc(total), 0, total};
    if (!b.p)
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory (%llu bytes)", (unsigned long long)total);
    st = emit(w, key, mem_sink, &b, err, errlen);
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
    kvb_status st = emit(w, key, file_sink, f, err, errlen);
    if (!st && fflush(f) != 0)
        return kvb_fail(err, errlen, KVB_ERR_IO, "write failed: %s", strerror(errno));
    return st;
}

/* Makes the rename durable; best effort, since some filesystems refuse fsync on directories. */
static void sync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, (size_t)(slash - path) + 1) : strdup(".");
    int fd = dir ? open(dir, O_RDONLY | O_DIRECTORY) : -1;
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

kvb_status kvb_writer_finish_path(kvb_writer *w, const kvc_key *key, const char *path, char *err, size_t errlen)
{
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (!tmp)
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory");
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp.XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        kvb_status st = kvb_fail(err, errlen, KVB_ERR_IO, "%s: cannot create temporary file: %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        close(fd);
        unlink(tmp);
        free(tmp);
        return kvb_fail(err, errlen, KVB_ERR_IO, "%s: fdopen failed", path);
    }
    kvb_status st = kvb_writer_finish_file(w, key, f, err, errlen);
    if (!st && (fchmod(fd, 0644) != 0 || fsync(fd) != 0))
        st = kvb_fail(err, errlen, KVB_ERR_IO, "%s: fsync failed: %s", path, strerror(errno));
    if (fclose(f) != 0 && !st)
        st = kvb_fail(err, errlen, KVB_ERR_IO, "%s: close failed: %s", path, strerror(errno));
    if (!st && rename(tmp, path) != 0)
        st = kvb_fail(err, errlen, KVB_ERR_IO, "%s: rename failed: %s", path, strerror(errno));
    if (st)
        unlink(tmp);
    else
        sync_parent_dir(path);
    free(tmp);
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
