/* ratelimit.h: per-client-address token buckets for kvpubd serve (the purchase rate limit).
 * Self-contained: knows socket addresses and a clock value, nothing of HTTP. */
#ifndef KVPUB_KVPUBD_RATELIMIT_H
#define KVPUB_KVPUBD_RATELIMIT_H

#include <sys/socket.h>

typedef struct kvsrv_ratelimit kvsrv_ratelimit;

/* Buckets of `burst` tokens refilled at per_min tokens a minute, one per client address (an
 * IPv4 address, or the /64 prefix of an IPv6 one: a single host usually holds a whole /64).
 * burst and per_min must be >= 1. Returns NULL when out of memory. Thread-safe. */
kvsrv_ratelimit *kvsrv_ratelimit_create(unsigned burst, unsigned per_min);
void kvsrv_ratelimit_free(kvsrv_ratelimit *rl); /* NULL is a no-op */

/* Takes one token from the bucket of the client at sa (NULL or another family: one shared
 * bucket) at time now (seconds, monotonic). Returns 0 when it had one, else the whole seconds
 * (>= 1) until it will have one (the Retry-After of the refusal). */
unsigned kvsrv_ratelimit_take(kvsrv_ratelimit *rl, const struct sockaddr *sa, double now);

#endif
