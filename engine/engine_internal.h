/* engine_internal.h: what engine/'s own files share beyond engine.h and gguf.h: the one-line
 * error formatter and the cached model fingerprint. Not for use outside engine/ (tests aside). */
#ifndef KVPUB_ENGINE_INTERNAL_H
#define KVPUB_ENGINE_INTERNAL_H

#include "base/base.h"
#include "engine/engine.h"
#include "engine/gguf.h"

#include <stddef.h>
#include <stdint.h>

/* Looks up (dev, ino, size, mtime) of path in the fingerprint cache directory cache_dir (NULL:
 * no cache), computing and storing on a miss. A cache that cannot be written is not an error. */
eng_status eng_fingerprint_model_cached(const char *path, const gguf_file *g, const eng_info *info,
                                        const char *cache_dir, uint8_t out[32], char *err,
                                        size_t errlen) ENG_WUR;

/* Formats a one-line error into err (when given) and returns st: every engine file's failure path. */
#define eng_fail(err, errlen, st, ...) ((eng_status)base_fail((st), (err), (errlen), __VA_ARGS__))

#endif
