/* test_fetch_cache.c: the local blob cache (fetch/cache.c, in libfetch.a): directory
 * choice from the environment, insert/lookup by id, URL -> id memory, LRU eviction
 * by access time under the cap (never the blob just added), and kvf_url_blob_id. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <dirent.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <limits.h>

#include "crypto/kvcrypto.h"
#include "fetch/fetch.h"
#include "tests/unit/test_util.h"

static void put_file(const char *path, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        fputc((int)(i & 0xff), f);
    assert_int_equal(fclose(f), 0);
}

static void test_cache_lru(void **state)
{
    char dir[] = "/tmp/kvpub-test-cache-XXXXXX", err[256], path[PATH_MAX], src[PATH_MAX];
    assert_non_null(mkdtemp(dir));
    char cdir[PATH_MAX];
    snprintf(cdir, sizeof cdir, "%s/c", dir);
    kvf_cache *c = NULL;
    assert_int_equal(kvf_cache_open(cdir, 2500, &c, err, sizeof err), KVF_OK);
    struct stat sb;
    assert_int_equal(stat(cdir, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    assert_int_equal(kvf_cache_max(c), 2500);

    uint8_t id[4][32];
    for (int i = 0; i < 4; i++) {
        memset(id[i], 0x11 * (i + 1), 32);
        snprintf(src, sizeof src, "%s/c/tmp/in%d", dir, i);
        put_file(src, 1000);
        assert_int_equal(kvf_cache_lookup(c, id[i], NULL, 0), 0);
        assert_int_equal(kvf_cache_insert(c, src, id[i], path, sizeof path, err, sizeof err), KVF_OK);
        assert_int_equal(kvf_cache_lookup(c, id[i], NULL, 0), 1);
        char hex[65];
        assert_non_null(strstr(path, kvc_hex(id[i], 32, hex)));
        if (i == 1) {
            /* use blob 0 again: blob 1 becomes the least recently used */
            usleep(20000);
            assert_int_equal(kvf_cache_lookup(c, id[0], NULL, 0), 1);
            usleep(20000);
        }
    }
    /* cap 2500 holds two 1000-byte blobs: inserting 2 evicted 1 (LRU), inserting 3 evicted 0 */
    assert_int_equal(kvf_cache_lookup(c, id[1], NULL, 0), 0);
    assert_int_equal(kvf_cache_lookup(c, id[0], NULL, 0), 0);
    assert_int_equal(kvf_cache_lookup(c, id[2], NULL, 0), 1);
    assert_int_equal(kvf_cache_lookup(c, id[3], NULL, 0), 1);
    kvf_cache_free(c);

    /* a blob larger than the cap is kept (it was just asked for) */
    assert_int_equal(kvf_cache_open(cdir, 500, &c, err, sizeof err), KVF_OK);
    assert_int_equal(kvf_cache_evict(c, id[3]), 1);
    assert_int_equal(kvf_cache_lookup(c, id[3], NULL, 0), 1);

    /* URL memory, with the validators the URL's answer carried */
    kvf_url_rec rec = {0}, got;
    assert_int_equal(kvf_cache_url_get(c, "https://x/blob", &got), 0);
    memcpy(rec.id, id[2], 32);
    snprintf(rec.etag, sizeof rec.etag, "\"5f3-1a2b\"");
    snprintf(rec.last_modified, sizeof rec.last_modified, "Sat, 05 Dec 2026 17:00:00 GMT");
    kvf_cache_url_put(c, "https://x/blob", &rec);
    assert_int_equal(kvf_cache_url_get(c, "https://x/blob", &got), 1);
    assert_memory_equal(got.id, id[2], 32);
    assert_string_equal(got.etag, "\"5f3-1a2b\"");
    assert_string_equal(got.last_modified, "Sat, 05 Dec 2026 17:00:00 GMT");
    assert_int_equal(kvf_cache_url_get(c, "https://x/blob2", &got), 0);
    /* a validator that could inject a header line is not kept; the id still is */
    snprintf(rec.etag, sizeof rec.etag, "\"a\"\r\nX-Evil: 1");
    rec.last_modified[0] = 0;
    kvf_cache_url_put(c, "https://x/blob3", &rec);
    assert_int_equal(kvf_cache_url_get(c, "https://x/blob3", &got), 1);
    assert_memory_equal(got.id, id[2], 32);
    assert_string_equal(got.etag, "");
    assert_string_equal(got.last_modified, "");
    /* the longest validators kept come back whole; records are written whole (base_replace),
     * leaving nothing else in urls/ */
    memset(rec.etag, 'e', KVF_VALIDATOR_MAX);
    rec.etag[KVF_VALIDATOR_MAX] = 0;
    memset(rec.last_modified, 'm', KVF_VALIDATOR_MAX);
    rec.last_modified[KVF_VALIDATOR_MAX] = 0;
    kvf_cache_url_put(c, "https://x/long", &rec);
    assert_int_equal(kvf_cache_url_get(c, "https://x/long", &got), 1);
    assert_string_equal(got.etag, rec.etag);
    assert_string_equal(got.last_modified, rec.last_modified);
    {
        char ud[PATH_MAX];
        snprintf(ud, sizeof ud, "%s/urls", kvf_cache_dir(c));
        DIR *d = opendir(ud);
        assert_non_null(d);
        int names = 0;
        for (struct dirent *e; (e = readdir(d)) != NULL;)
            names += e->d_name[0] != '.';
        closedir(d);
        assert_int_equal(names, 3); /* blob, blob3, long */
    }
    /* a record written before validators existed (one line) reads as having none */
    {
        uint8_t uh[32];
        char hex[65], rp[PATH_MAX];
        const char *u = "https://x/old";
        kvc_sha256(u, strlen(u), uh);
        snprintf(rp, sizeof rp, "%s/urls/%s", kvf_cache_dir(c), kvc_hex(uh, 32, hex));
        FILE *f = fopen(rp, "w");
        assert_non_null(f);
        fprintf(f, "%s\n", kvc_hex(id[3], 32, hex));
        fclose(f);
        assert_int_equal(kvf_cache_url_get(c, u, &got), 1);
        assert_memory_equal(got.id, id[3], 32);
        assert_string_equal(got.etag, "");
    }
    kvf_cache_free(c);

    /* directory from the environment */
    setenv("KVPUB_CACHE_DIR", "", 1);
    setenv("XDG_CACHE_HOME", dir, 1);
    setenv("KVPUB_CACHE_MAX", "1M", 1);
    assert_int_equal(kvf_cache_open(NULL, 0, &c, err, sizeof err), KVF_OK);
    snprintf(path, sizeof path, "%s/kvpub/blobs", dir);
    assert_string_equal(kvf_cache_dir(c), path);
    assert_int_equal(kvf_cache_max(c), 1 << 20);
    kvf_cache_free(c);
    setenv("KVPUB_CACHE_MAX", "lots", 1);
    assert_int_equal(kvf_cache_open(NULL, 0, &c, err, sizeof err), KVF_ERR_USAGE);
    assert_non_null(strstr(err, "KVPUB_CACHE_MAX"));
    unsetenv("KVPUB_CACHE_MAX");

    assert_int_equal(tu_rm_rf(dir), 0);
}

