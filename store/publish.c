/* publish.c: atomic publish of a blob: copy to a locked temp file while hashing (or give the
 * caller's nameless temp file a locked name and hash it there), fsync, then under the index
 * write lock rename it to its content address and insert the rows. */
#include "store/store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/kvcrypto.h"

enum { COPY_BUF = 1 << 20 };

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

static kvs_status check_info(const kvs_blob *b, char *err, size_t errlen)
{
    const struct {
        const char *v, *name;
        int may_be_empty;
    } strs[] = {
        {b->doc_title, "document title", 1}, {b->doc_media_type, "document media type", 0},
        {b->model_arch, "model arch", 0},    {b->model_shape, "model shape", 0},
        {b->rope, "RoPE metadata", 0},       {b->codec, "codec", 0},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        if (!strs[i].v || (!strs[i].may_be_empty && !*strs[i].v)) {
            base_errf(err, errlen, "publish: %s is missing", strs[i].name);
            return KVS_ERR_INVALID;
        }
    }
    const struct {
        uint64_t v;
        const char *name;
    } nums[] = {
        {b->doc_bytes, "document bytes"}, {b->n_tokens, "token count"}, {b->size, "size"},
        {b->serial, "serial"},            {b->price, "price"},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if (nums[i].v > (uint64_t)INT64_MAX) {
            base_errf(err, errlen, "publish: %s %llu is out of range (at most %lld)", nums[i].name,
                      (unsigned long long)nums[i].v, (long long)INT64_MAX);
            return KVS_ERR_INVALID;
        }
    }
    if (b->expires < 0 || b->created < 0) {
        base_errf(err, errlen, "publish: created/expires must be unix seconds >= 0 (expires 0 = never)");
        return KVS_ERR_INVALID;
    }
    return KVS_OK;
}

/* Binds every named parameter of q from b (and the row ids), by name, so the statements
 * below stay readable and one binder serves them all. */
/* What bind_info takes besides the blob: the parents' row ids once known, and the time a
 * listing is judged current at. */
enum { ID_DOC, ID_MODEL, ID_TOK, ID_NOW, N_IDS };

static void bind_info(db_stmt *q, const kvs_blob *b, const int64_t ids[N_IDS])
{
    int n = sqlite3_bind_parameter_count(q->st);
    for (int i = 1; i <= n && !q->bad; i++) {
        const char *name = sqlite3_bind_parameter_name(q->st, i);
        if (!name) {
            q->bad = 1;
            snprintf(q->bind_err, sizeof q->bind_err, "unnamed parameter %d", i);
        } else if (!strcmp(name, ":id")) {
            db_bind_hex(q, name, b->id, KVS_SHA256_LEN);
        } else if (!strcmp(name, ":doc")) {
            db_bind_hex(q, name, b->doc_sha256, KVS_SHA256_LEN);
        } else if (!strcmp(name, ":title")) {
            db_bind_text(q, name, b->doc_title);
        } else if (!strcmp(name, ":uri")) {
            db_bind_text(q, name, b->doc_source_uri);
        } else if (!strcmp(name, ":media")) {
            db_bind_text(q, name, b->doc_media_type);
        } else if (!strcmp(name, ":doc_bytes")) {
            db_bind_int64(q, name, (int64_t)b->doc_bytes);
        } else if (!strcmp(name, ":model")) {
            db_bind_hex(q, name, b->model_fp, KVS_SHA256_LEN);
        } else if (!strcmp(name, ":arch")) {
            db_bind_text(q, name, b->model_arch);
        } else if (!strcmp(name, ":shape")) {
            db_bind_text(q, name, b->model_shape);
        } else if (!strcmp(name, ":rope")) {
            db_bind_text(q, name, b->rope);
        } else if (!strcmp(name, ":tok")) {
            db_bind_hex(q, name, b->tokenizer_fp, KVS_SHA256_LEN);
        } else if (!strcmp(name, ":codec")) {
            db_bind_text(q, name, b->codec);
        } else if (!strcmp(name, ":tokens")) {
            db_bind_int64(q, name, (int64_t)b->n_tokens);
        } else if (!strcmp(name, ":size")) {
            db_bind_int64(q, name, (int64_t)b->size);
        } else if (!strcmp(name, ":serial")) {
            db_bind_int64(q, name, (int64_t)b->serial);
        } else if (!strcmp(name, ":created")) {
            db_bind_int64(q, name, b->created);
        } else if (!strcmp(name, ":expires")) {
            if (b->expires)
                db_bind_int64(q, name, b->expires);
            else
                db_bind_text(q, name, NULL);
        } else if (!strcmp(name, ":price")) {
            db_bind_int64(q, name, (int64_t)b->price);
        } else if (!strcmp(name, ":publisher")) {
            db_bind_hex(q, name, b->publisher_id, KVS_KEYID_LEN);
        } else if (!strcmp(name, ":ctx")) {
            if (b->n_context)
                db_bind_hex(q, name, b->context_sha256, KVS_SHA256_LEN);
            else
                db_bind_text(q, name, "");
        } else if (!strcmp(name, ":ctx_tokens")) {
            db_bind_int64(q, name, (int64_t)b->n_context);
        } else if (!strcmp(name, ":doc_id")) {
            db_bind_int64(q, name, ids[ID_DOC]);
        } else if (!strcmp(name, ":model_id")) {
            db_bind_int64(q, name, ids[ID_MODEL]);
        } else if (!strcmp(name, ":tok_id")) {
            db_bind_int64(q, name, ids[ID_TOK]);
        } else if (!strcmp(name, ":now")) {
            db_bind_int64(q, name, ids[ID_NOW]);
        } else {
            q->bad = 1;
            snprintf(q->bind_err, sizeof q->bind_err, "no value for parameter %s", name);
        }
    }
}

