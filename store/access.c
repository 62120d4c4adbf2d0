/* access.c: who may get what: purchases with hashed access tokens (check-and-consume in one
 * transaction), publishers with hashed upload credentials, and the download log. */
#include "store/store_internal.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "crypto/kvcrypto.h"

/* Does a blob row exist? *found, its price and whether its publisher key is revoked. */
static kvs_status blob_exists(kvs_store *s, const uint8_t id[KVS_SHA256_LEN], int *found, int64_t *price,
                              int *revoked, char *err, size_t errlen)
{
    db_stmt q;
    kvs_status st = kvs_prepare(s,
                                "SELECT price, EXISTS (SELECT 1 FROM revocations r WHERE r.key_id = "
                                "blobs.publisher_key_id) FROM blobs WHERE id = :id",
                                &q, err, errlen);
    db_bind_hex(&q, ":id", id, KVS_SHA256_LEN);
    *found = 0;
    if (st == KVS_OK)
        st = db_step(&q, found, err, errlen);
    if (st == KVS_OK && *found) {
        *price = sqlite3_column_int64(q.st, 0);
        *revoked = sqlite3_column_int(q.st, 1) != 0;
    }
    db_finalize(&q);
    return st;
}

kvs_status kvs_store_purchase(kvs_store *s, const uint8_t id[KVS_SHA256_LEN], const char *buyer, int64_t now,
                              int64_t expires, uint32_t max_downloads, uint8_t token[KVS_TOKEN_LEN],
                              int64_t *purchase_id, char *err, size_t errlen)
{
    memset(token, 0, KVS_TOKEN_LEN);
    if (purchase_id)
        *purchase_id = 0;
    if (expires <= now || max_downloads == 0) {
        base_errf(err, errlen, "purchase needs expires > now and at least one download (got expires %lld, now %lld, "
                  "%u downloads)", (long long)expires, (long long)now, max_downloads);
        return KVS_ERR_INVALID;
    }
    uint8_t raw[KVS_TOKEN_LEN], h[KVS_SHA256_LEN];
    if (kvc_random_bytes(raw, sizeof raw) != KVC_OK) {
        base_errf(err, errlen, "cannot get random bytes for an access token");
        return KVS_ERR_IO;
    }
    kvc_sha256(raw, sizeof raw, h);

    kvs_status st = db_begin(s->db, err, errlen);
    if (st != KVS_OK) {
        kvc_wipe(raw, sizeof raw);
        return st;
    }
    int found = 0, revoked = 0;
    int64_t price = 0, pid = 0;
    st = blob_exists(s, id, &found, &price, &revoked, err, errlen);
    char hex[65];
    if (st == KVS_OK && !found) {
        base_errf(err, errlen, "cannot sell blob %s: not in the store", kvc_hex(id, KVS_SHA256_LEN, hex));
        st = KVS_ERR_NOTFOUND;
    } else if (st == KVS_OK && revoked) {
        base_errf(err, errlen, "cannot sell blob %s: its publisher key is revoked", kvc_hex(id, KVS_SHA256_LEN, hex));
        st = KVS_ERR_REVOKED;
    }
    db_stmt q;
    if (st == KVS_OK)
        st = kvs_prepare(s,
                        "INSERT INTO purchases (blob_id, buyer, price, created) VALUES (:blob, :buyer, :price, :now)",
                        &q, err, errlen);
    if (st == KVS_OK) {
        db_bind_hex(&q, ":blob", id, KVS_SHA256_LEN);
        db_bind_text(&q, ":buyer", buyer);
        db_bind_int64(&q, ":price", price);
        db_bind_int64(&q, ":now", now);
        st = db_run(&q, err, errlen);
        pid = sqlite3_last_insert_rowid(s->db);
        db_finalize(&q);
    }
    if (st == KVS_OK)
        st = kvs_prepare(s,
                        "INSERT INTO access_tokens (token_sha256, purchase_id, blob_id, expires, bytes_left) "
                        "VALUES (:hash, :pid, :blob, :expires, :n * (SELECT size FROM blobs WHERE id = :blob))",
                        &q, err, errlen);
    if (st == KVS_OK) {
        db_bind_hex(&q, ":hash", h, sizeof h);
        db_bind_int64(&q, ":pid", pid);
        db_bind_hex(&q, ":blob", id, KVS_SHA256_LEN);
        db_bind_int64(&q, ":expires", expires);
        db_bind_int64(&q, ":n", max_downloads);
        st = db_run(&q, err, errlen);
        db_finalize(&q);
    }
    st = db_end(s->db, st, err, errlen);
    if (st == KVS_OK) {
        memcpy(token, raw, KVS_TOKEN_LEN);
        if (purchase_id)
            *purchase_id = pid;
    }
    kvc_wipe(raw, sizeof raw);
    return st;
}

