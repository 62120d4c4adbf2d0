/* identity.c: the model-identity record: built from a loaded model or a manifest, written into
 * a manifest, and the one check (with the one refusal message) a blob must pass to be used. */
#include "kvpub/kvpub.h"

#include <stdio.h>
#include <string.h>

#include "kvpub/kvpub_internal.h"

const char *kvp_status_str(kvp_status st)
{
    switch (st) {
    case KVP_OK: return "ok";
    case KVP_ERR_USAGE: return "usage";
    case KVP_ERR_IO: return "I/O error";
    case KVP_ERR_NOMEM: return "out of memory";
    case KVP_ERR_VERIFY: return "verification failed";
    case KVP_ERR_REFUSED: return "refused";
    case KVP_ERR_ENGINE: return "engine error";
    case KVP_ERR_TOO_LONG: return "document too long";
    case KVP_ERR_FORMAT: return "blob format error";
    case KVP_ERR_STORE: return "store error";
    }
    return "?";
}

/* The engine's RoPE enums in the manifest's vocabulary: the only place the two meet. */
static kvb_rope_type rope_type_of(eng_rope_type t)
{
    return t == ENG_ROPE_NEOX ? KVB_ROPE_NEOX : KVB_ROPE_NORMAL;
}

static kvb_rope_scaling scaling_of(eng_rope_scaling s)
{
    return s == ENG_ROPE_SCALING_LINEAR ? KVB_SCALING_LINEAR
         : s == ENG_ROPE_SCALING_YARN   ? KVB_SCALING_YARN
                                        : KVB_SCALING_NONE;
}

kvp_status kvp_identity_from_model(eng_model *m, kvp_identity *id, char *err, size_t errlen)
{
    memset(id, 0, sizeof *id);
    if (eng_model_fingerprint(m, id->model_fp, err, errlen) != ENG_OK)
        return KVP_ERR_ENGINE;
    eng_tokenizer_fingerprint(m, id->tokenizer_fp);
    const eng_info *in = eng_model_info(m);
    const eng_rope *r = &in->rope;
    snprintf(id->arch, sizeof id->arch, "%s", in->arch);
    id->n_layer = (uint32_t)in->n_layer;
    id->n_embd = (uint32_t)in->n_embd;
    id->n_head = (uint32_t)in->n_head;
    id->n_head_kv = (uint32_t)in->n_head_kv;
    id->head_dim = (uint32_t)in->head_dim;
    id->rope_type = rope_type_of(r->type);
    id->rope_n_rot = (uint32_t)r->n_rot;
    id->rope_freq_base = r->freq_base;
    id->rope_freq_scale = r->freq_scale;
    id->rope_scaling = scaling_of(r->scaling);
    id->rope_n_ctx_orig = (uint32_t)r->n_ctx_orig;
    id->yarn_ext_factor = r->yarn_ext_factor;
    id->yarn_attn_factor = r->yarn_attn_factor;
    id->yarn_beta_fast = r->yarn_beta_fast;
    id->yarn_beta_slow = r->yarn_beta_slow;
    id->pos0 = in->add_bos && in->bos_id >= 0 ? 1 : 0;
    const float *ff;
    size_t nff = eng_model_rope_freqs(m, &ff);
    if (nff > KVB_MAX_FREQ_FACTORS)
        return kvp_fail(err, errlen, KVP_ERR_ENGINE, "%zu RoPE frequency factors exceed the blob format's %d",
                        nff, KVB_MAX_FREQ_FACTORS);
    id->rope_n_freq_factors = (uint32_t)nff;
    if (nff)
        memcpy(id->rope_freq_factors, ff, nff * sizeof *ff);
    snprintf(id->tokenizer, sizeof id->tokenizer, "%s", in->tokenizer);
    id->n_vocab = in->n_vocab;
    return KVP_OK;
}

/* The fields kvp_identity and kvb_manifest both hold under one name: one list, so the two
 * conversions below cannot drift apart. */
