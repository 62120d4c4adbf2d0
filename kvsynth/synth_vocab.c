/* synth_vocab.c: deterministic synthetic tokenizer vocabularies (see synth_vocab.h). A tiny
 * BPE trainer learns merges from an embedded text; when the text runs out of repeated pairs,
 * the vocabulary is filled with concatenations of existing tokens picked by a fixed PRNG, so
 * any size is reachable and every token stays producible by merges. */
#include "kvsynth/synth_vocab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Original text written for kvpub: plain English with digits and punctuation. */
static const char k_text[] =
    "The lighthouse keeper counted the ships every morning. On the first day of spring there were "
    "seven boats in the harbour, and by the evening there were twelve. She wrote the numbers in a "
    "small blue book: 7, 12, 19, 23. Her brother asked why she kept counting, and she said that the "
    "sea was easier to understand when you wrote it down.\n"
    "The town below the hill had a bakery, a school, a library and a market that opened on Tuesday "
    "and Saturday. Children ran to the market to buy apples, bread and honey. The baker gave them "
    "warm rolls and told them stories about storms, about the great wave of 1953, and about the "
    "night the lighthouse lamp went out for an hour.\n"
    "When the winter came, the ships stayed in the harbour and the keeper read books by the fire. "
    "She read about stars and tides, about the moon that pulls the water, and about sailors who "
    "found their way home by looking at the sky. In the morning she climbed the stairs, cleaned the "
    "glass and lit the lamp again, because a light that nobody needs today may be needed tomorrow.\n"
    "One evening a small boat came in through the fog. The people on the boat were cold and tired, "
    "and they had been lost for three days. They saw the light, they turned toward it, and they "
    "reached the harbour safely. The keeper made tea, wrote the number 1 in her blue book, and "
    "smiled. It was the most important number she had ever written.\n"
    "Years later, the children of the town still talk about the keeper and her book. They say that "
    "if you climb the hill on a clear night, you can see the light turning, slowly and patiently, "
    "over the water, counting the ships that come home.\n";

/* ---- string -> id table ---- */

typedef struct builder {
    char **tok;
    float *score;
    int32_t *type;
    size_t n, cap;
    int32_t *slot; /* open addressing, -1 empty */
    size_t nslot;
    char **merges;
    size_t n_merges;
    int oom;
} builder;

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int32_t b_find(const builder *b, const char *s, size_t len)
{
    size_t m = b->nslot - 1;
    for (size_t i = fnv1a(s, len) & m;; i = (i + 1) & m) {
        int32_t id = b->slot[i];
        if (id < 0)
            return -1;
        if (strlen(b->tok[id]) == len && memcmp(b->tok[id], s, len) == 0)
            return id;
    }
}

/* Appends a token (the caller has checked it is new). Returns its id or -1 on OOM. */
static int32_t b_add(builder *b, const char *s, size_t len, float score, int32_t type)
{
    if (b->oom || b->n >= b->cap)
        return -1;
    char *c = malloc(len + 1);
    if (!c) {
        b->oom = 1;
        return -1;
    }
    memcpy(c, s, len);
    c[len] = 0;
    int32_t id = (int32_t)b->n++;
    b->tok[id] = c;
    b->score[id] = score;
    b->type[id] = type;
    size_t m = b->nslot - 1, i = fnv1a(s, len) & m;
    while (b->slot[i] >= 0)
        i = (i + 1) & m;
    b->slot[i] = id;
    return id;
}

/* Hands the tokens, scores, types and merges over to v and frees the lookup table. */
static void b_take(builder *b, synth_vocab *v)
{
    v->tokens = b->tok;
    v->scores = b->score;
    v->types = b->type;
    v->n = b->n;
    v->merges = b->merges;
    v->n_merges = b->n_merges;
    free(b->slot);
}

static void b_free(builder *b)
{
    synth_vocab v;
    memset(&v, 0, sizeof v);
    b_take(b, &v);
    synth_vocab_free(&v);
}

