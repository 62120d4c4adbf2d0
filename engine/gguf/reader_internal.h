/* reader_internal.h: the GGUF handle as engine/gguf/'s reader files share it: gguf.c fills it
 * at open, lookup.c serves it. Nothing outside engine/gguf/ includes this. */
#ifndef KVPUB_GGUF_READER_INTERNAL_H
#define KVPUB_GGUF_READER_INTERNAL_H

#include "engine/gguf.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

typedef struct gguf_kv {
    char key[GGUF_MAX_NAME + 1];
    gguf_vtype type;
    const uint8_t *val;      /* scalar value bytes, or the string's length prefix */
    gguf_vtype elem;         /* arrays */
    uint64_t n;              /* arrays: element count */
    const uint8_t *arr;      /* arrays: first element */
    const uint8_t **strs;    /* string arrays: each string's length prefix */
} gguf_kv;

struct gguf_file {
    const uint8_t *base;
    size_t size;
    int owned;               /* base is this handle's (a copy or a mapping), released at close */
    int copied;              /* read into memory (gguf_open_copy), not a file mapping */
    uint32_t version;
    uint64_t alignment;
    uint64_t data_off;
    gguf_kv *kv;
    int64_t n_kv;
    int64_t *kv_sorted;      /* kv indices in strcmp key order */
    gguf_tensor *t;
    size_t n_t;
    size_t *t_sorted;        /* tensor indices in strcmp name order */
    int have_stat;
    struct stat st;
};

/* Little-endian loads from the mapping (any alignment). */
static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

#endif
