/* test_crypto.c: crypto/ against published vectors (FIPS 180 SHA-256, RFC 8032 Ed25519),
 * key files on disk (modes, refusal to overwrite, permission checks) and the trust store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/kvcrypto.h"
#include "tests/unit/test_util.h"

/* ---- helpers ---- */

static void unhex_or_fail(const char *hex, uint8_t *out, size_t n)
{
    assert_int_equal(kvc_unhex(hex, out, n), KVC_OK);
}

static void assert_hex_eq(const uint8_t *bytes, size_t n, const char *want)
{
    char got[2 * 64 + 1];
    assert_true(n <= 64);
    assert_string_equal(kvc_hex(bytes, n, got), want);
}

static void write_text(const char *path, const char *text)
{
    tu_write_file(path, text, strlen(text));
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The files kvc_key_write_pair makes for DIR/NAME: prefix DIR/NAME, DIR/NAME.key, DIR/NAME.pub. */
static void pair_paths(const char *dir, const char *name, char prefix[256], char key[300], char pub[300])
{
    snprintf(prefix, 256, "%s/%s", dir, name);
    snprintf(key, 300, "%s.key", prefix);
    snprintf(pub, 300, "%s.pub", prefix);
}

/* A fresh key pair written as DIR/NAME.{key,pub} (paths as pair_paths gives them); returns
 * the key. */
static kvc_key *write_new_pair(const char *dir, const char *name, char prefix[256], char key[300], char pub[300])
{
    pair_paths(dir, name, prefix, key, pub);
    char err[512] = "";
    kvc_key *k = kvc_key_generate();
    assert_non_null(k);
    assert_int_equal(kvc_key_write_pair(k, prefix, err, sizeof err), KVC_OK);
    return k;
}

static mode_t file_mode(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

/* ---- SHA-256 ---- */

static const struct {
    const char *msg;
    const char *digest;
} sha_vectors[] = {
    /* FIPS 180-2 appendix B and the empty message */
    {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
    {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
    {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
};

static void test_sha256_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof sha_vectors / sizeof sha_vectors[0]; i++) {
        uint8_t d[KVC_SHA256_LEN];
        kvc_sha256(sha_vectors[i].msg, strlen(sha_vectors[i].msg), d);
        assert_hex_eq(d, sizeof d, sha_vectors[i].digest);

        /* the streaming API gives the same digest, one byte at a time */
        kvc_sha256_ctx *c = kvc_sha256_create();
        assert_non_null(c);
        for (size_t j = 0; sha_vectors[i].msg[j]; j++)
            kvc_sha256_update(c, sha_vectors[i].msg + j, 1);
        kvc_sha256_final(c, d);
        assert_hex_eq(d, sizeof d, sha_vectors[i].digest);
        kvc_sha256_free(c);
    }
}

static void test_sha256_million_a_streamed(void **state)
{
    (void)state;
    char block[4099];
    memset(block, 'a', sizeof block);
    kvc_sha256_ctx *c = kvc_sha256_create();
    assert_non_null(c);
    /* odd piece sizes so no update lines up with the 64-byte block boundary */
    static const size_t pieces[] = {1, 63, 65, 127, 4099, 3, 1000, 17};
    size_t left = 1000000, k = 0;
    while (left) {
        size_t n = pieces[k++ % (sizeof pieces / sizeof pieces[0])];
        if (n > left)
            n = left;
        kvc_sha256_update(c, block, n);
        left -= n;
    }
    uint8_t d[KVC_SHA256_LEN];
    kvc_sha256_final(c, d);
    assert_hex_eq(d, sizeof d, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

    /* the context is reusable after final() */
    kvc_sha256_update(c, "abc", 3);
    kvc_sha256_final(c, d);
    assert_hex_eq(d, sizeof d, sha_vectors[0].digest);
    kvc_sha256_free(c);
    kvc_sha256_free(NULL);
}

/* The chunk digest of spec/kvblob.md composed again from one-shot SHA-256s. */
static void leaf_reference(const uint8_t *p, size_t len, uint8_t out[KVC_SHA256_LEN])
{
    size_t n = (len + KVC_LEAF_LEN - 1) / KVC_LEAF_LEN;
    uint8_t *cat = malloc(n * KVC_SHA256_LEN + 1);
    assert_non_null(cat);
    for (size_t i = 0; i < n; i++) {
        size_t at = i * KVC_LEAF_LEN;
        kvc_sha256(p + at, len - at < KVC_LEAF_LEN ? len - at : KVC_LEAF_LEN, cat + i * KVC_SHA256_LEN);
    }
    kvc_sha256(cat, n * KVC_SHA256_LEN, out);
    free(cat);
}

enum { LEAF_BUF = 40 * KVC_LEAF_LEN + 1000 };

typedef struct leaf_job {
    const uint8_t *buf;
    int seed, bad;
} leaf_job;

static void *leaf_thread(void *arg)
{
    leaf_job *j = arg;
    for (int i = 0; i < 12; i++) {
        size_t len = (size_t)(j->seed * 7919 + i * 104729) % (LEAF_BUF - 1) + 1;
        uint8_t a[KVC_SHA256_LEN], b[KVC_SHA256_LEN];
        kvc_leaf_digest(j->buf + j->seed, len - (size_t)j->seed % len, a);
        leaf_reference(j->buf + j->seed, len - (size_t)j->seed % len, b);
        j->bad += memcmp(a, b, sizeof a) != 0;
    }
    return NULL;
}

static void test_leaf_digest(void **state)
{
    (void)state;
    uint8_t d[KVC_SHA256_LEN], r[KVC_SHA256_LEN];
    assert_non_null(kvc_leaf_digest_engine());
    /* known answers (computed with `openssl dgst` and Python's hashlib): one leaf is
     * SHA-256(SHA-256(m)); no data hashes no leaves; one million 'a' are 30 full leaves and
     * one of 16 960 bytes */
    kvc_leaf_digest("abc", 3, d);
    assert_hex_eq(d, sizeof d, "4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358");
    kvc_leaf_digest("", 0, d);
    assert_hex_eq(d, sizeof d, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    uint8_t *a = malloc(1000000);
    assert_non_null(a);
    memset(a, 'a', 1000000);
    kvc_leaf_digest(a, 1000000, d);
    assert_hex_eq(d, sizeof d, "e38bc18652af83b8114b4c4c339984439aac9e0c099ac62f3a99e974bae57702");
    free(a);

    /* every boundary: leaf, batch of leaves (32 in crypto/leafhash.c), unaligned starts */
    uint8_t *buf = malloc(LEAF_BUF);
    assert_non_null(buf);
    for (size_t i = 0; i < LEAF_BUF; i++)
        buf[i] = (uint8_t)(i * 2654435761u >> 13);
    static const size_t lens[] = {1, 63, 64, 65, KVC_LEAF_LEN - 1, KVC_LEAF_LEN, KVC_LEAF_LEN + 1,
                                  2 * KVC_LEAF_LEN, 3 * KVC_LEAF_LEN - 7, 32 * KVC_LEAF_LEN,
                                  32 * KVC_LEAF_LEN + 1, 33 * KVC_LEAF_LEN, 39 * KVC_LEAF_LEN + 999};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++)
        for (size_t off = 0; off < 3; off++) {
            kvc_leaf_digest(buf + off, lens[i], d);
            leaf_reference(buf + off, lens[i], r);
            if (memcmp(d, r, sizeof d) != 0)
                fail_msg("leaf digest of %zu bytes at offset %zu differs from the reference", lens[i], off);
        }
    /* in pieces (kvc_leaf_begin/update/end): every piece but the last whole leaves, of 1 to 20
     * leaves (across the batches of 32), and a first piece of none */
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        kvc_leaf_ctx *c = kvc_leaf_begin();
        assert_non_null(c);
        kvc_leaf_update(c, buf, 0);
        for (size_t at = 0, step = 1; at < lens[i]; at += step * KVC_LEAF_LEN, step = step % 20 + 7) {
            const size_t n = lens[i] - at < step * KVC_LEAF_LEN ? lens[i] - at : step * KVC_LEAF_LEN;
            kvc_leaf_update(c, buf + 1 + at, n);
        }
        kvc_leaf_end(c, d);
        leaf_reference(buf + 1, lens[i], r);
        if (memcmp(d, r, sizeof d) != 0)
            fail_msg("leaf digest of %zu bytes in pieces differs from the reference", lens[i]);
    }
    /* one changed byte in the last leaf changes the digest */
    kvc_leaf_digest(buf, 3 * KVC_LEAF_LEN, d);
    buf[3 * KVC_LEAF_LEN - 1] ^= 1;
    kvc_leaf_digest(buf, 3 * KVC_LEAF_LEN, r);
    buf[3 * KVC_LEAF_LEN - 1] ^= 1;
    assert_memory_not_equal(d, r, sizeof d);

    /* several threads at once share the engine's contexts safely */
    pthread_t th[4];
    leaf_job jobs[4];
    for (int t = 0; t < 4; t++) {
        jobs[t] = (leaf_job){buf, t + 1, 0};
        assert_int_equal(pthread_create(&th[t], NULL, leaf_thread, &jobs[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(jobs[t].bad, 0);
    }
    free(buf);
}

/* kvc_leaf_reserve starts the managers that as many threads hashing at once will borrow, up
 * to the 16 kept; contexts begun after it hash as before, and give their managers back. With
 * OpenSSL (no intel-ipsec-mb, or KVPUB_LEAF_HASH=openssl) there is nothing to keep. */
static void test_leaf_reserve(void **state)
{
    (void)state;
    const int mb = strcmp(kvc_leaf_digest_engine(), "openssl") != 0;
    kvc_leaf_reserve(3);
    assert_true(mb ? kvc_leaf_kept() >= 3 : kvc_leaf_kept() == 0);
    kvc_leaf_reserve(40);
    assert_int_equal(kvc_leaf_kept(), mb ? 16 : 0);
    const int kept = kvc_leaf_kept();
    static uint8_t buf[3 * KVC_LEAF_LEN + 5];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 131u >> 3);
    uint8_t want[KVC_SHA256_LEN], got[KVC_SHA256_LEN];
    leaf_reference(buf, sizeof buf, want);
    kvc_leaf_ctx *c[3];
    for (int i = 0; i < 3; i++) {
        assert_non_null(c[i] = kvc_leaf_begin());
        kvc_leaf_update(c[i], buf, sizeof buf);
    }
    assert_int_equal(kvc_leaf_kept(), mb ? kept - 3 : 0); /* borrowed, none started */
    for (int i = 0; i < 3; i++) {
        kvc_leaf_end(c[i], got);
        assert_memory_equal(got, want, sizeof got);
    }
    assert_int_equal(kvc_leaf_kept(), kept);
}

/* Leaves hashed side by side must not read a byte outside the message: each message here
 * starts right after and ends right before an inaccessible page (a blob mapped from a file
 * ends where its last chunk ends), so an over- or under-read would crash the test. */
static void test_leaf_digest_bounds(void **state)
{
    (void)state;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE), span = 8 * KVC_LEAF_LEN;
    uint8_t *m = mmap(NULL, span + 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    assert_int_equal(mprotect(m, page, PROT_NONE), 0);
    assert_int_equal(mprotect(m + page + span, page, PROT_NONE), 0);
    uint8_t *body = m + page;
    for (size_t i = 0; i < span; i++)
        body[i] = (uint8_t)(i * 40503u >> 7);
    static const size_t lens[] = {2 * KVC_LEAF_LEN, 2 * KVC_LEAF_LEN + 1, 3 * KVC_LEAF_LEN - 1,
                                  3 * KVC_LEAF_LEN + 55, 3 * KVC_LEAF_LEN + 56, 3 * KVC_LEAF_LEN + 64,
                                  5 * KVC_LEAF_LEN + 4095, 8 * KVC_LEAF_LEN};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        uint8_t d[KVC_SHA256_LEN], r[KVC_SHA256_LEN];
        kvc_leaf_digest(body + span - lens[i], lens[i], d); /* ends at the guard page */
        leaf_reference(body + span - lens[i], lens[i], r);
        assert_memory_equal(d, r, sizeof d);
        kvc_leaf_digest(body, lens[i], d); /* starts at the guard page */
        leaf_reference(body, lens[i], r);
        assert_memory_equal(d, r, sizeof d);
    }
    munmap(m, span + 2 * page);
}

static void test_hex(void **state)
{
    (void)state;
    uint8_t b[4];
    assert_int_equal(kvc_unhex("00fFa5", b, 3), KVC_OK);
    assert_int_equal(b[0], 0x00);
    assert_int_equal(b[1], 0xff);
    assert_int_equal(b[2], 0xa5);
    char s[9];
    assert_string_equal(kvc_hex(b, 3, s), "00ffa5");
    assert_int_equal(kvc_unhex("00ff", b, 3), KVC_ERR_FORMAT);     /* too short */
    assert_int_equal(kvc_unhex("00ffa5bb", b, 3), KVC_ERR_FORMAT); /* too long */
    assert_int_equal(kvc_unhex("00fga5", b, 3), KVC_ERR_FORMAT);   /* not hex */
    assert_int_equal(kvc_unhex(NULL, b, 3), KVC_ERR_FORMAT);
}

static void test_random_bytes(void **state)
{
    (void)state;
    uint8_t a[64], b[64], zero[64] = {0};
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    assert_int_equal(kvc_random_bytes(a, sizeof a), KVC_OK);
    assert_int_equal(kvc_random_bytes(b, sizeof b), KVC_OK);
    /* 2^-512 chance of a false failure */
    assert_memory_not_equal(a, zero, sizeof a);
    assert_memory_not_equal(a, b, sizeof a);
    assert_int_equal(kvc_random_bytes(a, 0), KVC_OK);
    kvc_wipe(a, sizeof a);
    assert_memory_equal(a, zero, sizeof a);
}

/* ---- Ed25519 (RFC 8032 section 7.1, tests 1 and 2) ---- */

static const struct {
    const char *secret, *public, *msg, *sig, *key_id;
} ed_vectors[] = {
    {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
     /* from: openssl pkey -pubout -outform DER | tail -c 32 | sha256sum */
     "21fe31dfa154a261"},
    {"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
     "39f713d0a644253f"},
};

static void test_ed25519_rfc8032(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ed_vectors / sizeof ed_vectors[0]; i++) {
        uint8_t sk[32], pk[32], want_sig[64], msg[8], sig[64], raw[32], id[KVC_KEYID_LEN];
        size_t mlen = strlen(ed_vectors[i].msg) / 2;
        unhex_or_fail(ed_vectors[i].secret, sk, 32);
        unhex_or_fail(ed_vectors[i].public, pk, 32);
        unhex_or_fail(ed_vectors[i].sig, want_sig, 64);
        unhex_or_fail(ed_vectors[i].msg, msg, mlen);

        kvc_key *k = NULL;
        assert_int_equal(kvc_key_from_raw_private(sk, &k), KVC_OK);
        assert_true(kvc_key_is_private(k));
        kvc_key_raw_public(k, raw);
        assert_memory_equal(raw, pk, 32);
        kvc_key_id(k, id);
        assert_hex_eq(id, sizeof id, ed_vectors[i].key_id);

        assert_int_equal(kvc_sign(k, msg, mlen, sig), KVC_OK);
        assert_memory_equal(sig, want_sig, 64); /* Ed25519 is deterministic */

        kvc_key *pub = NULL;
        assert_int_equal(kvc_key_from_raw_public(pk, &pub), KVC_OK);
        assert_false(kvc_key_is_private(pub));
        assert_int_equal(kvc_verify(pub, msg, mlen, want_sig), KVC_OK);
        want_sig[63] ^= 0x01;
        assert_int_equal(kvc_verify(pub, msg, mlen, want_sig), KVC_ERR_BAD_SIG);
        /* a public key cannot sign */
        assert_int_not_equal(kvc_sign(pub, msg, mlen, sig), KVC_OK);
        kvc_key_free(pub);
        kvc_key_free(k);
    }
}

static void test_sign_verify_roundtrip(void **state)
{
    (void)state;
    kvc_key *k = kvc_key_generate();
    assert_non_null(k);
    uint8_t msg[300];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 7 + 3);
    uint8_t sig[KVC_SIG_LEN];
    assert_int_equal(kvc_sign(k, msg, sizeof msg, sig), KVC_OK);
    assert_int_equal(kvc_verify(k, msg, sizeof msg, sig), KVC_OK);

    /* flip every 37th bit of the signature, one at a time */
    for (size_t bit = 0; bit < 8 * KVC_SIG_LEN; bit += 37) {
        sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        assert_int_equal(kvc_verify(k, msg, sizeof msg, sig), KVC_ERR_BAD_SIG);
        sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    msg[150] ^= 0x10;
    assert_int_equal(kvc_verify(k, msg, sizeof msg, sig), KVC_ERR_BAD_SIG);
    msg[150] ^= 0x10;
    assert_int_equal(kvc_verify(k, msg, sizeof msg - 1, sig), KVC_ERR_BAD_SIG);

    /* a different key does not verify it */
    kvc_key *other = kvc_key_generate();
    assert_non_null(other);
    assert_int_equal(kvc_verify(other, msg, sizeof msg, sig), KVC_ERR_BAD_SIG);
    kvc_key_free(other);
    kvc_key_free(k);
    kvc_key_free(NULL);
}

/* ---- key files ---- */

static void test_write_pair_and_load(void **state)
{
    const char *dir = *state;
    char prefix[256], keypath[300], pubpath[300], err[512] = "";
    kvc_key *k = write_new_pair(dir, "pub1", prefix, keypath, pubpath);
    assert_int_equal(file_mode(keypath), 0600);
    assert_int_equal(file_mode(pubpath), 0644);
    assert_non_null(strstr(read_text(keypath), "-----BEGIN PRIVATE KEY-----"));
    assert_non_null(strstr(read_text(pubpath), "-----BEGIN PUBLIC KEY-----"));

    uint8_t id0[8], id1[8], id2[8], id3[8];
    kvc_key_id(k, id0);
    kvc_key *priv = NULL, *pub = NULL, *pub_from_priv = NULL;
    assert_int_equal(kvc_key_load_private(keypath, &priv, err, sizeof err), KVC_OK);
    assert_true(kvc_key_is_private(priv));
    assert_int_equal(kvc_key_load_public(pubpath, &pub, err, sizeof err), KVC_OK);
    assert_false(kvc_key_is_private(pub));
    assert_int_equal(kvc_key_load_public(keypath, &pub_from_priv, err, sizeof err), KVC_OK);
    assert_false(kvc_key_is_private(pub_from_priv));
    kvc_key_id(priv, id1);
    kvc_key_id(pub, id2);
    kvc_key_id(pub_from_priv, id3);
    assert_memory_equal(id0, id1, 8);
    assert_memory_equal(id0, id2, 8);
    assert_memory_equal(id0, id3, 8);

    /* the reloaded private key signs what the public file verifies */
    uint8_t sig[64];
    assert_int_equal(kvc_sign(priv, "hello", 5, sig), KVC_OK);
    assert_int_equal(kvc_verify(pub, "hello", 5, sig), KVC_OK);

    /* public PEM parsed from memory (not NUL-terminated) */
    const char *pem = read_text(pubpath);
    size_t plen = strlen(pem);
    char *copy = malloc(plen);
    assert_non_null(copy);
    memcpy(copy, pem, plen);
    kvc_key *mem = NULL;
    assert_int_equal(kvc_key_from_pem_public(copy, plen, &mem), KVC_OK);
    kvc_key_id(mem, id3);
    assert_memory_equal(id0, id3, 8);
    kvc_key_free(mem);
    assert_int_equal(kvc_key_from_pem_public(copy, plen / 2, &mem), KVC_ERR_FORMAT);
    assert_null(mem);
    free(copy);

    kvc_key_free(priv);
    kvc_key_free(pub);
    kvc_key_free(pub_from_priv);
    kvc_key_free(k);
}

static void test_write_pair_refuses_existing(void **state)
{
    const char *dir = *state;
    char prefix[256], keypath[300], pubpath[300], before[8192], err[512] = "";
    kvc_key *a = write_new_pair(dir, "dup", prefix, keypath, pubpath), *b = kvc_key_generate();
    assert_non_null(b);
    snprintf(before, sizeof before, "%s", read_text(keypath));
    err[0] = '\0';
    assert_int_equal(kvc_key_write_pair(b, prefix, err, sizeof err), KVC_ERR_PERM);
    assert_non_null(strstr(err, "already exists"));
    assert_string_equal(read_text(keypath), before); /* untouched */

    /* only the .pub exists: still refused, and no .key appears */
    char prefix2[256], key2[300], pub2[300];
    pair_paths(dir, "half", prefix2, key2, pub2);
    write_text(pub2, "placeholder\n");
    assert_int_equal(kvc_key_write_pair(b, prefix2, err, sizeof err), KVC_ERR_PERM);
    assert_int_equal(access(key2, F_OK), -1);

    /* no temporary files left behind in the directory */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | grep -q tmp", dir);
    assert_int_not_equal(system(cmd), 0);

    /* a public-only key cannot be written as a pair */
    uint8_t raw[32];
    kvc_key_raw_public(a, raw);
    kvc_key *pub = NULL;
    assert_int_equal(kvc_key_from_raw_public(raw, &pub), KVC_OK);
    char prefix3[256];
    snprintf(prefix3, sizeof prefix3, "%s/pubonly", dir);
    assert_int_not_equal(kvc_key_write_pair(pub, prefix3, err, sizeof err), KVC_OK);
    kvc_key_free(pub);
    kvc_key_free(a);
    kvc_key_free(b);
}

static void test_private_key_permissions(void **state)
{
    const char *dir = *state;
    char prefix[256], keypath[300], pubpath[300], err[512] = "";
    kvc_key_free(write_new_pair(dir, "perm", prefix, keypath, pubpath));

    static const mode_t bad[] = {0644, 0640, 0604, 0602, 0620};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(chmod(keypath, bad[i]), 0);
        kvc_key *out = (kvc_key *)1;
        err[0] = '\0';
        assert_int_equal(kvc_key_load_private(keypath, &out, err, sizeof err), KVC_ERR_PERM);
        assert_null(out);
        assert_non_null(strstr(err, keypath));
        assert_non_null(strstr(err, "group or others"));
    }
    assert_int_equal(chmod(keypath, 0400), 0);
    kvc_key *out = NULL;
    assert_int_equal(kvc_key_load_private(keypath, &out, err, sizeof err), KVC_OK);
    kvc_key_free(out);
}

static void test_load_errors(void **state)
{
    const char *dir = *state;
    char path[300], err[512] = "";
    kvc_key *k = NULL;

    snprintf(path, sizeof path, "%s/missing.key", dir);
    assert_int_equal(kvc_key_load_private(path, &k, err, sizeof err), KVC_ERR_IO);
    assert_non_null(strstr(err, "missing.key"));

    snprintf(path, sizeof path, "%s/junk.pub", dir);
    write_text(path, "-----BEGIN PUBLIC KEY-----\nnot base64 at all!\n-----END PUBLIC KEY-----\n");
    assert_int_equal(kvc_key_load_public(path, &k, err, sizeof err), KVC_ERR_FORMAT);
    assert_non_null(strstr(err, "junk.pub"));
    assert_null(k);

    /* a valid PEM key of the wrong algorithm (a P-256 public key) is refused */
    snprintf(path, sizeof path, "%s/ec.pub", dir);
    write_text(path, "-----BEGIN PUBLIC KEY-----\n"
                     "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEcgP/WqMIzSXN41m00E5PmpkWNaRM\n"
                     "gArMhTr174fFzi/z7IS5UJpElJ2RrVsmIlC/l81SNIayhPqZ5uxNTuyGNQ==\n"
                     "-----END PUBLIC KEY-----\n");
    assert_int_equal(kvc_key_load_public(path, &k, err, sizeof err), KVC_ERR_FORMAT);

    snprintf(path, sizeof path, "%s/junk.key", dir);
    write_text(path, "hello\n");
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(kvc_key_load_private(path, &k, err, sizeof err), KVC_ERR_FORMAT);
    assert_non_null(strstr(err, "junk.key"));

    /* a directory is not a key file */
    assert_int_equal(kvc_key_load_public(dir, &k, err, sizeof err), KVC_ERR_IO);

    assert_non_null(kvc_status_str(KVC_ERR_BAD_SIG));
    assert_string_equal(kvc_status_str(KVC_ERR_REVOKED), "revoked key");
    assert_non_null(kvc_status_str((kvc_status)999));
}

/* ---- trust store ---- */

/* Writes a fresh key pair as DIR/NAME.{key,pub} and returns its id. */
static void make_pair(const char *dir, const char *name, uint8_t id[8])
{
    char prefix[256], key[300], pub[300];
    kvc_key *k = write_new_pair(dir, name, prefix, key, pub);
    kvc_key_id(k, id);
    kvc_key_free(k);
}

static void test_trust_dir(void **state)
{
    const char *dir = *state;
    char tdir[300], keys[300], path[1024], err[512] = "", hex[17];
    snprintf(tdir, sizeof tdir, "%s/trust", dir);
    snprintf(keys, sizeof keys, "%s/keys", dir);
    assert_int_equal(mkdir(tdir, 0755), 0);
    assert_int_equal(mkdir(keys, 0700), 0);

    uint8_t ida[8], idb[8], idc[8], idu[8];
    make_pair(keys, "a", ida);
    make_pair(keys, "b", idb);
    make_pair(keys, "c", idc);
    make_pair(keys, "u", idu);
    const char *names[] = {"a", "b", "c"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "cp '%s/%s.pub' '%s/%s.pub'", keys, names[i], tdir, names[i]);
        assert_int_equal(system(path), 0);
    }
    /* a non-.pub file is ignored */
    snprintf(path, sizeof path, "%s/README", tdir);
    write_text(path, "not a key\n");

    kvc_trust *t = NULL;
    assert_int_equal(kvc_trust_open(tdir, &t, err, sizeof err), KVC_OK);
    assert_int_equal(kvc_trust_count(t), 3);
    assert_int_equal(kvc_trust_revoked_count(t), 0);
    const kvc_key *found = NULL;
    assert_int_equal(kvc_trust_lookup(t, ida, &found), KVC_OK);
    uint8_t got[8];
    kvc_key_id(found, got);
    assert_memory_equal(got, ida, 8);
    assert_false(kvc_key_is_private(found));
    assert_int_equal(kvc_trust_lookup(t, idu, &found), KVC_ERR_UNTRUSTED);
    assert_null(found);
    kvc_trust_free(t);

    /* revoke b (still present as b.pub); comments, blanks, CRLF and upper case allowed */
    char revoked[512], hexb[17];
    kvc_hex(idb, 8, hexb);
    for (char *p = hexb; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    snprintf(revoked, sizeof revoked, "# revoked publisher keys\n\n  %s   # leaked 2024-01-01\r\n%s\n", hexb,
             kvc_hex(idu, 8, hex));
    snprintf(path, sizeof path, "%s/revoked", tdir);
    write_text(path, revoked);
    assert_int_equal(kvc_trust_open(tdir, &t, err, sizeof err), KVC_OK);
    assert_int_equal(kvc_trust_count(t), 2);
    assert_int_equal(kvc_trust_revoked_count(t), 2);
    assert_memory_equal(kvc_trust_revoked_id(t, 0), idb, 8);
    assert_int_equal(kvc_trust_lookup(t, idb, &found), KVC_ERR_REVOKED);
    assert_int_equal(kvc_trust_lookup(t, idu, &found), KVC_ERR_REVOKED);
    assert_int_equal(kvc_trust_lookup(t, idc, &found), KVC_OK);
    for (size_t i = 0; i < kvc_trust_count(t); i++) {
        kvc_key_id(kvc_trust_key(t, i), got);
        assert_memory_not_equal(got, idb, 8);
    }
    kvc_trust_free(t);

    /* a malformed revocation line is named by file and line */
    write_text(path, "# header\n0123456789abcdef\nnot-a-key-id\n");
    assert_int_equal(kvc_trust_open(tdir, &t, err, sizeof err), KVC_ERR_FORMAT);
    assert_null(t);
    assert_non_null(strstr(err, "revoked:3"));
    assert_non_null(strstr(err, "not-a-key-id"));
    write_text(path, "0123456789abcde\n"); /* 15 digits */
    assert_int_equal(kvc_trust_open(tdir, &t, err, sizeof err), KVC_ERR_FORMAT);
    assert_non_null(strstr(err, "revoked:1"));
    assert_int_equal(unlink(path), 0);

    /* a malformed .pub is named */
    snprintf(path, sizeof path, "%s/broken.pub", tdir);
    write_text(path, "this is not PEM\n");
    assert_int_equal(kvc_trust_open(tdir, &t, err, sizeof err), KVC_ERR_FORMAT);
    assert_null(t);
    assert_non_null(strstr(err, "broken.pub"));
    assert_int_equal(unlink(path), 0);

    /* a private key does not belong in a trust directory */
    snprintf(path, sizeof path, "cp '%s/a.key' '%s/leaked.pub'", keys, tdir);
    assert_int_equal(system(path), 0);
    assert_int_equal(kvc_trust_open(tdir, &t, err, sizeof err), KVC_ERR_FORMAT);
    assert_non_null(strstr(err, "leaked.pub"));

    snprintf(path, sizeof path, "%s/leaked.pub", tdir);
    assert_int_equal(unlink(path), 0);

    /* anything every user may write is refused: the directory, a key, the revocation list */
    assert_int_equal(chmod(tdir, 0777), 0);
    assert_int_equal(kvc_trust_open(tdir, &t, err, sizeof err), KVC_ERR_PERM);
    assert_null(t);
    assert_non_null(strstr(err, "writable by every user (mode 0777)"));
    assert_int_equal(chmod(tdir, 01777), 0); /* sticky: others still add files */
    assert_int_equal(kvc_trust_open(tdir, &t, err, sizeof err), KVC_ERR_PERM);
    assert_int_equal(chmod(tdir, 0775), 0); /* group-writable: a shared admin group, accepted */
    assert_int_equal(kvc_trust_open(tdir, &t, err, sizeof err), KVC_OK);
    kvc_trust_free(t);
    snprintf(path, sizeof path, "%s/a.pub", tdir);
    assert_int_equal(chmod(path, 0666), 0);
    assert_int_equal(kvc_trust_open(tdir, &t, err, sizeof err), KVC_ERR_PERM);
    assert_non_null(strstr(err, "a.pub"));
    assert_int_equal(chmod(path, 0644), 0);
    snprintf(path, sizeof path, "%s/revoked", tdir);
    write_text(path, "0123456789abcdef\n");
    assert_int_equal(chmod(path, 0646), 0);
    assert_int_equal(kvc_trust_open(tdir, &t, err, sizeof err), KVC_ERR_PERM);
    assert_non_null(strstr(err, "revoked"));
    assert_int_equal(unlink(path), 0);
    assert_int_equal(kvc_trust_open(tdir, &t, err, sizeof err), KVC_OK);
    kvc_trust_free(t);

    /* a missing directory */
    snprintf(path, sizeof path, "%s/nope", dir);
    assert_int_equal(kvc_trust_open(path, &t, err, sizeof err), KVC_ERR_IO);
    assert_non_null(strstr(err, "nope"));
    kvc_trust_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_sha256_million_a_streamed),
        cmocka_unit_test(test_leaf_digest),
        cmocka_unit_test(test_leaf_digest_bounds),
        cmocka_unit_test(test_leaf_reserve),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_ed25519_rfc8032),
        cmocka_unit_test(test_sign_verify_roundtrip),
        TU_TMPDIR_TEST(test_write_pair_and_load),
        TU_TMPDIR_TEST(test_write_pair_refuses_existing),
        TU_TMPDIR_TEST(test_private_key_permissions),
        TU_TMPDIR_TEST(test_load_errors),
        TU_TMPDIR_TEST(test_trust_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
