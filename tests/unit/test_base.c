/* test_base.c: base/'s one grammar for counts, sizes and durations (accepted forms, units,
 * overflow at the edge, junk, empty, NULL), the error formatter's NULL/zero-length buffers,
 * the f16 conversions' rounding, the tools' cache directory from the environment, and files
 * replaced whole (base_replace, base_write_f32_le): the old file or all of the new one, never
 * half, and no temporary file left after a failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/base.h"

typedef int (*parse_fn)(const char *s, uint64_t *out);

typedef struct parse_case {
    const char *s;
    int ok; /* 0 or -1 */
    uint64_t v;
} parse_case;

static void check_cases(const char *name, parse_fn fn, const parse_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 12345;
        int rc = fn(cases[i].s, &v);
        if (rc != cases[i].ok)
            fail_msg("%s('%s'): rc %d, want %d", name, cases[i].s, rc, cases[i].ok);
        if (rc == 0 && v != cases[i].v)
            fail_msg("%s('%s'): %llu, want %llu", name, cases[i].s, (unsigned long long)v,
                     (unsigned long long)cases[i].v);
        if (rc != 0 && v != 12345)
            fail_msg("%s('%s'): failed but wrote %llu", name, cases[i].s, (unsigned long long)v);
    }
    uint64_t v;
    assert_int_equal(fn(NULL, &v), -1);
}

#define CHECK(fn, cases) check_cases(#fn, fn, cases, sizeof cases / sizeof cases[0])

static void test_parse_u64(void **state)
{
    static const parse_case cases[] = {
        {"0", 0, 0}, {"7", 0, 7}, {"007", 0, 7}, {"1048576", 0, 1048576},
        {"18446744073709551615", 0, UINT64_MAX},
        {"18446744073709551616", -1, 0}, {"99999999999999999999", -1, 0},
        {"", -1, 0}, {"-1", -1, 0}, {"+1", -1, 0}, {" 1", -1, 0}, {"1 ", -1, 0}, {"0x10", -1, 0},
        {"1.5", -1, 0}, {"1k", -1, 0}, {"12X", -1, 0}, {"x", -1, 0},
    };
    CHECK(base_parse_u64, cases);
}

static void test_parse_size(void **state)
{
    static const parse_case cases[] = {
        {"0", 0, 0}, {"1048576", 0, 1048576}, {"512M", 0, 512ull << 20}, {"10G", 0, 10ull << 30},
        {"3k", 0, 3072}, {"3K", 0, 3072}, {"2T", 0, 2ull << 40}, {"2t", 0, 2ull << 40},
        {"1GB", 0, 1ull << 30}, {"1Gi", 0, 1ull << 30}, {"1gb", 0, 1ull << 30}, {"0K", 0, 0},
        {"16777215T", 0, 16777215ull << 40}, {"18446744073709551615", 0, UINT64_MAX},
        {"16777216T", -1, 0}, {"20000000T", -1, 0}, {"18014398509481984K", -1, 0},
        {"99999999999999999999", -1, 0},
        {"", -1, 0}, {"-1", -1, 0}, {"12X", -1, 0}, {"G", -1, 0}, {"1GBB", -1, 0}, {"1GiB", -1, 0},
        {"1B", -1, 0}, {"1P", -1, 0}, {"1 G", -1, 0}, {"1G ", -1, 0}, {"1.5G", -1, 0}, {"1s", -1, 0},
    };
    CHECK(base_parse_size, cases);
}

