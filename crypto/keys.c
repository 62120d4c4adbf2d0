/* keys.c: Ed25519 key pairs (generate, PEM files, raw import), key ids, sign and verify,
 * all through OpenSSL EVP. */
#include "crypto/crypto_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

struct kvc_key {
    EVP_PKEY *pkey;
    int is_private;
    uint8_t pub[KVC_PUBKEY_LEN];
    uint8_t id[KVC_KEYID_LEN];
};

kvc_status kvc_read_small_file(const char *path, size_t max, int private_mode, char **out, size_t *outlen,
                               char *err, size_t errlen)
{
    *out = NULL;
    *outlen = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        base_errf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return KVC_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        base_errf(err, errlen, "cannot stat %s: %s", path, strerror(errno));
        close(fd);
        return KVC_ERR_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        base_errf(err, errlen, "%s is not a regular file", path);
        close(fd);
        return KVC_ERR_IO;
    }
    if (private_mode && (st.st_mode & 077)) {
        base_errf(err, errlen, "private key %s is accessible by group or others (mode %04o); expected 0600 (chmod 600 %s)",
                  path, (unsigned)(st.st_mode & 07777), path);
        close(fd);
        return KVC_ERR_PERM;
    }
    if ((uint64_t)st.st_size > max) {
        base_errf(err, errlen, "%s is %lld bytes; expected at most %zu", path, (long long)st.st_size, max);
        close(fd);
        return KVC_ERR_FORMAT;
    }
    size_t cap = (size_t)st.st_size + 1;
    char *buf = malloc(cap);
    if (!buf) {
        close(fd);
        base_errf(err, errlen, "out of memory reading %s", path);
        return KVC_ERR_NOMEM;
    }
    size_t n = 0;
    /* read until EOF, but never past the size seen at fstat time (the file may grow) */
    while (n < cap - 1) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            base_errf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            kvc_wipe(buf, cap);
            free(buf);
            close(fd);
            return KVC_ERR_IO;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *outlen = n;
    return KVC_OK;
}

/* Wraps an EVP_PKEY (taking ownership) after checking it is Ed25519. */
static kvc_status key_wrap(EVP_PKEY *pkey, int is_private, kvc_key **out)
{
    *out = NULL;
    if (EVP_PKEY_get_id(pkey) != EVP_PKEY_ED25519) {
        EVP_PKEY_free(pkey);
        return KVC_ERR_FORMAT;
    }
    kvc_key *k = calloc(1, sizeof *k);
    if (!k) {
        EVP_PKEY_free(pkey);
        return KVC_ERR_NOMEM;
    }
    size_t len = KVC_PUBKEY_LEN;
    if (EVP_PKEY_get_raw_public_key(pkey, k->pub, &len) != 1 || len != KVC_PUBKEY_LEN) {
        ERR_clear_error();
        EVP_PKEY_free(pkey);
        free(k);
        return KVC_ERR_INTERNAL;
    }
    uint8_t h[KVC_SHA256_LEN];
    kvc_sha256(k->pub, sizeof k->pub, h);
    memcpy(k->id, h, KVC_KEYID_LEN);
    k->pkey = pkey;
    k->is_private = is_private;
    *out = k;
    return KVC_OK;
}

kvc_key *kvc_key_generate(void)
{
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!pkey) {
        ERR_clear_error();
        return NULL;
    }
    kvc_key *k = NULL;
    if (key_wrap(pkey, 1, &k) != KVC_OK)
        return NULL;
    return k;
}

void kvc_key_free(kvc_key *k)
{
    if (!k)
        return;
    EVP_PKEY_free(k->pkey); /* OpenSSL cleanses the private scalar when freeing it */
    kvc_wipe(k, sizeof *k);
    free(k);
}

/* A key from its 32 raw bytes: the private seed (priv) or the public point. */
static kvc_status key_from_raw(const uint8_t raw[KVC_PUBKEY_LEN], int priv, kvc_key **out)
{
    *out = NULL;
    EVP_PKEY *pkey = priv ? EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, raw, KVC_PUBKEY_LEN)
                          : EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, raw, KVC_PUBKEY_LEN);
    if (!pkey) {
        ERR_clear_error();
        return KVC_ERR_FORMAT;
    }
    return key_wrap(pkey, priv, out);
}

