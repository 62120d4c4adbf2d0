/* model.c: eng_model: reads or maps a GGUF (open_weights), reads its hyper-parameters, binds
 * and shape-checks every weight tensor of the llama / qwen2 / qwen3 / stablelm graph, and
 * loads the vocabulary. */
#include "engine/model_internal.h"
#include "base/base.h"
#include "engine/kernels/quant_internal.h"
#include "engine/tok/tokenizer_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct eng_model {
    char *path;
    gguf_file *g;
    eng_info info;
    eng_weights w;
    float *vecs;              /* f32 copies of every norm weight and bias */
    struct eng_vocab *vocab;
    uint8_t tok_fp[32];
    int have_fp;
    uint8_t fp[32];
    char *fp_cache_dir;       /* NULL: fingerprints are not cached */
};

static const char *type_name(uint32_t type)
{
    const char *name = NULL;
    uint32_t blck, bytes;
    if (!ggml_type_traits(type, &blck, &bytes, &name) || !name)
        return "unknown";
    return name;
}

/* Binding state: file, shapes and where the error goes. */
typedef struct binder {
    const gguf_file *g;
    const char *path;
    const char *arch;
    char *err;
    size_t errlen;
    float *vec_next;          /* bump allocator into eng_model.vecs */
    const gguf_tensor **used; /* every tensor bound so far */
    size_t n_used;
} binder;

static const gguf_tensor *find(binder *b, const char *name, int required, eng_status *st)
{
    const gguf_tensor *t = gguf_find_tensor(b->g, name);
    *st = ENG_OK;
    if (!t && required)
        *st = eng_fail(b->err, b->errlen, ENG_ERR_FORMAT, "%s: missing tensor '%s'", b->path, name);
    if (t && b->n_used < gguf_n_tensors(b->g))
        b->used[b->n_used++] = t;
    return t;
}

/* A tensor the forward pass does not read means a model feature we do not implement (as
 * rope_freqs was): computing without it would publish KV that llama.cpp does not compute, so
 * the file is refused naming it. llama.cpp refuses such files too. */
static eng_status unused_tensor(const binder *b)
{
    size_t n = gguf_n_tensors(b->g);
    for (size_t i = 0; i < n && b->n_used < n; i++) {
        const gguf_tensor *t = gguf_tensor_at(b->g, i);
        size_t k = 0;
        while (k < b->n_used && b->used[k] != t)
            k++;
        if (k == b->n_used)
            return eng_fail(b->err, b->errlen, ENG_ERR_UNSUPPORTED,
                            "%s: tensor '%s' is not used by the %s forward pass here; refusing the file "
                            "rather than computing KV that differs from llama.cpp's",
                            b->path, t->name, b->arch);
    }
    return ENG_OK;
}

static eng_status bind_mat(binder *b, const char *name, int64_t rows, int64_t cols, eng_wmat *out)
{
    eng_status st;
    const gguf_tensor *t = find(b, name, 1, &st);
    if (!t)
        return st;
    if (t->n_dims > 2 || t->ne[0] != (uint64_t)cols || t->ne[1] != (uint64_t)rows ||
        t->ne[2] != 1 || t->ne[3] != 1)
        return eng_fail(b->err, b->errlen, ENG_ERR_FORMAT,
                    "%s: tensor '%s' has shape [%llu, %llu, %llu, %llu], expected [%lld, %lld]",
                    b->path, name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                    (unsigned long long)t->ne[2], (unsigned long long)t->ne[3],
                    (long long)cols, (long long)rows);
    if (!eng_type_supported(t->type))
        return eng_fail(b->err, b->errlen, ENG_ERR_UNSUPPORTED,
                    "%s: tensor '%s' has type %s (%u), which has no kernel here "
                    "(supported: f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, q5_K, q6_K)",
                    b->path, name, type_name(t->type), t->type);
    size_t rb = ggml_row_bytes(t->type, (uint64_t)cols);
    if (rb == 0 || rb * (uint64_t)rows > t->nbytes)
        return eng_fail(b->err, b->errlen, ENG_ERR_FORMAT,
                    "%s: tensor '%s': %lld columns of type %s do not form whole rows",
                    b->path, name, (long long)cols, type_name(t->type));
    out->name = t->name;
    out->data = t->data;
    out->type = t->type;
    out->nrows = rows;
    out->ncols = cols;
    out->row_bytes = rb;
    return ENG_OK;
}

