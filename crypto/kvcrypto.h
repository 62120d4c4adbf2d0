/* kvcrypto.h: Ed25519 keys and signatures, key ids, the loader's trust store, and SHA-256,
 * all through OpenSSL libcrypto. The whole public contract of crypto/. */
#ifndef KVPUB_KVCRYPTO_H
#define KVPUB_KVCRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define KVC_WUR __attribute__((warn_unused_result))

/* Stable status values: tools map them to exit codes, never renumber. */
typedef enum kvc_status {
    KVC_OK = 0,
    KVC_ERR_IO = 1,          /* file could not be read/written */
    KVC_ERR_FORMAT = 2,      /* not a PEM Ed25519 key, bad hex, ... */
    KVC_ERR_PERM = 3,        /* private key readable by group/others, file exists, or a
                                world-writable trust directory */
    KVC_ERR_BAD_SIG = 4,     /* signature does not verify */
    KVC_ERR_UNTRUSTED = 5,   /* key id not in the trust directory */
    KVC_ERR_REVOKED = 6,     /* key id listed in the revocation list */
    KVC_ERR_NOMEM = 7,
    KVC_ERR_INTERNAL = 8,    /* OpenSSL failed unexpectedly */
} kvc_status;

/* Short constant name of a status ("bad signature", ...). Never NULL. */
const char *kvc_status_str(kvc_status st);

enum {
    KVC_SHA256_LEN = 32,
    KVC_KEYID_LEN = 8,       /* first 8 bytes of SHA-256(raw 32-byte public key) */
    KVC_PUBKEY_LEN = 32,
    KVC_SIG_LEN = 64,
};

/* ---- SHA-256 ---- */

/* One-shot SHA-256 of len bytes. */
void kvc_sha256(const void *data, size_t len, uint8_t out[KVC_SHA256_LEN]);

/* Streaming SHA-256. create returns NULL only when out of memory; free(NULL) is a no-op.
 * After final() the context is reset and may be reused. */
typedef struct kvc_sha256_ctx kvc_sha256_ctx;
kvc_sha256_ctx *kvc_sha256_create(void);
void kvc_sha256_update(kvc_sha256_ctx *c, const void *data, size_t len);
void kvc_sha256_final(kvc_sha256_ctx *c, uint8_t out[KVC_SHA256_LEN]);
void kvc_sha256_free(kvc_sha256_ctx *c);

/* The kvblob chunk digest (spec/kvblob.md, "Chunk digest"): SHA-256 over the concatenated
 * SHA-256s of the 32 KiB leaves of data (the last leaf may be shorter; no data, no leaves).
 * Leaves are hashed side by side where intel-ipsec-mb is available, else one by one through
 * OpenSSL; the bytes are the same either way. Thread-safe. */
enum { KVC_LEAF_LEN = 32768 };
void kvc_leaf_digest(const void *data, size_t len, uint8_t out[KVC_SHA256_LEN]);
/* The same digest over data that arrives in pieces (a file read piece by piece, each piece
 * hashed while it is still in cache): every piece but the last a whole number of leaves.
 * begin returns NULL only when out of memory; end writes the digest and frees the context. */
typedef struct kvc_leaf_ctx kvc_leaf_ctx;
kvc_leaf_ctx *kvc_leaf_begin(void);
void kvc_leaf_update(kvc_leaf_ctx *c, const void *data, size_t len);
void kvc_leaf_end(kvc_leaf_ctx *c, uint8_t out[KVC_SHA256_LEN]);
/* What kvc_leaf_digest runs on, e.g. "intel-ipsec-mb avx512 (16 lanes)" or "openssl"
 * (KVPUB_LEAF_HASH=openssl in the environment forces the latter; =sse, =avx512 or =avx2 that
 * intel-ipsec-mb manager where the CPU has it). Never NULL. */
const char *kvc_leaf_digest_engine(void);
/* Readies what n threads hashing leaves at once take: the engine choice (about 1 ms of trial
 * hashing, once per process) and n started managers, kept for the kvc_leaf_begin calls that
 * follow (at most 16 are kept). For a process that readies itself before it times a load. */
void kvc_leaf_reserve(int n);
/* Managers started and kept for the next kvc_leaf_begin calls (0 with OpenSSL). */
int kvc_leaf_kept(void);

/* Lowercase hex of n bytes into out (2n+1 bytes incl. NUL). Returns out. */
char *kvc_hex(const uint8_t *bytes, size_t n, char *out);
/* Parses exactly 2n lowercase or uppercase hex digits (NUL-terminated) into out.
 * Returns KVC_OK or KVC_ERR_FORMAT. */
kvc_status kvc_unhex(const char *hex, uint8_t *out, size_t n) KVC_WUR;

/* Standard padded base64 (RFC 4648 section 4, no line breaks) of len bytes: a new
 * NUL-terminated string (caller frees; *outlen, optional, gets its length), NULL when out of
 * memory. */
char *kvc_base64_encode(const void *data, size_t len, size_t *outlen);
/* Decodes exactly that form (len characters, need not be NUL-terminated): anything else, a
 * non-canonical last character included, is KVC_ERR_FORMAT, so one byte string has one
 * encoding. On KVC_OK *out is a new buffer of *outlen bytes (caller frees). */
