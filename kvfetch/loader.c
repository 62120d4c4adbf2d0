/* loader.c: blob -> engine context: manifest checks against the loaded model, streaming
 * verified read with parallel chunk decode, per-chunk K re-rotation and KV import. */
#include "kvfetch/loader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define READ_PIECE (8u << 20)

static double cpu_now_s(void)
{
    struct rusage u;
    if (getrusage(RUSAGE_SELF, &u) != 0)
        return 0;
    return (double)u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + (double)u.ru_stime.tv_sec +
           u.ru_stime.tv_usec / 1e6;
}

/* "sha256:" and the first 16 hex digits: enough to tell fingerprints apart in a message. */
static const char *short_fp(const uint8_t fp[32], char out[32])
{
    char hex[65];
    kvc_hex(fp, 32, hex);
    snprintf(out, 32, "sha256:%.16s...", hex);
    return out;
}

static const char *rope_type_name(int neox) { return neox ? "neox" : "normal"; }
static const char *scaling_name(int s)
{
    return s == KVB_SCALING_NONE ? "none" : s == KVB_SCALING_LINEAR ? "linear" : s == KVB_SCALING_YARN ? "yarn" : "?";
}

/* Describes the first RoPE parameter that differs into out; returns 0 if all agree. */
static int rope_diff(const kvb_manifest *m, const eng_info *in, char *out, size_t len)
{
    const eng_rope *r = &in->rope;
    int blob_neox = m->rope_type == KVB_ROPE_NEOX, model_neox = r->type == ENG_ROPE_NEOX;
    int model_scaling = r->scaling == ENG_ROPE_SCALING_LINEAR ? KVB_SCALING_LINEAR
                      : r->scaling == ENG_ROPE_SCALING_YARN   ? KVB_SCALING_YARN
                                                              : KVB_SCALING_NONE;
    if (blob_neox != model_neox)
        return snprintf(out, len, "RoPE type: blob %s, model %s", rope_type_name(blob_neox),
                        rope_type_name(model_neox)), 1;
    if (m->rope_n_rot != (uint32_t)r->n_rot)
        return snprintf(out, len, "RoPE n_rot: blob %u, model %d", m->rope_n_rot, r->n_rot), 1;
    /* the manifest carries the model's float values widened to double: compare as float */
    if ((float)m->rope_freq_base != r->freq_base)
        return snprintf(out, len, "RoPE freq_base: blob %g, model %g", m->rope_freq_base, (double)r->freq_base), 1;
    if ((float)m->rope_freq_scale != r->freq_scale)
        return snprintf(out, len, "RoPE freq_scale: blob %g, model %g", m->rope_freq_scale, (double)r->freq_scale), 1;
    if ((int)m->rope_scaling != model_scaling)
        return snprintf(out, len, "RoPE scaling: blob %s, model %s", scaling_name(m->rope_scaling),
                        scaling_name(model_scaling)), 1;
    if (model_scaling == KVB_SCALING_YARN) {
        if (m->rope_n_ctx_orig != (uint32_t)r->n_ctx_orig ||
            (float)m->yarn_ext_factor != r->yarn_ext_factor ||
            (float)m->yarn_attn_factor != r->yarn_attn_factor ||
            (float)m->yarn_beta_fast != r->yarn_beta_fast ||
            (float)m->yarn_beta_slow != r->yarn_beta_slow)
            return snprintf(out, len, "YaRN parameters: blob n_ctx_orig %u ext %g attn %g beta %g/%g, "
                            "model n_ctx_orig %d ext %g attn %g beta %g/%g",
                            m->rope_n_ctx_orig, m->yarn_ext_factor, m->yarn_attn_factor,
                            m->yarn_beta_fast, m->yarn_beta_slow, r->n_ctx_orig,
                            (double)r->yarn_ext_factor, (double)r->yarn_attn_factor,
                            (double)r->yarn_beta_fast, (double)r->yarn_beta_slow), 1;
    }
    return 0;
}

