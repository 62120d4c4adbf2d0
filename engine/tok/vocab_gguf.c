/* vocab_gguf.c: reads a GGUF file's tokenizer.ggml.* metadata into an eng_vocab_desc and hands
 * it to eng_vocab_create, which validates everything. Kept apart from vocab.c so that the
 * tokenizer builds and tests without the GGUF reader. */
#include "engine/tok/tokenizer_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Printable copy of a metadata string for messages. */
static void shown(const gguf_str *s, char out[48])
{
    size_t n = s->n < 40 ? (size_t)s->n : 40;
    for (size_t i = 0; i < n; i++)
        out[i] = s->p[i] >= 0x20 && s->p[i] < 0x7F ? s->p[i] : '?';
    memcpy(out + n, s->n > 40 ? "..." : "", s->n > 40 ? 4 : 1);
}

/* A string array as pointer + length arrays into the mapping (borrowed). absent_ok: a missing
 * key gives n = 0. */
static eng_status get_strarr(const gguf_file *g, const char *key, int absent_ok, uint64_t max,
                             const char ***ptrs, size_t **lens, size_t *n, char *err, size_t errlen)
{
    gguf_vtype elem;
    uint64_t cnt;
    const void *data;
    *ptrs = NULL;
    *lens = NULL;
    *n = 0;
    int r = gguf_get_arr(g, key, &elem, &cnt, &data);
    if (r == 0)
        return absent_ok ? ENG_OK : eng_fail(err, errlen, ENG_ERR_FORMAT, "missing required key '%s'", key);
    if (r < 0 || elem != GGUF_VT_STRING)
        return eng_fail(err, errlen, ENG_ERR_FORMAT, "key '%s' has the wrong type (expected an array of strings)", key);
    if (cnt > max)
        return eng_fail(err, errlen, ENG_ERR_FORMAT, "key '%s' has %llu entries (limit %llu)", key, (unsigned long long)cnt,
                    (unsigned long long)max);
    *ptrs = malloc((cnt ? cnt : 1) * sizeof **ptrs);
    *lens = malloc((cnt ? cnt : 1) * sizeof **lens);
    if (!*ptrs || !*lens)
        return ENG_ERR_NOMEM;
    for (uint64_t i = 0; i < cnt; i++) {
        gguf_str s;
        if (gguf_get_arr_str(g, key, i, &s) != 1)
            return eng_fail(err, errlen, ENG_ERR_FORMAT, "key '%s': cannot read string %llu", key, (unsigned long long)i);
        (*ptrs)[i] = s.p;
        (*lens)[i] = (size_t)s.n;
    }
    *n = (size_t)cnt;
    return ENG_OK;
}

/* A numeric array of 4-byte elements of one of two accepted types, copied out (the mapping
 * may be unaligned). */
static eng_status get_arr32(const gguf_file *g, const char *key, gguf_vtype t1, gguf_vtype t2,
                            const char *expected, void **out, size_t *n, char *err, size_t errlen)
{
    gguf_vtype elem;
    uint64_t cnt;
    const void *data;
    *out = NULL;
    *n = 0;
    int r = gguf_get_arr(g, key, &elem, &cnt, &data);
    if (r == 0)
        return ENG_OK;
    if (r < 0 || (elem != t1 && elem != t2))
        return eng_fail(err, errlen, ENG_ERR_FORMAT, "key '%s' has the wrong type (expected an array of %s)", key, expected);
    if (cnt > ENG_VOCAB_MAX_TOKENS)
        return eng_fail(err, errlen, ENG_ERR_FORMAT, "key '%s' has %llu entries (limit %d)", key, (unsigned long long)cnt,
                    ENG_VOCAB_MAX_TOKENS);
    *out = malloc(cnt ? cnt * 4 : 1);
    if (!*out)
        return ENG_ERR_NOMEM;
    if (cnt)
        memcpy(*out, data, cnt * 4);
    *n = (size_t)cnt;
    return ENG_OK;
}

/* An integer key: 1 and *x when present, 0 when absent, -1 when of another type (*st set and
 * err naming what was expected). */
static int int_key(const gguf_file *g, const char *key, const char *expected, int64_t *x, eng_status *st,
                   char *err, size_t errlen)
{
    int r = gguf_get_int(g, key, x);
    if (r < 0)
        *st = eng_fail(err, errlen, ENG_ERR_FORMAT, "key '%s' has the wrong type (expected %s)", key, expected);
    return r;
}

/* The special id under key through eng_vocab_special_id; a wrong type fails with err. */
static eng_status get_id(const gguf_file *g, const char *key, size_t n_vocab, int32_t *out, char *err,
                         size_t errlen)
{
    if (eng_vocab_special_id(g, key, n_vocab, out) < 0)
        return eng_fail(err, errlen, ENG_ERR_FORMAT, "key '%s' has the wrong type (expected an integer)", key);
    return ENG_OK;
}

