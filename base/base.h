/* base.h: the layer under every kvpub module and tool (libc and pthread only): error-buffer
 * formatting, the command-line number grammar, CPU feature detection, f16/bf16 scalar
 * conversion, the tools' subcommand dispatch, options and cache directory, durable file writes, a
 * monotonic clock, a seeded PRNG and stopping worker threads. */
#ifndef KVPUB_BASE_H
#define KVPUB_BASE_H

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- errors ---- */

/* printf-style one-line message into err; does nothing when err is NULL or errlen is 0. */
void base_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void base_verrf(char *err, size_t errlen, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));
/* base_errf, then returns st, so that a module's status-typed fail is one line:
 *   #define kvf_fail(err, errlen, st, ...) ((kvf_status)base_fail((st), (err), (errlen), __VA_ARGS__)) */
int base_fail(int st, char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* ---- growable arrays ---- */

/* Makes room for element n of the array *items (a T ** passed as void *) that has room for *cap
 * elements of size bytes, doubling from first; returns 0, leaving the array as it was, when
 * memory or size_t runs out. */
int base_grow(void *items, size_t *cap, size_t n, size_t size, size_t first)
    __attribute__((warn_unused_result));

/* ---- large zeroed buffers ----
 * Zeroed memory straight from the kernel, backed by 2 MiB pages where the kernel allows
 * (madvise), so that filling a KV cache of hundreds of MiB takes hundreds of page faults, not
 * a hundred thousand. NULL when out of memory; base_free_big takes the size it was given. */
void *base_alloc_big(size_t n);
void base_free_big(void *p, size_t n);
/* Faults in every page of n bytes at p (a base_alloc_big region): MADV_POPULATE_WRITE where
 * the kernel has it, which keeps the bytes; else zeros written over them, so for fresh or
 * scratch memory only. */
void base_touch_big(void *p, size_t n);
/* Whether the kernel gives base_alloc_big 2 MiB pages (transparent huge pages "always" or
 * "madvise"); 0 when it says "never" or does not say. */
int base_huge_pages(void);
/* MemAvailable of /proc/meminfo in bytes; 0 when unknown. */
uint64_t base_mem_available(void);

/* ---- cleanup lists ---- */

/* free()s each of the n pointers p[0..n) (NULL ones too: free(NULL) is a no-op). */
void base_free_n(void *const *p, size_t n);
/* A destructor's list of owned buffers in one statement: BASE_FREE_ALL(c->x, c->y, c). The
 * pointers are freed in the order given, so a handle itself goes last. */
#define BASE_FREE_ALL(...) \
    base_free_n((void *const[]){__VA_ARGS__}, sizeof((void *const[]){__VA_ARGS__}) / sizeof(void *))

/* ---- time ---- */

/* Seconds on the monotonic clock (for intervals only; the origin is arbitrary). */
double base_now_s(void);

/* ---- seeded pseudo-random numbers ----
 * splitmix64 expands a seed into xoshiro256**'s state, as xoshiro's authors advise; both are
 * inline because the synthetic-data generators draw from them per element. Not for secrets. */

/* The next splitmix64 output; advances *x. */
static inline uint64_t base_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t base_rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* The next xoshiro256** output; advances s (which must not be all zero). */
static inline uint64_t base_xoshiro256ss(uint64_t s[4])
{
    uint64_t r = base_rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = base_rotl64(s[3], 45);
    return r;
}

/* ---- numbers on command lines and in the environment ----
 * One grammar, overflow-checked (out of range is an error, never a wrap), 0 on success and -1
 * otherwise, *out untouched then:
 *   count     digits                          "0", "1048576"
 *   size      count [unit [B|b|i]]            unit K M G T (either case) = 2^10 2^20 2^30 2^40:
 *                                             "512M", "10G", "1GB", "1Gi", "3k"
 *   duration  count [unit], in seconds        unit s m h d w = 1 60 3600 86400 604800:
 *                                             "90", "90s", "30m", "12h", "30d", "2w"
 * Nothing else: no sign, no blanks, no "0x", no fractions; the empty string is an error. */
int base_parse_u64(const char *s, uint64_t *out) __attribute__((warn_unused_result));
int base_parse_size(const char *s, uint64_t *out) __attribute__((warn_unused_result));
int base_parse_duration(const char *s, uint64_t *out) __attribute__((warn_unused_result));
/* A list of token ids: counts (the grammar above) below max, separated by single commas,
 * at least one: "151644,8948,198". *ids is malloc'd (caller frees), *n its length. */
int base_parse_ids(const char *s, uint32_t max, int32_t **ids, size_t *n) __attribute__((warn_unused_result));

/* ---- CPU features ---- */

/* x86 SIMD extensions this CPU and OS run (AVX-family bits only when the OS saves YMM state);
 * 0 elsewhere. Probed once per process, safe from any thread. KVPUB_CPU=avx2 hides AVX-512 and
 * KVPUB_CPU=none hides everything, so that one machine can measure and test the narrower
 * kernels (results are the same bits; only speed changes). */
enum {
    BASE_CPU_AVX2 = 1u << 0,
    BASE_CPU_FMA = 1u << 1,
    BASE_CPU_F16C = 1u << 2,
    BASE_CPU_AVX512 = 1u << 3, /* AVX-512 F, DQ, BW and VL, with the OS saving ZMM state */
    BASE_CPU_AVX512VNNI = 1u << 4, /* and AVX-512 VNNI (int8 dot products) */
};
unsigned base_cpu_features(void);
/* 1 if every bit of want is present. */
int base_cpu_has(unsigned want);

/* ---- f16 / bf16 ----
 * Scalar conversions, inline because the dequantizers call them once per block. f32 -> f16
 * rounds to nearest even and matches F16C bit for bit (NaN quieted, top payload bits kept). */

static inline uint32_t base_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float base_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float base_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 is exact in f32 */
        float v = (float)man * 0x1p-24f;
        return base_bits_f32(base_f32_bits(v) | sign);
    }
    if (exp == 31)
        return base_bits_f32(sign | 0x7f800000u | (man << 13));
    return base_bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

