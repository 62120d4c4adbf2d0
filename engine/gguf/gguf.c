/* gguf.c: opening a GGUF v2/v3 file. Maps the file and validates every count, length, offset
 * and shape against the file size and hard limits, so that lookups (lookup.c) never have to
 * trust the bytes again. */
#include "engine/gguf/reader_internal.h"
#include "base/base.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- parser ---- */

typedef struct parser {
    const uint8_t *p;
    size_t size;
    size_t off;
    const char *name;  /* file name for messages */
    char *err;
    size_t errlen;
} parser;

__attribute__((format(printf, 3, 4)))
static eng_status fail(parser *ps, eng_status st, const char *fmt, ...)
{
    if (!ps->err || ps->errlen == 0)
        return st;
    int n = snprintf(ps->err, ps->errlen, "%s: ", ps->name);
    if (n < 0 || (size_t)n >= ps->errlen)
        return st;
    va_list ap;
    va_start(ap, fmt);
    base_verrf(ps->err + n, ps->errlen - (size_t)n, fmt, ap);
    va_end(ap);
    return st;
}

static size_t remaining(const parser *ps)
{
    return ps->size - ps->off;
}

static eng_status need(parser *ps, size_t n, const char *what)
{
    if (remaining(ps) < n)
        return fail(ps, ENG_ERR_FORMAT, "truncated at byte %zu reading %s (need %zu bytes, %zu left)",
                    ps->off, what, n, remaining(ps));
    return ENG_OK;
}

static eng_status rd_u32(parser *ps, uint32_t *v, const char *what)
{
    eng_status st = need(ps, 4, what);
    if (st)
        return st;
    *v = le32(ps->p + ps->off);
    ps->off += 4;
    return ENG_OK;
}

static eng_status rd_u64(parser *ps, uint64_t *v, const char *what)
{
    uint32_t lo, hi;
    eng_status st = need(ps, 8, what); /* both halves or neither: the message names 8 bytes */
    if (st == ENG_OK && (st = rd_u32(ps, &lo, what)) == ENG_OK && (st = rd_u32(ps, &hi, what)) == ENG_OK)
        *v = (uint64_t)hi << 32 | lo;
    return st;
}

/* Reads a string, checking its length against max and the bytes left. */
static eng_status rd_str(parser *ps, uint64_t max, const char *what, gguf_str *s)
{
    uint64_t n;
    size_t at = ps->off;
    eng_status st = rd_u64(ps, &n, what);
    if (st)
        return st;
    if (n > max)
        return fail(ps, ENG_ERR_FORMAT, "%s at byte %zu has length %llu (max %llu)", what, at,
                    (unsigned long long)n, (unsigned long long)max);
    if (n > remaining(ps))
        return fail(ps, ENG_ERR_FORMAT, "%s at byte %zu has length %llu but only %zu bytes remain",
                    what, at, (unsigned long long)n, remaining(ps));
    s->p = (const char *)ps->p + ps->off;
    s->n = n;
    ps->off += (size_t)n;
    return ENG_OK;
}

/* Copies a key or tensor name into a NUL-terminated buffer, refusing empty names and
 * embedded NULs (we hand these out as C strings). */
static eng_status rd_name(parser *ps, const char *what, char out[GGUF_MAX_NAME + 1])
{
    gguf_str s;
    size_t at = ps->off;
    eng_status st = rd_str(ps, GGUF_MAX_NAME, what, &s);
    if (st)
        return st;
    if (s.n == 0)
        return fail(ps, ENG_ERR_FORMAT, "empty %s at byte %zu", what, at);
    if (memchr(s.p, 0, (size_t)s.n))
        return fail(ps, ENG_ERR_FORMAT, "%s at byte %zu contains a NUL byte", what, at);
    memcpy(out, s.p, (size_t)s.n);
    out[s.n] = 0;
    return ENG_OK;
}

