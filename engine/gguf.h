/* gguf.h: GGUF files, engine/'s second public header (engine.h runs models; this one is for
 * programs that read or write the files themselves: kvsynth, bench, fuzz). A validated,
 * mmap'd reader of GGUF v2/v3 metadata and tensors; what the engine derives from a file
 * (hyper-parameters, fingerprints); the ggml tensor-type table; and a streaming GGUF v3
 * writer with the row quantizer it needs to store quantized tensors. The reader checks every
 * offset, size, count and string length against the file size and hard limits at open, and
 * trusts nothing in the file afterwards. */
#ifndef KVPUB_ENGINE_GGUF_H
#define KVPUB_ENGINE_GGUF_H

#include "engine/engine.h"

#include <stddef.h>
#include <stdint.h>

/* GGUF metadata value types (file format values). */
typedef enum gguf_vtype {
    GGUF_VT_UINT8 = 0, GGUF_VT_INT8 = 1, GGUF_VT_UINT16 = 2, GGUF_VT_INT16 = 3,
    GGUF_VT_UINT32 = 4, GGUF_VT_INT32 = 5, GGUF_VT_FLOAT32 = 6, GGUF_VT_BOOL = 7,
    GGUF_VT_STRING = 8, GGUF_VT_ARRAY = 9, GGUF_VT_UINT64 = 10, GGUF_VT_INT64 = 11,
    GGUF_VT_FLOAT64 = 12,
} gguf_vtype;

/* Bytes of one value of a fixed-size type t; 0 for string, array and unknown types. */
size_t gguf_vtype_size(uint32_t t);

/* ggml tensor types we know (file format values). */
enum {
    GGML_T_F32 = 0, GGML_T_F16 = 1, GGML_T_Q4_0 = 2, GGML_T_Q4_1 = 3, GGML_T_Q5_0 = 6,
    GGML_T_Q5_1 = 7, GGML_T_Q8_0 = 8, GGML_T_Q8_1 = 9, GGML_T_Q2_K = 10, GGML_T_Q3_K = 11,
    GGML_T_Q4_K = 12, GGML_T_Q5_K = 13, GGML_T_Q6_K = 14, GGML_T_Q8_K = 15, GGML_T_I8 = 24,
    GGML_T_I16 = 25, GGML_T_I32 = 26, GGML_T_I64 = 27, GGML_T_F64 = 28, GGML_T_BF16 = 30,
};

enum {
    GGUF_MAX_KV = 1 << 20,          /* metadata entries */
    GGUF_MAX_TENSORS = 1 << 16,
    GGUF_MAX_NAME = 255,            /* key and tensor name bytes */
    GGUF_MAX_STRING = 1 << 24,      /* one string value */
    GGUF_MAX_ARRAY = 1 << 24,       /* elements in one array (vocab sizes fit) */
    GGUF_MAX_DIMS = 4,
};

/* Block size (elements) and bytes per block of a tensor type; 0 for unknown types. name may
 * be NULL. Returns 1 if known. */
int ggml_type_traits(uint32_t type, uint32_t *blck, uint32_t *bytes, const char **name);
/* Bytes of a row of n elements (n must be a multiple of the block size), 0 if not. */
size_t ggml_row_bytes(uint32_t type, uint64_t n);

typedef struct gguf_str {
    const char *p;   /* into the mapping, NOT NUL-terminated */
    uint64_t n;
} gguf_str;

typedef struct gguf_tensor {
    char name[GGUF_MAX_NAME + 1]; /* NUL-terminated copy */
    uint32_t type;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];   /* ne[0] is the contiguous dimension (ggml order); unused = 1 */
    uint64_t nelem;
    uint64_t offset;              /* from the start of the data section */
    uint64_t nbytes;
    const void *data;             /* into the mapping, aligned as the file says */
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* Maps and validates path. Errors: ENG_ERR_IO, ENG_ERR_FORMAT (with the reason in err). */
eng_status gguf_open(const char *path, gguf_file **out, char *err, size_t errlen) ENG_WUR;
/* Same, but a file of at most max_copy bytes is read into private memory on 2 MiB pages where
 * the kernel gives them (base_alloc_big) instead of mapped: a pass over every weight then walks
 * about 500 page-table entries per GiB, not 260 000. ENG_ERR_IO also when the file changes
 * while it is read. gguf_open is gguf_open_copy with max_copy 0. */
eng_status gguf_open_copy(const char *path, uint64_t max_copy, gguf_file **out, char *err,
                          size_t errlen) ENG_WUR;
/* Whether g holds a copy of its file (gguf_open_copy) rather than a mapping. */
int gguf_is_copy(const gguf_file *g);
/* Same over a caller-owned buffer (borrowed; must outlive the handle). For fuzzing and tests. */
eng_status gguf_open_mem(const void *data, size_t size, gguf_file **out, char *err, size_t errlen) ENG_WUR;
void gguf_close(gguf_file *g);

uint32_t gguf_version(const gguf_file *g);
size_t gguf_file_size(const gguf_file *g);
const void *gguf_file_data(const gguf_file *g); /* whole mapping */

/* Metadata. Lookups return 1 when found with a usable type, 0 when absent, -1 when present
 * with an incompatible type. */