/* Rounds q (the kept bits) to nearest even given the dropped bits rem out of 2^shift. */
static inline uint32_t base_round_ne(uint32_t q, uint32_t rem, unsigned shift)
{
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1)))
        q++;
    return q;
}

static inline uint16_t base_f32_to_f16(float f)
{
    uint32_t x = base_f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) {
        /* inf, or NaN quieted with the top payload bits kept (what F16C produces) */
        if (x == 0x7f800000u)
            return sign | 0x7c00;
        return (uint16_t)(sign | 0x7e00 | ((x >> 13) & 0x3ff));
    }
    if (x >= 0x477ff000u) /* >= 65520: rounds to inf */
        return sign | 0x7c00;
    if (x >= 0x38800000u) { /* normal f16: rebias exponent, round away 13 mantissa bits */
        uint32_t v = x - (112u << 23);
        return (uint16_t)(sign | base_round_ne(v >> 13, v & 0x1fff, 13));
    }
    if (x <= 0x33000000u) /* <= 2^-25: zero (2^-25 itself is a tie to even zero) */
        return sign;
    /* subnormal f16: value * 2^24 rounded to an integer (may carry into the min normal) */
    uint32_t e = x >> 23;
    uint32_t m = (x & 0x7fffff) | 0x800000;
    unsigned shift = 126 - e; /* 14..24 */
    return (uint16_t)(sign | base_round_ne(m >> shift, m & ((1u << shift) - 1), shift));
}

static inline float base_bf16_to_f32(uint16_t h) { return base_bits_f32((uint32_t)h << 16); }

/* Round to nearest even; a NaN stays a (quiet) NaN. */
static inline uint16_t base_f32_to_bf16(float f)
{
    uint32_t x = base_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)(base_round_ne(x >> 16, x & 0xffff, 16));
}

/* ---- worker threads ----
 * No thread pool here, on purpose: engine/pool.c is a fork-join pool whose workers spin between
 * the few hundred tiny jobs of a decode step and claim their units as they come, while the blob
 * writer and reader stream chunks through a bounded queue to workers that each keep a zstd
 * context and let the producer run ahead; either one serving the other would cost the decode path a sleep or burn a core on I/O.
 * What they share is how their threads stop. */

/* Sets *stop under mu, wakes every thread waiting on cv, then joins the n threads th[0..n).
 * For threads that wait on cv under mu and return once they see *stop set. */
void base_threads_stop(pthread_mutex_t *mu, pthread_cond_t *cv, int *stop, const pthread_t *th, int n);

/* ---- the tools' subcommands ---- */

/* One row of a tool's command table; the table ends with a row whose name is NULL. fn gets
 * argv from the command name on. */
typedef struct base_cmd {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary; /* one line for PROG --help */
} base_cmd;

/* The whole of a tool's main() after its setup: PROG --help / -h / help prints the table on
 * stdout and returns 0; PROG COMMAND ... returns COMMAND's fn; no command, or an unknown one,
 * is a one-line error on stderr and 2. With base_opts_ below, the only base_ functions that
 * print. */
int base_cmd_dispatch(const char *prog, const base_cmd *cmds, int argc, char **argv);

/* ---- the tools' options ----
 * One getopt_long loop with the tools' conventions, so that every command declares its options
 * as a struct option table and a switch, and says --help and bad options the same way:
 *
 *     base_opts op = {.prog = "kvfetch buy", .usage = usage_buy, .shortopts = "h", .longopts = lo};
 *     while ((c = base_opts_next(&op, argc, argv)) > 0)
 *         switch (c) { ... }
 *     if (c < 0)
 *         return op.rc;
 *
 * The only other base_ functions that print, with base_cmd_dispatch. */

struct option;

