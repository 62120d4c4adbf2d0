/* parse.c: the one grammar for counts, sizes and durations on command lines and in the
 * environment (base.h documents it); overflow-checked, no atoi/strtoull. */
#include "base/base.h"

#include <stdlib.h>

/* Parses leading digits; *end gets the first non-digit. -1 on no digits or overflow. */
static int digits(const char *s, uint64_t *out, const char **end)
{
    uint64_t v = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (p == s)
        return -1;
    *out = v;
    *end = p;
    return 0;
}

/* digits, then at most one unit from units (multiplier mult[i]) followed by at most one of
 * tails (only after a unit). */
static int scaled(const char *s, uint64_t *out, const char *units, const uint64_t *mult, const char *tails)
{
    uint64_t v;
    const char *end;
    if (!s || digits(s, &v, &end) != 0)
        return -1;
    uint64_t m = 1;
    if (*end) {
        const char *u = strchr(units, *end);
        if (!u)
            return -1;
        m = mult[u - units];
        end++;
        if (*end && strchr(tails, *end))
            end++;
        if (*end)
            return -1;
    }
    if (v > UINT64_MAX / m)
        return -1;
    *out = v * m;
    return 0;
}

int base_parse_u64(const char *s, uint64_t *out)
{
    uint64_t v;
    const char *end;
    if (!s || digits(s, &v, &end) != 0 || *end)
        return -1;
    *out = v;
    return 0;
}

int base_parse_size(const char *s, uint64_t *out)
{
    static const uint64_t mult[] = {1024, (uint64_t)1 << 20, (uint64_t)1 << 30, (uint64_t)1 << 40,
                                    1024, (uint64_t)1 << 20, (uint64_t)1 << 30, (uint64_t)1 << 40};
    return scaled(s, out, "KMGTkmgt", mult, "Bbi");
}

int base_parse_duration(const char *s, uint64_t *out)
{
    static const uint64_t mult[] = {1, 60, 3600, 86400, 7 * 86400};
    return scaled(s, out, "smhdw", mult, "");
}

int base_parse_ids(const char *s, uint32_t max, int32_t **ids, size_t *n)
{
    if (!s || !*s)
        return -1;
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int32_t *v = malloc(cap * sizeof *v);
    if (!v)
        return -1;
    size_t k = 0;
    for (const char *p = s;; p++) {
        uint64_t x;
        if (digits(p, &x, &p) != 0 || x >= max || x > INT32_MAX || (*p && *p != ',')) {
            free(v);
            return -1;
        }
        v[k++] = (int32_t)x;
        if (!*p)
            break;
    }
    *ids = v;
    *n = k;
    return 0;
}
