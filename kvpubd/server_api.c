/* server_api.c: the endpoints of spec/http-api.md over store/: catalog, keys, manifests,
 * downloads (Range, ETag, bearer tokens), purchases and verified publisher uploads. */
#include "kvpubd/server_internal.h"
#include "kvpub/kvpub.h"
#include "kvpubd/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#define QUERY_TEXT_MAX 200
#define OFFSET_MAX 1000000000u

/* ---- store pool ---- */

int kvsrv_store_open(kvsrv *s, char *err, size_t errlen)
{
    pthread_mutex_init(&s->pool_mu, NULL);
    pthread_cond_init(&s->pool_cv, NULL);
    /* one per worker thread, plus one so the metrics of a busy pool never wait */
    size_t n = (size_t)s->cfg.threads + 1;
    s->pool = calloc(n, sizeof *s->pool);
    if (!s->pool) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char e[256];
        kvs_status st = kvs_store_open(s->cfg.store_dir, &s->pool[i], e, sizeof e);
        if (st != KVS_OK) {
            snprintf(err, errlen, "store %s: %s", s->cfg.store_dir, e);
            return -1;
        }
        s->pool_n = s->pool_free = i + 1;
    }
    size_t dl = strlen(s->cfg.store_dir) + 6;
    s->keys_dir = malloc(dl);
    if (!s->keys_dir) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(s->keys_dir, dl, "%s/keys", s->cfg.store_dir);
    return 0;
}

void kvsrv_store_close(kvsrv *s)
{
    if (s->pool) {
        for (size_t i = 0; i < s->pool_n; i++)
            kvs_store_close(s->pool[i]);
        free(s->pool);
        pthread_mutex_destroy(&s->pool_mu);
        pthread_cond_destroy(&s->pool_cv);
    }
    s->pool = NULL;
    free(s->keys_dir);
    s->keys_dir = NULL;
}

/* The free handles are s->pool[0 .. pool_free). */
static kvs_store *pool_get(kvsrv *s)
{
    pthread_mutex_lock(&s->pool_mu);
    while (s->pool_free == 0)
        pthread_cond_wait(&s->pool_cv, &s->pool_mu);
    kvs_store *st = s->pool[--s->pool_free];
    pthread_mutex_unlock(&s->pool_mu);
    return st;
}

static void pool_put(kvsrv *s, kvs_store *st)
{
    pthread_mutex_lock(&s->pool_mu);
    s->pool[s->pool_free++] = st;
    pthread_cond_signal(&s->pool_cv);
    pthread_mutex_unlock(&s->pool_mu);
}

/* ---- helpers ---- */

static const char *hex(const uint8_t *b, size_t n, char *out)
{
    return kvc_hex(b, n, out);
}

static json_t *time_json(int64_t t)
{
    char buf[32];
    return t ? json_string(kvb_time_format(t, buf, sizeof buf)) : json_null();
}

static enum MHD_Result store_error(kvsrv_req *r, kvs_status st, const char *e)
{
    char esc[1024];
    kvsrv_log(r->srv, "error", "event=store status=\"%s\" detail=\"%s\"", kvs_status_str(st),
              kvsrv_log_escape(e, esc, sizeof esc));
    return kvsrv_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "index error (%s)",
                               kvs_status_str(st));
}

/* Looks the blob of r->id up. On success *out and the file path; else a response is queued
 * and *done holds its result. */
