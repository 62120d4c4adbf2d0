/* publish.c: one document -> one signed, indexed blob: prefill [BOS, document] with engine/,
 * export each chunk's KV, encode and sign it (format/), and index it in the store (store/). */
#include "kvpub/kvpub.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "base/base.h"
#include "kvpub/kvpub_internal.h"

#define PREFILL_BATCH 256 /* tokens per eng_prefill call: progress granularity */

kvp_status kvp_document_read(const eng_model *model, const char *path, kvp_document *d, char *err,
                             size_t errlen)
{
    memset(d, 0, sizeof *d);
    d->path = path;
    FILE *f = fopen(path, "rb");
    if (!f)
        return kvp_fail(err, errlen, KVP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > KVP_DOC_MAX) {
        fclose(f);
        return kvp_fail(err, errlen, KVP_ERR_IO, "%s: not a regular file of at most %zu bytes", path,
                        (size_t)KVP_DOC_MAX);
    }
    d->text = malloc((size_t)sb.st_size + 1);
    d->len = d->text ? fread(d->text, 1, (size_t)sb.st_size, f) : 0;
    int bad = !d->text || ferror(f) || d->len != (size_t)sb.st_size;
    fclose(f);
    if (bad)
        return kvp_fail(err, errlen, KVP_ERR_IO, "%s: read error", path);
    d->text[d->len] = 0;
    kvc_sha256(d->text, d->len, d->sha256);
    /* a document's special-token strings are text, not control tokens */
    eng_status es = eng_tokenize(model, d->text, d->len, 0, 0, &d->ids, &d->n_tokens);
    if (es != ENG_OK)
        return kvp_fail(err, errlen, KVP_ERR_ENGINE, "%s: tokenizer failed: %s", path, eng_status_str(es));
    if (d->n_tokens == 0)
        return kvp_fail(err, errlen, KVP_ERR_USAGE, "%s: the document has no tokens", path);
    const eng_info *info = eng_model_info(model);
    size_t pos0 = info->add_bos && info->bos_id >= 0 ? 1 : 0;
    if (d->n_tokens + pos0 > (size_t)info->n_ctx_train || d->n_tokens > KVB_MAX_TOKENS)
        return kvp_fail(err, errlen, KVP_ERR_TOO_LONG,
                        "%s: document is %zu tokens, but the model's context is %d tokens (%zu after BOS); "
                        "split the document",
                        path, d->n_tokens, info->n_ctx_train, (size_t)info->n_ctx_train - pos0);
    return KVP_OK;
}

void kvp_document_clear(kvp_document *d)
{
    if (!d)
        return;
    BASE_FREE_ALL(d->text, d->ids);
    d->text = NULL;
    d->ids = NULL;
}

/* Does this publisher list (document, model, codec, context) already, and not expired? Returns 1
 * and the id if so (an expired listing is published again, and the store replaces it). ctx_sha:
 * the declared context's hash, NULL for none. */
static int already_published(kvs_store *st, const uint8_t doc_sha[32], const uint8_t model_fp[32], const char *codec,
                             const uint8_t key_id[KVC_KEYID_LEN], const uint8_t *ctx_sha, uint8_t id[32])
{
    kvs_query q = {.model_fp = model_fp, .doc_sha256 = doc_sha, .publisher_id = key_id, .limit = KVS_QUERY_MAX_LIMIT,
                   .context_sha256 = ctx_sha, .no_context = !ctx_sha, .now = (int64_t)time(NULL)};
    kvs_list *l = NULL;
    char e[256];
    if (kvs_store_catalog(st, &q, &l, e, sizeof e) != KVS_OK)
        return 0; /* the publish itself will find the duplicate */
    int found = 0;
    for (size_t i = 0; i < kvs_list_count(l) && !found; i++) {
        const kvs_blob *b = kvs_list_get(l, i);
        if (b->codec && strcmp(b->codec, codec) == 0) {
            memcpy(id, b->id, 32);
            found = 1;
        }
    }
    kvs_list_free(l);
    return found;
}

