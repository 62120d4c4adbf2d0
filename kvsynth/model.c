/* kvsynth/model.c: `kvsynth --arch ... -o m.gguf`, a synthetic llama/qwen2/qwen3/stablelm GGUF with
 * deterministic random weights and a small valid tokenizer, streamed to disk tensor by tensor. */
#include "kvsynth/kvsynth.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "engine/gguf.h"
#include "kvsynth/synth_vocab.h"

static void usage(FILE *f)
{
    fputs("usage: kvsynth --arch llama|qwen2|qwen3|stablelm --layers N --dim D --heads H [--kv-heads K]\n"
          "               [--head-dim HD] --ffn F --vocab V [--ctx C] [--type TYPE]\n"
          "               [--rope-base B] [--yarn FACTOR] [--n-rot R] [--rope-freqs]\n"
          "               [--tied|--untied] [--extra-tensor NAME] [--chat-template FILE]\n"
          "               [--parallel] [--qk-norm]\n"
          "               [--tokenizer spm|bpe] [--pre llama-bpe|qwen2] [--user-token TEXT] [--name NAME]\n"
          "               --seed S -o OUT.gguf [--json]\n"
          "Writes a GGUF model with deterministic random weights (same arguments, same bytes).\n"
          "  TYPE       f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k (2-D weights;\n"
          "             norms and biases stay f32; K-quants need --dim and --ffn multiples of 256)\n"
          "  --yarn F   YaRN scaling by F: context_length = C*F, original context C\n"
          "  --n-rot R  partial rotary: RoPE turns the first R dims of each head (default: all)\n"
          "  --chat-template FILE  store FILE's text as tokenizer.chat_template\n"
          "  --user-token TEXT  (spm) the vocabulary's last piece becomes TEXT, a user-defined token\n"
          "             (for tokenizer tests: llama.cpp matches such tokens in any text)\n"
          "  --extra-tensor NAME  also write an f32 vector NAME that no forward pass reads (a model\n"
          "             feature kvpub does not implement; for refusal tests)\n"
          "  --rope-freqs  write rope_freqs.weight, llama3 frequency factors (scale 8, low 1,\n"
          "             high 4, original context C), as Llama 3.1/3.2 GGUFs carry them\n"
          "  --tied     no output.weight (default for qwen3); --untied writes one (default otherwise)\n"
          "stablelm: LayerNorms with biases, q/k/v biases, partial rotary with --n-rot (StableLM 2\n"
          "uses a quarter of the head), always an output.weight;\n"
          "  --parallel  no ffn_norm: the FFN reads the attention's normed input (StableLM 2 12B)\n"
          "  --qk-norm   per-head LayerNorm weights for Q and K (StableLM 2 12B)\n"
          "  --json     print a JSON summary on stdout\n", f);
}

static const struct {
    const char *name;
    uint32_t type;
    uint32_t file_type; /* general.file_type (llama_ftype) */
} k_types[] = {
    {"f32", GGML_T_F32, 0},   {"f16", GGML_T_F16, 1},   {"bf16", GGML_T_BF16, 32},
    {"q8_0", GGML_T_Q8_0, 7}, {"q4_0", GGML_T_Q4_0, 2}, {"q4_k", GGML_T_Q4_K, 15},
    {"q6_k", GGML_T_Q6_K, 18}, {"q4_1", GGML_T_Q4_1, 3}, {"q5_0", GGML_T_Q5_0, 8},
    {"q5_1", GGML_T_Q5_1, 9}, {"q2_k", GGML_T_Q2_K, 10}, {"q3_k", GGML_T_Q3_K, 12},
    {"q5_k", GGML_T_Q5_K, 17},
};

static int synth_type_from_name(const char *s, uint32_t *type, uint32_t *file_type)
{
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if (strcmp(s, k_types[i].name) == 0) {
            *type = k_types[i].type;
            if (file_type)
                *file_type = k_types[i].file_type;
            return 1;
        }
    return 0;
}

/* ---- PRNG: splitmix64 seeds xoshiro256** per tensor ---- */

typedef struct rng {
    uint64_t s[4];
} rng;

static uint64_t rng_next(rng *r) { return base_xoshiro256ss(r->s); }

