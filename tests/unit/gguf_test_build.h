/* gguf_test_build.h: a tiny independent GGUF builder for the engine's unit tests (written
 * separately from kvsynth's writer, so the reader is not checked against itself). Every
 * function records where it put a field, so tests can corrupt exactly that field. */
#ifndef KVPUB_TEST_GGUF_BUILD_H
#define KVPUB_TEST_GGUF_BUILD_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct gbuf {
    uint8_t *p;
    size_t n, cap;
} gbuf;

static inline void gb_put(gbuf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            abort();
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
}

static inline void gb_u32(gbuf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    gb_put(b, x, 4);
}

static inline void gb_u64(gbuf *b, uint64_t v)
{
    gb_u32(b, (uint32_t)v);
    gb_u32(b, (uint32_t)(v >> 32));
}

static inline void gb_str(gbuf *b, const char *s)
{
    gb_u64(b, strlen(s));
    gb_put(b, s, strlen(s));
}

typedef struct gguf_tb {
    gbuf kv, ti, data;
    uint64_t n_kv, n_t;
    uint32_t align;
    uint32_t version;
} gguf_tb;

static inline void tb_init(gguf_tb *t)
{
    memset(t, 0, sizeof *t);
    t->align = 32;
    t->version = 3;
}

static inline void tb_free(gguf_tb *t)
{
    free(t->kv.p);
    free(t->ti.p);
    free(t->data.p);
}

/* Each returns the offset (within the kv section) of the value (or of a string's length). */
static inline size_t tb_key(gguf_tb *t, const char *k, uint32_t type)
{
    t->n_kv++;
    gb_str(&t->kv, k);
    gb_u32(&t->kv, type);
    return t->kv.n;
}

static inline size_t tb_u32(gguf_tb *t, const char *k, uint32_t v)
{
    size_t o = tb_key(t, k, 4);
    gb_u32(&t->kv, v);
    return o;
}

static inline size_t tb_i32(gguf_tb *t, const char *k, int32_t v)
{
    size_t o = tb_key(t, k, 5);
    gb_u32(&t->kv, (uint32_t)v);
    return o;
}

static inline size_t tb_f32(gguf_tb *t, const char *k, float v)
{
    size_t o = tb_key(t, k, 6);
    uint32_t u;
    memcpy(&u, &v, 4);
    gb_u32(&t->kv, u);
    return o;
}

static inline size_t tb_bool(gguf_tb *t, const char *k, int v)
{
    size_t o = tb_key(t, k, 7);
    uint8_t b = (uint8_t)(v != 0);
    gb_put(&t->kv, &b, 1);
    return o;
}

static inline size_t tb_str(gguf_tb *t, const char *k, const char *v)
{
    size_t o = tb_key(t, k, 8);
    gb_str(&t->kv, v);
    return o;
}

/* Returns the offset of the array's element type; its count follows 4 bytes later. */
static inline size_t tb_arr_str(gguf_tb *t, const char *k, size_t n, const char *const *v)
{
    size_t o = tb_key(t, k, 9);
    gb_u32(&t->kv, 8);
    gb_u64(&t->kv, n);
    for (size_t i = 0; i < n; i++)
        gb_str(&t->kv, v[i]);
    return o;
}

static inline size_t tb_arr_num(gguf_tb *t, const char *k, uint32_t et, size_t n, const void *v, size_t esz)
{
    size_t o = tb_key(t, k, 9);
    gb_u32(&t->kv, et);
    gb_u64(&t->kv, n);
    gb_put(&t->kv, v, n * esz);
    return o;
}

/* Declares a tensor and appends nbytes of pattern data at the next aligned offset. Returns the
 * offset (within the tensor-info section) of its n_dims field; type and offset follow the dims. */
static inline size_t tb_tensor(gguf_tb *t, const char *name, uint32_t type, uint32_t nd,
                               const uint64_t *ne, size_t nbytes, uint8_t seed)
{
    t->n_t++;
    gb_str(&t->ti, name);
    size_t o = t->ti.n;
    gb_u32(&t->ti, nd);
    for (uint32_t d = 0; d < nd; d++)
        gb_u64(&t->ti, ne[d]);
    gb_u32(&t->ti, type);
    while (t->data.n % t->align)
        gb_put(&t->data, "", 1);
    gb_u64(&t->ti, t->data.n);
    for (size_t i = 0; i < nbytes; i++) {
        uint8_t b = (uint8_t)(i * 31 + seed);
        gb_put(&t->data, &b, 1);
    }
    return o;
}

/* Assembles the file. kv_base/ti_base/data_off: absolute offsets of the sections. */
static inline uint8_t *tb_finish(gguf_tb *t, size_t *n, size_t *kv_base, size_t *ti_base, size_t *data_off)
{
    gbuf f = {0};
    gb_put(&f, "GGUF", 4);
    gb_u32(&f, t->version);
    gb_u64(&f, t->n_t);
    gb_u64(&f, t->n_kv);
    if (kv_base)
        *kv_base = f.n;
    gb_put(&f, t->kv.p, t->kv.n);
    if (ti_base)
        *ti_base = f.n;
    gb_put(&f, t->ti.p, t->ti.n);
    while (f.n % t->align)
        gb_put(&f, "", 1);
    if (data_off)
        *data_off = f.n;
    gb_put(&f, t->data.p, t->data.n);
    *n = f.n;
    return f.p;
}

static inline void tb_put_u32(uint8_t *p, size_t at, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[at + (size_t)i] = (uint8_t)(v >> (8 * i));
}

static inline void tb_put_u64(uint8_t *p, size_t at, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[at + (size_t)i] = (uint8_t)(v >> (8 * i));
}

#endif
