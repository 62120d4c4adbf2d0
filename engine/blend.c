/* blend.c: selective recompute of cells already in the KV cache, CacheBlend's way (Yao et al.,
 * 2024): a loaded document's first layer is recomputed in full after the real prefix, and only
 * the tokens whose next-layer K/V deviate most from the loaded ones go on through the other
 * layers; the rest keep the K/V they were loaded with. */
#include "engine/ctx_internal.h"
#include "engine/kernels/quant_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct dev_row {
    float d;
    int i;
} dev_row;

/* Largest deviation first; equal ones in row order, so the choice is deterministic. */
static int by_dev(const void *a, const void *b)
{
    const dev_row *x = a, *y = b;
    if (x->d != y->d)
        return x->d > y->d ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static int by_row(const void *a, const void *b)
{
    const dev_row *x = a, *y = b;
    return (x->i > y->i) - (x->i < y->i);
}

/* Squared distance between the fresh row (f32) and cache row `cell` of one layer's K or V. */
static double row_dist(const eng_ctx *c, const void *cache, int cell, const float *fresh, float *tmp)
{
    const size_t KD = (size_t)c->kv_dim, hd = (size_t)c->hp->head_dim;
    for (int h = 0; h < c->hp->n_head_kv; h++) {
        const size_t off = eng_kv_off(c, cell, h);
        if (c->kv_f32)
            memcpy(tmp + h * hd, (const float *)cache + off, sizeof(float) * hd);
        else
            eng_f16_to_f32_row((const uint16_t *)cache + off, tmp + h * hd, hd);
    }
    const float *old = tmp;
    double s = 0;
    for (size_t j = 0; j < KD; j++) {
        const double e = (double)fresh[j] - (double)old[j];
        s += e * e;
    }
    return s;
}

/* One window of n rows at cells cell0..: layer 0 for all, then layers 1.. for the keep rows
 * whose layer-1 K/V moved most. */
static eng_status blend_window(eng_ctx *c, const int32_t *tokens, int cell0, int n, int keep, dev_row *dv,
                               int *cells, float *tmp)
{
    const eng_info *hp = c->hp;
    const size_t E = (size_t)hp->n_embd, NR = (size_t)hp->rope.n_rot, KD = (size_t)c->kv_dim;
    eng_status st = eng_fwd_begin(c, tokens, c->pos + cell0, n);
    if (st == ENG_OK)
        st = eng_fwd_layers(c, n, cell0, NULL, 0, 1, 0);
    if (st != ENG_OK || hp->n_layer == 1 || keep == 0)
        return st;
    eng_fwd_kv(c, 1, n);
    for (int i = 0; i < n; i++) {
        const double d = row_dist(c, c->k[1], cell0 + i, c->kk + (size_t)i * KD, tmp) +
                         row_dist(c, c->v[1], cell0 + i, c->vv + (size_t)i * KD, tmp);
        dv[i] = (dev_row){isfinite(d) ? (float)d : INFINITY, i};
    }
    qsort(dv, (size_t)n, sizeof *dv, by_dev);
    qsort(dv, (size_t)keep, sizeof *dv, by_row);
    for (int j = 0; j < keep; j++) { /* the kept rows move up to rows 0..keep-1 (dv[j].i >= j) */
        const int r = dv[j].i;
        cells[j] = cell0 + r;
        memmove(c->x + (size_t)j * E, c->x + (size_t)r * E, sizeof(float) * E);
        memmove(c->cs + (size_t)j * NR, c->cs + (size_t)r * NR, sizeof(float) * NR);
    }
    return eng_fwd_layers(c, keep, 0, cells, 1, hp->n_layer, 0);
}

eng_status eng_kv_blend(eng_ctx *c, const int32_t *tokens, int cell0, int n, double frac, int *n_kept)
{
    if (n_kept)
        *n_kept = 0;
    if (!c || (!tokens && n > 0) || n < 0 || cell0 < 0 || !(frac >= 0 && frac <= 1))
        return ENG_ERR_ARG;
    if (cell0 > c->n_cells || n > c->n_cells - cell0)
        return ENG_ERR_RANGE;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= c->hp->n_vocab)
            return ENG_ERR_RANGE;
    const int W = n < ENG_MAX_ROWS ? n : ENG_MAX_ROWS;
    dev_row *dv = malloc(sizeof *dv * (size_t)(W ? W : 1));
    int *cells = malloc(sizeof *cells * (size_t)(W ? W : 1));
    float *tmp = malloc(sizeof *tmp * (size_t)c->kv_dim);
    eng_status st = dv && cells && tmp ? ENG_OK : ENG_ERR_NOMEM;
    int kept = 0;
    /* Windows in cell order: a later window's rows see the earlier ones as recomputed. */
    for (int off = 0; off < n && st == ENG_OK; off += W) {
        const int m = n - off < W ? n - off : W;
        const double want = ceil(frac * (double)m);
        const int keep = want >= m ? m : (int)want;
        st = blend_window(c, tokens + off, cell0 + off, m, keep, dv, cells, tmp);
        kept += c->hp->n_layer == 1 ? m : keep; /* one layer: layer 0 is every layer */
    }
    free(dv);
    free(cells);
    free(tmp);
    if (st == ENG_OK && n_kept)
        *n_kept = kept;
    return st;
}
