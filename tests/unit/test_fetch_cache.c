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
#include <string.h>
#include <sys/stat.h>
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

    /* URL memory */
    uint8_t got[32];
    assert_int_equal(kvf_cache_url_get(c, "https://x/blob", got), 0);
    kvf_cache_url_put(c, "https://x/blob", id[2]);
    assert_int_equal(kvf_cache_url_get(c, "https://x/blob", got), 1);
    assert_memory_equal(got, id[2], 32);
    assert_int_equal(kvf_cache_url_get(c, "https://x/blob2", got), 0);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_lru),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
