/* api_read.c: the GET endpoints of spec/http-api.md over store/: catalog, publisher keys,
 * manifests and blob downloads (Range, ETag, bearer tokens spending a download budget). */
#include "kvpubd/api.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define QUERY_TEXT_MAX 200
#define OFFSET_MAX 1000000000u

static json_t *time_json(int64_t t)
{
    char buf[32];
    return t ? json_string(kvb_time_format(t, buf, sizeof buf)) : json_null();
}

/* The declared context a listing was prefilled after: {"tokens", "sha256"}, or null. */
static json_t *context_json(const kvs_blob *b)
{
    char hex[65];
    if (!b->n_context)
        return json_null();
    return json_pack("{s:I, s:s}", "tokens", (json_int_t)b->n_context, "sha256", kvc_hex(b->context_sha256, 32, hex));
}

static json_t *blob_json(const kvs_blob *b)
{
    char id[65], doc[65], mfp[65], tfp[65], pub[17];
    kvc_hex(b->id, 32, id);
    json_t *shape = json_loads(b->model_shape ? b->model_shape : "", 0, NULL);
    json_t *rope = json_loads(b->rope ? b->rope : "", 0, NULL);
    char url[100], murl[110];
    snprintf(url, sizeof url, "/v1/blobs/%s", id);
    snprintf(murl, sizeof murl, "/v1/blobs/%s/manifest", id);
    return json_pack("{s:s, s:{s:s, s:s, s:s?, s:s, s:I}, s:{s:s, s:s, s:o*}, s:s, s:o*, s:s, s:I, s:I, "
                     "s:I, s:o, s:o, s:I, s:s, s:s, s:s, s:o}",
                     "id", id,
                     "document", "sha256", kvc_hex(b->doc_sha256, 32, doc), "title", b->doc_title ? b->doc_title : "",
                     "source_uri", b->doc_source_uri, "media_type", b->doc_media_type ? b->doc_media_type : "",
                     "bytes", (json_int_t)b->doc_bytes,
                     "model", "fingerprint", kvc_hex(b->model_fp, 32, mfp), "arch", b->model_arch ? b->model_arch : "",
                     "shape", shape,
                     "tokenizer_fingerprint", kvc_hex(b->tokenizer_fp, 32, tfp), "rope", rope,
                     "codec", b->codec ? b->codec : "", "tokens", (json_int_t)b->n_tokens,
                     "bytes", (json_int_t)b->size, "price", (json_int_t)b->price,
                     "created", time_json(b->created), "expires", time_json(b->expires),
                     "serial", (json_int_t)b->serial, "publisher_key_id", kvc_hex(b->publisher_id, 8, pub),
                     "url", url, "manifest_url", murl, "context", context_json(b));
}

/* ---- GET /v1/catalog ---- */

static int arg_hex32(kvsrv_req *r, const char *name, uint8_t out[32], const uint8_t **set)
{
    const char *v = kvsrv_arg(r, name);
    *set = NULL;
    if (!v)
        return 0;
    if (!kvsrv_is_id(v) || kvc_unhex(v, out, 32) != KVC_OK)
        return -1;
    *set = out;
    return 0;
}

enum MHD_Result kvsrv_catalog(kvsrv_req *r)
{
    uint8_t model[32], doc[32], ctx[32];
    kvs_query q = {0};
    if (arg_hex32(r, "model", model, &q.model_fp) != 0)
        return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request",
                                   "model must be a model fingerprint: 64 lowercase hex digits");
    if (arg_hex32(r, "doc", doc, &q.doc_sha256) != 0)
        return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request",
                                   "doc must be a document SHA-256: 64 lowercase hex digits");
    const char *cs = kvsrv_arg(r, "context");
    if (cs && strcmp(cs, "none") == 0)
        q.no_context = 1;
    else if (arg_hex32(r, "context", ctx, &q.context_sha256) != 0)
        return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request",
                                   "context must be a declared context's SHA-256 (64 lowercase hex digits) or none");
    uint8_t pub[8];
    const char *ps = kvsrv_arg(r, "publisher");
    if (ps) {
        if (strlen(ps) != 16 || strspn(ps, "0123456789abcdef") != 16 || kvc_unhex(ps, pub, sizeof pub) != KVC_OK)
            return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request",
                                       "publisher must be a key id: 16 lowercase hex digits");
        q.publisher_id = pub;
    }
    const char *t = kvsrv_arg(r, "q");
    if (t && strlen(t) > QUERY_TEXT_MAX)
        return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "q is longer than %d bytes",
                                   QUERY_TEXT_MAX);
    q.title_contains = t && *t ? t : NULL;
    uint64_t limit = KVS_QUERY_DEFAULT_LIMIT, offset = 0;
    const char *ls = kvsrv_arg(r, "limit"), *os = kvsrv_arg(r, "offset");
    if (ls && (base_parse_u64(ls, &limit) != 0 || limit < 1 || limit > KVS_QUERY_MAX_LIMIT))
        return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "limit must be 1..%d",
                                   KVS_QUERY_MAX_LIMIT);
    if (os && (base_parse_u64(os, &offset) != 0 || offset > OFFSET_MAX))
        return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "offset must be 0..%u", OFFSET_MAX);
    q.limit = (size_t)limit;
    q.offset = (size_t)offset;
    q.now = (int64_t)time(NULL);
    kvs_list *l = NULL;
    char e[256];
    kvs_store *st = kvsrv_pool_get(r->srv);
    kvs_status s1 = kvs_store_catalog(st, &q, &l, e, sizeof e);
    kvsrv_pool_put(r->srv, st);
    if (s1 != KVS_OK)
        return kvsrv_store_error(r, s1, e);
    json_t *items = json_array();
    size_t n = kvs_list_count(l);
    for (size_t i = 0; i < n && items; i++)
        if (json_array_append_new(items, blob_json(kvs_list_get(l, i))) != 0) {
            json_decref(items);
            items = NULL;
        }
    uint64_t total = kvs_list_total(l);
    kvs_list_free(l);
    if (!items)
        return MHD_NO;
    uint64_t next = offset + n;
    return kvsrv_respond_json(r, MHD_HTTP_OK,
                              json_pack("{s:o, s:I, s:I, s:o}", "items", items, "total", (json_int_t)total,
                                        "offset", (json_int_t)offset, "next",
                                        n && next < total ? json_integer((json_int_t)next) : json_null()));
}

