/* leafhash.c: the kvblob (version 2) chunk digest, a SHA-256 hash list over 32 KiB leaves.
 *
 * One SHA-256 stream is latency-bound (on SHA-NI CPUs each sha256rnds2 waits for the one
 * before it), but independent leaves can be hashed side by side. Where intel-ipsec-mb is
 * available (x86-64) its multi-buffer managers hash 2 (SHA-NI), 8 (AVX2) or 16 (AVX-512)
 * leaves at once; elsewhere, or when it fails its start-up self-test, each leaf goes through
 * OpenSSL. Both give the same bytes: the digest is defined by spec/kvblob.md, not by the
 * engine. KVPUB_LEAF_HASH=openssl forces OpenSSL (benchmarks and tests compare the two), =sse,
 * =avx512 or =avx2 one manager. */
#include "crypto/kvcrypto.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

struct kvc_leaf_ctx {
    root root;
    void *mgr; /* an intel-ipsec-mb manager, or NULL: OpenSSL */
};

static size_t leaf_count(size_t len) { return len / KVC_LEAF_LEN + (len % KVC_LEAF_LEN != 0); }

static size_t leaf_len(size_t len, size_t i)
{
    size_t at = i * KVC_LEAF_LEN;
    return len - at < KVC_LEAF_LEN ? len - at : KVC_LEAF_LEN;
}

static void leaves_openssl(root *r, const uint8_t *p, size_t len)
{
    uint8_t d[KVC_SHA256_LEN];
    for (size_t i = 0, n = leaf_count(len); i < n; i++) {
        kvc_sha256(p + i * KVC_LEAF_LEN, leaf_len(len, i), d);
        root_add(r, d, 1);
    }
}

static void digest_openssl(const uint8_t *p, size_t len, uint8_t out[KVC_SHA256_LEN])
{
    root r;
    root_init(&r);
    leaves_openssl(&r, p, len);
    root_final(&r, out);
}

#ifdef KVC_IPSEC_MB
/* Managers are not thread-safe and cost about 60 us to set up, so callers borrow one from a
 * small free list. What stays in the list at exit is still reachable, not leaked. */
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
enum { POOL_MAX = 16 };
static IMB_MGR *pool[POOL_MAX];
static int pool_n;
static const char *engine_name = "openssl";
static void (*init_mgr)(IMB_MGR *);

/* A manager started by init, or NULL. */
static IMB_MGR *mgr_new(void (*init)(IMB_MGR *))
{
    IMB_MGR *m = alloc_mb_mgr(0);
    if (m) {
        init(m);
        if (imb_get_errno(m) != 0) {
            free_mb_mgr(m);
            m = NULL;
        }
    }
    return m;
}

static IMB_MGR *mgr_get(void)
{
    pthread_mutex_lock(&pool_mu);
    IMB_MGR *m = pool_n ? pool[--pool_n] : NULL;
    pthread_mutex_unlock(&pool_mu);
    return m ? m : mgr_new(init_mgr);
}