/* An empty builder for cap tokens. 0, or -1 with err (nothing left to free). */
static int b_init(builder *b, size_t cap, char *err, size_t errlen)
{
    memset(b, 0, sizeof *b);
    b->cap = cap;
    b->nslot = 1;
    while (b->nslot < 2 * cap)
        b->nslot *= 2;
    b->tok = calloc(cap, sizeof *b->tok);
    b->score = calloc(cap, sizeof *b->score);
    b->type = calloc(cap, sizeof *b->type);
    b->slot = malloc(b->nslot * sizeof *b->slot);
    b->merges = calloc(cap, sizeof *b->merges);
    if (!b->tok || !b->score || !b->type || !b->slot || !b->merges) {
        b_free(b);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memset(b->slot, 0xff, b->nslot * sizeof *b->slot);
    return 0;
}

/* Token for a+b (new or existing); records the merge "a b" when want_merge. -1 on OOM. */
static int32_t b_merge(builder *b, int32_t x, int32_t y, float score, int want_merge)
{
    size_t lx = strlen(b->tok[x]), ly = strlen(b->tok[y]);
    char *s = malloc(lx + ly + 2);
    if (!s) {
        b->oom = 1;
        return -1;
    }
    memcpy(s, b->tok[x], lx);
    memcpy(s + lx, b->tok[y], ly + 1);
    int32_t id = b_find(b, s, lx + ly);
    if (id < 0)
        id = b_add(b, s, lx + ly, score, 1);
    if (id >= 0 && want_merge && b->n_merges < b->cap) {
        memcpy(s, b->tok[x], lx);
        s[lx] = ' ';
        memcpy(s + lx + 1, b->tok[y], ly + 1);
        b->merges[b->n_merges++] = s;
        return id;
    }
    free(s);
    return id;
}

/* ---- training ---- */

typedef struct word {
    int32_t *sym;
    int n;
    int freq;
} word;

typedef struct pair_tab {
    uint64_t *key;
    int64_t *cnt;
    size_t n;
} pair_tab;

static void pair_add(pair_tab *t, int32_t a, int32_t c, int64_t f)
{
    uint64_t k = (uint64_t)(uint32_t)a << 32 | (uint32_t)c;
    size_t m = t->n - 1;
    for (size_t i = (k * 0x9E3779B97F4A7C15ull >> 20) & m;; i = (i + 1) & m) {
        if (t->cnt[i] == 0) {
            t->key[i] = k;
            t->cnt[i] = f;
            return;
        }
        if (t->key[i] == k) {
            t->cnt[i] += f;
            return;
        }
    }
}

/* Learns merges until no pair repeats or the vocabulary reaches target tokens. */
static void train(builder *b, word *w, size_t nw, size_t target, int want_merge, int *rank)
{
    size_t total = 0;
    for (size_t i = 0; i < nw; i++)
        total += (size_t)w[i].n;
    pair_tab t = {0};
    t.n = 16;
    while (t.n < 2 * total + 16)
        t.n *= 2;
    t.key = malloc(t.n * sizeof *t.key);
    t.cnt = malloc(t.n * sizeof *t.cnt);
    if (!t.key || !t.cnt) {
        b->oom = 1;
        goto out;
    }
    while (b->n < target && !b->oom) {
        memset(t.cnt, 0, t.n * sizeof *t.cnt);
        for (size_t i = 0; i < nw; i++)
            for (int j = 0; j + 1 < w[i].n; j++)
                pair_add(&t, w[i].sym[j], w[i].sym[j + 1], w[i].freq);
        int64_t best = 0;
        uint64_t bk = 0;
        for (size_t i = 0; i < t.n; i++)
            if (t.cnt[i] > best || (t.cnt[i] == best && best > 0 && t.key[i] < bk)) {
                best = t.cnt[i];
                bk = t.key[i];
            }
        if (best < 2)
            break;
        int32_t x = (int32_t)(bk >> 32), y = (int32_t)(uint32_t)bk;
        int32_t id = b_merge(b, x, y, -(float)++(*rank), want_merge);
        if (id < 0)
            break;
        for (size_t i = 0; i < nw; i++) {
            int o = 0;
            for (int j = 0; j < w[i].n; j++) {
                if (j + 1 < w[i].n && w[i].sym[j] == x && w[i].sym[j + 1] == y) {
                    w[i].sym[o++] = id;
                    j++;
                } else {
                    w[i].sym[o++] = w[i].sym[j];
                }
            }
            w[i].n = o;
        }
    }
out:
    free(t.key);
    free(t.cnt);
}

/* Fills up to target with concatenations of random tokens from [lo, b->n). */
static void fill(builder *b, int32_t lo, size_t target, int want_merge, int *rank)
{
    uint64_t s = 0x6b7670756273796eull; /* fixed: the vocabulary must not depend on --seed */
    size_t tries = 0;
    while (b->n < target && !b->oom && tries++ < 1000 * target) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        int32_t span = (int32_t)b->n - lo;
        int32_t x = lo + (int32_t)((s >> 8) % (uint64_t)span);
        int32_t y = lo + (int32_t)((s >> 36) % (uint64_t)span);
        size_t lx = strlen(b->tok[x]), ly = strlen(b->tok[y]);
        if (lx + ly > 24)
            continue;
        char buf[64];
        memcpy(buf, b->tok[x], lx);
        memcpy(buf + lx, b->tok[y], ly);
        if (b_find(b, buf, lx + ly) >= 0)
            continue;
        b_merge(b, x, y, -(float)++(*rank), want_merge);
    }
}