static eng_status get_flag(const gguf_file *g, const char *key, int *flag, char *err, size_t errlen)
{
    int64_t x;
    eng_status st = ENG_OK;
    int r = int_key(g, key, "a bool", &x, &st, err, errlen);
    if (r == 1)
        *flag = x != 0;
    return st;
}

/* 1 if the string key holds exactly the text t. */
static int str_is(const gguf_file *g, const char *key, const char *t)
{
    gguf_str s;
    return gguf_get_str(g, key, &s) == 1 && (size_t)s.n == strlen(t) && memcmp(s.p, t, (size_t)s.n) == 0;
}

/* llama.cpp keys Phi-3's special-token white-space stripping on general.name, lowercased,
 * containing "phi-3" or "phi3". */
static int name_has_phi3(const gguf_file *g)
{
    gguf_str s;
    if (gguf_get_str(g, "general.name", &s) != 1)
        return 0;
    for (size_t i = 0; i + 4 <= (size_t)s.n; i++) {
        if (strncasecmp(s.p + i, "phi3", 4) == 0 || (i + 5 <= (size_t)s.n && strncasecmp(s.p + i, "phi-3", 5) == 0))
            return 1;
    }
    return 0;
}

int eng_vocab_default_add_bos(const gguf_file *g)
{
    if (str_is(g, "tokenizer.ggml.model", "llama"))
        return 1;
    if (!str_is(g, "tokenizer.ggml.model", "gpt2"))
        return 0;
    gguf_str s;
    eng_pretok k;
    return gguf_get_str(g, "tokenizer.ggml.pre", &s) == 1 && eng_pretok_from_name(s.p, (size_t)s.n, &k) &&
           eng_pretok_adds_bos(k);
}

int eng_vocab_special_id(const gguf_file *g, const char *key, size_t n_vocab, int32_t *id)
{
    int64_t x;
    const int r = gguf_get_int(g, key, &x);
    if (r <= 0)
        return r;
    if (x >= 0 && (uint64_t)x >= n_vocab)
        return 0; /* llama.cpp: "bad special token ... using default id" */
    *id = x < 0 ? -1 : (int32_t)x; /* below n_vocab, itself at most INT32_MAX */
    return 1;
}

void eng_vocab_default_specials(const gguf_file *g, int n_vocab, int32_t *bos, int32_t *eos, int32_t *unk)
{
    *bos = *eos = *unk = -1;
    if (str_is(g, "tokenizer.ggml.model", "llama")) {
        *bos = 1, *eos = 2, *unk = 0;
    } else if (str_is(g, "tokenizer.ggml.model", "gpt2")) {
        *eos = 11;
        if (!str_is(g, "tokenizer.ggml.pre", "glm4") && !str_is(g, "tokenizer.ggml.pre", "chatglm-bpe"))
            *bos = 11;
    }
    int32_t *ids[] = {bos, eos, unk};
    for (int i = 0; i < 3; i++)
        if (*ids[i] >= n_vocab)
            *ids[i] = -1;
}