/* Uniform in [-1, 1). */
static float rng_sym(rng *r)
{
    return (float)(rng_next(r) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

/* Seeded by (seed, tensor name) so a tensor's values do not depend on the others. */
static void rng_seed(rng *r, uint64_t seed, const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    uint64_t x = seed ^ h;
    for (int i = 0; i < 4; i++)
        r->s[i] = base_splitmix64(&x);
}

/* ---- tensor plan ---- */

typedef enum kind { K_WEIGHT, K_NORM, K_BIAS, K_ROPE_FREQS } kind;

typedef struct plan_t {
    char name[64];
    uint32_t n_dims;
    uint64_t ne[2];
    uint32_t type;
    kind k;
} plan_t;

typedef struct opts {
    const char *arch, *out, *type_name, *tok, *pre, *name, *extra_tensor, *chat_template, *user_token;
    long layers, dim, heads, kv_heads, head_dim, ffn, vocab, ctx, n_rot;
    double rope_base, yarn;
    int tied; /* -1 default */
    int rope_freqs, parallel, qk_norm;
    unsigned long long seed;
    int have_seed, json;
} opts;

static size_t make_plan(const opts *o, uint32_t wtype, plan_t *p)
{
    size_t n = 0;
    uint64_t e = (uint64_t)o->dim, qd = (uint64_t)(o->heads * o->head_dim),
             kd = (uint64_t)(o->kv_heads * o->head_dim), f = (uint64_t)o->ffn;
    int qwen2 = strcmp(o->arch, "qwen2") == 0, qwen3 = strcmp(o->arch, "qwen3") == 0;
    int stablelm = strcmp(o->arch, "stablelm") == 0;
#define ADD(nm, nd, a, b, ty, kk)                                                  \
    do {                                                                          \
        p[n] = (plan_t){.n_dims = (nd), .ne = {(a), (b)}, .type = (ty), .k = (kk)}; \
        snprintf(p[n].name, sizeof p[n].name, "%s", nm);                          \
        n++;                                                                      \
    } while (0)
    ADD("token_embd.weight", 2, e, (uint64_t)o->vocab, wtype, K_WEIGHT);
    if (o->rope_freqs)
        ADD("rope_freqs.weight", 1, (uint64_t)o->n_rot / 2, 1, GGML_T_F32, K_ROPE_FREQS);
    if (o->extra_tensor)
        ADD(o->extra_tensor, 1, e, 1, GGML_T_F32, K_NORM);
    for (long l = 0; l < o->layers; l++) {
        char b[64];
#define L(sfx) (snprintf(b, sizeof b, "blk.%ld.%s", l, sfx), b)
        ADD(L("attn_norm.weight"), 1, e, 1, GGML_T_F32, K_NORM);
        if (stablelm)
            ADD(L("attn_norm.bias"), 1, e, 1, GGML_T_F32, K_BIAS);
        ADD(L("attn_q.weight"), 2, e, qd, wtype, K_WEIGHT);
        ADD(L("attn_k.weight"), 2, e, kd, wtype, K_WEIGHT);
        ADD(L("attn_v.weight"), 2, e, kd, wtype, K_WEIGHT);
        if (qwen2 || stablelm) {
            ADD(L("attn_q.bias"), 1, qd, 1, GGML_T_F32, K_BIAS);
            ADD(L("attn_k.bias"), 1, kd, 1, GGML_T_F32, K_BIAS);
            ADD(L("attn_v.bias"), 1, kd, 1, GGML_T_F32, K_BIAS);
        }
        if (qwen3) {
            ADD(L("attn_q_norm.weight"), 1, (uint64_t)o->head_dim, 1, GGML_T_F32, K_NORM);
            ADD(L("attn_k_norm.weight"), 1, (uint64_t)o->head_dim, 1, GGML_T_F32, K_NORM);
        }
        if (o->qk_norm) {
            ADD(L("attn_q_norm.weight"), 2, (uint64_t)o->head_dim, (uint64_t)o->heads, GGML_T_F32, K_NORM);
            ADD(L("attn_k_norm.weight"), 2, (uint64_t)o->head_dim, (uint64_t)o->kv_heads, GGML_T_F32, K_NORM);
        }
        ADD(L("attn_output.weight"), 2, qd, e, wtype, K_WEIGHT);
        if (!o->parallel)
            ADD(L("ffn_norm.weight"), 1, e, 1, GGML_T_F32, K_NORM);
        if (stablelm && !o->parallel)
            ADD(L("ffn_norm.bias"), 1, e, 1, GGML_T_F32, K_BIAS);
        ADD(L("ffn_gate.weight"), 2, e, f, wtype, K_WEIGHT);
        ADD(L("ffn_up.weight"), 2, e, f, wtype, K_WEIGHT);
        ADD(L("ffn_down.weight"), 2, f, e, wtype, K_WEIGHT);
#undef L
    }
    ADD("output_norm.weight", 1, e, 1, GGML_T_F32, K_NORM);
    if (stablelm)
        ADD("output_norm.bias", 1, e, 1, GGML_T_F32, K_BIAS);
    if (!o->tied)
        ADD("output.weight", 2, e, (uint64_t)o->vocab, wtype, K_WEIGHT);
#undef ADD
    return n;
}

/* Llama 3's RoPE frequency factors as its conversion computes them from rope_scaling (factor
 * 8, low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings ctx): 1 for short
 * wavelengths, 8 for long ones, a smooth blend between. */
static void llama3_freq_factors(const opts *o, float *f)
{
    const double factor = 8, low = 1, high = 4, orig = (double)o->ctx;
    for (long i = 0; i < o->n_rot / 2; i++) {
        double freq = pow(o->rope_base, -2.0 * (double)i / (double)o->n_rot);
        double wavelen = 2 * M_PI / freq;
        if (wavelen < orig / high) {
            f[i] = 1.0f;
        } else if (wavelen > orig / low) {
            f[i] = (float)factor;
        } else {
            double smooth = (orig / wavelen - low) / (high - low);
            f[i] = (float)(1.0 / ((1 - smooth) / factor + smooth));
        }
    }
}

/* Streams one tensor's values row by row, converted to its type. */
static int write_tensor(ggw *w, const opts *o, const plan_t *t, float *row, void *qrow, char *err,
                        size_t errlen)
{
    if (t->k == K_ROPE_FREQS) {
        llama3_freq_factors(o, row);
        return ggw_write(w, row, (size_t)t->ne[0] * sizeof *row, err, errlen);
    }
    uint64_t seed = o->seed;
    rng r;
    rng_seed(&r, seed, t->name);
    uint64_t ne0 = t->ne[0], rows = t->n_dims == 2 ? t->ne[1] : 1;
    /* uniform(-a, a) has variance a^2/3: a = sqrt(3/fan_in) keeps activations near unit scale */
    float a = t->k == K_WEIGHT ? sqrtf(3.0f / (float)ne0) : t->k == K_NORM ? 0.1f : 0.02f;
    float base = t->k == K_NORM ? 1.0f : 0.0f;
    for (uint64_t i = 0; i < rows; i++) {
        for (uint64_t j = 0; j < ne0; j++)
            row[j] = base + a * rng_sym(&r);
        size_t nb = eng_quantize_row(t->type, row, qrow, (int64_t)ne0);
        if (nb == 0) {
            snprintf(err, errlen, "cannot produce tensor type %u", t->type);
            return -1;
        }
        if (ggw_write(w, qrow, nb, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) {
        fprintf(stderr, "kvsynth: %s expects an integer in %ld..%ld, got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_double(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "kvsynth: %s expects a number in %g..%g, got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    o->kv_heads = o->head_dim = -1;
    o->ctx = 2048;
    o->type_name = "f32";
    o->tok = "spm";
    o->tied = -1;
    o->rope_base = -1;
    /* The options that take a value: a string as given, or a number range-checked into place. */
    const struct {
        const char *name;
        const char **s;
        long *l;
        double *d;
        double lo, hi;
    } valued[] = {
        {"--arch", .s = &o->arch},
        {"-o", .s = &o->out},
        {"--type", .s = &o->type_name},
        {"--tokenizer", .s = &o->tok},
        {"--pre", .s = &o->pre},
        {"--name", .s = &o->name},
        {"--layers", .l = &o->layers, .lo = 1, .hi = 1024},
        {"--dim", .l = &o->dim, .lo = 1, .hi = 1 << 16},
        {"--heads", .l = &o->heads, .lo = 1, .hi = 1024},
        {"--kv-heads", .l = &o->kv_heads, .lo = 1, .hi = 1024},
        {"--head-dim", .l = &o->head_dim, .lo = 1, .hi = 4096},
        {"--ffn", .l = &o->ffn, .lo = 1, .hi = 1 << 20},
        {"--vocab", .l = &o->vocab, .lo = 1, .hi = 1 << 20},
        {"--ctx", .l = &o->ctx, .lo = 1, .hi = 1 << 24},
        {"--rope-base", .d = &o->rope_base, .lo = 1.0, .hi = 1e12},
        {"--yarn", .d = &o->yarn, .lo = 1.0, .hi = 1024.0},
        {"--chat-template", .s = &o->chat_template},
        {"--user-token", .s = &o->user_token},
        {"--extra-tensor", .s = &o->extra_tensor},
        {"--n-rot", .l = &o->n_rot, .lo = 2, .hi = 4096},
    };
    const size_t n_valued = sizeof valued / sizeof valued[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int r = 0, flag = 1;
        if (strcmp(a, "--tied") == 0)
            o->tied = 1;
        else if (strcmp(a, "--untied") == 0)
            o->tied = 0;
        else if (strcmp(a, "--json") == 0)
            o->json = 1;
        else if (strcmp(a, "--rope-freqs") == 0)
            o->rope_freqs = 1;
        else if (strcmp(a, "--parallel") == 0)
            o->parallel = 1;
        else if (strcmp(a, "--qk-norm") == 0)
            o->qk_norm = 1;
        else {
            flag = 0;
            if (!v) {
                fprintf(stderr, "kvsynth: unknown option or missing value: '%s' (see --help)\n", a);
                return -1;
            }
            size_t k = 0;
            while (k < n_valued && strcmp(a, valued[k].name) != 0)
                k++;
            if (k < n_valued && valued[k].s) {
                *valued[k].s = v;
            } else if (k < n_valued && valued[k].l) {
                r = parse_long(a, v, (long)valued[k].lo, (long)valued[k].hi, valued[k].l);
            } else if (k < n_valued) {
                r = parse_double(a, v, valued[k].lo, valued[k].hi, valued[k].d);
            } else if (strcmp(a, "--seed") == 0) {
                char *end;
                o->seed = strtoull(v, &end, 10);
                o->have_seed = 1;
                if (!*v || *end || *v == '-') {
                    fprintf(stderr, "kvsynth: --seed expects an unsigned integer, got '%s'\n", v);
                    r = -1;
                }
            } else {
                fprintf(stderr, "kvsynth: unknown option '%s' (see --help)\n", a);
                return -1;
            }
        }
        if (r)
            return -1;
        if (!flag)
            i++;
    }
    const char *missing = !o->arch ? "--arch" : !o->layers ? "--layers" : !o->dim ? "--dim"
                        : !o->heads ? "--heads" : !o->ffn ? "--ffn" : !o->vocab ? "--vocab"
                        : !o->have_seed ? "--seed" : !o->out ? "-o" : NULL;
    if (missing) {
        fprintf(stderr, "kvsynth: missing required option %s (see --help)\n", missing);
        return -1;
    }
    const int stablelm = strcmp(o->arch, "stablelm") == 0;
    if (strcmp(o->arch, "llama") && strcmp(o->arch, "qwen2") && strcmp(o->arch, "qwen3") && !stablelm) {
        fprintf(stderr, "kvsynth: --arch must be llama, qwen2, qwen3 or stablelm, got '%s'\n", o->arch);
        return -1;
    }
    if ((o->parallel || o->qk_norm) && !stablelm) {
        fputs("kvsynth: --parallel and --qk-norm are stablelm features\n", stderr);
        return -1;
    }
    if (stablelm && o->tied == 1) {
        fputs("kvsynth: stablelm always has an output.weight (llama.cpp requires it)\n", stderr);
        return -1;
    }
    if (o->kv_heads < 0)
        o->kv_heads = o->heads;
    if (o->heads % o->kv_heads) {
        fprintf(stderr, "kvsynth: --heads %ld must be a multiple of --kv-heads %ld\n", o->heads, o->kv_heads);
        return -1;
    }
    if (o->head_dim < 0) {
        if (o->dim % o->heads) {
            fprintf(stderr, "kvsynth: --dim %ld is not a multiple of --heads %ld (give --head-dim)\n",
                    o->dim, o->heads);
            return -1;
        }
        o->head_dim = o->dim / o->heads;
    }
    if (o->head_dim % 2) {
        fprintf(stderr, "kvsynth: head dim %ld must be even for RoPE\n", o->head_dim);
        return -1;
    }
    if (o->n_rot == 0)
        o->n_rot = o->head_dim;
    if (o->n_rot % 2 || o->n_rot > o->head_dim) {
        fprintf(stderr, "kvsynth: --n-rot %ld must be even and at most the head dim %ld\n", o->n_rot, o->head_dim);
        return -1;
    }
    if (o->rope_freqs && strcmp(o->arch, "llama") != 0) {
        fputs("kvsynth: --rope-freqs is a llama-architecture tensor\n", stderr);
        return -1;
    }
    if (strcmp(o->tok, "spm") && strcmp(o->tok, "bpe")) {
        fprintf(stderr, "kvsynth: --tokenizer must be spm or bpe, got '%s'\n", o->tok);
        return -1;
    }
    if (o->user_token && strcmp(o->tok, "spm") != 0) {
        fputs("kvsynth: --user-token needs --tokenizer spm\n", stderr);
        return -1;
    }
    if (o->tied < 0)
        o->tied = strcmp(o->arch, "qwen3") == 0;
    if (o->rope_base < 0)
        o->rope_base = strcmp(o->arch, "llama") == 0 ? 10000.0 : 1000000.0;
    if (!o->pre)
        o->pre = strcmp(o->arch, "llama") == 0 ? "llama-bpe" : "qwen2";
    return 0;
}

static int write_hparams(ggw *w, const opts *o, uint32_t file_type, const char *name)
{
    char k[128];
    int r = 0;
#define AK(sfx) (snprintf(k, sizeof k, "%s.%s", o->arch, sfx), k)
    r |= ggw_kv_str(w, "general.architecture", o->arch);
    r |= ggw_kv_str(w, "general.name", name);
    r |= ggw_kv_u32(w, "general.alignment", 32);
    r |= ggw_kv_u32(w, "general.file_type", file_type);
    long ctx = o->yarn > 0 ? (long)(o->ctx * o->yarn) : o->ctx;
    r |= ggw_kv_u32(w, AK("context_length"), (uint32_t)ctx);
    r |= ggw_kv_u32(w, AK("embedding_length"), (uint32_t)o->dim);
    r |= ggw_kv_u32(w, AK("block_count"), (uint32_t)o->layers);
    r |= ggw_kv_u32(w, AK("feed_forward_length"), (uint32_t)o->ffn);
    r |= ggw_kv_u32(w, AK("attention.head_count"), (uint32_t)o->heads);
    r |= ggw_kv_u32(w, AK("attention.head_count_kv"), (uint32_t)o->kv_heads);
    r |= ggw_kv_u32(w, AK("attention.key_length"), (uint32_t)o->head_dim);
    r |= ggw_kv_u32(w, AK("attention.value_length"), (uint32_t)o->head_dim);
    r |= ggw_kv_u32(w, AK("rope.dimension_count"), (uint32_t)o->n_rot);
    r |= ggw_kv_f32(w, AK("rope.freq_base"), (float)o->rope_base);
    if (strcmp(o->arch, "stablelm") == 0)
        r |= ggw_kv_f32(w, AK("attention.layer_norm_epsilon"), 1e-5f);
    else
        r |= ggw_kv_f32(w, AK("attention.layer_norm_rms_epsilon"), strcmp(o->arch, "llama") == 0 ? 1e-5f : 1e-6f);
    r |= ggw_kv_u32(w, AK("vocab_size"), (uint32_t)o->vocab);
    if (o->yarn > 0) {
        r |= ggw_kv_str(w, AK("rope.scaling.type"), "yarn");
        r |= ggw_kv_f32(w, AK("rope.scaling.factor"), (float)o->yarn);
        r |= ggw_kv_u32(w, AK("rope.scaling.original_context_length"), (uint32_t)o->ctx);
    }
#undef AK
    return r;
}

int kvsynth_model_main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
    opts o;
    if (parse_args(argc, argv, &o) != 0)
        return 2;
    uint32_t wtype, file_type;
    if (!synth_type_from_name(o.type_name, &wtype, &file_type)) {
        fprintf(stderr, "kvsynth: unknown --type '%s' (expected f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k)\n", o.type_name);
        return 2;
    }
    size_t cap = 8 + 18 * (size_t)o.layers;
    plan_t *plan = calloc(cap, sizeof *plan);
    if (!plan) {
        fputs("kvsynth: out of memory\n", stderr);
        return 2;
    }
    size_t nt = make_plan(&o, wtype, plan);
    uint64_t max_ne0 = 0;
    for (size_t i = 0; i < nt; i++) {
        uint32_t blck;
        const char *tn;
        ggml_type_traits(plan[i].type, &blck, NULL, &tn);
        if (plan[i].ne[0] % blck) {
            fprintf(stderr, "kvsynth: --type %s needs row lengths that are multiples of %u, but %s has rows of %llu\n",
                    o.type_name, blck, plan[i].name, (unsigned long long)plan[i].ne[0]);
            free(plan);
            return 2;
        }
        if (plan[i].ne[0] > max_ne0)
            max_ne0 = plan[i].ne[0];
    }
    char err[512];
    synth_vocab v;
    int vr = strcmp(o.tok, "spm") == 0 ? synth_vocab_spm((size_t)o.vocab, &v, err, sizeof err)
                                       : synth_vocab_bpe((size_t)o.vocab, o.pre, &v, err, sizeof err);
    if (vr == 0 && o.user_token && synth_vocab_user_token(&v, o.user_token, err, sizeof err) != 0) {
        synth_vocab_free(&v);
        vr = -1;
    }
    if (vr != 0) {
        fprintf(stderr, "kvsynth: %s\n", err);
        free(plan);
        return 2;
    }
    char name[128];
    snprintf(name, sizeof name, "%s", o.name ? o.name : "kvsynth");
    char *tmpl = NULL;
    ggw *w = ggw_create(32);
    int rc = 2;
    float *row = malloc(max_ne0 * sizeof *row);
    void *qrow = malloc(max_ne0 * sizeof(float));
    if (!w || !row || !qrow) {
        fputs("kvsynth: out of memory\n", stderr);
        goto out;
    }
    if (o.chat_template) {
        FILE *tf = fopen(o.chat_template, "rb");
        size_t tl;
        tmpl = tf ? base_read_stream(tf, 1 << 20, &tl) : NULL;
        if (tf)
            fclose(tf);
        if (!tmpl) {
            fprintf(stderr, "kvsynth: cannot read --chat-template %s\n", o.chat_template);
            goto out;
        }
    }
    if (write_hparams(w, &o, file_type, name) | synth_vocab_write(w, &v) |
        (tmpl ? ggw_kv_str(w, "tokenizer.chat_template", tmpl) : 0)) {
        fputs("kvsynth: out of memory\n", stderr);
        goto out;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < nt; i++)
        total += ggw_tensor(w, plan[i].name, plan[i].type, plan[i].n_dims, plan[i].ne);
    if (ggw_begin(w, o.out, err, sizeof err) != 0)
        goto fail;
    for (size_t i = 0; i < nt; i++)
        if (write_tensor(w, &o, &plan[i], row, qrow, err, sizeof err) != 0)
            goto fail;
    if (ggw_finish(w, err, sizeof err) != 0)
        goto fail;
    rc = 0;
    if (o.json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:I}", "path", o.out, "arch", o.arch,
                              "type", o.type_name, "n_tensors", (json_int_t)nt, "n_vocab", (json_int_t)o.vocab,
                              "tensor_bytes", (json_int_t)total, "tokenizer", v.model, "seed",
                              (json_int_t)o.seed);
        char *s = j ? json_dumps(j, JSON_SORT_KEYS) : NULL;
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(j);
    }
    goto out;
fail:
    fprintf(stderr, "kvsynth: %s\n", err);
out:
    ggw_free(w);
    free(tmpl);
    free(row);
    free(qrow);
    free(plan);
    synth_vocab_free(&v);
    return rc;
}