/* Checks a byte count, hashes the token into h and takes the write lock from the start (two
 * downloads racing for the last bytes cannot both win). */
static kvs_status token_begin(kvs_store *s, const uint8_t token[KVS_TOKEN_LEN], uint64_t bytes, const char *what,
                              uint8_t h[KVS_SHA256_LEN], char *err, size_t errlen)
{
    if (bytes > (uint64_t)INT64_MAX) {
        base_errf(err, errlen, "%s of %llu bytes is out of range", what, (unsigned long long)bytes);
        return KVS_ERR_INVALID;
    }
    kvc_sha256(token, KVS_TOKEN_LEN, h);
    return db_begin(s->db, err, errlen);
}

/* Checks a token for blob id and spends bytes of its budget, in one transaction. */
kvs_status kvs_store_token_spend(kvs_store *s, const uint8_t token[KVS_TOKEN_LEN], const uint8_t id[KVS_SHA256_LEN],
                                 int64_t now, uint64_t bytes, uint32_t *downloads_left, int64_t *purchase_id,
                                 char *err, size_t errlen)
{
    if (downloads_left)
        *downloads_left = 0;
    if (purchase_id)
        *purchase_id = 0;
    uint8_t h[KVS_SHA256_LEN], bought[KVS_SHA256_LEN];
    kvs_status st = token_begin(s, token, bytes, "download", h, err, errlen);
    if (st != KVS_OK)
        return st;
    db_stmt q;
    st = kvs_prepare(s,
                    "SELECT t.blob_id, t.expires, t.bytes_left, t.purchase_id, b.size, EXISTS (SELECT 1 FROM "
                    "revocations r WHERE r.key_id = b.publisher_key_id) FROM access_tokens t "
                    "JOIN blobs b ON b.id = t.blob_id WHERE t.token_sha256 = :hash",
                    &q, err, errlen);
    db_bind_hex(&q, ":hash", h, sizeof h);
    int row = 0;
    int64_t expires = 0, left = 0, pid = 0, size = 0;
    int revoked = 0;
    if (st == KVS_OK)
        st = db_step(&q, &row, err, errlen);
    if (st == KVS_OK && row) {
        if (db_column_hex(q.st, 0, bought, sizeof bought) != 0) {
            base_errf(err, errlen, "access token row holds a malformed blob id");
            st = KVS_ERR_DB;
        }
        expires = sqlite3_column_int64(q.st, 1);
        left = sqlite3_column_int64(q.st, 2);
        pid = sqlite3_column_int64(q.st, 3);
        size = sqlite3_column_int64(q.st, 4);
        revoked = sqlite3_column_int(q.st, 5) != 0;
    }
    db_finalize(&q);
    char hex[65];
    if (st == KVS_OK && !row) {
        base_errf(err, errlen, "unknown access token");
        st = KVS_TOKEN_UNKNOWN;
    } else if (st == KVS_OK && memcmp(bought, id, KVS_SHA256_LEN) != 0) {
        base_errf(err, errlen, "access token was bought for blob %s, not this one", kvc_hex(bought, sizeof bought, hex));
        st = KVS_TOKEN_WRONG_BLOB;
    } else if (st == KVS_OK && revoked) {
        base_errf(err, errlen, "the publisher key of blob %s is revoked: it is no longer served (the purchase "
                  "was refunded)", kvc_hex(bought, sizeof bought, hex));
        st = KVS_ERR_REVOKED;
    } else if (st == KVS_OK && expires <= now) {
        base_errf(err, errlen, "access token expired at %lld (now %lld)", (long long)expires, (long long)now);
        st = KVS_TOKEN_EXPIRED;
    } else if (st == KVS_OK && (uint64_t)left < bytes) {
        base_errf(err, errlen, "access token has %lld bytes of downloads left, this request needs %llu",
                  (long long)left, (unsigned long long)bytes);
        st = KVS_TOKEN_EXHAUSTED;
    }
    if (st == KVS_OK && bytes)
        st = kvs_prepare(s,
                        "UPDATE access_tokens SET bytes_left = bytes_left - :n "
                        "WHERE token_sha256 = :hash AND bytes_left >= :n",
                        &q, err, errlen);
    if (st == KVS_OK && bytes) {
        db_bind_hex(&q, ":hash", h, sizeof h);
        db_bind_int64(&q, ":n", (int64_t)bytes);
        st = db_run(&q, err, errlen);
        if (st == KVS_OK && sqlite3_changes(s->db) != 1) {
            base_errf(err, errlen, "access token changed during the download check");
            st = KVS_ERR_DB;
        }
        db_finalize(&q);
    }
    /* the purchase counts the bytes as delivered from here, in the same transaction: a server
     * killed mid-download cannot leave a paid purchase looking unpaid to the pruning (what the
     * GET does not deliver comes off again in kvs_store_token_refund) */
    if (st == KVS_OK && bytes)
        st = kvs_prepare(s, "UPDATE purchases SET delivered = delivered + :n WHERE id = :pid", &q, err, errlen);
    if (st == KVS_OK && bytes) {
        db_bind_int64(&q, ":n", (int64_t)bytes);
        db_bind_int64(&q, ":pid", pid);
        st = db_run(&q, err, errlen);
        db_finalize(&q);
    }
    st = db_end(s->db, st, err, errlen);
    if (st == KVS_OK) {
        if (downloads_left)
            *downloads_left = (uint32_t)((left - (int64_t)bytes) / (size > 0 ? size : 1));
        if (purchase_id)
            *purchase_id = pid;
    }
    return st;
}