#define SAME_NAMED_FIELDS(X)                                                                  \
    X(n_layer) X(n_embd) X(n_head) X(n_head_kv) X(head_dim) X(rope_type) X(rope_n_rot)        \
    X(rope_freq_base) X(rope_freq_scale) X(rope_scaling) X(rope_n_ctx_orig) X(yarn_ext_factor) \
    X(yarn_attn_factor) X(yarn_beta_fast) X(yarn_beta_slow) X(pos0) X(rope_n_freq_factors)

void kvp_identity_to_manifest(const kvp_identity *id, kvb_manifest *m)
{
    memcpy(m->model_fingerprint, id->model_fp, 32);
    memcpy(m->tokenizer_fingerprint, id->tokenizer_fp, 32);
    m->model_arch = id->arch;
#define TO_MANIFEST(f) m->f = id->f;
    SAME_NAMED_FIELDS(TO_MANIFEST)
#undef TO_MANIFEST
    memcpy(m->rope_freq_factors, id->rope_freq_factors, sizeof m->rope_freq_factors);
}

void kvp_identity_from_manifest(const kvb_manifest *m, kvp_identity *id)
{
    memset(id, 0, sizeof *id);
    memcpy(id->model_fp, m->model_fingerprint, 32);
    memcpy(id->tokenizer_fp, m->tokenizer_fingerprint, 32);
    snprintf(id->arch, sizeof id->arch, "%s", m->model_arch ? m->model_arch : "");
#define FROM_MANIFEST(f) id->f = m->f;
    SAME_NAMED_FIELDS(FROM_MANIFEST)
#undef FROM_MANIFEST
    memcpy(id->rope_freq_factors, m->rope_freq_factors, sizeof id->rope_freq_factors);
}

/* "sha256:" and the first 16 hex digits: enough to tell fingerprints apart in a message. */
static const char *short_fp(const uint8_t fp[32], char out[32])
{
    char hex[65];
    kvc_hex(fp, 32, hex);
    snprintf(out, 32, "sha256:%.16s...", hex);
    return out;
}

/* Both sides' values are the model's floats widened to double: compare them as floats. */
static int differ(double a, double b) { return (float)a != (float)b; }

/* Describes the first RoPE parameter that differs into out; returns 0 if all agree. */
static int rope_diff(const kvp_identity *b, const kvp_identity *m, char *out, size_t len)
{
    if (b->rope_type != m->rope_type)
        return snprintf(out, len, "RoPE type: blob %s, model %s", kvb_rope_type_name(b->rope_type),
                        kvb_rope_type_name(m->rope_type)), 1;
    if (b->rope_n_rot != m->rope_n_rot)
        return snprintf(out, len, "RoPE n_rot: blob %u, model %u", b->rope_n_rot, m->rope_n_rot), 1;
    if (differ(b->rope_freq_base, m->rope_freq_base))
        return snprintf(out, len, "RoPE freq_base: blob %g, model %g", b->rope_freq_base, m->rope_freq_base), 1;
    if (differ(b->rope_freq_scale, m->rope_freq_scale))
        return snprintf(out, len, "RoPE freq_scale: blob %g, model %g", b->rope_freq_scale, m->rope_freq_scale), 1;
    if (b->rope_scaling != m->rope_scaling)
        return snprintf(out, len, "RoPE scaling: blob %s, model %s", kvb_scaling_name(b->rope_scaling),
                        kvb_scaling_name(m->rope_scaling)), 1;
    if (b->rope_n_freq_factors != m->rope_n_freq_factors)
        return snprintf(out, len, "RoPE frequency factors (rope_freqs): blob %u, model %u", b->rope_n_freq_factors,
                        m->rope_n_freq_factors), 1;
    for (uint32_t i = 0; i < m->rope_n_freq_factors; i++)
        if (b->rope_freq_factors[i] != m->rope_freq_factors[i])
            return snprintf(out, len, "RoPE frequency factor %u: blob %g, model %g", i, b->rope_freq_factors[i],
                            m->rope_freq_factors[i]), 1;
    if (m->rope_scaling == KVB_SCALING_YARN &&
        (b->rope_n_ctx_orig != m->rope_n_ctx_orig || differ(b->yarn_ext_factor, m->yarn_ext_factor) ||
         differ(b->yarn_attn_factor, m->yarn_attn_factor) || differ(b->yarn_beta_fast, m->yarn_beta_fast) ||
         differ(b->yarn_beta_slow, m->yarn_beta_slow)))
        return snprintf(out, len, "YaRN parameters: blob n_ctx_orig %u ext %g attn %g beta %g/%g, "
                        "model n_ctx_orig %u ext %g attn %g beta %g/%g",
                        b->rope_n_ctx_orig, b->yarn_ext_factor, b->yarn_attn_factor, b->yarn_beta_fast,
                        b->yarn_beta_slow, m->rope_n_ctx_orig, m->yarn_ext_factor, m->yarn_attn_factor,
                        m->yarn_beta_fast, m->yarn_beta_slow), 1;
    return 0;
}

