/* load.c: blob -> engine context: the identity check against the loaded model, streaming
 * verified read with parallel chunk decode, per-chunk K re-rotation and KV import. */
#include "kvpub/kvpub.h"

#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/fetch.h"
#include "kvpub/kvpub_internal.h"

#define READ_MAX (1u << 30) /* bytes per read(2) call */

static double cpu_now_s(void)
{
    struct rusage u;
    if (getrusage(RUSAGE_SELF, &u) != 0)
        return 0;
    return (double)u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + (double)u.ru_stime.tv_sec +
           u.ru_stime.tv_usec / 1e6;
}

typedef struct load {
    const kvp_load_opts *o;
    kvb_reader *r;       /* for the verified token ids of the tokens recomputed */
    uint32_t skip;       /* tokens from the start that are prefilled, not imported */
    int blend;           /* recompute CacheBlend's way once everything is imported */
    int prefilled;       /* they are */
    int cell0;           /* first cell of the document */
    int32_t pos;         /* position of its first token */
    int32_t delta;
    int in_place;        /* chunks decode straight into the cache's cells (f16 cache) */
    kvp_status st;       /* why a callback refused */
    double cb_s;         /* time inside callbacks (excluded from verify_decode) */
    int decoded;         /* reading the blob's decoded copy */
    kvp_load_stats *stats;
} load;

/* Compares the blob's declared context with the tokens before it: exact when they are the same
 * ids (then delta is 0 and the load is what a full prefill computes); else a one-line note. */
static void judge_context(const kvb_manifest *m, const kvp_load_opts *o, kvp_load_stats *ls)
{
    ls->n_context = m->n_context;
    ls->context_exact = 0;
    ls->context_note[0] = 0;
    if (!m->n_context)
        return;
    size_t nb = o->before ? o->n_before : 0, same = 0;
    while (same < nb && same < m->n_context && o->before[same] == m->context_ids[same])
        same++;
    if (same == nb && nb == m->n_context) {
        ls->context_exact = 1;
        return;
    }
    char hex[65];
    kvc_hex(m->context_sha256, 32, hex);
    if (same < nb && same < m->n_context)
        snprintf(ls->context_note, sizeof ls->context_note,
                 "your %zu tokens before it differ from its declared %u-token context (sha256:%.16s) at token %zu",
                 nb, m->n_context, hex, same);
    else
        snprintf(ls->context_note, sizeof ls->context_note,
                 "its declared context (sha256:%.16s) is %u tokens; you have %zu before it, the first %zu of them "
                 "agreeing", hex, m->n_context, nb, same);
}

static kvb_status on_manifest(void *user, const kvb_manifest *m, const kvb_header *h, char *err,
                              size_t errlen)
{
    load *l = user;
    double t = base_now_s();
    l->delta = l->pos - (int32_t)m->pos0;
    l->st = kvp_check_manifest(m, l->o->identity, l->delta, err, errlen);
    if (l->st != KVP_OK)
        return KVB_ERR_CALLBACK;
    l->stats->n_tokens = m->n_tokens;
    l->stats->n_chunks = m->n_chunks;
    judge_context(m, l->o, l->stats);
    int exact = m->n_context ? l->stats->context_exact : l->o->n_before == 0;
    if (!exact && l->o->recompute > 0 && l->o->method == KVP_RECOMPUTE_BLEND) {
        l->blend = 1;
    } else if (!exact && l->o->recompute > 0) {
        double k = ceil(l->o->recompute * (double)m->n_tokens);
        l->skip = k >= (double)m->n_tokens ? m->n_tokens : (uint32_t)k;
    }
    if (l->o->no_rerotate)
        l->delta = 0; /* committed at the new positions, keys as they were computed */
    uint16_t *k, *v;
    size_t hs;
    l->in_place = eng_kv_rows_f16(l->o->ctx, 0, l->cell0, 0, &k, &v, &hs) == ENG_OK;
    l->cb_s += base_now_s() - t;
    return KVB_OK;
}

/* With an f16 cache the reader decodes each verified chunk straight into the cells it will
 * occupy (cells past kv_len: invisible until committed, dropped if the load fails). */