typedef struct base_opts {
    const char *prog;               /* prefixes every message: "kvfetch buy" */
    const char *usage;              /* the --help text; NULL: usage_fn prints it */
    void (*usage_fn)(FILE *out);
    const char *shortopts;          /* getopt_long's; "h" at least */
    const struct option *longopts;  /* with {"help", no_argument, NULL, 'h'} */
    int first;                      /* argv index of the first option; 0 means 1 (2 after a verb) */
    const char *hint;               /* what "(try ...)" names; NULL: "--help" */
    const char *bad;                /* what a bad option is called; NULL: "unknown or incomplete option" */
    int getopt_says;                /* 1: getopt names a bad option itself; the usage follows on stderr */
    /* Options that another module parses (kvfetch's shared ones): 1 when it took code c, 0 when
     * not, -1 after printing why arg is bad. NULL: none. */
    int (*more)(void *ctx, int c, const char *arg, const char *prog);
    void *more_ctx;
    int started;                    /* 0 until the first base_opts_next */
    int rc;                         /* the exit code, once base_opts_next returned -1 */
} base_opts;

/* The next option's code (> 0) for the caller's switch (optarg its value), or 0 after the last
 * option (optind: the first operand), or -1 with o->rc the command's exit code: 0 after --help
 * (the usage printed on stdout), 2 after an unknown option or a missing value (one line on
 * stderr). */
int base_opts_next(base_opts *o, int argc, char **argv);
/* After the options: 0 when no operand is left, else 2 after "PROG: unexpected argument 'X'"
 * on stderr (followed by " (try HINT)" when hint is set). */
int base_opts_no_operands(const base_opts *o, int argc, char **argv, int hint);
/* For PROG VERB [options]: 1 when argv[1] is verb; else 0 with o->rc set, after printing the
 * usage on stdout for --help or -h (rc 0), on stderr otherwise (rc 2). */
int base_opts_verb(base_opts *o, int argc, char **argv, const char *verb);

/* ---- where the tools cache ---- */

/* The cache directory the tools default to, into buf: $KVPUB_CACHE_DIR itself when set (sub is
 * ignored: everything shares it), else $XDG_CACHE_HOME/kvpub/SUB, else $HOME/.cache/kvpub/SUB
 * (without "/SUB" when sub is NULL). Returns buf, or NULL with errno ENOENT (none of the three
 * is set) or ENAMETOOLONG. Libraries take a directory from their caller instead. */
const char *base_cache_dir(const char *sub, char *buf, size_t n);

/* ---- whole streams ---- */

/* Reads f to its end into a malloc'd, NUL-terminated buffer (*len bytes before the NUL). NULL
 * with errno EFBIG past max bytes, ENOMEM, or EIO on a read error. */
char *base_read_stream(FILE *f, size_t max, size_t *len);

/* Writes n floats to path as little-endian f32 (logits for comparison with other runtimes),
 * through base_replace: path holds the old file or all of the new one. 0, or -1 with errno. */
int base_write_f32_le(const char *path, const float *x, size_t n);

/* ---- durable writes (keys, blobs, the store, downloads) ---- */

/* Writes all n bytes (retrying short writes and EINTR), at the file offset or, for pwrite_all,
 * at off (safe from several threads on one fd). Return 0, or -1 with errno set. */
int base_write_all(int fd, const void *data, size_t n);
/* Copies in, from its offset, to out until in's end (retrying EINTR and short writes): 0, or
 * -1 with errno set. */
int base_copy_fd(int in, int out);
/* Opens (creating, 0600) the lock file path and waits for an exclusive flock on it: the fd to
 * close when done, or -1 with errno set. For read-modify-write of small state files. */
int base_lock_file(const char *path);
int base_pwrite_all(int fd, const void *data, size_t n, uint64_t off);
/* An unnamed read-write file in directory dir (O_TMPFILE, else a name created and unlinked at
 * once): it vanishes with the process, so a crash leaves nothing behind. Returns the fd
 * (O_CLOEXEC) or -1 with errno set. */
int base_tmpfd(const char *dir);
/* A file that replaces path whole: written under a fresh name beside it (mkstemp, so never an
 * existing file or a planted link) and renamed over it once complete and synced. A reader
 * sees the old file or the whole new one; a failed, aborted or killed write leaves path as it
 * was (a killed one leaves its "PATH.tmp.XXXXXX" behind). */
typedef struct base_replace {
    int fd;          /* write here (O_CLOEXEC); a FILE on dup(fd) is fine, closed before commit */
    char path[PATH_MAX];
    char tmp[PATH_MAX + 12];
} base_replace;
/* 0, or -1 with errno set (ENAMETOOLONG, or mkstemp's: EACCES, ENOENT, ...). */
int base_replace_open(base_replace *r, const char *path);
/* Gives the file mode 0644, fsyncs and closes it, renames it over path and fsyncs the
 * directory. 0, or -1 with errno set and the temporary file removed (path untouched). */
int base_replace_commit(base_replace *r);
/* Closes and removes the temporary file; path stays as it was. Safe after a failed commit. */
void base_replace_abort(base_replace *r);

/* fsyncs directory dir, or the directory holding path, so renames in it survive a crash.
 * Best effort: some filesystems refuse fsync on directories. */
void base_fsync_dir(const char *dir);
void base_fsync_parent_dir(const char *path);

#endif
