/* snapshot.c: signed catalog snapshots (spec/repository.md): every current listing, the signing
 * keys and the revoked ids in one canonical JSON payload with a version that only grows per
 * signing key, signed and wrapped in the envelope; plus the catalog generation that tells a
 * server when to sign again, and listing changes that need no new blob. */
#include "store/store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

/* Listings read per catalog page, and retries when the catalog changes while it is read. */
enum { PAGE = KVS_QUERY_MAX_LIMIT, READ_TRIES = 5 };
#define TITLE_MAX 4096

char *store_time_format(int64_t t, char *out, size_t outlen)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (!gmtime_r(&tt, &tm) || strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, outlen, "1970-01-01T00:00:00Z");
    return out;
}

static json_t *time_or_null(int64_t t)
{
    char buf[32];
    return t ? json_string(store_time_format(t, buf, sizeof buf)) : json_null();
}

kvs_status kvs_store_catalog_gen(kvs_store *s, uint64_t *gen, char *err, size_t errlen)
{
    *gen = 0;
    db_stmt q;
    int row = 0;
    kvs_status st = kvs_prepare(s, "SELECT gen FROM catalog_gen WHERE id = 1", &q, err, errlen);
    if (st == KVS_OK)
        st = db_step(&q, &row, err, errlen);
    if (st == KVS_OK && row)
        *gen = (uint64_t)sqlite3_column_int64(q.st, 0);
    db_finalize(&q);
    return st;
}

/* One listing as the snapshot shows it (spec/repository.md, "Payload"). */
static json_t *listing_json(const kvs_blob *b)
{
    char id[65], doc[65], mfp[65], tfp[65], pub[17], ctx[65];
    json_t *context = b->n_context ? json_pack("{s:s, s:I}", "sha256", kvc_hex(b->context_sha256, 32, ctx), "tokens",
                                               (json_int_t)b->n_context)
                                   : json_null();
    return json_pack("{s:I, s:s, s:o, s:o, s:{s:I, s:s, s:s, s:s}, s:o, s:s, s:{s:s, s:s}, s:I, s:s, s:s, s:I}",
                     "bytes", (json_int_t)b->size, "codec", b->codec ? b->codec : "", "context", context,
                     "created", time_or_null(b->created),
                     "document", "bytes", (json_int_t)b->doc_bytes, "media_type",
                     b->doc_media_type ? b->doc_media_type : "", "sha256", kvc_hex(b->doc_sha256, 32, doc), "title",
                     b->doc_title ? b->doc_title : "",
                     "expires", time_or_null(b->expires), "id", kvc_hex(b->id, 32, id),
                     "model", "arch", b->model_arch ? b->model_arch : "", "fingerprint", kvc_hex(b->model_fp, 32, mfp),
                     "price", (json_int_t)b->price, "publisher_key_id", kvc_hex(b->publisher_id, 8, pub),
                     "tokenizer_fingerprint", kvc_hex(b->tokenizer_fp, 32, tfp), "tokens", (json_int_t)b->n_tokens);
}

/* Every current listing at now into a new array, page by page. */
static kvs_status read_listings(kvs_store *s, int64_t now, json_t **out, size_t *n, char *err, size_t errlen)
{
    json_t *arr = json_array();
    kvs_status st = arr ? KVS_OK : KVS_ERR_NOMEM;
    *n = 0;
    for (size_t offset = 0; st == KVS_OK;) {
        kvs_query q = {.now = now, .limit = PAGE, .offset = offset};
        kvs_list *l = NULL;
        st = kvs_store_catalog(s, &q, &l, err, errlen);
        if (st != KVS_OK)
            break;
        size_t got = kvs_list_count(l);
        for (size_t i = 0; i < got && st == KVS_OK; i++)
            if (json_array_append_new(arr, listing_json(kvs_list_get(l, i))) != 0)
                st = base_fail(KVS_ERR_NOMEM, err, errlen, "out of memory building a snapshot");
        kvs_list_free(l);
        offset += got;
        if (got < PAGE)
            break;
    }
    if (st != KVS_OK) {
        json_decref(arr);
        return st;
    }
    *out = arr;
    *n = json_array_size(arr);
    return KVS_OK;
}

/* The signing keys as the payload lists them. */
static kvs_status read_keys(kvs_store *s, json_t **out, char *err, size_t errlen)
{
    kvs_signing_key *keys;
    size_t n;
    kvs_status st = kvs_store_key_list(s, &keys, &n, err, errlen);
    json_t *arr = json_array();
    for (size_t i = 0; st == KVS_OK && i < n; i++) {
        char id[17], pub[65];
        if (json_array_append_new(arr, json_pack("{s:o, s:s, s:s, s:s}", "cutoff", time_or_null(keys[i].cutoff),
                                                 "key_id", kvc_hex(keys[i].key_id, 8, id), "public_key",
                                                 kvc_hex(keys[i].public_key, 32, pub), "state",
                                                 kvs_key_state_str(keys[i].state))) != 0)
            st = base_fail(KVS_ERR_NOMEM, err, errlen, "out of memory building a snapshot");
    }
    free(keys);
    if (st != KVS_OK) {
        json_decref(arr);
        return st;
    }
    *out = arr;
    return KVS_OK;
}