static int on_dest(void *user, uint32_t index, uint32_t t0, uint32_t t1, uint16_t **k, uint16_t **v,
                   kvb_rows *rows)
{
    load *l = user;
    (void)index;
    if (!l->in_place || t0 < l->skip) /* rows that are recomputed must not land in their cells */
        return 0;
    const eng_info *in = eng_model_info(l->o->model);
    for (int layer = 0; layer < in->n_layer; layer++)
        if (eng_kv_rows_f16(l->o->ctx, layer, l->cell0 + (int)t0, (int)(t1 - t0), &k[layer], &v[layer],
                            &rows->seg_stride) != ENG_OK)
            return 0;
    rows->seg = (uint32_t)in->head_dim; /* each kv head's cells together */
    return 1;
}

/* Prefills the first skip tokens of the document at its positions, before any of its rows is
 * committed: they attend to the caller's real prefix at every layer (the verified token ids
 * arrived before the first chunk). */
static kvb_status recompute_head(load *l, char *err, size_t errlen)
{
    enum { BATCH = 512 };
    double t = base_now_s();
    const int32_t *ids = kvb_reader_tokens(l->r);
    eng_status es = ids ? ENG_OK : ENG_ERR_INTERNAL;
    for (uint32_t i = 0; i < l->skip && es == ENG_OK; i += BATCH) {
        uint32_t n = l->skip - i < BATCH ? l->skip - i : BATCH;
        es = eng_prefill(l->o->ctx, ids + i, NULL, n, NULL, NULL);
    }
    l->prefilled = 1;
    l->stats->n_recomputed = l->skip;
    l->stats->recompute_s = base_now_s() - t;
    l->cb_s += l->stats->recompute_s;
    if (es != ENG_OK) {
        l->st = kvp_fail(err, errlen, KVP_ERR_ENGINE, "recomputing the first %u tokens: %s", l->skip,
                         eng_status_str(es));
        return KVB_ERR_CALLBACK;
    }
    return KVB_OK;
}

/* Runs on the caller's thread, in chunk order, while the decode workers work on the next
 * chunks. A chunk decoded in place is committed (at the positions it was computed for, then
 * re-rotated in place by delta); otherwise, per layer, one copy of V and one of K into the
 * cache's contiguous cells, K re-rotated by the engine on that same pass. */
static kvb_status on_chunk(void *user, const kvb_chunk *c, char *err, size_t errlen)
{
    load *l = user;
    if (l->skip && !l->prefilled && recompute_head(l, err, errlen) != KVB_OK)
        return KVB_ERR_CALLBACK;
    if (c->t1 <= l->skip)
        return KVB_OK; /* all of this chunk was recomputed */
    double t = base_now_s();
    uint32_t t0 = c->t0 > l->skip ? c->t0 : l->skip; /* the first row imported */
    size_t off = (size_t)(t0 - c->t0) * c->kv_dim;
    int n = (int)(c->t1 - t0), cell = l->cell0 + (int)t0;
    eng_status es = ENG_OK;
    const char *what = "importing";
    for (uint32_t layer = 0; !c->in_place && es == ENG_OK && layer < c->n_layer; layer++) {
        const uint16_t *k = kvb_chunk_k(c, layer) + off, *v = kvb_chunk_v(c, layer) + off;
        es = l->delta != 0 ? eng_kv_import_layer_rerotated(l->o->ctx, (int)layer, cell, n, k, v, l->delta)
                           : eng_kv_import_layer(l->o->ctx, (int)layer, cell, n, k, v);
    }
    if (es == ENG_OK) {
        what = "committing";
        if (c->in_place) { /* at the positions it was made for, then moved in place */
            es = eng_kv_commit(l->o->ctx, cell, n, l->pos - l->delta + (int32_t)t0);
            if (es == ENG_OK)
                es = eng_kv_rerotate(l->o->ctx, cell, n, l->delta);
        } else {
            es = eng_kv_commit(l->o->ctx, cell, n, l->pos + (int32_t)t0);
        }
    }
    if (es != ENG_OK) {
        l->st = kvp_fail(err, errlen, KVP_ERR_ENGINE, "%s chunk %u (cells %d..%d): %s", what, c->index, cell,
                         cell + n, eng_status_str(es));
        return KVB_ERR_CALLBACK;
    }
    double dt = base_now_s() - t;
    l->cb_s += dt;
    if (l->delta != 0)
        l->stats->rerotate_s += dt;
    else
        l->stats->import_s += dt;
    l->stats->raw_bytes += 2 * (uint64_t)n * c->kv_dim * sizeof(uint16_t) * c->n_layer;
    return KVB_OK;
}