/* Runs sql (bound from b) and returns the first column of its first row as *v, or *found = 0
 * when there is no row. */
static kvs_status query_one(sqlite3 *db, const char *sql, const kvs_blob *b, const int64_t ids[N_IDS], int *found,
                            int64_t *v, char (*text)[65], char *err, size_t errlen)
{
    db_stmt q;
    kvs_status st = db_prepare(db, sql, &q, err, errlen);
    *found = 0;
    if (st == KVS_OK) {
        bind_info(&q, b, ids);
        st = db_step(&q, found, err, errlen);
    }
    if (st == KVS_OK && *found) {
        if (v)
            *v = sqlite3_column_int64(q.st, 0);
        if (text) {
            const char *t = (const char *)sqlite3_column_text(q.st, 0);
            snprintf(*text, sizeof *text, "%s", t ? t : "");
        }
    }
    db_finalize(&q);
    return st;
}

#define SQL_SAME_LISTING                                                                                    \
    "FROM blobs b JOIN documents d ON d.id = b.document_id JOIN models m ON m.id = b.model_id "          \
    "WHERE d.sha256 = :doc AND m.fingerprint = :model AND b.codec = :codec AND b.publisher_key_id = :publisher " \
    "AND b.context_sha256 = :ctx "

/* This publisher's current blob for (document, model, codec, declared context); one that has
 * expired no longer counts (the catalog hides it, and a new publish replaces it). */
static const char SQL_EXISTING[] = "SELECT b.id " SQL_SAME_LISTING "AND (b.expires IS NULL OR b.expires > :now)";
static const char SQL_EXPIRED[] = "SELECT b.id " SQL_SAME_LISTING "AND b.expires IS NOT NULL AND b.expires <= :now";

/* Looks for this publisher's current blob for (document, model, codec, declared context);
 * *found and res->id. */
static kvs_status find_existing(kvs_store *s, const kvs_blob *b, int64_t now, int *found, kvs_publish_result *res,
                                char *err, size_t errlen)
{
    char hex[65] = "";
    const int64_t ids[N_IDS] = {[ID_NOW] = now};
    kvs_status st = query_one(s->db, SQL_EXISTING, b, ids, found, NULL, &hex, err, errlen);
    if (st == KVS_OK && *found) {
        if (kvc_unhex(hex, res->id, KVS_SHA256_LEN) != KVC_OK) {
            base_errf(err, errlen, "index holds a malformed blob id '%.70s'", hex);
            return KVS_ERR_DB;
        }
        res->already = 1;
    }
    return st;
}

/* Removes the expired blob (file, then row, as gc does) that holds the listing b is about to
 * take: under the write lock, so nobody serves or re-creates it meanwhile. */
static kvs_status drop_expired_listing(kvs_store *s, const kvs_blob *b, int64_t now, char *err, size_t errlen)
{
    char hex[65] = "", path[PATH_MAX];
    const int64_t ids[N_IDS] = {[ID_NOW] = now};
    int found = 0;
    uint8_t old[KVS_SHA256_LEN];
    kvs_status st = query_one(s->db, SQL_EXPIRED, b, ids, &found, NULL, &hex, err, errlen);
    if (st != KVS_OK || !found)
        return st;
    if (kvc_unhex(hex, old, KVS_SHA256_LEN) != KVC_OK || store_blob_path(s, old, path, sizeof path) != 0) {
        base_errf(err, errlen, "index holds a malformed blob id '%.70s'", hex);
        return KVS_ERR_DB;
    }
    if (unlink(path) != 0 && errno != ENOENT) {
        base_errf(err, errlen, "cannot remove expired blob %s: %s", path, strerror(errno));
        return KVS_ERR_IO;
    }
    db_stmt q;
    if ((st = db_prepare(s->db, "DELETE FROM blobs WHERE id = :id", &q, err, errlen)) == KVS_OK) {
        db_bind_text(&q, ":id", hex);
        st = db_run(&q, err, errlen);
    }
    db_finalize(&q);
    return st;
}