kvf_status kvf_check_manifest(const kvb_manifest *m, const eng_model *model,
                              const uint8_t model_fp[32], const uint8_t tok_fp[32],
                              int32_t delta, char *err, size_t errlen)
{
    const eng_info *in = eng_model_info(model);
    char a[32], b[32], rd[256] = "", shape[160] = "";
    int rope_differs = rope_diff(m, in, rd, sizeof rd);
    uint32_t kv_dim = (uint32_t)in->n_head_kv * (uint32_t)in->head_dim;
    int shape_differs = m->n_layer != (uint32_t)in->n_layer || m->n_head_kv != (uint32_t)in->n_head_kv ||
                        m->head_dim != (uint32_t)in->head_dim;
    if (shape_differs)
        snprintf(shape, sizeof shape, "KV shape: blob %u layers x %u kv heads x %u, model %d x %d x %d",
                 m->n_layer, m->n_head_kv, m->head_dim, in->n_layer, in->n_head_kv, in->head_dim);
    if (memcmp(m->model_fingerprint, model_fp, 32) != 0)
        return kvf_fail(err, errlen, KVF_ERR_REFUSED,
                    "model mismatch: blob wants %s (%s, %u layers), you loaded %s (%s, %d layers)%s%s%s%s",
                    short_fp(m->model_fingerprint, a), m->model_arch, m->n_layer, short_fp(model_fp, b),
                    in->arch, in->n_layer, rope_differs ? "; " : "", rd, shape_differs ? "; " : "", shape);
    if (memcmp(m->tokenizer_fingerprint, tok_fp, 32) != 0)
        return kvf_fail(err, errlen, KVF_ERR_REFUSED,
                    "tokenizer mismatch: blob wants %s, your model's tokenizer is %s (%s, %d tokens)",
                    short_fp(m->tokenizer_fingerprint, a), short_fp(tok_fp, b), in->tokenizer, in->n_vocab);
    /* the same fingerprint with another shape or RoPE means a publisher bug: still refuse */
    if (shape_differs || m->kv_dim != kv_dim)
        return kvf_fail(err, errlen, KVF_ERR_REFUSED, "blob does not fit the model: %s", shape);
    if (rope_differs)
        return kvf_fail(err, errlen, KVF_ERR_REFUSED, "cannot re-rotate exactly: %s", rd);
    if (delta != 0 && (in->rope.n_rot <= 0 || in->rope.n_rot % 2 || in->rope.n_rot > in->head_dim))
        return kvf_fail(err, errlen, KVF_ERR_REFUSED, "cannot re-rotate: RoPE n_rot %d with head_dim %d",
                    in->rope.n_rot, in->head_dim);
    return KVF_OK;
}

typedef struct load {
    const kvf_load_opts *o;
    int cell0;           /* first cell of the document */
    int32_t pos;         /* position of its first token */
    int32_t delta;
    int in_place;        /* chunks decode straight into the cache's cells (f16 cache) */
    kvf_status st;       /* why a callback refused */
    double cb_s;         /* time inside callbacks (excluded from verify_decode) */
    kvf_load_stats *stats;
} load;

static kvb_status on_manifest(void *user, const kvb_manifest *m, const kvb_header *h, char *err,
                              size_t errlen)
{
    load *l = user;
    double t = kvf_now_s();
    l->delta = l->pos - (int32_t)m->pos0;
    l->st = kvf_check_manifest(m, l->o->model, l->o->model_fp, l->o->tok_fp, l->delta, err, errlen);
    if (l->st != KVF_OK)
        return KVB_ERR_CALLBACK;
    l->stats->n_tokens = m->n_tokens;
    l->stats->n_chunks = m->n_chunks;
    uint16_t *k, *v;
    l->in_place = eng_kv_rows_f16(l->o->ctx, 0, l->cell0, 0, &k, &v) == ENG_OK;
    l->cb_s += kvf_now_s() - t;
    return KVB_OK;
}

/* With an f16 cache the reader decodes each verified chunk straight into the cells it will
 * occupy (cells past kv_len: invisible until committed, dropped if the load fails). */
