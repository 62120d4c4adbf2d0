/* model_internal.h: what the engine's own files may know about a loaded model beyond
 * engine.h: the bound weight tensors of the llama-family graph. struct eng_model itself is
 * defined in engine/model.c. */
#ifndef KVPUB_MODEL_INTERNAL_H
#define KVPUB_MODEL_INTERNAL_H

#include "engine/engine.h"
#include "engine/engine_internal.h"

#include <stddef.h>
#include <stdint.h>

/* A weight matrix as the GGUF stores it: nrows rows of ncols elements of a ggml type, rows
 * row_bytes apart, mmap'd. Products are y = W x, so nrows is the output width. */
typedef struct eng_wmat {
    const char *name;  /* tensor name, for messages */
    const void *data;  /* into the mapping */
    uint32_t type;
    int64_t nrows;     /* ggml ne[1] */
    int64_t ncols;     /* ggml ne[0] (contiguous) */
    size_t row_bytes;
} eng_wmat;

/* One transformer block. Norm weights and biases are small, so they are converted to f32
 * copies at load whatever their stored type; NULL where the architecture has none. */
typedef struct eng_layer {
    const float *attn_norm;      /* (n_embd) */
    const float *ffn_norm;       /* (n_embd); NULL: parallel residual (stablelm 2 12B), the FFN
                                    reads attn_norm's output */
    const float *attn_norm_b;    /* (n_embd) LayerNorm biases (stablelm), else NULL */
    const float *ffn_norm_b;
    const float *q_norm, *k_norm;/* per-head norm of Q and K, or NULL: qwen3 RMSNorm with one
                                    (head_dim) weight for all heads; stablelm LayerNorm with a
                                    weight per head (head_dim x heads) */
    const float *bq;             /* (n_head * head_dim): qwen2, else NULL */
    const float *bk, *bv;        /* (n_head_kv * head_dim): qwen2, else NULL */
    eng_wmat wq;                 /* (n_head * head_dim, n_embd) */
    eng_wmat wk, wv;             /* (n_head_kv * head_dim, n_embd) */
    eng_wmat wo;                 /* (n_embd, n_head * head_dim) */
    eng_wmat gate, up;           /* (n_ff, n_embd) */
    eng_wmat down;               /* (n_embd, n_ff) */
} eng_layer;

typedef struct eng_weights {
    eng_wmat tok_embd;           /* (n_vocab, n_embd) */
    eng_wmat output;             /* (n_vocab, n_embd): output.weight, or tok_embd when tied */
    const float *output_norm;    /* (n_embd) */
    const float *output_norm_b;  /* (n_embd) LayerNorm bias (stablelm), else NULL */
    const float *rope_freqs;     /* (n_rot / 2) llama3 RoPE frequency factors, or NULL */
    eng_layer *layers;           /* n_layer */
} eng_weights;

const eng_weights *eng_model_weights(const eng_model *m);
const struct eng_vocab *eng_model_vocab(const eng_model *m);
const gguf_file *eng_model_gguf(const eng_model *m);
const char *eng_model_path(const eng_model *m);

#endif
