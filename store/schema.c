/* schema.c: the index schema as numbered migrations; PRAGMA user_version records how many
 * have run. Append new migrations, never edit a released one. */
#include "store/store_internal.h"

#include <stdio.h>

/* The columns of blobs in migration 1, which migration 3 keeps when it rebuilds the table (the
 * text of migration 1 is unchanged by naming them once). */
#define BLOB_COLUMNS_V1 \
    "  id TEXT PRIMARY KEY CHECK (length(id) = 64),\n" \
    "  document_id INTEGER NOT NULL REFERENCES documents(id),\n" \
    "  model_id INTEGER NOT NULL REFERENCES models(id),\n" \
    "  tokenizer_id INTEGER NOT NULL REFERENCES tokenizers(id),\n" \
    "  codec TEXT NOT NULL,\n" \
    "  tokens INTEGER NOT NULL CHECK (tokens >= 0),\n" \
    "  size INTEGER NOT NULL CHECK (size >= 0),\n" \
    "  serial INTEGER NOT NULL,\n" \
    "  created INTEGER NOT NULL,\n" \
    "  expires INTEGER,\n" \
    "  price INTEGER NOT NULL DEFAULT 0 CHECK (price >= 0),\n" \
    "  publisher_key_id TEXT NOT NULL CHECK (length(publisher_key_id) = 16),\n"

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
    BLOB_COLUMNS_V1
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
    /* 3: listings belong to publishers. A listing is unique per (document, model, codec,
     * publisher), not per (document, model, codec): a publisher who knew only a document's hash
     * could otherwise squat it. Each blob shows the title, source and media type its own signed
     * manifest carries (documents.* keep the first publisher's, for nothing but history).
     * Revoked publisher keys are recorded here, so that their listings leave the catalog and
     * their blobs are neither sold nor served; refunds record what revocation voided. SQLite
     * cannot change a table's UNIQUE constraint, so blobs is rebuilt (store_migrate runs
     * migrations with foreign keys off and checks them before committing). */
    "CREATE TABLE blobs_v3 (\n"
    BLOB_COLUMNS_V1
    "  title TEXT NOT NULL,\n"
    "  source_uri TEXT,\n"
    "  media_type TEXT NOT NULL,\n"
    "  UNIQUE (document_id, model_id, codec, publisher_key_id)\n"
    ");\n"
    "INSERT INTO blobs_v3 SELECT b.id, b.document_id, b.model_id, b.tokenizer_id, b.codec, b.tokens, b.size,\n"
    "  b.serial, b.created, b.expires, b.price, b.publisher_key_id, d.title, d.source_uri, d.media_type\n"
    "  FROM blobs b JOIN documents d ON d.id = b.document_id;\n"
    "DROP TABLE blobs;\n"
    "ALTER TABLE blobs_v3 RENAME TO blobs;\n"
    "CREATE INDEX blobs_by_model ON blobs(model_id);\n"
    "CREATE INDEX blobs_by_created ON blobs(created DESC, id);\n"
    "CREATE INDEX blobs_by_publisher ON blobs(publisher_key_id);\n"
    "CREATE TABLE revocations (\n"
    "  key_id TEXT PRIMARY KEY CHECK (length(key_id) = 16),\n"
    "  revoked INTEGER NOT NULL,\n"
    "  reason TEXT NOT NULL\n"
    ");\n"
    "CREATE TABLE refunds (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  purchase_id INTEGER NOT NULL REFERENCES purchases(id),\n"
    "  amount INTEGER NOT NULL CHECK (amount >= 0),\n"
    "  at INTEGER NOT NULL,\n"
    "  reason TEXT NOT NULL,\n"
    "  UNIQUE (purchase_id)\n"
    ");\n",
    /* 4: housekeeping (kvs_store_prune). A purchase under which bytes were delivered is kept
     * for the ledger whatever the download log's retention, so it counts them itself
     * (backfilled from the log); the indexes let each pruning batch find its oldest rows
     * without a table scan. */
    "ALTER TABLE purchases ADD COLUMN delivered INTEGER NOT NULL DEFAULT 0 CHECK (delivered >= 0);\n"
    "UPDATE purchases SET delivered =\n"
    "  COALESCE((SELECT sum(bytes) FROM download_log l WHERE l.purchase_id = purchases.id), 0);\n"
    "CREATE INDEX purchases_by_created ON purchases(created);\n"
    "CREATE INDEX access_tokens_by_expires ON access_tokens(expires);\n"
    "CREATE INDEX access_tokens_by_purchase ON access_tokens(purchase_id);\n"
    "CREATE INDEX download_log_by_at ON download_log(at);\n",
    /* 5: declared contexts. A blob may be prefilled after a context the publisher declares (a
     * system prompt, a chat header): several contexts of one document are several listings of
     * the same publisher, so the context's hash joins the listing's uniqueness ('' = none,
     * every blob published before). The table is rebuilt as in migration 3. */
    "CREATE TABLE blobs_v5 (\n"
    BLOB_COLUMNS_V1
    "  title TEXT NOT NULL,\n"
    "  source_uri TEXT,\n"
    "  media_type TEXT NOT NULL,\n"
    "  context_sha256 TEXT NOT NULL DEFAULT '' CHECK (context_sha256 = '' OR length(context_sha256) = 64),\n"
    "  context_tokens INTEGER NOT NULL DEFAULT 0 CHECK (context_tokens >= 0),\n"
    "  UNIQUE (document_id, model_id, codec, publisher_key_id, context_sha256)\n"
    ");\n"
    "INSERT INTO blobs_v5 SELECT id, document_id, model_id, tokenizer_id, codec, tokens, size, serial, created,\n"
    "  expires, price, publisher_key_id, title, source_uri, media_type, '', 0 FROM blobs;\n"
    "DROP TABLE blobs;\n"
    "ALTER TABLE blobs_v5 RENAME TO blobs;\n"
    "CREATE INDEX blobs_by_model ON blobs(model_id);\n"
    "CREATE INDEX blobs_by_created ON blobs(created DESC, id);\n"
    "CREATE INDEX blobs_by_publisher ON blobs(publisher_key_id);\n"
    "CREATE INDEX blobs_by_context ON blobs(context_sha256);\n",
    /* 6: signed catalog snapshots (spec/repository.md). The store's own signing keys, one
     * active at a time, retired ones kept with the cut-off after which their signatures no
     * longer count; the last snapshot version per signing key, which must only grow; and a
     * generation counter that triggers bump on every change a snapshot shows, so the server
     * knows when to sign a new one without comparing catalogs. A migration that rebuilds
     * blobs must create its triggers again. */
    "CREATE TABLE signing_keys (\n"
    "  key_id TEXT PRIMARY KEY CHECK (length(key_id) = 16),\n"
    "  public_key TEXT NOT NULL CHECK (length(public_key) = 64),\n"
    "  created INTEGER NOT NULL,\n"
    "  state TEXT NOT NULL CHECK (state IN ('active', 'retired', 'revoked')),\n"
    "  cutoff INTEGER\n"
    ");\n"
    "CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys(state) WHERE state = 'active';\n"
    "CREATE TABLE snapshot_versions (\n"
    "  key_id TEXT PRIMARY KEY CHECK (length(key_id) = 16),\n"
    "  version INTEGER NOT NULL CHECK (version >= 1),\n"
    "  issued INTEGER NOT NULL,\n"
    "  expires INTEGER NOT NULL\n"
    ");\n"
    "CREATE TABLE catalog_gen (id INTEGER PRIMARY KEY CHECK (id = 1), gen INTEGER NOT NULL);\n"
    "INSERT INTO catalog_gen VALUES (1, 0);\n"
    "CREATE TRIGGER blobs_gen_ins AFTER INSERT ON blobs BEGIN UPDATE catalog_gen SET gen = gen + 1; END;\n"
    "CREATE TRIGGER blobs_gen_upd AFTER UPDATE ON blobs BEGIN UPDATE catalog_gen SET gen = gen + 1; END;\n"
    "CREATE TRIGGER blobs_gen_del AFTER DELETE ON blobs BEGIN UPDATE catalog_gen SET gen = gen + 1; END;\n"
    "CREATE TRIGGER revocations_gen AFTER INSERT ON revocations BEGIN UPDATE catalog_gen SET gen = gen + 1; END;\n"
    "CREATE TRIGGER signing_gen_ins AFTER INSERT ON signing_keys BEGIN UPDATE catalog_gen SET gen = gen + 1; END;\n"
    "CREATE TRIGGER signing_gen_upd AFTER UPDATE ON signing_keys BEGIN UPDATE catalog_gen SET gen = gen + 1; END;\n",
    /* 7: a snapshot version counts catalog changes, not signatures: the catalog generation the
     * last version was signed at is kept, and signing the same catalog again (the server
     * renewing its expiry, an export beside a running server) keeps the version. Otherwise two
     * processes signing the same catalog would leapfrog, and a client that saw one would take
     * the other for a rollback. -1: no generation known (signed before this migration). */
    "ALTER TABLE snapshot_versions ADD COLUMN gen INTEGER NOT NULL DEFAULT -1;\n",
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

