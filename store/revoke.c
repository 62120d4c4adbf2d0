/* revoke.c: revoking a publisher key in the index: its listings leave the catalog, its blobs
 * stop being sold and served, and the purchases it voids are refunded in the ledger. */
#include "store/store_internal.h"

#include "crypto/kvcrypto.h"

kvs_status kvs_store_key_revoked(kvs_store *s, const uint8_t key_id[KVS_KEYID_LEN], int *revoked, int64_t *at,
                                 char *err, size_t errlen)
{
    *revoked = 0;
    if (at)
        *at = 0;
    db_stmt q;
    kvs_status st = kvs_prepare(s, "SELECT revoked FROM revocations WHERE key_id = :kid", &q, err, errlen);
    db_bind_hex(&q, ":kid", key_id, KVS_KEYID_LEN);
    if (st == KVS_OK)
        st = db_step(&q, revoked, err, errlen);
    if (st == KVS_OK && *revoked && at)
        *at = sqlite3_column_int64(q.st, 0);
    db_finalize(&q);
    return st;
}

/* Runs one write statement of the revocation (it uses :kid, :reason and :now); *changes gets
 * its row count. */
static kvs_status revoke_step(kvs_store *s, const char *sql, const uint8_t key_id[KVS_KEYID_LEN], const char *reason,
                              int64_t now, size_t *changes, char *err, size_t errlen)
{
    db_stmt q;
    kvs_status st = kvs_prepare(s, sql, &q, err, errlen);
    if (st != KVS_OK)
        return st;
    db_bind_hex(&q, ":kid", key_id, KVS_KEYID_LEN);
    db_bind_text(&q, ":reason", reason);
    db_bind_int64(&q, ":now", now);
    st = db_run(&q, err, errlen);
    if (st == KVS_OK && changes)
        *changes = (size_t)sqlite3_changes(s->db);
    db_finalize(&q);
    return st;
}

kvs_status kvs_store_publisher_revoke_locked(kvs_store *s, const uint8_t key_id[KVS_KEYID_LEN], const char *reason,
                                             int64_t now, size_t *n_blobs, size_t *n_refunds, char *err,
                                             size_t errlen)
{
    size_t added = 0;
    *n_blobs = *n_refunds = 0;
    kvs_status st = revoke_step(s, "INSERT INTO revocations (key_id, revoked, reason) VALUES (:kid, :now, :reason) "
                                "ON CONFLICT (key_id) DO NOTHING", key_id, reason, now, &added, err, errlen);
    if (st == KVS_OK && added) {
        db_stmt q;
        int row = 0;
        st = kvs_prepare(s, "SELECT count(*) FROM blobs WHERE publisher_key_id = :kid", &q, err, errlen);
        if (st == KVS_OK) {
            db_bind_hex(&q, ":kid", key_id, KVS_KEYID_LEN);
            st = db_step(&q, &row, err, errlen);
            *n_blobs = row ? (size_t)sqlite3_column_int64(q.st, 0) : 0;
            db_finalize(&q);
        }
    }
    /* every purchase whose token could still download is refunded, once */
    if (st == KVS_OK && added)
        st = revoke_step(s,
                         "INSERT INTO refunds (purchase_id, amount, at, reason) "
                         "SELECT p.id, p.price, :now, :reason FROM purchases p "
                         "JOIN access_tokens t ON t.purchase_id = p.id JOIN blobs b ON b.id = t.blob_id "
                         "WHERE b.publisher_key_id = :kid AND t.expires > :now AND t.bytes_left > 0 "
                         "ON CONFLICT (purchase_id) DO NOTHING",
                         key_id, reason, now, n_refunds, err, errlen);
    return st;
}

kvs_status kvs_store_publisher_revoke(kvs_store *s, const uint8_t key_id[KVS_KEYID_LEN], const char *reason,
                                      int64_t now, size_t *blobs, size_t *refunds, char *err, size_t errlen)
{
    if (blobs)
        *blobs = 0;
    if (refunds)
        *refunds = 0;
    kvs_status st = db_begin(s->db, err, errlen);
    if (st != KVS_OK)
        return st;
    size_t n_blobs = 0, n_refunds = 0;
    st = kvs_store_publisher_revoke_locked(s, key_id, reason ? reason : "publisher key revoked", now, &n_blobs,
                                           &n_refunds, err, errlen);
    st = db_end(s->db, st, err, errlen);
    if (st == KVS_OK) {
        if (blobs)
            *blobs = n_blobs;
        if (refunds)
            *refunds = n_refunds;
    }
    return st;
}
