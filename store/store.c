/* store.c: opening a store (directories, SQLite settings, migrations), reconciling blob
 * files with index rows, and garbage collection of expired blobs. */
#include "store/store_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto/kvcrypto.h"

/* Long enough for a writer stuck behind a big reconcile or GC on a slow disk. */
enum { BUSY_TIMEOUT_MS = 30000 };

const char *kvs_status_str(kvs_status st)
{
    switch (st) {
    case KVS_OK: return "ok";
    case KVS_ERR_IO: return "I/O error";
    case KVS_ERR_DB: return "database error";
    case KVS_ERR_SCHEMA: return "unsupported index schema";
    case KVS_ERR_INVALID: return "invalid argument";
    case KVS_ERR_NOTFOUND: return "not found";
    case KVS_ERR_EXISTS: return "already exists";
    case KVS_ERR_MISMATCH: return "content mismatch";
    case KVS_ERR_NOMEM: return "out of memory";
    case KVS_ERR_CREDENTIAL: return "bad credential";
    case KVS_TOKEN_UNKNOWN: return "unknown access token";
    case KVS_TOKEN_EXPIRED: return "access token expired";
    case KVS_TOKEN_EXHAUSTED: return "access token has no downloads left";
    case KVS_TOKEN_WRONG_BLOB: return "access token is for another blob";
    case KVS_ERR_REVOKED: return "publisher key revoked";
    }
    return "unknown status";
}

void kvs_blob_free(kvs_blob *b)
{
    free(b);
}

int store_blob_path(const kvs_store *s, const uint8_t id[KVS_SHA256_LEN], char *out, size_t outlen)
{
    char hex[2 * KVS_SHA256_LEN + 1];
    kvc_hex(id, KVS_SHA256_LEN, hex);
    int n = snprintf(out, outlen, "%s/blobs/%.2s/%s", s->dir, hex, hex);
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

static kvs_status make_dir(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        base_errf(err, errlen, "cannot create directory %s: %s", path, strerror(errno));
        return KVS_ERR_IO;
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        base_errf(err, errlen, "%s exists but is not a directory", path);
        return KVS_ERR_IO;
    }
    return KVS_OK;
}

void kvs_store_close(kvs_store *s)
{
    if (!s)
        return;
    db_cache_clear(&s->cache);
    if (s->db)
        sqlite3_close_v2(s->db);
    free(s->dir);
    free(s);
}

