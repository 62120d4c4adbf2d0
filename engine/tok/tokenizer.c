/* tokenizer.c: vocabularies (validated from GGUF metadata or in-memory descriptions), the
 * SentencePiece-style and GPT-2 byte-level BPE tokenizers, and (streaming) detokenization. */
#include "engine/tok/tokenizer_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INPUT_BYTES ((size_t)1 << 30)
#define MAX_ARENA_BYTES ((size_t)1 << 30)
#define SPM_SPACE "\xE2\x96\x81" /* U+2581 '▁', SentencePiece's visible space */
#define BYTEMAP_CP_END 324 /* GPT-2 byte map: 256 + 68, every mapped code point is below */
#define SPM_UNK_PIECE "\xE2\x96\x85" /* U+2585, what llama.cpp prints for an unknown token */

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
    int add_bos, add_eos, add_space_prefix;
    int32_t eog[8];
    size_t n_eog;
    size_t max_piece;        /* longest piece: sizes the streaming detokenizer's buffer */
    uint16_t byte_cp[256];   /* BPE: byte -> code point of its visible character */
    int16_t cp_byte[BYTEMAP_CP_END];    /* and back; -1 for code points that stand for no byte */
};

struct eng_detok {
    const struct eng_vocab *v;
    int strip;               /* SPM with space prefix: the first text piece loses its ' ' */
    unsigned char hold[4];   /* incomplete UTF-8 sequence carried to the next push */
    size_t n_hold;
    char *buf;
    size_t cap;
};

/* Printable excerpt of untrusted bytes for error messages (quotes excluded). */
static const char *excerpt(const char *s, size_t n, char out[64])
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (o + 5 > 56) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (c >= 0x20 && c < 0x7F && c != '\\') {
            out[o++] = (char)c;
        } else {
            snprintf(out + o, 5, "\\x%02X", c);
            o += 4;
        }
    }
    out[o] = 0;
    return out;
}

/* ---- hashing ---- */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_pair(int32_t a, int32_t b)
{
    uint64_t x = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    x ^= x >> 33; /* splitmix64 finalizer */
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static int itab_init(struct itab *t, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap <<= 1;
    t->slot = malloc(cap * sizeof *t->slot);
    if (!t->slot)
        return 0;
    memset(t->slot, 0xFF, cap * sizeof *t->slot);
    t->mask = cap - 1;
    return 1;
}

static const char *tok_text(const struct eng_vocab *v, int32_t id, size_t *len)
{
    *len = v->text_off[id + 1] - v->text_off[id];
    return v->text + v->text_off[id];
}

/* Slot of text s in the token map: holding its token, or the empty slot where it goes. */
static size_t tokmap_slot(const struct eng_vocab *v, const char *s, size_t n)
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

static int32_t token_find(const struct eng_vocab *v, const char *s, size_t n)
{
    return v->tokmap.slot[tokmap_slot(v, s, n)];
}

static size_t mergemap_slot(const struct eng_vocab *v, int32_t a, int32_t b)
{
    size_t i = (size_t)hash_pair(a, b) & v->mergemap.mask;
    for (;;) {
        int32_t r = v->mergemap.slot[i];
        if (r < 0 || (v->merges[r].left == a && v->merges[r].right == b))
            return i;
        i = (i + 1) & v->mergemap.mask;
    }
}

static int32_t merge_rank(const struct eng_vocab *v, int32_t a, int32_t b)
{
    if (a < 0 || b < 0 || v->n_merges == 0)
        return -1;
    return v->mergemap.slot[mergemap_slot(v, a, b)];
}

/* ---- GPT-2 byte <-> unicode mapping ----
 * Printable bytes (33..126, 161..172, 174..255) stand for themselves; the other 68 take code
 * points 256, 257, ... in byte order, so every byte has a visible, non-space character. */

static int byte_is_printable(unsigned b)
{
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
}

static void bytemap_init(struct eng_vocab *v)
{
    uint32_t next = 256;
    for (unsigned i = 0; i < BYTEMAP_CP_END; i++)
        v->cp_byte[i] = -1;
    for (unsigned b = 0; b < 256; b++) {
        v->byte_cp[b] = (uint16_t)(byte_is_printable(b) ? b : next++);
        v->cp_byte[v->byte_cp[b]] = (int16_t)b;
    }
}

static int cp_to_byte(const struct eng_vocab *v, uint32_t cp)
{
    return cp < BYTEMAP_CP_END ? v->cp_byte[cp] : -1;
}

/* ---- growable buffers ---- */

struct idbuf {
    int32_t *a;
    size_t n, cap;
};

static int ids_push(struct idbuf *b, int32_t id)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 64;
        int32_t *a = realloc(b->a, cap * sizeof *a);
        if (!a)
            return 0;
        b->a = a;
        b->cap = cap;
    }
    b->a[b->n++] = id;
    return 1;
}

/* ---- vocabulary construction ---- */

