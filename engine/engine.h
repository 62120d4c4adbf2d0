/* engine.h: run llama-family GGUF models on the CPU (a fixed-order GEMM for batched products, see
 * spec/engine.md), with an f16 KV cache whose cells carry explicit positions, KV export/import, K re-rotation,
 * tokenizers, sampling and model/tokenizer fingerprints. The whole public contract of engine/.
 * engine/ depends only on base/ (the libc-level layer under every module). */
#ifndef KVPUB_ENGINE_H
#define KVPUB_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#define ENG_WUR __attribute__((warn_unused_result))

/* Stable status values: never renumber. */
typedef enum eng_status {
    ENG_OK = 0,
    ENG_ERR_IO = 1,          /* file missing or unreadable */
    ENG_ERR_FORMAT = 2,      /* malformed GGUF: bad magic/version, sizes out of bounds, ... */
    ENG_ERR_UNSUPPORTED = 3, /* valid GGUF we cannot run: arch, tensor type, attention kind */
    ENG_ERR_NOMEM = 4,
    ENG_ERR_RANGE = 5,       /* context full, position/cell/token id out of range */
    ENG_ERR_ARG = 6,         /* invalid argument */
    ENG_ERR_INTERNAL = 7,
} eng_status;

const char *eng_status_str(eng_status st); /* never NULL */

/* ---- model ---- */

typedef enum eng_rope_type { ENG_ROPE_NORMAL = 0, ENG_ROPE_NEOX = 2 } eng_rope_type;
typedef enum eng_rope_scaling {
    ENG_ROPE_SCALING_NONE = 0,
    ENG_ROPE_SCALING_LINEAR = 1,
    ENG_ROPE_SCALING_YARN = 2,
} eng_rope_scaling;

/* RoPE as the GGUF states it; these fields go into blob manifests and the model fingerprint. */
typedef struct eng_rope {
    eng_rope_type type;       /* llama: NORMAL (adjacent pairs); qwen2/qwen3/stablelm: NEOX (half split) */
    int n_rot;                /* rotated dims per head: the first n_rot; < head_dim only on stablelm */
    float freq_base;          /* theta base, e.g. 10000 or 1e6 */
    float freq_scale;         /* 1 / scaling factor; 1 when no scaling */
    eng_rope_scaling scaling;
    int n_ctx_orig;           /* YaRN: original training context (0 when unused) */
    float yarn_ext_factor;    /* YaRN ramp mix; 0 when not YaRN */
    float yarn_attn_factor;   /* YaRN magnitude factor; 1 when not YaRN */
    float yarn_beta_fast;     /* 32 by default */
    float yarn_beta_slow;     /* 1 by default */
} eng_rope;

/* Normalisation: llama/qwen2/qwen3 use RMSNorm times a weight; stablelm a LayerNorm (mean
 * removed) times a weight plus a bias. */
typedef enum eng_norm_type { ENG_NORM_RMS = 0, ENG_NORM_LAYER = 1 } eng_norm_type;

typedef struct eng_info {
    char arch[16];            /* "llama", "qwen2", "qwen3", "stablelm" */
    int n_layer;
    int n_embd;
    int n_head;
    int n_head_kv;
    int head_dim;             /* key (= value) length per head */
    int n_ff;
    int n_vocab;
    int n_ctx_train;
    eng_norm_type norm;       /* RMSNorm, or LayerNorm with bias (stablelm) */
    float norm_eps;           /* the norm's epsilon */
    eng_rope rope;
    int weight_type;          /* ggml type id of the bulk of the weights (attn_q.weight of layer 0) */
    int32_t bos_id;           /* -1 when none */
    int32_t eos_id;           /* -1 when none */
    int add_bos;              /* tokenizer adds BOS at the start of a sequence */
    char tokenizer[16];       /* "llama" (SentencePiece) or "gpt2" (byte-level BPE) */
} eng_info;

typedef struct eng_model eng_model;

