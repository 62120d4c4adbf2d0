/* compare.c: the loaded path measured against a full prefill of the identical tokens: time to
 * first token of both, then a greedy decode of one path whose tokens are teacher-forced into
 * the other, with KL(full || loaded), argmax agreement and bit-exactness per position. */
#include "kvpub/kvpub.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/fetch.h"
#include "kvpub/kvpub_internal.h"

/* Softmax in double; returns the log-sum-exp so log p_i = x_i - lse. */
static double log_sum_exp(const float *x, int n)
{
    double m = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > m)
            m = x[i];
    double s = 0;
    for (int i = 0; i < n; i++)
        s += exp((double)x[i] - m);
    return m + log(s);
}

/* KL(P || Q) of the next-token distributions given as logits p, q. */
static double kl_div(const float *p, const float *q, int n)
{
    double lp = log_sum_exp(p, n), lq = log_sum_exp(q, n), kl = 0;
    for (int i = 0; i < n; i++) {
        double a = (double)p[i] - lp;
        kl += exp(a) * (a - ((double)q[i] - lq));
    }
    return kl > 0 ? kl : 0;
}

void kvp_compare_result_clear(kvp_compare_result *r)
{
    if (!r)
        return;
    free(r->kl);
    free(r->tokens);
    r->kl = NULL;
    r->tokens = NULL;
}

typedef struct lockstep {
    const kvp_compare_opts *o;
    kvp_compare_result *r;
    float *logits_full; /* (n_vocab) */
    float *forced;      /* (n_vocab) the logits of the path that follows the other's tokens */
    eng_ctx *forced_ctx;
    int nv;
    double kl_sum;
    eng_status es;      /* the following path's decode failed */
} lockstep;

/* One position: the leading path picked t->id from t->logits; the other path's logits are
 * compared, then the same token goes into the other context. */
static int on_token(void *user, const kvp_token *t)
{
    lockstep *ls = user;
    kvp_compare_result *r = ls->r;
    int32_t tother = kvp_argmax(ls->forced, ls->nv);
    if (memcmp(t->logits, ls->forced, (size_t)ls->nv * sizeof(float)) != 0)
        r->bit_identical = 0;
    const int full_leads = ls->o->follow_full;
    double kl = kl_div(full_leads ? t->logits : ls->forced, full_leads ? ls->forced : t->logits, ls->nv);
    r->kl[r->positions] = kl;
    ls->kl_sum += kl;
    if (kl > r->kl_max)
        r->kl_max = kl;
    if (t->id == tother)
        r->argmax_agree++;
    else if (r->first_disagreement < 0)
        r->first_disagreement = r->positions;
    r->tokens[r->positions++] = t->id;
    if (t->more && (ls->es = eng_decode(ls->forced_ctx, t->id, -1, ls->forced)) != ENG_OK)
        return 1;
    return 0;
}

kvp_status kvp_compare(const kvp_compare_opts *o, float *logits, kvp_compare_result *r, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    r->first_disagreement = -1;
    r->bit_identical = 1;
    if (!o || !o->model || !o->loaded || !o->full || !o->seq || !logits || o->n_gen < 1)
        return kvp_fail(err, errlen, KVP_ERR_USAGE, "kvp_compare: missing argument");
    lockstep ls = {.o = o, .r = r, .nv = eng_model_info(o->model)->n_vocab};
    ls.logits_full = malloc((size_t)ls.nv * sizeof *ls.logits_full);
    r->kl = calloc((size_t)o->n_gen, sizeof *r->kl);
    r->tokens = malloc((size_t)o->n_gen * sizeof *r->tokens);
    kvp_status rc = KVP_OK;
    if (!ls.logits_full || !r->kl || !r->tokens) {
        rc = kvp_fail(err, errlen, KVP_ERR_NOMEM, "out of memory");
        goto out;
    }
    double t = base_now_s();
    eng_status es = eng_prefill(o->full, o->seq, NULL, o->n_seq, ls.logits_full, NULL);
    r->full_prefill_s = base_now_s() - t;
    if (es != ENG_OK) {
        rc = kvp_fail(err, errlen, KVP_ERR_ENGINE, "full prefill of %zu tokens: %s", o->n_seq, eng_status_str(es));
        goto out;
    }
    /* the first token: argmax costs the same on both paths, count it in both TTFTs */
    t = base_now_s();
    (void)kvp_argmax(logits, ls.nv);
    r->sample_s = base_now_s() - t;
    r->full_ttft_s = r->full_prefill_s + r->sample_s;

    /* the leader decodes greedily with its own logits; the other path follows its tokens */
    ls.forced = o->follow_full ? logits : ls.logits_full;
    ls.forced_ctx = o->follow_full ? o->loaded : o->full;
    kvp_decode_opts d = {.model = o->model, .ctx = o->follow_full ? o->full : o->loaded, .n_max = o->n_gen,
                         .on_token = on_token, .user = &ls};
    kvp_decode_stats ds;
    char derr[128];
    if (kvp_decode(&d, o->follow_full ? ls.logits_full : logits, &ds, derr, sizeof derr) != KVP_OK) {
        rc = kvp_fail(err, errlen, KVP_ERR_ENGINE, "decode: %s", derr);
        goto out;
    }
    if (ls.es != ENG_OK) {
        rc = kvp_fail(err, errlen, KVP_ERR_ENGINE, "decode: %s", eng_status_str(ls.es));
        goto out;
    }
    r->decode_s = ds.decode_s;
    r->kl_mean = r->positions ? ls.kl_sum / r->positions : 0;
out:
    free(ls.logits_full);
    return rc;
}
