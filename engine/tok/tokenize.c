/* tokenize.c: text to token ids: the special-token partition, then SentencePiece-style merging
 * by score or GPT-2 byte-level BPE merging by rank over each pre-token. */
#include "engine/tok/vocab_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INPUT_BYTES ((size_t)1 << 30)

/* ---- growable buffers ---- */

struct idbuf {
    int32_t *a;
    size_t n, cap;
};

static int ids_push(struct idbuf *b, int32_t id)
{
    if (!base_grow(&b->a, &b->cap, b->n, sizeof *b->a, 64))
        return 0;
    b->a[b->n++] = id;
    return 1;
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
    if (!base_grow(&h->a, &h->cap, h->n, sizeof *h->a, 64))
        return 0;
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

/* SentencePiece pieces: as in llama.cpp (llm_tokenizer_spm_session's try_add_bigram and
 * resegment look texts up with no type filter), a token of any type takes part in
 * segmentation: control, unused, byte and unknown ones too. */
static int32_t spm_piece(const struct eng_vocab *v, const char *s, size_t n) { return token_find(v, s, n); }

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
/* A character's length as llama.cpp's SentencePiece tokenizer takes it: from the lead byte's
 * high bits alone, cut at the end of the text. Invalid UTF-8 then swallows the bytes after it,
 * which byte fallback turns into byte tokens, exactly as there. */
static size_t spm_char_len(const char *s, size_t n)
{
    static const unsigned char len_of_high4[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };
    size_t l = len_of_high4[(unsigned char)s[0] >> 4];
    return l < n ? l : n;
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

/* One code point as llama.cpp's decoder reads it: a lead byte and the continuation bytes it
 * announces, with no check for overlong forms, surrogates or the U+10FFFF limit. 0 where that
 * decoder gives up (and llama.cpp substitutes U+FFFD for one byte). */
static size_t lenient_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len = !(c & 0x40) ? 0 : !(c & 0x20) ? 2 : !(c & 0x10) ? 3 : !(c & 0x08) ? 4 : 0;
    if (len == 0 || n < len)
        return 0;
    uint32_t v = c & (0x7Fu >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    *cp = v;
    return len;
}

/* Byte-level BPE in llama.cpp sees the text as code points: every byte its decoder rejects
 * becomes U+FFFD, an overlong form its shortest encoding. Returns a malloc'd copy so rewritten in
 * *out (NULL when s needs no change), or ENG_ERR_RANGE for a code point past U+10FFFF, which
 * llama.cpp cannot encode back (it aborts). */
static eng_status bpe_normalize(const char *s, size_t n, char **out, size_t *out_n, char *err, size_t errlen)
{
    *out = NULL;
    char *buf = NULL;
    size_t o = 0;
    for (size_t p = 0; p < n;) {
        uint32_t cp = 0xFFFD;
        size_t l = lenient_decode((const unsigned char *)s + p, n - p, &cp);
        if (cp > 0x10FFFF) {
            base_errf(err, errlen, "tokenize: bytes at offset %zu encode U+%X, past U+10FFFF (llama.cpp cannot "
                      "tokenize them)", p, (unsigned)cp);
            free(buf);
            return ENG_ERR_RANGE;
        }
        char enc[4];
        size_t el = eng_utf8_encode(cp, enc);
        if (!buf && (l == 0 || el != l)) { /* the first change: copy what came before */
            if (!(buf = malloc(3 * n)))
                return ENG_ERR_NOMEM;
            memcpy(buf, s, p);
            o = p;
        }
        if (buf) {
            memcpy(buf + o, enc, el);
            o += el;
        }
        p += l ? l : 1;
    }
    *out = buf;
    *out_n = o;
    return ENG_OK;
}

static eng_status bpe_pieces(const struct eng_vocab *v, struct work *w, const char *s, size_t n,
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

static eng_status bpe_fragment(const struct eng_vocab *v, struct work *w, const char *s, size_t n,
                               struct idbuf *out, char *err, size_t errlen)
{
    char *norm;
    size_t norm_n;
    eng_status st = bpe_normalize(s, n, &norm, &norm_n, err, errlen);
    if (st != ENG_OK || !norm)
        return st != ENG_OK ? st : bpe_pieces(v, w, s, n, out, err, errlen);
    st = bpe_pieces(v, w, norm, norm_n, out, err, errlen);
    free(norm);
    return st;
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
    if (!base_grow(&f->a, &f->cap, f->n, sizeof *f->a, 16))
        return 0;
    f->a[f->n++] = x;
    return 1;
}

/* Phi-3's special tokens eat the white space after them in llama.cpp, all but three. */
static int strips_after(const struct eng_vocab *v, int32_t id)
{
    if (!v->rstrip_special)
        return 0;
    static const char *const keep[] = { "<unk>", "<s>", "<|endoftext|>" };
    size_t l;
    const char *t = tok_text(v, id, &l);
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if (strlen(keep[i]) == l && memcmp(keep[i], t, l) == 0)
            return 0;
    return 1;
}

/* Splits text at occurrences of special tokens, longest token first over the whole text (as
 * llama.cpp does), so a long marker is never broken by a shorter one inside it. Without
 * parse_special, user-defined tokens (Qwen's <think>, fill-in-the-middle markers, GPT-NeoX's
 * runs of spaces) still match, as in llama.cpp: only control and unknown texts stay text. */
static eng_status partition(const struct eng_vocab *v, const char *text, size_t len, int parse_special,
                            struct fragbuf *fb)
{
    fb->n = 0;
    if (len && !frag_push(fb, (struct frag){ 0, len, -1 }))
        return ENG_ERR_NOMEM;
    struct fragbuf next = { 0 };
    for (size_t k = 0; k < v->n_special; k++) {
        int32_t sid = v->special[k];
        if (!parse_special && v->types[sid] != ENG_TOKTYPE_USER_DEFINED)
            continue;
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
                if (strips_after(v, sid))
                    while (p < end && text[p] && strchr(" \t\n\v\f\r", text[p]))
                        p++;
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