static int lookup_blob(kvsrv_req *r, uint8_t id[32], kvs_blob **out, char *path, size_t pathlen,
                       enum MHD_Result *done)
{
    if (kvc_unhex(r->id, id, 32) != KVC_OK) {
        *done = kvsrv_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found", "bad blob id");
        return -1;
    }
    char e[256];
    kvs_store *st = pool_get(r->srv);
    kvs_status s1 = kvs_store_blob_get(st, id, out, e, sizeof e);
    kvs_status s2 = s1 == KVS_OK ? kvs_store_blob_path(st, id, path, pathlen, e, sizeof e) : s1;
    pool_put(r->srv, st);
    if (s2 != KVS_OK) {
        if (s1 == KVS_OK)
            kvs_blob_free(*out);
        *out = NULL;
        *done = s2 == KVS_ERR_NOTFOUND
                    ? kvsrv_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found", "no blob %s", r->id)
                    : store_error(r, s2, e);
        return -1;
    }
    if ((*out)->revoked) {
        char pub[17];
        *done = kvsrv_respond_error(r, MHD_HTTP_GONE, "revoked", "blob %s is withdrawn: its publisher key %s is "
                                    "revoked", r->id, hex((*out)->publisher_id, 8, pub));
        kvs_blob_free(*out);
        *out = NULL;
        return -1;
    }
    if ((*out)->expires && (*out)->expires <= (int64_t)time(NULL)) {
        char ts[32];
        *done = kvsrv_respond_error(r, MHD_HTTP_GONE, "expired", "blob %s expired at %s", r->id,
                                    kvb_time_format((*out)->expires, ts, sizeof ts));
        kvs_blob_free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

static json_t *blob_json(const kvs_blob *b)
{
    char id[65], doc[65], mfp[65], tfp[65], pub[17];
    hex(b->id, 32, id);
    json_t *shape = json_loads(b->model_shape ? b->model_shape : "", 0, NULL);
    json_t *rope = json_loads(b->rope ? b->rope : "", 0, NULL);
    char url[100], murl[110];
    snprintf(url, sizeof url, "/v1/blobs/%s", id);
    snprintf(murl, sizeof murl, "/v1/blobs/%s/manifest", id);
    return json_pack("{s:s, s:{s:s, s:s, s:s?, s:s, s:I}, s:{s:s, s:s, s:o*}, s:s, s:o*, s:s, s:I, s:I, "
                     "s:I, s:o, s:o, s:I, s:s, s:s, s:s}",
                     "id", id,
                     "document", "sha256", hex(b->doc_sha256, 32, doc), "title", b->doc_title ? b->doc_title : "",
                     "source_uri", b->doc_source_uri, "media_type", b->doc_media_type ? b->doc_media_type : "",
                     "bytes", (json_int_t)b->doc_bytes,
                     "model", "fingerprint", hex(b->model_fp, 32, mfp), "arch", b->model_arch ? b->model_arch : "",
                     "shape", shape,
                     "tokenizer_fingerprint", hex(b->tokenizer_fp, 32, tfp), "rope", rope,
                     "codec", b->codec ? b->codec : "", "tokens", (json_int_t)b->n_tokens,
                     "bytes", (json_int_t)b->size, "price", (json_int_t)b->price,
                     "created", time_json(b->created), "expires", time_json(b->expires),
                     "serial", (json_int_t)b->serial, "publisher_key_id", hex(b->publisher_id, 8, pub),
                     "url", url, "manifest_url", murl);
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
    uint8_t model[32], doc[32];
    kvs_query q = {0};
    if (arg_hex32(r, "model", model, &q.model_fp) != 0)
        return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request",
                                   "model must be a model fingerprint: 64 lowercase hex digits");
    if (arg_hex32(r, "doc", doc, &q.doc_sha256) != 0)
        return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request",
                                   "doc must be a document SHA-256: 64 lowercase hex digits");
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
    if (ls && (kvsrv_parse_u64(ls, &limit) != 0 || limit < 1 || limit > KVS_QUERY_MAX_LIMIT))
        return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "limit must be 1..%d",
                                   KVS_QUERY_MAX_LIMIT);
    if (os && (kvsrv_parse_u64(os, &offset) != 0 || offset > OFFSET_MAX))
        return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "offset must be 0..%u", OFFSET_MAX);
    q.limit = (size_t)limit;
    q.offset = (size_t)offset;
    q.now = (int64_t)time(NULL);
    kvs_list *l = NULL;
    char e[256];
    kvs_store *st = pool_get(r->srv);
    kvs_status s1 = kvs_store_catalog(st, &q, &l, e, sizeof e);
    pool_put(r->srv, st);
    if (s1 != KVS_OK)
        return store_error(r, s1, e);
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

/* PEM SubjectPublicKeyInfo of a raw Ed25519 public key (RFC 8410). */
static json_t *pem_json(const uint8_t raw[32])
{
    static const uint8_t spki_prefix[12] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};
    uint8_t der[44];
    unsigned char b64[64];
    memcpy(der, spki_prefix, 12);
    memcpy(der + 12, raw, 32);
    EVP_EncodeBlock(b64, der, (int)sizeof der);
    char pem[160];
    snprintf(pem, sizeof pem, "-----BEGIN PUBLIC KEY-----\n%s\n-----END PUBLIC KEY-----\n", (char *)b64);
    return json_string(pem);
}