kvs_status kvs_store_token_refund(kvs_store *s, const uint8_t token[KVS_TOKEN_LEN], uint64_t bytes, int64_t now,
                                  char *err, size_t errlen)
{
    if (bytes == 0)
        return KVS_OK;
    uint8_t h[KVS_SHA256_LEN];
    kvs_status st = token_begin(s, token, bytes, "refund", h, err, errlen);
    if (st != KVS_OK)
        return st;
    /* the bytes go back to the token and off what its purchase delivered; and where the
     * publisher was revoked while this GET held the budget (so the revocation saw nothing left
     * to refund), the purchase is refunded now, as the revocation would have (revoke.c) */
    static const char *const steps[] = {
        "UPDATE access_tokens SET bytes_left = bytes_left + :n WHERE token_sha256 = :hash",
        "UPDATE purchases SET delivered = max(delivered - :n, 0) "
        "WHERE id = (SELECT purchase_id FROM access_tokens WHERE token_sha256 = :hash)",
        "INSERT INTO refunds (purchase_id, amount, at, reason) "
        "SELECT p.id, p.price, :now, r.reason FROM access_tokens t JOIN purchases p ON p.id = t.purchase_id "
        "JOIN blobs b ON b.id = t.blob_id JOIN revocations r ON r.key_id = b.publisher_key_id "
        "WHERE t.token_sha256 = :hash AND t.bytes_left > 0 AND t.expires > r.revoked AND :n > 0 "
        "ON CONFLICT (purchase_id) DO NOTHING",
    };
    for (size_t i = 0; st == KVS_OK && i < sizeof steps / sizeof steps[0]; i++) {
        db_stmt q;
        st = kvs_prepare(s, steps[i], &q, err, errlen);
        if (st == KVS_OK) {
            db_bind_hex(&q, ":hash", h, sizeof h);
            db_bind_int64(&q, ":n", (int64_t)bytes);
            if (i == 2)
                db_bind_int64(&q, ":now", now);
            st = db_run(&q, err, errlen);
        }
        db_finalize(&q);
    }
    return db_end(s->db, st, err, errlen); /* a token gone with its blob: nothing to give back */
}

