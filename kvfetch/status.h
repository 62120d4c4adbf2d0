/* status.h: the status values shared by kvfetch's loader-side modules (HTTP client, local
 * cache, get, load), and their mapping to the exit codes kvfetch documents in --help. */
#ifndef KVPUB_KVFETCH_STATUS_H
#define KVPUB_KVFETCH_STATUS_H

#include <stddef.h>

#define KVF_WUR __attribute__((warn_unused_result))

/* Stable values (never renumber). */
typedef enum kvf_status {
    KVF_OK = 0,
    KVF_ERR_USAGE = 1,    /* bad argument */
    KVF_ERR_IO = 2,       /* local file or directory */
    KVF_ERR_NOMEM = 3,
    KVF_ERR_NET = 4,      /* connection, TLS, timeout, 5xx, still failing after the retries */
    KVF_ERR_HTTP = 5,     /* the server answered with a non-retryable error (404, ...) */
    KVF_ERR_DENIED = 6,   /* 401/402/403: token missing, invalid, expired or used up */
    KVF_ERR_VERIFY = 7,   /* the blob failed verification; the kvb_status says which way */
    KVF_ERR_REFUSED = 8,  /* a verified blob that does not fit: other model, tokenizer, RoPE */
    KVF_ERR_TOO_BIG = 9,  /* the server sent more bytes than the blob's manifest declares */
    KVF_ERR_ENGINE = 10,  /* the engine failed (context full, ...) */
} kvf_status;

/* Process exit codes of kvfetch get/run/compare (documented in their --help). */
enum {
    KVF_EXIT_OK = 0,
    KVF_EXIT_REFUSED = 1,   /* verification failed, or blob refused for this model */
    KVF_EXIT_USAGE = 2,     /* usage, I/O, network, HTTP errors */
    KVF_EXIT_MALFORMED = 3, /* malformed, truncated or unsupported blob (kvb_exit_code) */
    KVF_EXIT_DENIED = 4,    /* server refused access: buy a (new) token */
};

/* Writes the printf-style message to err (if non-NULL) and returns st. */
kvf_status kvf_fail(char *err, size_t errlen, kvf_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Monotonic clock, seconds. */
double kvf_now_s(void);

#endif
