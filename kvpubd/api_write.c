/* api_write.c: the endpoints of spec/http-api.md that take a request body and write to
 * store/: purchases (a bearer token for a priced blob) and verified publisher uploads. */
#include "kvpubd/api.h"
#include "kvpubd/ratelimit.h"
#include "base/base.h"
#include "kvpub/kvpub.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A purchase request is a tiny JSON object. */
#define PURCHASE_BODY_MAX 4096

/* ---- POST /v1/purchases ---- */

/* The first-call checks of a request body: Content-Length present, within max. */
static int body_length(kvsrv_req *r, uint64_t max, uint64_t *len, enum MHD_Result *done)
{
    const char *cl = kvsrv_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (kvsrv_header(r, MHD_HTTP_HEADER_TRANSFER_ENCODING) || !cl) {
        *done = kvsrv_respond_error(r, MHD_HTTP_LENGTH_REQUIRED, "length_required",
                                    "send the body with a Content-Length (no chunked encoding)");
        return -1;
    }
    if (base_parse_u64(cl, len) != 0) {
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

/* 0 when the client may buy now, else the refusal (429 with Retry-After) in *done. Checked
 * before the body is read, so a flood costs no parsing and no index write. */
static int purchase_allowed(kvsrv_req *r, enum MHD_Result *done)
{
    kvsrv *s = r->srv;
    if (!s->purchase_limit)
        return 0;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    unsigned wait = kvsrv_ratelimit_take(s->purchase_limit, ci ? ci->client_addr : NULL, base_now_s());
    if (!wait)
        return 0;
    atomic_fetch_add_explicit(&s->rate_limited, 1, memory_order_relaxed);
    char ra[16];
    snprintf(ra, sizeof ra, "%u", wait);
    *done = kvsrv_respond_error_hdr(r, MHD_HTTP_TOO_MANY_REQUESTS, "rate_limited", MHD_HTTP_HEADER_RETRY_AFTER, ra,
                                    "more than %u purchases in a burst or %u a minute from this address; retry in "
                                    "%u s", s->cfg.purchase_burst, s->cfg.purchase_per_min, wait);
    return -1;
}

enum MHD_Result kvsrv_purchase_begin(kvsrv_req *r)
{
    enum MHD_Result done;
    uint64_t len;
    if (purchase_allowed(r, &done) != 0)
        return done;
    const char *ct = kvsrv_header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!ct || strncasecmp(ct, "application/json", 16) != 0 || (ct[16] && ct[16] != ';' && ct[16] != ' '))
        return kvsrv_respond_error(r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                                   "send Content-Type: application/json");
    if (body_length(r, PURCHASE_BODY_MAX, &len, &done) != 0)
        return done;
    r->body = malloc(PURCHASE_BODY_MAX + 1);
    return r->body ? MHD_YES : MHD_NO;
}

/* The whole body has arrived (NUL-terminated in r->body): buys a token. */
static enum MHD_Result purchase(kvsrv_req *r)
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
    kvsrv_blob_ref b;
    if (kvsrv_blob_find(r, &b) != 0)
        return b.done;
    int64_t now = (int64_t)time(NULL), expires = now + r->srv->cfg.token_ttl_s;
    uint8_t token[KVS_TOKEN_LEN];
    int64_t pid = 0;
    char e[256];
    kvs_store *st = kvsrv_pool_get(r->srv);
    kvs_status s1 = kvs_store_purchase(st, b.id, buyer_copy[0] ? buyer_copy : r->remote, now, expires,
                                       r->srv->cfg.token_downloads, token, &pid, e, sizeof e);
    kvsrv_pool_put(r->srv, st);
    if (s1 == KVS_ERR_NOTFOUND)
        return kvsrv_respond_error(r, MHD_HTTP_NOT_FOUND, "not_found", "no blob %s", r->id);
    if (s1 == KVS_ERR_REVOKED)
        return kvsrv_respond_error(r, MHD_HTTP_GONE, "revoked", "%s", e);
    if (s1 != KVS_OK)
        return kvsrv_store_error(r, s1, e);
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

enum MHD_Result kvsrv_purchase_body(kvsrv_req *r, const char *data, size_t *size)
{
    if (!*size) {
        r->body[r->body_len] = 0;
        return purchase(r);
    }
    if (r->body_len + *size > PURCHASE_BODY_MAX) {
        *size = 0;
        return kvsrv_respond_error(r, MHD_HTTP_CONTENT_TOO_LARGE, "payload_too_large", "request body over %d bytes",
                                   PURCHASE_BODY_MAX);
    }
    memcpy(r->body + r->body_len, data, *size);
    r->body_len += *size;
    *size = 0;
    return MHD_YES;
}

/* ---- PUT /v1/blobs ---- */

/* Counts a refused upload (kvpubd_uploads_rejected_total) and passes its answer on. */
static enum MHD_Result refused(kvsrv_req *r, enum MHD_Result answer)
{
    atomic_fetch_add(&r->srv->uploads_rejected, 1);
    return answer;
}

/* The publisher whose credential the upload carries: 0 with its key id and record, or -1 with
 * the refusal queued and its result in *done. */
static int upload_publisher(kvsrv_req *r, uint8_t key_id[8], kvs_publisher *pub, enum MHD_Result *done)
{
    kvsrv *s = r->srv;
    const char *cred = kvsrv_bearer(r);
    if (!cred || kvsrv_parse_credential(cred, key_id) != 0) {
        *done = refused(r, kvsrv_respond_error(r, MHD_HTTP_UNAUTHORIZED, "credential_required",
                                               "uploads need Authorization: Bearer <publisher credential>"));
        return -1;
    }
    char e[256];
    kvs_store *st = kvsrv_pool_get(s);
    kvs_status s1 = kvs_store_publisher_check(st, key_id, cred, strlen(cred), e, sizeof e);
    kvs_status s2 = s1 == KVS_OK ? kvs_store_publisher_get(st, key_id, pub, e, sizeof e) : s1;
    kvsrv_pool_put(s, st);
    if (s2 == KVS_ERR_NOTFOUND || s2 == KVS_ERR_CREDENTIAL) {
        *done = refused(r, kvsrv_respond_error(r, MHD_HTTP_UNAUTHORIZED, "bad_credential",
                                               "unknown publisher credential"));
        return -1;
    }
    if (s2 != KVS_OK) {
        *done = kvsrv_store_error(r, s2, e);
        return -1;
    }
    /* a key revoked in STORE/keys/revoked may not publish any more; a keys directory that does
     * not read (a bad line in revoked, a malformed key) says nothing either way: refused */
    struct stat sb;
    if (stat(s->keys_dir, &sb) == 0) {
        kvc_trust *t = NULL;
        const kvc_key *k;
        const int readable = kvc_trust_open(s->keys_dir, &t, e, sizeof e) == KVC_OK;
        const int revoked = readable && kvc_trust_lookup(t, key_id, &k) == KVC_ERR_REVOKED;
        kvc_trust_free(t);
        if (!readable) {
            *done = refused(r, kvsrv_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
                                                   "the store's keys directory does not read: %s", e));
            return -1;
        }
        if (revoked) {
            *done = refused(r, kvsrv_respond_error(r, MHD_HTTP_FORBIDDEN, "key_revoked",
                                                   "publisher key %.16s is revoked", cred));
            return -1;
        }
    }
    return 0;
}