static int parse_byte_token(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Appends the detokenized form of token id to dst (capacity checked by the caller: a piece is
 * never longer than its text). Returns bytes written. */
static size_t make_piece(const struct eng_vocab *v, int32_t id, char *dst)
{
    size_t n;
    const char *s = tok_text(v, id, &n);
    int type = v->types[id];
    switch (type) {
    case ENG_TOKTYPE_CONTROL:
    case ENG_TOKTYPE_UNUSED:
        return 0;
    case ENG_TOKTYPE_UNKNOWN:
        /* The marker must fit in the space of the token's own text ("<unk>" does). */
        if (v->kind != ENG_VOCAB_SPM || n < 3)
            return 0;
        memcpy(dst, SPM_UNK_PIECE, 3);
        return 3;
    case ENG_TOKTYPE_BYTE: {
        int b = parse_byte_token(s, n);
        if (b >= 0) {
            dst[0] = (char)b;
            return 1;
        }
        memcpy(dst, s, n);
        return n;
    }
    case ENG_TOKTYPE_USER_DEFINED:
        memcpy(dst, s, n);
        return n;
    default:
        break;
    }
    size_t o = 0;
    if (v->kind == ENG_VOCAB_SPM) {
        for (size_t i = 0; i < n;) {
            if (n - i >= 3 && memcmp(s + i, SPM_SPACE, 3) == 0) {
                dst[o++] = ' ';
                i += 3;
            } else {
                dst[o++] = s[i++];
            }
        }
        return o;
    }
    /* BPE: every mapped character back to its byte; anything unmapped is copied as is. */
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = eng_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        int b = l ? cp_to_byte(v, cp) : -1;
        if (b >= 0) {
            dst[o++] = (char)b;
            i += l;
        } else {
            size_t k = l ? l : 1;
            memcpy(dst + o, s + i, k);
            o += k;
            i += k;
        }
    }
    return o;
}

struct special_key {
    size_t len;
    int32_t id;
};

