/* vocab_internal.h: the vocabulary's layout and its hash lookups, shared by the three files that
 * build it (vocab.c), tokenize with it (tokenize.c) and turn ids back into text (detok.c). Nothing
 * outside engine/tok/ sees the struct: everyone else goes through engine.h's eng_vocab_* API. */
#ifndef KVPUB_VOCAB_INTERNAL_H
#define KVPUB_VOCAB_INTERNAL_H

#include "engine/tok/tokenizer_internal.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SPM_SPACE "\xE2\x96\x81" /* U+2581 '▁', SentencePiece's visible space */
#define BYTEMAP_CP_END 324 /* GPT-2 byte map: 256 + 68, every mapped code point is below */

/* Open-addressing table of int32 values (-1 = empty); the caller compares keys. */
struct itab {
    int32_t *slot;
    size_t mask;
};

struct merge {
    int32_t left, right, result; /* result: token of the merged text, -1 if not in the vocab */
};

struct eng_vocab {
    eng_vocab_kind kind;
    eng_pretok pretok;
    int ignore_merges;       /* llama3: a pre-token that is itself a token skips merging */
    size_t n_tokens;
    char *text;              /* all token texts back to back */
    size_t *text_off;        /* n_tokens + 1 */
    char *piece;             /* what each token detokenizes to, back to back */
    size_t *piece_off;       /* n_tokens + 1 */
    float *scores;           /* n_tokens */
    uint8_t *types;          /* n_tokens */
    struct itab tokmap;      /* text -> first token with that text */
    int32_t byte_tok[256];   /* token per input byte: SPM <0xXX>, BPE the mapped char; -1 */
    struct merge *merges;    /* n_merges, rank = index */
    size_t n_merges;
    struct itab mergemap;    /* (left, right) -> rank */
    int32_t *special;        /* tokens matched with parse_special, longest text first */
    size_t n_special;
    int32_t bos, eos, unk, eot;
    int add_bos, add_eos, add_space_prefix, rstrip_special;
    char *chat_template;     /* NUL-terminated copy, or NULL */
    int32_t eog[16];
    size_t n_eog;
    size_t max_piece;        /* longest piece: sizes the streaming detokenizer's buffer */
    uint16_t byte_cp[256];   /* BPE: byte -> code point of its visible character */
    int16_t cp_byte[BYTEMAP_CP_END];    /* and back; -1 for code points that stand for no byte */
};

/* ---- hashing and lookups ---- */

static inline uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static inline uint64_t hash_pair(int32_t a, int32_t b)
{
    uint64_t x = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    x ^= x >> 33; /* splitmix64 finalizer */
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static inline const char *tok_text(const struct eng_vocab *v, int32_t id, size_t *len)
{
    *len = v->text_off[id + 1] - v->text_off[id];
    return v->text + v->text_off[id];
}

/* Slot of text s in the token map: holding its token, or the empty slot where it goes. */
static inline size_t tokmap_slot(const struct eng_vocab *v, const char *s, size_t n)
{
    size_t i = (size_t)hash_bytes(s, n) & v->tokmap.mask;
    for (;;) {
        int32_t id = v->tokmap.slot[i];
        if (id < 0)
            return i;
        size_t tl;
        const char *t = tok_text(v, id, &tl);
        if (tl == n && memcmp(t, s, n) == 0)
            return i;
        i = (i + 1) & v->tokmap.mask;
    }
}

static inline int32_t token_find(const struct eng_vocab *v, const char *s, size_t n)
{
    return v->tokmap.slot[tokmap_slot(v, s, n)];
}

static inline size_t mergemap_slot(const struct eng_vocab *v, int32_t a, int32_t b)
{
    size_t i = (size_t)hash_pair(a, b) & v->mergemap.mask;
    for (;;) {
        int32_t r = v->mergemap.slot[i];
        if (r < 0 || (v->merges[r].left == a && v->merges[r].right == b))
            return i;
        i = (i + 1) & v->mergemap.mask;
    }
}

static inline int32_t merge_rank(const struct eng_vocab *v, int32_t a, int32_t b)
{
    if (a < 0 || b < 0 || v->n_merges == 0)
        return -1;
    return v->mergemap.slot[mergemap_slot(v, a, b)];
}

#endif
