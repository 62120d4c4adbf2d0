/* hparams.c: eng_hparams_from_gguf, the GGUF metadata -> eng_info mapping for the llama-family
 * architectures we run (llama, qwen2, qwen3, stablelm), refusing what our forward pass does not
 * do. */
#include "base/base.h"
#include "engine/gguf.h"
#include "engine/tok/tokenizer_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct hp {
    const gguf_file *g;
    const char *arch;
    char *err;
    size_t errlen;
} hp;

#define hp_fail(h, st, ...) ((eng_status)base_fail((st), (h)->err, (h)->errlen, __VA_ARGS__))

static void arch_key(const hp *h, const char *suffix, char *out, size_t n)
{
    snprintf(out, n, "%s.%s", h->arch, suffix);
}

/* Reads integer key <arch>.<suffix> into [lo, hi]. required: absent is an error, else *v keeps
 * its default. */
static eng_status get_int(hp *h, const char *suffix, int required, int64_t lo, int64_t hi, int *v)
{
    char key[128];
    arch_key(h, suffix, key, sizeof key);
    int64_t x;
    int r = gguf_get_int(h->g, key, &x);
    if (r == 0) {
        if (required)
            return hp_fail(h, ENG_ERR_FORMAT, "missing required key '%s'", key);
        return ENG_OK;
    }
    if (r < 0) {
        gguf_vtype et;
        uint64_t n;
        const void *d;
        if (gguf_get_arr(h->g, key, &et, &n, &d) == 1)
            return hp_fail(h, ENG_ERR_UNSUPPORTED,
                           "'%s' is a per-layer array (models with varying %s per layer are not supported)",
                           key, suffix);
        return hp_fail(h, ENG_ERR_FORMAT, "key '%s' has the wrong type (expected an integer)", key);
    }
    if (x < lo || x > hi)
        return hp_fail(h, ENG_ERR_FORMAT, "key '%s' is %lld (expected %lld..%lld)", key, (long long)x,
                       (long long)lo, (long long)hi);
    *v = (int)x;
    return ENG_OK;
}

static eng_status get_float(hp *h, const char *suffix, double lo, double hi, float *v, int *found)
{
    char key[128];
    arch_key(h, suffix, key, sizeof key);
    double x;
    int r = gguf_get_float(h->g, key, &x);
    if (found)
        *found = r == 1;
    if (r == 0)
        return ENG_OK;
    if (r < 0)
        return hp_fail(h, ENG_ERR_FORMAT, "key '%s' has the wrong type (expected a number)", key);
    if (!(x >= lo && x <= hi))
        return hp_fail(h, ENG_ERR_FORMAT, "key '%s' is %g (expected %g..%g)", key, x, lo, hi);
    *v = (float)x;
    return ENG_OK;
}

static int str_is(const gguf_str *s, const char *lit)
{
    return s->n == strlen(lit) && memcmp(s->p, lit, (size_t)s->n) == 0;
}

/* The special id under key through eng_vocab_special_id (the vocabulary reads it the same way). */
static eng_status get_special_id(hp *h, const char *key, int n_vocab, int32_t *out)
{
    if (eng_vocab_special_id(h->g, key, n_vocab > 0 ? (size_t)n_vocab : 0, out) < 0)
        return hp_fail(h, ENG_ERR_FORMAT, "key '%s' has the wrong type (expected an integer)", key);
    return ENG_OK;
}

