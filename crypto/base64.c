/* base64.c: standard base64 (RFC 4648 section 4, padded, no line breaks) through OpenSSL, with a
 * strict decoder: signed documents carry their payload this way, so one byte string has one
 * encoding and anything else is refused. */
#include "crypto/crypto_internal.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

char *kvc_base64_encode(const void *data, size_t len, size_t *outlen)
{
    if (len > (size_t)INT32_MAX / 4 * 3 - 3)
        return NULL;
    size_t n = (len + 2) / 3 * 4;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    /* EVP_EncodeBlock writes no line breaks and NUL-terminates */
    int w = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    if (w < 0 || (size_t)w != n) {
        free(out);
        return NULL;
    }
    if (outlen)
        *outlen = n;
    return out;
}

static int b64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

kvc_status kvc_base64_decode(const char *text, size_t len, uint8_t **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    if (len % 4 != 0 || len > (size_t)INT32_MAX)
        return KVC_ERR_FORMAT;
    size_t pad = len && text[len - 1] == '=' ? (len > 1 && text[len - 2] == '=' ? 2 : 1) : 0;
    for (size_t i = 0; i < len - pad; i++)
        if (!b64_char((unsigned char)text[i]))
            return KVC_ERR_FORMAT;
    uint8_t *buf = malloc(len / 4 * 3 + 1);
    if (!buf)
        return KVC_ERR_NOMEM;
    int n = len ? EVP_DecodeBlock(buf, (const unsigned char *)text, (int)len) : 0;
    if (n < 0 || (size_t)n < pad) {
        free(buf);
        return KVC_ERR_FORMAT;
    }
    size_t got = (size_t)n - pad; /* EVP_DecodeBlock counts the padding as zero bytes */
    /* the canonical encoding only: unused bits after the last byte must be zero */
    size_t clen = 0;
    char *again = kvc_base64_encode(buf, got, &clen);
    int canonical = again && clen == len && memcmp(again, text, len) == 0;
    free(again);
    if (!canonical) {
        free(buf);
        return again ? KVC_ERR_FORMAT : KVC_ERR_NOMEM;
    }
    *out = buf;
    *outlen = got;
    return KVC_OK;
}