/* Longest text first, then lowest id, so partitioning is deterministic. */
static int cmp_special(const void *a, const void *b)
{
    const struct special_key *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void add_eog(struct eng_vocab *v, int32_t id)
{
    if (id < 0)
        return;
    for (size_t i = 0; i < v->n_eog; i++)
        if (v->eog[i] == id)
            return;
    if (v->n_eog < sizeof v->eog / sizeof v->eog[0])
        v->eog[v->n_eog++] = id;
}

void eng_vocab_free(struct eng_vocab *v)
{
    if (!v)
        return;
    free(v->text);
    free(v->text_off);
    free(v->piece);
    free(v->piece_off);
    free(v->scores);
    free(v->types);
    free(v->tokmap.slot);
    free(v->merges);
    free(v->mergemap.slot);
    free(v->special);
    free(v);
}

static eng_status check_id(const char *what, int32_t id, size_t n, char *err, size_t errlen)
{
    if (id < -1) {
        base_errf(err, errlen, "%s id %d is negative (expected -1 for none or 0..%zu)", what, id, n - 1);
        return ENG_ERR_FORMAT;
    }
    if (id >= 0 && (size_t)id >= n) {
        base_errf(err, errlen, "%s id %d out of range (vocabulary has %zu tokens)", what, id, n);
        return ENG_ERR_FORMAT;
    }
    return ENG_OK;
}

static eng_status build_merges(struct eng_vocab *v, const eng_vocab_desc *d, char *err, size_t errlen)
{
    if (d->n_merges > ENG_VOCAB_MAX_MERGES) {
        base_errf(err, errlen, "too many merges: %zu (limit %d)", d->n_merges, ENG_VOCAB_MAX_MERGES);
        return ENG_ERR_FORMAT;
    }
    if (d->n_merges && !d->merges) {
        base_errf(err, errlen, "vocabulary description has %zu merges but no merge array", d->n_merges);
        return ENG_ERR_ARG;
    }
    v->merges = malloc((d->n_merges ? d->n_merges : 1) * sizeof *v->merges);
    if (!v->merges || !itab_init(&v->mergemap, d->n_merges))
        return ENG_ERR_NOMEM;
    char *cat = NULL;
    size_t cat_cap = 0;
    eng_status st = ENG_OK;
    for (size_t r = 0; r < d->n_merges; r++) {
        const char *m = d->merges[r];
        char ex[64], ex2[64];
        if (!m) {
            base_errf(err, errlen, "merge %zu is NULL", r);
            st = ENG_ERR_ARG;
            break;
        }
        size_t n = d->merge_lens ? d->merge_lens[r] : strlen(m);
        /* The separator is the first space after the first byte: a left token may itself be
         * a literal space in vocabularies that do not map bytes. */
        const char *sp = n > 1 ? memchr(m + 1, ' ', n - 1) : NULL;
        if (!sp || sp + 1 == m + n) {
            base_errf(err, errlen, "merge %zu '%s' is not two tokens separated by a space", r,
                      excerpt(m, n, ex));
            st = ENG_ERR_FORMAT;
            break;
        }
        size_t ll = (size_t)(sp - m), rl = n - ll - 1;
        int32_t a = token_find(v, m, ll), b = token_find(v, sp + 1, rl);
        if (a < 0 || b < 0) {
            base_errf(err, errlen, "merge %zu '%s' names unknown token '%s'", r, excerpt(m, n, ex),
                      a < 0 ? excerpt(m, ll, ex2) : excerpt(sp + 1, rl, ex2));
            st = ENG_ERR_FORMAT;
            break;
        }
        if (ll + rl > cat_cap) {
            char *c = realloc(cat, ll + rl);
            if (!c) {
                st = ENG_ERR_NOMEM;
                break;
            }
            cat = c;
            cat_cap = ll + rl;
        }
        memcpy(cat, m, ll);
        memcpy(cat + ll, sp + 1, rl);
        v->merges[r] = (struct merge){ a, b, token_find(v, cat, ll + rl) };
        size_t slot = mergemap_slot(v, a, b);
        if (v->mergemap.slot[slot] < 0) /* a repeated pair keeps its first (best) rank */
            v->mergemap.slot[slot] = (int32_t)r;
    }
    free(cat);
    v->n_merges = d->n_merges;
    return st;
}

eng_status eng_vocab_create(const eng_vocab_desc *d, struct eng_vocab **out, char *err, size_t errlen)
{
    if (!out)
        return ENG_ERR_ARG;
    *out = NULL;
    if (!d || !d->tokens) {
        base_errf(err, errlen, "vocabulary description or its token array is NULL");
        return ENG_ERR_ARG;
    }
    if (d->kind != ENG_VOCAB_SPM && d->kind != ENG_VOCAB_BPE) {
        base_errf(err, errlen, "unknown vocabulary kind %d (expected SPM or BPE)", (int)d->kind);
        return ENG_ERR_ARG;
    }
    size_t n = d->n_tokens;
    if (n == 0 || n > ENG_VOCAB_MAX_TOKENS) {
        base_errf(err, errlen, "vocabulary has %zu tokens (expected 1..%d)", n, ENG_VOCAB_MAX_TOKENS);
        return ENG_ERR_FORMAT;
    }
    if (d->scores && d->n_scores != n) {
        base_errf(err, errlen, "token count mismatch: %zu scores for %zu tokens", d->n_scores, n);
        return ENG_ERR_FORMAT;
    }
    if (d->types && d->n_types != n) {
        base_errf(err, errlen, "token count mismatch: %zu token types for %zu tokens", d->n_types, n);
        return ENG_ERR_FORMAT;
    }
    static const char *const id_names[4] = { "bos", "eos", "unk", "eot" };
    const int32_t ids[4] = { d->bos_id, d->eos_id, d->unk_id, d->eot_id };
    for (int i = 0; i < 4; i++) {
        eng_status st = check_id(id_names[i], ids[i], n, err, errlen);
        if (st != ENG_OK)
            return st;
    }
    eng_pretok pretok = ENG_PRETOK_GPT2;
    if (d->kind == ENG_VOCAB_BPE) {
        const char *pre = d->pre ? d->pre : "default";
        if (!eng_pretok_from_name(pre, strlen(pre), &pretok)) {
            char ex[64];
            base_errf(err, errlen, "unsupported BPE pre-tokenizer '%s' (supported: llama-bpe, qwen2, default/gpt2)",
                      excerpt(pre, strlen(pre), ex));
            return ENG_ERR_UNSUPPORTED;
        }
    }

    /* Token texts: validate lengths and types before sizing the arena. */
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!d->tokens[i]) {
            base_errf(err, errlen, "token %zu is NULL", i);
            return ENG_ERR_ARG;
        }
        size_t l = d->token_lens ? d->token_lens[i] : strlen(d->tokens[i]);
        if (l > ENG_VOCAB_MAX_TOKEN_BYTES) {
            base_errf(err, errlen, "token %zu is %zu bytes long (limit %d)", i, l, ENG_VOCAB_MAX_TOKEN_BYTES);
            return ENG_ERR_FORMAT;
        }
        total += l;
        if (total > MAX_ARENA_BYTES) {
            base_errf(err, errlen, "token texts exceed %zu bytes in total", MAX_ARENA_BYTES);
            return ENG_ERR_FORMAT;
        }
        if (d->types && (d->types[i] < 0 || d->types[i] > ENG_TOKTYPE_BYTE)) {
            base_errf(err, errlen, "token %zu has type %d (expected 0..6)", i, d->types[i]);
            return ENG_ERR_FORMAT;
        }
        if (d->scores && isnan(d->scores[i])) {
            base_errf(err, errlen, "token %zu has a NaN score", i);
            return ENG_ERR_FORMAT;
        }
    }

    struct eng_vocab *v = calloc(1, sizeof *v);
    if (!v)
        return ENG_ERR_NOMEM;
    v->kind = d->kind;
    v->pretok = pretok;
    v->ignore_merges = d->kind == ENG_VOCAB_BPE && pretok == ENG_PRETOK_LLAMA3;
    v->n_tokens = n;
    v->bos = d->bos_id;
    v->eos = d->eos_id;
    v->unk = d->unk_id;
    v->eot = d->eot_id;
    v->add_bos = d->add_bos != 0;
    v->add_eos = d->add_eos != 0;
    v->add_space_prefix = d->kind == ENG_VOCAB_SPM && d->add_space_prefix;
    bytemap_init(v);
    v->text = malloc(total ? total : 1);
    v->piece = malloc(total ? total : 1);
    v->text_off = malloc((n + 1) * sizeof *v->text_off);
    v->piece_off = malloc((n + 1) * sizeof *v->piece_off);
    v->scores = malloc(n * sizeof *v->scores);
    v->types = malloc(n);
    eng_status st = ENG_ERR_NOMEM;
    if (!v->text || !v->piece || !v->text_off || !v->piece_off || !v->scores || !v->types ||
        !itab_init(&v->tokmap, n))
        goto fail;

    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = d->token_lens ? d->token_lens[i] : strlen(d->tokens[i]);
        v->text_off[i] = off;
        memcpy(v->text + off, d->tokens[i], l);
        off += l;
        v->scores[i] = d->scores ? d->scores[i] : 0.0f;
        v->types[i] = d->types ? (uint8_t)d->types[i] : ENG_TOKTYPE_NORMAL;
    }
    v->text_off[n] = off;
    for (int b = 0; b < 256; b++)
        v->byte_tok[b] = -1;
    size_t n_special = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        const char *s = tok_text(v, (int32_t)i, &l);
        if (l > 0) {
            size_t slot = tokmap_slot(v, s, l);
            if (v->tokmap.slot[slot] < 0) /* duplicate texts: the first id wins */
                v->tokmap.slot[slot] = (int32_t)i;
        }
        int t = v->types[i];
        if (l > 0 && (t == ENG_TOKTYPE_CONTROL || t == ENG_TOKTYPE_USER_DEFINED || t == ENG_TOKTYPE_UNKNOWN))
            n_special++;
        int b = t == ENG_TOKTYPE_BYTE ? parse_byte_token(s, l) : -1;
        if (b >= 0 && v->byte_tok[b] < 0)
            v->byte_tok[b] = (int32_t)i;
    }
    if (d->kind == ENG_VOCAB_BPE) {
        for (int b = 0; b < 256; b++) {
            if (v->byte_tok[b] >= 0)
                continue;
            char u[4];
            size_t ul = eng_utf8_encode(v->byte_cp[b], u);
            v->byte_tok[b] = token_find(v, u, ul);
        }
        st = build_merges(v, d, err, errlen);
        if (st != ENG_OK)
            goto fail;
    }

    off = 0;
    for (size_t i = 0; i < n; i++) {
        v->piece_off[i] = off;
        size_t pl = make_piece(v, (int32_t)i, v->piece + off);
        off += pl;
        if (pl > v->max_piece)
            v->max_piece = pl;
    }
    v->piece_off[n] = off;

    st = ENG_ERR_NOMEM;
    v->special = malloc((n_special ? n_special : 1) * sizeof *v->special);
    struct special_key *keys = malloc((n_special ? n_special : 1) * sizeof *keys);
    if (!v->special || !keys) {
        free(keys);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        int t = v->types[i];
        size_t l = v->text_off[i + 1] - v->text_off[i];
        if (l > 0 && (t == ENG_TOKTYPE_CONTROL || t == ENG_TOKTYPE_USER_DEFINED || t == ENG_TOKTYPE_UNKNOWN))
            keys[v->n_special++] = (struct special_key){ l, (int32_t)i };
    }
    qsort(keys, v->n_special, sizeof *keys, cmp_special);
    for (size_t i = 0; i < v->n_special; i++)
        v->special[i] = keys[i].id;
    free(keys);

    add_eog(v, v->eos);
    add_eog(v, v->eot);
    static const char *const eog_texts[] = { "<|im_end|>", "<|eot_id|>", "<|endoftext|>",
                                             "<|end_of_text|>", "<|eom_id|>" };
    for (size_t i = 0; i < sizeof eog_texts / sizeof eog_texts[0]; i++)
        add_eog(v, token_find(v, eog_texts[i], strlen(eog_texts[i])));
    *out = v;
    return ENG_OK;