enum MHD_Result kvsrv_upload_begin(kvsrv_req *r)
{
    kvsrv *s = r->srv;
    uint8_t key_id[8];
    kvs_publisher pub;
    enum MHD_Result done;
    if (upload_publisher(r, key_id, &pub, &done) != 0)
        return done;
    if (body_length(r, s->cfg.max_upload, &r->up_expected, &done) != 0)
        return refused(r, done);
    if (r->up_expected < KVB_HEADER_LEN)
        return refused(r, kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request", "a blob is at least %d bytes",
                                              KVB_HEADER_LEN));
    const char *ps = kvsrv_arg(r, "price"); /* before the body: a bad price should not cost an upload */
    if (ps && (base_parse_u64(ps, &r->up_price) != 0 || r->up_price > INT64_MAX))
        return refused(r, kvsrv_respond_error(r, MHD_HTTP_BAD_REQUEST, "bad_request",
                                              "price must be a whole number from 0 to 9223372036854775807"));
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
    if (!r->up_reader)
        return MHD_NO;
    atomic_fetch_add(&s->uploads_active, 1);
    return MHD_YES;
}

/* The answer to a body the reader refused (r->up_st, r->up_err). */
static enum MHD_Result invalid_upload(kvsrv_req *r)
{
    switch (r->up_st) {
    case KVB_ERR_IO:
    case KVB_ERR_NOMEM:
    case KVB_ERR_INTERNAL: {
        char esc[1024];
        kvsrv_log(r->srv, "error", "event=upload detail=\"%s\"", kvsrv_log_escape(r->up_err, esc, sizeof esc));
        return kvsrv_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "upload failed");
    }
    case KVB_ERR_WRONG_KEY:
    case KVB_ERR_UNTRUSTED:
    case KVB_ERR_REVOKED:
        return kvsrv_respond_error(r, MHD_HTTP_FORBIDDEN, "foreign_key", "blob is not signed by this publisher's key: %s",
                                   r->up_err);
    default:
        return kvsrv_respond_error(r, MHD_HTTP_UNPROCESSABLE_CONTENT, "invalid_blob", "%s: %s",
                                   kvb_status_str(r->up_st), r->up_err);
    }
}

