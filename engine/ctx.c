/* ctx.c: eng_ctx lifetime and the KV cache: cells with explicit positions, export/import in
 * the f16 exchange layout, commit, truncate, and K re-rotation; and the prefill and decode
 * entry points (argument checks, passes of at most ENG_MAX_ROWS) around forward.c's pass. */
#include "engine/ctx_internal.h"
#include "engine/kernels/quant_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_CTX = 1 << 20 };

eng_status eng_ctx_create(eng_model *m, const eng_ctx_params *p, eng_ctx **out, char *err,
                          size_t errlen)
{
    if (!out || !m)
        return eng_fail(err, errlen, ENG_ERR_ARG, "eng_ctx_create: model or out is NULL");
    *out = NULL;
    const eng_info *hp = eng_model_info(m);
    eng_ctx_params def = {0, 0, 0};
    if (!p)
        p = &def;
    if (p->n_ctx < 0 || p->n_threads < 0) /* 0 asks for the default; a negative is a mistake */
        return eng_fail(err, errlen, ENG_ERR_ARG, "eng_ctx_create: n_ctx %d or n_threads %d is negative", p->n_ctx,
                        p->n_threads);
    int n_ctx = p->n_ctx > 0 ? p->n_ctx : hp->n_ctx_train;
    if (n_ctx <= 0 || n_ctx > MAX_CTX)
        return eng_fail(err, errlen, ENG_ERR_ARG, "context size %d out of range (1..%d)", n_ctx, MAX_CTX);
    int nt = p->n_threads > 0 ? p->n_threads : eng_default_threads();
    eng_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return eng_fail(err, errlen, ENG_ERR_NOMEM, "out of memory creating a context");
    c->m = m;
    c->hp = hp;
    c->w = eng_model_weights(m);
    c->n_ctx = n_ctx;
    c->kv_f32 = p->kv_f32 != 0;
    c->kv_dim = hp->n_head_kv * hp->head_dim;
    eng_rope_cfg_init(&hp->rope, c->w->rope_freqs, &c->rope);
    size_t esz = c->kv_f32 ? sizeof(float) : sizeof(uint16_t);
    size_t layer_bytes = (size_t)n_ctx * (size_t)c->kv_dim * esz;
    c->k = calloc((size_t)hp->n_layer, sizeof(void *));
    c->v = calloc((size_t)hp->n_layer, sizeof(void *));
    c->pos = calloc((size_t)n_ctx, sizeof(int32_t));
    /* one zeroed region for every layer's K and V: cells past the filled ones are read (never
     * used) by whole key blocks, so they must hold finite numbers */
    c->kv_bytes = 2 * (size_t)hp->n_layer * layer_bytes;
    c->kv_mem = base_alloc_big(c->kv_bytes);
    if (!c->k || !c->v || !c->pos || !c->kv_mem)
        goto nomem;
    for (int il = 0; il < hp->n_layer; il++) {
        c->k[il] = (char *)c->kv_mem + 2 * (size_t)il * layer_bytes;
        c->v[il] = (char *)c->k[il] + layer_bytes;
    }
    c->att_scratch_per = (eng_attention_scratch_floats(hp) + 15) & ~(size_t)15;
    c->att_scratch = calloc((size_t)nt * c->att_scratch_per, sizeof(float));
    if (!c->att_scratch || eng_pool_create(nt, &c->pool) != ENG_OK)
        goto nomem;
    *out = c;
    return ENG_OK;
nomem:
    eng_ctx_free(c);
    return eng_fail(err, errlen, ENG_ERR_NOMEM, "out of memory for a KV cache of %d cells (%zu MiB)",
                n_ctx, 2 * (size_t)hp->n_layer * layer_bytes >> 20);
}

void eng_ctx_free(eng_ctx *c)
{
    if (!c)
        return;
    eng_pool_free(c->pool);
    base_free_big(c->kv_mem, c->kv_bytes);
    free(c->k);
    free(c->v);
    free(c->pos);
    base_free_big(c->rows_mem, c->rows_bytes);
    free(c->att_scratch);
    free(c);
}

int eng_kv_len(const eng_ctx *c) { return c->n_cells; }

int32_t eng_kv_next_pos(const eng_ctx *c)
{
    return c->n_cells ? c->pos[c->n_cells - 1] + 1 : 0;
}

void eng_kv_clear(eng_ctx *c)
{
    c->n_cells = 0;
}

