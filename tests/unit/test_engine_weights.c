/* test_engine_weights.c: how eng_model_load holds the weights. Read into memory (copy, on huge
 * pages where the kernel gives them) or mapped, a model computes the same bits and has the same
 * fingerprint; KVPUB_WEIGHTS picks one, auto follows the kernel's transparent huge pages
 * setting and the memory available (read here on their own), eng_model_load_held's choice
 * holds where KVPUB_WEIGHTS is unset; a bad value and bad files fail
 * with one line, and so does a file that changes while it is copied (this program's pread
 * changes it, the way another process would, between the copy's first read and its end). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "tests/unit/engine_test_util.h"

static const char *const k_models[] = {"models/stories260K.gguf", "models/synth/synth-qwen2-tiny-f16.gguf",
                                       "models/synth/synth-llama-tiny-q80.gguf"};

/* Logits of a 12-token prefill, and the fingerprint, of model rel held as `how`. */
static void run_held(const char *rel, const char *how, float **logits, int *V, uint8_t fp[32])
{
    assert_int_equal(setenv("KVPUB_WEIGHTS", how, 1), 0);
    eng_model *m = et_load_model(rel);
    assert_non_null(m);
    const char *want = strcmp(how, "auto") != 0 ? how : NULL;
    if (want)
        assert_string_equal(eng_model_weights_held(m), want);
    char err[256];
    assert_int_equal(eng_model_fingerprint(m, fp, err, sizeof err), ENG_OK);
    *V = eng_model_info(m)->n_vocab;
    eng_ctx *c = et_ctx(m, 64, 0);
    int32_t t[12];
    for (int i = 0; i < 12; i++)
        t[i] = (int32_t)(1 + (i * 37) % (*V - 1));
    *logits = malloc(sizeof(float) * (size_t)*V);
    assert_int_equal(eng_prefill(c, t, NULL, 12, *logits, NULL), ENG_OK);
    eng_ctx_free(c);
    eng_model_free(m);
}

static void test_copy_equals_map(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof k_models / sizeof k_models[0]; i++) {
        float *a, *b;
        int va, vb;
        uint8_t fa[32], fb[32];
        run_held(k_models[i], "map", &a, &va, fa);
        run_held(k_models[i], "copy", &b, &vb, fb);
        assert_int_equal(va, vb);
        assert_memory_equal(a, b, sizeof(float) * (size_t)va);
        assert_memory_equal(fa, fb, 32);
        free(a);
        free(b);
    }
    unsetenv("KVPUB_WEIGHTS");
}

/* auto (also unset or empty): a copy exactly when transparent huge pages are on ("always" or
 * "madvise") and the file takes at most half of MemAvailable (both read here on their own). */
static void test_auto(void **state)
{
    (void)state;
    unsigned long long avail_kb = 0;
    FILE *mi = fopen("/proc/meminfo", "r");
    char line[256];
    while (mi && fgets(line, sizeof line, mi) && sscanf(line, "MemAvailable: %llu kB", &avail_kb) != 1)
        ;
    if (mi)
        fclose(mi);
    char p[1024];
    et_path(p, sizeof p, k_models[0]);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    const int fits = (unsigned long long)st.st_size <= avail_kb * 1024 / 2;
    char buf[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        buf[strcspn(buf, "\n")] = 0;
        fclose(f);
    }
    const char *want = (strstr(buf, "[always]") || strstr(buf, "[madvise]")) && fits ? "copy" : "map";
    printf("transparent huge pages: %s, MemAvailable %llu kB -> auto holds the weights as %s\n",
           buf[0] ? buf : "(unknown)", avail_kb, want);
    static const char *const autos[] = {"auto", "", NULL};
    for (int i = 0; i < 3; i++) {
        if (autos[i])
            assert_int_equal(setenv("KVPUB_WEIGHTS", autos[i], 1), 0);
        else
            unsetenv("KVPUB_WEIGHTS");
        eng_model *m = et_load_model(k_models[0]);
        assert_non_null(m);
        assert_string_equal(eng_model_weights_held(m), want);
        eng_model_free(m);
    }
}

static void test_bad_value(void **state)
{
    (void)state;
    char p[1024], err[256];
    et_path(p, sizeof p, k_models[0]);
    assert_int_equal(setenv("KVPUB_WEIGHTS", "mmap", 1), 0);
    eng_model *m = NULL;
    assert_int_equal(eng_model_load(p, &m, err, sizeof err), ENG_ERR_ARG);
    assert_null(m);
    assert_non_null(strstr(err, "KVPUB_WEIGHTS='mmap' is not map, copy or auto"));
    unsetenv("KVPUB_WEIGHTS");
}

/* eng_model_load_held: the caller's choice holds where KVPUB_WEIGHTS is unset or empty, the
 * variable's wherever it is set (auto included); a bad choice fails with one line naming it. */
static void test_load_held(void **state)
{
    (void)state;
    char p[1024], err[256];
    et_path(p, sizeof p, k_models[1]);
    static const struct {
        const char *env, *how, *want;
    } cases[] = {{NULL, "map", "map"}, {NULL, "copy", "copy"}, {"", "map", "map"},
                 {"copy", "map", "copy"}, {"map", "copy", "map"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].env)
            assert_int_equal(setenv("KVPUB_WEIGHTS", cases[i].env, 1), 0);
        else
            unsetenv("KVPUB_WEIGHTS");
        eng_model *m = NULL;
        assert_int_equal(eng_model_load_held(p, cases[i].how, &m, err, sizeof err), ENG_OK);
        assert_string_equal(eng_model_weights_held(m), cases[i].want);
        eng_model_free(m);
    }
    /* auto in the environment overrides the caller's map: what auto picks, as eng_model_load */
    assert_int_equal(setenv("KVPUB_WEIGHTS", "auto", 1), 0);
    eng_model *a = NULL, *b = NULL;
    assert_int_equal(eng_model_load_held(p, "map", &a, err, sizeof err), ENG_OK);
    assert_int_equal(eng_model_load(p, &b, err, sizeof err), ENG_OK);
    assert_string_equal(eng_model_weights_held(a), eng_model_weights_held(b));
    eng_model_free(a);
    eng_model_free(b);
    unsetenv("KVPUB_WEIGHTS");
    eng_model *m = NULL;
    assert_int_equal(eng_model_load_held(p, "mmap", &m, err, sizeof err), ENG_ERR_ARG);
    assert_null(m);
    assert_non_null(strstr(err, "weights='mmap' is not map, copy or auto"));
    assert_null(strchr(err, '\n'));
}