size_t gguf_vtype_size(uint32_t t)
{
    switch (t) {
    case GGUF_VT_UINT8: case GGUF_VT_INT8: case GGUF_VT_BOOL: return 1;
    case GGUF_VT_UINT16: case GGUF_VT_INT16: return 2;
    case GGUF_VT_UINT32: case GGUF_VT_INT32: case GGUF_VT_FLOAT32: return 4;
    case GGUF_VT_UINT64: case GGUF_VT_INT64: case GGUF_VT_FLOAT64: return 8;
    default: return 0;
    }
}

static eng_status parse_value(parser *ps, gguf_kv *kv)
{
    uint32_t t;
    eng_status st = rd_u32(ps, &t, "value type");
    if (st)
        return st;
    kv->type = (gguf_vtype)t;
    if (t == GGUF_VT_STRING) {
        gguf_str s;
        kv->val = ps->p + ps->off;
        return rd_str(ps, GGUF_MAX_STRING, "string value", &s);
    }
    if (t != GGUF_VT_ARRAY) {
        size_t sz = gguf_vtype_size(t);
        if (sz == 0)
            return fail(ps, ENG_ERR_FORMAT, "key '%s' has unknown value type %u (expected 0..12)",
                        kv->key, t);
        if ((st = need(ps, sz, "value")))
            return st;
        kv->val = ps->p + ps->off;
        ps->off += sz;
        return ENG_OK;
    }
    uint32_t et;
    uint64_t n;
    if ((st = rd_u32(ps, &et, "array element type")) || (st = rd_u64(ps, &n, "array count")))
        return st;
    if (et == GGUF_VT_ARRAY)
        return fail(ps, ENG_ERR_FORMAT, "key '%s' is a nested array (not supported)", kv->key);
    if (et != GGUF_VT_STRING && gguf_vtype_size(et) == 0)
        return fail(ps, ENG_ERR_FORMAT, "key '%s' has unknown array element type %u", kv->key, et);
    if (n > GGUF_MAX_ARRAY)
        return fail(ps, ENG_ERR_FORMAT, "key '%s' array count %llu exceeds the limit %d", kv->key,
                    (unsigned long long)n, GGUF_MAX_ARRAY);
    /* Strings need at least their 8-byte length each: check before allocating the index. */
    size_t esz = et == GGUF_VT_STRING ? 8 : gguf_vtype_size(et);
    if (n * esz > remaining(ps))
        return fail(ps, ENG_ERR_FORMAT,
                    "key '%s' array of %llu elements needs at least %llu bytes, only %zu remain",
                    kv->key, (unsigned long long)n, (unsigned long long)(n * esz), remaining(ps));
    kv->elem = (gguf_vtype)et;
    kv->n = n;
    kv->arr = ps->p + ps->off;
    if (et != GGUF_VT_STRING) {
        ps->off += (size_t)(n * esz);
        return ENG_OK;
    }
    kv->strs = malloc((n ? (size_t)n : 1) * sizeof *kv->strs);
    if (!kv->strs)
        return fail(ps, ENG_ERR_NOMEM, "out of memory for array '%s'", kv->key);
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        kv->strs[i] = ps->p + ps->off;
        if ((st = rd_str(ps, GGUF_MAX_STRING, "array string", &s)))
            return st;
    }
    return ENG_OK;
}

typedef int (*idx_cmp)(const gguf_file *g, const void *a, const void *b);

static int cmp_kv_idx(const gguf_file *g, const void *a, const void *b)
{
    return strcmp(g->kv[*(const int64_t *)a].key, g->kv[*(const int64_t *)b].key);
}

static int cmp_t_name(const gguf_file *g, const void *a, const void *b)
{
    return strcmp(g->t[*(const size_t *)a].name, g->t[*(const size_t *)b].name);
}

static int cmp_t_off(const gguf_file *g, const void *a, const void *b)
{
    uint64_t x = g->t[*(const size_t *)a].offset, y = g->t[*(const size_t *)b].offset;
    return x < y ? -1 : x > y;
}

