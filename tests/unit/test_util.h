/* test_util.h: helpers any unit test may use (header-only, like engine_test_util.h): a fresh
 * temporary directory per test as a cmocka fixture, removing a tree, writing a whole file.
 * Include it after <cmocka.h>: the file helpers fail the running test with cmocka asserts. */
#ifndef KVPUB_TEST_UTIL_H
#define KVPUB_TEST_UTIL_H

#include <errno.h> /* program_invocation_short_name (_GNU_SOURCE) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Removes DIR and everything under it. Returns 0 on success, -1 otherwise. */
static inline int tu_rm_rf(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* cmocka setup: *state becomes a new empty directory /tmp/kvpub-<test program>-XXXXXX (a
 * malloc'd path), so a directory left behind by a failed run names its test. */
static inline int tu_tmpdir_setup(void **state)
{
    char *d = malloc(256);
    if (!d)
        return -1;
    snprintf(d, 256, "/tmp/kvpub-%s-XXXXXX", program_invocation_short_name);
    if (!mkdtemp(d)) {
        free(d);
        return -1;
    }
    *state = d;
    return 0;
}

/* cmocka teardown for tu_tmpdir_setup: removes the directory with its files, frees the path. */
static inline int tu_tmpdir_teardown(void **state)
{
    int rc = tu_rm_rf(*state);
    free(*state);
    return rc;
}

/* Registers test f to run in its own fresh directory, which f finds in *state. */
#define TU_TMPDIR_TEST(f) cmocka_unit_test_setup_teardown(f, tu_tmpdir_setup, tu_tmpdir_teardown)

/* Creates or replaces PATH with LEN bytes of DATA; any failure fails the test. */
static inline void tu_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

#endif
