/* pretok.c: the BPE pre-tokenizers (GPT-2, llama3 "llama-bpe", qwen2, qwen35, and the ones
 * llama.cpp runs as lists of regexes: default, falcon, starcoder) written out by hand as
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
    if (cp == CP_INVALID)
        return 1;
    int cat = eng_unicode_category(cp);
    return cat != ENG_UCAT_LETTER && cat != ENG_UCAT_NUMBER && !eng_unicode_is_space(cp);
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

/* What every splitter looks at first: a contraction at p (its end, case-insensitive with icase),
 * else 0 with the first two characters (c1 CP_INVALID at the end) and the first one's length. */
static size_t lead(const char *text, size_t len, size_t p, int icase, uint32_t *c0, uint32_t *c1, size_t *n0)
{
    size_t e = match_contraction(text, len, p, icase);
    if (e)
        return e;
    *c1 = CP_INVALID;
    *n0 = char_at(text, len, p, c0);
    if (p + *n0 < len)
        char_at(text, len, p + *n0, c1);
    return 0;
}

/* \p{L} or \p{M}: qwen35's letter runs take combining marks along. */
static int is_letter_mark(uint32_t cp)
{
    int cat = cp == CP_INVALID ? ENG_UCAT_OTHER : eng_unicode_category(cp);
    return cat == ENG_UCAT_LETTER || cat == ENG_UCAT_MARK;
}