/* How pread changes the armed file on its first read of it, then disarms. */
enum { CHANGE_NONE, CHANGE_APPEND, CHANGE_REWRITE, CHANGE_TRUNCATE };
static int g_change;
static ino_t g_change_ino;
static char g_change_path[256];

static void change_file(void)
{
    int fd = open(g_change_path, O_WRONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    if (g_change == CHANGE_APPEND)
        assert_int_equal(pwrite(fd, "x", 1, st.st_size), 1);
    else if (g_change == CHANGE_TRUNCATE)
        assert_int_equal(ftruncate(fd, st.st_size / 2), 0);
    else { /* same size, a byte changed, and a modification time the copy cannot have seen */
        assert_int_equal(pwrite(fd, "x", 1, st.st_size - 1), 1);
        struct timespec t[2] = {{0, UTIME_OMIT}, {st.st_mtim.tv_sec + 7, 0}};
        assert_int_equal(futimens(fd, t), 0);
    }
    close(fd);
    g_change = CHANGE_NONE;
}

/* This program's pread (and pread64, its other name): the system call, after the change. */
ssize_t pread(int fd, void *buf, size_t n, off_t off);
ssize_t pread64(int fd, void *buf, size_t n, off_t off);
ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
    struct stat st;
    if (g_change != CHANGE_NONE && fstat(fd, &st) == 0 && st.st_ino == g_change_ino)
        change_file();
    return syscall(SYS_pread64, fd, buf, n, off);
}
ssize_t pread64(int fd, void *buf, size_t n, off_t off) { return pread(fd, buf, n, off); }

/* A file that grows, is rewritten in place or shrinks while gguf_open_copy reads it is
 * refused with one line, never opened from a mix of old and new bytes. */
static void test_copy_changed_while_read(void **state)
{
    (void)state;
    char src[1024], err[256];
    et_path(src, sizeof src, k_models[0]);
    snprintf(g_change_path, sizeof g_change_path, "/tmp/kvpub-weights-changed-%d.gguf", (int)getpid());
    for (int how = CHANGE_APPEND; how <= CHANGE_TRUNCATE; how++) {
        FILE *in = fopen(src, "rb"), *out = fopen(g_change_path, "wb");
        assert_non_null(in);
        assert_non_null(out);
        char b[65536];
        size_t n;
        while ((n = fread(b, 1, sizeof b, in)) > 0)
            assert_int_equal(fwrite(b, 1, n, out), n);
        fclose(in);
        assert_int_equal(fclose(out), 0);
        gguf_file *g = NULL;
        assert_int_equal(gguf_open_copy(g_change_path, UINT64_MAX, &g, err, sizeof err), ENG_OK); /* unchanged */
        gguf_close(g);
        g = NULL;
        struct stat st;
        assert_int_equal(stat(g_change_path, &st), 0);
        g_change_ino = st.st_ino;
        g_change = how;
        assert_int_equal(gguf_open_copy(g_change_path, UINT64_MAX, &g, err, sizeof err), ENG_ERR_IO);
        assert_int_equal(g_change, CHANGE_NONE); /* the change did happen, during the copy */
        assert_null(g);
        assert_non_null(strstr(err, "changed while being read"));
        assert_null(strchr(err, '\n'));
    }
    unlink(g_change_path);
}

/* gguf_open_copy refuses what gguf_open refuses, with the same statuses. */
static void test_copy_bad_files(void **state)
{
    (void)state;
    char dir[] = "/tmp/kvpub-weights-XXXXXX", path[128], err[256];
    assert_non_null(mkdtemp(dir));
    gguf_file *g = NULL;
    snprintf(path, sizeof path, "%s/missing.gguf", dir);
    assert_int_equal(gguf_open_copy(path, UINT64_MAX, &g, err, sizeof err), ENG_ERR_IO);
    assert_non_null(strstr(err, "cannot open"));
    assert_int_equal(gguf_open_copy(dir, UINT64_MAX, &g, err, sizeof err), ENG_ERR_IO); /* a directory */
    assert_non_null(strstr(err, "not a regular file"));
    static const char *const bodies[] = {"GG", "NOTAGGUF-----------------------"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/bad%d.gguf", dir, i);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, bodies[i], strlen(bodies[i])), (ssize_t)strlen(bodies[i]));
        close(fd);
        char err2[256];
        eng_status a = gguf_open(path, &g, err2, sizeof err2);
        assert_null(g);
        assert_int_equal(gguf_open_copy(path, UINT64_MAX, &g, err, sizeof err), ENG_ERR_FORMAT);
        assert_int_equal(a, ENG_ERR_FORMAT);
        assert_null(g);
        assert_string_equal(err, err2);
        unlink(path);
    }
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_copy_equals_map),
        cmocka_unit_test(test_auto),
        cmocka_unit_test(test_bad_value),
        cmocka_unit_test(test_load_held),
        cmocka_unit_test(test_copy_bad_files),
        cmocka_unit_test(test_copy_changed_while_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