/* Stable bottom-up merge sort of n index elements of sz bytes (tmp: n*sz bytes). qsort has
 * no context argument and a global would make opens thread-unsafe. */
static void sort_idx(void *base, size_t n, size_t sz, const gguf_file *g, idx_cmp cmp, void *tmp)
{
    uint8_t *a = base, *b = tmp;
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                if (cmp(g, a + j * sz, a + i * sz) < 0)
                    memcpy(b + k++ * sz, a + j++ * sz, sz);
                else
                    memcpy(b + k++ * sz, a + i++ * sz, sz);
            }
            while (i < mid)
                memcpy(b + k++ * sz, a + i++ * sz, sz);
            while (j < hi)
                memcpy(b + k++ * sz, a + j++ * sz, sz);
        }
        uint8_t *s = a;
        a = b;
        b = s;
    }
    if (a != base)
        memcpy(base, a, n * sz);
}

static eng_status parse_tensor_info(parser *ps, gguf_tensor *t)
{
    eng_status st = rd_name(ps, "tensor name", t->name);
    if (st)
        return st;
    if ((st = rd_u32(ps, &t->n_dims, "tensor n_dims")))
        return st;
    if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
        return fail(ps, ENG_ERR_FORMAT, "tensor '%s' has n_dims %u (expected 1..%d)", t->name,
                    t->n_dims, GGUF_MAX_DIMS);
    uint64_t nelem = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims)
            continue;
        if ((st = rd_u64(ps, &t->ne[d], "tensor shape")))
            return st;
        if (t->ne[d] < 1 || t->ne[d] > (uint64_t)INT64_MAX)
            return fail(ps, ENG_ERR_FORMAT, "tensor '%s' dimension %u is %llu (expected >= 1)",
                        t->name, d, (unsigned long long)t->ne[d]);
        if (nelem > (uint64_t)INT64_MAX / t->ne[d])
            return fail(ps, ENG_ERR_FORMAT, "tensor '%s' element count overflows", t->name);
        nelem *= t->ne[d];
    }
    t->nelem = nelem;
    if ((st = rd_u32(ps, &t->type, "tensor type")))
        return st;
    uint32_t blck, bytes;
    const char *tname;
    if (!ggml_type_traits(t->type, &blck, &bytes, &tname))
        return fail(ps, ENG_ERR_FORMAT, "tensor '%s' has unknown type %u", t->name, t->type);
    if (t->ne[0] % blck != 0)
        return fail(ps, ENG_ERR_FORMAT,
                    "tensor '%s' row length %llu is not a multiple of the %s block size %u",
                    t->name, (unsigned long long)t->ne[0], tname, blck);
    uint64_t nb = nelem / blck;
    if (nb > (uint64_t)INT64_MAX / bytes)
        return fail(ps, ENG_ERR_FORMAT, "tensor '%s' byte size overflows", t->name);
    t->nbytes = nb * bytes;
    return rd_u64(ps, &t->offset, "tensor offset");
}