/* A blob's decoded copy counts with it toward the cap and goes with it; a copy whose blob is
 * gone is evicted on its own, one abandoned while written after ten minutes; the blob kept is
 * kept with its copy; kvf_cache_remove takes both. */
static void test_cache_decoded_copies(void **state)
{
    (void)state;
    char dir[] = "/tmp/kvpub-test-cache-XXXXXX", err[256], path[PATH_MAX], src[PATH_MAX], copy[PATH_MAX + 16];
    assert_non_null(mkdtemp(dir));
    kvf_cache *c = NULL;
    assert_int_equal(kvf_cache_open(dir, 10000, &c, err, sizeof err), KVF_OK);
    uint8_t id[3][32];
    char hex[65];
    for (int i = 0; i < 3; i++) {
        memset(id[i], 0x21 * (i + 1), 32);
        snprintf(src, sizeof src, "%s/tmp/in%d", dir, i);
        put_file(src, 1000);
        assert_int_equal(kvf_cache_insert(c, src, id[i], path, sizeof path, err, sizeof err), KVF_OK);
        snprintf(copy, sizeof copy, "%s" KVB_DECODED_SUFFIX, path);
        put_file(copy, 2000);
        usleep(20000);
    }
    /* an orphan copy (its blob gone), the oldest of all */
    snprintf(copy, sizeof copy, "%s/%s" KVB_DECODED_SUFFIX, dir, kvc_hex((uint8_t[32]){0x77}, 32, hex));
    put_file(copy, 500);
    struct timespec old[2] = {{1000, 0}, {1000, 0}};
    assert_int_equal(utimensat(AT_FDCWD, copy, old, 0), 0);
    /* a copy a killed kvfetch left half-written goes after ten minutes; a fresh one stays */
    char stale[PATH_MAX + 32], fresh[PATH_MAX + 32];
    snprintf(stale, sizeof stale, "%s" KVB_DECODED_SUFFIX ".tmp.AbC123", path);
    snprintf(fresh, sizeof fresh, "%s" KVB_DECODED_SUFFIX ".tmp.XyZ789", path);
    put_file(stale, 100);
    put_file(fresh, 100);
    struct timespec ago[2] = {{0, UTIME_OMIT}, {time(NULL) - 601, 0}};
    assert_int_equal(utimensat(AT_FDCWD, stale, ago, 0), 0);
    /* 9500 bytes fit 10000 */
    assert_int_equal(kvf_cache_evict(c, NULL), 0);
    assert_int_equal(access(stale, F_OK), -1);
    assert_int_equal(access(fresh, F_OK), 0);
    unlink(fresh);
    kvf_cache_free(c);
    /* cap 6000: the orphan goes first (500), then blob 0 with its copy (3000): 6000 left */
    assert_int_equal(kvf_cache_open(dir, 6000, &c, err, sizeof err), KVF_OK);
    assert_int_equal(kvf_cache_evict(c, id[2]), 2);
    assert_int_equal(access(copy, F_OK), -1);
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, kvc_hex(id[i], 32, hex));
        snprintf(copy, sizeof copy, "%s" KVB_DECODED_SUFFIX, path);
        assert_int_equal(access(path, F_OK) == 0, i > 0);
        assert_int_equal(access(copy, F_OK) == 0, i > 0);
    }
    kvf_cache_free(c);
    /* cap 100: only the blob kept (with its copy) stays, even over the cap */
    assert_int_equal(kvf_cache_open(dir, 100, &c, err, sizeof err), KVF_OK);
    assert_int_equal(kvf_cache_evict(c, id[2]), 1);
    snprintf(path, sizeof path, "%s/%s", dir, kvc_hex(id[2], 32, hex));
    snprintf(copy, sizeof copy, "%s" KVB_DECODED_SUFFIX, path);
    assert_int_equal(access(path, F_OK), 0);
    assert_int_equal(access(copy, F_OK), 0);
    kvf_cache_remove(c, id[2]);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(access(copy, F_OK), -1);
    kvf_cache_free(c);
    assert_int_equal(tu_rm_rf(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_lru),
        cmocka_unit_test(test_cache_decoded_copies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