kvc_status kvc_key_from_raw_public(const uint8_t raw[KVC_PUBKEY_LEN], kvc_key **out)
{
    return key_from_raw(raw, 0, out);
}

kvc_status kvc_key_from_raw_private(const uint8_t raw[KVC_PUBKEY_LEN], kvc_key **out)
{
    return key_from_raw(raw, 1, out);
}

/* Refuses to prompt for a passphrase: keys are unencrypted and tools run unattended. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

/* Parses PEM bytes as a public key, or (if allow_private) as a private key whose public half
 * is kept. */
static kvc_status pem_parse(const char *pem, size_t len, int want_private, int allow_private, kvc_key **out)
{
    *out = NULL;
    if (len > INT_MAX)
        return KVC_ERR_FORMAT;
    EVP_PKEY *pkey = NULL;
    if (!want_private) {
        BIO *b = BIO_new_mem_buf(pem, (int)len);
        if (!b)
            return KVC_ERR_NOMEM;
        pkey = PEM_read_bio_PUBKEY(b, NULL, no_passphrase, NULL);
        BIO_free(b);
        if (pkey)
            return key_wrap(pkey, 0, out);
        ERR_clear_error();
        if (!allow_private)
            return KVC_ERR_FORMAT;
    }
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    if (!b)
        return KVC_ERR_NOMEM;
    pkey = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
    BIO_free(b);
    if (!pkey) {
        ERR_clear_error();
        return KVC_ERR_FORMAT;
    }
    kvc_key *k = NULL;
    kvc_status st = key_wrap(pkey, 1, &k);
    if (st != KVC_OK)
        return st;
    if (!want_private) {
        /* keep only the public half: a loader has no business holding the secret */
        kvc_key *pub = NULL;
        st = kvc_key_from_raw_public(k->pub, &pub);
        kvc_key_free(k);
        k = pub;
        if (st != KVC_OK)
            return st;
    }
    *out = k;
    return KVC_OK;
}

kvc_status kvc_key_from_pem_public(const char *pem, size_t len, kvc_key **out)
{
    return pem_parse(pem, len, 0, 0, out);
}

/* Reads the PEM file at path and parses the private (priv) or public key in it; form says in
 * the error what the file should have held. */
static kvc_status load_pem_file(const char *path, int priv, const char *form, kvc_key **out, char *err,
                                size_t errlen)
{
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    kvc_status st = kvc_read_small_file(path, KVC_MAX_SMALL_FILE, priv, &buf, &len, err, errlen);
    if (st != KVC_OK)
        return st;
    st = pem_parse(buf, len, priv, 1, out);
    /* wiped for a public key too: the file may have been a private key */
    kvc_wipe(buf, len);
    free(buf);
    if (st == KVC_ERR_FORMAT)
        base_errf(err, errlen, "%s is not %s", path, form);
    else if (st != KVC_OK)
        base_errf(err, errlen, "cannot load %s: %s", path, kvc_status_str(st));
    return st;
}

kvc_status kvc_key_load_private(const char *path, kvc_key **out, char *err, size_t errlen)
{
    return load_pem_file(path, 1, "an unencrypted Ed25519 private key in PEM (PKCS#8) form", out, err, errlen);
}

kvc_status kvc_key_load_public(const char *path, kvc_key **out, char *err, size_t errlen)
{
    return load_pem_file(path, 0, "an Ed25519 public key in PEM (SubjectPublicKeyInfo) form", out, err, errlen);
}

void kvc_key_raw_public(const kvc_key *k, uint8_t raw[KVC_PUBKEY_LEN])
{
    memcpy(raw, k->pub, KVC_PUBKEY_LEN);
}

void kvc_key_id(const kvc_key *k, uint8_t id[KVC_KEYID_LEN])
{
    memcpy(id, k->id, KVC_KEYID_LEN);
}