/* ---- publishers ---- */

kvs_status kvs_store_publisher_add(kvs_store *s, const uint8_t key_id[KVS_KEYID_LEN],
                                   const uint8_t public_key[KVS_PUBKEY_LEN], const char *name, const void *cred,
                                   size_t cred_len, int64_t now, char *err, size_t errlen)
{
    if (!name || strlen(name) > KVS_NAME_MAX) {
        base_errf(err, errlen, "publisher name must be given and at most %d bytes", KVS_NAME_MAX);
        return KVS_ERR_INVALID;
    }
    uint8_t h[KVS_SHA256_LEN];
    if (cred)
        kvc_sha256(cred, cred_len, h);
    kvs_status st = db_begin(s->db, err, errlen);
    if (st != KVS_OK)
        return st;
    int row;
    db_stmt q;
    st = kvs_has_row(s, "SELECT 1 FROM publishers WHERE key_id = :kid", ":kid", key_id, KVS_KEYID_LEN, &row, err,
                     errlen);
    char hex[17];
    if (st == KVS_OK && row) {
        base_errf(err, errlen, "publisher %s is already registered", kvc_hex(key_id, KVS_KEYID_LEN, hex));
        st = KVS_ERR_EXISTS;
    }
    if (st == KVS_OK)
        st = kvs_prepare(s,
                        "INSERT INTO publishers (key_id, public_key, name, credential_sha256, created) "
                        "VALUES (:kid, :pk, :name, :cred, :now)",
                        &q, err, errlen);
    if (st == KVS_OK) {
        db_bind_hex(&q, ":kid", key_id, KVS_KEYID_LEN);
        db_bind_hex(&q, ":pk", public_key, KVS_PUBKEY_LEN);
        db_bind_text(&q, ":name", name);
        db_bind_hex(&q, ":cred", cred ? h : NULL, sizeof h);
        db_bind_int64(&q, ":now", now);
        st = db_run(&q, err, errlen);
        db_finalize(&q);
    }
    st = db_end(s->db, st, err, errlen);
    return st;
}

/* Reads a publisher row; *found, and the stored credential hash into cred_hash (when set). */
static kvs_status publisher_read(kvs_store *s, const uint8_t key_id[KVS_KEYID_LEN], kvs_publisher *out,
                                 uint8_t cred_hash[KVS_SHA256_LEN], char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    db_stmt q;
    kvs_status st = kvs_prepare(s,
                               "SELECT public_key, name, credential_sha256, created FROM publishers WHERE key_id = :kid",
                               &q, err, errlen);
    db_bind_hex(&q, ":kid", key_id, KVS_KEYID_LEN);
    int row = 0;
    if (st == KVS_OK)
        st = db_step(&q, &row, err, errlen);
    char hex[17];
    kvc_hex(key_id, KVS_KEYID_LEN, hex); /* both messages below name the key */
    if (st == KVS_OK && !row) {
        base_errf(err, errlen, "unknown publisher %s", hex);
        st = KVS_ERR_NOTFOUND;
    }
    if (st == KVS_OK) {
        memcpy(out->key_id, key_id, KVS_KEYID_LEN);
        const char *name = (const char *)sqlite3_column_text(q.st, 1);
        snprintf(out->name, sizeof out->name, "%s", name ? name : "");
        out->has_credential = sqlite3_column_type(q.st, 2) != SQLITE_NULL;
        out->created = sqlite3_column_int64(q.st, 3);
        if (db_column_hex(q.st, 0, out->public_key, KVS_PUBKEY_LEN) != 0 ||
            (out->has_credential && db_column_hex(q.st, 2, cred_hash, KVS_SHA256_LEN) != 0)) {
            base_errf(err, errlen, "publisher row %s holds a malformed key or hash", hex);
            st = KVS_ERR_DB;
        }
    }
    db_finalize(&q);
    return st;
}

