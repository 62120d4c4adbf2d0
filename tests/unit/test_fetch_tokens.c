/* test_fetch_tokens.c: the buyer's token file (fetch/tokens.c): tokens found only for the origin
 * and blob they were bought for, a new purchase replacing the old one, expired entries dropped,
 * directories 0700 and the file 0600, a file others may read or that is not a token file
 * refused, and the default path under $XDG_CONFIG_HOME or $HOME. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "fetch/fetch.h"
#include "test_util.h"

#define NOW 1700000000

static kvf_token_rec rec(const char *origin, uint8_t blob_byte, char tok_char, int64_t expires)
{
    kvf_token_rec r = {0};
    snprintf(r.origin, sizeof r.origin, "%s", origin);
    memset(r.blob, blob_byte, sizeof r.blob);
    memset(r.token, tok_char, 64);
    r.expires = expires;
    r.purchase = tok_char;
    return r;
}

static int mode_of(const char *path)
{
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return (int)(sb.st_mode & 07777);
}

static void test_put_find(void **state)
{
    char path[600], dir[512], err[512];
    snprintf(dir, sizeof dir, "%s/cfg/kvpub", (char *)*state);
    snprintf(path, sizeof path, "%s/tokens.json", dir);
    kvf_token_rec a = rec("https://shop.example:443", 1, 'a', NOW + 100), out;
    kvf_token_rec b = rec("https://other.example:8443", 1, 'b', NOW + 100);
    int found = 7;
    assert_int_equal(kvf_tokens_find(path, "https://shop.example", a.blob, &out, &found, err, sizeof err), KVF_OK);
    assert_int_equal(found, 0); /* no file yet */
    assert_int_equal(kvf_tokens_put(path, &a, NOW, err, sizeof err), KVF_OK);
    assert_int_equal(kvf_tokens_put(path, &b, NOW, err, sizeof err), KVF_OK);
    assert_int_equal(mode_of(dir), 0700);
    assert_int_equal(mode_of(path), 0600);

    /* any URL of the origin finds it; another origin, port or blob does not */
    assert_int_equal(kvf_tokens_find(path, "https://SHOP.example/v1/blobs/x", a.blob, &out, &found, err, sizeof err),
                     KVF_OK);
    assert_int_equal(found, 1);
    assert_string_equal(out.token, a.token);
    assert_int_equal(out.expires, NOW + 100);
    static const char *const others[] = {"https://shop.example:8443", "http://shop.example", "https://evil.example"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        assert_int_equal(kvf_tokens_find(path, others[i], a.blob, &out, &found, err, sizeof err), KVF_OK);
        assert_int_equal(found, 0);
    }
    uint8_t blob2[32];
    memset(blob2, 2, sizeof blob2);
    assert_int_equal(kvf_tokens_find(path, "https://shop.example", blob2, &out, &found, err, sizeof err), KVF_OK);
    assert_int_equal(found, 0);

    /* a new purchase replaces the old; expired entries leave at the next put */
    kvf_token_rec a2 = rec("https://shop.example:443", 1, 'c', NOW + 200);
    assert_int_equal(kvf_tokens_put(path, &a2, NOW, err, sizeof err), KVF_OK);
    assert_int_equal(kvf_tokens_find(path, "https://shop.example", a.blob, &out, &found, err, sizeof err), KVF_OK);
    assert_string_equal(out.token, a2.token);
    kvf_token_rec c = rec("https://third.example:443", 3, 'd', NOW + 1000);
    assert_int_equal(kvf_tokens_put(path, &c, NOW + 150, err, sizeof err), KVF_OK);
    assert_int_equal(kvf_tokens_find(path, "https://other.example:8443", b.blob, &out, &found, err, sizeof err),
                     KVF_OK);
    assert_int_equal(found, 0); /* b expired at NOW + 100 */
    assert_int_equal(kvf_tokens_find(path, "https://shop.example", a.blob, &out, &found, err, sizeof err), KVF_OK);
    assert_int_equal(found, 1); /* a2 lives until NOW + 200 */
    assert_int_equal(mode_of(path), 0600);
}

static void test_refused(void **state)
{
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/tokens.json", (char *)*state);
    kvf_token_rec a = rec("https://shop.example:443", 1, 'a', NOW + 100), out;
    int found;
    assert_int_equal(kvf_tokens_put(path, &a, NOW, err, sizeof err), KVF_OK);
    assert_int_equal(chmod(path, 0640), 0);
    assert_int_equal(kvf_tokens_find(path, "https://shop.example", a.blob, &out, &found, err, sizeof err),
                     KVF_ERR_IO);
    assert_non_null(strstr(err, "readable by others"));
    assert_non_null(strstr(err, "chmod 600"));
    assert_int_equal(kvf_tokens_put(path, &a, NOW, err, sizeof err), KVF_ERR_IO);
    assert_int_equal(mode_of(path), 0640); /* not silently rewritten */

    static const char *const bad[] = {"not json", "{\"version\": 2, \"tokens\": []}", "{\"tokens\": {}}",
                                      "{\"version\": 1, \"tokens\": [], \"tokens\": []}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tu_write_file(path, bad[i], strlen(bad[i]));
        assert_int_equal(chmod(path, 0600), 0);
        assert_int_equal(kvf_tokens_find(path, "https://shop.example", a.blob, &out, &found, err, sizeof err),
                         KVF_ERR_IO);
        assert_non_null(strstr(err, "not a kvpub token file"));
    }
    assert_int_equal(kvf_tokens_find(path, "ftp://x", a.blob, &out, &found, err, sizeof err), KVF_ERR_USAGE);
}

static void test_default_path(void **state)
{
    (void)state;
    char path[512], err[256];
    setenv("XDG_CONFIG_HOME", "/x/cfg", 1);
    setenv("HOME", "/home/u", 1);
    assert_int_equal(kvf_tokens_default_path(path, sizeof path, err, sizeof err), KVF_OK);
    assert_string_equal(path, "/x/cfg/kvpub/tokens.json");
    setenv("XDG_CONFIG_HOME", "relative", 1); /* the XDG spec says to ignore a relative one */
    assert_int_equal(kvf_tokens_default_path(path, sizeof path, err, sizeof err), KVF_OK);
    assert_string_equal(path, "/home/u/.config/kvpub/tokens.json");
    unsetenv("XDG_CONFIG_HOME");
    unsetenv("HOME");
    assert_int_equal(kvf_tokens_default_path(path, sizeof path, err, sizeof err), KVF_ERR_USAGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TU_TMPDIR_TEST(test_put_find),
        TU_TMPDIR_TEST(test_refused),
        cmocka_unit_test(test_default_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
