/* kvb_util.c: status names and exit codes, codec names, f16 conversion, RFC 3339 times, the
 * fixed 32-byte header and the chunk-sized buffers. */
#include "format/kvb_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int kvb_bytes_bad(kvb_status st)
{
    return st == KVB_ERR_CHUNK_HASH || st == KVB_ERR_TOKENS_HASH || st == KVB_ERR_TRUNCATED ||
           st == KVB_ERR_MALFORMED || st == KVB_ERR_BAD_SIG || st == KVB_ERR_MAGIC;
}

const char *kvb_status_str(kvb_status st)
{
    switch (st) {
    case KVB_OK: return "ok";
    case KVB_ERR_USAGE: return "usage error";
    case KVB_ERR_IO: return "I/O error";
    case KVB_ERR_NOMEM: return "out of memory";
    case KVB_ERR_TRUNCATED: return "truncated blob";
    case KVB_ERR_MAGIC: return "not a kvblob";
    case KVB_ERR_VERSION: return "unsupported version";
    case KVB_ERR_UNSUPPORTED: return "unsupported feature";
    case KVB_ERR_MALFORMED: return "malformed blob";
    case KVB_ERR_LIMIT: return "limit exceeded";
    case KVB_ERR_BAD_SIG: return "bad signature";
    case KVB_ERR_UNTRUSTED: return "untrusted signer";
    case KVB_ERR_REVOKED: return "revoked signer";
    case KVB_ERR_WRONG_KEY: return "wrong signer";
    case KVB_ERR_EXPIRED: return "expired";
    case KVB_ERR_CHUNK_HASH: return "chunk hash mismatch";
    case KVB_ERR_TOKENS_HASH: return "token ids hash mismatch";
    case KVB_ERR_DECODE: return "chunk does not decode";
    case KVB_ERR_CALLBACK: return "refused by caller";
    case KVB_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

int kvb_exit_code(kvb_status st)
{
    switch (st) {
    case KVB_OK:
        return 0;
    case KVB_ERR_BAD_SIG: case KVB_ERR_UNTRUSTED: case KVB_ERR_REVOKED: case KVB_ERR_WRONG_KEY:
    case KVB_ERR_EXPIRED: case KVB_ERR_CHUNK_HASH: case KVB_ERR_TOKENS_HASH: case KVB_ERR_CALLBACK:
        return 1;
    case KVB_ERR_TRUNCATED: case KVB_ERR_MAGIC: case KVB_ERR_VERSION: case KVB_ERR_UNSUPPORTED:
    case KVB_ERR_MALFORMED: case KVB_ERR_LIMIT: case KVB_ERR_DECODE:
        return 3;
    case KVB_ERR_USAGE: case KVB_ERR_IO: case KVB_ERR_NOMEM: case KVB_ERR_INTERNAL:
        return 2;
    }
    return 2;
}

static const char *const codec_names[KVB_CODEC_COUNT] = {"f16", "f16-zstd", "q8", "q4"};

const char *kvb_codec_name(kvb_codec c)
{
    return ((unsigned)c < KVB_CODEC_COUNT) ? codec_names[c] : "?";
}

kvb_status kvb_codec_parse(const char *name, kvb_codec *out)
{
    for (int i = 0; i < KVB_CODEC_COUNT; i++)
        if (name && strcmp(name, codec_names[i]) == 0) {
            *out = (kvb_codec)i;
            return KVB_OK;
        }
    return KVB_ERR_UNSUPPORTED;
}

char *kvb_time_format(int64_t t, char *out, size_t outlen)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, outlen, "@%lld", (long long)t);
    return out;
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int kvb_time_parse(const char *s, int64_t *out)
{
    int Y, M, D, h, m, sec;
    if (strlen(s) != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
        s[16] != ':' || s[19] != 'Z')
        return -1;
    if (digits(s, 4, &Y) || digits(s + 5, 2, &M) || digits(s + 8, 2, &D) || digits(s + 11, 2, &h) ||
        digits(s + 14, 2, &m) || digits(s + 17, 2, &sec))
        return -1;
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > mdays[M - 1] || h > 23 || m > 59 || sec > 59)
        return -1;
    int leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
    if (M == 2 && D == 29 && !leap)
        return -1;
    /* days since 1970-01-01 (proleptic Gregorian), no libc timezone state involved */
    static const int cum[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    int64_t y = Y - 1;
    int64_t days = 365 * (int64_t)(Y - 1970) + (y / 4 - y / 100 + y / 400) - (1969 / 4 - 1969 / 100 + 1969 / 400);
    days += cum[M - 1] + (M > 2 && leap) + (D - 1);
    *out = days * 86400 + h * 3600 + m * 60 + sec;
    return 0;
}

kvb_status kvb_header_parse(const uint8_t *p, kvb_header *h, char *err, size_t errlen)
{
    memset(h, 0, sizeof *h);
    if (memcmp(p, KVB_MAGIC, 8) != 0)
        return kvb_fail(err, errlen, KVB_ERR_MAGIC, "not a kvblob: bad magic (expected 89 4b 56 42 4c 4f 42 0a)");
    h->version = kvb_le16(p + 8);
    h->flags = kvb_le16(p + 10);
    h->sig_alg = kvb_le16(p + 12);
    h->manifest_len = kvb_le32(p + 16);
    memcpy(h->key_id, p + 24, KVC_KEYID_LEN);
    if (h->version < KVB_VERSION_MIN || h->version > KVB_VERSION)
        return kvb_fail(err, errlen, KVB_ERR_VERSION,
                        "header: unsupported container version %u (this reader knows versions %d to %d)",
                        h->version, KVB_VERSION_MIN, KVB_VERSION);
    if (h->flags != 0)
        return kvb_fail(err, errlen, KVB_ERR_UNSUPPORTED,
                        "header: unknown flags 0x%04x (version %u defines none)", h->flags, h->version);
    if (h->sig_alg != KVB_SIG_ED25519)
        return kvb_fail(err, errlen, KVB_ERR_UNSUPPORTED,
                        "header: unknown signature algorithm %u (expected 1 = Ed25519)", h->sig_alg);
    if (kvb_le16(p + 14) != 0 || kvb_le32(p + 20) != 0)
        return kvb_fail(err, errlen, KVB_ERR_MALFORMED, "header: reserved bytes are not zero");
    if (h->manifest_len < 2)
        return kvb_fail(err, errlen, KVB_ERR_MALFORMED, "header: manifest length %u is too small",
                        h->manifest_len);
    if (h->manifest_len > KVB_MAX_MANIFEST)
        return kvb_fail(err, errlen, KVB_ERR_LIMIT, "header: manifest length %u exceeds the limit of %d bytes",
                        h->manifest_len, KVB_MAX_MANIFEST);
    h->data_offset = kvb_align((uint64_t)KVB_HEADER_LEN + h->manifest_len + KVC_SIG_LEN);
    return KVB_OK;
}

#if defined(__SANITIZE_ADDRESS__)
#define BIG_MAP 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BIG_MAP 0
#endif
#endif
#ifndef BIG_MAP
#define BIG_MAP 1
#endif

/* Freed buffers kept for the next kvb_big_alloc: a load's buffers are the next load's, and
 * on the VM this was measured on a fresh mapping costs 1-3 ms per MB the first time it is
 * written (the host backs it then), about as much as hashing it. Bounded: KVB_KEEP_BYTES in at
 * most CACHE_SLOTS buffers; a buffer is reused for a request of at least half its size. */
enum { CACHE_SLOTS = 16 };
#define BIG_ROUND ((size_t)2 << 20) /* a huge page: mappings come in these */
static struct {
    void *p;
    size_t n;
} g_cache[CACHE_SLOTS];
static size_t g_cached;
static pthread_mutex_t g_cache_mu = PTHREAD_MUTEX_INITIALIZER;

static void *cache_take(size_t n, size_t *cap)
{
    void *p = NULL;
    pthread_mutex_lock(&g_cache_mu);
    int best = -1;
    for (int i = 0; i < CACHE_SLOTS; i++)
        if (g_cache[i].p && g_cache[i].n >= n && g_cache[i].n / 2 <= n &&
            (best < 0 || g_cache[i].n < g_cache[best].n))
            best = i;
    if (best >= 0) {
        p = g_cache[best].p;
        *cap = g_cache[best].n;
        g_cached -= g_cache[best].n;
        g_cache[best].p = NULL;
    }
    pthread_mutex_unlock(&g_cache_mu);
    return p;
}

static int cache_put(void *p, size_t n)
{
    int kept = 0;
    pthread_mutex_lock(&g_cache_mu);
    for (int i = 0; !kept && i < CACHE_SLOTS && g_cached + n <= KVB_KEEP_BYTES; i++)
        if (!g_cache[i].p) {
            g_cache[i].p = p;
            g_cache[i].n = n;
            g_cached += n;
            kept = 1;
        }
    pthread_mutex_unlock(&g_cache_mu);
    return kept;
}

void *kvb_big_alloc(size_t n, size_t *cap)
{
    n = n ? n : 1;
    if (!BIG_MAP) {
        void *m = malloc(n);
        *cap = m ? n : 0;
        return m;
    }
    void *p = cache_take(n, cap);
    if (p)
        return p;
    /* big ones in whole huge pages, so that they are more often reused; small ones in pages */
    const size_t round = n >= BIG_ROUND / 2 ? BIG_ROUND : 4096;
    n = (n + round - 1) / round * round;
    p = base_alloc_big(n);
    *cap = p ? n : 0;
#ifdef MADV_POPULATE_WRITE
    /* every byte is written soon: its pages in one batch (huge where the kernel has them) rather
     * than one fault each; a kernel without it (before 5.14) faults them in as they come */
    if (p)
        (void)madvise(p, n, MADV_POPULATE_WRITE);
#endif
    return p;
}

size_t kvb_buffers_kept(void)
{
    pthread_mutex_lock(&g_cache_mu);
    size_t n = g_cached;
    pthread_mutex_unlock(&g_cache_mu);
    return n;
}

void kvb_buffers_release(void)
{
    pthread_mutex_lock(&g_cache_mu);
    for (int i = 0; i < CACHE_SLOTS; i++)
        if (g_cache[i].p) {
            base_free_big(g_cache[i].p, g_cache[i].n);
            g_cache[i].p = NULL;
        }
    g_cached = 0;
    pthread_mutex_unlock(&g_cache_mu);
}

void kvb_big_free(void *p, size_t cap)
{
    if (!p)
        return;
    if (!BIG_MAP)
        free(p);
    else if (!cache_put(p, cap))
        base_free_big(p, cap);
}

void kvb_chunk_digest(uint16_t version, const void *data, size_t len, uint8_t out[KVC_SHA256_LEN])
{
    if (version == 1)
        kvc_sha256(data, len, out);
    else
        kvc_leaf_digest(data, len, out);
}

int kvb_ids_sha256(const int32_t *ids, size_t n, uint8_t out[KVC_SHA256_LEN])
{
    kvc_sha256_ctx *c = kvc_sha256_create();
    if (!c)
        return -1;
    uint8_t buf[4096];
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        for (; i < n && k + 4 <= sizeof buf; i++, k += 4)
            kvb_put32(buf + k, (uint32_t)ids[i]);
        kvc_sha256_update(c, buf, k);
    }
    kvc_sha256_final(c, out);
    kvc_sha256_free(c);
    return 0;
}

void kvb_header_write(uint8_t *p, uint32_t manifest_len, const uint8_t key_id[KVC_KEYID_LEN])
{
    memset(p, 0, KVB_HEADER_LEN);
    memcpy(p, KVB_MAGIC, 8);
    kvb_put16(p + 8, KVB_VERSION);
    kvb_put16(p + 10, 0);
    kvb_put16(p + 12, KVB_SIG_ED25519);
    kvb_put32(p + 16, manifest_len);
    memcpy(p + 24, key_id, KVC_KEYID_LEN);
}

ssize_t kvb_pread_full(int fd, void *buf, size_t n, uint64_t off, int in_order)
{
    size_t got = 0;
    int piped = 0;
    while (got < n) {
        ssize_t k = piped ? read(fd, (char *)buf + got, n - got)
                          : pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (k < 0 && errno == ESPIPE && in_order && !piped) {
            piped = 1;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0)
            break;
        got += (size_t)k;
    }
    return (ssize_t)got;
}
