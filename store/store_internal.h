/* store_internal.h: what the files of store/ share: the store handle, the small SQLite
 * statement wrapper (db.c) and path helpers. Not part of the public contract. */
#ifndef KVPUB_STORE_INTERNAL_H
#define KVPUB_STORE_INTERNAL_H

#include "store/kvstore.h"

#include <sqlite3.h>
#include "base/base.h"

/* Prepared statements kept for reuse on one connection: parsing SQL was a third of a catalog
 * request's CPU. A slot is busy from db_prepare_cached to db_finalize. */
enum { DB_CACHE = 32 };
typedef struct db_cache {
    sqlite3_stmt *st[DB_CACHE];
    unsigned char busy[DB_CACHE];
    int n;
} db_cache;

struct kvs_store {
    sqlite3 *db;
    char *dir;      /* store root, no trailing slash */
    db_cache cache;
};

/* A prepared statement plus what an error message needs. Statements are always finalized
 * with db_finalize, whatever happened (a cached one is reset and handed back). */
typedef struct db_stmt {
    sqlite3 *db;
    sqlite3_stmt *st;
    const char *sql;
    int bad;        /* a bind failed: step refuses to run */
    char bind_err[160];
    db_cache *cache; /* non-NULL: st belongs to cache slot `slot` */
    int slot;
} db_stmt;

/* Runs one or more statements without results. */
kvs_status db_exec(sqlite3 *db, const char *sql, char *err, size_t errlen) KVS_WUR;
kvs_status db_prepare(sqlite3 *db, const char *sql, db_stmt *out, char *err, size_t errlen) KVS_WUR;
/* db_prepare through the connection's cache: a statement of the same SQL that is not in use
 * is reused; otherwise one is prepared (and kept when a slot is free). */
kvs_status db_prepare_cached(db_cache *c, sqlite3 *db, const char *sql, db_stmt *out, char *err,
                             size_t errlen) KVS_WUR;
/* Finalizes every cached statement (before closing the connection). */
void db_cache_clear(db_cache *c);
/* The store's statements go through its connection's cache. */
static inline kvs_status kvs_prepare(kvs_store *s, const char *sql, db_stmt *out, char *err, size_t errlen)
{
    return db_prepare_cached(&s->cache, s->db, sql, out, err, errlen);
}
/* kvs_store_publisher_revoke's work inside the caller's write transaction (db_begin): so that
 * revoking a signing key revokes it as a publisher in the same transaction. */
kvs_status kvs_store_publisher_revoke_locked(kvs_store *s, const uint8_t key_id[KVS_KEYID_LEN], const char *reason,
                                             int64_t now, size_t *n_blobs, size_t *n_refunds, char *err,
                                             size_t errlen) KVS_WUR;
/* Whether sql, its one parameter `name` bound to the n bytes key as lowercase hex, returns a
 * row: KVS_OK with *row 1 or 0, or the failure. */
kvs_status kvs_has_row(kvs_store *s, const char *sql, const char *name, const uint8_t *key, size_t n, int *row,
                       char *err, size_t errlen) KVS_WUR;
/* Binders by parameter name (":doc"). An unknown name marks the statement bad, so the
 * programming error surfaces at step instead of silently binding nothing. */
void db_bind_text(db_stmt *q, const char *name, const char *v);   /* NULL binds SQL NULL */
void db_bind_int64(db_stmt *q, const char *name, int64_t v);
void db_bind_hex(db_stmt *q, const char *name, const uint8_t *bytes, size_t n); /* lowercase hex; NULL: SQL NULL */
/* Steps once: KVS_OK with *row = 1 (a row is ready) or 0 (done), or KVS_ERR_DB. */
kvs_status db_step(db_stmt *q, int *row, char *err, size_t errlen) KVS_WUR;
/* Steps a statement expected to return no rows. */
kvs_status db_run(db_stmt *q, char *err, size_t errlen) KVS_WUR;
void db_finalize(db_stmt *q);

/* Transactions: BEGIN IMMEDIATE takes the write lock up front (waiting up to the busy
 * timeout), so a transaction never fails half-way on a lock upgrade. */
kvs_status db_begin(sqlite3 *db, char *err, size_t errlen) KVS_WUR;
kvs_status db_commit(sqlite3 *db, char *err, size_t errlen) KVS_WUR;
void db_rollback(sqlite3 *db); /* best effort, for error paths */
/* Ends a write transaction: commits when st is KVS_OK, else rolls back; returns the final
 * status (st, or the commit's failure). */
kvs_status db_end(sqlite3 *db, kvs_status st, char *err, size_t errlen) KVS_WUR;

/* Parses a column holding 2n hex digits into out; 0 on success. */
int db_column_hex(sqlite3_stmt *st, int col, uint8_t *out, size_t n);

/* DIR/blobs/ab/<hex id> into out. 0 on success, -1 if it does not fit. */
int store_blob_path(const kvs_store *s, const uint8_t id[KVS_SHA256_LEN], char *out, size_t outlen);

/* Unix seconds as RFC 3339 UTC ("2025-01-02T03:04:05Z") into out (>= 21 bytes); returns out. */
char *store_time_format(int64_t t, char *out, size_t outlen);

/* Migrations (schema.c): brings the index to the newest schema version. */
kvs_status store_migrate(sqlite3 *db, char *err, size_t errlen) KVS_WUR;

#endif