/* What check_schema refuses: a version-0 database that already has tables is someone else's
 * (do not add ours to it); a migration that leaves rows breaking a foreign key (PRAGMA
 * foreign_key_check) is rolled back. */
enum check_what { FOREIGN_TABLES, BROKEN_REFERENCES };

/* KVS_ERR_SCHEMA, saying why, when the check's query gives a row; KVS_OK when it gives none. */
static kvs_status check_schema(sqlite3 *db, enum check_what what, char *err, size_t errlen)
{
    db_stmt q;
    kvs_status st = db_prepare(db, what == FOREIGN_TABLES ? "SELECT name FROM sqlite_master LIMIT 1"
                                                          : "PRAGMA foreign_key_check",
                               &q, err, errlen);
    int row = 0;
    if (st == KVS_OK)
        st = db_step(&q, &row, err, errlen);
    if (st == KVS_OK && row) {
        if (what == FOREIGN_TABLES)
            base_errf(err, errlen, "%s is not a kvpub index (it has tables but no kvpub schema version)",
                      sqlite3_db_filename(db, "main"));
        else
            base_errf(err, errlen, "schema migration would break a reference from table %s",
                      (const char *)sqlite3_column_text(q.st, 0));
        st = KVS_ERR_SCHEMA;
    }
    db_finalize(&q);
    return st;
}

