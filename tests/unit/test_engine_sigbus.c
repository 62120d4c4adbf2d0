/* test_engine_sigbus.c: eng_exit_on_sigbus turns the SIGBUS of a mapped file truncated under
 * us (what a model or blob shrinking mid-run gives) into a one-line error and exit status 2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "engine/engine.h"
#include "tests/unit/test_util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static void child(int errfd, void *arg)
{
    (void)arg;
    dup2(errfd, STDERR_FILENO);
    eng_exit_on_sigbus("sigbus-test");
    char path[] = "/tmp/kvpub-sigbus-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || ftruncate(fd, 2 * 4096) != 0)
        _exit(10);
    unlink(path);
    volatile const uint8_t *p = mmap(NULL, 2 * 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
        _exit(11);
    if (p[4096] != 0) /* readable while the file is long enough */
        _exit(12);
    if (ftruncate(fd, 0) != 0)
        _exit(13);
    (void)p[4096]; /* now past the end of the file: SIGBUS */
    _exit(14);
}

static void test_sigbus_exits_2(void **state)
{
    (void)state;
    char buf[512];
    int status = tu_run_child(child, NULL, buf, sizeof buf);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 2);
    assert_string_equal(buf, "sigbus-test: a file mapped into memory (model or blob) was truncated or became "
                             "unreadable while in use\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigbus_exits_2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