static kvs_status read_revoked(kvs_store *s, json_t **out, char *err, size_t errlen)
{
    json_t *arr = json_array();
    db_stmt q;
    int row = 0;
    kvs_status st = kvs_prepare(s, "SELECT key_id FROM revocations ORDER BY key_id", &q, err, errlen);
    while (st == KVS_OK && (st = db_step(&q, &row, err, errlen)) == KVS_OK && row)
        json_array_append_new(arr, json_string((const char *)sqlite3_column_text(q.st, 0)));
    db_finalize(&q);
    if (st != KVS_OK) {
        json_decref(arr);
        return st;
    }
    *out = arr;
    return KVS_OK;
}

/* Takes key_id's version for a catalog read at generation gen: the last one again when it was
 * signed at gen, else the next (at least 1). *stale = 1 (nothing recorded) when the catalog has
 * moved past gen since it was read: checked under the write lock, so versions grow with the
 * generation whatever processes sign side by side. */
static kvs_status next_version(kvs_store *s, const uint8_t key_id[KVS_KEYID_LEN], int64_t issued, int64_t expires,
                               uint64_t gen, uint64_t *version, int *stale, char *err, size_t errlen)
{
    *stale = 0;
    kvs_status st = db_begin(s->db, err, errlen);
    if (st != KVS_OK)
        return st;
    uint64_t now_gen = 0;
    st = kvs_store_catalog_gen(s, &now_gen, err, errlen);
    if (st == KVS_OK && now_gen != gen) {
        *stale = 1;
        db_rollback(s->db);
        return KVS_OK;
    }
    db_stmt q;
    if (st == KVS_OK)
        st = kvs_prepare(s, "INSERT INTO snapshot_versions (key_id, version, issued, expires, gen) "
                            "VALUES (:kid, 1, :iss, :exp, :gen) ON CONFLICT (key_id) DO UPDATE SET "
                            "version = version + (gen <> :gen), issued = :iss, expires = :exp, gen = :gen "
                            "RETURNING version", &q, err, errlen);
    int row = 0;
    if (st == KVS_OK) {
        db_bind_hex(&q, ":kid", key_id, KVS_KEYID_LEN);
        db_bind_int64(&q, ":iss", issued);
        db_bind_int64(&q, ":exp", expires);
        db_bind_int64(&q, ":gen", (int64_t)gen);
        st = db_step(&q, &row, err, errlen);
        if (st == KVS_OK && row)
            *version = (uint64_t)sqlite3_column_int64(q.st, 0);
        else if (st == KVS_OK)
            st = base_fail(KVS_ERR_DB, err, errlen, "the snapshot counter returned no version");
        /* RETURNING hands its rows out before the statement completes: step to the end */
        while (st == KVS_OK && row)
            st = db_step(&q, &row, err, errlen);
        db_finalize(&q);
    }
    return db_end(s->db, st, err, errlen);
}