eng_status eng_kv_truncate(eng_ctx *c, int n_cells)
{
    if (n_cells < 0 || n_cells > c->n_cells)
        return ENG_ERR_RANGE;
    c->n_cells = n_cells;
    return ENG_OK;
}

/* Rows [cell0, cell0 + n) of one layer's K or V (t) in the exchange layout ((n, kv_dim) f16):
 * written from `from` into the cache when it is given, else read from the cache into `to`. */
static void kv_copy(const eng_ctx *c, void *t, int cell0, int n, const uint16_t *from, uint16_t *to)
{
    const int hd = c->hp->head_dim, nh = c->hp->n_head_kv;
    for (int h = 0; h < nh; h++)
        for (int i = 0; i < n; i++) {
            const size_t off = eng_kv_off(c, cell0 + i, h), e = (size_t)i * (size_t)c->kv_dim + (size_t)h * hd;
            if (c->kv_f32 && from)
                eng_f16_to_f32_row(from + e, (float *)t + off, (size_t)hd);
            else if (c->kv_f32)
                eng_f32_to_f16_row((const float *)t + off, to + e, (size_t)hd);
            else if (from)
                memcpy((uint16_t *)t + off, from + e, sizeof(uint16_t) * (size_t)hd);
            else
                memcpy(to + e, (const uint16_t *)t + off, sizeof(uint16_t) * (size_t)hd);
        }
}

eng_status eng_kv_export_layer(const eng_ctx *c, int layer, int cell0, int n, uint16_t *k, uint16_t *v)
{
    if (layer < 0 || layer >= c->hp->n_layer || cell0 < 0 || n < 0 || cell0 > c->n_cells ||
        n > c->n_cells - cell0)
        return ENG_ERR_RANGE;
    if (k)
        kv_copy(c, c->k[layer], cell0, n, NULL, k);
    if (v)
        kv_copy(c, c->v[layer], cell0, n, NULL, v);
    return ENG_OK;
}

/* The cached re-rotation table for delta (a load imports every layer of every chunk with the
 * same delta: one table per load, not per call). */
static const eng_rerot *rerot_table(eng_ctx *c, int32_t delta)
{
    if (!c->rerot_ok || c->rerot.delta != delta) {
        eng_rerot_init(&c->rope, delta, &c->rerot);
        c->rerot_ok = 1;
    }
    return &c->rerot;
}

/* Each head vector is copied once into its place in the cache; K goes through the re-rotation
 * kernel on that same copy when delta != 0, so nothing is copied twice. */
static eng_status import_layer(eng_ctx *c, int layer, int cell0, int n, const uint16_t *k,
                               const uint16_t *v, int32_t delta)
{
    if (!k || !v)
        return ENG_ERR_ARG;
    if (layer < 0 || layer >= c->hp->n_layer || cell0 < 0 || n < 0 || cell0 > c->n_cells ||
        n > c->n_ctx - cell0)
        return ENG_ERR_RANGE;
    if (delta != 0 && c->hp->rope.n_rot > ENG_RERO_MAX_ROT)
        return ENG_ERR_UNSUPPORTED;
    const int hd = c->hp->head_dim;
    if (delta != 0 && hd > 512) /* the model loader bounds head_dim to this */
        return ENG_ERR_UNSUPPORTED;
    kv_copy(c, c->v[layer], cell0, n, v, NULL);
    if (delta == 0) {
        kv_copy(c, c->k[layer], cell0, n, k, NULL);
        return ENG_OK;
    }
    const eng_rerot *t = rerot_table(c, delta);
    uint16_t row[512];
    for (int h = 0; h < c->hp->n_head_kv; h++)
        for (int i = 0; i < n; i++) {
            const uint16_t *src = k + (size_t)i * (size_t)c->kv_dim + (size_t)h * hd;
            const size_t off = eng_kv_off(c, cell0 + i, h);
            if (c->kv_f32) {
                eng_rerot_f16(t, src, row, 1, hd);
                eng_f16_to_f32_row(row, (float *)c->k[layer] + off, (size_t)hd);
            } else {
                eng_rerot_f16(t, src, (uint16_t *)c->k[layer] + off, 1, hd);
            }
        }
    return ENG_OK;
}

eng_status eng_kv_import_layer(eng_ctx *c, int layer, int cell0, int n, const uint16_t *k,
                               const uint16_t *v)
{
    return import_layer(c, layer, cell0, n, k, v, 0);
}