enum MHD_Result kvsrv_keys(kvsrv_req *r)
{
    json_t *keys = json_array(), *revoked = json_array();
    struct stat sb;
    if (stat(r->srv->keys_dir, &sb) == 0) {
        kvc_trust *t = NULL;
        char e[256];
        if (kvc_trust_open(r->srv->keys_dir, &t, e, sizeof e) != KVC_OK) {
            json_decref(keys);
            json_decref(revoked);
            char esc[1024];
            kvsrv_log(r->srv, "error", "event=keys detail=\"%s\"", kvsrv_log_escape(e, esc, sizeof esc));
            return kvsrv_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "key directory unreadable");
        }
        kvs_store *st = pool_get(r->srv);
        for (size_t i = 0; i < kvc_trust_count(t); i++) {
            const kvc_key *k = kvc_trust_key(t, i);
            uint8_t id[8], raw[32];
            char idh[17], rawh[65];
            kvc_key_id(k, id);
            kvc_key_raw_public(k, raw);
            kvs_publisher p;
            char pe[128];
            const char *name = kvs_store_publisher_get(st, id, &p, pe, sizeof pe) == KVS_OK ? p.name : NULL;
            json_array_append_new(keys, json_pack("{s:s, s:s?, s:s, s:o}", "key_id", hex(id, 8, idh), "name", name,
                                                  "public_key", hex(raw, 32, rawh), "pem", pem_json(raw)));
        }
        pool_put(r->srv, st);
        for (size_t i = 0; i < kvc_trust_revoked_count(t); i++) {
            char idh[17];
            json_array_append_new(revoked, json_string(hex(kvc_trust_revoked_id(t, i), 8, idh)));
        }
        kvc_trust_free(t);
    }
    return kvsrv_respond_json(r, MHD_HTTP_OK, json_pack("{s:o, s:o}", "keys", keys, "revoked", revoked));
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
    uint8_t id[32];
    kvs_blob *b = NULL;
    char path[4096];
    enum MHD_Result done;
    if (lookup_blob(r, id, &b, path, sizeof path, &done) != 0)
        return done;
    kvs_blob_free(b);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    uint8_t hdr[KVB_HEADER_LEN];
    kvb_status st = KVB_ERR_IO;
    size_t prefix = 0;
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
        kvsrv_log(r->srv, "error", "event=manifest id=%s detail=\"unreadable blob file %s (%s)\"", r->id, path,
                  kvb_status_str(st));
        return kvsrv_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "blob file unreadable");
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(mlen, json, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(json);
        return MHD_NO;
    }
    char etag[80];
    snprintf(etag, sizeof etag, "\"%s.manifest\"", r->id);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "public, max-age=31536000, immutable");
    r->bytes = mlen;
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
        return store_error(r, st, e);
    }
}

enum MHD_Result kvsrv_download(kvsrv_req *r)
{
    uint8_t id[32];
    kvs_blob *b = NULL;
    char path[4096];
    enum MHD_Result done;
    if (lookup_blob(r, id, &b, path, sizeof path, &done) != 0)
        return done;
    uint64_t size = b->size, price = b->price;
    kvs_blob_free(b);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || (uint64_t)sb.st_size != size) {
        kvsrv_log(r->srv, "error", "event=download id=%s detail=\"blob file %s missing or not %" PRIu64 " bytes\"",
                  r->id, path, size);
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
    if (price) {
        const char *tok = kvsrv_bearer(r);
        uint8_t raw[KVS_TOKEN_LEN];
        if (!tok) {
            close(fd);
            return kvsrv_respond_error(r, MHD_HTTP_UNAUTHORIZED, "token_required",
                                       "this blob is priced: send Authorization: Bearer TOKEN (POST /v1/purchases)");
        }
        if (strlen(tok) != 2 * KVS_TOKEN_LEN || kvc_unhex(tok, raw, sizeof raw) != KVC_OK) {
            close(fd);
            return kvsrv_respond_error(r, MHD_HTTP_UNAUTHORIZED, "invalid_token",
                                       "access tokens are 64 hex digits");
        }
        /* A GET spends the bytes it asks for from the token's budget (downloads x blob size);
         * what is not delivered is given back when the request ends, so a resumption pays
         * only for the rest (spec/http-api.md "Download budget"). HEAD delivers no bytes: its
         * token is checked (known, this blob, not expired) and spends nothing. */
        {
            int get = strcmp(r->method, MHD_HTTP_METHOD_GET) == 0;
            char e[256];
            uint32_t left = 0;
            kvs_store *st = pool_get(r->srv);
            kvs_status s1 = kvs_store_token_spend(st, raw, id, (int64_t)time(NULL), get ? len : 0, &left,
                                                  &r->purchase_id, e, sizeof e);
            pool_put(r->srv, st);
            if (s1 != KVS_OK) {
                kvc_wipe(raw, sizeof raw);
                close(fd);
                return token_refused(r, s1, e);
            }
            if (get) {
                memcpy(r->token, raw, sizeof raw);
                r->spent = len;
            }
        }
        kvc_wipe(raw, sizeof raw);
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

/* ---- POST /v1/purchases ---- */

/* Shared first-call checks of a request body: Content-Length present, within max. */
static int body_length(kvsrv_req *r, uint64_t max, uint64_t *len, enum MHD_Result *done)
{
    const char *cl = kvsrv_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (kvsrv_header(r, MHD_HTTP_HEADER_TRANSFER_ENCODING) || !cl) {
        *done = kvsrv_respond_error(r, MHD_HTTP_LENGTH_REQUIRED, "length_required",
                                    "send the body with a Content-Length (no chunked encoding)");
        return -1;
    }
    if (kvsrv_parse_u64(cl, len) != 0) {
        *done = kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "Content-Length is not a number");
        return -1;
    }
    if (*len > max) {
        *done = kvsrv_respond_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large",
                                    "body of %" PRIu64 " bytes is over the limit of %" PRIu64, *len, max);
        return -1;
    }
    return 0;
}

