/* leafhash.c: the kvblob (version 2) chunk digest, a SHA-256 hash list over 32 KiB leaves.
 *
 * One SHA-256 stream is latency-bound (on SHA-NI CPUs each sha256rnds2 waits for the one
 * before it), but independent leaves can be hashed side by side. Where intel-ipsec-mb is
 * available (x86-64) its multi-buffer managers hash 2 (SHA-NI), 8 (AVX2) or 16 (AVX-512)
 * leaves at once; elsewhere, or when it fails its start-up self-test, each leaf goes through
 * OpenSSL. Both give the same bytes: the digest is defined by spec/kvblob.md, not by the
 * engine. KVPUB_LEAF_HASH=openssl forces OpenSSL (benchmarks and tests compare the two). */
#include "crypto/kvcrypto.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#ifdef KVC_IPSEC_MB
#define NO_COMPAT_IMB_API_053
#include <intel-ipsec-mb.h>
#endif

enum { BATCH = 32 }; /* leaves submitted before a flush: 1 MiB of data, 1 KiB of leaf digests */

static void must(int ok)
{
    if (!ok)
        abort(); /* as kvc_sha256: only allocation failure or a broken provider gets here */
}

typedef struct root {
    EVP_MD_CTX *md;
} root;

static void root_init(root *r)
{
    r->md = EVP_MD_CTX_new();
    must(r->md && EVP_DigestInit_ex(r->md, EVP_sha256(), NULL) == 1);
}

static void root_add(root *r, const uint8_t *digests, size_t n)
{
    must(EVP_DigestUpdate(r->md, digests, n * KVC_SHA256_LEN) == 1);
}

static void root_final(root *r, uint8_t out[KVC_SHA256_LEN])
{
    unsigned int n = 0;
    must(EVP_DigestFinal_ex(r->md, out, &n) == 1 && n == KVC_SHA256_LEN);
    EVP_MD_CTX_free(r->md);
}

static size_t leaf_count(size_t len) { return len / KVC_LEAF_LEN + (len % KVC_LEAF_LEN != 0); }

static size_t leaf_len(size_t len, size_t i)
{
    size_t at = i * KVC_LEAF_LEN;
    return len - at < KVC_LEAF_LEN ? len - at : KVC_LEAF_LEN;
}

static void digest_openssl(const uint8_t *p, size_t len, uint8_t out[KVC_SHA256_LEN])
{
    root r;
    root_init(&r);
    uint8_t d[KVC_SHA256_LEN];
    for (size_t i = 0, n = leaf_count(len); i < n; i++) {
        kvc_sha256(p + i * KVC_LEAF_LEN, leaf_len(len, i), d);
        root_add(&r, d, 1);
    }
    root_final(&r, out);
}

#ifdef KVC_IPSEC_MB
/* Managers are not thread-safe and cost about 60 us to set up, so callers borrow one from a
 * small free list. What stays in the list at exit is still reachable, not leaked. */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static IMB_MGR *pool[16];
static int pool_n;
static const char *engine_name = "openssl";
static void (*init_mgr)(IMB_MGR *);

static IMB_MGR *mgr_get(void)
{
    pthread_mutex_lock(&pool_mu);
    IMB_MGR *m = pool_n ? pool[--pool_n] : NULL;
    pthread_mutex_unlock(&pool_mu);
    if (!m && (m = alloc_mb_mgr(0)) != NULL) {
        init_mgr(m);
        if (imb_get_errno(m) != 0) {
            free_mb_mgr(m);
            m = NULL;
        }
    }
    return m;
}

static void mgr_put(IMB_MGR *m)
{
    pthread_mutex_lock(&pool_mu);
    if (pool_n < (int)(sizeof pool / sizeof pool[0])) {
        pool[pool_n++] = m;
        m = NULL;
    }
    pthread_mutex_unlock(&pool_mu);
    if (m)
        free_mb_mgr(m);
}