/* Inserts (or finds) the document, model and tokenizer rows, then the blob row. */
static kvs_status insert_rows(kvs_store *s, const kvs_blob *b, char *err, size_t errlen)
{
    static const struct {
        const char *insert, *select;
    } parents[3] = {
        {"INSERT INTO documents (sha256, title, source_uri, media_type, bytes) "
         "VALUES (:doc, :title, :uri, :media, :doc_bytes) ON CONFLICT (sha256) DO NOTHING",
         "SELECT id FROM documents WHERE sha256 = :doc"},
        {"INSERT INTO models (fingerprint, arch, shape, rope) VALUES (:model, :arch, :shape, :rope) "
         "ON CONFLICT (fingerprint) DO NOTHING",
         "SELECT id FROM models WHERE fingerprint = :model"},
        {"INSERT INTO tokenizers (fingerprint) VALUES (:tok) ON CONFLICT (fingerprint) DO NOTHING",
         "SELECT id FROM tokenizers WHERE fingerprint = :tok"},
    };
    int64_t ids[N_IDS] = {0};
    kvs_status st = KVS_OK;
    for (int i = 0; i < 3 && st == KVS_OK; i++) { /* ID_DOC, ID_MODEL, ID_TOK */
        int found = 0;
        st = query_one(s->db, parents[i].insert, b, ids, &found, NULL, NULL, err, errlen);
        if (st == KVS_OK)
            st = query_one(s->db, parents[i].select, b, ids, &found, &ids[i], NULL, err, errlen);
        if (st == KVS_OK && !found) {
            base_errf(err, errlen, "index row vanished after insert (in: %.60s)", parents[i].select);
            st = KVS_ERR_DB;
        }
    }
    if (st != KVS_OK)
        return st;
    int found = 0;
    return query_one(s->db,
                     "INSERT INTO blobs (id, document_id, model_id, tokenizer_id, codec, tokens, size, serial, "
                     "created, expires, price, publisher_key_id, title, source_uri, media_type, context_sha256, "
                     "context_tokens) VALUES (:id, :doc_id, :model_id, :tok_id, :codec, :tokens, :size, :serial, "
                     ":created, :expires, :price, :publisher, :title, :uri, :media, :ctx, :ctx_tokens)",
                     b, ids, &found, NULL, NULL, err, errlen);
}

/* Creates DIR/tmp/blob.XXXXXX and takes its flock, which tells reconcile the writer is
 * alive. A reconcile can unlink the file between mkstemp and flock; the link count shows
 * that and we simply make another. */
static int open_locked_temp(const kvs_store *s, char *path, size_t pathlen, char *err, size_t errlen)
{
    for (int attempt = 0; attempt < 8; attempt++) {
        if ((size_t)snprintf(path, pathlen, "%s/tmp/blob.XXXXXX", s->dir) >= pathlen) {
            base_errf(err, errlen, "store path too long: %s", s->dir);
            return -1;
        }
        int fd = mkostemp(path, O_CLOEXEC);
        if (fd < 0) {
            base_errf(err, errlen, "cannot create a temp file in %s/tmp: %s", s->dir, strerror(errno));
            return -1;
        }
        struct stat sb;
        if (flock(fd, LOCK_EX) == 0 && fstat(fd, &sb) == 0 && sb.st_nlink > 0)
            return fd;
        close(fd);
    }
    base_errf(err, errlen, "cannot keep a temp file in %s/tmp (removed repeatedly)", s->dir);
    return -1;
}

/* Copies fd to EOF into tfd, hashing (tfd < 0: hashes only, fd is the file to keep); fills id
 * and size. The file kept is made world-readable and synced. */