/* A verified upload of manifest m (its bytes in r->up_fd) goes into the index. */
static enum MHD_Result index_upload(kvsrv_req *r, const kvb_manifest *m)
{
    kvsrv *s = r->srv;
    kvp_blobinfo bi;
    if (kvp_blobinfo_fill(&bi, m, r->up_key_id, r->up_price) != 0)
        return kvsrv_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "cannot index the blob's metadata");
    bi.blob.size = r->up_received;
    if (lseek(r->up_fd, 0, SEEK_SET) != 0) {
        kvp_blobinfo_clear(&bi);
        return kvsrv_respond_error(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "upload temp file");
    }
    kvs_publish_result res;
    char e[256];
    kvs_store *st = kvsrv_pool_get(s);
    kvs_status s1 = kvs_store_publish_own(st, &bi.blob, r->up_fd, &res, e, sizeof e);
    kvsrv_pool_put(s, st);
    kvp_blobinfo_clear(&bi);
    if (s1 == KVS_ERR_EXISTS || s1 == KVS_ERR_INVALID || s1 == KVS_ERR_MISMATCH)
        return kvsrv_respond_error(r, MHD_HTTP_CONFLICT, "conflict", "%s", e);
    if (s1 == KVS_ERR_REVOKED)
        return kvsrv_respond_error(r, MHD_HTTP_FORBIDDEN, "key_revoked", "%s", e);
    if (s1 != KVS_OK)
        return kvsrv_store_error(r, s1, e);
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

enum MHD_Result kvsrv_upload_body(kvsrv_req *r, const char *data, size_t *size)
{
    size_t n = *size;
    *size = 0;
    if (n) {
        r->up_received += n;
        if (r->up_st != KVB_OK)
            return MHD_YES; /* refused already: drain the rest, answer at the end */
        /* the signature, then every chunk hash, is checked while the bytes arrive */
        r->up_st = kvb_reader_feed(r->up_reader, data, n, r->up_err, sizeof r->up_err);
        if (r->up_st == KVB_OK && base_write_all(r->up_fd, data, n) != 0) {
            r->up_st = KVB_ERR_IO;
            snprintf(r->up_err, sizeof r->up_err, "writing the upload: %s", strerror(errno));
        }
        return MHD_YES;
    }
    if (r->up_st == KVB_OK)
        r->up_st = kvb_reader_finish(r->up_reader, r->up_err, sizeof r->up_err);
    if (r->up_st != KVB_OK)
        return refused(r, invalid_upload(r));
    const kvb_manifest *m = kvb_reader_manifest(r->up_reader);
    const kvb_header *h = kvb_reader_header(r->up_reader);
    if (!m || !h || memcmp(h->key_id, r->up_key_id, 8) != 0)
        return refused(r, kvsrv_respond_error(r, MHD_HTTP_FORBIDDEN, "foreign_key",
                                              "blob key id is not the publisher's"));
    return index_upload(r, m);
}
