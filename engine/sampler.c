/* sampler.c: next-token choice from logits: greedy, or top-k, then top-p on the untempered
 * distribution, then temperature over the survivors (llama.cpp's order), drawn with a seeded
 * xoshiro256** so a seed always gives the same sequence. */
#include "engine/engine.h"

#include "base/base.h"

#include <math.h>
#include <stdlib.h>

typedef struct cand {
    float logit;
    int32_t id;
    double w; /* unnormalised probability */
} cand;

struct eng_sampler {
    float temp;
    int top_k;
    float top_p;
    uint64_t s[4];    /* xoshiro256** state */
    cand *c;          /* scratch, n_vocab entries once needed */
    size_t cap;
};

/* Top-p without top-k first ranks only this many best candidates: in practice the nucleus is
 * far smaller. When it is not, the window grows by TOP_P_GROW until it holds the nucleus or
 * the whole vocabulary. */
enum { TOP_P_PREFILTER = 256, TOP_P_GROW = 16 };

static double uniform01(uint64_t s[4]) { return (double)(base_xoshiro256ss(s) >> 11) * 0x1p-53; }

eng_sampler *eng_sampler_create(float temp, int top_k, float top_p, uint64_t seed)
{
    eng_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->temp = temp;
    s->top_k = top_k;
    s->top_p = top_p;
    for (int i = 0; i < 4; i++) /* splitmix64 expands the seed, as xoshiro's authors advise */
        s->s[i] = base_splitmix64(&seed);
    return s;
}

void eng_sampler_free(eng_sampler *s)
{
    if (!s)
        return;
    free(s->c);
    free(s);
}

static float clean(float l) { return isnan(l) ? -INFINITY : l; }

static int32_t argmax(const float *logits, int n)
{
    int32_t best = 0;
    float bl = clean(logits[0]);
    for (int i = 1; i < n; i++)
        if (clean(logits[i]) > bl) { /* strict: the lowest id wins ties */
            bl = clean(logits[i]);
            best = i;
        }
    return best;
}

/* a ranks before b: higher logit, then lower id */
static int better(const cand *a, const cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cmp_cand(const void *pa, const void *pb)
{
    const cand *a = pa, *b = pb;
    return better(a, b) ? -1 : better(b, a) ? 1 : 0;
}

static void sift_down(cand *h, int m, int i) /* min-heap: root is the worst kept */
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < m && better(&h[w], &h[l]))
            w = l;
        if (r < m && better(&h[w], &h[r]))
            w = r;
        if (w == i)
            return;
        cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* The m best of logits[0..n) into c[0..m), sorted best first. */
static void select_best(const float *logits, int n, cand *c, int m)
{
    if (m >= n) {
        for (int i = 0; i < n; i++)
            c[i] = (cand){clean(logits[i]), i, 0};
    } else {
        for (int i = 0; i < m; i++)
            c[i] = (cand){clean(logits[i]), i, 0};
        for (int i = m / 2 - 1; i >= 0; i--)
            sift_down(c, m, i);
        for (int i = m; i < n; i++) {
            cand x = {clean(logits[i]), i, 0};
            if (better(&x, &c[0])) {
                c[0] = x;
                sift_down(c, m, 0);
            }
        }
    }
    qsort(c, (size_t)(m < n ? m : n), sizeof *c, cmp_cand);
}

/* Draws from c[0..m) in proportion to exp((logit - logit max) / temp). */
static int32_t draw(eng_sampler *s, cand *c, int m, float max)
{
    double total = 0;
    for (int i = 0; i < m; i++) {
        /* a -inf logit weighs nothing at any temperature (+inf included, where (-inf - max) /
         * temp would be NaN) */
        c[i].w = c[i].logit == -INFINITY ? 0 : exp(((double)c[i].logit - max) / s->temp);
        total += c[i].w;
    }
    double u = uniform01(s->s) * total, acc = 0;
    for (int i = 0; i < m; i++) {
        acc += c[i].w;
        if (u < acc)
            return c[i].id;
    }
    for (int i = m - 1; i > 0; i--) /* rounding: the last token with any weight */
        if (c[i].w > 0)
            return c[i].id;
    return c[0].id;
}

int32_t eng_sample(eng_sampler *s, const float *logits, int n_vocab)
{
    if (!s || !logits || n_vocab <= 0)
        return -1;
    if (!(s->temp > 0)) /* 0, negative or NaN: greedy */
        return argmax(logits, n_vocab);
    int32_t best = argmax(logits, n_vocab);
    float max = clean(logits[best]);
    if (max == -INFINITY || max == INFINITY) /* nothing to draw from, or one certain token */
        return best;
    if ((size_t)n_vocab > s->cap) {
        cand *c = realloc(s->c, (size_t)n_vocab * sizeof *c);
        if (!c)
            return best; /* no scratch: the most likely token is the safest answer */
        s->c = c;
        s->cap = (size_t)n_vocab;
    }
    cand *c = s->c;
    int k = s->top_k > 0 && s->top_k < n_vocab ? s->top_k : n_vocab;
    int use_p = s->top_p < 1.0f;
    if (k == n_vocab && !use_p) { /* plain temperature: no ranking needed */
        for (int i = 0; i < n_vocab; i++)
            c[i] = (cand){clean(logits[i]), i, 0};
        return draw(s, c, n_vocab, max);
    }
    /* top-p keeps the smallest best-first prefix whose probability (at temperature 1, over
     * the top-k survivors) reaches top_p */
    int m = k;
    double z = 0;
    if (use_p && k == n_vocab) {
        m = n_vocab < TOP_P_PREFILTER ? n_vocab : TOP_P_PREFILTER;
        for (int i = 0; i < n_vocab; i++)
            z += exp((double)clean(logits[i]) - max);
    }
    select_best(logits, n_vocab, c, m);
    if (!use_p)
        return draw(s, c, m, max);
    if (z == 0)
        for (int i = 0; i < m; i++)
            z += exp((double)c[i].logit - max);
    for (;;) {
        double cum = 0;
        for (int i = 0; i < m; i++) {
            cum += exp((double)c[i].logit - max) / z;
            if (cum >= s->top_p)
                return draw(s, c, i + 1, max);
        }
        if (m == k)
            break;
        m = m > k / TOP_P_GROW ? k : m * TOP_P_GROW; /* the window was too short */
        select_best(logits, n_vocab, c, m);
    }
    return draw(s, c, m, max); /* rounding kept cum just under top_p: keep all */
}