kvs_status kvs_store_publisher_get(kvs_store *s, const uint8_t key_id[KVS_KEYID_LEN], kvs_publisher *out, char *err,
                                   size_t errlen)
{
    uint8_t ignored[KVS_SHA256_LEN];
    return publisher_read(s, key_id, out, ignored, err, errlen);
}

kvs_status kvs_store_publisher_check(kvs_store *s, const uint8_t key_id[KVS_KEYID_LEN], const void *cred,
                                     size_t cred_len, char *err, size_t errlen)
{
    kvs_publisher p;
    uint8_t stored[KVS_SHA256_LEN], h[KVS_SHA256_LEN];
    kvs_status st = publisher_read(s, key_id, &p, stored, err, errlen);
    if (st != KVS_OK)
        return st;
    char hex[17];
    kvc_hex(key_id, KVS_KEYID_LEN, hex);
    if (!p.has_credential) {
        base_errf(err, errlen, "publisher %s has no upload credential", hex);
        return KVS_ERR_CREDENTIAL;
    }
    kvc_sha256(cred ? cred : "", cred ? cred_len : 0, h);
    if (CRYPTO_memcmp(h, stored, sizeof h) != 0) {
        base_errf(err, errlen, "wrong upload credential for publisher %s", hex);
        return KVS_ERR_CREDENTIAL;
    }
    return KVS_OK;
}

/* ---- download log ---- */

kvs_status kvs_store_log_download(kvs_store *s, const uint8_t id[KVS_SHA256_LEN], int64_t purchase_id,
                                  const char *client, uint64_t bytes, int status, int64_t now, char *err, size_t errlen)
{
    if (bytes > (uint64_t)INT64_MAX) {
        base_errf(err, errlen, "download size out of range");
        return KVS_ERR_INVALID;
    }
    db_stmt q;
    kvs_status st = db_begin(s->db, err, errlen);
    if (st != KVS_OK)
        return st;
    /* (what a purchase delivered is counted where its token is spent and given back) */
    if (st == KVS_OK)
        st = kvs_prepare(s,
                         "INSERT INTO download_log (at, blob_id, purchase_id, client, bytes, status) "
                         "VALUES (:now, :blob, :pid, :client, :bytes, :status)",
                         &q, err, errlen);
    if (st != KVS_OK)
        return db_end(s->db, st, err, errlen);
    db_bind_int64(&q, ":now", now);
    db_bind_hex(&q, ":blob", id, KVS_SHA256_LEN);
    if (purchase_id)
        db_bind_int64(&q, ":pid", purchase_id);
    else
        db_bind_text(&q, ":pid", NULL);
    db_bind_text(&q, ":client", client);
    db_bind_int64(&q, ":bytes", (int64_t)bytes);
    db_bind_int64(&q, ":status", status);
    st = db_run(&q, err, errlen);
    db_finalize(&q);
    return db_end(s->db, st, err, errlen);
}

kvs_status kvs_store_download_count(kvs_store *s, const uint8_t *id, uint64_t *count, char *err, size_t errlen)
{
    *count = 0;
    db_stmt q;
    kvs_status st = kvs_prepare(s, "SELECT count(*) FROM download_log WHERE :blob IS NULL OR blob_id = :blob", &q,
                               err, errlen);
    db_bind_hex(&q, ":blob", id, KVS_SHA256_LEN);
    int row = 0;
    if (st == KVS_OK)
        st = db_step(&q, &row, err, errlen);
    if (st == KVS_OK && row)
        *count = (uint64_t)sqlite3_column_int64(q.st, 0);
    db_finalize(&q);
    return st;
}