fail:
    if (st == ENG_ERR_NOMEM)
        base_errf(err, errlen, "out of memory building a vocabulary of %zu tokens", n);
    eng_vocab_free(v);
    return st;
}

/* ---- accessors ---- */

eng_vocab_kind eng_vocab_get_kind(const struct eng_vocab *v) { return v->kind; }
size_t eng_vocab_n_tokens(const struct eng_vocab *v) { return v->n_tokens; }
int32_t eng_vocab_bos(const struct eng_vocab *v) { return v->bos; }
int32_t eng_vocab_eos(const struct eng_vocab *v) { return v->eos; }
int eng_vocab_add_bos(const struct eng_vocab *v) { return v->add_bos; }
int eng_vocab_add_eos(const struct eng_vocab *v) { return v->add_eos; }

const char *eng_vocab_token_text(const struct eng_vocab *v, int32_t id, size_t *len)
{
    if (!v || id < 0 || (size_t)id >= v->n_tokens)
        return NULL;
    return tok_text(v, id, len);
}

int eng_vocab_token_type(const struct eng_vocab *v, int32_t id)
{
    if (!v || id < 0 || (size_t)id >= v->n_tokens)
        return -1;
    return v->types[id];
}

int eng_vocab_is_eog(const struct eng_vocab *v, int32_t id)
{
    if (!v || id < 0)
        return 0;
    for (size_t i = 0; i < v->n_eog; i++)
        if (v->eog[i] == id)
            return 1;
    return 0;
}

