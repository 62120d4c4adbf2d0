/* test_store.c: store/ against real SQLite files in a temp directory: publish and lookup,
 * catalog filters and pages, idempotent republish, orphan reconciliation, GC, purchases and
 * tokens, publishers, the download log, concurrent publishers and SIGKILL crash safety. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crypto/kvcrypto.h"
#include "store/kvstore.h"
#include "store/store_internal.h" /* the statement cache of db.c */
#include "tests/unit/test_util.h"

/* ---- fixtures ---- */

static kvs_store *open_ok(const char *dir)
{
    char err[512] = "";
    kvs_store *s = NULL;
    kvs_status st = kvs_store_open(dir, &s, err, sizeof err);
    if (st != KVS_OK)
        fail_msg("kvs_store_open(%s): %s: %s", dir, kvs_status_str(st), err);
    return s;
}

/* Opens (creating) the store DIR/store, each test's; sdir gets its directory. */
static kvs_store *open_store(const char *dir, char sdir[512])
{
    snprintf(sdir, 512, "%s/store", dir);
    return open_ok(sdir);
}

/* Test content: deterministic bytes that differ per (seed, len). */
static uint8_t *make_bytes(unsigned seed, size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    assert_non_null(p);
    uint32_t x = seed * 2654435761u + 12345;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345;
        p[i] = (uint8_t)(x >> 16);
    }
    return p;
}

/* A blob description for test item n: document n, model m, codec c. */
typedef struct item {
    char title[64];
    char blob_path[512];
    uint8_t sha[32];  /* expected blob id, hashed here by crypto/ (not by the store) */
    size_t len;
    kvs_blob info;
} item;

static void make_item(item *it, const char *dir, unsigned doc, unsigned model, const char *codec, size_t len,
                      int64_t created, int64_t expires)
{
    memset(it, 0, sizeof *it);
    char buf[64];
    snprintf(it->title, sizeof it->title, "Document Number %u", doc);
    snprintf(buf, sizeof buf, "document %u", doc);
    kvc_sha256(buf, strlen(buf), it->info.doc_sha256);
    snprintf(buf, sizeof buf, "model %u", model);
    kvc_sha256(buf, strlen(buf), it->info.model_fp);
    snprintf(buf, sizeof buf, "tokenizer %u", model);
    kvc_sha256(buf, strlen(buf), it->info.tokenizer_fp);
    it->info.doc_title = it->title;
    it->info.doc_source_uri = doc % 2 ? "https://example.org/doc" : NULL;
    it->info.doc_media_type = "text/plain";
    it->info.doc_bytes = 1000 + doc;
    it->info.model_arch = "qwen3";
    it->info.model_shape = "{\"n_layer\":28,\"n_head_kv\":8,\"head_dim\":128}";
    it->info.rope = "{\"type\":\"neox\",\"freq_base\":1000000}";
    it->info.codec = codec;
    it->info.n_tokens = 10 * doc + 1;
    it->info.serial = doc;
    it->info.created = created;
    it->info.expires = expires;
    it->info.price = doc * 100;
    memset(it->info.publisher_id, 0xab, sizeof it->info.publisher_id);

    it->len = len;
    uint8_t *bytes = make_bytes(doc * 1000 + model * 10 + (unsigned)strlen(codec), len);
    kvc_sha256(bytes, len, it->sha);
    snprintf(it->blob_path, sizeof it->blob_path, "%s/in-%u-%u-%s.blob", dir, doc, model, codec);
    tu_write_file(it->blob_path, bytes, len);
    free(bytes);
}

static void publish_ok(kvs_store *s, item *it, int want_already)
{
    char err[512] = "";
    kvs_publish_result res;
    kvs_status st = kvs_store_publish_file(s, &it->info, it->blob_path, &res, err, sizeof err);
    if (st != KVS_OK)
        fail_msg("publish %s: %s: %s", it->title, kvs_status_str(st), err);
    assert_int_equal(res.already, want_already);
    if (!want_already)
        assert_memory_equal(res.id, it->sha, 32);
}

/* Item doc (model 1, f16-zstd, no expiry) made and published, as most tests need them. */
static void publish_new(kvs_store *s, item *it, const char *dir, unsigned doc, size_t len, int64_t created)
{
    make_item(it, dir, doc, 1, "f16-zstd", len, created, 0);
    publish_ok(s, it, 0);
}

static void blob_file_path(const char *dir, const uint8_t id[32], char *out, size_t outlen)
{
    char hex[65];
    kvc_hex(id, 32, hex);
    snprintf(out, outlen, "%s/store/blobs/%.2s/%s", dir, hex, hex);
}

/* Runs a shell command and returns the number it prints (the index and the blob directory
 * are inspected with the ordinary tools, not through the store). */
static int shell_int(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    int n = -1;
    assert_int_equal(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}

/* Counts regular files under dir (recursively, via find). */
static int count_files(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "find '%s' -type f | wc -l", dir);
    return shell_int(cmd);
}

/* Runs SQL on the SQLite file at dbpath behind the store's back (to age or damage an index). */
static void exec_sql(const char *dbpath, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void sha_file(const char *path, uint8_t out[32], off_t *size)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    kvc_sha256_ctx *c = kvc_sha256_create();
    assert_non_null(c);
    uint8_t buf[65536];
    ssize_t r;
    *size = 0;
    while ((r = read(fd, buf, sizeof buf)) > 0) {
        kvc_sha256_update(c, buf, (size_t)r);
        *size += r;
    }
    assert_int_equal(r, 0);
    kvc_sha256_final(c, out);
    kvc_sha256_free(c);
    close(fd);
}

/* ---- publish and lookup ---- */

static void test_publish_and_lookup(void **state)
{
    const char *dir = *state;
    char sdir[512], err[512] = "", path[1024];
    kvs_store *s = open_store(dir, sdir);
    assert_int_equal(kvs_store_schema_version(s), kvs_schema_latest());
    assert_true(kvs_schema_latest() >= 1);

    item it;
    publish_new(s, &it, dir, 1, 70000, 1700000000);

    /* the file sits at its content address and holds exactly the bytes */
    blob_file_path(dir, it.sha, path, sizeof path);
    uint8_t got[32];
    off_t size = 0;
    sha_file(path, got, &size);
    assert_memory_equal(got, it.sha, 32);
    assert_int_equal(size, 70000);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0644);

    char p2[1024];
    assert_int_equal(kvs_store_blob_path(s, it.sha, p2, sizeof p2, err, sizeof err), KVS_OK);
    assert_string_equal(p2, path);
    assert_int_equal(kvs_store_blob_path(s, it.sha, p2, 10, err, sizeof err), KVS_ERR_INVALID);

    kvs_blob *b = NULL;
    assert_int_equal(kvs_store_blob_get(s, it.sha, &b, err, sizeof err), KVS_OK);
    assert_memory_equal(b->id, it.sha, 32);
    assert_memory_equal(b->doc_sha256, it.info.doc_sha256, 32);
    assert_memory_equal(b->model_fp, it.info.model_fp, 32);
    assert_memory_equal(b->tokenizer_fp, it.info.tokenizer_fp, 32);
    assert_memory_equal(b->publisher_id, it.info.publisher_id, 8);
    assert_string_equal(b->doc_title, "Document Number 1");
    assert_string_equal(b->doc_source_uri, "https://example.org/doc");
    assert_string_equal(b->doc_media_type, "text/plain");
    assert_string_equal(b->model_arch, "qwen3");
    assert_string_equal(b->model_shape, it.info.model_shape);
    assert_string_equal(b->rope, it.info.rope);
    assert_string_equal(b->codec, "f16-zstd");
    assert_int_equal(b->doc_bytes, 1001);
    assert_int_equal(b->n_tokens, 11);
    assert_int_equal(b->size, 70000);
    assert_int_equal(b->serial, 1);
    assert_int_equal(b->created, 1700000000);
    assert_int_equal(b->expires, 0);
    assert_int_equal(b->price, 100);
    kvs_blob_free(b);
    kvs_blob_free(NULL);

    /* unknown id */
    uint8_t unknown[32];
    memset(unknown, 0x5a, sizeof unknown);
    b = (kvs_blob *)1;
    assert_int_equal(kvs_store_blob_get(s, unknown, &b, err, sizeof err), KVS_ERR_NOTFOUND);
    assert_null(b);
    assert_non_null(strstr(err, "5a5a5a"));
    assert_int_equal(kvs_store_blob_path(s, unknown, p2, sizeof p2, err, sizeof err), KVS_ERR_NOTFOUND);

    /* missing required field, and a publish from a file that does not exist */
    item bad;
    make_item(&bad, dir, 2, 1, "f16-zstd", 10, 1, 0);
    kvs_publish_result res;
    bad.info.codec = "";
    assert_int_equal(kvs_store_publish_file(s, &bad.info, bad.blob_path, &res, err, sizeof err), KVS_ERR_INVALID);
    assert_non_null(strstr(err, "codec"));
    bad.info.codec = "int8";
    assert_int_equal(kvs_store_publish_file(s, &bad.info, "/nonexistent/x.blob", &res, err, sizeof err), KVS_ERR_IO);
    assert_non_null(strstr(err, "/nonexistent/x.blob"));

    /* publish from an fd */
    int fd = open(bad.blob_path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(kvs_store_publish_fd(s, &bad.info, fd, &res, err, sizeof err), KVS_OK);
    close(fd);
    assert_memory_equal(res.id, bad.sha, 32);
    kvs_store_close(s);
    kvs_store_close(NULL);

    /* the index is plain SQLite: the sqlite3 CLI reads it */
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "sqlite3 '%s/index.db' \"SELECT count(*) FROM blobs; SELECT title FROM documents "
                              "ORDER BY id LIMIT 1\"", sdir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line1[64] = "", line2[64] = "";
    assert_non_null(fgets(line1, sizeof line1, p));
    assert_non_null(fgets(line2, sizeof line2, p));
    assert_int_equal(pclose(p), 0);
    assert_string_equal(line1, "2\n");
    assert_string_equal(line2, "Document Number 1\n");
}