eng_status eng_kv_import_layer_rerotated(eng_ctx *c, int layer, int cell0, int n, const uint16_t *k,
                                         const uint16_t *v, int32_t delta)
{
    return import_layer(c, layer, cell0, n, k, v, delta);
}

eng_status eng_kv_rows_f16(eng_ctx *c, int layer, int cell0, int n, uint16_t **k, uint16_t **v,
                           size_t *head_stride)
{
    if (!k || !v || !head_stride)
        return ENG_ERR_ARG;
    if (c->kv_f32)
        return ENG_ERR_UNSUPPORTED;
    if (layer < 0 || layer >= c->hp->n_layer || cell0 < c->n_cells || n < 0 || cell0 > c->n_ctx ||
        n > c->n_ctx - cell0)
        return ENG_ERR_RANGE;
    *k = (uint16_t *)c->k[layer] + eng_kv_off(c, cell0, 0);
    *v = (uint16_t *)c->v[layer] + eng_kv_off(c, cell0, 0);
    *head_stride = (size_t)c->n_ctx * (size_t)c->hp->head_dim;
    return ENG_OK;
}

eng_status eng_kv_commit(eng_ctx *c, int cell0, int n, int32_t pos0)
{
    if (cell0 < 0 || n < 0 || cell0 > c->n_cells || n > c->n_ctx - cell0 || pos0 < 0 ||
        (int64_t)pos0 + n > INT32_MAX)
        return ENG_ERR_RANGE;
    for (int i = 0; i < n; i++)
        c->pos[cell0 + i] = pos0 + i;
    c->n_cells = cell0 + n;
    return ENG_OK;
}

eng_status eng_kv_rerotate(eng_ctx *c, int cell0, int n, int32_t delta)
{
    if (cell0 < 0 || n < 0 || cell0 > c->n_cells || n > c->n_cells - cell0)
        return ENG_ERR_RANGE;
    for (int i = 0; i < n; i++) {
        int64_t np = (int64_t)c->pos[cell0 + i] + delta;
        if (np < 0 || np >= INT32_MAX) /* next_pos (last + 1) must stay representable */
            return ENG_ERR_RANGE;
    }
    if (delta == 0 || n == 0)
        return ENG_OK;
    const int hd = c->hp->head_dim;
    if (c->kv_f32) {
        float cs[2 * ENG_RERO_MAX_ROT];
        if (c->rope.n_rot > ENG_RERO_MAX_ROT)
            return ENG_ERR_UNSUPPORTED;
        eng_rope_cos_sin(&c->rope, (float)delta, 0, cs);
        for (int il = 0; il < c->hp->n_layer; il++)
            for (int h = 0; h < c->hp->n_head_kv; h++)
                for (int i = 0; i < n; i++)
                    eng_rope_apply(&c->rope, cs, (float *)c->k[il] + eng_kv_off(c, cell0 + i, h));
    } else {
        if (c->rope.n_rot > ENG_RERO_MAX_ROT)
            return ENG_ERR_UNSUPPORTED;
        /* a head's cells are contiguous: one pass over n head vectors per head and layer */
        const eng_rerot *t = rerot_table(c, delta);
        for (int il = 0; il < c->hp->n_layer; il++)
            for (int h = 0; h < c->hp->n_head_kv; h++) {
                uint16_t *kr = (uint16_t *)c->k[il] + eng_kv_off(c, cell0, h);
                eng_rerot_f16(t, kr, kr, (size_t)n, hd);
            }
    }
    for (int i = 0; i < n; i++)
        c->pos[cell0 + i] += delta;
    return ENG_OK;
}

static eng_status check_tokens(const eng_ctx *c, const int32_t *tokens, const int32_t *pos, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= c->hp->n_vocab)
            return ENG_ERR_RANGE;
        /* INT32_MAX is refused so that eng_kv_next_pos (last position + 1) cannot overflow */
        if (pos && (pos[i] < 0 || pos[i] == INT32_MAX))
            return ENG_ERR_RANGE;
    }
    return ENG_OK;
}

