/* util.h: small helpers shared by the kvpubd commands: argument parsers (sizes, durations,
 * counts) and the unnamed temp file a blob is written to before the store takes it. */
#ifndef KVPUB_KVPUBD_UTIL_H
#define KVPUB_KVPUBD_UTIL_H

#include <stdint.h>

/* Whole decimal number, nothing else. Returns 0 on success, -1 otherwise. */
int kvpubd_parse_uint(const char *s, uint64_t *out);
/* Bytes with an optional K/M/G/T suffix (powers of 1024): "512M". 0 on success. */
int kvpubd_parse_size(const char *s, uint64_t *out);
/* Seconds from "90", "90s", "30m", "12h", "30d", "2w". 0 on success. */
int kvpubd_parse_duration(const char *s, uint64_t *out);

/* kvc_tmpfd in STORE/tmp/, for a blob being written (publish, upload): it vanishes with the
 * process, so a crash or a refused blob never leaves anything behind. */
int kvpubd_store_tmpfd(const char *store_dir);

#endif