enum MHD_Result kvsrv_purchase_begin(kvsrv_req *r)
{
    enum MHD_Result done;
    uint64_t len;
    const char *ct = kvsrv_header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!ct || strncasecmp(ct, "application/json", 16) != 0 || (ct[16] && ct[16] != ';' && ct[16] != ' '))
        return kvsrv_respond_error(r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                                   "send Content-Type: application/json");
    if (body_length(r, 4096, &len, &done) != 0)
        return done;
    r->body = malloc(4096 + 1);
    return r->body ? MHD_YES : MHD_NO;
}

enum MHD_Result kvsrv_purchase(kvsrv_req *r)
{
    json_error_t je;
    json_t *o = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je);
    const char *blob = NULL, *buyer = NULL;
    if (!o || json_unpack(o, "{s:s, s?s}", "blob", &blob, "buyer", &buyer) != 0 || !kvsrv_is_id(blob) ||
        (buyer && strlen(buyer) > 200)) {
        json_decref(o);
        return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request",
                                   "expected {\"blob\": \"<64 lowercase hex id>\", \"buyer\": optional text <= 200 bytes}");
    }
    memcpy(r->id, blob, 65);
    char buyer_copy[201] = "";
    if (buyer)
        snprintf(buyer_copy, sizeof buyer_copy, "%s", buyer);
    json_decref(o);
    uint8_t id[32];
    kvs_blob *b = NULL;
    char path[4096];
    enum MHD_Result done;
    if (lookup_blob(r, id, &b, path, sizeof path, &done) != 0)
        return done;
    kvs_blob_free(b);
    int64_t now = (int64_t)time(NULL), expires = now + r->srv->cfg.token_ttl_s;
    uint8_t token[KVS_TOKEN_LEN];
    int64_t pid = 0;
    char e[256];
    kvs_store *st = pool_get(r->srv);
    kvs_status s1 = kvs_store_purchase(st, id, buyer_copy[0] ? buyer_copy : r->remote, now, expires,
                                       r->srv->cfg.token_downloads, token, &pid, e, sizeof e);
    pool_put(r->srv, st);
    if (s1 == KVS_ERR_NOTFOUND)
        return kvsrv_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found", "no blob %s", r->id);
    if (s1 == KVS_ERR_REVOKED)
        return kvsrv_respond_error(r, MHD_HTTP_GONE, "revoked", "%s", e);
    if (s1 != KVS_OK)
        return store_error(r, s1, e);
    char th[65], ts[32];
    kvc_hex(token, sizeof token, th);
    kvc_wipe(token, sizeof token);
    enum MHD_Result ret = kvsrv_respond_json(
        r, MHD_HTTP_CREATED,
        json_pack("{s:s, s:s, s:I, s:s, s:I, s:I}", "token", th, "blob", r->id, "purchase", (json_int_t)pid,
                  "expires", kvb_time_format(expires, ts, sizeof ts), "expires_unix", (json_int_t)expires,
                  "downloads", (json_int_t)r->srv->cfg.token_downloads));
    kvc_wipe(th, sizeof th);
    return ret;
}

/* ---- PUT /v1/blobs ---- */