/* Loads a GGUF model. The file is read into private memory on 2 MiB pages (gguf_open_copy)
 * when the kernel gives them and the file takes at most half of the memory available, else
 * mapped: passes over every weight then walk a few hundred page-table entries, not hundreds of
 * thousands, and measured steadier (spec/engine.md). KVPUB_WEIGHTS=copy or =map decides instead
 * (auto, the default, as above). On failure returns the status and writes a one-line reason to
 * err, e.g. "unsupported architecture 'gemma2' (supported: llama, qwen2, qwen3, stablelm)". */
eng_status eng_model_load(const char *path, eng_model **out, char *err, size_t errlen) ENG_WUR;
/* eng_model_load holding the weights as how says when KVPUB_WEIGHTS does not: "map", "copy"
 * or "auto" (NULL: auto). For a model no token will be computed with, such as one that only
 * tokenizes and places KV computed elsewhere, "map" spares copying the file. */
eng_status eng_model_load_held(const char *path, const char *how, eng_model **out, char *err,
                               size_t errlen) ENG_WUR;
/* How eng_model_load holds the weights: "copy" or "map". */
const char *eng_model_weights_held(const eng_model *m);
void eng_model_free(eng_model *m); /* NULL is a no-op */
/* Where eng_model_fingerprint caches (dir is copied, and created when first written); NULL, the
 * default, caches nothing. The tools pass base_cache_dir(NULL, ...). */
void eng_model_set_fingerprint_cache(eng_model *m, const char *dir);
const eng_info *eng_model_info(const eng_model *m);
/* The model's llama3 RoPE frequency factors (rope_freqs.weight: pair i of a head turns at
 * theta_i / factors[i]): their count, n_rot / 2, with *factors pointing at them; 0 and NULL when
 * the model has none. Valid while m lives. */
size_t eng_model_rope_freqs(const eng_model *m, const float **factors);

/* Model fingerprint as docs/design.md and spec/fingerprints.md define it (hyper-parameters, then every tensor's name,
 * type, shape and data bytes in name order). Cached by (device, inode, size, mtime) in the
 * directory eng_model_set_fingerprint_cache gave, so a big model is hashed once; not cached
 * when none was given. */
eng_status eng_model_fingerprint(eng_model *m, uint8_t out[32], char *err, size_t errlen) ENG_WUR;
/* Tokenizer fingerprint: vocabulary, scores/merges, token types, special ids, add-BOS/EOS. */
void eng_tokenizer_fingerprint(const eng_model *m, uint8_t out[32]);

/* ---- tokenizer ---- */

/* Tokenizes len bytes of UTF-8 text. add_bos: prepend BOS if the model's policy says so.
 * parse_special: match special-token strings (e.g. "<|im_start|>") in the text; documents are
 * tokenized with 0. On success *ids is malloc'd (caller frees) and holds *n ids. */
eng_status eng_tokenize(const eng_model *m, const char *text, size_t len, int add_bos,
                        int parse_special, int32_t **ids, size_t *n) ENG_WUR;

/* Streaming detokenizer: feeds one id at a time, returns the bytes to print now (complete
 * UTF-8 only; partial sequences are held back). Each token gives its piece as llama.cpp's
 * llama_token_to_piece does (special = false: control and unknown tokens print nothing), the
 * way llama-server streams generated text, which continues a prompt. strip_first: the first
 * token also loses one leading space where the vocabulary adds a space prefix, as
 * llama_detokenize treats a whole text; then concatenating everything returned for
 * tokenize(x) (without BOS) gives x back. */
typedef struct eng_detok eng_detok;
eng_detok *eng_detok_create(const eng_model *m, int strip_first);
/* Returns a pointer valid until the next call; *len bytes (may be 0). */
const char *eng_detok_push(eng_detok *d, int32_t id, size_t *len);
const char *eng_detok_flush(eng_detok *d, size_t *len); /* held-back bytes at the end */
void eng_detok_free(eng_detok *d);

/* Whole-sequence detokenization into a malloc'd NUL-terminated string: the tokens' pieces back
 * to back, strip_first as for eng_detok_create (0: llama-server's /detokenize and generated
 * text; 1: llama_detokenize). */