kvc_status kvc_base64_decode(const char *text, size_t len, uint8_t **out, size_t *outlen) KVC_WUR;

/* ---- keys ---- */

/* An Ed25519 key: private (can sign and verify) or public only. Opaque. */
typedef struct kvc_key kvc_key;

/* Generates a new private key. Returns NULL on failure. */
kvc_key *kvc_key_generate(void) KVC_WUR;
void kvc_key_free(kvc_key *k); /* wipes secrets; NULL is a no-op */

/* Writes PREFIX.key (PKCS#8 PEM, mode 0600, created exclusively: an existing file is
 * KVC_ERR_PERM) and PREFIX.pub (SubjectPublicKeyInfo PEM, 0644). Both are written to a
 * temporary name, fsynced and renamed, so a crash leaves no half-written key. */
kvc_status kvc_key_write_pair(const kvc_key *k, const char *prefix, char *err, size_t errlen) KVC_WUR;

/* Loads a PEM private key. Refuses (KVC_ERR_PERM) a file readable or writable by group or
 * others. On success *out owns a new key. */
kvc_status kvc_key_load_private(const char *path, kvc_key **out, char *err, size_t errlen) KVC_WUR;
/* Loads a PEM public key (or derives the public half of a private key file). */
kvc_status kvc_key_load_public(const char *path, kvc_key **out, char *err, size_t errlen) KVC_WUR;
/* Makes a public key from 32 raw bytes. */
kvc_status kvc_key_from_raw_public(const uint8_t raw[KVC_PUBKEY_LEN], kvc_key **out) KVC_WUR;
/* Makes a private key from its 32-byte raw seed (RFC 8032 "secret key"); for test vectors
 * and import. The caller should wipe raw afterwards. */
kvc_status kvc_key_from_raw_private(const uint8_t raw[KVC_PUBKEY_LEN], kvc_key **out) KVC_WUR;
/* Parses a PEM public key held in memory (len bytes, need not be NUL-terminated). */
kvc_status kvc_key_from_pem_public(const char *pem, size_t len, kvc_key **out) KVC_WUR;

/* The public half of k as SubjectPublicKeyInfo PEM text: a new NUL-terminated string (caller
 * frees), NULL when out of memory. */
char *kvc_key_public_pem(const kvc_key *k);
/* Writes the public half of k to path (PEM, 0644) through a temporary file, fsync and rename,
 * replacing what was there. */
kvc_status kvc_key_write_public(const kvc_key *k, const char *path, char *err, size_t errlen) KVC_WUR;

void kvc_key_raw_public(const kvc_key *k, uint8_t raw[KVC_PUBKEY_LEN]);
void kvc_key_id(const kvc_key *k, uint8_t id[KVC_KEYID_LEN]);
int kvc_key_is_private(const kvc_key *k);

/* Ed25519 signature of msg. k must be private. */
kvc_status kvc_sign(const kvc_key *k, const void *msg, size_t len, uint8_t sig[KVC_SIG_LEN]) KVC_WUR;
/* Returns KVC_OK when sig is a valid signature of msg by k, KVC_ERR_BAD_SIG otherwise. */
kvc_status kvc_verify(const kvc_key *k, const void *msg, size_t len, const uint8_t sig[KVC_SIG_LEN]) KVC_WUR;

/* ---- trust store ----
 * A directory of public keys, one PEM per file named *.pub, plus an optional file named
 * "revoked" listing revoked key ids as 16 hex digits, one per line ('#' starts a comment).
 * A revoked id is refused even when its .pub file is still present. */
typedef struct kvc_trust kvc_trust;

/* Reads the directory. A malformed *.pub or revocation line is an error naming the file
 * (and line); a directory, key or revocation file writable by every user is refused
 * (KVC_ERR_PERM): anyone could change whom it trusts. On success *out owns the store. */
kvc_status kvc_trust_open(const char *dir, kvc_trust **out, char *err, size_t errlen) KVC_WUR;
void kvc_trust_free(kvc_trust *t);

/* Finds the key with this id. Returns KVC_OK and sets *key (borrowed, lives as long as t),
 * KVC_ERR_REVOKED, or KVC_ERR_UNTRUSTED. */
kvc_status kvc_trust_lookup(const kvc_trust *t, const uint8_t id[KVC_KEYID_LEN], const kvc_key **key) KVC_WUR;

/* Number of trusted (not revoked) keys, and the i-th of them (borrowed). */
size_t kvc_trust_count(const kvc_trust *t);
const kvc_key *kvc_trust_key(const kvc_trust *t, size_t i);
/* Number of revoked ids, and the i-th of them. */
size_t kvc_trust_revoked_count(const kvc_trust *t);
const uint8_t *kvc_trust_revoked_id(const kvc_trust *t, size_t i);

/* Fills buf with n bytes from OpenSSL's CSPRNG. Returns KVC_OK or KVC_ERR_INTERNAL. */
kvc_status kvc_random_bytes(void *buf, size_t n) KVC_WUR;

/* Overwrites n bytes with zeros in a way the compiler keeps (OPENSSL_cleanse). */
void kvc_wipe(void *p, size_t n);

#endif
