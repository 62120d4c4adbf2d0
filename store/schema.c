/* schema.c: the index schema as numbered migrations; PRAGMA user_version records how many
 * have run. Append new migrations, never edit a released one. */
#include "store/store_internal.h"

#include <stdio.h>

/* Hashes and key ids are lowercase hex TEXT and times are unix seconds, so the index reads
 * well in the sqlite3 CLI. */
static const char *const migrations[] = {
    /* 1: initial schema */
    "CREATE TABLE publishers (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  key_id TEXT NOT NULL UNIQUE CHECK (length(key_id) = 16),\n"
    "  public_key TEXT NOT NULL CHECK (length(public_key) = 64),\n"
    "  name TEXT NOT NULL,\n"
    "  credential_sha256 TEXT CHECK (credential_sha256 IS NULL OR length(credential_sha256) = 64),\n"
    "  created INTEGER NOT NULL\n"
    ");\n"
    "CREATE TABLE models (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  fingerprint TEXT NOT NULL UNIQUE CHECK (length(fingerprint) = 64),\n"
    "  arch TEXT NOT NULL,\n"
    "  shape TEXT NOT NULL,\n"
    "  rope TEXT NOT NULL\n"
    ");\n"
    "CREATE TABLE tokenizers (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  fingerprint TEXT NOT NULL UNIQUE CHECK (length(fingerprint) = 64)\n"
    ");\n"
    "CREATE TABLE documents (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  sha256 TEXT NOT NULL UNIQUE CHECK (length(sha256) = 64),\n"
    "  title TEXT NOT NULL,\n"
    "  source_uri TEXT,\n"
    "  media_type TEXT NOT NULL,\n"
    "  bytes INTEGER NOT NULL CHECK (bytes >= 0)\n"
    ");\n"
    "CREATE TABLE blobs (\n"
    "  id TEXT PRIMARY KEY CHECK (length(id) = 64),\n"
    "  document_id INTEGER NOT NULL REFERENCES documents(id),\n"
    "  model_id INTEGER NOT NULL REFERENCES models(id),\n"
    "  tokenizer_id INTEGER NOT NULL REFERENCES tokenizers(id),\n"
    "  codec TEXT NOT NULL,\n"
    "  tokens INTEGER NOT NULL CHECK (tokens >= 0),\n"
    "  size INTEGER NOT NULL CHECK (size >= 0),\n"
    "  serial INTEGER NOT NULL,\n"
    "  created INTEGER NOT NULL,\n"
    "  expires INTEGER,\n"
    "  price INTEGER NOT NULL DEFAULT 0 CHECK (price >= 0),\n"
    "  publisher_key_id TEXT NOT NULL CHECK (length(publisher_key_id) = 16),\n"
    "  UNIQUE (document_id, model_id, codec)\n"
    ");\n"
    "CREATE INDEX blobs_by_model ON blobs(model_id);\n"
    "CREATE INDEX blobs_by_created ON blobs(created DESC, id);\n"
    /* purchases outlive their blob (accounting); tokens die with it */
    "CREATE TABLE purchases (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  blob_id TEXT NOT NULL,\n"
    "  buyer TEXT,\n"
    "  price INTEGER NOT NULL,\n"
    "  created INTEGER NOT NULL\n"
    ");\n"
    "CREATE TABLE access_tokens (\n"
    "  token_sha256 TEXT PRIMARY KEY CHECK (length(token_sha256) = 64),\n"
    "  purchase_id INTEGER NOT NULL REFERENCES purchases(id),\n"
    "  blob_id TEXT NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,\n"
    "  expires INTEGER NOT NULL,\n"
    "  downloads_left INTEGER NOT NULL CHECK (downloads_left >= 0)\n"
    ");\n"
    "CREATE INDEX access_tokens_by_blob ON access_tokens(blob_id);\n"
    "CREATE TABLE download_log (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  at INTEGER NOT NULL,\n"
    "  blob_id TEXT NOT NULL,\n"
    "  purchase_id INTEGER,\n"
    "  client TEXT,\n"
    "  bytes INTEGER NOT NULL,\n"
    "  status INTEGER NOT NULL\n"
    ");\n"
    "CREATE INDEX download_log_by_blob ON download_log(blob_id);\n",
    /* 2: the download budget in bytes (downloads x blob size), so that ranged requests spend
     * what they deliver and an exhausted token cannot re-read the blob piece by piece; whole
     * downloads left are bytes_left / size, so downloads_left goes */
    "ALTER TABLE access_tokens ADD COLUMN bytes_left INTEGER NOT NULL DEFAULT 0 CHECK (bytes_left >= 0);\n"
    "UPDATE access_tokens SET bytes_left = downloads_left *\n"
    "  COALESCE((SELECT size FROM blobs WHERE blobs.id = access_tokens.blob_id), 0);\n"
    "ALTER TABLE access_tokens DROP COLUMN downloads_left;\n",
};

