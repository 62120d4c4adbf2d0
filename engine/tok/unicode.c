/* unicode.c: strict UTF-8 decoding/encoding and the Unicode classes the BPE pre-tokenizers need
 * (\p{L}, \p{N}, \p{P}, \p{M}, \s), from a generated range table. */
#include "engine/tok/tokenizer_internal.h"

#include "engine/tok/unicode_data.h"

#include <string.h>

size_t eng_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2; v = c & 0x1F; min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3; v = c & 0x0F; min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4; v = c & 0x07; min = 0x10000;
    } else {
        return 0; /* continuation byte, or a lead byte that can only start an overlong form */
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

size_t eng_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

int eng_unicode_category(uint32_t cp)
{
    /* ASCII dominates real text: answer it without the search. */
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')
            return ENG_UCAT_LETTER;
        if (cp >= '0' && cp <= '9')
            return ENG_UCAT_NUMBER;
        return cp > ' ' && strchr("!\"#%&'()*,-./:;?@[\\]_{}", (int)cp) ? ENG_UCAT_PUNCT : ENG_UCAT_OTHER;
    }
    size_t lo = 0, hi = sizeof ucd_ranges / sizeof ucd_ranges[0];
    while (lo < hi) { /* first range whose last code point is >= cp */
        size_t mid = lo + (hi - lo) / 2;
        if (ucd_ranges[mid][1] < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == sizeof ucd_ranges / sizeof ucd_ranges[0])
        return ENG_UCAT_OTHER;
    uint32_t first = ucd_ranges[lo][0] & 0xFFFFFF;
    return cp >= first ? (int)(ucd_ranges[lo][0] >> 24) : ENG_UCAT_OTHER;
}

int eng_unicode_is_space(uint32_t cp)
{
    switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20:
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F:
    case 0x205F: case 0x3000:
        return 1;
    default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
}
