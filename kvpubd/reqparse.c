/* reqparse.c: parsers of untrusted request fields for the daemon (see reqparse.h); no I/O, no
 * allocation, every length bounded, overflow-checked arithmetic. */
#include "kvpubd/reqparse.h"

#include <string.h>
#include <strings.h>

#include "base/base.h"
#include "crypto/kvcrypto.h"

int kvsrv_is_id(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return i == 64;
}

/* Parses the n bytes at p as a whole decimal uint64 (n == 0 is an error). */
static int parse_u64n(const char *p, size_t n, uint64_t *out)
{
    char buf[24];
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, p, n);
    buf[n] = 0;
    return base_parse_u64(buf, out);
}

int kvsrv_parse_range(const char *h, uint64_t size, uint64_t *start, uint64_t *len)
{
    if (strncasecmp(h, "bytes=", 6) != 0)
        return 0;
    const char *p = h + 6;
    while (*p == ' ')
        p++;
    if (strchr(p, ','))
        return -1; /* one range only: several would need multipart/byteranges */
    const char *dash = strchr(p, '-');
    if (!dash)
        return -1;
    const char *q = dash + 1;
    size_t bl = strlen(q);
    while (bl && q[bl - 1] == ' ')
        bl--;
    uint64_t first, last;
    if (dash == p) { /* suffix: the last `last` bytes */
        if (parse_u64n(q, bl, &last) != 0 || last == 0 || size == 0)
            return -1;
        if (last > size)
            last = size;
        *start = size - last;
        *len = last;
        return 1;
    }
    if (parse_u64n(p, (size_t)(dash - p), &first) != 0 || first >= size)
        return -1;
    if (bl == 0)
        last = size - 1;
    else if (parse_u64n(q, bl, &last) != 0 || last < first)
        return -1;
    if (last >= size)
        last = size - 1;
    *start = first;
    *len = last - first + 1;
    return 1;
}

int kvsrv_etag_matches(const char *inm, const char *etag)
{
    size_t el = strlen(etag);
    const char *p = inm;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == '*')
            return 1;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (el && strncmp(p, etag, el) == 0 && (p[el] == 0 || p[el] == ',' || p[el] == ' '))
            return 1;
        while (*p && *p != ',')
            p++;
    }
    return 0;
}

const char *kvsrv_bearer_token(const char *h)
{
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

int kvsrv_parse_credential(const char *c, uint8_t key_id[8])
{
    if (strlen(c) != 16 + 1 + 64 || c[16] != '.')
        return -1;
    for (size_t i = 0; i < 81; i++)
        if (i != 16 && !((c[i] >= '0' && c[i] <= '9') || (c[i] >= 'a' && c[i] <= 'f')))
            return -1;
    char idh[17];
    memcpy(idh, c, 16);
    idh[16] = 0;
    return kvc_unhex(idh, key_id, 8) == KVC_OK ? 0 : -1;
}

char *kvsrv_log_escape(const char *s, char *out, size_t outlen)
{
    static const char hexd[] = "0123456789abcdef";
    size_t j = 0;
    for (size_t i = 0; s && s[i]; i++) {
        unsigned char ch = (unsigned char)s[i];
        int esc = ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\';
        size_t need = esc ? 4 : 1;
        if (j + need >= outlen)
            break;
        if (esc) {
            out[j++] = '\\';
            out[j++] = 'x';
            out[j++] = hexd[ch >> 4];
            out[j++] = hexd[ch & 15];
        } else {
            out[j++] = (char)ch;
        }
    }
    out[j] = 0;
    return out;
}