enum { N_MIGRATIONS = sizeof migrations / sizeof migrations[0] };

int kvs_schema_latest(void)
{
    return N_MIGRATIONS;
}

static kvs_status user_version(sqlite3 *db, int *v, char *err, size_t errlen)
{
    db_stmt q;
    kvs_status st = db_prepare(db, "PRAGMA user_version", &q, err, errlen);
    int row = 0;
    if (st == KVS_OK)
        st = db_step(&q, &row, err, errlen);
    *v = row ? sqlite3_column_int(q.st, 0) : 0;
    db_finalize(&q);
    return st;
}

int kvs_store_schema_version(kvs_store *s)
{
    int v = -1;
    if (user_version(s->db, &v, NULL, 0) != KVS_OK)
        return -1;
    return v;
}

/* A version-0 database that already has tables is someone else's: do not add ours to it. */
static kvs_status check_foreign(sqlite3 *db, char *err, size_t errlen)
{
    db_stmt q;
    kvs_status st = db_prepare(db, "SELECT name FROM sqlite_master LIMIT 1", &q, err, errlen);
    int row = 0;
    if (st == KVS_OK)
        st = db_step(&q, &row, err, errlen);
    if (st == KVS_OK && row) {
        kvs_set_err(err, errlen, "%s is not a kvpub index (it has tables but no kvpub schema version)",
                    sqlite3_db_filename(db, "main"));
        st = KVS_ERR_SCHEMA;
    }
    db_finalize(&q);
    return st;
}

kvs_status store_migrate(sqlite3 *db, char *err, size_t errlen)
{
    /* The version is read inside the write transaction: two processes opening a fresh
     * store at once must not both run migration 1. */
    for (;;) {
        kvs_status st = db_begin(db, err, errlen);
        if (st != KVS_OK)
            return st;
        int v = 0;
        st = user_version(db, &v, err, errlen);
        if (st != KVS_OK) {
            db_rollback(db);
            return st;
        }
        if (v == 0 && (st = check_foreign(db, err, errlen)) != KVS_OK) {
            db_rollback(db);
            return st;
        }
        if (v == N_MIGRATIONS) {
            db_rollback(db);
            return KVS_OK;
        }
        if (v < 0 || v > N_MIGRATIONS) {
            db_rollback(db);
            kvs_set_err(err, errlen, "index schema version %d is newer than this build understands (up to %d); "
                        "use a newer kvpub", v, N_MIGRATIONS);
            return KVS_ERR_SCHEMA;
        }
        char pragma[48];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v + 1);
        st = db_exec(db, migrations[v], err, errlen);
        if (st == KVS_OK)
            st = db_exec(db, pragma, err, errlen);
        if (st != KVS_OK) {
            db_rollback(db);
            return st;
        }
        st = db_commit(db, err, errlen);
        if (st != KVS_OK)
            return st;
    }
}