eng_status eng_prefill(eng_ctx *c, const int32_t *tokens, const int32_t *pos, size_t n,
                       float *logits, float *all_logits)
{
    if (!c || (!tokens && n))
        return ENG_ERR_ARG;
    if (n == 0)
        return ENG_OK;
    if (n > (size_t)(c->n_ctx - c->n_cells))
        return ENG_ERR_RANGE;
    eng_status st = check_tokens(c, tokens, pos, n);
    if (st)
        return st;
    const int V = c->hp->n_vocab;
    int32_t next = eng_kv_next_pos(c);
    if (!pos && (int64_t)next + (int64_t)n > INT32_MAX)
        return ENG_ERR_RANGE;
    int32_t *pbuf = NULL;
    if (!pos) {
        pbuf = malloc(n * sizeof(int32_t));
        if (!pbuf)
            return ENG_ERR_NOMEM;
        for (size_t i = 0; i < n; i++)
            pbuf[i] = next + (int32_t)i;
        pos = pbuf;
    }
    size_t done = 0;
    while (done < n) {
        size_t chunk = (size_t)ENG_MAX_ROWS;
        if (chunk > n - done)
            chunk = n - done;
        const int last = done + chunk == n;
        float *lg = NULL;
        int rows = 0;
        if (all_logits) {
            lg = all_logits + done * (size_t)V;
            rows = (int)chunk;
        } else if (logits && last) {
            lg = logits;
            rows = 1;
        }
        st = eng_forward(c, tokens + done, pos + done, (int)chunk, 0, rows, lg);
        if (st)
            break;
        done += chunk;
    }
    if (!st && all_logits && logits)
        memcpy(logits, all_logits + (n - 1) * (size_t)V, sizeof(float) * (size_t)V);
    free(pbuf);
    return st;
}

eng_status eng_prefill_held(eng_ctx *c, int cell0, const int32_t *held, int n_held, const int32_t *tokens,
                            size_t n, float *logits)
{
    if (!c || (!held && n_held) || (!tokens && n) || n_held < 0 || cell0 < 0)
        return ENG_ERR_ARG;
    if (cell0 > c->n_cells || n_held > c->n_cells - cell0 || n > (size_t)(c->n_ctx - c->n_cells))
        return ENG_ERR_RANGE;
    const int32_t next = eng_kv_next_pos(c);
    eng_status st = check_tokens(c, held, NULL, (size_t)n_held);
    if (st == ENG_OK)
        st = check_tokens(c, tokens, NULL, n);
    if (st == ENG_OK && (int64_t)next + (int64_t)n > INT32_MAX)
        st = ENG_ERR_RANGE;
    if (st != ENG_OK)
        return st;
    const size_t total = (size_t)n_held + n;
    if (n_held == 0 || total > (size_t)ENG_MAX_ROWS) { /* more than one pass holds: one after the other */
        st = n_held ? eng_kv_blend(c, held, cell0, n_held, 1.0, NULL) : ENG_OK; /* frac 1: a prefill's bits */
        return st == ENG_OK ? eng_prefill(c, tokens, NULL, n, logits, NULL) : st;
    }
    int32_t *tok = malloc(total * sizeof *tok), *pos = malloc(total * sizeof *pos);
    int *cells = malloc(total * sizeof *cells);
    st = tok && pos && cells ? ENG_OK : ENG_ERR_NOMEM;
    for (size_t i = 0; st == ENG_OK && i < total; i++) {
        const int h = i < (size_t)n_held;
        tok[i] = h ? held[i] : tokens[i - (size_t)n_held];
        cells[i] = h ? cell0 + (int)i : c->n_cells + (int)(i - (size_t)n_held);
        pos[i] = h ? c->pos[cells[i]] : next + (int32_t)(i - (size_t)n_held);
    }
    if (st == ENG_OK)
        st = eng_fwd_begin(c, tok, pos, (int)total);
    if (st == ENG_OK)
        st = eng_fwd_layers(c, (int)total, 0, cells, 0, c->hp->n_layer, 0);
    if (st == ENG_OK) {
        for (size_t i = (size_t)n_held; i < total; i++)
            c->pos[cells[i]] = pos[i];
        c->n_cells += (int)n;
        if (logits && n)
            eng_fwd_logits(c, (int)total, 1, logits);
    }
    free(tok);
    free(pos);
    free(cells);
    return st;
}

eng_status eng_decode(eng_ctx *c, int32_t token, int32_t pos, float *logits)
{
    if (!c)
        return ENG_ERR_ARG;
    if (pos < -1) /* -1 is "next"; other negatives are no position */
        return ENG_ERR_ARG;
    if (c->n_cells >= c->n_ctx)
        return ENG_ERR_RANGE;
    if (pos < 0)
        pos = eng_kv_next_pos(c);
    eng_status st = check_tokens(c, &token, &pos, 1);
    if (st)
        return st;
    return eng_forward(c, &token, &pos, 1, 1, logits ? 1 : 0, logits);
}