enum MHD_Result kvsrv_upload_begin(kvsrv_req *r)
{
    kvsrv *s = r->srv;
    const char *cred = kvsrv_bearer(r);
    uint8_t key_id[8];
    if (!cred || kvsrv_parse_credential(cred, key_id) != 0) {
        atomic_fetch_add(&s->uploads_rejected, 1);
        return kvsrv_respond_error(r, MHD_HTTP_UNAUTHORIZED, "credential_required",
                                   "uploads need Authorization: Bearer <publisher credential>");
    }
    char e[256];
    kvs_publisher pub;
    kvs_store *st = pool_get(s);
    kvs_status s1 = kvs_store_publisher_check(st, key_id, cred, strlen(cred), e, sizeof e);
    kvs_status s2 = s1 == KVS_OK ? kvs_store_publisher_get(st, key_id, &pub, e, sizeof e) : s1;
    pool_put(s, st);
    if (s2 == KVS_ERR_NOTFOUND || s2 == KVS_ERR_CREDENTIAL) {
        atomic_fetch_add(&s->uploads_rejected, 1);
        return kvsrv_respond_error(r, MHD_HTTP_UNAUTHORIZED, "bad_credential", "unknown publisher credential");
    }
    if (s2 != KVS_OK)
        return store_error(r, s2, e);
    /* a key revoked in STORE/keys/revoked may not publish any more */
    struct stat sb;
    if (stat(s->keys_dir, &sb) == 0) {
        kvc_trust *t = NULL;
        const kvc_key *k;
        if (kvc_trust_open(s->keys_dir, &t, e, sizeof e) == KVC_OK && kvc_trust_lookup(t, key_id, &k) == KVC_ERR_REVOKED) {
            kvc_trust_free(t);
            atomic_fetch_add(&s->uploads_rejected, 1);
            return kvsrv_respond_error(r, MHD_HTTP_FORBIDDEN, "key_revoked", "publisher key %.16s is revoked", cred);
        }
        kvc_trust_free(t);
    }
    enum MHD_Result done;
    if (body_length(r, s->cfg.max_upload, &r->up_expected, &done) != 0) {
        atomic_fetch_add(&s->uploads_rejected, 1);
        return done;
    }
    if (r->up_expected < KVB_HEADER_LEN) {
        atomic_fetch_add(&s->uploads_rejected, 1);
        return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "a blob is at least %d bytes",
                                   KVB_HEADER_LEN);
    }
    memcpy(r->up_key_id, key_id, 8);
    if (kvc_key_from_raw_public(pub.public_key, &r->up_key) != KVC_OK)
        return kvsrv_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "stored publisher key unusable");
    r->up_fd = kvp_store_tmpfd(s->cfg.store_dir);
    if (r->up_fd < 0) {
        kvsrv_log(s, "error", "event=upload detail=\"temp file in %s: %s\"", s->cfg.store_dir, strerror(errno));
        return kvsrv_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "no space for the upload");
    }
    kvb_read_opts o = {.key = r->up_key, .no_decode = 1, .n_threads = 1, .now = 0};
    r->up_reader = kvb_reader_create(&o);
    return r->up_reader ? MHD_YES : MHD_NO;
}