eng_status eng_detokenize(const eng_model *m, const int32_t *ids, size_t n, int strip_first, char **out,
                          size_t *len) ENG_WUR;

int eng_token_is_eog(const eng_model *m, int32_t id); /* end of generation (EOS, EOT) */

/* ---- vocabularies without a model (engine/tok/) ----
 * The tokenizers behind eng_tokenize, built from an in-memory description instead of a GGUF
 * file. Public for programs that tokenize without weights and for fuzz/fuzz_tokenizer.c,
 * which feeds the tokenizers fuzzed vocabularies. */

typedef struct eng_vocab eng_vocab;

/* Token types as GGUF's tokenizer.ggml.token_type stores them (llama.cpp values). */
enum {
    ENG_TOKTYPE_UNDEFINED = 0,
    ENG_TOKTYPE_NORMAL = 1,
    ENG_TOKTYPE_UNKNOWN = 2,
    ENG_TOKTYPE_CONTROL = 3,
    ENG_TOKTYPE_USER_DEFINED = 4,
    ENG_TOKTYPE_UNUSED = 5,
    ENG_TOKTYPE_BYTE = 6,
};

typedef enum eng_vocab_kind {
    ENG_VOCAB_SPM = 1, /* tokenizer.ggml.model = "llama" */
    ENG_VOCAB_BPE = 2, /* tokenizer.ggml.model = "gpt2" (byte-level BPE) */
} eng_vocab_kind;

/* Hard limits on untrusted vocabularies, checked before allocating. */
enum {
    ENG_VOCAB_MAX_TOKENS = 1 << 22,
    ENG_VOCAB_MAX_MERGES = 1 << 22,
    ENG_VOCAB_MAX_TOKEN_BYTES = 1 << 16, /* one token's text */
};

/* In-memory description of a vocabulary; everything is borrowed and copied by
 * eng_vocab_create. Strings are UTF-8; a NULL length array means NUL-terminated strings. */
typedef struct eng_vocab_desc {
    eng_vocab_kind kind;
    const char *pre;            /* BPE pre-tokenizer: "llama-bpe", "qwen2", "default"/"gpt2";
                                 * NULL = "default". Ignored for SPM. */
    size_t n_tokens;
    const char *const *tokens;  /* n_tokens texts (BPE: in byte-to-unicode mapped form) */
    const size_t *token_lens;   /* n_tokens lengths, or NULL */
    const float *scores;        /* n_scores SPM merge scores, or NULL (all 0) */
    size_t n_scores;            /* must equal n_tokens when scores != NULL */
    const int32_t *types;       /* n_types ENG_TOKTYPE_* values, or NULL (all NORMAL) */
    size_t n_types;             /* must equal n_tokens when types != NULL */
    const char *const *merges;  /* BPE: n_merges "left right" strings, rank = index */
    const size_t *merge_lens;   /* n_merges lengths, or NULL */
    size_t n_merges;
    int32_t bos_id, eos_id, unk_id, eot_id; /* -1 = none */
    int add_bos, add_eos;       /* policy applied when tokenizing with add_special */
    int add_space_prefix;       /* SPM: prefix '▁' to the text (and after special tokens) */
    int rstrip_special;         /* white space after a special token is dropped (llama.cpp does
                                 * this for Phi-3, except after <unk>, <s>, <|endoftext|>) */
    const char *chat_template;  /* tokenizer.chat_template (Jinja source), or NULL */
    size_t chat_template_len;
} eng_vocab_desc;

/* Builds a vocabulary from d, validating it: counts match, ids in range, every merge names
 * two known tokens, known pre-tokenizer (else ENG_ERR_UNSUPPORTED naming it). On failure *out
 * is NULL and err holds one line. */
eng_status eng_vocab_create(const eng_vocab_desc *d, eng_vocab **out,
                            char *err, size_t errlen) ENG_WUR;

void eng_vocab_free(eng_vocab *v); /* NULL is a no-op */

/* The vocabulary of a GGUF file alone (a whole model or a vocabulary-only file; tensors are
 * not read), with the BOS/EOS policy eng_model_load would give it. Errors as eng_model_load's
 * for the tokenizer keys; *out is NULL on failure and err holds one line. */