/* ---- GET /v1/keys ---- */

/* The document is built by the store (publishers of STORE/keys, revoked ids, the store's
 * signing keys), so an exported repository carries the same bytes (kvpubd export). */
enum MHD_Result kvsrv_keys(kvsrv_req *r)
{
    kvs_store *st = kvsrv_pool_get(r->srv);
    char *doc = NULL, e[512];
    size_t len = 0;
    kvs_status ks = kvs_store_keys_document(st, &doc, &len, e, sizeof e);
    kvsrv_pool_put(r->srv, st);
    if (ks != KVS_OK)
        return kvsrv_store_error(r, ks, e);
    return kvsrv_respond_text(r, MHD_HTTP_OK, "application/json", doc, len);
}

/* ---- GET /v1/snapshot ---- */

/* Signs a new snapshot into the cache when the catalog moved or half its lifetime is gone.
 * Called with snap_mu held. Returns KVS_OK, or the failure with e filled. */
static kvs_status snapshot_refresh(kvsrv *s, int64_t now, char *e, size_t elen)
{
    if (s->snap && now == s->snap_checked)
        return KVS_OK;
    kvs_store *st = kvsrv_pool_get(s);
    uint64_t gen = 0;
    kvs_status ks = kvs_store_catalog_gen(st, &gen, e, elen);
    int due = !s->snap || gen != s->snap_gen || now >= s->snap_issued + (s->snap_expires - s->snap_issued) / 2;
    kvc_key *key = NULL;
    kvs_snapshot snap;
    if (ks == KVS_OK && due && (ks = kvs_store_key_active(st, &key, e, elen)) == KVS_OK) {
        ks = kvs_store_snapshot(st, key, now, s->cfg.snapshot_ttl_s ? s->cfg.snapshot_ttl_s : 86400, &snap, e, elen);
        kvc_key_free(key);
        if (ks == KVS_OK) {
            free(s->snap);
            free(snap.payload);
            s->snap = snap.bytes;
            s->snap_len = snap.len;
            s->snap_gen = snap.gen;
            s->snap_issued = snap.issued;
            s->snap_expires = snap.expires;
            kvsrv_log(s, "info", "event=snapshot version=%" PRIu64 " blobs=%zu", snap.version, snap.n_blobs);
        }
    }
    kvsrv_pool_put(s, st);
    if (ks == KVS_OK)
        s->snap_checked = now;
    return ks;
}

enum MHD_Result kvsrv_snapshot(kvsrv_req *r)
{
    kvsrv *s = r->srv;
    char e[512];
    pthread_mutex_lock(&s->snap_mu);
    kvs_status ks = snapshot_refresh(s, (int64_t)time(NULL), e, sizeof e);
    char *copy = ks == KVS_OK ? malloc(s->snap_len) : NULL;
    size_t len = s->snap_len;
    if (copy)
        memcpy(copy, s->snap, len);
    pthread_mutex_unlock(&s->snap_mu);
    if (ks == KVS_ERR_NOTFOUND)
        return kvsrv_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found",
                                   "this store signs no snapshot: it has no active signing key");
    if (ks != KVS_OK)
        return kvsrv_store_error(r, ks, e);
    if (!copy)
        return MHD_NO;
    struct MHD_Response *resp = kvsrv_text_response(r, "application/json", copy, len);
    if (!resp)
        return MHD_NO;
    /* short: a cache in front must not hold a snapshot until it freezes */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "public, max-age=60");
    return kvsrv_queue(r, MHD_HTTP_OK, resp);
}