static void test_parse_ids(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint32_t max;
        int rc;
        size_t n;
        int32_t ids[3];
    } cases[] = {
        {"7", 8, 0, 1, {7}}, {"0,151643,2", 151644, 0, 3, {0, 151643, 2}},
        {"2147483647", 0xffffffffu, 0, 1, {2147483647}},
        {"8", 8, -1, 0, {0}}, {"2147483648", 0xffffffffu, -1, 0, {0}}, {"", 8, -1, 0, {0}},
        {"1,", 8, -1, 0, {0}}, {",1", 8, -1, 0, {0}}, {"1,,2", 8, -1, 0, {0}}, {"-1", 8, -1, 0, {0}},
        {"1 ,2", 8, -1, 0, {0}}, {"1;2", 8, -1, 0, {0}}, {"99999999999999999999", 0xffffffffu, -1, 0, {0}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        int rc = base_parse_ids(cases[i].s, cases[i].max, &ids, &n);
        if (rc != cases[i].rc)
            fail_msg("base_parse_ids(\"%s\", %u) = %d, want %d", cases[i].s, cases[i].max, rc, cases[i].rc);
        if (rc == 0) {
            assert_int_equal(n, cases[i].n);
            assert_memory_equal(ids, cases[i].ids, n * sizeof *ids);
        }
        free(ids);
    }
}

static void test_parse_duration(void **state)
{
    static const parse_case cases[] = {
        {"0", 0, 0}, {"90", 0, 90}, {"90s", 0, 90}, {"30m", 0, 1800}, {"12h", 0, 43200},
        {"30d", 0, 2592000}, {"2w", 0, 1209600},
        {"30500568904943w", 0, 30500568904943ull * 604800},
        {"30500568904944w", -1, 0}, {"99999999999999999999", -1, 0},
        {"", -1, 0}, {"d", -1, 0}, {"-1d", -1, 0}, {"1D", -1, 0}, {"1y", -1, 0}, {"1dd", -1, 0},
        {"1ds", -1, 0}, {"1 d", -1, 0}, {"1.5h", -1, 0}, {"1K", -1, 0},
    };
    CHECK(base_parse_duration, cases);
}

static void test_errf(void **state)
{
    char buf[8];
    memset(buf, 'Z', sizeof buf);
    base_errf(buf, sizeof buf, "%s=%d", "abcdef", 42);
    assert_string_equal(buf, "abcdef=");
    base_errf(NULL, 100, "ignored %d", 1);
    memset(buf, 'Z', sizeof buf);
    base_errf(buf, 0, "ignored %d", 1);
    assert_int_equal(buf[0], 'Z');
    assert_int_equal(base_fail(7, buf, sizeof buf, "x%d", 1), 7);
    assert_string_equal(buf, "x1");
}