static eng_status rope_params(hp *h, eng_info *info)
{
    eng_rope *r = &info->rope;
    eng_status st;
    char key[128];
    r->type = strcmp(info->arch, "llama") == 0 ? ENG_ROPE_NORMAL : ENG_ROPE_NEOX;
    r->n_rot = info->head_dim;
    if ((st = get_int(h, "rope.dimension_count", 0, 1, 1 << 16, &r->n_rot)))
        return st;
    /* Partial rotary (n_rot < head dim): llama.cpp's stablelm graph turns the first n_rot dims
     * of each head and so do we; its llama, qwen2 and qwen3 graphs assert n_rot == head dim and
     * abort, so such a file is no buyer's model and has no reference to be checked against. */
    if (r->n_rot > info->head_dim || r->n_rot % 2)
        return hp_fail(h, ENG_ERR_FORMAT, "%s.rope.dimension_count %d is odd or exceeds the head dim %d",
                       h->arch, r->n_rot, info->head_dim);
    if (r->n_rot != info->head_dim && strcmp(info->arch, "stablelm") != 0)
        return hp_fail(h, ENG_ERR_UNSUPPORTED,
                       "partial rotary embedding (%s.rope.dimension_count %d, head dim %d): llama.cpp's %s "
                       "graph refuses it too",
                       h->arch, r->n_rot, info->head_dim, h->arch);
    r->freq_base = 10000.0f;
    if ((st = get_float(h, "rope.freq_base", 1e-3, 1e12, &r->freq_base, NULL)))
        return st;

    arch_key(h, "rope.dimension_sections", key, sizeof key);
    if (gguf_find_key(h->g, key) >= 0)
        return hp_fail(h, ENG_ERR_UNSUPPORTED, "M-RoPE ('%s') is not supported", key);

    r->scaling = ENG_ROPE_SCALING_NONE;
    gguf_str stype;
    arch_key(h, "rope.scaling.type", key, sizeof key);
    int rs = gguf_get_str(h->g, key, &stype);
    if (rs < 0)
        return hp_fail(h, ENG_ERR_FORMAT, "key '%s' has the wrong type (expected a string)", key);
    if (rs == 1) {
        if (str_is(&stype, "none"))
            r->scaling = ENG_ROPE_SCALING_NONE;
        else if (str_is(&stype, "linear"))
            r->scaling = ENG_ROPE_SCALING_LINEAR;
        else if (str_is(&stype, "yarn"))
            r->scaling = ENG_ROPE_SCALING_YARN;
        else
            return hp_fail(h, ENG_ERR_UNSUPPORTED,
                           "RoPE scaling type '%.*s' is not supported (supported: none, linear, yarn)",
                           (int)(stype.n > 64 ? 64 : stype.n), stype.p);
    }

    /* freq_scale = 1/factor; the legacy key scale_linear means the same thing. */
    float factor = 0.0f;
    int found = 0;
    if ((st = get_float(h, "rope.scaling.factor", 0.0, 1e6, &factor, &found)))
        return st;
    if (!found && (st = get_float(h, "rope.scale_linear", 0.0, 1e6, &factor, &found)))
        return st;
    if (found && rs == 0 && factor != 0.0f && factor != 1.0f)
        r->scaling = ENG_ROPE_SCALING_LINEAR; /* legacy files state only the factor */
    r->freq_scale = (factor == 0.0f || r->scaling == ENG_ROPE_SCALING_NONE) ? 1.0f : 1.0f / factor;

    r->n_ctx_orig = 0;
    if (r->scaling != ENG_ROPE_SCALING_NONE) {
        r->n_ctx_orig = info->n_ctx_train;
        if ((st = get_int(h, "rope.scaling.original_context_length", 0, 1, 1 << 30, &r->n_ctx_orig)))
            return st;
    }
    /* llama.cpp defaults: ext_factor 1 when YaRN (else 0), attn_factor 1, beta 32 / 1. */
    r->yarn_ext_factor = r->scaling == ENG_ROPE_SCALING_YARN ? 1.0f : 0.0f;
    r->yarn_attn_factor = 1.0f;
    r->yarn_beta_fast = 32.0f;
    r->yarn_beta_slow = 1.0f;
    if (r->scaling == ENG_ROPE_SCALING_YARN) {
        if ((st = get_float(h, "rope.scaling.yarn_ext_factor", 0.0, 1e3, &r->yarn_ext_factor, NULL)) ||
            (st = get_float(h, "rope.scaling.yarn_attn_factor", 0.0, 1e3, &r->yarn_attn_factor, NULL)) ||
            (st = get_float(h, "rope.scaling.yarn_beta_fast", 0.0, 1e6, &r->yarn_beta_fast, NULL)) ||
            (st = get_float(h, "rope.scaling.yarn_beta_slow", 0.0, 1e6, &r->yarn_beta_slow, NULL)))
            return st;
    }
    return ENG_OK;
}

static eng_status tokenizer_params(hp *h, eng_info *info)
{
    eng_status st;
    gguf_str s;
    int r = gguf_get_str(h->g, "tokenizer.ggml.model", &s);
    info->tokenizer[0] = 0;
    if (r < 0)
        return hp_fail(h, ENG_ERR_FORMAT, "key 'tokenizer.ggml.model' has the wrong type (expected a string)");
    if (r == 1) {
        size_t n = s.n < sizeof info->tokenizer - 1 ? (size_t)s.n : sizeof info->tokenizer - 1;
        memcpy(info->tokenizer, s.p, n);
        info->tokenizer[n] = 0;
        if (memchr(info->tokenizer, 0, n))
            info->tokenizer[0] = 0;
    }
    int32_t unk;
    eng_vocab_default_specials(h->g, info->n_vocab, &info->bos_id, &info->eos_id, &unk);
    if ((st = get_special_id(h, "tokenizer.ggml.bos_token_id", info->n_vocab, &info->bos_id)) ||
        (st = get_special_id(h, "tokenizer.ggml.eos_token_id", info->n_vocab, &info->eos_id)))
        return st;
    /* As llama.cpp: SentencePiece and the llama3 BPE family add BOS unless told otherwise. */
    info->add_bos = eng_vocab_default_add_bos(h->g);
    int64_t ab;
    r = gguf_get_int(h->g, "tokenizer.ggml.add_bos_token", &ab);
    if (r < 0)
        return hp_fail(h, ENG_ERR_FORMAT, "key 'tokenizer.ggml.add_bos_token' has the wrong type (expected bool)");
    if (r == 1)
        info->add_bos = ab != 0;
    if (info->bos_id < 0)
        info->add_bos = 0;
    return ENG_OK;
}