/* ---- segmentation: a max-priority queue of adjacent symbol pairs ---- */

struct sym {
    size_t start, len;   /* bytes of the segment text; len 0 = merged away */
    int32_t prev, next;  /* neighbours in the linked list, -1 at the ends */
    int32_t id;          /* token of this symbol's text, -1 if none */
};

struct bigram {
    double prio;         /* SPM: score of the merged piece; BPE: -rank */
    int32_t left, right; /* symbols */
    int32_t lid, rid;    /* BPE: the tokens the pair had when queued */
    int32_t result;      /* token of the merged text */
    size_t size;         /* SPM: bytes of the merged text when queued */
};

struct heap {
    struct bigram *a;
    size_t n, cap;
};

/* Higher priority first; among equals the leftmost pair, as SentencePiece and llama.cpp do. */
static int bigram_before(const struct bigram *x, const struct bigram *y)
{
    return x->prio > y->prio || (x->prio == y->prio && x->left < y->left);
}

static int heap_push(struct heap *h, struct bigram b)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        struct bigram *a = realloc(h->a, cap * sizeof *a);
        if (!a)
            return 0;
        h->a = a;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_before(&b, &h->a[p]))
            break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = b;
    return 1;
}

static struct bigram heap_pop(struct heap *h)
{
    struct bigram top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && bigram_before(&h->a[c + 1], &h->a[c]))
            c++;
        if (!bigram_before(&h->a[c], &last))
            break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n > 0)
        h->a[i] = last;
    return top;
}

/* Scratch reused across the segments of one tokenize call. */
struct work {
    struct sym *sym;
    size_t cap;
    struct heap heap;
    char *buf;           /* SPM escaped text / BPE mapped word */
    size_t buf_cap;
};

static int work_reserve(struct work *w, size_t n_sym, size_t n_buf)
{
    if (n_sym > w->cap) {
        struct sym *s = realloc(w->sym, n_sym * sizeof *s);
        if (!s)
            return 0;
        w->sym = s;
        w->cap = n_sym;
    }
    if (n_buf > w->buf_cap) {
        char *b = realloc(w->buf, n_buf);
        if (!b)
            return 0;
        w->buf = b;
        w->buf_cap = n_buf;
    }
    return 1;
}

static void link_syms(struct sym *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        s[i].prev = (int32_t)i - 1;
        s[i].next = i + 1 < n ? (int32_t)(i + 1) : -1;
    }
}

/* Byte fallback for text no token covers; unk when a byte has no token. */
static eng_status emit_bytes(const struct eng_vocab *v, const char *s, size_t n, struct idbuf *out,
                             char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int32_t id = v->byte_tok[c] >= 0 ? v->byte_tok[c] : v->unk;
        if (id < 0) {
            base_errf(err, errlen, "byte 0x%02X has no token and the vocabulary has no unknown token", c);
            return ENG_ERR_RANGE;
        }
        if (!ids_push(out, id))
            return ENG_ERR_NOMEM;
    }
    return ENG_OK;
}

/* SentencePiece pieces: only these types take part in segmentation. */
static int32_t spm_piece(const struct eng_vocab *v, const char *s, size_t n)
{
    int32_t id = token_find(v, s, n);
    if (id < 0)
        return -1;
    int t = v->types[id];
    return t == ENG_TOKTYPE_NORMAL || t == ENG_TOKTYPE_UNDEFINED || t == ENG_TOKTYPE_USER_DEFINED ? id : -1;
}

static int spm_try_pair(const struct eng_vocab *v, struct work *w, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return 1;
    const struct sym *a = &w->sym[l], *b = &w->sym[r];
    int32_t id = spm_piece(v, w->buf + a->start, a->len + b->len);
    if (id < 0)
        return 1;
    struct bigram g = { v->scores[id], l, r, -1, -1, id, a->len + b->len };
    return heap_push(&w->heap, g);
}

