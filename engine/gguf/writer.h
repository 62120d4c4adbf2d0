/* gguf_writer.h: a streaming GGUF v3 writer for kvsynth. Metadata and tensor declarations are
 * buffered; then the header is written and tensor data is streamed in declaration order, so a
 * 1 GB model never sits in memory. Output goes to a temp file renamed into place at the end. */
#ifndef KVPUB_KVSYNTH_GGUF_WRITER_H
#define KVPUB_KVSYNTH_GGUF_WRITER_H

#include <stddef.h>
#include <stdint.h>

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

#endif
