/* test_fetch_origin.c: kvf_url_origin, which decides where a token may go: the same scheme, host
 * and port compare equal however they are spelled; anything else differs or is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "fetch/fetch.h"

static void test_origins(void **state)
{
    (void)state;
    static const struct {
        const char *url, *origin; /* origin NULL: refused */
    } cases[] = {
        {"https://shop.example/v1/blobs/ab", "https://shop.example:443"},
        {"HTTPS://Shop.Example:443/x?y#z", "https://shop.example:443"},
        {"https://shop.example:8443", "https://shop.example:8443"},
        {"http://shop.example/", "http://shop.example:80"},
        {"https://127.0.0.1:9/a", "https://127.0.0.1:9"},
        {"https://[::1]:8443/a", "https://[::1]:8443"},
        {"https://[::1]/a", "https://[::1]:443"},
        {"https://user:pw@shop.example:1/a", "https://shop.example:1"},
        {"https://evil.example@shop.example/", "https://shop.example:443"},
        {"https://shop.example?x=https://evil.example:1", "https://shop.example:443"},
        {"ftp://shop.example/", NULL},
        {"shop.example", NULL},
        {"https://", NULL},
        {"https:///path", NULL},
        {"https://shop.example:/x", NULL},
        {"https://shop.example:8a/x", NULL},
        {"https://shop.example:123456/x", NULL},
        {"https://[::1/x", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[256] = "unchanged";
        int rc = kvf_url_origin(cases[i].url, out, sizeof out);
        if (cases[i].origin) {
            if (rc != 0 || strcmp(out, cases[i].origin) != 0)
                fail_msg("%s: rc %d, origin '%s', want '%s'", cases[i].url, rc, out, cases[i].origin);
        } else if (rc != -1) {
            fail_msg("%s: accepted as '%s', want refused", cases[i].url, out);
        }
    }
    char small[16];
    assert_int_equal(kvf_url_origin("https://a-long-host.example/", small, sizeof small), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_origins)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