static int on_dest(void *user, uint32_t index, uint32_t t0, uint32_t t1, uint16_t **k, uint16_t **v)
{
    load *l = user;
    (void)index;
    if (!l->in_place)
        return 0;
    const eng_info *in = eng_model_info(l->o->model);
    for (int layer = 0; layer < in->n_layer; layer++)
        if (eng_kv_rows_f16(l->o->ctx, layer, l->cell0 + (int)t0, (int)(t1 - t0), &k[layer], &v[layer]) != ENG_OK)
            return 0;
    return 1;
}

/* Runs on the caller's thread, in chunk order, while the decode workers work on the next
 * chunks. A chunk decoded in place is committed (at the positions it was computed for, then
 * re-rotated in place by delta); otherwise, per layer, one copy of V and one of K into the
 * cache's contiguous cells, K re-rotated by the engine on that same pass. */
static kvb_status on_chunk(void *user, const kvb_chunk *c, char *err, size_t errlen)
{
    load *l = user;
    double t = kvf_now_s();
    int n = (int)(c->t1 - c->t0), cell = l->cell0 + (int)c->t0;
    eng_status es = ENG_OK;
    const char *what = "importing";
    for (uint32_t layer = 0; !c->in_place && es == ENG_OK && layer < c->n_layer; layer++) {
        const uint16_t *k = kvb_chunk_k(c, layer), *v = kvb_chunk_v(c, layer);
        es = l->delta != 0 ? eng_kv_import_layer_rerotated(l->o->ctx, (int)layer, cell, n, k, v, l->delta)
                           : eng_kv_import_layer(l->o->ctx, (int)layer, cell, n, k, v);
    }
    if (es == ENG_OK) {
        what = "committing";
        if (c->in_place) { /* at the positions it was made for, then moved in place */
            es = eng_kv_commit(l->o->ctx, cell, n, l->pos - l->delta + (int32_t)c->t0);
            if (es == ENG_OK)
                es = eng_kv_rerotate(l->o->ctx, cell, n, l->delta);
        } else {
            es = eng_kv_commit(l->o->ctx, cell, n, l->pos + (int32_t)c->t0);
        }
    }
    if (es != ENG_OK) {
        l->st = kvf_fail(err, errlen, KVF_ERR_ENGINE, "%s chunk %u (cells %d..%d): %s", what, c->index, cell,
                         cell + n, eng_status_str(es));
        return KVB_ERR_CALLBACK;
    }
    double dt = kvf_now_s() - t;
    l->cb_s += dt;
    if (l->delta != 0)
        l->stats->rerotate_s += dt;
    else
        l->stats->import_s += dt;
    l->stats->raw_bytes += 2 * (uint64_t)n * c->kv_dim * sizeof(uint16_t) * c->n_layer;
    return KVB_OK;
}

/* The blob's bytes: mapped when it is a regular file (the reader hashes and decodes chunks
 * straight from the mapping: no copy at all), else read in large pieces. */
typedef struct source {
    int fd;
    const uint8_t *map;
    size_t map_len;
    uint8_t *buf;
} source;

static kvf_status feed_all(source *src, kvb_reader *r, const char *path, load *l, double *in_reader,
                           kvb_status *ks, char *err, size_t errlen)
{
    kvf_load_stats *st = l->stats;
    struct stat sb;
    double t = kvf_now_s();
    if (fstat(src->fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0 && (uint64_t)sb.st_size <= SIZE_MAX) {
        /* MAP_POPULATE: the page-cache pages are mapped in one batch instead of one fault per
         * 4 KiB page during hashing */
        void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, src->fd, 0);
        if (p != MAP_FAILED) {
            src->map = p;
            src->map_len = (size_t)sb.st_size;
            (void)madvise(p, src->map_len, MADV_SEQUENTIAL);
        }
    }
    st->read_s += kvf_now_s() - t;
    if (src->map) {
        st->file_bytes = src->map_len;
        t = kvf_now_s();
        *ks = kvb_reader_feed(r, src->map, src->map_len, err, errlen);
        *in_reader += kvf_now_s() - t;
        return KVF_OK;
    }
    src->buf = malloc(READ_PIECE);
    if (!src->buf)
        return kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
    for (;;) {
        t = kvf_now_s();
        ssize_t n = read(src->fd, src->buf, READ_PIECE);
        st->read_s += kvf_now_s() - t;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return kvf_fail(err, errlen, KVF_ERR_IO, "reading %s: %s", path, strerror(errno));
        if (n == 0)
            return KVF_OK;
        st->file_bytes += (uint64_t)n;
        t = kvf_now_s();
        *ks = kvb_reader_feed(r, src->buf, (size_t)n, err, errlen);
        *in_reader += kvf_now_s() - t;
        if (*ks != KVB_OK)
            return KVF_OK;
    }
}