eng_status eng_vocab_load(const char *path, eng_vocab **out, char *err, size_t errlen) ENG_WUR;

eng_vocab_kind eng_vocab_get_kind(const eng_vocab *v);
size_t eng_vocab_n_tokens(const eng_vocab *v);
/* Token text as stored (not NUL-terminated); NULL when id is out of range. */
const char *eng_vocab_token_text(const eng_vocab *v, int32_t id, size_t *len);
int eng_vocab_token_type(const eng_vocab *v, int32_t id); /* -1 when out of range */
int32_t eng_vocab_bos(const eng_vocab *v);
int32_t eng_vocab_eos(const eng_vocab *v);
int eng_vocab_add_bos(const eng_vocab *v);
int eng_vocab_add_eos(const eng_vocab *v);
/* The GGUF's tokenizer.chat_template (Jinja source, NUL-terminated), or NULL when absent. */
const char *eng_vocab_chat_template(const eng_vocab *v);
/* The same for a loaded model. */
const char *eng_model_chat_template(const eng_model *m);

/* Tokenizes len bytes. add_special: prepend BOS / append EOS as the vocab's add_bos/add_eos
 * policy says. parse_special: match control, user-defined and unknown token texts in the
 * input (longest first). On success *ids is malloc'd (caller frees; non-NULL even when
 * *n == 0). Errors: ENG_ERR_ARG, ENG_ERR_RANGE (input over 1 GiB, or a byte with neither a
 * token nor unk), ENG_ERR_NOMEM. */
eng_status eng_vocab_tokenize(const eng_vocab *v, const char *text, size_t len,
                              int add_special, int parse_special, int32_t **ids, size_t *n,
                              char *err, size_t errlen) ENG_WUR;

/* Whole-sequence detokenization (eng_detokenize) on a vocabulary. Ids out of range are
 * ENG_ERR_RANGE. */
eng_status eng_vocab_detokenize(const eng_vocab *v, const int32_t *ids, size_t n, int strip_first,
                                char **out, size_t *len) ENG_WUR;

/* The bytes token id stands for (*len of them, not NUL-terminated): llama_token_to_piece with
 * special = false and no strip. NULL when id is out of range. */
const char *eng_vocab_piece(const eng_vocab *v, int32_t id, size_t *len);

/* Streaming detokenizer on a vocabulary (eng_detok_create wraps it); the vocab is borrowed. */
eng_detok *eng_vocab_detok_create(const eng_vocab *v, int strip_first);

/* End of generation: EOS, EOT, and the chat end markers "<|im_end|>", "<|eot_id|>",
 * "<|endoftext|>", "<|end_of_text|>", "<|eom_id|>" when the vocabulary has them. */
int eng_vocab_is_eog(const eng_vocab *v, int32_t id);

/* ---- context and KV cache ----
 * A context holds one sequence. Its KV cache is an array of cells; cell i holds the K and V
 * of the i-th token of the sequence at an explicit RoPE position. Tokens evaluated later
 * attend to every filled cell before them (cells are in sequence order whatever their
 * positions). K is stored after RoPE; V never is rotated. */

typedef struct eng_ctx_params {
    int n_ctx;        /* cells; 0 = the model's training context (negative: ENG_ERR_ARG) */
    int n_threads;    /* 0 = all online cores (negative: ENG_ERR_ARG) */
    int kv_f32;       /* 0: f16 cache (default, as llama.cpp); 1: f32 cache */
} eng_ctx_params;

typedef struct eng_ctx eng_ctx;

eng_status eng_ctx_create(eng_model *m, const eng_ctx_params *p, eng_ctx **out,
                          char *err, size_t errlen) ENG_WUR;
void eng_ctx_free(eng_ctx *c);
/* Readies the forward pass's row buffers for batches of up to rows tokens (at most the 2048
 * a pass takes at once; the buffers grow on demand otherwise, to the largest batch yet) and
 * faults in their pages, so that a process which times its passes need not pay for fresh
 * memory in the first one. ENG_ERR_NOMEM when they cannot be had. */
