/* path.c: the loaded path of run and compare up to the first token: a warmed context,
 * [BOS, prefix] prefilled, each blob verified and imported where it now sits, the prompt
 * prefilled; and the identical token sequence a full prefill compares against. */
#include "kvpub/kvpub.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/fetch.h"
#include "kvpub/kvpub_internal.h"

/* Readies a fresh context as a long-lived one would be (llama.cpp likewise clears its whole KV
 * buffer when it creates a context): the row buffers of a batch of n_rows are made and
 * faulted in (the engine grows them to the largest batch yet), zeros are imported into every
 * cell before the last few, throwaway tokens (n_rows of them, at most WARM_PASS) are
 * prefilled in those, and the context is cleared. That faults in the mmap'd weights, the KV
 * cache pages, the attention scratch and the code of a pass of that shape, and starts the
 * engine's threads, so neither path's time to first token pays for first-touch page faults. */
kvp_status kvp_ctx_warm_up(eng_ctx *c, const eng_model *m, size_t n_cells, int32_t tok, size_t n_rows,
                           char *err, size_t errlen)
{
    enum { BLOCK = 256, WARM_PASS = 64 };
    const eng_info *in = eng_model_info(m);
    size_t kvd = (size_t)in->n_head_kv * (size_t)in->head_dim;
    n_rows = n_rows < 1 ? 1 : n_rows > n_cells ? n_cells : n_rows;
    const size_t pass = n_rows < WARM_PASS ? n_rows : WARM_PASS, held = n_cells - pass;
    uint16_t *zero = calloc((size_t)BLOCK * kvd, sizeof *zero);
    int32_t toks[WARM_PASS];
    for (size_t i = 0; i < pass; i++)
        toks[i] = tok;
    eng_status es = zero ? eng_ctx_reserve_rows(c, n_rows > INT_MAX ? INT_MAX : (int)n_rows) : ENG_ERR_NOMEM;
    for (size_t c0 = 0; es == ENG_OK && c0 < held; c0 += BLOCK) {
        int n = (int)(held - c0 < BLOCK ? held - c0 : BLOCK);
        for (int il = 0; es == ENG_OK && il < in->n_layer; il++)
            es = eng_kv_import_layer(c, il, (int)c0, n, zero, zero);
        if (es == ENG_OK)
            es = eng_kv_commit(c, (int)c0, n, (int32_t)c0);
    }
    free(zero);
    if (es == ENG_OK)
        es = eng_prefill(c, toks, NULL, pass, NULL, NULL);
    eng_kv_clear(c);
    if (es == ENG_ERR_NOMEM)
        return kvp_fail(err, errlen, KVP_ERR_NOMEM, "out of memory");
    if (es != ENG_OK)
        return kvp_fail(err, errlen, KVP_ERR_ENGINE, "warm-up: %s", eng_status_str(es));
    return KVP_OK;
}

kvp_status kvp_path_run(const kvp_load_opts *lo, const kvp_path *p, float *logits, kvp_path_result *r, char *err,
                        size_t errlen)
{
    r->failed_blob = -1;
    r->vst = KVB_OK;
    r->head_with_prompt = 0;
    double t0 = base_now_s();
    const size_t nh = (p->bos >= 0) + p->n_prefix;
    const int hcell = eng_kv_len(lo->ctx);
    int32_t *head = nh ? malloc(nh * sizeof *head) : NULL;
    if (nh && !head)
        return kvp_fail(err, errlen, KVP_ERR_NOMEM, "out of memory");
    if (p->bos >= 0)
        head[0] = p->bos;
    if (p->n_prefix)
        memcpy(head + (p->bos >= 0), p->prefix, p->n_prefix * sizeof *head);
    /* recompute may make a document attend to the head: then it must be there first */
    r->head_with_prompt = nh && nh <= INT32_MAX && lo->recompute <= 0;
    eng_status es = ENG_OK;
    if (r->head_with_prompt)
        es = eng_kv_commit(lo->ctx, hcell, (int)nh, eng_kv_next_pos(lo->ctx));
    else if (nh)
        es = eng_prefill(lo->ctx, head, NULL, nh, NULL, NULL);
    if (es != ENG_OK) {
        free(head);
        return kvp_fail(err, errlen, KVP_ERR_ENGINE, "prefill of BOS+prefix: %s", eng_status_str(es));
    }
    r->prefix_s = base_now_s() - t0;
    double t1 = base_now_s();
    /* each blob sees the tokens before it (prefix, earlier documents) for its declared context */
    kvp_load_opts one = *lo;
    int32_t *before = NULL;
    size_t nb = p->n_prefix;
    kvp_status st = KVP_OK;
    if (nb && !(before = malloc(nb * sizeof *before)))
        st = kvp_fail(err, errlen, KVP_ERR_NOMEM, "out of memory");
    else if (nb)
        memcpy(before, p->prefix, nb * sizeof *before);
    for (int i = 0; st == KVP_OK && i < p->n_blobs; i++) {
        one.before = before;
        one.n_before = nb;
        st = kvp_load_blob(&one, p->blobs[i], &r->doc_tokens[i], &r->doc_n[i], &r->ls[i], &r->vst, err, errlen);
        if (st != KVP_OK) {
            r->failed_blob = i;
        } else if (i + 1 < p->n_blobs) {
            int32_t *nbf = realloc(before, (nb + r->doc_n[i]) * sizeof *before);
            if (!nbf) {
                st = kvp_fail(err, errlen, KVP_ERR_NOMEM, "out of memory");
                break;
            }
            before = nbf;
            memcpy(before + nb, r->doc_tokens[i], r->doc_n[i] * sizeof *before);
            nb += r->doc_n[i];
        }
    }
    free(before);
    r->load_s = base_now_s() - t1;
    double t2 = base_now_s();
    if (st == KVP_OK && r->head_with_prompt)
        es = eng_prefill_held(lo->ctx, hcell, head, (int)nh, p->prompt, p->n_prompt, logits);
    else if (st == KVP_OK && p->n_prompt)
        es = eng_prefill(lo->ctx, p->prompt, NULL, p->n_prompt, logits, NULL);
    free(head);
    if (st != KVP_OK)
        return st;
    if (es != ENG_OK)
        return kvp_fail(err, errlen, KVP_ERR_ENGINE, "prefill of the prompt: %s", eng_status_str(es));
    r->suffix_s = base_now_s() - t2;
    r->ttft_s = base_now_s() - t0;
    return KVP_OK;
}

kvp_status kvp_path_sequence(const kvp_path *p, const kvp_path_result *r, int32_t **seq, size_t *n)
{
    size_t total = (p->bos >= 0) + p->n_prefix + p->n_prompt, k = 0;
    for (int i = 0; i < p->n_blobs; i++)
        total += r->doc_n[i];
    int32_t *s = *seq = malloc(total * sizeof *s);
    if (!s)
        return KVP_ERR_NOMEM;
    if (p->bos >= 0)
        s[k++] = p->bos;
    if (p->n_prefix)
        memcpy(s + k, p->prefix, p->n_prefix * sizeof *s);
    k += p->n_prefix;
    for (int i = 0; i < p->n_blobs; i++) {
        memcpy(s + k, r->doc_tokens[i], r->doc_n[i] * sizeof *s);
        k += r->doc_n[i];
    }
    if (p->n_prompt) /* none when the path ends with the documents (export) */
        memcpy(s + k, p->prompt, p->n_prompt * sizeof *s);
    *n = total;
    return KVP_OK;
}