/* [BOS, context, document] as llama.cpp saved them: the file must hold exactly these tokens. */
static kvp_status from_llama_state(const kvp_publish_opts *o, const kvp_document *d, eng_ctx *ctx, char *err,
                                   size_t errlen)
{
    uint32_t pos0 = o->identity->pos0 + (uint32_t)o->n_context;
    int32_t *want = malloc((d->n_tokens + pos0) * sizeof *want);
    if (!want)
        return kvp_fail(err, errlen, KVP_ERR_NOMEM, "out of memory");
    if (o->identity->pos0)
        want[0] = eng_model_info(o->model)->bos_id;
    if (o->n_context)
        memcpy(want + o->identity->pos0, o->context_ids, o->n_context * sizeof *want);
    memcpy(want + pos0, d->ids, d->n_tokens * sizeof *want);
    kvp_status st = kvp_llama_state_read(ctx, o->model, o->llama_state, want, d->n_tokens + pos0, err, errlen);
    free(want);
    return st;
}

/* Prefills [BOS, context, document] into a fresh context (or reads them from o->llama_state). */
static kvp_status prefill(const kvp_publish_opts *o, const kvp_document *d, eng_ctx **out, char *err, size_t errlen)
{
    uint32_t pos0 = o->identity->pos0 + (uint32_t)o->n_context;
    eng_ctx_params cp = {.n_ctx = (int)(d->n_tokens + pos0), .n_threads = o->n_threads};
    if (eng_ctx_create(o->model, &cp, out, err, errlen) != ENG_OK)
        return KVP_ERR_ENGINE;
    if (o->llama_state)
        return from_llama_state(o, d, *out, err, errlen);
    eng_status es = ENG_OK;
    if (o->identity->pos0) {
        int32_t bos = eng_model_info(o->model)->bos_id;
        es = eng_prefill(*out, &bos, NULL, 1, NULL, NULL);
    }
    for (size_t i = 0; i < o->n_context && es == ENG_OK; i += PREFILL_BATCH) {
        size_t n = o->n_context - i < PREFILL_BATCH ? o->n_context - i : PREFILL_BATCH;
        es = eng_prefill(*out, o->context_ids + i, NULL, n, NULL, NULL);
    }
    for (size_t i = 0; i < d->n_tokens && es == ENG_OK; i += PREFILL_BATCH) {
        size_t n = d->n_tokens - i < PREFILL_BATCH ? d->n_tokens - i : PREFILL_BATCH;
        es = eng_prefill(*out, d->ids + i, NULL, n, NULL, NULL);
        if (o->progress)
            o->progress(o->user, i + n, d->n_tokens);
    }
    if (es != ENG_OK)
        return kvp_fail(err, errlen, KVP_ERR_ENGINE, "%s: prefill failed: %s", d->path, eng_status_str(es));
    return KVP_OK;
}