static void test_f16(void **state)
{
    assert_int_equal(base_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(base_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(base_f32_to_f16(65520.0f), 0x7c00);               /* rounds to inf */
    assert_int_equal(base_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);        /* tie to even: down */
    assert_int_equal(base_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);    /* tie to even: up */
    assert_int_equal(base_f32_to_f16(0x1p-25f), 0x0000);               /* tie to even zero */
    assert_int_equal(base_f32_to_f16(-0x1p-24f), 0x8001);              /* smallest subnormal */
    assert_int_equal(base_f32_to_f16(NAN) & 0x7e00, 0x7e00);          /* quiet NaN */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
            continue; /* NaNs come back quieted */
        assert_int_equal(base_f32_to_f16(base_f16_to_f32((uint16_t)h)), h);
    }
    assert_true(base_bf16_to_f32(base_f32_to_bf16(1.5f)) == 1.5f);
}

static void test_cache_dir(void **state)
{
    char buf[64];
    setenv("HOME", "/h", 1);
    setenv("XDG_CACHE_HOME", "", 1);
    unsetenv("KVPUB_CACHE_DIR");
    assert_string_equal(base_cache_dir("blobs", buf, sizeof buf), "/h/.cache/kvpub/blobs");
    assert_string_equal(base_cache_dir(NULL, buf, sizeof buf), "/h/.cache/kvpub");
    setenv("XDG_CACHE_HOME", "/x", 1);
    assert_string_equal(base_cache_dir("blobs", buf, sizeof buf), "/x/kvpub/blobs");
    assert_string_equal(base_cache_dir(NULL, buf, sizeof buf), "/x/kvpub");
    setenv("KVPUB_CACHE_DIR", "/k", 1);
    assert_string_equal(base_cache_dir("blobs", buf, sizeof buf), "/k");
    assert_string_equal(base_cache_dir(NULL, buf, sizeof buf), "/k");
    assert_null(base_cache_dir(NULL, buf, 2));
    assert_int_equal(errno, ENAMETOOLONG);
    unsetenv("KVPUB_CACHE_DIR");
    unsetenv("XDG_CACHE_HOME");
    unsetenv("HOME");
    assert_null(base_cache_dir(NULL, buf, sizeof buf));
    assert_int_equal(errno, ENOENT);
}

static void test_grow(void **state)
{
    int32_t *a = NULL;
    size_t cap = 0;
    for (size_t n = 0; n < 100; n++) {
        assert_true(base_grow(&a, &cap, n, sizeof *a, 4));
        assert_true(cap > n);
        a[n] = (int32_t)n;
    }
    assert_int_equal(cap, 128); /* 4, 8, ..., 128: doubling from first */
    for (size_t n = 0; n < 100; n++)
        assert_int_equal(a[n], (int32_t)n);
    int32_t *kept = a;
    assert_true(base_grow(&a, &cap, 50, sizeof *a, 4)); /* room left: nothing moves */
    assert_ptr_equal(a, kept);
    size_t huge = SIZE_MAX / 2 + 1;
    assert_false(base_grow(&a, &huge, huge, sizeof *a, 4)); /* 2 * huge overflows */
    assert_ptr_equal(a, kept);
    size_t big = SIZE_MAX / 4;
    assert_false(base_grow(&a, &big, big, sizeof *a, 4)); /* elements * size overflows */
    assert_ptr_equal(a, kept);
    free(a);
}

/* ---- files replaced whole ---- */

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *b = base_read_stream(f, 1 << 24, len);
    fclose(f);
    return b;
}

static void expect_file(const char *path, const char *want)
{
    size_t n = 0;
    char *b = slurp(path, &n);
    if (!b)
        fail_msg("%s: %s", path, strerror(errno));
    if (n != strlen(want) || memcmp(b, want, n) != 0)
        fail_msg("%s holds '%.*s', want '%s'", path, (int)n, b, want);
    free(b);
}

static int entries(const char *dir) /* names in dir besides . and .. */
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void put_old(const char *path)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("old", f);
    assert_int_equal(fclose(f), 0);
}

