/* sha256.c: SHA-256 (one-shot and streaming) through OpenSSL EVP, hex helpers, random bytes,
 * secret wiping and status names for crypto/. */
#include "crypto/kvcrypto.h"

#include <stdlib.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <limits.h>

const char *kvc_status_str(kvc_status st)
{
    switch (st) {
    case KVC_OK: return "ok";
    case KVC_ERR_IO: return "I/O error";
    case KVC_ERR_FORMAT: return "bad format";
    case KVC_ERR_PERM: return "permission refused";
    case KVC_ERR_BAD_SIG: return "bad signature";
    case KVC_ERR_UNTRUSTED: return "untrusted key";
    case KVC_ERR_REVOKED: return "revoked key";
    case KVC_ERR_NOMEM: return "out of memory";
    case KVC_ERR_INTERNAL: return "internal crypto error";
    }
    return "unknown status";
}

struct kvc_sha256_ctx {
    EVP_MD_CTX *md;
};

/* EVP_Digest* only fails on allocation failure or a broken provider; the hashing API has no
 * status return, so such a failure is treated as fatal rather than silently giving a wrong
 * hash that would later look like corruption. */
static void sha_must(int ok)
{
    if (!ok)
        abort();
}

void kvc_sha256(const void *data, size_t len, uint8_t out[KVC_SHA256_LEN])
{
    unsigned int n = 0;
    sha_must(EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == KVC_SHA256_LEN);
}

kvc_sha256_ctx *kvc_sha256_create(void)
{
    kvc_sha256_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->md = EVP_MD_CTX_new();
    if (!c->md || EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(c->md);
        free(c);
        return NULL;
    }
    return c;
}

void kvc_sha256_update(kvc_sha256_ctx *c, const void *data, size_t len)
{
    if (len == 0)
        return;
    sha_must(EVP_DigestUpdate(c->md, data, len) == 1);
}

void kvc_sha256_final(kvc_sha256_ctx *c, uint8_t out[KVC_SHA256_LEN])
{
    unsigned int n = 0;
    sha_must(EVP_DigestFinal_ex(c->md, out, &n) == 1 && n == KVC_SHA256_LEN);
    /* the contract lets callers reuse the context after final() */
    sha_must(EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) == 1);
}

void kvc_sha256_free(kvc_sha256_ctx *c)
{
    if (!c)
        return;
    EVP_MD_CTX_free(c->md);
    free(c);
}

char *kvc_hex(const uint8_t *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
    return out;
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

kvc_status kvc_unhex(const char *hex, uint8_t *out, size_t n)
{
    if (!hex)
        return KVC_ERR_FORMAT;
    /* validate everything before writing, so a bad string leaves out untouched */
    for (size_t i = 0; i < 2 * n; i++)
        if (hex_val(hex[i]) < 0)
            return KVC_ERR_FORMAT;
    if (hex[2 * n] != '\0')
        return KVC_ERR_FORMAT;
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)(hex_val(hex[2 * i]) << 4 | hex_val(hex[2 * i + 1]));
    return KVC_OK;
}

kvc_status kvc_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    /* RAND_bytes takes an int length */
    while (n > 0) {
        int chunk = n > INT_MAX ? INT_MAX : (int)n;
        if (RAND_bytes(p, chunk) != 1)
            return KVC_ERR_INTERNAL;
        p += chunk;
        n -= (size_t)chunk;
    }
    return KVC_OK;
}

void kvc_wipe(void *p, size_t n)
{
    if (p && n)
        OPENSSL_cleanse(p, n);
}