/* A regular file goes to kvb_reader_feed_fd: the decode workers pread and hash each chunk a
 * few leaves at a time, and copy f16 chunks to their KV rows as they go. Anything else (a
 * pipe) is read(2) straight into the reader's chunk buffers. Mapping the file
 * saves the kernel's copy, but the page cache is mapped in 4 KiB pages, and every page of a
 * fresh mapping cost about 2 us on its first touch even after MAP_POPULATE (a TLB fill, dear
 * in the VM the benchmarks run in): hashing 393 MB from a fresh mapping took 0.27 s, reading
 * it into a reused huge-page buffer and hashing it there 0.17 s. The reader holds a chunk
 * buffer per slot (one per decode thread, plus one), though, so a blob with chunks over
 * MAP_CHUNK is mapped instead, and the reader hashes and decodes straight from the mapping.
 * KVPUB_BLOB_READ=map maps every regular file, =pread never maps one (kvpub.h). */
#define MAP_CHUNK ((uint64_t)64 << 20)

typedef enum read_way { READ_AUTO, READ_MAP, READ_PREAD } read_way;

static kvp_status read_way_from_env(read_way *way, char *err, size_t errlen)
{
    const char *v = getenv("KVPUB_BLOB_READ");
    *way = READ_AUTO;
    if (!v || !*v || strcmp(v, "auto") == 0)
        return KVP_OK;
    if (strcmp(v, "map") == 0 || strcmp(v, "pread") == 0) {
        *way = v[0] == 'm' ? READ_MAP : READ_PREAD;
        return KVP_OK;
    }
    return kvp_fail(err, errlen, KVP_ERR_USAGE, "KVPUB_BLOB_READ='%s' is not map, pread or auto", v);
}

typedef struct source {
    int fd;
    read_way way;
    const uint8_t *map;
    size_t map_len;
} source;

static kvp_status feed_all(source *src, kvb_reader *r, const char *path, load *l, double *in_reader,
                           kvb_status *ks, char *err, size_t errlen)
{
    kvp_load_stats *st = l->stats;
    struct stat sb = {0};
    double t = base_now_s();
    if (fstat(src->fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0 && (uint64_t)sb.st_size <= SIZE_MAX) {
        /* The size the manifest declares, from the prefix alone, signer and signature checked
         * first (the reader verifies it all again): a file longer than that is refused before a
         * byte of the excess is mapped or read, however long it is */
        kvb_header h;
        kvb_manifest *m = NULL;
        uint64_t biggest = 0;
        if (kvb_peek_fd_trusted(src->fd, l->o->trust, &h, &m, err, errlen) == KVB_OK &&
            (!l->decoded || kvb_manifest_to_decoded(m, &h, err, errlen) == KVB_OK)) {
            if ((uint64_t)sb.st_size > h.file_size) {
                kvb_manifest_free(m);
                *ks = KVB_ERR_MALFORMED;
                if (err && errlen)
                    snprintf(err, errlen, "trailing data: the blob ends at byte %llu but the file is %llu bytes",
                             (unsigned long long)h.file_size, (unsigned long long)sb.st_size);
                return KVP_OK;
            }
            for (uint32_t i = 0; i < m->n_chunks; i++)
                biggest = m->chunks[i].length > biggest ? m->chunks[i].length : biggest;
        }
        kvb_manifest_free(m);
        if (err && errlen)
            err[0] = 0; /* a failed peek is the reader's to report, with the whole story */
        const int map = src->way == READ_MAP || (src->way == READ_AUTO && biggest > MAP_CHUNK);
        void *p = map ? mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, src->fd, 0)
                      : MAP_FAILED;
        if (p != MAP_FAILED) {
            src->map = p;
            src->map_len = (size_t)sb.st_size;
            st->mapped = 1;
            (void)madvise(p, src->map_len, MADV_SEQUENTIAL);
        }
    }
    st->read_s += base_now_s() - t;
    if (!src->map && S_ISREG(sb.st_mode)) {
        t = base_now_s();
        *ks = kvb_reader_feed_fd(r, src->fd, err, errlen);
        *in_reader += base_now_s() - t;
        st->file_bytes = (uint64_t)sb.st_size;
        return KVP_OK;
    }
    if (src->map) {
        st->file_bytes = src->map_len;
        t = base_now_s();
        *ks = kvb_reader_feed(r, src->map, src->map_len, err, errlen);
        *in_reader += base_now_s() - t;
        return KVP_OK;
    }
    for (;;) {
        void *buf;
        size_t cap;
        if ((*ks = kvb_reader_buffer(r, &buf, &cap, err, errlen)) != KVB_OK)
            return KVP_OK;
        t = base_now_s();
        ssize_t n = read(src->fd, buf, cap < READ_MAX ? cap : READ_MAX);
        st->read_s += base_now_s() - t;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return kvp_fail(err, errlen, KVP_ERR_IO, "reading %s: %s", path, strerror(errno));
        if (n == 0)
            return KVP_OK;
        st->file_bytes += (uint64_t)n;
        t = base_now_s();
        *ks = kvb_reader_commit(r, (size_t)n, err, errlen);
        *in_reader += base_now_s() - t;
        if (*ks != KVB_OK)
            return KVP_OK;
    }
}