static void test_replace(void **state)
{
    (void)state;
    char dir[] = "/tmp/kvpub-replace-XXXXXX", path[PATH_MAX], sub[PATH_MAX];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/out", dir);
    put_old(path);

    /* until the commit, the old file is what a reader sees */
    base_replace r;
    assert_int_equal(base_replace_open(&r, path), 0);
    assert_int_equal(base_write_all(r.fd, "new content", 11), 0);
    expect_file(path, "old");
    assert_int_equal(entries(dir), 2);
    assert_int_equal(base_replace_commit(&r), 0);
    expect_file(path, "new content");
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    assert_int_equal(entries(dir), 1);

    /* abort: nothing changes, nothing is left */
    assert_int_equal(base_replace_open(&r, path), 0);
    assert_int_equal(base_write_all(r.fd, "half", 4), 0);
    base_replace_abort(&r);
    base_replace_abort(&r); /* twice is harmless */
    expect_file(path, "new content");
    assert_int_equal(entries(dir), 1);

    /* a commit that cannot rename (path is a directory by then) removes its file */
    snprintf(sub, sizeof sub, "%s/sub", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(base_replace_open(&r, sub), 0);
    assert_int_equal(base_write_all(r.fd, "x", 1), 0);
    assert_int_equal(base_replace_commit(&r), -1);
    assert_int_equal(errno, EISDIR);
    assert_int_equal(entries(dir), 2);
    assert_int_equal(rmdir(sub), 0);

    /* where no file can be made: the error, and nothing made */
    snprintf(sub, sizeof sub, "%s/no/such/dir/out", dir);
    assert_int_equal(base_replace_open(&r, sub), -1);
    assert_int_equal(errno, ENOENT);
    base_replace_abort(&r);
    char *lng = malloc(PATH_MAX + 2);
    assert_non_null(lng);
    memset(lng, 'a', PATH_MAX + 1);
    lng[PATH_MAX + 1] = 0;
    assert_int_equal(base_replace_open(&r, lng), -1);
    assert_int_equal(errno, ENAMETOOLONG);
    free(lng);

    /* base_write_f32_le: 3000 floats (several of its 4 KiB buffers and a partial one), as
     * little-endian bytes written out here one by one */
    float x[3000];
    unsigned char want[sizeof x];
    for (int i = 0; i < 3000; i++) {
        x[i] = (float)i * -0.37f + 1e-3f * (float)(i % 7);
        uint32_t u;
        memcpy(&u, &x[i], 4);
        for (int b = 0; b < 4; b++)
            want[4 * i + b] = (unsigned char)(u >> (8 * b));
    }
    assert_int_equal(base_write_f32_le(path, x, 3000), 0);
    size_t n = 0;
    char *got = slurp(path, &n);
    assert_non_null(got);
    assert_int_equal(n, sizeof want);
    assert_memory_equal(got, want, sizeof want);
    free(got);

    /* out of room half way (a 4 KiB file size limit, as a full disk fails a write): the old
     * file stays whole and no temporary file is left */
    put_old(path);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {4096, 4096};
        setrlimit(RLIMIT_FSIZE, &rl);
        int rc = base_write_f32_le(path, x, 3000);
        _exit(rc == -1 && errno == EFBIG ? 0 : 1);
    }
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    expect_file(path, "old");
    assert_int_equal(entries(dir), 1);

    unlink(path);
    assert_int_equal(rmdir(dir), 0);
}

/* base_copy_fd: all of a file longer than its 1 MiB buffer, from the input's offset on; a
 * descriptor that cannot be read is an error with errno. */
static void test_copy_fd(void **state)
{
    (void)state;
    char a[] = "/tmp/kvpub-copy-a-XXXXXX", b[] = "/tmp/kvpub-copy-b-XXXXXX";
    int in = mkstemp(a), out = mkstemp(b);
    assert_true(in >= 0 && out >= 0);
    const size_t n = (5u << 20) / 2 + 7;
    unsigned char *buf = malloc(n), *got = malloc(n);
    assert_non_null(buf);
    assert_non_null(got);
    for (size_t i = 0; i < n; i++)
        buf[i] = (unsigned char)(i * 131 + (i >> 16));
    assert_int_equal(base_write_all(in, buf, n), 0);
    assert_int_equal(lseek(in, 10, SEEK_SET), 10);
    assert_int_equal(base_copy_fd(in, out), 0);
    assert_int_equal(pread(out, got, n, 0), (ssize_t)(n - 10));
    assert_memory_equal(got, buf + 10, n - 10);
    int wr = open(a, O_WRONLY);
    assert_true(wr >= 0);
    errno = 0;
    assert_int_equal(base_copy_fd(wr, out), -1); /* not open for reading */
    assert_int_equal(errno, EBADF);
    close(wr);
    close(in);
    close(out);
    unlink(a);
    unlink(b);
    free(buf);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_u64),    cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_duration), cmocka_unit_test(test_parse_ids), cmocka_unit_test(test_errf),
        cmocka_unit_test(test_f16),            cmocka_unit_test(test_cache_dir),
        cmocka_unit_test(test_grow),           cmocka_unit_test(test_replace),
        cmocka_unit_test(test_copy_fd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