kvp_status kvp_identity_check(const kvp_identity *b, const kvp_identity *m, int32_t delta, char *err,
                              size_t errlen)
{
    char fa[32], fb[32], rd[256] = "", shape[160] = "";
    int rope_differs = rope_diff(b, m, rd, sizeof rd);
    int shape_differs = b->n_layer != m->n_layer || b->n_head_kv != m->n_head_kv || b->head_dim != m->head_dim;
    if (shape_differs)
        snprintf(shape, sizeof shape, "KV shape: blob %u layers x %u kv heads x %u, model %u x %u x %u",
                 b->n_layer, b->n_head_kv, b->head_dim, m->n_layer, m->n_head_kv, m->head_dim);
    if (memcmp(b->model_fp, m->model_fp, 32) != 0)
        return kvp_fail(err, errlen, KVP_ERR_REFUSED,
                        "model mismatch: blob wants %s (%s, %u layers), you loaded %s (%s, %u layers)%s%s%s%s",
                        short_fp(b->model_fp, fa), b->arch, b->n_layer, short_fp(m->model_fp, fb), m->arch,
                        m->n_layer, rope_differs ? "; " : "", rd, shape_differs ? "; " : "", shape);
    if (memcmp(b->tokenizer_fp, m->tokenizer_fp, 32) != 0)
        return kvp_fail(err, errlen, KVP_ERR_REFUSED,
                        "tokenizer mismatch: blob wants %s, your model's tokenizer is %s (%s, %d tokens)",
                        short_fp(b->tokenizer_fp, fa), short_fp(m->tokenizer_fp, fb), m->tokenizer, m->n_vocab);
    /* the same fingerprint with another shape or RoPE means a publisher bug: still refuse */
    if (shape_differs)
        return kvp_fail(err, errlen, KVP_ERR_REFUSED, "blob does not fit the model: %s", shape);
    if (rope_differs)
        return kvp_fail(err, errlen, KVP_ERR_REFUSED, "cannot re-rotate exactly: %s", rd);
    if (delta != 0 && (m->rope_n_rot == 0 || m->rope_n_rot % 2 || m->rope_n_rot > m->head_dim))
        return kvp_fail(err, errlen, KVP_ERR_REFUSED, "cannot re-rotate: RoPE n_rot %u with head_dim %u",
                        m->rope_n_rot, m->head_dim);
    return KVP_OK;
}

kvp_status kvp_check_manifest(const kvb_manifest *m, const kvp_identity *model, int32_t delta, char *err,
                              size_t errlen)
{
    kvp_identity blob;
    kvp_identity_from_manifest(m, &blob);
    return kvp_identity_check(&blob, model, delta, err, errlen);
}
