/* writer.c: the streaming GGUF v3 writer (engine/gguf.h). All integers are written
 * little-endian byte by byte, whatever the host. */
#include "base/base.h"
#include "engine/gguf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct wtensor {
    char name[GGUF_MAX_NAME + 1];
    uint32_t type;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    uint64_t offset;
    uint64_t nbytes;
} wtensor;

struct ggw {
    uint32_t alignment;
    uint8_t *kv;          /* serialized metadata entries */
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    int oom;
    wtensor *t;
    size_t n_t, t_cap;
    uint64_t data_size;   /* running, aligned */
    FILE *f;
    char *path;
    char *tmp;
    size_t cur;           /* tensor being written */
    uint64_t cur_done;    /* its bytes written so far */
    char iobuf[1 << 20];  /* stdio buffer: large sequential writes */
};

ggw *ggw_create(uint32_t alignment)
{
    if (alignment == 0 || (alignment & (alignment - 1)))
        return NULL;
    ggw *w = calloc(1, sizeof *w);
    if (w)
        w->alignment = alignment;
    return w;
}

void ggw_free(ggw *w)
{
    if (!w)
        return;
    if (w->f) {
        fclose(w->f);
        unlink(w->tmp);
    }
    BASE_FREE_ALL(w->kv, w->t, w->path, w->tmp, w);
}

static int put(ggw *w, const void *p, size_t n)
{
    if (w->oom)
        return -1;
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 4096;
        while (cap < w->kv_len + n)
            cap *= 2;
        uint8_t *q = realloc(w->kv, cap);
        if (!q) {
            w->oom = 1;
            return -1;
        }
        w->kv = q;
        w->kv_cap = cap;
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
    return 0;
}

static int put_u32(ggw *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return put(w, b, 4);
}

static int put_u64(ggw *w, uint64_t v)
{
    return put_u32(w, (uint32_t)v) | put_u32(w, (uint32_t)(v >> 32));
}

static int put_str(ggw *w, const char *s)
{
    size_t n = strlen(s);
    return put_u64(w, n) | put(w, s, n);
}

static int put_f32(ggw *w, float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    return put_u32(w, b);
}

static int key(ggw *w, const char *k, uint32_t type)
{
    w->n_kv++;
    return put_str(w, k) | put_u32(w, type);
}

int ggw_kv_u32(ggw *w, const char *k, uint32_t v) { return key(w, k, GGUF_VT_UINT32) | put_u32(w, v); }
int ggw_kv_i32(ggw *w, const char *k, int32_t v) { return key(w, k, GGUF_VT_INT32) | put_u32(w, (uint32_t)v); }
int ggw_kv_f32(ggw *w, const char *k, float v) { return key(w, k, GGUF_VT_FLOAT32) | put_f32(w, v); }
int ggw_kv_str(ggw *w, const char *k, const char *s) { return key(w, k, GGUF_VT_STRING) | put_str(w, s); }

int ggw_kv_bool(ggw *w, const char *k, int v)
{
    uint8_t b = v != 0;
    return key(w, k, GGUF_VT_BOOL) | put(w, &b, 1);
}

int ggw_kv_arr_str(ggw *w, const char *k, char *const *s, size_t n)
{
    int r = key(w, k, GGUF_VT_ARRAY) | put_u32(w, GGUF_VT_STRING) | put_u64(w, n);
    for (size_t i = 0; i < n; i++)
        r |= put_str(w, s[i]);
    return r;
}

int ggw_kv_arr_f32(ggw *w, const char *k, const float *v, size_t n)
{
    int r = key(w, k, GGUF_VT_ARRAY) | put_u32(w, GGUF_VT_FLOAT32) | put_u64(w, n);
    for (size_t i = 0; i < n; i++)
        r |= put_f32(w, v[i]);
    return r;
}

int ggw_kv_arr_i32(ggw *w, const char *k, const int32_t *v, size_t n)
{
    int r = key(w, k, GGUF_VT_ARRAY) | put_u32(w, GGUF_VT_INT32) | put_u64(w, n);
    for (size_t i = 0; i < n; i++)
        r |= put_u32(w, (uint32_t)v[i]);
    return r;
}

static uint64_t align_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) / a * a;
}

