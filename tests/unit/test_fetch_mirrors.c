/* test_fetch_mirrors.c: the pure parts of mirror support: the mirrors file grammar (comments,
 * blanks, trailing slashes, duplicates, the line a bad entry is on, the cap) and the split of a
 * blob's remaining sections into two halves for two sources at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "fetch/fetch_internal.h"

static void test_parse(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *want; /* the URLs joined by ' '; NULL = refused */
        const char *err;  /* part of the message when refused */
    } cases[] = {
        {"", "", NULL},
        {"# only a comment\n\n   \n", "", NULL},
        {"https://a.example\nhttps://b.example:8443/pre/\n", "https://a.example https://b.example:8443/pre", NULL},
        {"  https://a.example   # the first\r\n\thttps://b.example#frag-is-not-a-comment\n", NULL, "line 2"},
        {"https://a.example # note\nhttps://a.example/\n", "https://a.example", NULL},
        {"https://a.example\nhttp://b.example\n", NULL, "line 2"},
        {"https://a.example\n\n# x\nftp://c.example\n", NULL, "line 4"},
        {"https://a.example/?q=1\n", NULL, "line 1"},
        {"https://\n", NULL, "line 1"},
        {"https://a.example", "https://a.example", NULL}, /* no final newline */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kvf_mirror_list l = {0};
        char err[256] = "", got[1024] = "";
        kvf_status st = kvf_mirrors_parse(&l, cases[i].text, strlen(cases[i].text), 0, err, sizeof err);
        for (int k = 0; k < l.n; k++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s", k ? " " : "", l.url[k]);
        if (cases[i].want) {
            if (st != KVF_OK || strcmp(got, cases[i].want) != 0)
                fail_msg("case %zu: status %d (%s), got '%s', want '%s'", i, st, err, got, cases[i].want);
        } else if (st != KVF_ERR_USAGE || !strstr(err, cases[i].err)) {
            fail_msg("case %zu: status %d, message '%s', want refused with '%s'", i, st, err, cases[i].err);
        }
        kvf_mirrors_clear(&l);
    }
    /* http:// only when asked for; the cap */
    kvf_mirror_list l = {0};
    assert_int_equal(kvf_mirrors_add(&l, "http://a.example", 1, NULL, 0), KVF_OK);
    char url[64];
    for (int k = 1; k < KVF_MIRRORS_MAX; k++) {
        snprintf(url, sizeof url, "https://m%d.example", k);
        assert_int_equal(kvf_mirrors_add(&l, url, 0, NULL, 0), KVF_OK);
    }
    assert_int_equal(kvf_mirrors_add(&l, "https://m1.example/", 0, NULL, 0), KVF_OK); /* a duplicate */
    char err[128];
    assert_int_equal(kvf_mirrors_add(&l, "https://one-more.example", 0, err, sizeof err), KVF_ERR_USAGE);
    assert_non_null(strstr(err, "more than"));
    assert_int_equal(l.n, KVF_MIRRORS_MAX);
    kvf_mirrors_clear(&l);
    assert_int_equal(l.n, 0);
}

static void test_split(void **state)
{
    (void)state;
    static const struct {
        uint64_t ends[8];
        uint32_t first, n;
        uint64_t from;
        uint32_t want;
    } cases[] = {
        /* equal sections: the middle */
        {{100, 200, 300, 400, 500}, 1, 5, 100, 3},
        {{100, 200, 300, 400}, 1, 4, 100, 2},  /* 3 sections, both cuts as near: the first */
        {{100, 200, 300}, 1, 3, 100, 2},       /* two sections: one each */
        {{100, 200}, 1, 2, 100, 1},            /* one section: no split */
        {{100, 200, 300}, 3, 3, 300, 3},       /* none left */
        /* one big section first: it alone is a half */
        {{10, 1000, 1010, 1020, 1030, 1040}, 1, 6, 10, 2},
        /* a big section last: everything before it is one run */
        {{10, 20, 30, 40, 1040}, 1, 5, 10, 4},
        /* resumed in the middle */
        {{100, 200, 300, 400, 500, 600, 700}, 3, 7, 300, 5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint32_t k = kvf_split_half(cases[i].ends, cases[i].first, cases[i].n, cases[i].from);
        if (k != cases[i].want)
            fail_msg("case %zu: split at %u, want %u", i, k, cases[i].want);
        if (cases[i].n >= cases[i].first + 2 && !(k > cases[i].first && k < cases[i].n))
            fail_msg("case %zu: a run is empty (%u)", i, k);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_parse), cmocka_unit_test(test_split)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