/* ---- GET /v1/blobs/{id}/manifest ---- */

static int read_full(int fd, void *buf, size_t len, uint64_t off)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, (char *)buf + got, len - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return 0;
}

enum MHD_Result kvsrv_manifest(kvsrv_req *r)
{
    kvsrv_blob_ref b;
    if (kvsrv_blob_find(r, &b) != 0)
        return b.done;
    uint8_t hdr[KVB_HEADER_LEN];
    kvb_status st = KVB_ERR_IO;
    size_t prefix = 0;
    int fd = open(b.path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0 && read_full(fd, hdr, sizeof hdr, 0) == 0)
        prefix = kvb_prefix_len(hdr, sizeof hdr, &st);
    char *json = NULL;
    size_t mlen = prefix > KVB_HEADER_LEN + KVC_SIG_LEN ? prefix - KVB_HEADER_LEN - KVC_SIG_LEN : 0;
    /* the manifest is the signed JSON exactly as the blob holds it (kvb_prefix_len has
     * already held its length to KVB_MAX_MANIFEST) */
    if (mlen && (json = malloc(mlen)) && read_full(fd, json, mlen, KVB_HEADER_LEN) != 0) {
        free(json);
        json = NULL;
    }
    if (fd >= 0)
        close(fd);
    if (!json) {
        kvsrv_log(r->srv, "error", "event=manifest id=%s detail=\"unreadable blob file %s (%s)\"", r->id, b.path,
                  kvb_status_str(st));
        return kvsrv_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "blob file unreadable");
    }
    struct MHD_Response *resp = kvsrv_text_response(r, "application/json", json, mlen);
    if (!resp)
        return MHD_NO;
    char etag[80];
    snprintf(etag, sizeof etag, "\"%s.manifest\"", r->id);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "public, max-age=31536000, immutable");
    return kvsrv_queue(r, MHD_HTTP_OK, resp);
}

/* ---- GET /v1/blobs/{id} ---- */

static enum MHD_Result token_refused(kvsrv_req *r, kvs_status st, const char *e)
{
    switch (st) {
    case KVS_TOKEN_UNKNOWN:
        return kvsrv_respond_error(r, MHD_HTTP_UNAUTHORIZED, "invalid_token", "unknown access token");
    case KVS_TOKEN_EXPIRED:
        return kvsrv_respond_error(r, MHD_HTTP_FORBIDDEN, "token_expired", "the access token has expired");
    case KVS_TOKEN_EXHAUSTED:
        return kvsrv_respond_error(r, MHD_HTTP_FORBIDDEN, "token_exhausted",
                                   "the access token has no downloads left");
    case KVS_TOKEN_WRONG_BLOB:
        return kvsrv_respond_error(r, MHD_HTTP_FORBIDDEN, "token_wrong_blob",
                                   "the access token was bought for another blob");
    case KVS_ERR_REVOKED: /* revoked between the lookup and the spend */
        return kvsrv_respond_error(r, MHD_HTTP_GONE, "revoked", "%s", e);
    default:
        return kvsrv_store_error(r, st, e);
    }
}

/* A priced blob: the request's bearer token pays for the len bytes it asks for. Returns 0, or
 * -1 with the refusal queued and its result in *done. */
static int spend_token(kvsrv_req *r, const uint8_t id[32], uint64_t len, enum MHD_Result *done)
{
    const char *tok = kvsrv_bearer(r);
    uint8_t raw[KVS_TOKEN_LEN];
    if (!tok) {
        *done = kvsrv_respond_error(r, MHD_HTTP_UNAUTHORIZED, "token_required",
                                    "this blob is priced: send Authorization: Bearer TOKEN (POST /v1/purchases)");
        return -1;
    }
    if (strlen(tok) != 2 * KVS_TOKEN_LEN || kvc_unhex(tok, raw, sizeof raw) != KVC_OK) {
        *done = kvsrv_respond_error(r, MHD_HTTP_UNAUTHORIZED, "invalid_token", "access tokens are 64 hex digits");
        return -1;
    }
    /* A GET spends the bytes it asks for from the token's budget (downloads x blob size); what
     * is not delivered is given back when the request ends, so a resumption pays only for the
     * rest (spec/http-api.md "Download budget"). HEAD delivers no bytes: its token is checked
     * (known, this blob, not expired) and spends nothing. */
    int get = strcmp(r->method, MHD_HTTP_METHOD_GET) == 0;
    char e[256];
    uint32_t left = 0;
    kvs_store *st = kvsrv_pool_get(r->srv);
    kvs_status s1 = kvs_store_token_spend(st, raw, id, (int64_t)time(NULL), get ? len : 0, &left,
                                          &r->purchase_id, e, sizeof e);
    kvsrv_pool_put(r->srv, st);
    if (s1 == KVS_OK && get) {
        memcpy(r->token, raw, sizeof raw);
        r->spent = len;
    }
    kvc_wipe(raw, sizeof raw);
    if (s1 != KVS_OK) {
        *done = token_refused(r, s1, e);
        return -1;
    }
    return 0;
}