static kvs_status migrate_locked(sqlite3 *db, char *err, size_t errlen);

kvs_status store_migrate(sqlite3 *db, char *err, size_t errlen)
{
    /* A migration may rebuild a table (SQLite's way to change a constraint); with foreign keys
     * on, dropping the old table would cascade into the rows that reference it. The pragma only
     * takes effect outside a transaction, so it brackets the whole loop, and each migration
     * checks the references itself before it commits. */
    kvs_status st = db_exec(db, "PRAGMA foreign_keys = OFF", err, errlen);
    if (st == KVS_OK)
        st = migrate_locked(db, err, errlen);
    char e2[256];
    kvs_status st2 = db_exec(db, "PRAGMA foreign_keys = ON", e2, sizeof e2);
    if (st == KVS_OK && st2 != KVS_OK) {
        base_errf(err, errlen, "%s", e2);
        st = st2;
    }
    return st;
}

static kvs_status migrate_locked(sqlite3 *db, char *err, size_t errlen)
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
        if (v == 0 && (st = check_schema(db, FOREIGN_TABLES, err, errlen)) != KVS_OK) {
            db_rollback(db);
            return st;
        }
        if (v == N_MIGRATIONS) {
            db_rollback(db);
            return KVS_OK;
        }
        if (v < 0 || v > N_MIGRATIONS) {
            db_rollback(db);
            base_errf(err, errlen, "index schema version %d is newer than this build understands (up to %d); "
                      "use a newer kvpub", v, N_MIGRATIONS);
            return KVS_ERR_SCHEMA;
        }
        char pragma[48];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v + 1);
        st = db_exec(db, migrations[v], err, errlen);
        if (st == KVS_OK)
            st = check_schema(db, BROKEN_REFERENCES, err, errlen);
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
