/* ratelimit.c: per-client-address token buckets (ratelimit.h) in a fixed-size table, so a
 * flood of distinct addresses costs bounded memory. */
#include "kvpubd/ratelimit.h"

#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/kvcrypto.h"

/* Addresses tracked at once, and how far an insert probes for a slot. A bucket that has
 * refilled to its burst is worth no more than no bucket, so when the probed slots are all in
 * use the fullest one is forgotten: only a flood from more addresses than this, each keeping
 * its bucket drained, ever hands an address a fresh burst early. */
#define N_SLOTS 8192
#define PROBE 16
#define KEY_LEN 9 /* family tag + IPv4 address or IPv6 /64 */

typedef struct bucket {
    uint8_t key[KEY_LEN];
    uint8_t used;
    double tokens, at; /* tokens at time `at` */
} bucket;

struct kvsrv_ratelimit {
    pthread_mutex_t mu;
    double burst, per_s;
    uint64_t seed; /* random, so a client cannot aim many addresses at one probe window */
    bucket slots[N_SLOTS];
};

kvsrv_ratelimit *kvsrv_ratelimit_create(unsigned burst, unsigned per_min)
{
    if (!burst || !per_min)
        return NULL;
    kvsrv_ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    pthread_mutex_init(&rl->mu, NULL);
    rl->burst = burst;
    rl->per_s = per_min / 60.0;
    if (kvc_random_bytes(&rl->seed, sizeof rl->seed) != KVC_OK)
        rl->seed = 0x9e3779b97f4a7c15u;
    return rl;
}

void kvsrv_ratelimit_free(kvsrv_ratelimit *rl)
{
    if (!rl)
        return;
    pthread_mutex_destroy(&rl->mu);
    free(rl);
}

/* The bucket key of an address; an IPv4-mapped IPv6 address is its IPv4 address. */
static void address_key(const struct sockaddr *sa, uint8_t key[KEY_LEN])
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memset(key, 0, KEY_LEN);
    if (sa && sa->sa_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa && sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        if (memcmp(a, v4mapped, 12) == 0) {
            key[0] = 4;
            memcpy(key + 1, a + 12, 4);
        } else {
            key[0] = 6;
            memcpy(key + 1, a, 8);
        }
    }
}

static size_t slot_of(const kvsrv_ratelimit *rl, const uint8_t key[KEY_LEN])
{
    uint64_t h = rl->seed ^ 0xcbf29ce484222325u; /* FNV-1a, seeded */
    for (int i = 0; i < KEY_LEN; i++)
        h = (h ^ key[i]) * 0x100000001b3u;
    h ^= h >> 29;
    return (size_t)(h % N_SLOTS);
}

static double refilled(const kvsrv_ratelimit *rl, const bucket *b, double now)
{
    double t = b->tokens + (now > b->at ? now - b->at : 0) * rl->per_s;
    return t < rl->burst ? t : rl->burst;
}

/* The client's bucket, found or (re)claimed, refilled to now. */
static bucket *find(kvsrv_ratelimit *rl, const uint8_t key[KEY_LEN], double now)
{
    size_t first = slot_of(rl, key);
    bucket *victim = NULL;
    double victim_tokens = -1;
    for (size_t i = 0; i < PROBE; i++) {
        bucket *b = &rl->slots[(first + i) % N_SLOTS];
        if (b->used && memcmp(b->key, key, KEY_LEN) == 0) {
            b->tokens = refilled(rl, b, now);
            b->at = now;
            return b;
        }
        double t = b->used ? refilled(rl, b, now) : rl->burst + 1;
        if (t > victim_tokens)
            victim = b, victim_tokens = t;
    }
    memcpy(victim->key, key, KEY_LEN);
    victim->used = 1;
    victim->tokens = rl->burst;
    victim->at = now;
    return victim;
}

unsigned kvsrv_ratelimit_take(kvsrv_ratelimit *rl, const struct sockaddr *sa, double now)
{
    uint8_t key[KEY_LEN];
    address_key(sa, key);
    pthread_mutex_lock(&rl->mu);
    bucket *b = find(rl, key, now);
    unsigned wait = 0;
    if (b->tokens >= 1)
        b->tokens -= 1;
    else
        wait = (unsigned)ceil((1 - b->tokens) / rl->per_s);
    pthread_mutex_unlock(&rl->mu);
    return wait;
}