static size_t utf8_len(uint8_t c)
{
    return c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
}

static int is_alpha(uint8_t c) { return (c | 32) >= 'a' && (c | 32) <= 'z'; }
static int is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

/* Splits the text into words, deduplicates them with counts. Each word is a NUL-terminated
 * string in *out (malloc'd). spm: "▁word" for whitespace-separated words. bpe: GPT-2 style
 * pieces (optional leading space + a run of letters, digits or punctuation). */
static size_t split_words(int spm, char ***out, int **freq)
{
    size_t len = sizeof k_text - 1, cap = len + 1, n = 0;
    char **ws = calloc(cap, sizeof *ws);
    if (!ws)
        return 0;
    const uint8_t *t = (const uint8_t *)k_text;
    size_t i = 0;
    while (i < len) {
        size_t st = i;
        if (spm) {
            if (t[i] == ' ' || t[i] == '\n') {
                i++;
                continue;
            }
            while (i < len && t[i] != ' ' && t[i] != '\n')
                i++;
        } else {
            if (t[i] == ' ' && i + 1 < len && t[i + 1] != ' ' && t[i + 1] != '\n')
                i++; /* the leading space belongs to the word, as in GPT-2 */
            int cls = is_alpha(t[i]) ? 1 : is_digit(t[i]) ? 2 : (t[i] == ' ' || t[i] == '\n') ? 3 : 4;
            while (i < len) {
                int c2 = is_alpha(t[i]) ? 1 : is_digit(t[i]) ? 2 : (t[i] == ' ' || t[i] == '\n') ? 3 : 4;
                if (c2 != cls)
                    break;
                i++;
            }
        }
        size_t wl = i - st;
        char *w = malloc(wl + 4);
        if (!w)
            break;
        size_t o = 0;
        if (spm) {
            memcpy(w, "\xE2\x96\x81", 3);
            o = 3;
        }
        memcpy(w + o, t + st, wl);
        w[o + wl] = 0;
        ws[n++] = w;
    }
    /* dedupe: sort, then count runs */
    for (size_t a = 1; a < n; a++) {
        char *x = ws[a];
        size_t b = a;
        while (b > 0 && strcmp(ws[b - 1], x) > 0) {
            ws[b] = ws[b - 1];
            b--;
        }
        ws[b] = x;
    }
    int *f = calloc(n ? n : 1, sizeof *f);
    size_t u = 0;
    for (size_t a = 0; f && a < n; a++) {
        if (u > 0 && strcmp(ws[u - 1], ws[a]) == 0) {
            f[u - 1]++;
            free(ws[a]);
        } else {
            ws[u] = ws[a];
            f[u++] = 1;
        }
    }
    *out = ws;
    *freq = f;
    return f ? u : 0;
}

/* One word per text word, with its frequency and room for one symbol per byte. 0, or -1 when
 * out of memory or there are no words (free_words frees what was made either way). */
static int alloc_words(char **ws, const int *f, size_t nw, word **out)
{
    word *w = calloc(nw ? nw : 1, sizeof *w);
    *out = w;
    if (!w || !nw)
        return -1;
    for (size_t i = 0; i < nw; i++) {
        w[i].sym = malloc(strlen(ws[i]) * sizeof *w[i].sym);
        w[i].freq = f[i];
        if (!w[i].sym)
            return -1;
    }
    return 0;
}

static void free_words(char **ws, int *f, word *w, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(ws[i]);
        if (w)
            free(w[i].sym);
    }
    free(ws);
    free(f);
    free(w);
}

static int finish(builder *b, synth_vocab *v, char *err, size_t errlen)
{
    if (b->oom) {
        b_free(b);
        snprintf(err, errlen, "out of memory building the vocabulary");
        return -1;
    }
    b_take(b, v);
    return 0;
}