eng_status eng_hparams_from_gguf(const gguf_file *g, eng_info *info, char *err, size_t errlen)
{
    hp h = {.g = g, .arch = NULL, .err = err, .errlen = errlen};
    eng_status st;
    memset(info, 0, sizeof *info);

    gguf_str a;
    int r = gguf_get_str(g, "general.architecture", &a);
    if (r == 0)
        return hp_fail(&h, ENG_ERR_FORMAT, "missing required key 'general.architecture'");
    if (r < 0)
        return hp_fail(&h, ENG_ERR_FORMAT, "key 'general.architecture' has the wrong type (expected a string)");
    static const char *const archs[] = {"llama", "qwen2", "qwen3", "stablelm"};
    for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (str_is(&a, archs[i]))
            h.arch = archs[i];
    if (!h.arch) {
        /* Print the name safely: it is file data. */
        char shown[40];
        size_t n = a.n < sizeof shown - 1 ? (size_t)a.n : sizeof shown - 1;
        for (size_t i = 0; i < n; i++)
            shown[i] = (a.p[i] >= 0x20 && a.p[i] < 0x7f) ? a.p[i] : '?';
        shown[n] = 0;
        return hp_fail(&h, ENG_ERR_UNSUPPORTED, "unsupported architecture '%s' (supported: llama, qwen2, qwen3, stablelm)",
                       shown);
    }
    snprintf(info->arch, sizeof info->arch, "%s", h.arch);

    if ((st = get_int(&h, "block_count", 1, 1, 4096, &info->n_layer)) ||
        (st = get_int(&h, "embedding_length", 1, 1, 1 << 20, &info->n_embd)) ||
        (st = get_int(&h, "attention.head_count", 1, 1, 1 << 16, &info->n_head)))
        return st;
    info->n_head_kv = info->n_head;
    if ((st = get_int(&h, "attention.head_count_kv", 0, 1, 1 << 16, &info->n_head_kv)))
        return st;
    if (info->n_head % info->n_head_kv != 0)
        return hp_fail(&h, ENG_ERR_FORMAT, "%s.attention.head_count %d is not a multiple of head_count_kv %d",
                       h.arch, info->n_head, info->n_head_kv);
    int hd_k = info->n_embd / info->n_head, hd_v = hd_k;
    if ((st = get_int(&h, "attention.key_length", 0, 1, 1 << 16, &hd_k)))
        return st;
    if ((st = get_int(&h, "attention.value_length", 0, 1, 1 << 16, &hd_v)))
        return st;
    if (hd_k != hd_v)
        return hp_fail(&h, ENG_ERR_UNSUPPORTED, "key length %d differs from value length %d (not supported)",
                       hd_k, hd_v);
    info->head_dim = hd_k;
    if ((st = get_int(&h, "feed_forward_length", 1, 1, 1 << 24, &info->n_ff)))
        return st;
    info->n_ctx_train = 2048;
    if ((st = get_int(&h, "context_length", 0, 1, 1 << 30, &info->n_ctx_train)))
        return st;
    /* stablelm normalises with LayerNorm (its own epsilon key), the others with RMSNorm */
    info->norm = strcmp(h.arch, "stablelm") == 0 ? ENG_NORM_LAYER : ENG_NORM_RMS;
    const char *eps_key = info->norm == ENG_NORM_LAYER ? "attention.layer_norm_epsilon"
                                                        : "attention.layer_norm_rms_epsilon";
    info->norm_eps = 1e-5f;
    int found = 0;
    if ((st = get_float(&h, eps_key, 0.0, 1.0, &info->norm_eps, &found)))
        return st;
    if (!found)
        return hp_fail(&h, ENG_ERR_FORMAT, "missing required key '%s.%s'", h.arch, eps_key);

    int sw = 0;
    if ((st = get_int(&h, "attention.sliding_window", 0, 0, INT32_MAX, &sw)))
        return st;
    if (sw > 0)
        return hp_fail(&h, ENG_ERR_UNSUPPORTED,
                       "sliding-window attention (%s.attention.sliding_window = %d) is not supported", h.arch, sw);

    /* Vocabulary size: the embedding's rows are authoritative, the token list a fallback. */
    const gguf_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
    gguf_vtype et;
    uint64_t ntok = 0;
    const void *d;
    int have_tok = gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &ntok, &d) == 1 && et == GGUF_VT_STRING;
    if (emb && emb->n_dims == 2)
        info->n_vocab = emb->ne[1] > INT32_MAX ? 0 : (int)emb->ne[1];
    else if (have_tok)
        info->n_vocab = ntok > INT32_MAX ? 0 : (int)ntok;
    if (info->n_vocab <= 0)
        return hp_fail(&h, ENG_ERR_FORMAT, "cannot determine the vocabulary size (no 2-D token_embd.weight and no tokenizer.ggml.tokens)");

    if ((st = rope_params(&h, info)) || (st = tokenizer_params(&h, info)))
        return st;

    const gguf_tensor *q = gguf_find_tensor(g, "blk.0.attn_q.weight");
    info->weight_type = q ? (int)q->type : -1;
    return ENG_OK;
}