/* ---- catalog ---- */

static void test_catalog_filters_and_pages(void **state)
{
    const char *dir = *state;
    char sdir[512], err[512] = "";
    kvs_store *s = open_store(dir, sdir);

    /* 7 blobs: docs 1..5 on model 1 (created 100..500), docs 1..2 also on model 2 */
    item items[7];
    for (unsigned i = 0; i < 5; i++) {
        make_item(&items[i], dir, i + 1, 1, "f16-zstd", 100 + i, 100 * (int64_t)(i + 1), i == 4 ? 450 : 0);
        publish_ok(s, &items[i], 0);
    }
    for (unsigned i = 0; i < 2; i++) {
        make_item(&items[5 + i], dir, i + 1, 2, "f16-zstd", 200 + i, 1000 + (int64_t)i, 0);
        publish_ok(s, &items[5 + i], 0);
    }

    kvs_list *l = NULL;
    assert_int_equal(kvs_store_catalog(s, NULL, &l, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_list_count(l), 7);
    assert_int_equal(kvs_list_total(l), 7);
    /* newest first */
    assert_memory_equal(kvs_list_get(l, 0)->id, items[6].sha, 32);
    assert_memory_equal(kvs_list_get(l, 1)->id, items[5].sha, 32);
    assert_memory_equal(kvs_list_get(l, 6)->id, items[0].sha, 32);
    assert_null(kvs_list_get(l, 7));
    kvs_list_free(l);

    kvs_query q = {0};
    q.model_fp = items[5].info.model_fp;
    assert_int_equal(kvs_store_catalog(s, &q, &l, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_list_count(l), 2);
    for (size_t i = 0; i < 2; i++)
        assert_memory_equal(kvs_list_get(l, i)->model_fp, items[5].info.model_fp, 32);
    kvs_list_free(l);

    memset(&q, 0, sizeof q);
    q.doc_sha256 = items[0].info.doc_sha256; /* document 1: on both models */
    assert_int_equal(kvs_store_catalog(s, &q, &l, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_list_count(l), 2);
    kvs_list_free(l);
    q.model_fp = items[0].info.model_fp;
    assert_int_equal(kvs_store_catalog(s, &q, &l, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_list_count(l), 1);
    assert_memory_equal(kvs_list_get(l, 0)->id, items[0].sha, 32);
    kvs_list_free(l);

    /* title substring, case-insensitive; '%' and '_' are not wildcards */
    memset(&q, 0, sizeof q);
    q.title_contains = "number 3";
    assert_int_equal(kvs_store_catalog(s, &q, &l, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_list_count(l), 1);
    assert_string_equal(kvs_list_get(l, 0)->doc_title, "Document Number 3");
    kvs_list_free(l);
    q.title_contains = "%";
    assert_int_equal(kvs_store_catalog(s, &q, &l, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_list_count(l), 0);
    kvs_list_free(l);

    /* pages of 3 over model 1 (5 rows, created 500,400,300,200,100) */
    memset(&q, 0, sizeof q);
    q.model_fp = items[0].info.model_fp;
    q.limit = 3;
    static const unsigned want_order[] = {4, 3, 2, 1, 0};
    size_t seen = 0;
    for (q.offset = 0; q.offset < 6; q.offset += 3) {
        assert_int_equal(kvs_store_catalog(s, &q, &l, err, sizeof err), KVS_OK);
        assert_int_equal(kvs_list_total(l), 5);
        assert_int_equal(kvs_list_count(l), q.offset == 0 ? 3 : 2);
        for (size_t i = 0; i < kvs_list_count(l); i++)
            assert_memory_equal(kvs_list_get(l, i)->id, items[want_order[seen++]].sha, 32);
        kvs_list_free(l);
    }
    assert_int_equal(seen, 5);
    q.offset = 100;
    assert_int_equal(kvs_store_catalog(s, &q, &l, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_list_count(l), 0);
    assert_int_equal(kvs_list_total(l), 5);
    kvs_list_free(l);

    /* expired blobs hidden when now is given (doc 5 expires at 450) */
    memset(&q, 0, sizeof q);
    q.model_fp = items[0].info.model_fp;
    q.now = 449;
    assert_int_equal(kvs_store_catalog(s, &q, &l, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_list_count(l), 5);
    kvs_list_free(l);
    q.now = 450;
    assert_int_equal(kvs_store_catalog(s, &q, &l, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_list_count(l), 4);
    kvs_list_free(l);

    /* the limit is capped */
    memset(&q, 0, sizeof q);
    q.limit = 1000000;
    assert_int_equal(kvs_store_catalog(s, &q, &l, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_list_count(l), 7);
    kvs_list_free(l);
    kvs_list_free(NULL);
    kvs_store_close(s);
}

/* ---- idempotent republish and mismatches ---- */

static void test_republish_is_noop(void **state)
{
    const char *dir = *state;
    char sdir[512], err[512] = "", blobs[600];
    snprintf(sdir, sizeof sdir, "%s/store", dir);
    snprintf(blobs, sizeof blobs, "%s/blobs", sdir);
    kvs_store *s = open_ok(sdir);

    item a, a2, other;
    publish_new(s, &a, dir, 1, 5000, 10);
    /* same (document, model, codec), different bytes (e.g. a new serial): still a no-op */
    make_item(&a2, dir, 1, 1, "f16-zstd", 6000, 20, 0);
    kvs_publish_result res;
    assert_int_equal(kvs_store_publish_file(s, &a2.info, a2.blob_path, &res, err, sizeof err), KVS_OK);
    assert_int_equal(res.already, 1);
    assert_memory_equal(res.id, a.sha, 32);
    assert_int_equal(count_files(blobs), 1);
    /* the same bytes again */
    assert_int_equal(kvs_store_publish_file(s, &a.info, a.blob_path, &res, err, sizeof err), KVS_OK);
    assert_int_equal(res.already, 1);
    assert_memory_equal(res.id, a.sha, 32);

    /* a different codec is a different blob */
    make_item(&other, dir, 1, 1, "int8", 4000, 30, 0);
    publish_ok(s, &other, 0);
    assert_int_equal(count_files(blobs), 2);

    /* declared id or size that the bytes do not match: refused, nothing left behind */
    item m;
    make_item(&m, dir, 7, 1, "f16-zstd", 3000, 40, 0);
    memcpy(m.info.id, a.sha, 32);
    assert_int_equal(kvs_store_publish_file(s, &m.info, m.blob_path, &res, err, sizeof err), KVS_ERR_MISMATCH);
    assert_non_null(strstr(err, "declared"));
    memset(m.info.id, 0, 32);
    m.info.size = 2999;
    assert_int_equal(kvs_store_publish_file(s, &m.info, m.blob_path, &res, err, sizeof err), KVS_ERR_MISMATCH);
    m.info.size = 3000;
    memcpy(m.info.id, m.sha, 32);
    publish_ok(s, &m, 0); /* correct declarations are accepted */
    char tdir[600];
    snprintf(tdir, sizeof tdir, "%s/tmp", sdir);
    assert_int_equal(count_files(tdir), 0);
    assert_int_equal(count_files(blobs), 3);

    /* an uint64 beyond SQLite's range is refused */
    item big;
    make_item(&big, dir, 8, 1, "f16-zstd", 10, 1, 0);
    big.info.price = UINT64_MAX;
    assert_int_equal(kvs_store_publish_file(s, &big.info, big.blob_path, &res, err, sizeof err), KVS_ERR_INVALID);
    assert_non_null(strstr(err, "price"));
    kvs_store_close(s);
}

/* A nameless file in the store's tmp/ holding item it's bytes, as kvp_store_tmpfd makes one for
 * a publish or an upload; its read position left at the end, as a writer leaves it. */
static int own_tmpfd(const char *sdir, const item *it)
{
    char tdir[600];
    snprintf(tdir, sizeof tdir, "%s/tmp", sdir);
    int fd = open(tdir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    int in = open(it->blob_path, O_RDONLY | O_CLOEXEC);
    assert_true(in >= 0);
    uint8_t *b = malloc(it->len);
    assert_non_null(b);
    assert_int_equal(read(in, b, it->len), (ssize_t)it->len);
    close(in);
    assert_int_equal(write(fd, b, it->len), (ssize_t)it->len);
    free(b);
    return fd;
}

/* kvs_store_publish_own keeps the caller's nameless temp file as the blob, so its bytes are
 * written once: the stored file is the fd's own inode, world-readable, the id is its bytes'
 * hash, and tmp/ is empty after. A file that has a name is copied instead, as
 * kvs_store_publish_fd does. A declared id the bytes do not match is refused
 * with nothing left in tmp/ or blobs/; a republish reports the existing blob and keeps nothing. */
/* A listing whose blob expired no longer counts: publishing the same (document, model, codec)
 * again replaces it (the old file and row go, as gc would take them) instead of answering
 * "already" with the expired id and keeping the catalog without it. */
static void test_republish_after_expiry(void **state)
{
    const char *dir = *state;
    char sdir[512], err[512] = "", blobs[600], oldpath[700], newpath[700];
    snprintf(sdir, sizeof sdir, "%s/store", dir);
    snprintf(blobs, sizeof blobs, "%s/blobs", sdir);
    kvs_store *s = open_ok(sdir);
    const int64_t now = (int64_t)time(NULL);
    item old, fresh, live, again;
    make_item(&old, dir, 7, 1, "f16-zstd", 3000, now - 100, now - 10); /* expired 10 s ago */
    publish_ok(s, &old, 0);
    blob_file_path(dir, old.sha, oldpath, sizeof oldpath);
    make_item(&fresh, dir, 7, 1, "f16-zstd", 3500, now, now + 3600);
    publish_ok(s, &fresh, 0); /* not "already": the expired listing is replaced */
    blob_file_path(dir, fresh.sha, newpath, sizeof newpath);
    assert_int_equal(access(oldpath, F_OK), -1);
    assert_int_equal(access(newpath, F_OK), 0);
    assert_int_equal(count_files(blobs), 1);
    kvs_blob *got = NULL;
    assert_int_equal(kvs_store_blob_get(s, old.sha, &got, err, sizeof err), KVS_ERR_NOTFOUND);
    assert_int_equal(kvs_store_blob_get(s, fresh.sha, &got, err, sizeof err), KVS_OK);
    assert_int_equal(got->expires, now + 3600);
    kvs_blob_free(got);
    /* a listing still current is kept: the next publish of it is a no-op */
    make_item(&live, dir, 7, 1, "f16-zstd", 4000, now, 0);
    kvs_publish_result res;
    assert_int_equal(kvs_store_publish_file(s, &live.info, live.blob_path, &res, err, sizeof err), KVS_OK);
    assert_int_equal(res.already, 1);
    assert_memory_equal(res.id, fresh.sha, 32);
    /* and another publisher's expired listing of the same document is none of ours */
    make_item(&again, dir, 8, 1, "f16-zstd", 3000, now - 100, now - 10);
    memset(again.info.publisher_id, 0xcd, sizeof again.info.publisher_id);
    publish_ok(s, &again, 0);
    make_item(&again, dir, 8, 1, "f16-zstd", 3100, now, 0);
    publish_ok(s, &again, 0);
    kvs_store_close(s);
}

static void test_publish_own(void **state)
{
    const char *dir = *state;
    char sdir[512], err[512] = "", blobs[600], tdir[600], path[512];
    kvs_store *s = open_store(dir, sdir);
    snprintf(blobs, sizeof blobs, "%s/blobs", sdir);
    snprintf(tdir, sizeof tdir, "%s/tmp", sdir);
    kvs_publish_result res;
    struct stat fs, bs;

    item a;
    make_item(&a, dir, 1, 1, "f16-zstd", 300000, 10, 0);
    int fd = own_tmpfd(sdir, &a);
    assert_int_equal(kvs_store_publish_own(s, &a.info, fd, &res, err, sizeof err), KVS_OK);
    assert_int_equal(res.already, 0);
    assert_memory_equal(res.id, a.sha, 32);
    assert_int_equal(kvs_store_blob_path(s, a.sha, path, sizeof path, err, sizeof err), KVS_OK);
    assert_int_equal(fstat(fd, &fs), 0);
    assert_int_equal(stat(path, &bs), 0);
    assert_true(fs.st_ino == bs.st_ino && fs.st_dev == bs.st_dev); /* kept, not copied */
    assert_int_equal(bs.st_mode & 0777, 0644);
    assert_int_equal(bs.st_nlink, 1);
    uint8_t got[32];
    off_t size;
    sha_file(path, got, &size);
    assert_memory_equal(got, a.sha, 32);
    assert_int_equal(size, 300000);
    assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), 0); /* the store let go of the file */
    close(fd);
    assert_int_equal(count_files(tdir), 0);

    /* a republish of the same listing: the existing blob, and the file is not kept */
    fd = own_tmpfd(sdir, &a);
    assert_int_equal(kvs_store_publish_own(s, &a.info, fd, &res, err, sizeof err), KVS_OK);
    assert_int_equal(res.already, 1);
    assert_int_equal(fstat(fd, &fs), 0);
    assert_int_equal(fs.st_nlink, 0);
    close(fd);

    /* a file with a name is copied (through another name it could still change), to the same
     * result */
    item b;
    make_item(&b, dir, 2, 1, "f16-zstd", 5000, 20, 0);
    fd = open(b.blob_path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(kvs_store_publish_own(s, &b.info, fd, &res, err, sizeof err), KVS_OK);
    assert_memory_equal(res.id, b.sha, 32);
    assert_int_equal(kvs_store_blob_path(s, b.sha, path, sizeof path, err, sizeof err), KVS_OK);
    assert_int_equal(fstat(fd, &fs), 0);
    assert_int_equal(stat(path, &bs), 0);
    assert_true(fs.st_ino != bs.st_ino);
    sha_file(path, got, &size);
    assert_memory_equal(got, b.sha, 32);
    close(fd);

    /* declared id the bytes do not match: refused, nothing kept, the caller's file intact */
    item m;
    make_item(&m, dir, 3, 1, "f16-zstd", 7000, 30, 0);
    memcpy(m.info.id, a.sha, 32);
    fd = own_tmpfd(sdir, &m);
    assert_int_equal(kvs_store_publish_own(s, &m.info, fd, &res, err, sizeof err), KVS_ERR_MISMATCH);
    assert_non_null(strstr(err, "declared"));
    assert_int_equal(fstat(fd, &fs), 0);
    assert_int_equal(fs.st_nlink, 0);
    assert_int_equal(fs.st_size, 7000);
    close(fd);
    assert_int_equal(count_files(tdir), 0);
    assert_int_equal(count_files(blobs), 2);
    kvs_store_close(s);
}

/* ---- reconciliation ---- */

static void test_reconcile_orphans(void **state)
{
    const char *dir = *state;
    char sdir[512], err[512] = "", path[1024], orphan[1024], tmpf[1024], locked[1024];
    kvs_store *s = open_store(dir, sdir);
    item a, b;
    publish_new(s, &a, dir, 1, 1000, 10);
    publish_new(s, &b, dir, 2, 1000, 20);
    kvs_store_close(s);

    /* row without file: remove b's file behind the store's back */
    blob_file_path(dir, b.sha, path, sizeof path);
    assert_int_equal(unlink(path), 0);
    /* file without row */
    uint8_t fake[32];
    kvc_sha256("orphan", 6, fake);
    blob_file_path(dir, fake, orphan, sizeof orphan);
    char sub[1024];
    snprintf(sub, sizeof sub, "%.*s", (int)(strrchr(orphan, '/') - orphan), orphan);
    mkdir(sub, 0755);
    tu_write_file(orphan, "orphan", 6);
    /* a temp file whose writer is gone, and one whose writer (us) still holds its lock */
    snprintf(tmpf, sizeof tmpf, "%s/tmp/blob.dead00", sdir);
    tu_write_file(tmpf, "partial", 7);
    snprintf(locked, sizeof locked, "%s/tmp/blob.live00", sdir);
    tu_write_file(locked, "in progress", 11);
    int lfd = open(locked, O_RDONLY);
    assert_true(lfd >= 0);
    assert_int_equal(flock(lfd, LOCK_EX), 0);
    /* a file that is not ours is left alone */
    char foreign[1024];
    snprintf(foreign, sizeof foreign, "%s/blobs/README", sdir);
    tu_write_file(foreign, "hi", 2);

    s = open_ok(sdir); /* reconciles on open */
    assert_int_equal(access(orphan, F_OK), -1);
    assert_int_equal(access(tmpf, F_OK), -1);
    assert_int_equal(access(locked, F_OK), 0);
    assert_int_equal(access(foreign, F_OK), 0);
    kvs_blob *row = NULL;
    assert_int_equal(kvs_store_blob_get(s, b.sha, &row, err, sizeof err), KVS_ERR_NOTFOUND);
    assert_int_equal(kvs_store_blob_get(s, a.sha, &row, err, sizeof err), KVS_OK);
    kvs_blob_free(row);

    /* explicit reconcile reports counts: a truncated file (size differs from its row) goes
     * with its row; the lock released, the live temp file goes too */
    blob_file_path(dir, a.sha, path, sizeof path);
    assert_int_equal(truncate(path, 10), 0);
    close(lfd);
    size_t files = 99, rows = 99;
    assert_int_equal(kvs_store_reconcile(s, &files, &rows, err, sizeof err), KVS_OK);
    assert_int_equal(files, 2);
    assert_int_equal(rows, 1);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(access(locked, F_OK), -1);
    assert_int_equal(kvs_store_reconcile(s, &files, &rows, err, sizeof err), KVS_OK);
    assert_int_equal(files, 0);
    assert_int_equal(rows, 0);

    /* republishing after reconciliation works */
    publish_ok(s, &b, 0);
    kvs_store_close(s);
}

/* ---- GC ---- */

static void test_gc_expired(void **state)
{
    const char *dir = *state;
    char sdir[512], err[512] = "", path[1024];
    kvs_store *s = open_store(dir, sdir);
    item old, keep, later;
    make_item(&old, dir, 1, 1, "f16-zstd", 500, 10, 1000);
    make_item(&keep, dir, 2, 2, "f16-zstd", 500, 20, 0);
    make_item(&later, dir, 3, 1, "f16-zstd", 500, 30, 5000);
    publish_ok(s, &old, 0);
    publish_ok(s, &keep, 0);
    publish_ok(s, &later, 0);
    uint8_t token[32];
    assert_int_equal(kvs_store_purchase(s, old.sha, "alice", 10, 3000, 5, token, NULL, err, sizeof err), KVS_OK);

    size_t removed = 99;
    assert_int_equal(kvs_store_gc(s, 999, &removed, err, sizeof err), KVS_OK);
    assert_int_equal(removed, 0);
    assert_int_equal(kvs_store_gc(s, 1000, &removed, err, sizeof err), KVS_OK);
    assert_int_equal(removed, 1);
    blob_file_path(dir, old.sha, path, sizeof path);
    assert_int_equal(access(path, F_OK), -1);
    kvs_blob *row = NULL;
    assert_int_equal(kvs_store_blob_get(s, old.sha, &row, err, sizeof err), KVS_ERR_NOTFOUND);
    assert_int_equal(kvs_store_blob_get(s, keep.sha, &row, err, sizeof err), KVS_OK);
    kvs_blob_free(row);
    /* its token died with it */
    assert_int_equal(kvs_store_token_spend(s, token, old.sha, 20, 1, NULL, NULL, err, sizeof err), KVS_TOKEN_UNKNOWN);
    kvs_store_close(s);

    /* the document row no blob references any more is gone; model 1 stays (blob 3 uses it) */
    sqlite3 *db = NULL;
    char dbpath[600];
    snprintf(dbpath, sizeof dbpath, "%s/index.db", sdir);
    assert_int_equal(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM models), "
                                            "(SELECT count(*) FROM blobs), (SELECT count(*) FROM purchases)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 2);
    assert_int_equal(sqlite3_column_int(st, 1), 2);
    assert_int_equal(sqlite3_column_int(st, 2), 2);
    assert_int_equal(sqlite3_column_int(st, 3), 1); /* purchase history is kept */
    sqlite3_finalize(st);
    sqlite3_close(db);

    s = open_ok(sdir);
    assert_int_equal(kvs_store_gc(s, 5000, &removed, err, sizeof err), KVS_OK);
    assert_int_equal(removed, 1);
    kvs_store_close(s);
}

/* ---- schema 1 -> 2: the byte budget of tokens bought before it ---- */

/* SQL that undoes migration 4 (the housekeeping column and indexes), for the tests that turn
 * an index back into an older schema. */
static int64_t count_rows(const char *dbpath, const char *sql);

/* migration 6's tables and triggers (snapshots), so that an older schema can be rebuilt */
#define UNDO_MIGRATION_6 \
    "DROP TRIGGER blobs_gen_ins;\n" \
    "DROP TRIGGER blobs_gen_upd;\n" \
    "DROP TRIGGER blobs_gen_del;\n" \
    "DROP TRIGGER revocations_gen;\n" \
    "DROP TABLE signing_keys;\n" \
    "DROP TABLE snapshot_versions;\n" \
    "DROP TABLE catalog_gen;\n"

#define UNDO_MIGRATION_4 \
    "DROP INDEX purchases_by_created;\n" \
    "DROP INDEX access_tokens_by_expires;\n" \
    "DROP INDEX access_tokens_by_purchase;\n" \
    "DROP INDEX download_log_by_at;\n" \
    "ALTER TABLE purchases DROP COLUMN delivered;\n"

static void test_budget_migration(void **state)
{
    const char *dir = *state;
    char sdir[512], err[512] = "", dbpath[600];
    kvs_store *s = open_store(dir, sdir);
    item a;
    publish_new(s, &a, dir, 1, 100, 10);
    uint8_t tok[32];
    int64_t pid = 0;
    assert_int_equal(kvs_store_purchase(s, a.sha, "old", 100, 1000, 3, tok, &pid, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_log_download(s, a.sha, pid, "c", 70, 200, 120, err, sizeof err), KVS_OK);
    kvs_store_close(s);
    /* turn the index back into schema 1: access_tokens as it was, 2 downloads left */
    snprintf(dbpath, sizeof dbpath, "%s/index.db", sdir);
    const char *v1 =
        UNDO_MIGRATION_6 UNDO_MIGRATION_4
        "ALTER TABLE access_tokens RENAME TO t2;\n"
        "CREATE TABLE access_tokens (\n"
        "  token_sha256 TEXT PRIMARY KEY CHECK (length(token_sha256) = 64),\n"
        "  purchase_id INTEGER NOT NULL REFERENCES purchases(id),\n"
        "  blob_id TEXT NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,\n"
        "  expires INTEGER NOT NULL,\n"
        "  downloads_left INTEGER NOT NULL CHECK (downloads_left >= 0));\n"
        "INSERT INTO access_tokens SELECT token_sha256, purchase_id, blob_id, expires, 2 FROM t2;\n"
        "DROP TABLE t2;\n"
        "CREATE INDEX access_tokens_by_blob ON access_tokens(blob_id);\n"
        "DROP TABLE revocations;\n" /* migration 3's tables; its blobs rebuild copes with either shape */
        "DROP TABLE refunds;\n"
        "PRAGMA user_version = 1;\n";
    exec_sql(dbpath, v1);
    s = open_ok(sdir); /* migrates: 2 downloads of a 100-byte blob = 200 bytes */
    assert_int_equal(kvs_store_schema_version(s), kvs_schema_latest());
    /* migration 4 counts what the download log says was delivered under each purchase */
    assert_int_equal(count_rows(dbpath, "SELECT delivered FROM purchases"), 70);
    uint32_t left = 0;
    assert_int_equal(kvs_store_token_spend(s, tok, a.sha, 150, 150, &left, NULL, err, sizeof err), KVS_OK);
    assert_int_equal(left, 0);
    assert_int_equal(kvs_store_token_spend(s, tok, a.sha, 150, 51, &left, NULL, err, sizeof err), KVS_TOKEN_EXHAUSTED);
    assert_int_equal(kvs_store_token_spend(s, tok, a.sha, 150, 50, &left, NULL, err, sizeof err), KVS_OK);
    kvs_store_close(s);
}

/* ---- listings belong to publishers; revocation ---- */

/* Item n as publisher pub's listing: its own key id, title and blob bytes (two publishers'
 * blobs of one document always differ: each is signed by its own key). */
static void make_listing(item *it, const char *dir, unsigned doc, unsigned pub, const char *title)
{
    make_item(it, dir, doc, 1, "f16-zstd", 100 + pub, 10 + pub, 0);
    memset(it->info.publisher_id, (int)pub, sizeof it->info.publisher_id);
    snprintf(it->title, sizeof it->title, "%s", title);
    uint8_t *bytes = make_bytes(doc * 7919 + pub, it->len);
    kvc_sha256(bytes, it->len, it->sha);
    snprintf(it->blob_path, sizeof it->blob_path, "%s/in-%u-pub%u.blob", dir, doc, pub);
    tu_write_file(it->blob_path, bytes, it->len);
    free(bytes);
}

static kvs_list *catalog_ok(kvs_store *s, const kvs_query *q)
{
    char err[512] = "";
    kvs_list *l = NULL;
    kvs_status st = kvs_store_catalog(s, q, &l, err, sizeof err);
    if (st != KVS_OK)
        fail_msg("catalog: %s: %s", kvs_status_str(st), err);
    return l;
}

static void test_listings_per_publisher(void **state)
{
    const char *dir = *state;
    char sdir[512];
    kvs_store *s = open_store(dir, sdir);
    item squat, real, again;
    /* a squatter who knows only the document's hash lists it first, under its own title */
    make_listing(&squat, dir, 1, 0x5a, "Buy my fake");
    publish_ok(s, &squat, 0);
    /* the genuine publisher's listing of the same (document, model, codec) is its own */
    make_listing(&real, dir, 1, 0xab, "The real document");
    publish_ok(s, &real, 0);
    /* and publishing it again is the genuine publisher's no-op, naming its own blob */
    make_listing(&again, dir, 1, 0xab, "The real document");
    char err[512] = "";
    kvs_publish_result res;
    assert_int_equal(kvs_store_publish_file(s, &again.info, again.blob_path, &res, err, sizeof err), KVS_OK);
    assert_int_equal(res.already, 1);
    assert_memory_equal(res.id, real.sha, 32);

    kvs_query q = {.doc_sha256 = real.info.doc_sha256};
    kvs_list *l = catalog_ok(s, &q);
    assert_int_equal(kvs_list_count(l), 2);
    for (size_t i = 0; i < 2; i++) {
        const kvs_blob *b = kvs_list_get(l, i);
        const item *it = memcmp(b->id, real.sha, 32) == 0 ? &real : &squat;
        assert_memory_equal(b->id, it->sha, 32);
        assert_string_equal(b->doc_title, it->title); /* each listing shows its own signed title */
        assert_memory_equal(b->publisher_id, it->info.publisher_id, 8);
        assert_int_equal(b->revoked, 0);
    }
    kvs_list_free(l);

    /* one publisher's listings; a title search finds only the listing that carries it */
    q = (kvs_query){.publisher_id = real.info.publisher_id};
    l = catalog_ok(s, &q);
    assert_int_equal(kvs_list_count(l), 1);
    assert_memory_equal(kvs_list_get(l, 0)->id, real.sha, 32);
    kvs_list_free(l);
    q = (kvs_query){.title_contains = "REAL DOC"};
    l = catalog_ok(s, &q);
    assert_int_equal(kvs_list_count(l), 1);
    assert_memory_equal(kvs_list_get(l, 0)->id, real.sha, 32);
    kvs_list_free(l);
    kvs_store_close(s);
}

/* Opens the store DIR/store; sdir and dbpath get its directory and index path. */
static kvs_store *open_store_in(const char *dir, char sdir[512], char dbpath[600])
{
    kvs_store *s = open_store(dir, sdir);
    snprintf(dbpath, 600, "%s/index.db", sdir);
    return s;
}

static int64_t count_rows(const char *dbpath, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(dbpath, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void test_revocation_bites(void **state)
{
    const char *dir = *state;
    char sdir[512], dbpath[600], err[512] = "";
    kvs_store *s = open_store_in(dir, sdir, dbpath);
    item bad, bad2, good;
    make_listing(&bad, dir, 1, 0x66, "from the key that leaks");
    make_listing(&bad2, dir, 2, 0x66, "second from it");
    make_listing(&good, dir, 1, 0x77, "from an honest key");
    publish_ok(s, &bad, 0);
    publish_ok(s, &bad2, 0);
    publish_ok(s, &good, 0);
    uint8_t tok[32], tok_used[32], tok_old[32], tok_good[32];
    assert_int_equal(kvs_store_purchase(s, bad.sha, "carol", 100, 1000, 1, tok, NULL, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_purchase(s, bad.sha, "dave", 100, 1000, 1, tok_used, NULL, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_token_spend(s, tok_used, bad.sha, 150, bad.len, NULL, NULL, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_purchase(s, bad2.sha, "erin", 100, 160, 1, tok_old, NULL, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_purchase(s, good.sha, "carol", 100, 1000, 1, tok_good, NULL, err, sizeof err), KVS_OK);

    size_t blobs = 9, refunds = 9;
    int revoked = 0;
    int64_t at = 0;
    assert_int_equal(kvs_store_key_revoked(s, bad.info.publisher_id, &revoked, &at, err, sizeof err), KVS_OK);
    assert_int_equal(revoked, 0);
    assert_int_equal(kvs_store_publisher_revoke(s, bad.info.publisher_id, "key leaked", 200, &blobs, &refunds, err,
                                                sizeof err), KVS_OK);
    assert_int_equal(blobs, 2);
    assert_int_equal(refunds, 1); /* carol's: dave spent his download, erin's token expired at 160 */
    assert_int_equal(count_rows(dbpath, "SELECT count(*) FROM refunds r JOIN purchases p ON p.id = r.purchase_id "
                                        "WHERE p.buyer = 'carol' AND r.amount = p.price AND r.amount = 100 "
                                        "AND r.at = 200 AND r.reason = 'key leaked'"), 1);
    assert_int_equal(kvs_store_key_revoked(s, bad.info.publisher_id, &revoked, &at, err, sizeof err), KVS_OK);
    assert_int_equal(revoked, 1);
    assert_int_equal(at, 200);

    /* gone from the catalog, marked on lookup, not sold, not served, not published again */
    kvs_list *l = catalog_ok(s, NULL);
    assert_int_equal(kvs_list_count(l), 1);
    assert_int_equal(kvs_list_total(l), 1);
    assert_memory_equal(kvs_list_get(l, 0)->id, good.sha, 32);
    kvs_list_free(l);
    kvs_blob *b = NULL;
    assert_int_equal(kvs_store_blob_get(s, bad.sha, &b, err, sizeof err), KVS_OK);
    assert_int_equal(b->revoked, 1);
    kvs_blob_free(b);
    uint8_t t2[32];
    assert_int_equal(kvs_store_purchase(s, bad.sha, "frank", 300, 1000, 1, t2, NULL, err, sizeof err),
                     KVS_ERR_REVOKED);
    assert_non_null(strstr(err, "revoked"));
    assert_int_equal(kvs_store_token_spend(s, tok, bad.sha, 300, 10, NULL, NULL, err, sizeof err), KVS_ERR_REVOKED);
    assert_int_equal(kvs_store_token_spend(s, tok, bad.sha, 300, 0, NULL, NULL, err, sizeof err), KVS_ERR_REVOKED);
    item bad3;
    make_listing(&bad3, dir, 3, 0x66, "after revocation");
    kvs_publish_result res;
    assert_int_equal(kvs_store_publish_file(s, &bad3.info, bad3.blob_path, &res, err, sizeof err), KVS_ERR_REVOKED);
    assert_non_null(strstr(err, "6666666666666666 is revoked"));
    /* the honest key is untouched */
    assert_int_equal(kvs_store_token_spend(s, tok_good, good.sha, 300, 10, NULL, NULL, err, sizeof err), KVS_OK);
    /* revoking again changes nothing */
    assert_int_equal(kvs_store_publisher_revoke(s, bad.info.publisher_id, "again", 400, &blobs, &refunds, err,
                                                sizeof err), KVS_OK);
    assert_int_equal(blobs, 0);
    assert_int_equal(refunds, 0);
    assert_int_equal(count_rows(dbpath, "SELECT count(*) FROM refunds"), 1);
    kvs_store_close(s);
}

/* A store indexed before listings belonged to publishers (schema 2) migrates without losing a
 * row: access tokens survive the rebuild of blobs (their foreign key cascades on delete), and
 * each listing keeps the title it showed. */
static void test_listing_migration(void **state)
{
    const char *dir = *state;
    char sdir[512], dbpath[600], err[512] = "";
    kvs_store *s = open_store_in(dir, sdir, dbpath);
    item a;
    make_listing(&a, dir, 1, 0x11, "Document Number 1");
    publish_ok(s, &a, 0);
    uint8_t tok[32];
    assert_int_equal(kvs_store_purchase(s, a.sha, "old", 100, 1000, 1, tok, NULL, err, sizeof err), KVS_OK);
    kvs_store_close(s);
    const char *v2 =
        UNDO_MIGRATION_6 UNDO_MIGRATION_4
        "CREATE TABLE b2 (id TEXT PRIMARY KEY, document_id INTEGER NOT NULL REFERENCES documents(id),\n"
        "  model_id INTEGER NOT NULL REFERENCES models(id), tokenizer_id INTEGER NOT NULL REFERENCES tokenizers(id),\n"
        "  codec TEXT NOT NULL, tokens INTEGER NOT NULL, size INTEGER NOT NULL, serial INTEGER NOT NULL,\n"
        "  created INTEGER NOT NULL, expires INTEGER, price INTEGER NOT NULL DEFAULT 0,\n"
        "  publisher_key_id TEXT NOT NULL, UNIQUE (document_id, model_id, codec));\n"
        "INSERT INTO b2 SELECT id, document_id, model_id, tokenizer_id, codec, tokens, size, serial, created,\n"
        "  expires, price, publisher_key_id FROM blobs;\n"
        "DROP TABLE blobs;\n"
        "ALTER TABLE b2 RENAME TO blobs;\n"
        "DROP TABLE revocations;\n"
        "DROP TABLE refunds;\n"
        "PRAGMA user_version = 2;\n";
    exec_sql(dbpath, v2);
    assert_int_equal(count_rows(dbpath, "SELECT count(*) FROM access_tokens"), 1);

    s = open_ok(sdir);
    assert_int_equal(kvs_store_schema_version(s), kvs_schema_latest());
    assert_int_equal(count_rows(dbpath, "SELECT count(*) FROM access_tokens"), 1);
    assert_int_equal(kvs_store_token_spend(s, tok, a.sha, 150, 10, NULL, NULL, err, sizeof err), KVS_OK);
    kvs_blob *b = NULL;
    assert_int_equal(kvs_store_blob_get(s, a.sha, &b, err, sizeof err), KVS_OK);
    assert_string_equal(b->doc_title, "Document Number 1");
    kvs_blob_free(b);
    item other;
    make_listing(&other, dir, 1, 0x22, "Another publisher's copy");
    publish_ok(s, &other, 0);
    assert_int_equal(count_rows(dbpath, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
    kvs_store_close(s);
}

/* ---- purchases and tokens ---- */

static void test_purchases_and_tokens(void **state)
{
    const char *dir = *state;
    char sdir[512], err[512] = "";
    kvs_store *s = open_store(dir, sdir);
    item a, b;
    publish_new(s, &a, dir, 1, 100, 10);
    publish_new(s, &b, dir, 2, 100, 10);

    uint8_t tok[32], tok2[32], zero[32] = {0};
    int64_t pid = 0, pid_seen = 0;
    assert_int_equal(kvs_store_purchase(s, a.sha, "bob", 100, 200, 2, tok, &pid, err, sizeof err), KVS_OK);
    assert_true(pid > 0);
    assert_memory_not_equal(tok, zero, 32);
    assert_int_equal(kvs_store_purchase(s, a.sha, NULL, 100, 200, 1, tok2, NULL, err, sizeof err), KVS_OK);
    assert_memory_not_equal(tok, tok2, 32);

    /* the budget is bytes: 2 downloads of a 100-byte blob = 200 bytes */
    uint32_t left = 99;
    /* wrong blob does not spend */
    assert_int_equal(kvs_store_token_spend(s, tok, b.sha, 150, 100, &left, NULL, err, sizeof err), KVS_TOKEN_WRONG_BLOB);
    assert_int_equal(kvs_store_token_spend(s, tok, a.sha, 150, 100, &left, &pid_seen, err, sizeof err), KVS_OK);
    assert_int_equal(left, 1);
    assert_int_equal(pid_seen, pid);
    /* ranges spend what they ask for: 60 + 40 use up the second download */
    assert_int_equal(kvs_store_token_spend(s, tok, a.sha, 151, 60, &left, NULL, err, sizeof err), KVS_OK);
    assert_int_equal(left, 0);
    assert_int_equal(kvs_store_token_spend(s, tok, a.sha, 151, 41, &left, NULL, err, sizeof err), KVS_TOKEN_EXHAUSTED);
    assert_non_null(strstr(err, "40 bytes of downloads left"));
    assert_int_equal(kvs_store_token_spend(s, tok, a.sha, 151, 40, &left, NULL, err, sizeof err), KVS_OK);
    /* exhausted: not even one byte, not even a range after byte 0 */
    assert_int_equal(kvs_store_token_spend(s, tok, a.sha, 152, 1, &left, NULL, err, sizeof err), KVS_TOKEN_EXHAUSTED);
    /* undelivered bytes come back: a resumption of the missing 30 is paid for, no more */
    assert_int_equal(kvs_store_token_refund(s, tok, 30, 153, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_token_spend(s, tok, a.sha, 153, 31, &left, NULL, err, sizeof err), KVS_TOKEN_EXHAUSTED);
    assert_int_equal(kvs_store_token_spend(s, tok, a.sha, 153, 30, &left, NULL, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_token_spend(s, tok, a.sha, 153, 1, &left, NULL, err, sizeof err), KVS_TOKEN_EXHAUSTED);
    /* expiry: valid strictly before expires */
    assert_int_equal(kvs_store_token_spend(s, tok2, a.sha, 200, 1, &left, NULL, err, sizeof err), KVS_TOKEN_EXPIRED);
    /* unknown token */
    uint8_t fake[32];
    memset(fake, 7, sizeof fake);
    assert_int_equal(kvs_store_token_spend(s, fake, a.sha, 150, 1, &left, NULL, err, sizeof err), KVS_TOKEN_UNKNOWN);
    assert_int_equal(kvs_store_token_refund(s, fake, 10, 153, err, sizeof err), KVS_OK); /* nothing to give back */
    /* tok2 is still usable before expiry: the expired attempt did not spend it */
    assert_int_equal(kvs_store_token_spend(s, tok2, a.sha, 199, 100, &left, NULL, err, sizeof err), KVS_OK);

    /* bad purchases */
    uint8_t unknown[32];
    memset(unknown, 0x11, sizeof unknown);
    assert_int_equal(kvs_store_purchase(s, unknown, "x", 100, 200, 1, tok, NULL, err, sizeof err), KVS_ERR_NOTFOUND);
    assert_int_equal(kvs_store_purchase(s, a.sha, "x", 100, 100, 1, tok, NULL, err, sizeof err), KVS_ERR_INVALID);
    assert_int_equal(kvs_store_purchase(s, a.sha, "x", 100, 200, 0, tok, NULL, err, sizeof err), KVS_ERR_INVALID);
    kvs_store_close(s);

    /* only the hash of a token is stored: the raw token appears nowhere in the index */
    char cmd[1200], hex[65];
    snprintf(cmd, sizeof cmd, "sqlite3 '%s/index.db' .dump | grep -c %s", sdir, kvc_hex(tok2, 32, hex));
    assert_int_equal(shell_int(cmd), 0);
}

/* ---- housekeeping ---- */

/* Calls kvs_store_prune until a call deletes less than a batch of every kind; sums what went. */
static kvs_prune_counts prune_all(kvs_store *s, kvs_prune_policy p)
{
    kvs_prune_counts sum = {0}, c;
    char err[512] = "";
    do {
        assert_int_equal(kvs_store_prune(s, &p, &c, err, sizeof err), KVS_OK);
        assert_true(c.purchases <= p.batch && c.log_rows <= p.batch);
        sum.purchases += c.purchases, sum.tokens += c.tokens, sum.log_rows += c.log_rows;
    } while (c.purchases == p.batch || c.tokens >= p.batch || c.log_rows == p.batch);
    return sum;
}

/* A GET holds its token's budget while it streams: a revocation then sees nothing left to
 * refund. What the GET gives back when it ends comes off the purchase's delivered bytes, and
 * (the publisher revoked meanwhile) the purchase is refunded then; a purchase killed mid-GET
 * keeps what it reserved as delivered, so pruning never takes it for unpaid. */
static void test_refund_after_inflight_revocation(void **state)
{
    const char *dir = *state;
    char sdir[512], dbpath[600], err[512] = "", sql[200];
    kvs_store *s = open_store_in(dir, sdir, dbpath);
    item a;
    make_item(&a, dir, 1, 1, "f16-zstd", 100, 10, 0);
    a.info.price = 9;
    publish_ok(s, &a, 0);
    uint8_t tok[32];
    int64_t pid = 0;
    assert_int_equal(kvs_store_purchase(s, a.sha, "b", 100, 5000, 1, tok, &pid, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_token_spend(s, tok, a.sha, 120, 100, NULL, NULL, err, sizeof err), KVS_OK);
    snprintf(sql, sizeof sql, "SELECT delivered FROM purchases WHERE id = %lld", (long long)pid);
    assert_int_equal(count_rows(dbpath, sql), 100); /* reserved counts as delivered */
    size_t blobs = 0, refunds = 9;
    assert_int_equal(kvs_store_publisher_revoke(s, a.info.publisher_id, "leaked", 130, &blobs, &refunds, err,
                                                sizeof err), KVS_OK);
    assert_int_equal(refunds, 0); /* the budget was all held by the GET */
    /* the GET ends after 9 bytes: 91 come back, and the purchase is refunded */
    assert_int_equal(kvs_store_token_refund(s, tok, 91, 140, err, sizeof err), KVS_OK);
    assert_int_equal(count_rows(dbpath, sql), 9);
    snprintf(sql, sizeof sql, "SELECT amount FROM refunds WHERE purchase_id = %lld AND at = 140", (long long)pid);
    assert_int_equal(count_rows(dbpath, sql), 9);
    /* once only */
    assert_int_equal(kvs_store_token_refund(s, tok, 1, 150, err, sizeof err), KVS_OK);
    assert_int_equal(count_rows(dbpath, "SELECT count(*) FROM refunds"), 1);
    kvs_store_close(s);
}

static void test_prune(void **state)
{
    const char *dir = *state;
    char sdir[512], dbpath[600], err[512] = "";
    kvs_store *s = open_store_in(dir, sdir, dbpath);
    item a, f;
    make_item(&a, dir, 1, 1, "f16-zstd", 100, 10, 0);
    a.info.price = 7;
    publish_ok(s, &a, 0);
    make_item(&f, dir, 2, 1, "f16-zstd", 100, 10, 0);
    f.info.price = 0;
    publish_ok(s, &f, 0);
    uint8_t tok[32];
    int64_t pid = 0, paid = 0, refunded = 0;
    for (int i = 0; i < 5; i++) /* unpaid: nothing delivered, tokens expire at 200 */
        assert_int_equal(kvs_store_purchase(s, a.sha, "u", 100, 200, 1, tok, NULL, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_purchase(s, a.sha, "p", 100, 200, 1, tok, &paid, err, sizeof err), KVS_OK);
    /* delivered: its token spent (the server's GET), the log written when the GET ended */
    assert_int_equal(kvs_store_token_spend(s, tok, a.sha, 120, 50, NULL, NULL, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_log_download(s, a.sha, paid, "c", 50, 206, 120, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_purchase(s, f.sha, "free", 100, 200, 1, tok, &pid, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_log_download(s, f.sha, pid, "c", 100, 200, 120, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_purchase(s, a.sha, "r", 100, 200, 1, tok, &refunded, err, sizeof err), KVS_OK);
    char sql[200];
    snprintf(sql, sizeof sql, "INSERT INTO refunds (purchase_id, amount, at, reason) VALUES (%lld, 7, 150, 'x')",
             (long long)refunded);
    exec_sql(dbpath, sql);
    /* young, and its token still works */
    assert_int_equal(kvs_store_purchase(s, a.sha, "y", 900, 2000, 1, tok, NULL, err, sizeof err), KVS_OK);

    kvs_prune_policy p = {.now = 1000, .batch = 0};
    kvs_prune_counts c;
    assert_int_equal(kvs_store_prune(s, &p, &c, err, sizeof err), KVS_ERR_INVALID);
    /* unpaid purchases, two at a time: the 5 priced ones and the free one; their tokens go too */
    p = (kvs_prune_policy){.now = 1000, .unpaid_before = 500, .batch = 2};
    c = prune_all(s, p);
    assert_int_equal(c.purchases, 6);
    assert_int_equal(c.tokens, 6);
    assert_int_equal(c.log_rows, 0);
    assert_int_equal(count_rows(dbpath, "SELECT count(*) FROM purchases"), 3);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM purchases WHERE id IN (%lld, %lld)", (long long)paid,
             (long long)refunded);
    assert_int_equal(count_rows(dbpath, sql), 2);
    /* expired tokens, then the log, each on its own */
    p = (kvs_prune_policy){.now = 1000, .tokens_expired_before = 300, .batch = 2};
    c = prune_all(s, p);
    assert_int_equal(c.tokens, 2);
    assert_int_equal(c.purchases, 0);
    assert_int_equal(count_rows(dbpath, "SELECT count(*) FROM access_tokens"), 1);
    p = (kvs_prune_policy){.now = 1000, .log_before = 150, .batch = 1};
    c = prune_all(s, p);
    assert_int_equal(c.log_rows, 2);
    assert_int_equal(count_rows(dbpath, "SELECT count(*) FROM download_log"), 0);
    /* what was delivered is kept on the purchase, so it stays paid without its log rows */
    p = (kvs_prune_policy){.now = 3000, .unpaid_before = 2500, .batch = 10};
    c = prune_all(s, p);
    assert_int_equal(c.purchases, 1); /* the young one, now old and expired */
    assert_int_equal(count_rows(dbpath, "SELECT count(*) FROM purchases"), 2);
    kvs_store_close(s);
}

/* ---- publishers and the download log ---- */

static void test_publishers_and_log(void **state)
{
    const char *dir = *state;
    char sdir[512], err[512] = "";
    kvs_store *s = open_store(dir, sdir);
    uint8_t kid[8] = {1, 2, 3, 4, 5, 6, 7, 8}, pk[32], kid2[8] = {9, 9, 9, 9, 9, 9, 9, 9};
    memset(pk, 0x42, sizeof pk);
    assert_int_equal(kvs_store_publisher_add(s, kid, pk, "Acme Caches", "s3cret", 6, 77, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_publisher_add(s, kid, pk, "again", NULL, 0, 78, err, sizeof err), KVS_ERR_EXISTS);
    assert_non_null(strstr(err, "0102030405060708"));
    assert_int_equal(kvs_store_publisher_add(s, kid2, pk, "no uploads", NULL, 0, 79, err, sizeof err), KVS_OK);
    char longname[KVS_NAME_MAX + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    uint8_t kid3[8] = {3};
    assert_int_equal(kvs_store_publisher_add(s, kid3, pk, longname, NULL, 0, 79, err, sizeof err), KVS_ERR_INVALID);

    kvs_publisher p;
    assert_int_equal(kvs_store_publisher_get(s, kid, &p, err, sizeof err), KVS_OK);
    assert_string_equal(p.name, "Acme Caches");
    assert_memory_equal(p.public_key, pk, 32);
    assert_memory_equal(p.key_id, kid, 8);
    assert_int_equal(p.has_credential, 1);
    assert_int_equal(p.created, 77);
    assert_int_equal(kvs_store_publisher_get(s, kid3, &p, err, sizeof err), KVS_ERR_NOTFOUND);

    assert_int_equal(kvs_store_publisher_check(s, kid, "s3cret", 6, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_publisher_check(s, kid, "s3cre", 5, err, sizeof err), KVS_ERR_CREDENTIAL);
    assert_int_equal(kvs_store_publisher_check(s, kid, "s3creT", 6, err, sizeof err), KVS_ERR_CREDENTIAL);
    assert_int_equal(kvs_store_publisher_check(s, kid2, "", 0, err, sizeof err), KVS_ERR_CREDENTIAL);
    assert_int_equal(kvs_store_publisher_check(s, kid3, "s3cret", 6, err, sizeof err), KVS_ERR_NOTFOUND);

    uint8_t id1[32], id2[32];
    memset(id1, 1, 32);
    memset(id2, 2, 32);
    uint64_t n = 99;
    assert_int_equal(kvs_store_download_count(s, NULL, &n, err, sizeof err), KVS_OK);
    assert_int_equal(n, 0);
    assert_int_equal(kvs_store_log_download(s, id1, 0, "127.0.0.1", 1234, 200, 5, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_log_download(s, id1, 7, NULL, 10, 206, 6, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_log_download(s, id2, 0, "::1", 0, 404, 7, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_download_count(s, id1, &n, err, sizeof err), KVS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(kvs_store_download_count(s, NULL, &n, err, sizeof err), KVS_OK);
    assert_int_equal(n, 3);
    kvs_store_close(s);

    /* a damaged publisher row is a database error that names the key (the message once
     * printed an uninitialised buffer here) */
    {
        char dbpath[600];
        snprintf(dbpath, sizeof dbpath, "%s/index.db", sdir);
        exec_sql(dbpath, "UPDATE publishers SET public_key = substr(public_key, 1, 62) || 'zz' "
                         "WHERE key_id = '0909090909090909'");
        s = open_ok(sdir);
        memset(err, 'Q', sizeof err - 1);
        err[sizeof err - 1] = 0;
        assert_int_equal(kvs_store_publisher_get(s, kid2, &p, err, sizeof err), KVS_ERR_DB);
        assert_non_null(strstr(err, "publisher row 0909090909090909 holds a malformed key"));
        kvs_store_close(s);
    }

    /* credentials are stored hashed: the plain text is not in the file */
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "grep -c s3cret '%s/index.db' '%s/index.db-wal' 2>/dev/null | grep -v ':0$' | wc -l",
             sdir, sdir);
    assert_int_equal(shell_int(cmd), 0);
}

/* ---- schema versions ---- */

static void test_schema_newer_refused(void **state)
{
    const char *dir = *state;
    char sdir[512], err[512] = "", dbpath[600];
    kvs_store *s = open_store(dir, sdir);
    kvs_store_close(s);
    snprintf(dbpath, sizeof dbpath, "%s/index.db", sdir);
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", kvs_schema_latest() + 1);
    exec_sql(dbpath, sql);
    s = (kvs_store *)1;
    assert_int_equal(kvs_store_open(sdir, &s, err, sizeof err), KVS_ERR_SCHEMA);
    assert_null(s);
    assert_non_null(strstr(err, "newer"));

    /* somebody else's database is not adopted */
    char other[560];
    snprintf(other, sizeof other, "%s/other", dir);
    assert_int_equal(mkdir(other, 0755), 0);
    snprintf(dbpath, sizeof dbpath, "%s/index.db", other);
    exec_sql(dbpath, "CREATE TABLE t (x)");
    assert_int_equal(kvs_store_open(other, &s, err, sizeof err), KVS_ERR_SCHEMA);
    assert_non_null(strstr(err, "not a kvpub index"));

    /* a store directory that is a file */
    char f[600];
    snprintf(f, sizeof f, "%s/plainfile", dir);
    tu_write_file(f, "x", 1);
    assert_int_equal(kvs_store_open(f, &s, err, sizeof err), KVS_ERR_IO);
    assert_non_null(strstr(err, "plainfile"));
}

/* ---- consistency under concurrency and crashes ---- */

/* The next entry of d other than "." and ".." (and hidden files), NULL at the end. */
static struct dirent *next_entry(DIR *d)
{
    struct dirent *e;
    do
        e = readdir(d);
    while (e && e->d_name[0] == '.');
    return e;
}

/* Checks the raw on-disk state WITHOUT opening the store (which would reconcile): every row
 * has a complete file whose SHA-256 is its id, and every blob file is complete (its name is
 * its hash). Returns the number of rows. */
static int check_raw_consistency(const char *sdir, int *orphans)
{
    char dbpath[600], path[1600];
    snprintf(dbpath, sizeof dbpath, "%s/index.db", sdir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT id, size FROM blobs", -1, &st, NULL), SQLITE_OK);
    int rows = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *hex = (const char *)sqlite3_column_text(st, 0);
        snprintf(path, sizeof path, "%s/blobs/%.2s/%s", sdir, hex, hex);
        uint8_t got[32], want[32];
        off_t size = 0;
        if (access(path, F_OK) != 0)
            fail_msg("dangling index row %s: no file", hex);
        sha_file(path, got, &size);
        assert_int_equal(kvc_unhex(hex, want, 32), KVC_OK);
        assert_memory_equal(got, want, 32);
        assert_int_equal(size, sqlite3_column_int64(st, 1));
        rows++;
    }
    sqlite3_finalize(st);

    /* every file under blobs/ is complete; count those without a row */
    *orphans = 0;
    char bdir[700];
    snprintf(bdir, sizeof bdir, "%s/blobs", sdir);
    DIR *d = opendir(bdir);
    assert_non_null(d);
    struct dirent *de;
    while ((de = next_entry(d)) != NULL) {
        char sub[1000];
        snprintf(sub, sizeof sub, "%s/%s", bdir, de->d_name);
        DIR *d2 = opendir(sub);
        assert_non_null(d2);
        struct dirent *fe;
        while ((fe = next_entry(d2)) != NULL) {
            snprintf(path, sizeof path, "%s/%s", sub, fe->d_name);
            uint8_t got[32], want[32];
            off_t size = 0;
            sha_file(path, got, &size);
            assert_int_equal(kvc_unhex(fe->d_name, want, 32), KVC_OK);
            if (memcmp(got, want, 32) != 0)
                fail_msg("partial or corrupt blob file visible: %s", path);
            sqlite3_stmt *q = NULL;
            assert_int_equal(sqlite3_prepare_v2(db, "SELECT 1 FROM blobs WHERE id = ?", -1, &q, NULL), SQLITE_OK);
            sqlite3_bind_text(q, 1, fe->d_name, -1, SQLITE_STATIC);
            if (sqlite3_step(q) != SQLITE_ROW)
                (*orphans)++;
            sqlite3_finalize(q);
        }
        closedir(d2);
    }
    closedir(d);
    sqlite3_close(db);
    return rows;
}

/* Child body: publishes items [from, to) (each its own document) into sdir, repeating the
 * shared ones; exits 0 when every publish succeeded. */
static void child_publish(const char *dir, const char *sdir, unsigned from, unsigned to, int loop_forever)
{
    char err[512];
    kvs_store *s = NULL;
    if (kvs_store_open(sdir, &s, err, sizeof err) != KVS_OK) {
        fprintf(stderr, "child open: %s\n", err);
        _exit(3);
    }
    unsigned i = from;
    do {
        item it;
        char idir[700];
        snprintf(idir, sizeof idir, "%s/in-%d", dir, (int)getpid());
        mkdir(idir, 0755);
        /* each blob ~200 KB so a kill often lands mid-copy */
        make_item(&it, idir, i, 1, "f16-zstd", 150000 + 997 * (i % 50), 1000 + i, 0);
        kvs_publish_result res;
        kvs_status st = kvs_store_publish_file(s, &it.info, it.blob_path, &res, err, sizeof err);
        if (st != KVS_OK) {
            fprintf(stderr, "child publish %u: %s: %s\n", i, kvs_status_str(st), err);
            _exit(4);
        }
        unlink(it.blob_path);
        i++;
    } while (loop_forever || i < to);
    kvs_store_close(s);
    _exit(0);
}

static void test_two_processes_publish(void **state)
{
    const char *dir = *state;
    char sdir[512];
    snprintf(sdir, sizeof sdir, "%s/store", dir);
    /* children open a store that does not exist yet: creation and migration race too */
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        assert_true(kids[k] >= 0);
        if (kids[k] == 0)
            child_publish(dir, sdir, k == 0 ? 0 : 6, k == 0 ? 12 : 18, 0); /* 6..11 overlap */
    }
    /* reap both before asserting, so a failure does not leave a child writing into a
     * directory the teardown is removing */
    int status[2] = {0, 0};
    for (int k = 0; k < 2; k++)
        assert_int_equal(waitpid(kids[k], &status[k], 0), kids[k]);
    for (int k = 0; k < 2; k++) {
        assert_true(WIFEXITED(status[k]));
        assert_int_equal(WEXITSTATUS(status[k]), 0);
    }
    int orphans = -1;
    assert_int_equal(check_raw_consistency(sdir, &orphans), 18);
    assert_int_equal(orphans, 0);
    kvs_store *s = open_ok(sdir);
    char err[512];
    kvs_list *l = NULL;
    kvs_query q = {0};
    q.limit = 100;
    assert_int_equal(kvs_store_catalog(s, &q, &l, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_list_total(l), 18);
    kvs_list_free(l);
    kvs_store_close(s);
}

static void test_crash_leaves_no_partial_state(void **state)
{
    const char *dir = *state;
    char sdir[512], tdir[600];
    snprintf(sdir, sizeof sdir, "%s/store", dir);
    snprintf(tdir, sizeof tdir, "%s/tmp", sdir);
    kvs_store_close(open_ok(sdir));
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    int total_rows = 0, total_orphans = 0;
    for (unsigned iter = 0; iter < 6; iter++) {
        pid_t kid = fork();
        assert_true(kid >= 0);
        if (kid == 0)
            child_publish(dir, sdir, 1000 * (iter + 1), 0, 1);
        /* let it run a random while: several publishes, then kill at an arbitrary point */
        struct timespec ts = {0, (long)(20 + rand() % 180) * 1000000L};
        nanosleep(&ts, NULL);
        assert_int_equal(kill(kid, SIGKILL), 0);
        int status = 0;
        assert_int_equal(waitpid(kid, &status, 0), kid);
        if (WIFEXITED(status))
            fail_msg("publisher exited (%d) before the kill: see its stderr", WEXITSTATUS(status));

        /* before any reconcile: no dangling row, no partial file under blobs/ */
        int orphans = 0;
        total_rows = check_raw_consistency(sdir, &orphans);
        total_orphans += orphans;
        assert_true(orphans <= 1); /* at most the one between rename and commit */

        /* reopening reconciles: no orphan file, no temp file left */
        kvs_store *s = open_ok(sdir);
        assert_int_equal(check_raw_consistency(sdir, &orphans), total_rows);
        assert_int_equal(orphans, 0);
        assert_int_equal(count_files(tdir), 0);
        kvs_store_close(s);
    }
    /* the children did publish something across the iterations */
    assert_true(total_rows > 0);
    (void)total_orphans;
}

/* A FIFO left in tmp/ (not ours, or a crashed tool's) must not hang the reconcile that runs
 * on open: opening it for reading without O_NONBLOCK waits for a writer forever. */
static void test_reconcile_tmp_fifo(void **state)
{
    const char *dir = *state;
    char sdir[512], fifo[1024];
    snprintf(sdir, sizeof sdir, "%s/store", dir);
    kvs_store_close(open_ok(sdir));
    snprintf(fifo, sizeof fifo, "%s/tmp/blob.fifo00", sdir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    alarm(20); /* a hang fails the test instead of stalling the suite */
    kvs_store *s = open_ok(sdir);
    alarm(0);
    kvs_store_close(s);
}

/* db.c's statement cache: a statement is handed out to one user at a time, comes back reset
 * with its bindings cleared, a full cache falls back to plain statements, and clearing it
 * finalizes what it holds (sqlite3_close then finds nothing left open). */
static void test_statement_cache(void **state)
{
    (void)state;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    char err[256];
    db_cache c;
    memset(&c, 0, sizeof c);
    static const char sql[] = "SELECT :x";
    db_stmt a, b;
    assert_int_equal(db_prepare_cached(&c, db, sql, &a, err, sizeof err), KVS_OK);
    assert_int_equal(db_prepare_cached(&c, db, sql, &b, err, sizeof err), KVS_OK);
    assert_ptr_not_equal(a.st, b.st); /* a is in use: b is another statement */
    db_bind_int64(&a, ":x", 41);
    int row = 0;
    assert_int_equal(db_step(&a, &row, err, sizeof err), KVS_OK);
    assert_int_equal(row, 1);
    assert_int_equal(sqlite3_column_int64(a.st, 0), 41);
    sqlite3_stmt *first = a.st;
    db_finalize(&a); /* mid-result: reset, not finalized */
    db_finalize(&b);
    assert_int_equal(db_prepare_cached(&c, db, sql, &a, err, sizeof err), KVS_OK);
    assert_ptr_equal(a.st, first);
    assert_int_equal(db_step(&a, &row, err, sizeof err), KVS_OK);
    assert_int_equal(row, 1);
    assert_int_equal(sqlite3_column_type(a.st, 0), SQLITE_NULL); /* bindings were cleared */
    db_finalize(&a);
    /* the same text from another buffer finds the cached statement too */
    char copy[sizeof sql];
    memcpy(copy, sql, sizeof sql);
    assert_int_equal(db_prepare_cached(&c, db, copy, &a, err, sizeof err), KVS_OK);
    assert_ptr_equal(a.st, first);
    db_finalize(&a);
    /* fill the cache, then one more: a plain statement, finalized by db_finalize */
    char text[DB_CACHE + 2][32];
    db_stmt q[DB_CACHE + 2];
    for (int i = 0; i < DB_CACHE + 2; i++) {
        snprintf(text[i], sizeof text[i], "SELECT %d", i);
        assert_int_equal(db_prepare_cached(&c, db, text[i], &q[i], err, sizeof err), KVS_OK);
    }
    assert_int_equal(c.n, DB_CACHE);
    assert_null(q[DB_CACHE + 1].cache);
    for (int i = 0; i < DB_CACHE + 2; i++) {
        assert_int_equal(db_step(&q[i], &row, err, sizeof err), KVS_OK);
        assert_int_equal(sqlite3_column_int(q[i].st, 0), i);
        db_finalize(&q[i]);
    }
    /* a statement that does not prepare is an error with the SQL, and nothing is cached */
    assert_int_equal(db_prepare_cached(&c, db, "SELEC nonsense", &a, err, sizeof err), KVS_ERR_DB);
    assert_non_null(strstr(err, "SELEC nonsense"));
    assert_int_equal(c.n, DB_CACHE);
    db_cache_clear(&c);
    assert_int_equal(c.n, 0);
    assert_null(sqlite3_next_stmt(db, NULL));
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_statement_cache),
        TU_TMPDIR_TEST(test_publish_own),
        TU_TMPDIR_TEST(test_publish_and_lookup),
        TU_TMPDIR_TEST(test_catalog_filters_and_pages),
        TU_TMPDIR_TEST(test_republish_is_noop),
        TU_TMPDIR_TEST(test_republish_after_expiry),
        TU_TMPDIR_TEST(test_reconcile_orphans),
        TU_TMPDIR_TEST(test_reconcile_tmp_fifo),
        TU_TMPDIR_TEST(test_gc_expired),
        TU_TMPDIR_TEST(test_purchases_and_tokens),
        TU_TMPDIR_TEST(test_budget_migration),
        TU_TMPDIR_TEST(test_listings_per_publisher),
        TU_TMPDIR_TEST(test_revocation_bites),
        TU_TMPDIR_TEST(test_listing_migration),
        TU_TMPDIR_TEST(test_prune),
        TU_TMPDIR_TEST(test_refund_after_inflight_revocation),
        TU_TMPDIR_TEST(test_publishers_and_log),
        TU_TMPDIR_TEST(test_schema_newer_refused),
        TU_TMPDIR_TEST(test_two_processes_publish),
        TU_TMPDIR_TEST(test_crash_leaves_no_partial_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