/* Small tensors (norms, biases) are copied to f32 so the forward pass reads one type: a vector
 * of ne0 (ne1 == 1), or ne1 rows of ne0 (stablelm's per-head norm weights). */
static eng_status bind_small(binder *b, const char *name, int64_t ne0, int64_t ne1, int required,
                             const float **out)
{
    eng_status st;
    const gguf_tensor *t = find(b, name, required, &st);
    *out = NULL;
    if (!t)
        return st;
    const int64_t n = ne0 * ne1;
    if (t->nelem != (uint64_t)n || t->ne[0] != (uint64_t)ne0)
        return eng_fail(b->err, b->errlen, ENG_ERR_FORMAT,
                    "%s: tensor '%s' has %llu elements (ne0 %llu), expected %lld x %lld",
                    b->path, name, (unsigned long long)t->nelem, (unsigned long long)t->ne[0],
                    (long long)ne0, (long long)ne1);
    if (t->type != GGML_T_F32 && t->type != GGML_T_F16 && t->type != GGML_T_BF16)
        return eng_fail(b->err, b->errlen, ENG_ERR_UNSUPPORTED,
                    "%s: tensor '%s' has type %s, expected f32, f16 or bf16 for a norm/bias vector",
                    b->path, name, type_name(t->type));
    if (ggml_row_bytes(t->type, (uint64_t)n) > t->nbytes)
        return eng_fail(b->err, b->errlen, ENG_ERR_FORMAT, "%s: tensor '%s' is truncated", b->path, name);
    float *dst = b->vec_next;
    b->vec_next += n;
    eng_dequant_row(t->type, t->data, dst, n);
    *out = dst;
    return ENG_OK;
}

static eng_status bind_vec(binder *b, const char *name, int64_t n, int required, const float **out)
{
    return bind_small(b, name, n, 1, required, out);
}

/* stablelm's LayerNorm biases (required, as llama.cpp's loader has them), its optional FFN
 * norm (absent: parallel residual) and its optional per-head Q/K LayerNorm weights. */
static eng_status bind_layer_stablelm(binder *b, const eng_info *hp, int il, eng_layer *L)
{
    const int64_t E = hp->n_embd, hd = hp->head_dim;
    char n[96];
    eng_status st;
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", il, s), n)
    if ((st = bind_vec(b, NAME("attn_norm.bias"), E, 1, &L->attn_norm_b)) ||
        (st = bind_vec(b, NAME("ffn_norm.weight"), E, 0, &L->ffn_norm)) ||
        (L->ffn_norm && (st = bind_vec(b, NAME("ffn_norm.bias"), E, 0, &L->ffn_norm_b))) ||
        (st = bind_small(b, NAME("attn_q_norm.weight"), hd, hp->n_head, 0, &L->q_norm)) ||
        (st = bind_small(b, NAME("attn_k_norm.weight"), hd, hp->n_head_kv, 0, &L->k_norm)))
        return st;
#undef NAME
    return ENG_OK;
}

static eng_status bind_layer(binder *b, const eng_info *hp, int il, eng_layer *L)
{
    const int64_t E = hp->n_embd, F = hp->n_ff;
    const int64_t QD = (int64_t)hp->n_head * hp->head_dim, KD = (int64_t)hp->n_head_kv * hp->head_dim;
    const int qwen3 = strcmp(hp->arch, "qwen3") == 0;
    char n[96];
    eng_status st;
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", il, s), n)
    if ((st = bind_vec(b, NAME("attn_norm.weight"), E, 1, &L->attn_norm)) ||
        (st = hp->norm == ENG_NORM_LAYER ? bind_layer_stablelm(b, hp, il, L)
                                         : bind_vec(b, NAME("ffn_norm.weight"), E, 1, &L->ffn_norm)) ||
        (st = bind_mat(b, NAME("attn_q.weight"), QD, E, &L->wq)) ||
        (st = bind_mat(b, NAME("attn_k.weight"), KD, E, &L->wk)) ||
        (st = bind_mat(b, NAME("attn_v.weight"), KD, E, &L->wv)) ||
        (st = bind_mat(b, NAME("attn_output.weight"), E, QD, &L->wo)) ||
        (st = bind_mat(b, NAME("ffn_gate.weight"), F, E, &L->gate)) ||
        (st = bind_mat(b, NAME("ffn_up.weight"), F, E, &L->up)) ||
        (st = bind_mat(b, NAME("ffn_down.weight"), E, F, &L->down)) ||
        /* biases: qwen2 has them; accepted on any arch when present */
        (st = bind_vec(b, NAME("attn_q.bias"), QD, 0, &L->bq)) ||
        (st = bind_vec(b, NAME("attn_k.bias"), KD, 0, &L->bk)) ||
        (st = bind_vec(b, NAME("attn_v.bias"), KD, 0, &L->bv)) ||
        (hp->norm == ENG_NORM_RMS &&
         ((st = bind_vec(b, NAME("attn_q_norm.weight"), hp->head_dim, qwen3, &L->q_norm)) ||
          (st = bind_vec(b, NAME("attn_k_norm.weight"), hp->head_dim, qwen3, &L->k_norm)))))
        return st;
#undef NAME
    if (!!L->q_norm != !!L->k_norm)
        return eng_fail(b->err, b->errlen, ENG_ERR_FORMAT,
                    "%s: layer %d has only one of attn_q_norm / attn_k_norm", b->path, il);
    return ENG_OK;
}

