/* decode.c: the one sample/decode loop (run, compare, generate): pick a token from the logits,
 * hand it and its text to the caller, feed it back, until end of generation or n_max. */
#include "kvpub/kvpub.h"

#include <string.h>

#include "fetch/fetch.h"
#include "kvpub/kvpub_internal.h"

int32_t kvp_argmax(const float *x, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

kvp_status kvp_decode(const kvp_decode_opts *o, float *logits, kvp_decode_stats *st, char *err, size_t errlen)
{
    kvp_decode_stats local;
    st = st ? st : &local;
    memset(st, 0, sizeof *st);
    if (!o || !o->model || !o->ctx || !logits)
        return kvp_fail(err, errlen, KVP_ERR_USAGE, "kvp_decode: missing argument");
    int nv = eng_model_info(o->model)->n_vocab;
    eng_detok *dt = NULL;
    if (o->text && !(dt = eng_detok_create(o->model, 0)))
        return kvp_fail(err, errlen, KVP_ERR_NOMEM, "out of memory");
    kvp_status rc = KVP_OK;
    double t0 = base_now_s();
    for (int i = 0; i < o->n_max; i++) {
        int32_t tok = o->sampler ? eng_sample(o->sampler, logits, nv) : kvp_argmax(logits, nv);
        if (i == 0)
            st->first_s = base_now_s() - t0; /* picking the first token belongs to its latency */
        kvp_token t = {.i = i, .id = tok, .eog = eng_token_is_eog(o->model, tok), .logits = logits};
        t.more = !t.eog && i + 1 < o->n_max;
        if (dt && !t.eog)
            t.text = eng_detok_push(dt, tok, &t.len);
        if (o->on_token && o->on_token(o->user, &t) != 0)
            break;
        if (t.eog)
            break;
        st->n_tokens++;
        if (!t.more)
            break;
        double td = base_now_s();
        eng_status es = eng_decode(o->ctx, tok, -1, logits);
        st->decode_s += base_now_s() - td;
        if (es != ENG_OK) {
            rc = kvp_fail(err, errlen, KVP_ERR_ENGINE, "%s", eng_status_str(es));
            goto out;
        }
        st->n_decoded++;
    }
    if (dt && o->on_token) {
        kvp_token t = {.i = -1, .id = -1};
        t.text = eng_detok_flush(dt, &t.len);
        if (t.len)
            (void)o->on_token(o->user, &t);
    }
out:
    st->total_s = base_now_s() - t0;
    eng_detok_free(dt);
    return rc;
}
