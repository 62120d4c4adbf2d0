/* gguf_internal.h: the GGUF (v2, v3) reader inside engine/: a validated, mmap'd view of the
 * metadata and tensors, plus the ggml tensor-type table. Every offset, size, count and string
 * length is checked against the file size and hard limits at open; nothing here trusts the
 * file afterwards. */
#ifndef KVPUB_GGUF_INTERNAL_H
#define KVPUB_GGUF_INTERNAL_H

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

/* ggml tensor types we know (file format values). */
enum {
    GGML_T_F32 = 0, GGML_T_F16 = 1, GGML_T_Q4_0 = 2, GGML_T_Q4_1 = 3, GGML_T_Q5_0 = 6,
    GGML_T_Q5_1 = 7, GGML_T_Q8_0 = 8, GGML_T_Q8_1 = 9, GGML_T_Q2_K = 10, GGML_T_Q3_K = 11,
    GGML_T_Q4_K = 12, GGML_T_Q5_K = 13, GGML_T_Q6_K = 14, GGML_T_Q8_K = 15, GGML_T_BF16 = 30,
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

/* Fills info from GGUF metadata: architecture (llama, qwen2, qwen3 only; anything else, or
 * sliding-window / hybrid attention / M-RoPE, is ENG_ERR_UNSUPPORTED naming it), shape,
 * norm eps, RoPE (type from arch; base, scale, linear/YaRN scaling), special ids, add-BOS. */
eng_status eng_hparams_from_gguf(const gguf_file *g, eng_info *info, char *err, size_t errlen) ENG_WUR;

/* Fingerprints (DESIGN.md): pure functions over a validated file. */
void eng_fingerprint_model_compute(const gguf_file *g, const eng_info *info, uint8_t out[32]);
/* Looks up (dev, ino, size, mtime) of path in the fingerprint cache, computing and storing
 * on a miss. A cache that cannot be written is not an error. */
eng_status eng_fingerprint_model_cached(const char *path, const gguf_file *g, const eng_info *info,
                                        uint8_t out[32], char *err, size_t errlen) ENG_WUR;
void eng_fingerprint_tokenizer_compute(const gguf_file *g, const eng_info *info, uint8_t out[32]);

/* Formats a one-line error into err (when given) and returns st: every engine file's failure path. */
eng_status eng_fail(char *err, size_t errlen, eng_status st, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