/* [^\s\p{L}\p{M}\p{N}] */
static int is_other_nomark(uint32_t cp)
{
    return is_other(cp) && (cp == CP_INVALID || eng_unicode_category(cp) != ENG_UCAT_MARK);
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * With marks (qwen35), \p{L}+ is [\p{L}\p{M}]+ and [^\s\p{L}\p{N}] is [^\s\p{L}\p{M}\p{N}]. */
static size_t match_llama3(const char *text, size_t len, size_t p, size_t max_digits, int marks)
{
    int (*letter)(uint32_t) = marks ? is_letter_mark : is_letter;
    int (*other)(uint32_t) = marks ? is_other_nomark : is_other;
    uint32_t c0, c1;
    size_t n0, e = lead(text, len, p, 1, &c0, &c1, &n0);
    if (e)
        return e;

    if (letter(c0))
        return run_end(text, len, p, letter, 0);
    if (!is_newline(c0) && !is_number(c0) && letter(c1))
        return run_end(text, len, p + n0, letter, 0);
    if (is_number(c0))
        return run_end(text, len, p, is_number, max_digits);
    if (other(c0) || (c0 == ' ' && other(c1))) {
        e = run_end(text, len, c0 == ' ' ? p + 1 : p, other, 0);
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
    uint32_t c0, c1;
    size_t n0, e = lead(text, len, p, 0, &c0, &c1, &n0);
    if (e)
        return e;
    static int (*const classes[3])(uint32_t) = { is_letter, is_number, is_other };
    for (int k = 0; k < 3; k++) {
        if (classes[k](c0))
            return run_end(text, len, p, classes[k], 0);
        if (c0 == ' ' && classes[k](c1))
            return run_end(text, len, p + 1, classes[k], 0);
    }
    return match_space_run(text, len, p);
}

/* ---- splitters that are lists of regexes ----
 * llama.cpp applies some pre-tokenizers as a list of regexes, each to the pieces the one before
 * left, the matches and the text between them both staying pieces. The steps below are those
 * regexes; a recipe is a list of steps. */

enum step {
    STEP_END = 0,
    STEP_GPT2,       /* the GPT-2 regex above */
    STEP_PUNCT,      /* [\p{P}\$\+<=>\^~\|]+ */
    STEP_PUNCT_TICK, /* [\p{P}\$\+<=>\^~\|`]+ */
    STEP_NUMBERS,    /* \p{N}+ */
    STEP_NUMBER,     /* \p{N} */
    STEP_DIGITS3,    /* [0-9][0-9][0-9] */
};

static const unsigned char recipes[][5] = {
    [ENG_PRETOK_DEFAULT] = { STEP_PUNCT, STEP_GPT2, STEP_NUMBERS, STEP_DIGITS3 },
    [ENG_PRETOK_FALCON] = { STEP_PUNCT_TICK, STEP_GPT2, STEP_DIGITS3 },
    [ENG_PRETOK_STARCODER] = { STEP_NUMBER, STEP_GPT2 },
};

static int is_punct(uint32_t cp)
{
    if (cp > 0 && cp < 0x80 && strchr("$+<=>^~|", (int)cp)) /* strchr would find a NUL byte */
        return 1;
    return cp != CP_INVALID && eng_unicode_category(cp) == ENG_UCAT_PUNCT;
}

static int is_punct_tick(uint32_t cp)
{
    return is_punct(cp) || cp == '`';
}

static int is_digit(uint32_t cp)
{
    return cp >= '0' && cp <= '9';
}

/* End of the match of a step at p (< end), or p when the regex does not match there. */
static size_t step_match(unsigned step, const char *text, size_t end, size_t p)
{
    switch (step) {
    case STEP_PUNCT: return run_end(text, end, p, is_punct, 0);
    case STEP_PUNCT_TICK: return run_end(text, end, p, is_punct_tick, 0);
    case STEP_NUMBERS: return run_end(text, end, p, is_number, 0);
    case STEP_NUMBER: return run_end(text, end, p, is_number, 1);
    default: /* STEP_DIGITS3 */
        return p + 3 <= end && is_digit((unsigned char)text[p]) && is_digit((unsigned char)text[p + 1]) &&
                       is_digit((unsigned char)text[p + 2])
                   ? p + 3
                   : p;
    }
}

struct pieces {
    size_t *ends, n, cap;
};

/* Splits text[p, end) by steps[0], each piece by the steps after it; the last step's pieces are
 * written out. Returns 0 once cap pieces are out. */
static int split_steps(const unsigned char *steps, const char *text, size_t p, size_t end, struct pieces *out)
{
    if (*steps == STEP_END) {
        out->ends[out->n++] = end;
        return out->n < out->cap;
    }
    while (p < end) {
        size_t e;
        if (*steps == STEP_GPT2) {
            e = match_gpt2(text, end, p);
        } else if ((e = step_match(*steps, text, end, p)) == p) {
            /* text between matches: up to where the regex matches next */
            uint32_t cp;
            e = p + char_at(text, end, p, &cp);
            while (e < end && step_match(*steps, text, end, e) == e)
                e += char_at(text, end, e, &cp);
        }
        if (e <= p) { /* cannot happen; guarantees progress regardless */
            uint32_t cp;
            e = p + char_at(text, end, p, &cp);
        }
        if (!split_steps(steps + 1, text, p, e, out))
            return 0;
        p = e;
    }
    return 1;
}

int eng_pretok_from_name(const char *name, size_t len, eng_pretok *out)
{
    /* llama.cpp's names for the splitters we implement (llama-vocab.cpp); "gpt2" is ours. */
    static const struct { const char *name; eng_pretok kind; } names[] = {
        { "default", ENG_PRETOK_DEFAULT }, { "gpt2", ENG_PRETOK_GPT2 },
        { "gpt-2", ENG_PRETOK_GPT2 },      { "phi-2", ENG_PRETOK_GPT2 },
        { "mpt", ENG_PRETOK_GPT2 },        { "olmo", ENG_PRETOK_GPT2 },
        { "llama-bpe", ENG_PRETOK_LLAMA3 }, { "llama3", ENG_PRETOK_LLAMA3 },
        { "llama-v3", ENG_PRETOK_LLAMA3 }, { "falcon3", ENG_PRETOK_LLAMA3 },
        { "pixtral", ENG_PRETOK_LLAMA3 },  { "qwen2", ENG_PRETOK_QWEN2 },
        { "deepseek-r1-qwen", ENG_PRETOK_QWEN2 }, { "stablelm2", ENG_PRETOK_QWEN2 },
        { "qwen35", ENG_PRETOK_QWEN35 },
        { "falcon", ENG_PRETOK_FALCON },   { "starcoder", ENG_PRETOK_STARCODER },
        { "refact", ENG_PRETOK_STARCODER }, { "command-r", ENG_PRETOK_STARCODER },
        { "smollm", ENG_PRETOK_STARCODER },
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strlen(names[i].name) == len && memcmp(names[i].name, name, len) == 0) {
            *out = names[i].kind;
            return 1;
        }
    }
    return 0;
}

int eng_pretok_adds_bos(eng_pretok kind)
{
    return kind == ENG_PRETOK_LLAMA3;
}

size_t eng_pretok_split(eng_pretok kind, const char *text, size_t len, size_t *ends, size_t cap)
{
    if (cap == 0)
        return 0;
    if (kind == ENG_PRETOK_DEFAULT || kind == ENG_PRETOK_FALCON || kind == ENG_PRETOK_STARCODER) {
        struct pieces out = { ends, 0, cap };
        split_steps(recipes[kind], text, 0, len, &out);
        return out.n;
    }
    size_t n = 0, p = 0;
    while (p < len && n < cap) {
        size_t e;
        switch (kind) {
        case ENG_PRETOK_LLAMA3: e = match_llama3(text, len, p, 3, 0); break;
        case ENG_PRETOK_QWEN2: e = match_llama3(text, len, p, 1, 0); break;
        case ENG_PRETOK_QWEN35: e = match_llama3(text, len, p, 1, 1); break;
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