eng_status eng_ctx_reserve_rows(eng_ctx *c, int rows) ENG_WUR;

int eng_kv_len(const eng_ctx *c);        /* filled cells */
int32_t eng_kv_next_pos(const eng_ctx *c); /* position after the last filled cell (0 if empty) */
void eng_kv_clear(eng_ctx *c);
eng_status eng_kv_truncate(eng_ctx *c, int n_cells) ENG_WUR;

/* Batched prefill of n tokens into cells kv_len..kv_len+n-1. pos: n explicit positions, or
 * NULL for next_pos, next_pos+1, ... logits: n_vocab floats for the last token (or NULL);
 * all_logits: n*n_vocab floats, one row per token (or NULL). The result for a token does
 * not depend on how the sequence was split into prefill calls. */
eng_status eng_prefill(eng_ctx *c, const int32_t *tokens, const int32_t *pos, size_t n,
                       float *logits, float *all_logits) ENG_WUR;

/* Evaluates held cells together with new tokens, reading the weights once for both. A loader
 * that places documents after a head (BOS, a system prompt) can commit the head's cells unfilled
 * (eng_kv_commit), import the documents after them, and then evaluate the head with the prompt
 * in one pass. Cells [cell0, cell0 + n_held) are recomputed from held (their tokens, at the
 * positions committed), each attending to the cache up to its own cell; then n tokens are
 * prefilled after the filled cells as eng_prefill does (logits: the last one's, or NULL). Every
 * result has the bits that prefills in sequence order give, provided no cell between the held
 * ones and the new ones depends on what the held cells contain (imported cells do not). */
eng_status eng_prefill_held(eng_ctx *c, int cell0, const int32_t *held, int n_held, const int32_t *tokens,
                            size_t n, float *logits) ENG_WUR;

/* One decode step (the fast matrix-vector path): token at position pos (-1 = next_pos; another
 * negative is ENG_ERR_ARG). */
eng_status eng_decode(eng_ctx *c, int32_t token, int32_t pos, float *logits) ENG_WUR;

/* Bytes of one token's K plus V over all layers in the f16 exchange layout. */
size_t eng_kv_token_bytes(const eng_model *m);

/* Exchange layout, per layer: k and v each (n, n_head_kv * head_dim) as f16 bit patterns,
 * K already rotated for the cells' positions. export copies cells [cell0, cell0+n). */
eng_status eng_kv_export_layer(const eng_ctx *c, int layer, int cell0, int n,
                               uint16_t *k, uint16_t *v) ENG_WUR;
/* Writes K and V of cells [cell0, cell0+n) of one layer. Cells must be imported in order:
 * cell0 <= kv_len. Call eng_kv_commit once all layers are written. */
eng_status eng_kv_import_layer(eng_ctx *c, int layer, int cell0, int n,
                               const uint16_t *k, const uint16_t *v) ENG_WUR;
/* Same, with K re-rotated by delta on its way into the cache (the bits eng_rope_rerotate_f16
 * gives, without a separate pass or copy); the loader's path for a document placed at another
 * position than it was computed for. Commit the cells at their new positions. */
eng_status eng_kv_import_layer_rerotated(eng_ctx *c, int layer, int cell0, int n, const uint16_t *k,
                                         const uint16_t *v, int32_t delta) ENG_WUR;
/* Where one layer's K and V of cells [cell0, cell0+n) live, to be filled in place (a loader
 * decoding straight into the cache). The cache keeps each kv head's cells together: kv head
 * h's vectors for these cells are n rows of head_dim f16 one after another, starting at
 * *k + h * *head_stride (V likewise from *v), K rotated for the positions the cells will be
 * committed with. Only cells not yet filled (cell0 >= kv_len) may be written this way; commit
 * them with eng_kv_commit in order. ENG_ERR_UNSUPPORTED when the cache is not f16. */
eng_status eng_kv_rows_f16(eng_ctx *c, int layer, int cell0, int n, uint16_t **k, uint16_t **v,
                           size_t *head_stride) ENG_WUR;
