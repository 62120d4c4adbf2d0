/* util.h: small helpers shared by the kvpubd commands: argument parsers (sizes, durations,
 * counts). */
#ifndef KVPUB_KVPUBD_UTIL_H
#define KVPUB_KVPUBD_UTIL_H

#include <stdint.h>

/* Whole decimal number, nothing else. Returns 0 on success, -1 otherwise. */
int kvpubd_parse_uint(const char *s, uint64_t *out);
/* Bytes with an optional K/M/G/T suffix (powers of 1024): "512M". 0 on success. */
int kvpubd_parse_size(const char *s, uint64_t *out);
/* Seconds from "90", "90s", "30m", "12h", "30d", "2w". 0 on success. */
int kvpubd_parse_duration(const char *s, uint64_t *out);

#endif