static eng_status bind_tensors(binder *b, eng_model *m)
{
    const eng_info *hp = &m->info;
    const int64_t E = hp->n_embd;
    eng_status st;
    const int stablelm = hp->norm == ENG_NORM_LAYER;
    if ((st = bind_mat(b, "token_embd.weight", hp->n_vocab, E, &m->w.tok_embd)) ||
        (st = bind_vec(b, "output_norm.weight", E, 1, &m->w.output_norm)) ||
        (stablelm && (st = bind_vec(b, "output_norm.bias", E, 1, &m->w.output_norm_b))))
        return st;
    /* llama.cpp's stablelm loader requires output.weight; the others tie it when absent */
    if (stablelm || gguf_find_tensor(m->g, "output.weight")) {
        if ((st = bind_mat(b, "output.weight", hp->n_vocab, E, &m->w.output)))
            return st;
    } else {
        m->w.output = m->w.tok_embd; /* tied embeddings */
    }
    /* llama3 RoPE frequency factors (Llama 3.1/3.2 GGUFs): llama.cpp's llama graph uses them;
     * on other architectures it does not, and neither do we (the file is refused below). */
    if (strcmp(hp->arch, "llama") == 0 &&
        (st = bind_vec(b, "rope_freqs.weight", hp->rope.n_rot / 2, 0, &m->w.rope_freqs)))
        return st;
    for (int il = 0; il < hp->n_layer; il++)
        if ((st = bind_layer(b, hp, il, &m->w.layers[il])))
            return st;
    return unused_tensor(b);
}

static eng_status bind_all(eng_model *m, char *err, size_t errlen)
{
    const eng_info *hp = &m->info;
    const int64_t E = hp->n_embd, QD = (int64_t)hp->n_head * hp->head_dim;
    const int64_t KD = (int64_t)hp->n_head_kv * hp->head_dim;
    /* upper bound of the f32 vector copies: every optional vector present */
    size_t nvec = 2 * (size_t)E + (size_t)hp->rope.n_rot / 2 +
                  (size_t)hp->n_layer * (size_t)(4 * E + 2 * hp->head_dim + 2 * QD + 3 * KD);
    m->vecs = malloc(nvec * sizeof(float));
    m->w.layers = calloc((size_t)hp->n_layer, sizeof(eng_layer));
    const gguf_tensor **used = malloc((gguf_n_tensors(m->g) + 1) * sizeof *used);
    if (!m->vecs || !m->w.layers || !used) {
        free(used);
        return eng_fail(err, errlen, ENG_ERR_NOMEM, "out of memory binding %d layers", hp->n_layer);
    }
    binder b = {m->g, m->path, hp->arch, err, errlen, m->vecs, used, 0};
    eng_status st = bind_tensors(&b, m);
    free(used);
    return st;
}

/* How the file is held (engine.h: how, else KVPUB_WEIGHTS): the largest size it copies. */
static eng_status open_weights(eng_model *m, const char *how, char *err, size_t errlen)
{
    const char *env = getenv("KVPUB_WEIGHTS");
    if (env && *env)
        how = env;
    uint64_t max_copy;
    if (!how || !*how || strcmp(how, "auto") == 0)
        max_copy = base_huge_pages() ? base_mem_available() / 2 : 0;
    else if (strcmp(how, "copy") == 0 || strcmp(how, "map") == 0)
        max_copy = how[0] == 'c' ? UINT64_MAX : 0;
    else
        return eng_fail(err, errlen, ENG_ERR_ARG, "%s='%s' is not map, copy or auto",
                        how == env ? "KVPUB_WEIGHTS" : "weights", how);
    return gguf_open_copy(m->path, max_copy, &m->g, err, errlen);
}

