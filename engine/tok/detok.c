/* detok.c: token ids back to text, whole or streaming (holding incomplete UTF-8 sequences
 * between pushes). */
#include "engine/tok/vocab_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct eng_detok {
    const struct eng_vocab *v;
    int strip;               /* the next token is the first and loses one leading ' ' */
    unsigned char hold[4];   /* incomplete UTF-8 sequence carried to the next push */
    size_t n_hold;
    char *buf;
    size_t cap;
};

/* ---- detokenization ---- */

const char *eng_vocab_piece(const struct eng_vocab *v, int32_t id, size_t *len)
{
    *len = 0;
    if (!v || id < 0 || (size_t)id >= v->n_tokens)
        return NULL;
    *len = v->piece_off[id + 1] - v->piece_off[id];
    return v->piece + v->piece_off[id];
}

/* The bytes token id prints; NULL when id is out of range. *strip: this is the first token of a
 * text whose space prefix comes off (llama_detokenize strips tokens[0] only: a text that starts
 * with BOS keeps the space of the token after it); cleared by any token. */
static const char *piece_of(const struct eng_vocab *v, int32_t id, int *strip, size_t *len)
{
    const char *p = eng_vocab_piece(v, id, len);
    if (p && *strip && *len > 0 && p[0] == ' ') {
        p++;
        --*len;
    }
    *strip = 0;
    return p;
}

eng_status eng_vocab_detokenize(const struct eng_vocab *v, const int32_t *ids, size_t n, int strip_first,
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
    int strip = strip_first && v->add_space_prefix;
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
    strip = strip_first && v->add_space_prefix;
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

eng_detok *eng_vocab_detok_create(const struct eng_vocab *v, int strip_first)
{
    if (!v)
        return NULL;
    eng_detok *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->v = v;
    d->strip = strip_first && v->add_space_prefix;
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