int kvc_key_is_private(const kvc_key *k)
{
    return k->is_private;
}

/* EVP_DigestSign/Verify want a non-NULL pointer even for an empty message. */
static const uint8_t empty_msg[1];

kvc_status kvc_sign(const kvc_key *k, const void *msg, size_t len, uint8_t sig[KVC_SIG_LEN])
{
    if (!k->is_private)
        return KVC_ERR_FORMAT;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return KVC_ERR_NOMEM;
    size_t siglen = KVC_SIG_LEN;
    kvc_status st = KVC_OK;
    /* Ed25519 hashes internally: the digest argument must be NULL */
    if (EVP_DigestSignInit(ctx, NULL, NULL, NULL, k->pkey) != 1 ||
        EVP_DigestSign(ctx, sig, &siglen, len ? msg : empty_msg, len) != 1 || siglen != KVC_SIG_LEN) {
        ERR_clear_error();
        st = KVC_ERR_INTERNAL;
    }
    EVP_MD_CTX_free(ctx);
    return st;
}

kvc_status kvc_verify(const kvc_key *k, const void *msg, size_t len, const uint8_t sig[KVC_SIG_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return KVC_ERR_NOMEM;
    kvc_status st = KVC_ERR_BAD_SIG;
    if (EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, k->pkey) != 1)
        st = KVC_ERR_INTERNAL;
    else if (EVP_DigestVerify(ctx, sig, KVC_SIG_LEN, len ? msg : empty_msg, len) == 1)
        st = KVC_OK;
    ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    return st;
}

/* ---- writing the pair ---- */

/* Serialises k as PEM into a new buffer (*out, *outlen; caller wipes and frees). */
static kvc_status pem_encode(const kvc_key *k, int private_part, char **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return KVC_ERR_NOMEM;
    int ok = private_part ? PEM_write_bio_PrivateKey(b, k->pkey, NULL, NULL, 0, NULL, NULL)
                          : PEM_write_bio_PUBKEY(b, k->pkey);
    char *data = NULL;
    long n = ok == 1 ? BIO_get_mem_data(b, &data) : 0;
    kvc_status st = KVC_OK;
    if (ok != 1 || n <= 0) {
        ERR_clear_error();
        st = KVC_ERR_INTERNAL;
    } else if (!(*out = malloc((size_t)n))) {
        st = KVC_ERR_NOMEM;
    } else {
        memcpy(*out, data, (size_t)n);
        *outlen = (size_t)n;
    }
    if (data && n > 0)
        kvc_wipe(data, (size_t)n);
    BIO_free(b);
    return st;
}

/* Writes data to a fresh temporary file next to final (path returned in tmp), with mode,
 * fsynced. */
static kvc_status write_temp(const char *final, const char *data, size_t len, mode_t mode, char *tmp,
                             size_t tmplen, char *err, size_t errlen)
{
    if ((size_t)snprintf(tmp, tmplen, "%s.tmp.XXXXXX", final) >= tmplen) {
        base_errf(err, errlen, "path too long: %s", final);
        return KVC_ERR_IO;
    }
    int fd = mkstemp(tmp); /* mkstemp creates the file 0600, so the secret is never exposed */
    if (fd < 0) {
        base_errf(err, errlen, "cannot create a temporary file next to %s: %s", final, strerror(errno));
        tmp[0] = '\0';
        return KVC_ERR_IO;
    }
    if (fchmod(fd, mode) != 0 || base_write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        base_errf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        tmp[0] = '\0';
        return KVC_ERR_IO;
    }
    if (close(fd) != 0) {
        base_errf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        unlink(tmp);
        tmp[0] = '\0';
        return KVC_ERR_IO;
    }
    return KVC_OK;
}

/* Moves tmp to final without ever replacing an existing final: link() fails with EEXIST
 * atomically, which a stat-then-rename could not guarantee. */