static eng_status parse(gguf_file *g, parser *ps)
{
    eng_status st;
    if (ps->size < 4 || memcmp(ps->p, "GGUF", 4) != 0)
        return fail(ps, ENG_ERR_FORMAT, "not a GGUF file (bad magic, expected 'GGUF')");
    ps->off = 4;
    uint64_t n_t, n_kv;
    if ((st = rd_u32(ps, &g->version, "version")))
        return st;
    if (g->version == 1)
        return fail(ps, ENG_ERR_FORMAT, "GGUF version 1 is not supported (expected 2 or 3)");
    if (g->version != 2 && g->version != 3)
        return fail(ps, ENG_ERR_FORMAT, "unsupported GGUF version %u (expected 2 or 3%s)",
                    g->version, g->version > 0xffff ? "; big-endian files are not supported" : "");
    if ((st = rd_u64(ps, &n_t, "tensor count")) || (st = rd_u64(ps, &n_kv, "metadata count")))
        return st;
    if (n_t > GGUF_MAX_TENSORS)
        return fail(ps, ENG_ERR_FORMAT, "tensor count %llu exceeds the limit %d",
                    (unsigned long long)n_t, GGUF_MAX_TENSORS);
    if (n_kv > GGUF_MAX_KV)
        return fail(ps, ENG_ERR_FORMAT, "metadata count %llu exceeds the limit %d",
                    (unsigned long long)n_kv, GGUF_MAX_KV);
    /* Smallest possible entries: key (8+1) + type (4) + 1 byte value; tensor: name (8+1) +
     * n_dims (4) + one dim (8) + type (4) + offset (8). */
    if (n_kv * 14 + n_t * 33 > remaining(ps))
        return fail(ps, ENG_ERR_FORMAT,
                    "%llu metadata entries and %llu tensors cannot fit in the %zu bytes left",
                    (unsigned long long)n_kv, (unsigned long long)n_t, remaining(ps));
    g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
    g->kv_sorted = malloc((n_kv ? (size_t)n_kv : 1) * sizeof *g->kv_sorted);
    g->t = calloc(n_t ? (size_t)n_t : 1, sizeof *g->t);
    g->t_sorted = malloc((n_t ? (size_t)n_t : 1) * sizeof *g->t_sorted);
    if (!g->kv || !g->kv_sorted || !g->t || !g->t_sorted)
        return fail(ps, ENG_ERR_NOMEM, "out of memory for %llu keys / %llu tensors",
                    (unsigned long long)n_kv, (unsigned long long)n_t);
    for (uint64_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        if ((st = rd_name(ps, "metadata key", kv->key)))
            return st;
        g->n_kv = (int64_t)i + 1; /* so close frees this entry's allocations */
        if ((st = parse_value(ps, kv)))
            return st;
    }
    g->n_kv = (int64_t)n_kv;

    /* Duplicate keys: sort an index and compare neighbours (O(n log n) for hostile counts). */
    size_t tmp_sz = (size_t)(n_kv > n_t ? n_kv : n_t) * 8 + 8;
    void *tmp = malloc(tmp_sz);
    if (!tmp)
        return fail(ps, ENG_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < g->n_kv; i++)
        g->kv_sorted[i] = i;
    sort_idx(g->kv_sorted, (size_t)g->n_kv, sizeof *g->kv_sorted, g, cmp_kv_idx, tmp);
    for (int64_t i = 1; i < g->n_kv; i++) {
        if (strcmp(g->kv[g->kv_sorted[i]].key, g->kv[g->kv_sorted[i - 1]].key) == 0) {
            free(tmp);
            return fail(ps, ENG_ERR_FORMAT, "duplicate metadata key '%s'", g->kv[g->kv_sorted[i]].key);
        }
    }

    g->alignment = 32;
    int64_t ai = gguf_find_key(g, "general.alignment");
    if (ai >= 0) {
        if (g->kv[ai].type != GGUF_VT_UINT32) {
            free(tmp);
            return fail(ps, ENG_ERR_FORMAT, "general.alignment has value type %d (expected uint32)",
                        (int)g->kv[ai].type);
        }
        g->alignment = le32(g->kv[ai].val);
        if (g->alignment == 0 || (g->alignment & (g->alignment - 1)) != 0) {
            free(tmp);
            return fail(ps, ENG_ERR_FORMAT, "general.alignment %llu is not a power of two",
                        (unsigned long long)g->alignment);
        }
    }

    g->n_t = (size_t)n_t;
    for (size_t i = 0; i < g->n_t; i++) {
        if ((st = parse_tensor_info(ps, &g->t[i]))) {
            free(tmp);
            return st;
        }
    }
    for (size_t i = 0; i < g->n_t; i++)
        g->t_sorted[i] = i;
    sort_idx(g->t_sorted, g->n_t, sizeof *g->t_sorted, g, cmp_t_name, tmp);
    for (size_t i = 1; i < g->n_t; i++) {
        if (strcmp(g->t[g->t_sorted[i]].name, g->t[g->t_sorted[i - 1]].name) == 0) {
            free(tmp);
            return fail(ps, ENG_ERR_FORMAT, "duplicate tensor name '%s'", g->t[g->t_sorted[i]].name);
        }
    }

    /* Data section starts at the next multiple of the alignment after the tensor infos. */
    uint64_t hdr_end = ps->off;
    g->data_off = (hdr_end + g->alignment - 1) / g->alignment * g->alignment;
    if (g->n_t > 0 && g->data_off > ps->size) {
        free(tmp);
        return fail(ps, ENG_ERR_FORMAT, "data section at byte %llu starts past end of file (size %zu)",
                    (unsigned long long)g->data_off, ps->size);
    }
    uint64_t data_size = g->data_off <= ps->size ? ps->size - g->data_off : 0;
    for (size_t i = 0; i < g->n_t; i++) {
        gguf_tensor *t = &g->t[i];
        if (t->offset % g->alignment != 0) {
            free(tmp);
            return fail(ps, ENG_ERR_FORMAT, "tensor '%s' offset %llu is not a multiple of the alignment %llu",
                        t->name, (unsigned long long)t->offset, (unsigned long long)g->alignment);
        }
        if (t->offset > data_size || t->nbytes > data_size - t->offset) {
            unsigned long long a = (unsigned long long)(g->data_off + t->offset);
            free(tmp);
            return fail(ps, ENG_ERR_FORMAT, "tensor '%s' data [%llu, %llu) extends past end of file (size %zu)",
                        t->name, a, a + (unsigned long long)t->nbytes, ps->size);
        }
        t->data = ps->p + g->data_off + t->offset;
    }
    /* Overlaps: sort by offset and compare each tensor's end with the next start. */
    size_t *by_off = malloc((g->n_t ? g->n_t : 1) * sizeof *by_off);
    if (!by_off) {
        free(tmp);
        return fail(ps, ENG_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < g->n_t; i++)
        by_off[i] = i;
    sort_idx(by_off, g->n_t, sizeof *by_off, g, cmp_t_off, tmp);
    free(tmp);
    for (size_t i = 1; i < g->n_t; i++) {
        const gguf_tensor *a = &g->t[by_off[i - 1]], *b = &g->t[by_off[i]];
        if (a->offset + a->nbytes > b->offset) {
            st = fail(ps, ENG_ERR_FORMAT, "tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap",
                      a->name, (unsigned long long)a->offset, (unsigned long long)(a->offset + a->nbytes),
                      b->name, (unsigned long long)b->offset, (unsigned long long)(b->offset + b->nbytes));
            free(by_off);
            return st;
        }
    }
    free(by_off);
    return ENG_OK;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static eng_status open_common(gguf_file *g, const char *name, gguf_file **out, char *err, size_t errlen)
{
    parser ps = {.p = g->base, .size = g->size, .off = 0, .name = name, .err = err, .errlen = errlen};
    eng_status st = parse(g, &ps);
    if (st) {
        gguf_close(g);
        return st;
    }
    *out = g;
    return ENG_OK;
}

eng_status gguf_open_mem(const void *data, size_t size, gguf_file **out, char *err, size_t errlen)
{
    *out = NULL;
    gguf_file *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return ENG_ERR_NOMEM;
    }
    g->base = data;
    g->size = size;
    return open_common(g, "<memory>", out, err, errlen);
}

/* Opens path for gguf_open*: a regular file of at least 4 bytes. */
static eng_status open_file(const char *path, int *fd, struct stat *st, char *err, size_t errlen)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return ENG_ERR_IO;
    }
    eng_status es = ENG_OK;
    if (fstat(*fd, st) != 0 || !S_ISREG(st->st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        es = ENG_ERR_IO;
    } else if (st->st_size < 4 || (uint64_t)st->st_size > SIZE_MAX) {
        snprintf(err, errlen, "%s: not a GGUF file (size %lld bytes, too small)", base_name(path),
                 (long long)st->st_size);
        es = ENG_ERR_FORMAT;
    }
    if (es != ENG_OK)
        close(*fd);
    return es;
}