/* Hashes leaves [first, first+n) of p into d[0..n); ok[i] = 0 where the manager refused one. */
static void batch_mb(IMB_MGR *m, const uint8_t *p, size_t len, size_t first, size_t n, uint8_t *d, uint8_t *ok)
{
    memset(ok, 0, n);
    for (size_t i = 0; i < n; i++) {
        IMB_JOB *j = IMB_GET_NEXT_JOB(m);
        j->cipher_mode = IMB_CIPHER_NULL;
        j->cipher_direction = IMB_DIR_ENCRYPT;
        j->chain_order = IMB_ORDER_HASH_CIPHER;
        j->hash_alg = IMB_AUTH_SHA_256;
        j->src = p + (first + i) * KVC_LEAF_LEN;
        j->hash_start_src_offset_in_bytes = 0;
        j->msg_len_to_hash_in_bytes = leaf_len(len, first + i);
        j->auth_tag_output = d + i * KVC_SHA256_LEN;
        j->auth_tag_output_len_in_bytes = KVC_SHA256_LEN;
        j->user_data = ok + i;
        for (j = IMB_SUBMIT_JOB(m); j; j = IMB_GET_COMPLETED_JOB(m))
            *(uint8_t *)j->user_data = j->status == IMB_STATUS_COMPLETED;
    }
    for (IMB_JOB *j; (j = IMB_FLUSH_JOB(m)) != NULL;)
        *(uint8_t *)j->user_data = j->status == IMB_STATUS_COMPLETED;
}

static int digest_mb(const uint8_t *p, size_t len, uint8_t out[KVC_SHA256_LEN])
{
    IMB_MGR *m = mgr_get();
    if (!m)
        return 0;
    root r;
    root_init(&r);
    uint8_t d[BATCH * KVC_SHA256_LEN], ok[BATCH];
    for (size_t first = 0, n = leaf_count(len); first < n; first += BATCH) {
        size_t k = n - first < BATCH ? n - first : BATCH;
        batch_mb(m, p, len, first, k, d, ok);
        for (size_t i = 0; i < k; i++)
            if (!ok[i]) /* never seen; the digest must not depend on it */
                kvc_sha256(p + (first + i) * KVC_LEAF_LEN, leaf_len(len, first + i), d + i * KVC_SHA256_LEN);
        root_add(&r, d, k);
    }
    root_final(&r, out);
    mgr_put(m);
    return 1;
}

/* Picks the manager once: SHA-NI (2 lanes, measured fastest where present), else AVX-512
 * (16 lanes), else AVX2 (8 lanes), else none. It must then reproduce OpenSSL's digest of a
 * test message of three full leaves and a short one. */
static void pick_engine(void)
{
    const char *force = getenv("KVPUB_LEAF_HASH");
    if (force && strcmp(force, "openssl") == 0)
        return;
    IMB_MGR *m = alloc_mb_mgr(0);
    if (!m)
        return;
    uint64_t f = m->features;
    free_mb_mgr(m);
    if (f & IMB_FEATURE_SHANI) {
        init_mgr = init_mb_mgr_sse;
        engine_name = "intel-ipsec-mb sse (SHA-NI, 2 lanes)";
    } else if ((f & IMB_FEATURE_AVX512_SKX) == IMB_FEATURE_AVX512_SKX) {
        init_mgr = init_mb_mgr_avx512;
        engine_name = "intel-ipsec-mb avx512 (16 lanes)";
    } else if (f & IMB_FEATURE_AVX2) {
        init_mgr = init_mb_mgr_avx2;
        engine_name = "intel-ipsec-mb avx2 (8 lanes)";
    } else {
        return;
    }
    size_t n = 3 * KVC_LEAF_LEN + 100;
    uint8_t *t = malloc(n), a[KVC_SHA256_LEN], b[KVC_SHA256_LEN];
    int good = 0;
    if (t) {
        for (size_t i = 0; i < n; i++)
            t[i] = (uint8_t)(i * 131 + (i >> 9));
        digest_openssl(t, n, a);
        good = digest_mb(t, n, b) && memcmp(a, b, sizeof a) == 0;
        free(t);
    }
    if (!good) {
        init_mgr = NULL;
        engine_name = "openssl";
    }
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

void kvc_leaf_digest(const void *data, size_t len, uint8_t out[KVC_SHA256_LEN])
{
    pthread_once(&once, pick_engine);
    /* one leaf gains nothing from lanes */
    if (init_mgr && len > KVC_LEAF_LEN && digest_mb(data, len, out))
        return;
    digest_openssl(data, len, out);
}

const char *kvc_leaf_digest_engine(void)
{
    pthread_once(&once, pick_engine);
    return engine_name;
}
#else
void kvc_leaf_digest(const void *data, size_t len, uint8_t out[KVC_SHA256_LEN]) { digest_openssl(data, len, out); }

const char *kvc_leaf_digest_engine(void) { return "openssl"; }
#endif