/* Marks cells [cell0, cell0+n) filled with positions pos0, pos0+1, ... (kv_len becomes
 * cell0+n). */
eng_status eng_kv_commit(eng_ctx *c, int cell0, int n, int32_t pos0) ENG_WUR;

/* Re-rotates K of cells [cell0, cell0+n) in every layer by delta positions: one rotation by
 * delta * theta_i per pair in f32 (YaRN-corrected theta when the model uses YaRN), then
 * rounded to the cache type; V untouched; the cells' positions grow by delta. */
eng_status eng_kv_rerotate(eng_ctx *c, int cell0, int n, int32_t delta) ENG_WUR;
/* Same rotation applied to an exchange-layout buffer (n tokens, one layer's K), so a loader
 * can rotate chunks before import. */
void eng_rope_rerotate_f16(const eng_model *m, uint16_t *k, int n, int32_t delta);
/* Selective recompute (CacheBlend) of cells [cell0, cell0+n), already filled, whose tokens
 * are tokens[0..n): a document loaded after a prefix it was not computed after. Layer 0 is
 * recomputed for all of them at their positions; then, per window of up to 2048 cells, the
 * ceil(frac * window) cells whose layer-1 K and V (from the fresh layer 0) deviate most from
 * the cached ones (squared distance) are recomputed at every further layer, each attending to
 * the cache as it stands up to its own cell (the real prefix, the loaded cells, the cells
 * already recomputed); the others keep their cached K/V at layers 1 and up. frac 1 computes
 * what a prefill of the same tokens after the same cache computes, bit for bit. *n_kept (may
 * be NULL) gets the number of cells recomputed at every layer. */
eng_status eng_kv_blend(eng_ctx *c, const int32_t *tokens, int cell0, int n, double frac, int *n_kept) ENG_WUR;

/* ---- sampling ---- */

typedef struct eng_sampler eng_sampler;
/* temp <= 0: greedy (argmax, lowest id on ties). top_k <= 0: off. top_p >= 1: off. */
eng_sampler *eng_sampler_create(float temp, int top_k, float top_p, uint64_t seed);
int32_t eng_sample(eng_sampler *s, const float *logits, int n_vocab);
void eng_sampler_free(eng_sampler *s);

/* ---- weight kernels (engine/kernels/quant*.c) ----
 * Public for bench/bench_quant.c, which measures them apart from a model; eng_decode calls
 * them itself. type is a GGML_T_* value of engine/gguf.h. */

/* y[r] = dot(row r of W, x) for r in [r0, r1). W: nrows rows of ncols elements of `type`,
 * row_bytes apart. x: ncols floats. Kernels of the block types (Q4_0..Q8_0, Q2_K..Q6_K)
 * quantize x internally to Q8, as ggml does; results then match ggml's to within that
 * rounding. ncols must be a multiple of the block size (else y is left untouched).
 * Thread-safe; each call quantizes x itself (O(ncols), on the stack up to 16384 columns), so
 * threads may split [r0, r1). */
void eng_matvec(uint32_t type, const void *W, size_t row_bytes, int64_t ncols,
                const float *x, float *y, int64_t r0, int64_t r1);

/* Which kernels eng_matvec / the row conversions use now: "avx2" or "scalar". */
const char *eng_quant_kernels(void);
/* Test and benchmark hook: on = 1 forces the portable scalar kernels even where the CPU has
 * AVX2 (process-wide, not thread-safe against running kernels); 0 restores the CPU's choice.
 * Returns the previous setting. */
int eng_quant_force_scalar(int on);

/* Number of cores the engine uses by default. */
int eng_default_threads(void);

/* For programs (a library never installs it by itself): makes SIGBUS, which is what touching a
 * page of a memory-mapped file (model, blob) that was truncated or became unreadable under us
 * gives, print "PROG: a file mapped into memory (model or blob) was truncated or became
 * unreadable while in use" on stderr and exit with status 2 instead of dumping core. */
void eng_exit_on_sigbus(const char *prog);

#endif