/* Gives back a file's bytes: a copy (base_alloc_big) or a mapping. */
static void release(const void *m, size_t n, int copied)
{
    if (copied)
        base_free_big((void *)m, n);
    else
        munmap((void *)m, n);
}

/* The handle over m (size bytes: the copy, or the mapping), then the validation. */
static eng_status open_held(const char *path, void *m, int copied, const struct stat *st, gguf_file **out,
                            char *err, size_t errlen)
{
    gguf_file *g = calloc(1, sizeof *g);
    if (!g) {
        release(m, (size_t)st->st_size, copied);
        snprintf(err, errlen, "out of memory");
        return ENG_ERR_NOMEM;
    }
    g->base = m;
    g->size = (size_t)st->st_size;
    g->owned = 1;
    g->copied = copied;
    g->have_stat = 1;
    g->st = *st;
    return open_common(g, base_name(path), out, err, errlen);
}

/* Maps the file open on fd (closed here). */
static eng_status map_file(const char *path, int fd, const struct stat *st, gguf_file **out, char *err,
                           size_t errlen)
{
    void *m = mmap(NULL, (size_t)st->st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "%s: cannot map: %s", path, strerror(errno));
        return ENG_ERR_IO;
    }
    return open_held(path, m, 0, st, out, err, errlen);
}