static void mgr_put(IMB_MGR *m)
{
    pthread_mutex_lock(&pool_mu);
    if (pool_n < POOL_MAX) {
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

static void leaves_with(IMB_MGR *m, root *r, const uint8_t *p, size_t len)
{
    uint8_t d[BATCH * KVC_SHA256_LEN], ok[BATCH];
    for (size_t first = 0, n = leaf_count(len); first < n; first += BATCH) {
        size_t k = n - first < BATCH ? n - first : BATCH;
        batch_mb(m, p, len, first, k, d, ok);
        for (size_t i = 0; i < k; i++)
            if (!ok[i]) /* never seen; the digest must not depend on it */
                kvc_sha256(p + (first + i) * KVC_LEAF_LEN, leaf_len(len, first + i), d + i * KVC_SHA256_LEN);
        root_add(r, d, k);
    }
}

static void digest_with(IMB_MGR *m, const uint8_t *p, size_t len, uint8_t out[KVC_SHA256_LEN])
{
    root r;
    root_init(&r);
    leaves_with(m, &r, p, len);
    root_final(&r, out);
}

static int digest_mb(const uint8_t *p, size_t len, uint8_t out[KVC_SHA256_LEN])
{
    IMB_MGR *m = mgr_get();
    if (!m)
        return 0;
    digest_with(m, p, len, out);
    mgr_put(m);
    return 1;
}

/* The managers a CPU may run (a tie in the measurement goes to the earlier one). */
typedef struct candidate {
    uint64_t need; /* IMB_FEATURE_* bits */
    void (*init)(IMB_MGR *);
    const char *force; /* its KVPUB_LEAF_HASH value */
    const char *name;
} candidate;

static const candidate candidates[] = {
    {IMB_FEATURE_SHANI, init_mb_mgr_sse, "sse", "intel-ipsec-mb sse (SHA-NI, 2 lanes)"},
    {IMB_FEATURE_AVX512_SKX, init_mb_mgr_avx512, "avx512", "intel-ipsec-mb avx512 (16 lanes)"},
    {IMB_FEATURE_AVX2, init_mb_mgr_avx2, "avx2", "intel-ipsec-mb avx2 (8 lanes)"},
};
enum { N_CANDIDATES = sizeof candidates / sizeof candidates[0] };

static double thread_cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* CPU seconds m takes for the leaves of t (n bytes), or -1 when it does not reproduce want
 * (OpenSSL's digest). */
static double trial(IMB_MGR *m, const uint8_t *t, size_t n, const uint8_t want[KVC_SHA256_LEN])
{
    uint8_t got[KVC_SHA256_LEN];
    double s = thread_cpu_s();
    digest_with(m, t, n, got);
    return memcmp(got, want, sizeof got) == 0 ? thread_cpu_s() - s : -1;
}

/* Picks the manager once. Which multi-buffer SHA-256 is fastest depends on the core, not on the
 * features alone: 2 leaves interleaved on SHA-NI hashed 3.0 GB/s on Zen 3 (no AVX-512), but
 * on Zen 5, whose AVX-512 units are full width, 16 AVX-512 lanes ran 4.5 GB/s against SHA-NI's
 * 2.3. So where the CPU has more than one, each hashes a test message of 16 leaves (the widest
 * manager's lanes) twice, alternately, and the faster (best of two, in thread CPU time: a
 * preemption does not count) is kept; about 1 ms, once per process. Every candidate must
 * reproduce OpenSSL's digest of the test message, or it is not used. KVPUB_LEAF_HASH=sse,
 * avx512 or avx2 forces that manager where the CPU has it (else OpenSSL, as =openssl). */
static void pick_engine(void)
{
    const char *force = getenv("KVPUB_LEAF_HASH");
    if (force && strcmp(force, "openssl") == 0)
        return;
    if (force && (!*force || strcmp(force, "auto") == 0))
        force = NULL;
    IMB_MGR *m = alloc_mb_mgr(0);
    if (!m)
        return;
    uint64_t f = m->features;
    free_mb_mgr(m);
    enum { TEST_LEAVES = 16 };
    size_t n = TEST_LEAVES * KVC_LEAF_LEN + 100; /* and a short last leaf */
    uint8_t *t = malloc(n), want[KVC_SHA256_LEN];
    if (!t)
        return;
    for (size_t i = 0; i < n; i++)
        t[i] = (uint8_t)(i * 131 + (i >> 9));
    digest_openssl(t, n, want);
    double best[N_CANDIDATES];
    IMB_MGR *mgr[N_CANDIDATES] = {0};
    int have = 0;
    for (int c = 0; c < N_CANDIDATES; c++) {
        best[c] = -1;
        if ((f & candidates[c].need) != candidates[c].need || (force && strcmp(force, candidates[c].force) != 0))
            continue;
        /* AVX2 (8 lanes) only where neither of the others runs: SHA-NI was measured faster
         * than it (spec/kvblob.md), and AVX-512 has twice its lanes */
        if (have && candidates[c].need == IMB_FEATURE_AVX2)
            continue;
        if ((mgr[c] = mgr_new(candidates[c].init)) != NULL)
            best[c] = trial(mgr[c], t, n, want);
        have += best[c] >= 0;
    }
    for (int c = 0; have > 1 && c < N_CANDIDATES; c++) { /* the second round, where it decides */
        double s = best[c] >= 0 ? trial(mgr[c], t, n, want) : -1;
        if (s >= 0 && s < best[c])
            best[c] = s;
    }
    free(t);
    int pick = -1;
    for (int c = 0; c < N_CANDIDATES; c++)
        if (best[c] >= 0 && (pick < 0 || best[c] < best[pick]))
            pick = c;
    init_mgr = pick >= 0 ? candidates[pick].init : NULL;
    engine_name = pick >= 0 ? candidates[pick].name : "openssl";
    for (int c = 0; c < N_CANDIDATES; c++) {
        if (c == pick)
            mgr_put(mgr[c]); /* started already: the first caller need not start another */
        else if (mgr[c])
            free_mb_mgr(mgr[c]);
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

void kvc_leaf_update(kvc_leaf_ctx *c, const void *data, size_t len)
{
    if (c->mgr)
        leaves_with(c->mgr, &c->root, data, len);
    else
        leaves_openssl(&c->root, data, len);
}

kvc_leaf_ctx *kvc_leaf_begin(void)
{
    pthread_once(&once, pick_engine);
    kvc_leaf_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    root_init(&c->root);
    c->mgr = init_mgr ? mgr_get() : NULL;
    return c;
}

void kvc_leaf_end(kvc_leaf_ctx *c, uint8_t out[KVC_SHA256_LEN])
{
    if (c->mgr)
        mgr_put(c->mgr);
    root_final(&c->root, out);
    free(c);
}

const char *kvc_leaf_digest_engine(void)
{
    pthread_once(&once, pick_engine);
    return engine_name;
}

void kvc_leaf_reserve(int n)
{
    pthread_once(&once, pick_engine);
    if (!init_mgr)
        return;
    IMB_MGR *m[POOL_MAX];
    int k = 0;
    for (; k < n && k < POOL_MAX; k++) /* borrowed, so that each call starts a new one or takes a kept one */
        if (!(m[k] = mgr_get()))
            break;
    while (k > 0)
        mgr_put(m[--k]);
}

int kvc_leaf_kept(void)
{
    pthread_mutex_lock(&pool_mu);
    const int n = pool_n;
    pthread_mutex_unlock(&pool_mu);
    return n;
}
#else
void kvc_leaf_digest(const void *data, size_t len, uint8_t out[KVC_SHA256_LEN]) { digest_openssl(data, len, out); }

void kvc_leaf_update(kvc_leaf_ctx *c, const void *data, size_t len) { leaves_openssl(&c->root, data, len); }

kvc_leaf_ctx *kvc_leaf_begin(void)
{
    kvc_leaf_ctx *c = calloc(1, sizeof *c);
    if (c)
        root_init(&c->root);
    return c;
}

void kvc_leaf_end(kvc_leaf_ctx *c, uint8_t out[KVC_SHA256_LEN])
{
    root_final(&c->root, out);
    free(c);
}

const char *kvc_leaf_digest_engine(void) { return "openssl"; }

void kvc_leaf_reserve(int n) { (void)n; }

int kvc_leaf_kept(void) { return 0; }
#endif
