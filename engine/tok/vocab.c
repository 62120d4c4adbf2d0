/* vocab.c: vocabularies, validated from GGUF metadata or in-memory descriptions, and their
 * accessors: token texts and pieces, the special-token list, the merge table and the GPT-2 byte
 * map that tokenize.c and detok.c read. */
#include "engine/tok/vocab_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARENA_BYTES ((size_t)1 << 30)

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

/* Puts dst[o..) = the n bytes at s; dst NULL only counts them. */
static size_t put(char *dst, size_t o, const void *s, size_t n)
{
    if (dst)
        memcpy(dst + o, s, n);
    return o + n;
}

/* Writes the detokenized form of token id to dst (NULL: only measures it; the caller sizes dst
 * with a first pass). Returns its length. */
static size_t make_piece(const struct eng_vocab *v, int32_t id, char *dst)
{
    size_t n;
    const char *s = tok_text(v, id, &n);
    int type = v->types[id];
    switch (type) {
    case ENG_TOKTYPE_CONTROL:
    case ENG_TOKTYPE_UNUSED:
    case ENG_TOKTYPE_UNKNOWN: /* llama_token_to_piece without special: nothing, as for control */
        return 0;
    case ENG_TOKTYPE_BYTE: {
        int b = parse_byte_token(s, n);
        if (b >= 0) {
            const char c = (char)b;
            return put(dst, 0, &c, 1);
        }
        return put(dst, 0, s, n);
    }
    case ENG_TOKTYPE_USER_DEFINED:
        return put(dst, 0, s, n);
    default:
        break;
    }
    size_t o = 0;
    if (v->kind == ENG_VOCAB_SPM) {
        for (size_t i = 0; i < n;) {
            if (n - i >= 3 && memcmp(s + i, SPM_SPACE, 3) == 0) {
                o = put(dst, o, " ", 1);
                i += 3;
            } else {
                o = put(dst, o, s + i++, 1);
            }
        }
        return o;
    }
    /* BPE: every mapped character back to its byte. A character outside the byte map becomes
     * what llama.cpp's llama_decode_text makes of it: "[UNK_BYTE_0x", its UTF-8 bytes in hex,
     * the whole token text, "]". Bytes that are not UTF-8 are copied as they are. */
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = eng_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        int b = l ? cp_to_byte(v, cp) : -1;
        if (b >= 0) {
            const char c = (char)b;
            o = put(dst, o, &c, 1);
        } else if (l) {
            char hex[2 * 4 + 1];
            for (size_t k = 0; k < l; k++)
                snprintf(hex + 2 * k, 3, "%02x", (unsigned char)s[i + k]);
            o = put(dst, o, "[UNK_BYTE_0x", 12);
            o = put(dst, o, hex, 2 * l);
            o = put(dst, o, s, n);
            o = put(dst, o, "]", 1);
        } else {
            o = put(dst, o, s + i, 1);
            l = 1;
        }
        i += l;
    }
    return o;
}

struct special_key {
    size_t len;
    int32_t id;
};

/* Texts that end generation whatever their token type says, as llama.cpp's vocabulary loader
 * lists them; a token with one of these texts is a control token there (so special-token
 * parsing matches it and detokenizing drops it), and here. */
static const char *const eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    ("<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"), "[e~[",
};

static int is_eog_text(const char *s, size_t l)
{
    for (size_t i = 0; i < sizeof eog_texts / sizeof eog_texts[0]; i++)
        if (strlen(eog_texts[i]) == l && memcmp(eog_texts[i], s, l) == 0)
            return 1;
    return 0;
}

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
    BASE_FREE_ALL(v->text, v->text_off, v->piece, v->piece_off, v->scores, v->types, v->tokmap.slot, v->merges,
                  v->mergemap.slot, v->special, v->chat_template, v);
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
            base_errf(err, errlen, "unsupported BPE pre-tokenizer '%s' (%s)", excerpt(pre, strlen(pre), ex),
                      ENG_PRETOK_SUPPORTED);
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
    v->rstrip_special = d->rstrip_special != 0;
    if (d->chat_template && !(v->chat_template = strndup(d->chat_template, d->chat_template_len))) {
        eng_vocab_free(v);
        base_errf(err, errlen, "out of memory copying the chat template");
        return ENG_ERR_NOMEM;
    }
    bytemap_init(v);
    v->text = malloc(total ? total : 1);
    v->text_off = malloc((n + 1) * sizeof *v->text_off);
    v->piece_off = malloc((n + 1) * sizeof *v->piece_off);
    v->scores = malloc(n * sizeof *v->scores);
    v->types = malloc(n);
    eng_status st = ENG_ERR_NOMEM;
    if (!v->text || !v->text_off || !v->piece_off || !v->scores || !v->types ||
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
        if (is_eog_text(d->tokens[i], l))
            v->types[i] = ENG_TOKTYPE_CONTROL;
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
            if (v->tokmap.slot[slot] >= 0) { /* llama.cpp asserts against such a vocabulary too */
                st = ENG_ERR_FORMAT;
                base_errf(err, errlen, "tokens %d and %zu have the same text (%zu bytes): a vocabulary maps each "
                          "text to one token", v->tokmap.slot[slot], i, l);
                goto fail;
            }
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

    off = 0; /* a piece can be longer than its text (llama.cpp's "[UNK_BYTE_0x..]"): sized first */
    for (size_t i = 0; i < n; i++) {
        v->piece_off[i] = off;
        size_t pl = make_piece(v, (int32_t)i, NULL);
        off += pl;
        if (pl > v->max_piece)
            v->max_piece = pl;
        if (off > MAX_ARENA_BYTES) { /* a token of many unmapped characters grows quadratically */
            base_errf(err, errlen, "token pieces exceed %zu bytes in total", MAX_ARENA_BYTES);
            st = ENG_ERR_FORMAT;
            goto fail;
        }
    }
    v->piece_off[n] = off;
    st = ENG_ERR_NOMEM;
    if (!(v->piece = malloc(off ? off : 1)))
        goto fail;
    for (size_t i = 0; i < n; i++)
        make_piece(v, (int32_t)i, v->piece + v->piece_off[i]);

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
const char *eng_vocab_chat_template(const struct eng_vocab *v) { return v->chat_template; }

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