int64_t gguf_n_kv(const gguf_file *g);
const char *gguf_kv_key(const gguf_file *g, int64_t i);   /* NUL-terminated */
gguf_vtype gguf_kv_type(const gguf_file *g, int64_t i);
int64_t gguf_find_key(const gguf_file *g, const char *key); /* -1 if absent */
int gguf_get_int(const gguf_file *g, const char *key, int64_t *out);   /* any int type or bool */
int gguf_get_float(const gguf_file *g, const char *key, double *out);  /* float32/64 or int */
int gguf_get_str(const gguf_file *g, const char *key, gguf_str *out);
/* Array: element type and count; for numeric element types *data points at n packed
 * little-endian elements (possibly unaligned: read with memcpy). For string arrays *data is
 * NULL; use gguf_get_arr_str. */
int gguf_get_arr(const gguf_file *g, const char *key, gguf_vtype *elem, uint64_t *n, const void **data);
/* i-th string of a string array, O(1). Returns 1 on success, 0 if absent/out of range, -1 if
 * not a string array. */
int gguf_get_arr_str(const gguf_file *g, const char *key, uint64_t i, gguf_str *out);

/* Alignment of tensor data (general.alignment, default 32) and the file offset of the data
 * section. */
uint64_t gguf_alignment(const gguf_file *g);
uint64_t gguf_data_offset(const gguf_file *g);
/* fstat of the file as it was mapped (NULL for gguf_open_mem): the fingerprint cache keys on
 * it so that a file replaced after open cannot be confused with the mapped one. */
struct stat;
const struct stat *gguf_file_stat(const gguf_file *g);

size_t gguf_n_tensors(const gguf_file *g);
const gguf_tensor *gguf_tensor_at(const gguf_file *g, size_t i);
const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name); /* NULL if absent */
/* i-th tensor in strcmp name order (names are unique), NULL if out of range. */
const gguf_tensor *gguf_tensor_sorted(const gguf_file *g, size_t i);

/* Fills info from GGUF metadata: architecture (llama, qwen2, qwen3, stablelm only; anything
 * else, or sliding-window / hybrid attention / M-RoPE, is ENG_ERR_UNSUPPORTED naming it), shape,
 * norm type and eps, RoPE (type from arch; base, scale, linear/YaRN scaling, partial rotary on
 * stablelm), special ids, add-BOS. */
eng_status eng_hparams_from_gguf(const gguf_file *g, eng_info *info, char *err, size_t errlen) ENG_WUR;

/* Fingerprints (docs/design.md, spec/fingerprints.md): pure functions over a validated file. */
void eng_fingerprint_model_compute(const gguf_file *g, const eng_info *info, uint8_t out[32]);
void eng_fingerprint_tokenizer_compute(const gguf_file *g, const eng_info *info, uint8_t out[32]);

/* ---- writer (engine/gguf/writer.c) ----
 * Metadata and tensor declarations are buffered; then the header is written and tensor data
 * is streamed in declaration order, so a 1 GB model never sits in memory. Output goes to a
 * temp file renamed into place at the end. All integers are written little-endian. */

typedef struct ggw ggw;

ggw *ggw_create(uint32_t alignment); /* alignment: power of two; NULL on allocation failure */
void ggw_free(ggw *w);                /* NULL is a no-op; removes an unfinished temp file */

/* Metadata; each returns 0 on success, -1 on allocation failure (then the writer is unusable
 * and ggw_begin reports it). Keys and strings are copied. */
int ggw_kv_u32(ggw *w, const char *key, uint32_t v);
int ggw_kv_i32(ggw *w, const char *key, int32_t v);
int ggw_kv_f32(ggw *w, const char *key, float v);
int ggw_kv_bool(ggw *w, const char *key, int v);
int ggw_kv_str(ggw *w, const char *key, const char *s);
int ggw_kv_arr_str(ggw *w, const char *key, char *const *s, size_t n);
int ggw_kv_arr_f32(ggw *w, const char *key, const float *v, size_t n);
int ggw_kv_arr_i32(ggw *w, const char *key, const int32_t *v, size_t n);

/* Declares the next tensor (ne in ggml order, unused dims ignored). Returns its byte size, or
 * 0 if the shape does not fit the type's block size. */
uint64_t ggw_tensor(ggw *w, const char *name, uint32_t type, uint32_t n_dims, const uint64_t *ne);

/* Writes the header to a temp file next to path. Returns 0, or -1 with err filled. */
int ggw_begin(ggw *w, const char *path, char *err, size_t errlen);
/* Appends data of the current tensor; moves on (with padding) when a tensor is complete. */
int ggw_write(ggw *w, const void *p, size_t n, char *err, size_t errlen);
/* Checks every declared tensor was written in full, flushes, renames into place. */
int ggw_finish(ggw *w, char *err, size_t errlen);

/* Quantizes n f32 values (a multiple of the block size) into one row of `type` (GGML_T_*).
 * Public so that a writer can store quantized tensors: it is the engine's own quantizer
 * (engine/kernels/quant.c), so a file written with it holds the bits the engine's kernels
 * were tested against. Returns the bytes written, 0 for a type it cannot produce. */
size_t eng_quantize_row(uint32_t type, const float *src, void *dst, int64_t n);

/* Dequantizes n elements (a multiple of the type's block size) of one row of `type` at src
 * into dst: the floats ggml's dequantize_row_* (its type traits' to_float) gives, bit for
 * bit. Does nothing for a type without a kernel here (eng_quantize_row's types can all be
 * read back). */
void eng_dequant_row(uint32_t type, const void *src, float *dst, int64_t n);

#endif