static kvs_status copy_hash(int fd, int tfd, const char *tpath, uint8_t id[KVS_SHA256_LEN], uint64_t *size,
                            char *err, size_t errlen)
{
    uint8_t *buf = malloc(COPY_BUF);
    kvc_sha256_ctx *h = kvc_sha256_create();
    kvs_status st = KVS_OK;
    *size = 0;
    if (!buf || !h) {
        st = KVS_ERR_NOMEM;
        base_errf(err, errlen, "out of memory copying a blob");
    }
    while (st == KVS_OK) {
        ssize_t r = read(fd, buf, COPY_BUF);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            base_errf(err, errlen, "cannot read the blob: %s", strerror(errno));
            st = KVS_ERR_IO;
            break;
        }
        if (r == 0)
            break;
        kvc_sha256_update(h, buf, (size_t)r);
        *size += (uint64_t)r;
        if (tfd >= 0 && base_write_all(tfd, buf, (size_t)r) != 0) {
            base_errf(err, errlen, "cannot write %s: %s", tpath, strerror(errno));
            st = KVS_ERR_IO;
        }
    }
    const int keep = tfd >= 0 ? tfd : fd;
    if (st == KVS_OK && (fchmod(keep, 0644) != 0 || fsync(keep) != 0)) {
        base_errf(err, errlen, "cannot sync %s: %s", tpath, strerror(errno));
        st = KVS_ERR_IO;
    }
    if (st == KVS_OK)
        kvc_sha256_final(h, id);
    kvc_sha256_free(h);
    free(buf);
    return st;
}

/* The part under the write lock: re-check, rename into place, insert rows. *renamed tells
 * the caller whether the final path now holds our file. */
static kvs_status commit_locked(kvs_store *s, const kvs_blob *b, const char *tpath, kvs_publish_result *res,
                                int *renamed, char *err, size_t errlen)
{
    int found = 0, revoked = 0;
    kvs_status st = kvs_store_key_revoked(s, b->publisher_id, &revoked, NULL, err, errlen);
    char hex[65];
    if (st == KVS_OK && revoked) {
        base_errf(err, errlen, "publisher key %s is revoked: it cannot publish",
                  kvc_hex(b->publisher_id, KVS_KEYID_LEN, hex));
        return KVS_ERR_REVOKED;
    }
    const int64_t now = (int64_t)time(NULL);
    if (st == KVS_OK)
        st = find_existing(s, b, now, &found, res, err, errlen);
    if (st == KVS_OK && !found)
        st = drop_expired_listing(s, b, now, err, errlen);
    if (st != KVS_OK || found)
        return st;
    int64_t ignored = 0;
    static const int64_t no_ids[N_IDS];
    st = query_one(s->db, "SELECT 1 FROM blobs WHERE id = :id", b, no_ids, &found, &ignored, NULL, err, errlen);
    if (st != KVS_OK)
        return st;
    if (found) {
        base_errf(err, errlen, "blob %s is already indexed for another listing",
                  kvc_hex(b->id, KVS_SHA256_LEN, hex));
        return KVS_ERR_EXISTS;
    }
    char final[PATH_MAX], sub[PATH_MAX];
    if (store_blob_path(s, b->id, final, sizeof final) != 0) {
        base_errf(err, errlen, "store path too long: %s", s->dir);
        return KVS_ERR_INVALID;
    }
    snprintf(sub, sizeof sub, "%.*s", (int)(strrchr(final, '/') - final), final);
    const int made = mkdir(sub, 0755) == 0;
    if (!made && errno != EEXIST) {
        base_errf(err, errlen, "cannot create directory %s: %s", sub, strerror(errno));
        return KVS_ERR_IO;
    }
    if (rename(tpath, final) != 0) {
        base_errf(err, errlen, "cannot move %s to %s: %s", tpath, final, strerror(errno));
        return KVS_ERR_IO;
    }
    *renamed = 1;
    /* the new name must be durable before the row that points at it: its directory, and a new
     * directory's own name in blobs/ (or a power cut could take both and reconcile the row) */
    base_fsync_dir(sub);
    if (made)
        base_fsync_parent_dir(sub);
    st = insert_rows(s, b, err, errlen);
    if (st == KVS_OK)
        memcpy(res->id, b->id, KVS_SHA256_LEN);
    return st;
}

/* Gives the nameless file fd (O_TMPFILE, made in the store's tmp/ as kvp_store_tmpfd does) a
 * name there, DIR/tmp/blob.<random>, already holding its flock as open_locked_temp's files do.
 * 0, or -1 for a file that has a name (another name could still change the blob) and where the
 * kernel will not link it (another filesystem, no /proc, a deleted file not made O_TMPFILE):
 * the caller then copies. */