eng_status eng_model_load(const char *path, eng_model **out, char *err, size_t errlen)
{
    return eng_model_load_held(path, NULL, out, err, errlen);
}

eng_status eng_model_load_held(const char *path, const char *how, eng_model **out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return eng_fail(err, errlen, ENG_ERR_ARG, "eng_model_load: out is NULL");
    *out = NULL;
    if (!path)
        return eng_fail(err, errlen, ENG_ERR_ARG, "eng_model_load: path is NULL");
    eng_model *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return eng_fail(err, errlen, ENG_ERR_NOMEM, "out of memory loading %s", path);
    }
    eng_status st;
    if ((st = open_weights(m, how, err, errlen)) ||
        (st = eng_hparams_from_gguf(m->g, &m->info, err, errlen)))
        goto fail;
    const eng_info *hp = &m->info;
    if (hp->n_layer < 1 || hp->n_embd < 1 || hp->n_head < 1 || hp->n_head_kv < 1 ||
        hp->head_dim < 2 || hp->head_dim > 512 || hp->head_dim % 2 || hp->n_head % hp->n_head_kv || hp->n_vocab < 1 ||
        hp->n_ff < 1 || hp->rope.n_rot > hp->head_dim || hp->rope.n_rot < 2 || hp->rope.n_rot % 2) {
        st = eng_fail(err, errlen, ENG_ERR_UNSUPPORTED,
                  "%s: unsupported shape (layers %d, embd %d, heads %d/%d, head dim %d, rot %d)", path,
                  hp->n_layer, hp->n_embd, hp->n_head, hp->n_head_kv, hp->head_dim, hp->rope.n_rot);
        goto fail;
    }
    if ((st = bind_all(m, err, errlen)))
        goto fail;
    if ((st = eng_vocab_from_gguf(m->g, &m->info, &m->vocab, err, errlen)))
        goto fail;
    eng_fingerprint_tokenizer_compute(m->g, &m->info, m->tok_fp);
    *out = m;
    return ENG_OK;
fail:
    eng_model_free(m);
    return st;
}

void eng_model_free(eng_model *m)
{
    if (!m)
        return;
    eng_vocab_free(m->vocab);
    free(m->w.layers);
    free(m->vecs);
    gguf_close(m->g);
    free(m->path);
    free(m->fp_cache_dir);
    free(m);
}

const eng_info *eng_model_info(const eng_model *m) { return &m->info; }

const char *eng_model_weights_held(const eng_model *m) { return gguf_is_copy(m->g) ? "copy" : "map"; }

size_t eng_model_rope_freqs(const eng_model *m, const float **factors)
{
    *factors = m->w.rope_freqs;
    return m->w.rope_freqs ? (size_t)m->info.rope.n_rot / 2 : 0;
}
const eng_weights *eng_model_weights(const eng_model *m) { return &m->w; }
const struct eng_vocab *eng_model_vocab(const eng_model *m) { return m->vocab; }
const gguf_file *eng_model_gguf(const eng_model *m) { return m->g; }
const char *eng_model_path(const eng_model *m) { return m->path; }

void eng_model_set_fingerprint_cache(eng_model *m, const char *dir)
{
    free(m->fp_cache_dir);
    m->fp_cache_dir = dir ? strdup(dir) : NULL; /* out of memory: no cache, which is allowed */
}

eng_status eng_model_fingerprint(eng_model *m, uint8_t out[32], char *err, size_t errlen)
{
    if (!m->have_fp) {
        eng_status st = eng_fingerprint_model_cached(m->path, m->g, &m->info, m->fp_cache_dir, m->fp, err,
                                                     errlen);
        if (st)
            return st;
        m->have_fp = 1;
    }
    memcpy(out, m->fp, 32);
    return ENG_OK;
}

void eng_tokenizer_fingerprint(const eng_model *m, uint8_t out[32])
{
    memcpy(out, m->tok_fp, 32);
}

size_t eng_kv_token_bytes(const eng_model *m)
{
    return (size_t)m->info.n_layer * 2 * (size_t)m->info.n_head_kv * (size_t)m->info.head_dim *
           sizeof(uint16_t);
}