/* Loads the file at path: the blob, or with decoded its decoded copy. */
static kvp_status load_file(const kvp_load_opts *o, const char *path, int decoded, int32_t **tokens,
                            uint32_t *n_tokens, kvp_load_stats *st, kvb_status *vst, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    if (tokens)
        *tokens = NULL;
    if (vst)
        *vst = KVB_OK;
    double t0 = base_now_s(), c0 = cpu_now_s();
    load l = {.o = o, .cell0 = eng_kv_len(o->ctx), .pos = eng_kv_next_pos(o->ctx), .st = KVP_OK, .stats = st,
              .decoded = decoded};
    st->pos = l.pos;
    st->n_threads = o->n_threads > 0 ? o->n_threads : eng_default_threads();
    st->decoded_copy = decoded;
    kvb_read_opts ro = {0};
    ro.decoded = decoded;
    ro.trust = o->trust;
    ro.now = o->now;
    ro.n_threads = st->n_threads;
    ro.on_manifest = on_manifest;
    ro.on_chunk = on_chunk;
    ro.on_dest = on_dest;
    ro.user = &l;

    source src = {.fd = -1};
    kvp_status wst = read_way_from_env(&src.way, err, errlen);
    if (wst != KVP_OK)
        return wst;
    if ((src.fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return kvp_fail(err, errlen, KVP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    kvb_reader *r = kvb_reader_create(&ro);
    l.r = r;
    kvp_status rst = KVP_OK;
    kvb_status ks = KVB_OK;
    double in_reader = 0;
    if (!r) {
        rst = kvp_fail(err, errlen, KVP_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((rst = feed_all(&src, r, path, &l, &in_reader, &ks, err, errlen)) != KVP_OK)
        goto out;
    if (ks == KVB_OK) {
        double t = base_now_s();
        ks = kvb_reader_finish(r, err, errlen);
        in_reader += base_now_s() - t;
    }
    if (ks != KVB_OK) {
        if (ks == KVB_ERR_CALLBACK && l.st != KVP_OK) {
            rst = l.st; /* our own refusal: err already says why */
        } else {
            rst = KVP_ERR_VERIFY;
            if (vst)
                *vst = ks;
        }
        goto out;
    }
    const kvb_manifest *m = kvb_reader_manifest(r);
    const int32_t *ids = kvb_reader_tokens(r);
    if (!m || !ids || eng_kv_len(o->ctx) != l.cell0 + (int)m->n_tokens) {
        rst = kvp_fail(err, errlen, KVP_ERR_VERIFY, "%s: blob ended without delivering all its tokens", path);
        if (vst)
            *vst = KVB_ERR_TRUNCATED;
        goto out;
    }
    if (l.blend) {
        double t = base_now_s();
        int kept = 0;
        eng_status es = eng_kv_blend(o->ctx, ids, l.cell0, (int)m->n_tokens, o->recompute, &kept);
        st->n_recomputed = (uint32_t)kept;
        st->recompute_s = base_now_s() - t;
        if (es != ENG_OK) {
            rst = kvp_fail(err, errlen, KVP_ERR_ENGINE, "recomputing %s: %s", path, eng_status_str(es));
            goto out;
        }
    }
    if (n_tokens)
        *n_tokens = m->n_tokens;
    if (tokens) {
        *tokens = malloc((m->n_tokens ? m->n_tokens : 1) * sizeof **tokens);
        if (!*tokens) {
            rst = kvp_fail(err, errlen, KVP_ERR_NOMEM, "out of memory");
            goto out;
        }
        memcpy(*tokens, ids, m->n_tokens * sizeof **tokens);
    }
    st->delta = l.delta;
out:
    st->verify_decode_s = in_reader - l.cb_s;
    if (r)
        st->read_s += kvb_reader_read_seconds(r);
    if (rst != KVP_OK && eng_kv_len(o->ctx) > l.cell0)
        (void)!eng_kv_truncate(o->ctx, l.cell0); /* nothing half-imported stays visible */
    kvb_reader_free(r);
    if (src.map)
        munmap((void *)src.map, src.map_len);
    close(src.fd);
    st->total_s = base_now_s() - t0;
    st->cpu_s = cpu_now_s() - c0;
    return rst;
}

/* 1 when the files at a and b begin with the same signed prefix (header, manifest and
 * signature): a decoded copy belongs to its blob, not merely to the same signer. */
static int same_prefix(const char *a, const char *b)
{
    int fa = open(a, O_RDONLY | O_CLOEXEC), fb = open(b, O_RDONLY | O_CLOEXEC), same = 0;
    uint8_t hdr[KVB_HEADER_LEN];
    kvb_status st;
    size_t n;
    if (fa >= 0 && fb >= 0 && pread(fa, hdr, sizeof hdr, 0) == (ssize_t)sizeof hdr &&
        (n = kvb_prefix_len(hdr, sizeof hdr, &st)) > 0) {
        uint8_t *pa = malloc(n), *pb = malloc(n);
        same = pa && pb && pread(fa, pa, n, 0) == (ssize_t)n && pread(fb, pb, n, 0) == (ssize_t)n &&
               memcmp(pa, pb, n) == 0;
        free(pa);
        free(pb);
    }
    if (fa >= 0)
        close(fa);
    if (fb >= 0)
        close(fb);
    return same;
}

kvp_status kvp_load_blob(const kvp_load_opts *o, const char *path, int32_t **tokens,
                         uint32_t *n_tokens, kvp_load_stats *stp, kvb_status *vst,
                         char *err, size_t errlen)
{
    kvp_load_stats local;
    kvp_load_stats *st = stp ? stp : &local;
    if (!o || !o->model || !o->ctx || !o->identity || !o->trust || !path) {
        memset(st, 0, sizeof *st);
        return kvp_fail(err, errlen, KVP_ERR_USAGE, "kvp_load_blob: missing argument");
    }
    char copy[PATH_MAX];
    struct stat sb;
    const int n = snprintf(copy, sizeof copy, "%s" KVB_DECODED_SUFFIX, path);
    if (o->no_decoded_copy || n < 0 || (size_t)n >= sizeof copy || stat(copy, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        kvp_status rs = load_file(o, path, 0, tokens, n_tokens, st, vst, err, errlen);
        const size_t pl = strlen(path), sl = strlen(KVB_DECODED_SUFFIX), el = err ? strlen(err) : 0;
        if (rs == KVP_ERR_VERIFY && pl > sl && strcmp(path + pl - sl, KVB_DECODED_SUFFIX) == 0 && err &&
            el < errlen)
            snprintf(err + el, errlen - el, " (%s looks like a decoded copy: give its blob, which loads through it)",
                     path);
        return rs;
    }
    /* The decoded copy, verified as strictly as the blob (signature, trust, expiry, every
     * byte against a signed digest); the blob itself when the copy is refused for any reason */
    char e[256] = "it is not this blob's (another signed prefix)";
    kvb_status cvst = KVB_ERR_MALFORMED;
    kvp_status rs = KVP_ERR_VERIFY;
    memset(st, 0, sizeof *st);
    if (same_prefix(path, copy) && (rs = load_file(o, copy, 1, tokens, n_tokens, st, &cvst, e, sizeof e)) == KVP_OK)
        return KVP_OK;
    double spent = st->total_s;
    int damaged = rs == KVP_ERR_VERIFY && kvb_bytes_bad(cvst);
    if (damaged)
        (void)unlink(copy); /* a derived file: the next kvfetch get writes it again */
    rs = load_file(o, path, 0, tokens, n_tokens, st, vst, err, errlen);
    snprintf(st->copy_note, sizeof st->copy_note, "decoded copy %s: %s", damaged ? "refused and removed" : "not used",
             e);
    st->total_s += spent;
    return rs;
}