static kvc_status publish_exclusive(const char *tmp, const char *final, char *err, size_t errlen)
{
    if (link(tmp, final) != 0) {
        int e = errno;
        if (e == EEXIST) {
            base_errf(err, errlen, "%s already exists; refusing to overwrite a key file", final);
            return KVC_ERR_PERM;
        }
        base_errf(err, errlen, "cannot create %s: %s", final, strerror(e));
        return KVC_ERR_IO;
    }
    unlink(tmp);
    return KVC_OK;
}

kvc_status kvc_key_write_pair(const kvc_key *k, const char *prefix, char *err, size_t errlen)
{
    if (!k->is_private) {
        base_errf(err, errlen, "cannot write a key pair from a public key");
        return KVC_ERR_FORMAT;
    }
    char keypath[PATH_MAX], pubpath[PATH_MAX], keytmp[PATH_MAX], pubtmp[PATH_MAX];
    if ((size_t)snprintf(keypath, sizeof keypath, "%s.key", prefix) >= sizeof keypath - 16 ||
        (size_t)snprintf(pubpath, sizeof pubpath, "%s.pub", prefix) >= sizeof pubpath - 16) {
        base_errf(err, errlen, "key path prefix too long: %s", prefix);
        return KVC_ERR_IO;
    }
    /* fail early (before any write) when either name is taken; the link() below is the
     * authoritative check against races */
    struct stat st;
    if (lstat(keypath, &st) == 0 || lstat(pubpath, &st) == 0) {
        base_errf(err, errlen, "%s already exists; refusing to overwrite a key file",
                  lstat(keypath, &st) == 0 ? keypath : pubpath);
        return KVC_ERR_PERM;
    }

    char *keypem = NULL, *pubpem = NULL;
    size_t keylen = 0, publen = 0;
    kvc_status s = pem_encode(k, 1, &keypem, &keylen);
    if (s == KVC_OK)
        s = pem_encode(k, 0, &pubpem, &publen);
    if (s != KVC_OK) {
        base_errf(err, errlen, "cannot encode the key as PEM: %s", kvc_status_str(s));
        goto out;
    }
    keytmp[0] = pubtmp[0] = '\0';
    s = write_temp(keypath, keypem, keylen, 0600, keytmp, sizeof keytmp, err, errlen);
    if (s == KVC_OK)
        s = write_temp(pubpath, pubpem, publen, 0644, pubtmp, sizeof pubtmp, err, errlen);
    if (s == KVC_OK && (s = publish_exclusive(keytmp, keypath, err, errlen)) == KVC_OK)
        keytmp[0] = '\0';
    if (s == KVC_OK) {
        s = publish_exclusive(pubtmp, pubpath, err, errlen);
        if (s == KVC_OK)
            pubtmp[0] = '\0';
        else
            unlink(keypath); /* ours, just created: do not leave half a pair */
    }
    if (keytmp[0])
        unlink(keytmp);
    if (pubtmp[0])
        unlink(pubtmp);
    if (s == KVC_OK)
        base_fsync_parent_dir(keypath);
out:
    if (keypem)
        kvc_wipe(keypem, keylen);
    free(keypem);
    free(pubpem);
    return s;
}

char *kvc_key_public_pem(const kvc_key *k)
{
    char *pem = NULL, *s = NULL;
    size_t len = 0;
    if (pem_encode(k, 0, &pem, &len) == KVC_OK && (s = malloc(len + 1))) {
        memcpy(s, pem, len);
        s[len] = '\0';
    }
    free(pem);
    return s;
}

kvc_status kvc_key_write_public(const kvc_key *k, const char *path, char *err, size_t errlen)
{
    char *pem = NULL, tmp[PATH_MAX];
    size_t len = 0;
    kvc_status s = pem_encode(k, 0, &pem, &len);
    if (s != KVC_OK) {
        base_errf(err, errlen, "cannot encode the key as PEM: %s", kvc_status_str(s));
        return s;
    }
    s = write_temp(path, pem, len, 0644, tmp, sizeof tmp, err, errlen);
    free(pem);
    if (s == KVC_OK && rename(tmp, path) != 0) {
        base_errf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        unlink(tmp);
        s = KVC_ERR_IO;
    }
    if (s == KVC_OK)
        base_fsync_parent_dir(path);
    return s;
}