uint64_t ggw_tensor(ggw *w, const char *name, uint32_t type, uint32_t n_dims, const uint64_t *ne)
{
    if (strlen(name) > GGUF_MAX_NAME || n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return 0;
    uint64_t rows = 1;
    for (uint32_t d = 1; d < n_dims; d++)
        rows *= ne[d];
    size_t rb = ggml_row_bytes(type, ne[0]);
    if (rb == 0)
        return 0;
    if (!base_grow(&w->t, &w->t_cap, w->n_t, sizeof *w->t, 64)) {
        w->oom = 1;
        return 0;
    }
    wtensor *t = &w->t[w->n_t++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    t->nbytes = rows * rb;
    t->offset = w->data_size;
    w->data_size = align_up(w->data_size + t->nbytes, w->alignment);
    return t->nbytes;
}

static int wfail(char *err, size_t errlen, const char *what, const char *path)
{
    snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
    return -1;
}

static int write_zeros(FILE *f, uint64_t n)
{
    static const uint8_t z[64];
    while (n > 0) {
        size_t k = n > sizeof z ? sizeof z : (size_t)n;
        if (fwrite(z, 1, k, f) != k)
            return -1;
        n -= k;
    }
    return 0;
}

int ggw_begin(ggw *w, const char *path, char *err, size_t errlen)
{
    if (w->oom) {
        snprintf(err, errlen, "out of memory building the GGUF header");
        return -1;
    }
    /* Tensor infos go after the metadata in the same buffer; then the whole header is one write. */
    size_t kv_end = w->kv_len;
    for (size_t i = 0; i < w->n_t; i++) {
        wtensor *t = &w->t[i];
        put_str(w, t->name);
        put_u32(w, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            put_u64(w, t->ne[d]);
        put_u32(w, t->type);
        put_u64(w, t->offset);
    }
    if (w->oom) {
        snprintf(err, errlen, "out of memory building the GGUF header");
        return -1;
    }
    size_t plen = strlen(path);
    w->path = malloc(plen + 1);
    w->tmp = malloc(plen + 16);
    if (!w->path || !w->tmp) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(w->path, path, plen + 1);
    snprintf(w->tmp, plen + 16, "%s.tmpXXXXXX", path);
    int fd = mkstemp(w->tmp);
    if (fd < 0)
        return wfail(err, errlen, "cannot create", w->tmp);
    /* mkstemp makes 0600 files; a model is an ordinary file: 0666 less the umask. */
    mode_t um = umask(0);
    umask(um);
    if (fchmod(fd, 0666 & ~um) != 0) {
        close(fd);
        unlink(w->tmp);
        return wfail(err, errlen, "cannot chmod", w->tmp);
    }
    w->f = fdopen(fd, "wb");
    if (!w->f) {
        close(fd);
        unlink(w->tmp);
        return wfail(err, errlen, "cannot open", w->tmp);
    }
    setvbuf(w->f, w->iobuf, _IOFBF, sizeof w->iobuf);
    uint8_t hdr[24] = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
    for (int i = 0; i < 8; i++) {
        hdr[8 + i] = (uint8_t)((uint64_t)w->n_t >> (8 * i));
        hdr[16 + i] = (uint8_t)(w->n_kv >> (8 * i));
    }
    uint64_t hlen = sizeof hdr + w->kv_len;
    if (fwrite(hdr, 1, sizeof hdr, w->f) != sizeof hdr || fwrite(w->kv, 1, w->kv_len, w->f) != w->kv_len ||
        write_zeros(w->f, align_up(hlen, w->alignment) - hlen) != 0)
        return wfail(err, errlen, "cannot write", w->tmp);
    w->kv_len = kv_end;
    w->cur = 0;
    w->cur_done = 0;
    return 0;
}

int ggw_write(ggw *w, const void *p, size_t n, char *err, size_t errlen)
{
    const uint8_t *b = p;
    while (n > 0) {
        if (w->cur >= w->n_t) {
            snprintf(err, errlen, "internal error: more tensor data than declared");
            return -1;
        }
        wtensor *t = &w->t[w->cur];
        uint64_t left = t->nbytes - w->cur_done;
        size_t k = n < left ? n : (size_t)left;
        if (fwrite(b, 1, k, w->f) != k)
            return wfail(err, errlen, "cannot write", w->tmp);
        b += k;
        n -= k;
        w->cur_done += k;
        if (w->cur_done == t->nbytes) {
            uint64_t end = t->offset + t->nbytes;
            if (write_zeros(w->f, align_up(end, w->alignment) - end) != 0)
                return wfail(err, errlen, "cannot write", w->tmp);
            w->cur++;
            w->cur_done = 0;
        }
    }
    return 0;
}

int ggw_finish(ggw *w, char *err, size_t errlen)
{
    if (!w->f || w->cur != w->n_t) {
        snprintf(err, errlen, "internal error: %zu of %zu tensors written", w->cur, w->n_t);
        return -1;
    }
    FILE *f = w->f;
    w->f = NULL;
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok) {
        int e = errno;
        unlink(w->tmp);
        errno = e;
        return wfail(err, errlen, "cannot write", w->tmp);
    }
    if (rename(w->tmp, w->path) != 0) {
        int e = errno;
        unlink(w->tmp);
        errno = e;
        return wfail(err, errlen, "cannot rename into", w->path);
    }
    return 0;
}