/* Initial SPM symbols are UTF-8 characters. llama.cpp sizes them from the lead byte alone,
 * which lets a broken sequence swallow the next character (even an escaped space); a strictly
 * decoded character or else one byte gives the same symbols on valid UTF-8 and keeps invalid
 * input byte-exact. */
static size_t spm_char_len(const char *s, size_t n)
{
    uint32_t cp;
    size_t l = eng_utf8_decode((const unsigned char *)s, n, &cp);
    return l ? l : 1;
}

/* Merges symbol g->right into g->left (the result token g->result) and unlinks the right one. */
static void sym_merge(struct work *w, const struct bigram *g)
{
    struct sym *a = &w->sym[g->left], *b = &w->sym[g->right];
    a->len += b->len;
    a->id = g->result;
    b->len = 0;
    a->next = b->next;
    if (b->next >= 0)
        w->sym[b->next].prev = g->left;
}

/* Greedy SentencePiece-style merging of the escaped text w->buf[0..n): repeatedly merge the
 * adjacent pair whose merged piece has the highest score. */
static eng_status spm_segment(const struct eng_vocab *v, struct work *w, size_t n, struct idbuf *out,
                              char *err, size_t errlen)
{
    size_t ns = 0;
    for (size_t i = 0; i < n; ns++) {
        size_t l = spm_char_len(w->buf + i, n - i);
        w->sym[ns] = (struct sym){ i, l, 0, 0, spm_piece(v, w->buf + i, l) };
        i += l;
    }
    link_syms(w->sym, ns);
    w->heap.n = 0;
    for (size_t i = 1; i < ns; i++)
        if (!spm_try_pair(v, w, (int32_t)i - 1, (int32_t)i))
            return ENG_ERR_NOMEM;
    while (w->heap.n > 0) {
        struct bigram g = heap_pop(&w->heap);
        struct sym *a = &w->sym[g.left], *b = &w->sym[g.right];
        /* Stale entry: one side was merged away or grew since it was queued. */
        if (a->len == 0 || b->len == 0 || a->len + b->len != g.size)
            continue;
        sym_merge(w, &g);
        if (!spm_try_pair(v, w, a->prev, g.left) || !spm_try_pair(v, w, g.left, a->next))
            return ENG_ERR_NOMEM;
    }
    for (int32_t i = ns ? 0 : -1; i >= 0; i = w->sym[i].next) {
        const struct sym *s = &w->sym[i];
        if (s->id >= 0) {
            if (!ids_push(out, s->id))
                return ENG_ERR_NOMEM;
        } else {
            eng_status st = emit_bytes(v, w->buf + s->start, s->len, out, err, errlen);
            if (st != ENG_OK)
                return st;
        }
    }
    return ENG_OK;
}

static eng_status spm_fragment(const struct eng_vocab *v, struct work *w, const char *s, size_t n,
                               int prefix, struct idbuf *out, char *err, size_t errlen)
{
    /* Escaping ' ' -> U+2581 at most triples the text. */
    if (!work_reserve(w, 3 * n + 3, 3 * n + 3))
        return ENG_ERR_NOMEM;
    size_t o = 0;
    if (prefix) {
        memcpy(w->buf, SPM_SPACE, 3);
        o = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(w->buf + o, SPM_SPACE, 3);
            o += 3;
        } else {
            w->buf[o++] = s[i];
        }
    }
    return spm_segment(v, w, o, out, err, errlen);
}

static int bpe_try_pair(const struct eng_vocab *v, struct work *w, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return 1;
    int32_t a = w->sym[l].id, b = w->sym[r].id;
    int32_t rank = merge_rank(v, a, b);
    if (rank < 0)
        return 1;
    struct bigram g = { -(double)rank, l, r, a, b, v->merges[rank].result, 0 };
    return heap_push(&w->heap, g);
}

/* Byte-level BPE of one pre-token s[0..n): one symbol per byte (its mapped character), then
 * the pair with the lowest merge rank is merged until none applies. */
