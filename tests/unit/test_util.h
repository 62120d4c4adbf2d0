/* test_util.h: helpers any unit test may use (header-only, like engine_test_util.h): a fresh
 * temporary directory per test as a cmocka fixture, removing a tree, writing a whole file,
 * running code in a child process.
 * Include it after <cmocka.h>: the file helpers fail the running test with cmocka asserts. */
#ifndef KVPUB_TEST_UTIL_H
#define KVPUB_TEST_UTIL_H

#include <errno.h> /* program_invocation_short_name (_GNU_SOURCE) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* Runs child(fd, arg) in a forked process (it should end with _exit; returning exits 0),
 * collecting what it writes to fd into out (at most n - 1 bytes, NUL-terminated). Returns the
 * child's wait status. For what must not happen in the test's own process: a fatal signal, a
 * resource limit. */
static inline int tu_run_child(void (*child)(int fd, void *arg), void *arg, char *out, size_t n)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        child(fds[1], arg);
        _exit(0);
    }
    close(fds[1]);
    size_t have = 0;
    ssize_t r;
    while (have < n - 1 && (r = read(fds[0], out + have, n - 1 - have)) > 0)
        have += (size_t)r;
    out[have] = 0;
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

#endif