int synth_vocab_spm(size_t n_vocab, synth_vocab *v, char *err, size_t errlen)
{
    memset(v, 0, sizeof *v);
    if (n_vocab < 260 || n_vocab > (1u << 20)) {
        snprintf(err, errlen, "--vocab %zu too small for an spm vocabulary (need >= 260: <unk>, <s>, </s>, "
                 "256 byte tokens and at least one piece)", n_vocab);
        return -1;
    }
    builder b;
    if (b_init(&b, n_vocab, err, errlen) != 0)
        return -1;
    b_add(&b, "<unk>", 5, 0, 2);
    b_add(&b, "<s>", 3, 0, 3);
    b_add(&b, "</s>", 4, 0, 3);
    for (int i = 0; i < 256; i++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", i);
        b_add(&b, s, 6, 0, 6);
    }
    char **ws = NULL;
    int *f = NULL;
    size_t nw = split_words(1, &ws, &f);
    word *w;
    int rank = 0;
    if (alloc_words(ws, f, nw, &w) != 0)
        b.oom = 1;
    /* Character pieces in order of first appearance in the text; scored below any merge. */
    float cscore = -1e6f;
    for (size_t i = 0; !b.oom && i < nw; i++) {
        size_t len = strlen(ws[i]);
        for (size_t j = 0; j < len;) {
            size_t cl = utf8_len((uint8_t)ws[i][j]);
            if (j + cl > len)
                cl = len - j;
            int32_t id = b_find(&b, ws[i] + j, cl);
            if (id < 0 && b.n < n_vocab)
                id = b_add(&b, ws[i] + j, cl, cscore--, 1);
            if (id < 0) {
                id = 0; /* vocab full of characters: unknown */
            }
            w[i].sym[w[i].n++] = id;
            j += cl;
        }
    }
    if (!b.oom) {
        int32_t first = (int32_t)b.n; /* fill from learned pieces: they read like text */
        train(&b, w, nw, n_vocab, 0, &rank);
        fill(&b, b.n - (size_t)first >= 2 ? first : 259, n_vocab, 0, &rank);
    }
    free_words(ws, f, w, nw);
    if (!b.oom && b.n != n_vocab) {
        b_free(&b);
        snprintf(err, errlen, "could not build %zu distinct pieces", n_vocab);
        return -1;
    }
    synth_vocab_spm_ids(v);
    return finish(&b, v, err, errlen);
}

/* GPT-2's reversible byte -> printable code point map, in its order of base tokens. */
static void byte_map(int bs[256], int cs[256])
{
    int n = 0, k = 0;
    int in[256] = {0};
    for (int c = 33; c <= 126; c++)
        in[c] = 1;
    for (int c = 161; c <= 172; c++)
        in[c] = 1;
    for (int c = 174; c <= 255; c++)
        in[c] = 1;
    for (int c = 0; c < 256; c++)
        if (in[c]) {
            bs[k] = c;
            cs[k++] = c;
        }
    for (int c = 0; c < 256; c++)
        if (!in[c]) {
            bs[k] = c;
            cs[k++] = 256 + n++;
        }
}

static size_t put_utf8(int cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    o[0] = (char)(0xC0 | cp >> 6);
    o[1] = (char)(0x80 | (cp & 63));
    return 2;
}