enum MHD_Result kvsrv_download(kvsrv_req *r)
{
    kvsrv_blob_ref b;
    if (kvsrv_blob_find(r, &b) != 0)
        return b.done;
    uint64_t size = b.size, price = b.price;
    int fd = open(b.path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || (uint64_t)sb.st_size != size) {
        kvsrv_log(r->srv, "error", "event=download id=%s detail=\"blob file %s missing or not %" PRIu64 " bytes\"",
                  r->id, b.path, size);
        if (fd >= 0)
            close(fd);
        return kvsrv_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "blob file unavailable");
    }
    char etag[70];
    snprintf(etag, sizeof etag, "\"%s\"", r->id);
    const char *inm = kvsrv_header(r, MHD_HTTP_HEADER_IF_NONE_MATCH);
    /* a client holding the bytes (the ETag is the blob's hash) owes nothing: checked before
     * the token so a revalidation never spends a download */
    if (inm && kvsrv_etag_matches(inm, etag)) {
        close(fd);
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (!resp)
            return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
        return kvsrv_queue(r, MHD_HTTP_NOT_MODIFIED, resp);
    }
    uint64_t start = 0, len = size;
    int ranged = 0;
    const char *range = kvsrv_header(r, MHD_HTTP_HEADER_RANGE);
    const char *ifr = kvsrv_header(r, MHD_HTTP_HEADER_IF_RANGE);
    if (range && (!ifr || strcmp(ifr, etag) == 0)) {
        ranged = kvsrv_parse_range(range, size, &start, &len);
        if (ranged < 0) {
            close(fd);
            char cr[40];
            snprintf(cr, sizeof cr, "bytes */%" PRIu64, size);
            return kvsrv_respond_error_hdr(r, MHD_HTTP_RANGE_NOT_SATISFIABLE, "range_not_satisfiable",
                                           MHD_HTTP_HEADER_CONTENT_RANGE, cr,
                                           "one range of bytes inside the blob is supported (got %.100s)", range);
        }
    }
    enum MHD_Result done;
    if (price && spend_token(r, b.id, len, &done) != 0) {
        close(fd);
        return done;
    }
    struct MHD_Response *resp = kvsrv_file_response(r, fd, start, len);
    if (!resp)
        return MHD_NO;
    r->file_response = 1;
    r->log_download = strcmp(r->method, MHD_HTTP_METHOD_GET) == 0;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/vnd.kvpub.blob");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
                            price ? "private, max-age=31536000, immutable" : "public, max-age=31536000, immutable");
    if (ranged > 0) {
        char cr[80];
        snprintf(cr, sizeof cr, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, start, start + len - 1, size);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_RANGE, cr);
        return kvsrv_queue(r, MHD_HTTP_PARTIAL_CONTENT, resp);
    }
    return kvsrv_queue(r, MHD_HTTP_OK, resp);
}

void kvsrv_download_finish(kvsrv_req *r, int completed_ok)
{
    char e[256], esc[1024];
    uint64_t sent = atomic_load(&r->file_bytes);
    if (r->spent > sent) { /* give back what this GET did not deliver */
        kvs_store *st = kvsrv_pool_get(r->srv);
        kvs_status s0 = kvs_store_token_refund(st, r->token, r->spent - sent, (int64_t)time(NULL), e, sizeof e);
        kvsrv_pool_put(r->srv, st);
        if (s0 != KVS_OK)
            kvsrv_log(r->srv, "error", "event=token_refund detail=\"%s\"", kvsrv_log_escape(e, esc, sizeof esc));
    }
    kvc_wipe(r->token, sizeof r->token);
    if (!r->log_download)
        return;
    uint8_t id[32];
    if (kvc_unhex(r->id, id, 32) != KVC_OK)
        return;
    kvs_store *st = kvsrv_pool_get(r->srv);
    kvs_status s1 = kvs_store_log_download(st, id, r->purchase_id, r->remote, atomic_load(&r->file_bytes),
                                           completed_ok ? (int)r->status : 499, (int64_t)time(NULL), e, sizeof e);
    kvsrv_pool_put(r->srv, st);
    if (s1 != KVS_OK)
        kvsrv_log(r->srv, "error", "event=download_log detail=\"%s\"", kvsrv_log_escape(e, esc, sizeof esc));
}
