/* reqparse.h: the daemon's hand-written parsers of untrusted request fields (Range,
 * If-None-Match, bearer credentials, blob ids) and the log-line escaper.
 * Pure functions with no libmicrohttpd dependency, so fuzz/fuzz_kvpubd_parse.c can drive them. */
#ifndef KVPUB_KVPUBD_REQPARSE_H
#define KVPUB_KVPUBD_REQPARSE_H

#include <stddef.h>
#include <stdint.h>

/* Exactly 64 lowercase hex digits. */
int kvsrv_is_id(const char *s);

/* A Range header against a file of size bytes. Returns 0: not a bytes range (serve the whole
 * file), 1: one satisfiable range [*start, *start + *len) with *len >= 1 and
 * *start + *len <= size, -1: 416 (bad syntax, several ranges, or nothing of the file). */
int kvsrv_parse_range(const char *h, uint64_t size, uint64_t *start, uint64_t *len);

/* If-None-Match value: "*" or a list of entity tags (W/ compares weakly) against etag. */
int kvsrv_etag_matches(const char *inm, const char *etag);

/* The token of an Authorization value "Bearer X" (scheme case-insensitive), or NULL. */
const char *kvsrv_bearer_token(const char *authorization);

/* Publisher credential "<16 hex key id>.<64 lowercase hex secret>": 0 and the key id, or -1. */
int kvsrv_parse_credential(const char *c, uint8_t key_id[8]);

/* Copies s (NULL = "") into out (outlen >= 1, always NUL-terminated) for a log line: bytes
 * outside printable ASCII, '"' and '\\' become \xNN, so an untrusted string can neither end a
 * quoted field nor start a new line. Output is cut (at an escape boundary) to fit. Returns out. */
char *kvsrv_log_escape(const char *s, char *out, size_t outlen);

#endif