/* The manifest of d as o publishes it; strings point into title and uri. */
static void make_manifest(const kvp_publish_opts *o, const kvp_document *d, kvb_manifest *m, char *title,
                          size_t title_len, char *uri, size_t uri_len)
{
    const char *base = strrchr(d->path, '/');
    snprintf(title, title_len, "%s", o->title ? o->title : base ? base + 1 : d->path);
    /* the publisher's file system is nobody's business: no path unless a URI is given */
    snprintf(uri, uri_len, "%s", o->source_uri ? o->source_uri : "");
    size_t pl = strlen(d->path);
    memset(m, 0, sizeof *m);
    memcpy(m->doc_sha256, d->sha256, 32);
    m->doc_title = title;
    m->doc_source_uri = uri;
    m->doc_media_type = o->media_type ? o->media_type
                        : pl > 3 && strcmp(d->path + pl - 3, ".md") == 0 ? "text/markdown" : "text/plain";
    m->doc_bytes = d->len;
    kvp_identity_to_manifest(o->identity, m);
    m->n_context = (uint32_t)o->n_context;
    m->context_ids = o->context_ids;
    m->pos0 += m->n_context;
    m->n_tokens = (uint32_t)d->n_tokens;
    m->codec = o->codec;
    m->chunk_tokens = o->chunk_tokens ? o->chunk_tokens : kvp_default_chunk_tokens(m->n_layer, m->n_head_kv * m->head_dim);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m->created = (int64_t)ts.tv_sec;
    m->expires = o->expires_in ? m->created + (int64_t)o->expires_in : 0;
    /* unix nanoseconds: increases across runs without any state to keep */
    m->serial = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint32_t kvp_default_chunk_tokens(uint32_t n_layer, uint32_t kv_dim)
{
    const uint64_t per_token = (uint64_t)n_layer * 2 * kv_dim * 2;
    uint32_t t = KVB_MAX_CHUNK_TOKENS;
    while (t > 16 && per_token * t > KVP_CHUNK_BYTES)
        t /= 2;
    return t;
}

/* Exports ctx's KV of the document chunk by chunk into a signed blob written to f. */
static kvp_status write_blob(const kvp_publish_opts *o, const kvp_document *d, eng_ctx *ctx, const char *spill_dir,
                             FILE *f, char *err, size_t errlen)
{
    char title[KVB_MAX_STRING + 1], uri[PATH_MAX + 8];
    kvb_manifest m;
    make_manifest(o, d, &m, title, sizeof title, uri, sizeof uri);
    kvb_writer *w = NULL;
    uint32_t kv_dim = m.n_head_kv * m.head_dim, ct = m.chunk_tokens;
    size_t per_layer = (size_t)ct * kv_dim; /* f16 values of K (or V) of one layer in a chunk */
    uint16_t *buf = malloc(per_layer * 2 * m.n_layer * sizeof *buf);
    kvb_write_opts wo = {0, 0, spill_dir};
    kvp_status rc = KVP_ERR_FORMAT;
    if (!buf) {
        rc = kvp_fail(err, errlen, KVP_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (kvb_writer_create(&m, d->ids, &wo, &w, err, errlen) != KVB_OK)
        goto out;
    for (uint32_t t0 = 0; t0 < m.n_tokens; t0 += ct) {
        uint32_t n = m.n_tokens - t0 < ct ? m.n_tokens - t0 : ct;
        /* chunk layout (n_layer, 2, n, kv_dim); document token t sits in cell pos0 + t */
        for (uint32_t l = 0; l < m.n_layer; l++) {
            uint16_t *k = buf + (size_t)(2 * l) * n * kv_dim, *v = k + (size_t)n * kv_dim;
            eng_status es = eng_kv_export_layer(ctx, (int)l, (int)(m.pos0 + t0), (int)n, k, v);
            if (es != ENG_OK) {
                rc = kvp_fail(err, errlen, KVP_ERR_ENGINE, "%s: KV export failed: %s", d->path, eng_status_str(es));
                goto out;
            }
        }
        if (kvb_writer_add_chunk(w, buf, n, err, errlen) != KVB_OK)
            goto out;
    }
    if (kvb_writer_finish_file(w, o->key, f, err, errlen) != KVB_OK)
        goto out;
    rc = KVP_OK;
out:
    free(buf);
    kvb_writer_free(w);
    return rc;
}

/* Indexes the blob in f from its own manifest, as an upload would be. */
static kvp_status index_blob(const kvp_publish_opts *o, const kvp_document *d, const uint8_t key_id[KVC_KEYID_LEN],
                             FILE *f, kvp_publish_result *res, char *err, size_t errlen)
{
    struct stat sb;
    if (fflush(f) != 0 || fstat(fileno(f), &sb) != 0 || lseek(fileno(f), 0, SEEK_SET) != 0)
        return kvp_fail(err, errlen, KVP_ERR_IO, "%s: writing the blob: %s", d->path, strerror(errno));
    res->bytes = (uint64_t)sb.st_size;
    kvb_manifest *m = NULL;
    kvp_blobinfo bi = {0};
    kvs_publish_result pr;
    kvp_status rc = KVP_ERR_FORMAT;
    uint8_t *pre = malloc(KVB_HEADER_LEN + KVB_MAX_MANIFEST + KVC_SIG_LEN);
    ssize_t got = pre ? pread(fileno(f), pre, KVB_HEADER_LEN + KVB_MAX_MANIFEST + KVC_SIG_LEN, 0) : -1;
    if (got <= 0 || kvb_peek(pre, (size_t)got, o->key, NULL, &m, err, errlen) != KVB_OK)
        goto out;
    if (kvp_blobinfo_fill(&bi, m, key_id, o->price) != 0) {
        rc = kvp_fail(err, errlen, KVP_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (kvs_store_publish_own(o->store, &bi.blob, fileno(f), &pr, err, errlen) != KVS_OK) {
        rc = KVP_ERR_STORE;
        goto out;
    }
    memcpy(res->id, pr.id, 32);
    res->skipped = pr.already;
    rc = KVP_OK;
out:
    free(pre);
    kvp_blobinfo_clear(&bi);
    kvb_manifest_free(m);
    return rc;
}

kvp_status kvp_publish_document(const kvp_publish_opts *o, const kvp_document *d, kvp_publish_result *res,
                                char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    if (!o || !o->model || !o->identity || !o->key || !o->store || !o->store_dir || !d || !d->ids)
        return kvp_fail(err, errlen, KVP_ERR_USAGE, "kvp_publish_document: missing argument");
    if (o->n_context && !o->context_ids)
        return kvp_fail(err, errlen, KVP_ERR_USAGE, "kvp_publish_document: context ids missing");
    /* what the manifest would refuse after the prefill, refused before it */
    const char *base = strrchr(d->path, '/'), *title = o->title ? o->title : base ? base + 1 : d->path;
    json_t *jt = json_string(title); /* NULL for bytes that are not UTF-8 */
    const int title_ok = jt != NULL && strlen(title) <= KVB_MAX_STRING;
    json_decref(jt);
    if (!title_ok)
        return kvp_fail(err, errlen, KVP_ERR_USAGE, "%s: the title%s is %s: a manifest string is UTF-8 of at most %d "
                        "bytes (give --title)", d->path, o->title ? "" : " (the file's name)",
                        strlen(title) > KVB_MAX_STRING ? "too long" : "not UTF-8", KVB_MAX_STRING);
    if (o->expires_in > KVP_MAX_EXPIRES_S || o->price > INT64_MAX)
        return kvp_fail(err, errlen, KVP_ERR_USAGE, "%s: %s", d->path,
                        o->price > INT64_MAX ? "the price is over 2^63-1" : "the expiry is over 100 years away");
    const eng_info *info = eng_model_info(o->model);
    if (o->n_context > KVB_MAX_CONTEXT ||
        o->identity->pos0 + o->n_context + d->n_tokens > (size_t)info->n_ctx_train)
        return kvp_fail(err, errlen, KVP_ERR_TOO_LONG,
                        "%s: the declared context (%zu tokens) and the document (%zu) do not fit the model's "
                        "context of %d tokens%s", d->path, o->n_context, d->n_tokens, info->n_ctx_train,
                        o->identity->pos0 ? " with BOS" : "");
    uint8_t key_id[KVC_KEYID_LEN], ctx_sha[32];
    kvc_key_id(o->key, key_id);
    if (o->n_context && kvb_ids_sha256(o->context_ids, o->n_context, ctx_sha) != 0)
        return kvp_fail(err, errlen, KVP_ERR_NOMEM, "out of memory");
    if (already_published(o->store, d->sha256, o->identity->model_fp, kvb_codec_name(o->codec), key_id,
                          o->n_context ? ctx_sha : NULL, res->id)) {
        kvs_blob *b = NULL;
        if (kvs_store_blob_get(o->store, res->id, &b, err, errlen) == KVS_OK)
            res->bytes = b->size;
        kvs_blob_free(b);
        res->skipped = 1;
        return KVP_OK;
    }
    /* the store's tmp/ holds the blob being written and the chunks the writer spills */
    char tmp[PATH_MAX];
    int fd = kvp_store_tmpfd(o->store_dir);
    FILE *f = fd >= 0 ? fdopen(fd, "w+b") : NULL;
    if (!f) {
        kvp_status rc = kvp_fail(err, errlen, KVP_ERR_IO, "temp file in %s: %s", o->store_dir, strerror(errno));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    snprintf(tmp, sizeof tmp, "%s/tmp", o->store_dir); /* fits: kvp_store_tmpfd made it */
    eng_ctx *ctx = NULL;
    kvp_status rc = prefill(o, d, &ctx, err, errlen);
    if (rc == KVP_OK)
        rc = write_blob(o, d, ctx, tmp, f, err, errlen);
    eng_ctx_free(ctx);
    if (rc == KVP_OK)
        rc = index_blob(o, d, key_id, f, res, err, errlen);
    fclose(f);
    return rc;
}