static eng_status bpe_word(const struct eng_vocab *v, struct work *w, const char *s, size_t n,
                           struct idbuf *out, char *err, size_t errlen)
{
    if (!work_reserve(w, n, 2 * n))
        return ENG_ERR_NOMEM;
    if (v->ignore_merges) {
        size_t o = 0;
        for (size_t i = 0; i < n; i++)
            o += eng_utf8_encode(v->byte_cp[(unsigned char)s[i]], w->buf + o);
        int32_t id = token_find(v, w->buf, o);
        if (id >= 0)
            return ids_push(out, id) ? ENG_OK : ENG_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        w->sym[i] = (struct sym){ i, 1, 0, 0, v->byte_tok[(unsigned char)s[i]] };
    link_syms(w->sym, n);
    w->heap.n = 0;
    for (size_t i = 1; i < n; i++)
        if (!bpe_try_pair(v, w, (int32_t)i - 1, (int32_t)i))
            return ENG_ERR_NOMEM;
    while (w->heap.n > 0) {
        struct bigram g = heap_pop(&w->heap);
        struct sym *a = &w->sym[g.left], *b = &w->sym[g.right];
        if (a->len == 0 || b->len == 0 || a->next != g.right || a->id != g.lid || b->id != g.rid)
            continue;
        sym_merge(w, &g);
        if (!bpe_try_pair(v, w, a->prev, g.left) || !bpe_try_pair(v, w, g.left, a->next))
            return ENG_ERR_NOMEM;
    }
    for (int32_t i = n ? 0 : -1; i >= 0; i = w->sym[i].next) {
        const struct sym *sy = &w->sym[i];
        eng_status st = sy->id >= 0 ? (ids_push(out, sy->id) ? ENG_OK : ENG_ERR_NOMEM)
                                    : emit_bytes(v, s + sy->start, sy->len, out, err, errlen);
        if (st != ENG_OK)
            return st;
    }
    return ENG_OK;
}

static eng_status bpe_fragment(const struct eng_vocab *v, struct work *w, const char *s, size_t n,
                               struct idbuf *out, char *err, size_t errlen)
{
    /* The splitters never look behind their start, so splitting in batches from the last piece
     * end gives the same pieces as one pass, without memory proportional to the text. */
    size_t ends[256];
    size_t p = 0;
    while (p < n) {
        size_t np = eng_pretok_split(v->pretok, s + p, n - p, ends, sizeof ends / sizeof ends[0]);
        for (size_t i = 0, q = 0; i < np; q = ends[i++]) {
            eng_status st = bpe_word(v, w, s + p + q, ends[i] - q, out, err, errlen);
            if (st != ENG_OK)
                return st;
        }
        p += ends[np - 1];
    }
    return ENG_OK;
}

/* ---- special-token partition ---- */

struct frag {
    size_t off, len;
    int32_t id; /* special token, or -1 for raw text */
};

struct fragbuf {
    struct frag *a;
    size_t n, cap;
};

static int frag_push(struct fragbuf *f, struct frag x)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 16;
        struct frag *a = realloc(f->a, cap * sizeof *a);
        if (!a)
            return 0;
        f->a = a;
        f->cap = cap;
    }
    f->a[f->n++] = x;
    return 1;
}

/* Splits text at occurrences of special tokens, longest token first over the whole text (as
 * llama.cpp does), so a long marker is never broken by a shorter one inside it. */
static eng_status partition(const struct eng_vocab *v, const char *text, size_t len, int parse_special,
                            struct fragbuf *fb)
{
    fb->n = 0;
    if (len && !frag_push(fb, (struct frag){ 0, len, -1 }))
        return ENG_ERR_NOMEM;
    if (!parse_special)
        return ENG_OK;
    struct fragbuf next = { 0 };
    for (size_t k = 0; k < v->n_special; k++) {
        int32_t sid = v->special[k];
        size_t sl;
        const char *st = tok_text(v, sid, &sl);
        next.n = 0;
        for (size_t i = 0; i < fb->n; i++) {
            struct frag f = fb->a[i];
            if (f.id >= 0 || f.len < sl) {
                if (!frag_push(&next, f))
                    goto nomem;
                continue;
            }
            size_t p = f.off, end = f.off + f.len;
            for (;;) {
                const char *hit = memmem(text + p, end - p, st, sl);
                if (!hit)
                    break;
                size_t h = (size_t)(hit - text);
                if ((h > p && !frag_push(&next, (struct frag){ p, h - p, -1 })) ||
                    !frag_push(&next, (struct frag){ h, sl, sid }))
                    goto nomem;
                p = h + sl;
            }
            if (p < end && !frag_push(&next, (struct frag){ p, end - p, -1 }))
                goto nomem;
        }
        struct fragbuf t = *fb;
        *fb = next;
        next = t;
    }
    free(next.a);
    return ENG_OK;
nomem:
    free(next.a);
    return ENG_ERR_NOMEM;
}