int synth_vocab_bpe(size_t n_vocab, const char *pre, synth_vocab *v, char *err, size_t errlen)
{
    memset(v, 0, sizeof *v);
    static const char *const llama_sp[] = {"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"};
    static const char *const qwen_sp[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    int is_qwen;
    if (strcmp(pre, "llama-bpe") == 0)
        is_qwen = 0;
    else if (strcmp(pre, "qwen2") == 0)
        is_qwen = 1;
    else {
        snprintf(err, errlen, "unknown --pre '%s' (expected llama-bpe or qwen2)", pre);
        return -1;
    }
    const char *const *sp = is_qwen ? qwen_sp : llama_sp;
    size_t n_sp = 3;
    if (n_vocab < 256 + n_sp + 1 || n_vocab > (1u << 20)) {
        snprintf(err, errlen, "--vocab %zu too small for a bpe vocabulary (need >= %zu: 256 byte tokens, "
                 "%zu special tokens and at least one merge)", n_vocab, 256 + n_sp + 1, n_sp);
        return -1;
    }
    builder b;
    if (b_init(&b, n_vocab, err, errlen) != 0)
        return -1;
    int bs[256], cs[256], id_of_byte[256];
    byte_map(bs, cs);
    for (int i = 0; i < 256; i++) {
        char s[4];
        size_t l = put_utf8(cs[i], s);
        b_add(&b, s, l, 0, 1);
        id_of_byte[bs[i]] = i;
    }
    char **ws = NULL;
    int *f = NULL;
    size_t nw = split_words(0, &ws, &f);
    word *w;
    if (alloc_words(ws, f, nw, &w) != 0)
        b.oom = 1;
    for (size_t i = 0; !b.oom && i < nw; i++)
        for (size_t j = 0; ws[i][j]; j++)
            w[i].sym[w[i].n++] = id_of_byte[(uint8_t)ws[i][j]];
    int rank = 0;
    size_t body = n_vocab - n_sp;
    if (!b.oom) {
        train(&b, w, nw, body, 1, &rank);
        fill(&b, b.n >= 258 ? 256 : 0, body, 1, &rank);
    }
    free_words(ws, f, w, nw);
    if (!b.oom && b.n != body) {
        b_free(&b);
        snprintf(err, errlen, "could not build %zu distinct tokens", body);
        return -1;
    }
    for (size_t i = 0; i < n_sp && !b.oom; i++)
        b_add(&b, sp[i], strlen(sp[i]), 0, 3);
    v->model = "gpt2";
    v->pre = is_qwen ? "qwen2" : "llama-bpe";
    v->bos = (int32_t)body;                       /* <|begin_of_text|> / <|endoftext|> */
    v->eos = (int32_t)(is_qwen ? body : body + 1);  /* qwen2 ends with <|endoftext|> */
    v->unk = -1;
    v->add_bos = !is_qwen;
    return finish(&b, v, err, errlen);
}

void synth_vocab_spm_ids(synth_vocab *v)
{
    v->model = "llama";
    v->pre = "default";
    v->bos = 1;
    v->eos = 2;
    v->unk = 0;
    v->add_bos = 1;
}

int synth_vocab_user_token(synth_vocab *v, const char *text, char *err, size_t errlen)
{
    const size_t len = strlen(text);
    if (strcmp(v->model, "llama") != 0 || v->n == 0) {
        snprintf(err, errlen, "a user-defined token needs a SentencePiece vocabulary");
        return -1;
    }
    if (len == 0 || len > 64) {
        snprintf(err, errlen, "user-defined token of %zu bytes: 1 to 64", len);
        return -1;
    }
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->tokens[i], text) == 0) {
            snprintf(err, errlen, "user-defined token '%s' is already token %zu", text, i);
            return -1;
        }
    char *c = strdup(text);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    free(v->tokens[v->n - 1]);
    v->tokens[v->n - 1] = c;
    v->types[v->n - 1] = 4;
    v->scores[v->n - 1] = 0;
    return 0;
}

void synth_vocab_free(synth_vocab *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->n; i++)
        free(v->tokens[i]);
    for (size_t i = 0; i < v->n_merges; i++)
        free(v->merges[i]);
    free(v->tokens);
    free(v->scores);
    free(v->types);
    free(v->merges);
    memset(v, 0, sizeof *v);
}

int synth_vocab_write(ggw *w, const synth_vocab *v)
{
    int r = ggw_kv_str(w, "tokenizer.ggml.model", v->model);
    r |= ggw_kv_str(w, "tokenizer.ggml.pre", v->pre);
    r |= ggw_kv_arr_str(w, "tokenizer.ggml.tokens", v->tokens, v->n);
    r |= ggw_kv_arr_f32(w, "tokenizer.ggml.scores", v->scores, v->n);
    r |= ggw_kv_arr_i32(w, "tokenizer.ggml.token_type", v->types, v->n);
    if (strcmp(v->model, "gpt2") == 0)
        r |= ggw_kv_arr_str(w, "tokenizer.ggml.merges", v->merges, v->n_merges);
    if (v->bos >= 0)
        r |= ggw_kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v->bos);
    if (v->eos >= 0)
        r |= ggw_kv_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v->eos);
    if (v->unk >= 0)
        r |= ggw_kv_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)v->unk);
    r |= ggw_kv_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos);
    r |= ggw_kv_bool(w, "tokenizer.ggml.add_eos_token", 0);
    if (strcmp(v->model, "llama") == 0)
        r |= ggw_kv_bool(w, "tokenizer.ggml.add_space_prefix", 1);
    return r;
}