enum MHD_Result kvsrv_upload_data(kvsrv_req *r, const char *data, size_t *size)
{
    size_t n = *size;
    *size = 0;
    if (n) {
        r->up_received += n;
        if (r->up_st != KVB_OK)
            return MHD_YES; /* refused already: drain the rest, answer at the end */
        /* the signature, then every chunk hash, is checked while the bytes arrive */
        r->up_st = kvb_reader_feed(r->up_reader, data, n, r->up_err, sizeof r->up_err);
        if (r->up_st == KVB_OK && kvc_write_all(r->up_fd, data, n) != 0) {
            r->up_st = KVB_ERR_IO;
            snprintf(r->up_err, sizeof r->up_err, "writing the upload: %s", strerror(errno));
        }
        return MHD_YES;
    }
    kvsrv *s = r->srv;
    if (r->up_st == KVB_OK)
        r->up_st = kvb_reader_finish(r->up_reader, r->up_err, sizeof r->up_err);
    if (r->up_st != KVB_OK) {
        atomic_fetch_add(&s->uploads_rejected, 1);
        switch (r->up_st) {
        case KVB_ERR_IO:
        case KVB_ERR_NOMEM:
        case KVB_ERR_INTERNAL: {
            char esc[1024];
            kvsrv_log(s, "error", "event=upload detail=\"%s\"", kvsrv_log_escape(r->up_err, esc, sizeof esc));
            return kvsrv_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "upload failed");
        }
        case KVB_ERR_WRONG_KEY:
        case KVB_ERR_UNTRUSTED:
        case KVB_ERR_REVOKED:
            return kvsrv_respond_error(r, MHD_HTTP_FORBIDDEN, "foreign_key",
                                       "blob is not signed by this publisher's key: %s", r->up_err);
        default:
            return kvsrv_respond_error(r, MHD_HTTP_UNPROCESSABLE_CONTENT, "invalid_blob", "%s: %s",
                                       kvb_status_str(r->up_st), r->up_err);
        }
    }
    const kvb_manifest *m = kvb_reader_manifest(r->up_reader);
    const kvb_header *h = kvb_reader_header(r->up_reader);
    if (!m || !h || memcmp(h->key_id, r->up_key_id, 8) != 0) {
        atomic_fetch_add(&s->uploads_rejected, 1);
        return kvsrv_respond_error(r, MHD_HTTP_FORBIDDEN, "foreign_key", "blob key id is not the publisher's");
    }
    uint64_t price = 0;
    const char *ps = kvsrv_arg(r, "price");
    if (ps && kvsrv_parse_u64(ps, &price) != 0)
        return kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "price must be a whole number");
    kvp_blobinfo bi;
    if (kvp_blobinfo_fill(&bi, m, r->up_key_id, price) != 0)
        return kvsrv_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "cannot index the blob's metadata");
    bi.blob.size = r->up_received;
    if (lseek(r->up_fd, 0, SEEK_SET) != 0) {
        kvp_blobinfo_clear(&bi);
        return kvsrv_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "upload temp file");
    }
    kvs_publish_result res;
    char e[256];
    kvs_store *st = pool_get(s);
    kvs_status s1 = kvs_store_publish_fd(st, &bi.blob, r->up_fd, &res, e, sizeof e);
    pool_put(s, st);
    kvp_blobinfo_clear(&bi);
    if (s1 == KVS_ERR_EXISTS || s1 == KVS_ERR_INVALID || s1 == KVS_ERR_MISMATCH)
        return kvsrv_respond_error(r, MHD_HTTP_CONFLICT, "conflict", "%s", e);
    if (s1 == KVS_ERR_REVOKED)
        return kvsrv_respond_error(r, MHD_HTTP_FORBIDDEN, "key_revoked", "%s", e);
    if (s1 != KVS_OK)
        return store_error(r, s1, e);
    char idh[65];
    kvc_hex(res.id, 32, idh);
    memcpy(r->id, idh, 65);
    kvsrv_log(s, "info", "event=upload id=%s publisher=%.16s bytes=%" PRIu64 " result=%s", idh,
              kvsrv_bearer(r), r->up_received, res.already ? "exists" : "published");
    return kvsrv_respond_json(r, res.already ? MHD_HTTP_OK : MHD_HTTP_CREATED,
                              json_pack("{s:s, s:s, s:I}", "id", idh, "status",
                                        res.already ? "exists" : "published", "bytes",
                                        (json_int_t)r->up_received));
}

void kvsrv_req_finish(kvsrv_req *r, int completed_ok)
{
    char e[256], esc[1024];
    uint64_t sent = atomic_load(&r->file_bytes);
    if (r->spent > sent) { /* give back what this GET did not deliver */
        kvs_store *st = pool_get(r->srv);
        kvs_status s0 = kvs_store_token_refund(st, r->token, r->spent - sent, e, sizeof e);
        pool_put(r->srv, st);
        if (s0 != KVS_OK)
            kvsrv_log(r->srv, "error", "event=token_refund detail=\"%s\"", kvsrv_log_escape(e, esc, sizeof esc));
    }
    kvc_wipe(r->token, sizeof r->token);
    if (!r->log_download)
        return;
    uint8_t id[32];
    if (kvc_unhex(r->id, id, 32) != KVC_OK)
        return;
    kvs_store *st = pool_get(r->srv);
    kvs_status s1 = kvs_store_log_download(st, id, r->purchase_id, r->remote, atomic_load(&r->file_bytes),
                                           completed_ok ? (int)r->status : 499, (int64_t)time(NULL), e, sizeof e);
    pool_put(r->srv, st);
    if (s1 != KVS_OK)
        kvsrv_log(r->srv, "error", "event=download_log detail=\"%s\"", kvsrv_log_escape(e, esc, sizeof esc));
}
