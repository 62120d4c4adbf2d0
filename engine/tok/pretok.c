/* pretok.c: the BPE pre-tokenizers (GPT-2, llama3 "llama-bpe", qwen2) written out by hand as
 * the matchers their regexes describe, leftmost alternative first, with the regex engine's
 * greedy backtracking resolved per alternative. Works on byte offsets so that invalid UTF-8
 * bytes survive into the pieces (byte-level BPE must round-trip them). */
#include "engine/tok/tokenizer_internal.h"

#include <string.h>

#define CP_INVALID 0xFFFFFFFFu

/* One character at byte offset p (< len): its code point (CP_INVALID for a byte that does not
 * start a valid sequence) and length in bytes. */
static size_t char_at(const char *text, size_t len, size_t p, uint32_t *cp)
{
    size_t n = eng_utf8_decode((const unsigned char *)text + p, len - p, cp);
    if (n == 0) {
        *cp = CP_INVALID;
        return 1;
    }
    return n;
}

static int is_letter(uint32_t cp)
{
    return cp != CP_INVALID && eng_unicode_category(cp) == ENG_UCAT_LETTER;
}

static int is_number(uint32_t cp)
{
    return cp != CP_INVALID && eng_unicode_category(cp) == ENG_UCAT_NUMBER;
}

static int is_space(uint32_t cp)
{
    return cp != CP_INVALID && eng_unicode_is_space(cp);
}

/* [^\s\p{L}\p{N}]: invalid bytes belong here. */
static int is_other(uint32_t cp)
{
    return cp == CP_INVALID || (!eng_unicode_is_space(cp) && eng_unicode_category(cp) == ENG_UCAT_OTHER);
}

static int is_newline(uint32_t cp)
{
    return cp == '\r' || cp == '\n';
}

/* End of the run of characters from p satisfying pred, taking at most max (0 = no limit). */
static size_t run_end(const char *text, size_t len, size_t p, int (*pred)(uint32_t), size_t max)
{
    size_t taken = 0;
    while (p < len && (max == 0 || taken < max)) {
        uint32_t cp;
        size_t n = char_at(text, len, p, &cp);
        if (!pred(cp))
            break;
        p += n;
        taken++;
    }
    return p;
}

/* 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive; returns the end or 0. */
static size_t match_contraction(const char *text, size_t len, size_t p, int icase)
{
    if (text[p] != '\'' || p + 1 >= len)
        return 0;
    char a = text[p + 1], b = p + 2 < len ? text[p + 2] : 0;
    if (icase) {
        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (b >= 'A' && b <= 'Z')
            b = (char)(b - 'A' + 'a');
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return p + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return p + 3;
    return 0;
}

/* \s+(?!\S) then \s+ (the last two alternatives of every splitter) at a white-space character.
 * The lookahead makes a run that is followed by a non-space give up its last character (which
 * then prefixes the next word), unless it is the only one. */
static size_t match_space_run(const char *text, size_t len, size_t p)
{
    size_t q = p, last = p;
    while (q < len) {
        uint32_t cp;
        size_t n = char_at(text, len, q, &cp);
        if (!is_space(cp))
            break;
        last = q;
        q += n;
    }
    if (q == len || last == p)
        return q; /* \s+(?!\S) at the end of text, or \s+ for a single space */
    return last;
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t match_llama3(const char *text, size_t len, size_t p, size_t max_digits)
{
    size_t e = match_contraction(text, len, p, 1);
    if (e)
        return e;
    uint32_t c0, c1 = CP_INVALID;
    size_t n0 = char_at(text, len, p, &c0);
    if (p + n0 < len)
        char_at(text, len, p + n0, &c1);

    if (is_letter(c0))
        return run_end(text, len, p, is_letter, 0);
    if (!is_newline(c0) && !is_number(c0) && is_letter(c1))
        return run_end(text, len, p + n0, is_letter, 0);
    if (is_number(c0))
        return run_end(text, len, p, is_number, max_digits);
    if (is_other(c0) || (c0 == ' ' && is_other(c1))) {
        e = run_end(text, len, c0 == ' ' ? p + 1 : p, is_other, 0);
        return run_end(text, len, e, is_newline, 0);
    }
    if (!is_space(c0))
        return p + n0; /* unreachable: every character is L, N, space or other */

    /* \s*[\r\n]+: the greedy \s* backs off to the last newline of the white-space run. */
    size_t q = p, after_nl = 0;
    while (q < len) {
        uint32_t cp;
        size_t n = char_at(text, len, q, &cp);
        if (!is_space(cp))
            break;
        q += n;
        if (is_newline(cp))
            after_nl = q;
    }
    if (after_nl)
        return after_nl;
    return match_space_run(text, len, p);
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t match_gpt2(const char *text, size_t len, size_t p)
{
    size_t e = match_contraction(text, len, p, 0);
    if (e)
        return e;
    uint32_t c0, c1 = CP_INVALID;
    size_t n0 = char_at(text, len, p, &c0);
    if (p + n0 < len)
        char_at(text, len, p + n0, &c1);
    static int (*const classes[3])(uint32_t) = { is_letter, is_number, is_other };
    for (int k = 0; k < 3; k++) {
        if (classes[k](c0))
            return run_end(text, len, p, classes[k], 0);
        if (c0 == ' ' && classes[k](c1))
            return run_end(text, len, p + 1, classes[k], 0);
    }
    return match_space_run(text, len, p);
}

int eng_pretok_from_name(const char *name, size_t len, eng_pretok *out)
{
    static const struct { const char *name; eng_pretok kind; } names[] = {
        { "default", ENG_PRETOK_GPT2 },    { "gpt2", ENG_PRETOK_GPT2 },
        { "gpt-2", ENG_PRETOK_GPT2 },      { "llama-bpe", ENG_PRETOK_LLAMA3 },
        { "llama3", ENG_PRETOK_LLAMA3 },   { "llama-v3", ENG_PRETOK_LLAMA3 },
        { "qwen2", ENG_PRETOK_QWEN2 },
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strlen(names[i].name) == len && memcmp(names[i].name, name, len) == 0) {
            *out = names[i].kind;
            return 1;
        }
    }
    return 0;
}

size_t eng_pretok_split(eng_pretok kind, const char *text, size_t len, size_t *ends, size_t cap)
{
    size_t n = 0, p = 0;
    while (p < len && n < cap) {
        size_t e;
        switch (kind) {
        case ENG_PRETOK_LLAMA3: e = match_llama3(text, len, p, 3); break;
        case ENG_PRETOK_QWEN2: e = match_llama3(text, len, p, 1); break;
        default: e = match_gpt2(text, len, p); break;
        }
        if (e <= p) { /* cannot happen; guarantees progress regardless */
            uint32_t cp;
            e = p + char_at(text, len, p, &cp);
        }
        ends[n++] = e;
        p = e;
    }
    return n;
}