/* Wraps payload (len bytes) into the envelope signed by key. */
static kvs_status envelope(const kvc_key *key, const char *payload, size_t len, char **out, size_t *outlen, char *err,
                           size_t errlen)
{
    uint8_t sig[KVC_SIG_LEN], id[KVC_KEYID_LEN];
    char sighex[2 * KVC_SIG_LEN + 1], idhex[17];
    if (kvc_sign(key, payload, len, sig) != KVC_OK)
        return base_fail(KVS_ERR_INVALID, err, errlen, "cannot sign the snapshot (the key must be private)");
    kvc_key_id(key, id);
    char *b64 = kvc_base64_encode(payload, len, NULL);
    json_t *env = b64 ? json_pack("{s:s, s:[{s:s, s:s}]}", "payload", b64, "signatures", "key_id",
                                  kvc_hex(id, KVC_KEYID_LEN, idhex), "sig", kvc_hex(sig, KVC_SIG_LEN, sighex))
                      : NULL;
    free(b64);
    char *text = env ? json_dumps(env, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(env);
    size_t n = text ? strlen(text) : 0;
    char *withnl = text ? realloc(text, n + 2) : NULL;
    if (!withnl) {
        free(text);
        return base_fail(KVS_ERR_NOMEM, err, errlen, "out of memory signing the snapshot");
    }
    withnl[n] = '\n'; /* one line, so `curl URL` leaves the terminal tidy */
    withnl[n + 1] = '\0';
    *out = withnl;
    *outlen = n + 1;
    return KVS_OK;
}

kvs_status kvs_store_snapshot(kvs_store *s, const kvc_key *key, int64_t now, int64_t ttl, kvs_snapshot *out,
                              char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (ttl < 1 || now < 1 || now > INT64_MAX - ttl || !kvc_key_is_private(key))
        return base_fail(KVS_ERR_INVALID, err, errlen, "a snapshot needs a private key, a time and a positive lifetime");
    json_t *blobs = NULL, *keys = NULL, *revoked = NULL;
    uint64_t gen = 0, gen_after = 1, version = 0;
    kvs_status st = KVS_OK;
    uint8_t kid[KVC_KEYID_LEN];
    kvc_key_id(key, kid);
    /* no read transaction spans the pages (the catalog takes its own per page), so a listing
     * that changed under the reader, or before its version was taken, means reading it again */
    for (int t = 0, stale = 1; st == KVS_OK && stale && t < READ_TRIES; t++) {
        json_decref(blobs);
        json_decref(keys);
        json_decref(revoked);
        blobs = keys = revoked = NULL;
        st = kvs_store_catalog_gen(s, &gen, err, errlen);
        if (st == KVS_OK)
            st = read_listings(s, now, &blobs, &out->n_blobs, err, errlen);
        if (st == KVS_OK)
            st = read_keys(s, &keys, err, errlen);
        if (st == KVS_OK)
            st = read_revoked(s, &revoked, err, errlen);
        if (st == KVS_OK)
            st = kvs_store_catalog_gen(s, &gen_after, err, errlen);
        if (st == KVS_OK && gen == gen_after)
            st = next_version(s, kid, now, now + ttl, gen, &version, &stale, err, errlen);
    }
    if (st == KVS_OK && !version)
        st = base_fail(KVS_ERR_DB, err, errlen, "the catalog kept changing while the snapshot read it");
    char kidhex[17];
    json_t *payload = NULL;
    if (st == KVS_OK) {
        payload = json_pack("{s:o, s:o, s:s, s:i, s:o, s:s, s:o, s:o, s:I}", "blobs", blobs, "expires",
                            time_or_null(now + ttl), "format", "kvpub-snapshot", "format_version", 1, "issued",
                            time_or_null(now), "key_id", kvc_hex(kid, KVC_KEYID_LEN, kidhex), "keys", keys, "revoked",
                            revoked, "version", (json_int_t)version);
        blobs = keys = revoked = NULL; /* the payload owns them, or json_pack freed them */
    }
    char *text = payload ? json_dumps(payload, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(payload);
    if (st == KVS_OK && !text)
        st = base_fail(KVS_ERR_NOMEM, err, errlen, "out of memory building a snapshot");
    if (st == KVS_OK)
        st = envelope(key, text, strlen(text), &out->bytes, &out->len, err, errlen);
    if (st == KVS_OK)
        out->payload = text;
    else
        free(text);
    json_decref(blobs);
    json_decref(keys);
    json_decref(revoked);
    if (st != KVS_OK)
        return st;
    out->version = version;
    out->issued = now;
    out->expires = now + ttl;
    out->gen = gen;
    return KVS_OK;
}

kvs_status kvs_store_listing_set(kvs_store *s, const uint8_t id[KVS_SHA256_LEN], const kvs_listing_update *u,
                                 char *err, size_t errlen)
{
    if ((u->title && strlen(u->title) > TITLE_MAX) || (u->set_price && u->price > (uint64_t)INT64_MAX) ||
        (u->set_expires && u->expires < 0))
        return base_fail(KVS_ERR_INVALID, err, errlen, "a title of at most %d bytes, a price up to 2^63-1 and an "
                                                       "expiry after 1970", TITLE_MAX);
    /* the revocation check and the change in one write transaction: a key revoked in between
     * (by another process) would otherwise see its listing changed after all */
    kvs_status st = db_begin(s->db, err, errlen);
    if (st != KVS_OK)
        return st;
    kvs_blob *b = NULL;
    st = kvs_store_blob_get(s, id, &b, err, errlen);
    if (st == KVS_OK && b->revoked)
        st = base_fail(KVS_ERR_REVOKED, err, errlen, "the listing's publisher key is revoked");
    kvs_blob_free(b);
    db_stmt q;
    if (st == KVS_OK)
        st = kvs_prepare(s, "UPDATE blobs SET title = coalesce(:title, title), "
                            "price = CASE WHEN :setp THEN :price ELSE price END, "
                            "expires = CASE WHEN :sete THEN nullif(:exp, 0) ELSE expires END WHERE id = :id",
                         &q, err, errlen);
    if (st == KVS_OK) {
        db_bind_text(&q, ":title", u->title);
        db_bind_int64(&q, ":setp", u->set_price);
        db_bind_int64(&q, ":price", (int64_t)u->price);
        db_bind_int64(&q, ":sete", u->set_expires);
        db_bind_int64(&q, ":exp", u->expires);
        db_bind_hex(&q, ":id", id, KVS_SHA256_LEN);
        st = db_run(&q, err, errlen);
        db_finalize(&q);
    }
    return db_end(s->db, st, err, errlen);
}