eng_status gguf_open(const char *path, gguf_file **out, char *err, size_t errlen)
{
    return gguf_open_copy(path, 0, out, err, errlen);
}

eng_status gguf_open_copy(const char *path, uint64_t max_copy, gguf_file **out, char *err, size_t errlen)
{
    *out = NULL;
    int fd;
    struct stat st, after;
    eng_status es = open_file(path, &fd, &st, err, errlen);
    if (es != ENG_OK)
        return es;
    const size_t n = (size_t)st.st_size;
    if ((uint64_t)n > max_copy)
        return map_file(path, fd, &st, out, err, errlen);
    char *m = base_alloc_big(n);
    if (!m) {
        close(fd);
        snprintf(err, errlen, "%s: out of memory for a %zu-byte copy", path, n);
        return ENG_ERR_NOMEM;
    }
    size_t got = 0;
    int rerr = 0; /* 0 with got < n: the file ended early */
    while (got < n) {
        ssize_t r = pread(fd, m + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rerr = r < 0 ? errno : 0;
            break;
        }
        got += (size_t)r;
    }
    const int same = fstat(fd, &after) == 0 && after.st_size == st.st_size && after.st_ino == st.st_ino &&
                     after.st_mtim.tv_sec == st.st_mtim.tv_sec && after.st_mtim.tv_nsec == st.st_mtim.tv_nsec;
    close(fd);
    if (got < n || !same) {
        base_free_big(m, n);
        if (same)
            snprintf(err, errlen, "%s: cannot read: %s", path, rerr ? strerror(rerr) : "unexpected end of file");
        else
            snprintf(err, errlen, "%s: changed while being read", path);
        return ENG_ERR_IO;
    }
    return open_held(path, m, 1, &st, out, err, errlen);
}

int gguf_is_copy(const gguf_file *g) { return g->copied; }

void gguf_close(gguf_file *g)
{
    if (!g)
        return;
    for (int64_t i = 0; i < g->n_kv; i++)
        free(g->kv[i].strs);
    free(g->kv);
    free(g->kv_sorted);
    free(g->t);
    free(g->t_sorted);
    if (g->owned)
        release(g->base, g->size, g->copied);
    free(g);
}
