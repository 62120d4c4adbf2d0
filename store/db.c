/* db.c: a small SQLite statement wrapper for store/: prepare, bind by name, step, always
 * finalize; every error carries sqlite3_errmsg and the SQL that failed. */
#include "store/store_internal.h"

#include <stdio.h>
#include <string.h>

#include "crypto/kvcrypto.h"

/* SQL in messages is cut to one readable line. */
static void sql_err(char *err, size_t errlen, sqlite3 *db, const char *what, const char *sql)
{
    char one[120];
    size_t j = 0;
    for (size_t i = 0; sql && sql[i] && j + 4 < sizeof one; i++) {
        char c = sql[i] == '\n' || sql[i] == '\t' ? ' ' : sql[i];
        if (c == ' ' && j > 0 && one[j - 1] == ' ')
            continue;
        one[j++] = c;
    }
    if (sql && strlen(sql) >= sizeof one - 4)
        one[j++] = '.', one[j++] = '.', one[j++] = '.';
    one[j] = '\0';
    base_errf(err, errlen, "sqlite %s failed: %s (in: %s)", what, sqlite3_errmsg(db), one);
}

kvs_status db_exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        sql_err(err, errlen, db, "exec", sql);
        sqlite3_free(msg);
        return KVS_ERR_DB;
    }
    return KVS_OK;
}

kvs_status db_prepare(sqlite3 *db, const char *sql, db_stmt *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->db = db;
    out->sql = sql;
    if (sqlite3_prepare_v2(db, sql, -1, &out->st, NULL) != SQLITE_OK) {
        sql_err(err, errlen, db, "prepare", sql);
        out->st = NULL;
        return KVS_ERR_DB;
    }
    return KVS_OK;
}

kvs_status db_prepare_cached(db_cache *c, sqlite3 *db, const char *sql, db_stmt *out, char *err, size_t errlen)
{
    for (int i = 0; i < c->n; i++) {
        if (c->busy[i] || strcmp(sqlite3_sql(c->st[i]), sql) != 0)
            continue;
        memset(out, 0, sizeof *out);
        out->db = db;
        out->sql = sql;
        out->st = c->st[i];
        out->cache = c;
        out->slot = i;
        c->busy[i] = 1;
        return KVS_OK;
    }
    kvs_status st = db_prepare(db, sql, out, err, errlen);
    if (st == KVS_OK && c->n < DB_CACHE) {
        out->cache = c;
        out->slot = c->n;
        c->st[c->n] = out->st;
        c->busy[c->n++] = 1;
    }
    return st;
}

void db_cache_clear(db_cache *c)
{
    for (int i = 0; i < c->n; i++)
        sqlite3_finalize(c->st[i]);
    c->n = 0;
}

static int param_index(db_stmt *q, const char *name)
{
    if (q->bad || !q->st)
        return 0;
    int i = sqlite3_bind_parameter_index(q->st, name);
    if (i == 0) {
        q->bad = 1;
        snprintf(q->bind_err, sizeof q->bind_err, "no parameter %s", name);
    }
    return i;
}

static void bind_rc(db_stmt *q, int rc, const char *name)
{
    if (rc != SQLITE_OK && !q->bad) {
        q->bad = 1;
        snprintf(q->bind_err, sizeof q->bind_err, "cannot bind %s: %s", name, sqlite3_errstr(rc));
    }
}

void db_bind_text(db_stmt *q, const char *name, const char *v)
{
    int i = param_index(q, name);
    if (i)
        bind_rc(q, v ? sqlite3_bind_text(q->st, i, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(q->st, i), name);
}

void db_bind_int64(db_stmt *q, const char *name, int64_t v)
{
    int i = param_index(q, name);
    if (i)
        bind_rc(q, sqlite3_bind_int64(q->st, i, v), name);
}

void db_bind_hex(db_stmt *q, const char *name, const uint8_t *bytes, size_t n)
{
    char hex[2 * 64 + 1];
    if (n > 64) {
        q->bad = 1;
        snprintf(q->bind_err, sizeof q->bind_err, "hex value for %s too long", name);
        return;
    }
    db_bind_text(q, name, bytes ? kvc_hex(bytes, n, hex) : NULL);
}

kvs_status db_step(db_stmt *q, int *row, char *err, size_t errlen)
{
    *row = 0;
    if (!q->st) {
        base_errf(err, errlen, "sqlite step on an unprepared statement (in: %.80s)", q->sql ? q->sql : "");
        return KVS_ERR_DB;
    }
    if (q->bad) {
        base_errf(err, errlen, "sqlite bind failed: %s (in: %.80s)", q->bind_err, q->sql);
        return KVS_ERR_DB;
    }
    int rc = sqlite3_step(q->st);
    if (rc == SQLITE_ROW) {
        *row = 1;
        return KVS_OK;
    }
    if (rc == SQLITE_DONE)
        return KVS_OK;
    sql_err(err, errlen, q->db, "step", q->sql);
    return KVS_ERR_DB;
}

kvs_status kvs_has_row(kvs_store *s, const char *sql, const char *name, const uint8_t *key, size_t n, int *row,
                       char *err, size_t errlen)
{
    db_stmt q;
    *row = 0;
    kvs_status st = kvs_prepare(s, sql, &q, err, errlen);
    db_bind_hex(&q, name, key, n);
    if (st == KVS_OK)
        st = db_step(&q, row, err, errlen);
    db_finalize(&q);
    return st;
}

kvs_status db_run(db_stmt *q, char *err, size_t errlen)
{
    int row = 0;
    kvs_status st = db_step(q, &row, err, errlen);
    if (st == KVS_OK && row) {
        base_errf(err, errlen, "sqlite statement returned rows where none were expected (in: %.80s)", q->sql);
        return KVS_ERR_DB;
    }
    return st;
}

void db_finalize(db_stmt *q)
{
    if (q->st && q->cache) {
        sqlite3_reset(q->st); /* its error, if any, was reported by step */
        sqlite3_clear_bindings(q->st);
        q->cache->busy[q->slot] = 0;
    } else if (q->st) {
        sqlite3_finalize(q->st);
    }
    q->st = NULL;
    q->cache = NULL;
}

kvs_status db_begin(sqlite3 *db, char *err, size_t errlen)
{
    return db_exec(db, "BEGIN IMMEDIATE", err, errlen);
}

kvs_status db_commit(sqlite3 *db, char *err, size_t errlen)
{
    kvs_status st = db_exec(db, "COMMIT", err, errlen);
    if (st != KVS_OK)
        db_rollback(db);
    return st;
}

void db_rollback(sqlite3 *db)
{
    if (!sqlite3_get_autocommit(db))
        (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

kvs_status db_end(sqlite3 *db, kvs_status st, char *err, size_t errlen)
{
    if (st == KVS_OK)
        return db_commit(db, err, errlen);
    db_rollback(db);
    return st;
}

int db_column_hex(sqlite3_stmt *st, int col, uint8_t *out, size_t n)
{
    const char *t = (const char *)sqlite3_column_text(st, col);
    if (!t)
        return -1;
    return kvc_unhex(t, out, n) == KVC_OK ? 0 : -1;
}
