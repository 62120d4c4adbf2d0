/* prune.c: housekeeping of the index's ever-growing tables: unpaid purchases, expired access
 * tokens and old download log rows, deleted in bounded batches (kvs_store_prune). */
#include "store/store_internal.h"

/* The oldest unpaid purchases that may go (see kvs_prune_policy), as the tail of a statement. */
#define UNPAID_PURCHASES \
    "(SELECT p.id FROM purchases p WHERE p.created < :before AND (p.price = 0 OR p.delivered = 0) " \
    "AND NOT EXISTS (SELECT 1 FROM access_tokens t WHERE t.purchase_id = p.id AND t.expires > :now " \
    "AND t.bytes_left > 0) AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.purchase_id = p.id) " \
    "ORDER BY p.created, p.id LIMIT :n)"

/* Runs one DELETE of at most n rows older than `before` and adds the rows it removed to *count.
 * `before` 0: nothing to do. */
static kvs_status delete_batch(kvs_store *s, const char *sql, int64_t before, int64_t now, uint32_t n,
                               uint64_t *count, char *err, size_t errlen)
{
    if (!before)
        return KVS_OK;
    db_stmt q;
    kvs_status st = kvs_prepare(s, sql, &q, err, errlen);
    db_bind_int64(&q, ":before", before);
    if (st == KVS_OK && sqlite3_bind_parameter_index(q.st, ":now"))
        db_bind_int64(&q, ":now", now);
    db_bind_int64(&q, ":n", n);
    if (st == KVS_OK)
        st = db_run(&q, err, errlen);
    db_finalize(&q);
    if (st == KVS_OK)
        *count += (uint64_t)sqlite3_changes(s->db);
    return st;
}

kvs_status kvs_store_prune(kvs_store *s, const kvs_prune_policy *p, kvs_prune_counts *c, char *err, size_t errlen)
{
    *c = (kvs_prune_counts){0};
    if (p->batch < 1 || p->batch > 10000) {
        base_errf(err, errlen, "prune batch %u out of range 1..10000", p->batch);
        return KVS_ERR_INVALID;
    }
    kvs_status st = db_begin(s->db, err, errlen);
    if (st != KVS_OK)
        return st;
    /* a purchase's token rows reference it: they go first (none of them could still download),
     * and the same selection then finds the same purchases, now without tokens */
    uint64_t purchase_tokens = 0;
    st = delete_batch(s, "DELETE FROM access_tokens WHERE purchase_id IN " UNPAID_PURCHASES, p->unpaid_before,
                      p->now, p->batch, &purchase_tokens, err, errlen);
    if (st == KVS_OK)
        st = delete_batch(s, "DELETE FROM purchases WHERE id IN " UNPAID_PURCHASES, p->unpaid_before, p->now,
                          p->batch, &c->purchases, err, errlen);
    if (st == KVS_OK)
        st = delete_batch(s,
                          "DELETE FROM access_tokens WHERE rowid IN (SELECT rowid FROM access_tokens "
                          "WHERE expires < :before ORDER BY expires LIMIT :n)",
                          p->tokens_expired_before, p->now, p->batch, &c->tokens, err, errlen);
    if (st == KVS_OK)
        st = delete_batch(s,
                          "DELETE FROM download_log WHERE id IN (SELECT id FROM download_log "
                          "WHERE at < :before ORDER BY at LIMIT :n)",
                          p->log_before, p->now, p->batch, &c->log_rows, err, errlen);
    c->tokens += purchase_tokens;
    st = db_end(s->db, st, err, errlen);
    if (st != KVS_OK)
        *c = (kvs_prune_counts){0};
    return st;
}