eng_status eng_vocab_tokenize(const struct eng_vocab *v, const char *text, size_t len,
                              int add_special, int parse_special, int32_t **ids, size_t *n,
                              char *err, size_t errlen)
{
    if (!ids || !n)
        return ENG_ERR_ARG;
    *ids = NULL;
    *n = 0;
    if (!v || (!text && len)) {
        base_errf(err, errlen, "tokenize: NULL vocabulary or text");
        return ENG_ERR_ARG;
    }
    if (len > MAX_INPUT_BYTES) {
        base_errf(err, errlen, "tokenize: input of %zu bytes exceeds the %zu byte limit", len, MAX_INPUT_BYTES);
        return ENG_ERR_RANGE;
    }
    struct idbuf out = { 0 };
    struct fragbuf fb = { 0 };
    struct work w = { 0 };
    eng_status st = ENG_OK;
    if (add_special && v->add_bos && v->bos >= 0 && !ids_push(&out, v->bos))
        st = ENG_ERR_NOMEM;
    if (st == ENG_OK)
        st = partition(v, text, len, parse_special, &fb);
    int prev_special = 1; /* SPM prefixes a space at the start and after each special token */
    for (size_t i = 0; i < fb.n && st == ENG_OK; i++) {
        const struct frag *f = &fb.a[i];
        if (f->id >= 0) {
            st = ids_push(&out, f->id) ? ENG_OK : ENG_ERR_NOMEM;
            prev_special = 1;
        } else if (v->kind == ENG_VOCAB_SPM) {
            st = spm_fragment(v, &w, text + f->off, f->len, v->add_space_prefix && prev_special,
                              &out, err, errlen);
            prev_special = 0;
        } else {
            st = bpe_fragment(v, &w, text + f->off, f->len, &out, err, errlen);
        }
    }
    if (st == ENG_OK && add_special && v->add_eos && v->eos >= 0 && !ids_push(&out, v->eos))
        st = ENG_ERR_NOMEM;
    free(fb.a);
    free(w.sym);
    free(w.buf);
    free(w.heap.a);
    if (st == ENG_OK && !out.a && !(out.a = malloc(sizeof *out.a)))
        st = ENG_ERR_NOMEM;
    if (st != ENG_OK) {
        if (st == ENG_ERR_NOMEM)
            base_errf(err, errlen, "tokenize: out of memory");
        free(out.a);
        return st;
    }
    *ids = out.a;
    *n = out.n;
    return ENG_OK;
}

/* ---- detokenization ---- */

/* The bytes token id prints given the strip state; NULL when id is out of range. */
static const char *piece_of(const struct eng_vocab *v, int32_t id, int *strip, size_t *len)
{
    if (id < 0 || (size_t)id >= v->n_tokens)
        return NULL;
    const char *p = v->piece + v->piece_off[id];
    size_t n = v->piece_off[id + 1] - v->piece_off[id];
    /* The space prefix the tokenizer added shows up as the first text piece's leading ' ';
     * tokens that print nothing (BOS, other control tokens) do not end the prefix. */
    if (n > 0 && *strip) {
        *strip = 0;
        if (p[0] == ' ') {
            p++;
            n--;
        }
    }
    *len = n;
    return p;
}

eng_status eng_vocab_detokenize(const struct eng_vocab *v, const int32_t *ids, size_t n,
                                char **out, size_t *len)
{
    if (!out)
        return ENG_ERR_ARG;
    *out = NULL;
    if (len)
        *len = 0;
    if (!v || (!ids && n))
        return ENG_ERR_ARG;
    size_t total = 0;
    int strip = v->add_space_prefix;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        if (!piece_of(v, ids[i], &strip, &l))
            return ENG_ERR_RANGE;
        total += l;
    }
    char *s = malloc(total + 1);
    if (!s)
        return ENG_ERR_NOMEM;
    size_t o = 0;
    strip = v->add_space_prefix;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        const char *p = piece_of(v, ids[i], &strip, &l);
        memcpy(s + o, p, l);
        o += l;
    }
    s[o] = 0;
    *out = s;
    if (len)
        *len = o;
    return ENG_OK;
}

eng_detok *eng_vocab_detok_create(const struct eng_vocab *v)
{
    if (!v)
        return NULL;
    eng_detok *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->v = v;
    d->strip = v->add_space_prefix;
    /* Held bytes plus the longest piece: pushing never needs to allocate. */
    d->cap = v->max_piece + sizeof d->hold;
    d->buf = malloc(d->cap);
    if (!d->buf) {
        free(d);
        return NULL;
    }
    return d;
}

/* Bytes at the end of b[0..n) that begin a UTF-8 sequence still missing continuation bytes. */
static size_t incomplete_tail(const unsigned char *b, size_t n)
{
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned char c = b[n - k];
        if ((c & 0xC0) == 0x80)
            continue; /* continuation: keep looking for its lead byte */
        size_t need = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        return need > k ? k : 0;
    }
    return 0;
}

const char *eng_detok_push(eng_detok *d, int32_t id, size_t *len)
{
    *len = 0;
    if (!d)
        return "";
    size_t l;
    const char *p = piece_of(d->v, id, &d->strip, &l);
    if (!p)
        return "";
    memcpy(d->buf, d->hold, d->n_hold);
    memcpy(d->buf + d->n_hold, p, l);
    size_t n = d->n_hold + l;
    size_t keep = incomplete_tail((const unsigned char *)d->buf, n);
    memcpy(d->hold, d->buf + n - keep, keep);
    d->n_hold = keep;
    *len = n - keep;
    return d->buf;
}

const char *eng_detok_flush(eng_detok *d, size_t *len)
{
    *len = 0;
    if (!d || d->n_hold == 0)
        return "";
    memcpy(d->buf, d->hold, d->n_hold);
    *len = d->n_hold;
    d->n_hold = 0;
    return d->buf;
}

void eng_detok_free(eng_detok *d)
{
    if (!d)
        return;
    free(d->buf);
    free(d);
}