static int link_locked_temp(const kvs_store *s, int fd, char *path, size_t pathlen)
{
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_nlink != 0 || flock(fd, LOCK_EX) != 0)
        return -1;
    for (int attempt = 0; attempt < 8; attempt++) {
        uint8_t r[8];
        char hex[17];
        if (kvc_random_bytes(r, sizeof r) != KVC_OK ||
            (size_t)snprintf(path, pathlen, "%s/tmp/blob.%s", s->dir, kvc_hex(r, sizeof r, hex)) >= pathlen)
            break;
        if (linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0)
            return 0;
        if (errno != EEXIST)
            break;
    }
    (void)flock(fd, LOCK_UN);
    return -1;
}

/* kvs_store_publish_fd, and with own kvs_store_publish_own: fd's file kept where it can be. */
static kvs_status publish_from(kvs_store *s, const kvs_blob *info, int fd, int own, kvs_publish_result *res,
                               char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    kvs_status st = check_info(info, err, errlen);
    if (st != KVS_OK)
        return st;
    /* cheap early answer for a republish, before copying any bytes; the authoritative check
     * runs again under the write lock */
    int found = 0;
    st = find_existing(s, info, (int64_t)time(NULL), &found, res, err, errlen);
    if (st != KVS_OK || found)
        return st;

    char tpath[PATH_MAX];
    if (own && lseek(fd, 0, SEEK_SET) != 0) {
        base_errf(err, errlen, "cannot read the blob: %s", strerror(errno));
        return KVS_ERR_IO;
    }
    int tfd = -1; /* the copy's, when fd's file is not kept under tpath */
    if (!own || link_locked_temp(s, fd, tpath, sizeof tpath) != 0) {
        own = 0;
        if ((tfd = open_locked_temp(s, tpath, sizeof tpath, err, errlen)) < 0)
            return KVS_ERR_IO;
    }
    kvs_blob b = *info;
    uint8_t id[KVS_SHA256_LEN];
    uint64_t size = 0;
    st = copy_hash(fd, tfd, tpath, id, &size, err, errlen);
    char want[65], got[65];
    if (st == KVS_OK && !all_zero(info->id, KVS_SHA256_LEN) && memcmp(info->id, id, KVS_SHA256_LEN) != 0) {
        base_errf(err, errlen, "blob bytes hash to sha256:%s, but sha256:%s was declared",
                  kvc_hex(id, KVS_SHA256_LEN, got), kvc_hex(info->id, KVS_SHA256_LEN, want));
        st = KVS_ERR_MISMATCH;
    }
    if (st == KVS_OK && info->size != 0 && info->size != size) {
        base_errf(err, errlen, "blob is %llu bytes, but %llu were declared", (unsigned long long)size,
                  (unsigned long long)info->size);
        st = KVS_ERR_MISMATCH;
    }
    if (st == KVS_OK && size > (uint64_t)INT64_MAX) {
        base_errf(err, errlen, "blob too large");
        st = KVS_ERR_INVALID;
    }
    memcpy(b.id, id, sizeof id);
    b.size = size;

    int renamed = 0;
    if (st == KVS_OK)
        st = db_begin(s->db, err, errlen);
    if (st == KVS_OK) {
        st = commit_locked(s, &b, tpath, res, &renamed, err, errlen);
        st = db_end(s->db, st, err, errlen);
        if (st != KVS_OK && renamed) {
            /* no row points at it (the transaction rolled back): do not leave an orphan */
            char final[PATH_MAX];
            if (store_blob_path(s, b.id, final, sizeof final) == 0)
                unlink(final);
        }
    }
    if (!renamed)
        unlink(tpath);
    /* the flock goes only now, after the temp name is gone */
    if (own)
        (void)flock(fd, LOCK_UN);
    else
        close(tfd);
    if (st != KVS_OK)
        memset(res, 0, sizeof *res);
    return st;
}

kvs_status kvs_store_publish_fd(kvs_store *s, const kvs_blob *info, int fd, kvs_publish_result *res, char *err,
                                size_t errlen)
{
    return publish_from(s, info, fd, 0, res, err, errlen);
}

kvs_status kvs_store_publish_own(kvs_store *s, const kvs_blob *info, int fd, kvs_publish_result *res, char *err,
                                 size_t errlen)
{
    return publish_from(s, info, fd, 1, res, err, errlen);
}

kvs_status kvs_store_publish_file(kvs_store *s, const kvs_blob *info, const char *path, kvs_publish_result *res,
                                  char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        base_errf(err, errlen, "cannot open blob %s: %s", path, strerror(errno));
        return KVS_ERR_IO;
    }
    kvs_status st = kvs_store_publish_fd(s, info, fd, res, err, errlen);
    close(fd);
    return st;
}