eng_status eng_vocab_from_gguf(const gguf_file *g, const eng_info *info, struct eng_vocab **out,
                               char *err, size_t errlen)
{
    if (!out)
        return ENG_ERR_ARG;
    *out = NULL;
    if (!g)
        return ENG_ERR_ARG;
    eng_vocab_desc d;
    memset(&d, 0, sizeof d);
    char buf[48], pre[64] = "default";
    gguf_str s;
    int r = gguf_get_str(g, "tokenizer.ggml.model", &s);
    if (r == 0)
        return eng_fail(err, errlen, ENG_ERR_FORMAT, "missing required key 'tokenizer.ggml.model'");
    if (r < 0)
        return eng_fail(err, errlen, ENG_ERR_FORMAT, "key 'tokenizer.ggml.model' has the wrong type (expected a string)");
    if (s.n == 5 && memcmp(s.p, "llama", 5) == 0) {
        d.kind = ENG_VOCAB_SPM;
    } else if (s.n == 4 && memcmp(s.p, "gpt2", 4) == 0) {
        d.kind = ENG_VOCAB_BPE;
    } else {
        shown(&s, buf);
        if (err && errlen)
            snprintf(err, errlen, "unsupported tokenizer model '%s' (supported: llama, gpt2)", buf);
        return ENG_ERR_UNSUPPORTED;
    }
    r = gguf_get_str(g, "tokenizer.ggml.pre", &s);
    if (r < 0)
        return eng_fail(err, errlen, ENG_ERR_FORMAT, "key 'tokenizer.ggml.pre' has the wrong type (expected a string)");
    if (r == 1 && d.kind == ENG_VOCAB_BPE) {
        eng_pretok k;
        if (s.n >= sizeof pre || memchr(s.p, 0, (size_t)s.n) || !eng_pretok_from_name(s.p, (size_t)s.n, &k)) {
            shown(&s, buf);
            if (err && errlen)
                snprintf(err, errlen, "unsupported BPE pre-tokenizer '%s' (%s)", buf, ENG_PRETOK_SUPPORTED);
            return ENG_ERR_UNSUPPORTED;
        }
        memcpy(pre, s.p, (size_t)s.n);
        pre[s.n] = 0;
    }
    d.pre = pre;

    const char **toks = NULL, **merges = NULL;
    size_t *tok_lens = NULL, *merge_lens = NULL;
    void *scores = NULL, *types = NULL;
    eng_status st;
    if ((st = get_strarr(g, "tokenizer.ggml.tokens", 0, ENG_VOCAB_MAX_TOKENS, &toks, &tok_lens, &d.n_tokens,
                         err, errlen)) ||
        (st = get_arr32(g, "tokenizer.ggml.scores", GGUF_VT_FLOAT32, GGUF_VT_FLOAT32, "float32", &scores,
                        &d.n_scores, err, errlen)) ||
        (st = get_arr32(g, "tokenizer.ggml.token_type", GGUF_VT_INT32, GGUF_VT_UINT32, "int32", &types,
                        &d.n_types, err, errlen)))
        goto done;
    if (d.kind == ENG_VOCAB_BPE &&
        (st = get_strarr(g, "tokenizer.ggml.merges", 0, ENG_VOCAB_MAX_MERGES, &merges, &merge_lens,
                         &d.n_merges, err, errlen)))
        goto done;
    if (info && info->n_vocab > 0 && d.n_tokens > (size_t)info->n_vocab) {
        st = eng_fail(err, errlen, ENG_ERR_FORMAT, "tokenizer.ggml.tokens has %zu tokens but the model embeds only %d",
                  d.n_tokens, info->n_vocab);
        goto done;
    }
    d.tokens = toks;
    d.token_lens = tok_lens;
    d.scores = scores;
    d.types = types; /* uint32 values above INT32_MAX read as negative and are rejected */
    d.merges = merges;
    d.merge_lens = merge_lens;

    /* Defaults as llama.cpp's: SentencePiece adds BOS and a space prefix, GPT-2 BPE neither,
     * except the llama3 family which adds BOS (eng_vocab_default_add_bos, which the model's
     * eng_info uses too). The model's eng_info, when given, is the authority on BOS/EOS so the
     * engine and the tokenizer cannot disagree. */
    d.add_bos = eng_vocab_default_add_bos(g);
    d.rstrip_special = name_has_phi3(g);
    gguf_str ct;
    r = gguf_get_str(g, "tokenizer.chat_template", &ct);
    if (r < 0) {
        st = eng_fail(err, errlen, ENG_ERR_FORMAT, "key 'tokenizer.chat_template' has the wrong type (expected a string)");
        goto done; /* the arrays read above are freed there */
    }
    if (r == 1 && !memchr(ct.p, 0, (size_t)ct.n)) { /* a NUL inside: no template we could read */
        d.chat_template = ct.p;
        d.chat_template_len = (size_t)ct.n;
    }
    d.add_space_prefix = d.kind == ENG_VOCAB_SPM;
    eng_vocab_default_specials(g, (int)(d.n_tokens < INT32_MAX ? d.n_tokens : INT32_MAX), &d.bos_id, &d.eos_id,
                               &d.unk_id);
    d.eot_id = -1;
    if ((st = get_id(g, "tokenizer.ggml.bos_token_id", d.n_tokens, &d.bos_id, err, errlen)) ||
        (st = get_id(g, "tokenizer.ggml.eos_token_id", d.n_tokens, &d.eos_id, err, errlen)) ||
        (st = get_id(g, "tokenizer.ggml.unknown_token_id", d.n_tokens, &d.unk_id, err, errlen)) ||
        (st = get_id(g, "tokenizer.ggml.eot_token_id", d.n_tokens, &d.eot_id, err, errlen)) ||
        (st = get_flag(g, "tokenizer.ggml.add_bos_token", &d.add_bos, err, errlen)) ||
        (st = get_flag(g, "tokenizer.ggml.add_eos_token", &d.add_eos, err, errlen)) ||
        (st = get_flag(g, "tokenizer.ggml.add_space_prefix", &d.add_space_prefix, err, errlen)))
        goto done;
    if (info) {
        d.bos_id = info->bos_id;
        d.eos_id = info->eos_id;
        d.add_bos = info->add_bos;
    }
    if (d.bos_id < 0)
        d.add_bos = 0;
    if (d.eos_id < 0)
        d.add_eos = 0;
    st = eng_vocab_create(&d, out, err, errlen);
done:
    if (st == ENG_ERR_NOMEM && err && errlen)
        snprintf(err, errlen, "out of memory reading the vocabulary");
    free(toks);
    free(tok_lens);
    free(merges);
    free(merge_lens);
    free(scores);
    free(types);
    return st;
}
