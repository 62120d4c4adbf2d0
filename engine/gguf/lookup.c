/* lookup.c: the read side of an open GGUF handle: file facts, metadata lookups by key (binary
 * search over the keys sorted at open) and tensors by index or name. Every value was checked
 * by gguf.c at open, so nothing here re-validates. */
#include "engine/gguf/reader_internal.h"

#include <string.h>

uint32_t gguf_version(const gguf_file *g) { return g->version; }
size_t gguf_file_size(const gguf_file *g) { return g->size; }
const void *gguf_file_data(const gguf_file *g) { return g->base; }
uint64_t gguf_alignment(const gguf_file *g) { return g->alignment; }
uint64_t gguf_data_offset(const gguf_file *g) { return g->data_off; }

const struct stat *gguf_file_stat(const gguf_file *g)
{
    return g->have_stat ? &g->st : NULL;
}

/* ---- metadata lookups ---- */

int64_t gguf_n_kv(const gguf_file *g) { return g->n_kv; }

const char *gguf_kv_key(const gguf_file *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? g->kv[i].key : NULL;
}

gguf_vtype gguf_kv_type(const gguf_file *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? g->kv[i].type : (gguf_vtype)-1;
}

int64_t gguf_find_key(const gguf_file *g, const char *key)
{
    int64_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->kv[g->kv_sorted[mid]].key, key);
        if (c == 0)
            return g->kv_sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

int gguf_get_int(const gguf_file *g, const char *key, int64_t *out)
{
    int64_t i = gguf_find_key(g, key);
    if (i < 0)
        return 0;
    const uint8_t *v = g->kv[i].val;
    switch (g->kv[i].type) {
    case GGUF_VT_UINT8: *out = v[0]; return 1;
    case GGUF_VT_BOOL: *out = v[0] != 0; return 1;
    case GGUF_VT_INT8: *out = (int8_t)v[0]; return 1;
    case GGUF_VT_UINT16: *out = (uint16_t)(v[0] | v[1] << 8); return 1;
    case GGUF_VT_INT16: *out = (int16_t)(uint16_t)(v[0] | v[1] << 8); return 1;
    case GGUF_VT_UINT32: *out = le32(v); return 1;
    case GGUF_VT_INT32: *out = (int32_t)le32(v); return 1;
    case GGUF_VT_INT64: *out = (int64_t)le64(v); return 1;
    case GGUF_VT_UINT64:
        if (le64(v) > (uint64_t)INT64_MAX)
            return -1;
        *out = (int64_t)le64(v);
        return 1;
    default:
        return -1;
    }
}

int gguf_get_float(const gguf_file *g, const char *key, double *out)
{
    int64_t i = gguf_find_key(g, key);
    if (i < 0)
        return 0;
    if (g->kv[i].type == GGUF_VT_FLOAT32) {
        uint32_t b = le32(g->kv[i].val);
        float f;
        memcpy(&f, &b, 4);
        *out = f;
        return 1;
    }
    if (g->kv[i].type == GGUF_VT_FLOAT64) {
        uint64_t b = le64(g->kv[i].val);
        memcpy(out, &b, 8);
        return 1;
    }
    if (g->kv[i].type == GGUF_VT_BOOL)
        return -1;
    int64_t iv;
    int r = gguf_get_int(g, key, &iv);
    if (r == 1)
        *out = (double)iv;
    return r;
}

int gguf_get_str(const gguf_file *g, const char *key, gguf_str *out)
{
    int64_t i = gguf_find_key(g, key);
    if (i < 0)
        return 0;
    if (g->kv[i].type != GGUF_VT_STRING)
        return -1;
    out->n = le64(g->kv[i].val);
    out->p = (const char *)g->kv[i].val + 8;
    return 1;
}

int gguf_get_arr(const gguf_file *g, const char *key, gguf_vtype *elem, uint64_t *n, const void **data)
{
    int64_t i = gguf_find_key(g, key);
    if (i < 0)
        return 0;
    if (g->kv[i].type != GGUF_VT_ARRAY)
        return -1;
    *elem = g->kv[i].elem;
    *n = g->kv[i].n;
    *data = g->kv[i].elem == GGUF_VT_STRING ? NULL : g->kv[i].arr;
    return 1;
}

int gguf_get_arr_str(const gguf_file *g, const char *key, uint64_t idx, gguf_str *out)
{
    int64_t i = gguf_find_key(g, key);
    if (i < 0)
        return 0;
    if (g->kv[i].type != GGUF_VT_ARRAY || g->kv[i].elem != GGUF_VT_STRING)
        return -1;
    if (idx >= g->kv[i].n)
        return 0;
    out->n = le64(g->kv[i].strs[idx]);
    out->p = (const char *)g->kv[i].strs[idx] + 8;
    return 1;
}

/* ---- tensors ---- */

size_t gguf_n_tensors(const gguf_file *g) { return g->n_t; }

const gguf_tensor *gguf_tensor_at(const gguf_file *g, size_t i)
{
    return i < g->n_t ? &g->t[i] : NULL;
}

const gguf_tensor *gguf_tensor_sorted(const gguf_file *g, size_t i)
{
    return i < g->n_t ? &g->t[g->t_sorted[i]] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name)
{
    size_t lo = 0, hi = g->n_t;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->t[g->t_sorted[mid]].name, name);
        if (c == 0)
            return &g->t[g->t_sorted[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