kvf_status kvf_load_blob(const kvf_load_opts *o, const char *path, int32_t **tokens,
                         uint32_t *n_tokens, kvf_load_stats *stp, kvb_status *vst,
                         char *err, size_t errlen)
{
    kvf_load_stats local;
    kvf_load_stats *st = stp ? stp : &local;
    memset(st, 0, sizeof *st);
    if (tokens)
        *tokens = NULL;
    if (vst)
        *vst = KVB_OK;
    if (!o || !o->model || !o->ctx || !o->model_fp || !o->tok_fp || !o->trust || !path)
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "kvf_load_blob: missing argument");
    double t0 = kvf_now_s(), c0 = cpu_now_s();
    load l = {.o = o, .cell0 = eng_kv_len(o->ctx), .pos = eng_kv_next_pos(o->ctx), .st = KVF_OK, .stats = st};
    st->pos = l.pos;
    st->n_threads = o->n_threads > 0 ? o->n_threads : eng_default_threads();
    kvb_read_opts ro = {0};
    ro.trust = o->trust;
    ro.now = o->now;
    ro.n_threads = st->n_threads;
    ro.on_manifest = on_manifest;
    ro.on_chunk = on_chunk;
    ro.on_dest = on_dest;
    ro.user = &l;

    source src = {.fd = open(path, O_RDONLY | O_CLOEXEC)};
    if (src.fd < 0)
        return kvf_fail(err, errlen, KVF_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    kvb_reader *r = kvb_reader_create(&ro);
    kvf_status rst = KVF_OK;
    kvb_status ks = KVB_OK;
    double in_reader = 0;
    if (!r) {
        rst = kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((rst = feed_all(&src, r, path, &l, &in_reader, &ks, err, errlen)) != KVF_OK)
        goto out;
    if (ks == KVB_OK) {
        double t = kvf_now_s();
        ks = kvb_reader_finish(r, err, errlen);
        in_reader += kvf_now_s() - t;
    }
    if (ks != KVB_OK) {
        if (ks == KVB_ERR_CALLBACK && l.st != KVF_OK) {
            rst = l.st; /* our own refusal: err already says why */
        } else {
            rst = KVF_ERR_VERIFY;
            if (vst)
                *vst = ks;
        }
        goto out;
    }
    const kvb_manifest *m = kvb_reader_manifest(r);
    const int32_t *ids = kvb_reader_tokens(r);
    if (!m || !ids || eng_kv_len(o->ctx) != l.cell0 + (int)m->n_tokens) {
        rst = kvf_fail(err, errlen, KVF_ERR_VERIFY, "%s: blob ended without delivering all its tokens", path);
        if (vst)
            *vst = KVB_ERR_TRUNCATED;
        goto out;
    }
    if (n_tokens)
        *n_tokens = m->n_tokens;
    if (tokens) {
        *tokens = malloc((m->n_tokens ? m->n_tokens : 1) * sizeof **tokens);
        if (!*tokens) {
            rst = kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
            goto out;
        }
        memcpy(*tokens, ids, m->n_tokens * sizeof **tokens);
    }
    st->delta = l.delta;
out:
    st->verify_decode_s = in_reader - l.cb_s;
    if (rst != KVF_OK && eng_kv_len(o->ctx) > l.cell0)
        (void)!eng_kv_truncate(o->ctx, l.cell0); /* nothing half-imported stays visible */
    kvb_reader_free(r);
    if (src.map)
        munmap((void *)src.map, src.map_len);
    free(src.buf);
    close(src.fd);
    st->total_s = kvf_now_s() - t0;
    st->cpu_s = cpu_now_s() - c0;
    return rst;
}