/* Applies the per-connection settings: WAL, durability, foreign keys, busy timeout. */
static kvs_status configure(sqlite3 *db, const char *dbpath, char *err, size_t errlen)
{
    sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);
    db_stmt q = {0};
    kvs_status st = KVS_OK;
    int row = 0;
    /* Switching a fresh file to WAL needs an exclusive lock and SQLite does not call the busy
     * handler for it, so two processes creating the store at once must retry by hand. */
    for (int waited_ms = 0;; waited_ms += 10) {
        st = db_prepare(db, "PRAGMA journal_mode = WAL", &q, err, errlen);
        if (st == KVS_OK)
            st = db_step(&q, &row, err, errlen);
        int code = sqlite3_errcode(db) & 0xff;
        if (st == KVS_OK || (code != SQLITE_BUSY && code != SQLITE_LOCKED) || waited_ms >= BUSY_TIMEOUT_MS)
            break;
        db_finalize(&q);
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (st == KVS_OK) {
        const char *mode = row ? (const char *)sqlite3_column_text(q.st, 0) : NULL;
        if (!mode || strcmp(mode, "wal") != 0) {
            base_errf(err, errlen, "%s: cannot switch to WAL journal mode (got %s)", dbpath, mode ? mode : "nothing");
            st = KVS_ERR_DB;
        }
    }
    db_finalize(&q);
    if (st != KVS_OK)
        return st;
    /* FULL: a committed publish survives power loss, not only a process crash */
    return db_exec(db, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON", err, errlen);
}

/* SQLite's memory statistics (on by default) take one process-wide mutex around every
 * allocation, which the server's threads then queue on; nothing here reads them. Only
 * possible before SQLite initializes, so done once, before the first open. */
static void sqlite_setup(void)
{
    (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

kvs_status kvs_store_open(const char *dir, kvs_store **out, char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sqlite_setup);
    *out = NULL;
    if (!dir || !*dir) {
        base_errf(err, errlen, "store directory is empty");
        return KVS_ERR_INVALID;
    }
    kvs_store *s = calloc(1, sizeof *s);
    if (!s || !(s->dir = strdup(dir))) {
        free(s);
        return KVS_ERR_NOMEM;
    }
    size_t dl = strlen(s->dir);
    while (dl > 1 && s->dir[dl - 1] == '/')
        s->dir[--dl] = '\0';

    char path[PATH_MAX];
    kvs_status st = make_dir(s->dir, err, errlen);
    static const char *const subdirs[] = {"blobs", "tmp"};
    for (size_t i = 0; st == KVS_OK && i < 2; i++) {
        if ((size_t)snprintf(path, sizeof path, "%s/%s", s->dir, subdirs[i]) >= sizeof path) {
            base_errf(err, errlen, "store path too long: %s", s->dir);
            st = KVS_ERR_INVALID;
        } else {
            st = make_dir(path, err, errlen);
        }
    }
    if (st == KVS_OK && (size_t)snprintf(path, sizeof path, "%s/index.db", s->dir) >= sizeof path) {
        base_errf(err, errlen, "store path too long: %s", s->dir);
        st = KVS_ERR_INVALID;
    }
    if (st == KVS_OK) {
        int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK) {
            base_errf(err, errlen, "cannot open index %s: %s", path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
            st = KVS_ERR_DB;
        }
    }
    if (st == KVS_OK)
        st = configure(s->db, path, err, errlen);
    if (st == KVS_OK)
        st = store_migrate(s->db, err, errlen);
    if (st == KVS_OK)
        st = kvs_store_reconcile(s, NULL, NULL, err, errlen);
    if (st != KVS_OK) {
        kvs_store_close(s);
        return st;
    }
    *out = s;
    return KVS_OK;
}

/* ---- reconciliation ---- */

static int is_hex_name(const char *name, size_t n)
{
    if (strlen(name) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
            return 0;
    return 1;
}

/* Temp files are flock()ed by their writer for their whole life, and the kernel drops the
 * lock when the writer dies, so a lock we can take means the writer is gone. */
static size_t clean_tmp(const kvs_store *s)
{
    char tdir[PATH_MAX], path[PATH_MAX];
    size_t removed = 0;
    if ((size_t)snprintf(tdir, sizeof tdir, "%s/tmp", s->dir) >= sizeof tdir)
        return 0;
    DIR *d = opendir(tdir);
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", tdir, de->d_name) >= sizeof path)
            continue;
        /* O_NONBLOCK: a stray FIFO here must not hang the store's open */
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
            continue;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0 && unlink(path) == 0)
            removed++;
        close(fd);
    }
    closedir(d);
    return removed;
}

/* Size of the row for blob hex id: 1 and *size when a row exists, 0 when none, -1 on error. */
static int row_size(sqlite3 *db, const char *hex, int64_t *size, char *err, size_t errlen)
{
    db_stmt q;
    if (db_prepare(db, "SELECT size FROM blobs WHERE id = :id", &q, err, errlen) != KVS_OK)
        return -1;
    db_bind_text(&q, ":id", hex);
    int row = 0;
    kvs_status st = db_step(&q, &row, err, errlen);
    if (row)
        *size = sqlite3_column_int64(q.st, 0);
    db_finalize(&q);
    return st != KVS_OK ? -1 : row;
}

static kvs_status delete_row(sqlite3 *db, const char *hex, char *err, size_t errlen)
{
    db_stmt q;
    kvs_status st = db_prepare(db, "DELETE FROM blobs WHERE id = :id", &q, err, errlen);
    db_bind_text(&q, ":id", hex);
    if (st == KVS_OK)
        st = db_run(&q, err, errlen);
    db_finalize(&q);
    return st;
}

/* Walks DIR/blobs/xx/ and removes files that no row accounts for. */
static kvs_status reconcile_files(kvs_store *s, size_t *files, size_t *rows, char *err, size_t errlen)
{
    char bdir[PATH_MAX], sub[PATH_MAX], path[PATH_MAX];
    if ((size_t)snprintf(bdir, sizeof bdir, "%s/blobs", s->dir) >= sizeof bdir)
        return KVS_ERR_INVALID;
    DIR *d = opendir(bdir);
    if (!d) {
        base_errf(err, errlen, "cannot read %s: %s", bdir, strerror(errno));
        return KVS_ERR_IO;
    }
    kvs_status st = KVS_OK;
    struct dirent *de;
    while (st == KVS_OK && (de = readdir(d)) != NULL) {
        if (!is_hex_name(de->d_name, 2))
            continue; /* not ours: leave it alone */
        if ((size_t)snprintf(sub, sizeof sub, "%s/%s", bdir, de->d_name) >= sizeof sub)
            continue;
        DIR *d2 = opendir(sub);
        if (!d2)
            continue;
        struct dirent *fe;
        while (st == KVS_OK && (fe = readdir(d2)) != NULL) {
            if (!is_hex_name(fe->d_name, 64) || strncmp(fe->d_name, de->d_name, 2) != 0)
                continue;
            if ((size_t)snprintf(path, sizeof path, "%s/%s", sub, fe->d_name) >= sizeof path)
                continue;
            int64_t want = 0;
            int have = row_size(s->db, fe->d_name, &want, err, errlen);
            if (have < 0) {
                st = KVS_ERR_DB;
                break;
            }
            struct stat sb;
            if (lstat(path, &sb) != 0)
                continue;
            if (have && S_ISREG(sb.st_mode) && sb.st_size == want)
                continue;
            /* no row, or a file that is not the one the row describes */
            if (have) {
                st = delete_row(s->db, fe->d_name, err, errlen);
                if (st != KVS_OK)
                    break;
                (*rows)++;
            }
            if (unlink(path) == 0)
                (*files)++;
        }
        closedir(d2);
    }
    closedir(d);
    return st;
}

/* Removes rows whose blob file is missing. Ids are collected first, then deleted, so the
 * SELECT never runs over rows it is deleting. */
static kvs_status reconcile_rows(kvs_store *s, size_t *rows, char *err, size_t errlen)
{
    db_stmt q;
    kvs_status st = kvs_prepare(s, "SELECT id FROM blobs", &q, err, errlen);
    char (*gone)[65] = NULL;
    size_t n_gone = 0, cap = 0;
    int row = 1;
    while (st == KVS_OK && (st = db_step(&q, &row, err, errlen)) == KVS_OK && row) {
        uint8_t id[KVS_SHA256_LEN];
        char path[PATH_MAX];
        struct stat sb;
        if (db_column_hex(q.st, 0, id, sizeof id) != 0 || store_blob_path(s, id, path, sizeof path) != 0)
            continue;
        if (lstat(path, &sb) == 0 || errno != ENOENT)
            continue;
        if (n_gone == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            void *p = realloc(gone, ncap * sizeof *gone);
            if (!p) {
                st = KVS_ERR_NOMEM;
                break;
            }
            gone = p;
            cap = ncap;
        }
        kvc_hex(id, sizeof id, gone[n_gone++]);
    }
    db_finalize(&q);
    for (size_t i = 0; st == KVS_OK && i < n_gone; i++) {
        st = delete_row(s->db, gone[i], err, errlen);
        if (st == KVS_OK)
            (*rows)++;
    }
    free(gone);
    if (st == KVS_ERR_NOMEM)
        base_errf(err, errlen, "out of memory while reconciling %s", s->dir);
    return st;
}

kvs_status kvs_store_reconcile(kvs_store *s, size_t *files_removed, size_t *rows_removed, char *err, size_t errlen)
{
    size_t files = 0, rows = 0;
    /* The write lock keeps publishers out: they rename a blob into place only while holding
     * it, so every blob file we see without a row really is an orphan. */
    kvs_status st = db_begin(s->db, err, errlen);
    if (st != KVS_OK)
        return st;
    files += clean_tmp(s);
    st = reconcile_files(s, &files, &rows, err, errlen);
    if (st == KVS_OK)
        st = reconcile_rows(s, &rows, err, errlen);
    st = db_end(s->db, st, err, errlen);
    if (files_removed)
        *files_removed = files;
    if (rows_removed)
        *rows_removed = st == KVS_OK ? rows : 0;
    return st;
}

/* ---- garbage collection ---- */

kvs_status kvs_store_gc(kvs_store *s, int64_t now, size_t *blobs_removed, char *err, size_t errlen)
{
    if (blobs_removed)
        *blobs_removed = 0;
    kvs_status st = db_begin(s->db, err, errlen);
    if (st != KVS_OK)
        return st;
    db_stmt q;
    st = kvs_prepare(s, "SELECT id FROM blobs WHERE expires IS NOT NULL AND expires <= :now", &q, err, errlen);
    db_bind_int64(&q, ":now", now);
    size_t n = 0;
    int row = 1;
    /* Files are unlinked inside the transaction, before the rows go: a crash in between
     * leaves rows without files, which reconcile removes; and no publisher can re-create
     * one of these files while we hold the write lock. */
    while (st == KVS_OK && (st = db_step(&q, &row, err, errlen)) == KVS_OK && row) {
        uint8_t id[KVS_SHA256_LEN];
        char path[PATH_MAX];
        if (db_column_hex(q.st, 0, id, sizeof id) != 0 || store_blob_path(s, id, path, sizeof path) != 0)
            continue;
        if (unlink(path) != 0 && errno != ENOENT) {
            base_errf(err, errlen, "cannot remove expired blob %s: %s", path, strerror(errno));
            st = KVS_ERR_IO;
            break;
        }
        n++;
    }
    db_finalize(&q);
    static const char *const deletes[] = {
        "DELETE FROM blobs WHERE expires IS NOT NULL AND expires <= :now",
        "DELETE FROM documents WHERE id NOT IN (SELECT document_id FROM blobs)",
        "DELETE FROM models WHERE id NOT IN (SELECT model_id FROM blobs)",
        "DELETE FROM tokenizers WHERE id NOT IN (SELECT tokenizer_id FROM blobs)",
    };
    for (size_t i = 0; st == KVS_OK && i < sizeof deletes / sizeof deletes[0]; i++) {
        st = kvs_prepare(s, deletes[i], &q, err, errlen);
        if (i == 0)
            db_bind_int64(&q, ":now", now);
        if (st == KVS_OK)
            st = db_run(&q, err, errlen);
        db_finalize(&q);
    }
    st = db_end(s->db, st, err, errlen);
    if (st != KVS_OK)
        return st;
    if (blobs_removed)
        *blobs_removed = n;
    return kvs_store_reconcile(s, NULL, NULL, err, errlen);
}
