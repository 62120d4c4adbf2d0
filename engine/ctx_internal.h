/* ctx_internal.h: the inference context shared by engine/ctx.c (KV cache), forward.c (the
 * graph), attention.c and attention_decode.c, rope.c and pool.c (worker threads). Not part of engine.h. */
#ifndef KVPUB_CTX_INTERNAL_H
#define KVPUB_CTX_INTERNAL_H

#include "engine/engine.h"
#include "engine/model_internal.h"

#include <stddef.h>
#include <stdint.h>

/* Attention walks keys in blocks of this many cells, aligned to absolute cell indices. */
enum { ENG_KEY_BLOCK = 64 };
/* Most rows one forward pass holds (longer prompts run in several passes). */
enum { ENG_MAX_ROWS = 2048 };

/* ---- worker threads ---- */
typedef struct eng_pool eng_pool;
/* Computes units [i0, i1) on thread ith (0 = the caller; ith < eng_pool_size picks per-thread
 * scratch). A unit's result must not depend on which thread computes it or with which others. */
typedef void (*eng_pool_fn)(void *arg, int i0, int i1, int ith);
eng_status eng_pool_create(int n_threads, eng_pool **out) ENG_WUR;
void eng_pool_free(eng_pool *p);
/* Runs fn over units [0, units), handed out grain at a time to whichever threads are running
 * (the caller included); returns when all are done. */
void eng_pool_for(eng_pool *p, int units, int grain, eng_pool_fn fn, void *arg);
/* A grain that gives each thread about per_thread claims of units (at least 1). */
int eng_pool_grain(const eng_pool *p, int units, int per_thread);
int eng_pool_size(const eng_pool *p);

/* ---- RoPE (ggml's rope_yarn, in f32 as ggml computes it) ---- */
typedef struct eng_rope_cfg {
    eng_rope_type type;
    int n_rot;
    float theta_scale;      /* freq_base^(-2/n_rot) */
    float freq_scale;
    float ext_factor;
    float attn_factor;
    float corr_dims[2];     /* YaRN ramp bounds (dims) */
    const float *freq_factors; /* (n_rot / 2) pair i turns at theta_i / f[i] (rope_freqs), or NULL */
} eng_rope_cfg;

/* freq_factors: the model's rope_freqs (eng_weights), or NULL; borrowed. */
void eng_rope_cfg_init(const eng_rope *r, const float *freq_factors, eng_rope_cfg *cfg);
/* cs: (n_rot/2, 2) cos, sin of position p; with_mscale 0 omits the YaRN magnitude factor (for
 * re-rotation: K already carries it). */
void eng_rope_cos_sin(const eng_rope_cfg *cfg, float p, int with_mscale, float *cs);
/* Rotates one head vector x (n_rot) in place. */
void eng_rope_apply(const eng_rope_cfg *cfg, const float *cs, float *x);

/* K re-rotation by a position delta: cos/sin of delta * theta_i computed once, laid out for the
 * kernels (NEOX: c[i], s[i] per pair i; normal: each pair's values at both of its members). */
enum { ENG_RERO_MAX_ROT = 512 };
typedef struct eng_rerot {
    eng_rope_type type;
    int n_rot;               /* 0: nothing to rotate */
    int32_t delta;
    float c[ENG_RERO_MAX_ROT], s[ENG_RERO_MAX_ROT];
} eng_rerot;
void eng_rerot_init(const eng_rope_cfg *cfg, int32_t delta, eng_rerot *t);
/* rows head vectors of hd f16 (rows * hd contiguous) from src to dst (may be equal): the first
 * n_rot dims rotated (f32 per pair, rounded to f16: the bits of eng_rope_apply), the rest
 * copied. AVX2+F16C when the CPU has them, else scalar; same bits either way. */
void eng_rerot_f16(const eng_rerot *t, const uint16_t *src, uint16_t *dst, size_t rows, int hd);

/* ---- the context ---- */
struct eng_ctx {
    eng_model *m;
    const eng_info *hp;
    const eng_weights *w;
    int n_ctx;
    int kv_f32;
    int kv_dim;              /* n_head_kv * head_dim */
    void **k, **v;           /* per layer: (n_head_kv, n_ctx, head_dim) f16 bits, or f32 when
                              * kv_f32: each kv head's cells together (eng_kv_off) */
    void *kv_mem;            /* where k and v point: one base_alloc_big region */
    size_t kv_bytes;
    int32_t *pos;            /* (n_ctx) position of each cell */
    int n_cells;             /* filled cells */
    eng_rope_cfg rope;
    eng_pool *pool;

    /* forward scratch, sized for cap_rows token rows, grown on demand (never per token) */
    int cap_rows;
    void *rows_mem;          /* where the buffers below point: one base_alloc_big region */
    size_t rows_bytes;
    float *x;                /* (rows, n_embd) residual stream */
    float *xn;               /* (rows, n_embd) normed input / projection output */
    float *q;                /* (rows, n_head * head_dim) */
    float *kk, *vv;          /* (rows, kv_dim) */
    float *att;              /* (rows, n_head * head_dim) */
    float *g, *u;            /* (rows, n_ff) */
    float *xr;               /* (rows, max(n_embd, n_head*head_dim, n_ff)) rounded activations */
    float *cs;               /* (rows, n_rot) cos/sin per token */
    float *panels;           /* GEMM panels (forward.c): packed X (cap_rows, widest K rounded
                              * to 8), then per thread a chunk of dequantized weight rows */
    size_t panels_cap;       /* floats */
    float *att_scratch;      /* per thread attention scratch (key block in f32, accumulators) */
    size_t att_scratch_per;  /* floats per thread */
    eng_rerot rerot;         /* last re-rotation table (ctx.c), valid when rerot_ok */
    int rerot_ok;
};

/* Where cell `cell` of kv head h starts in a layer's K or V (elements). A head's cells are
 * head_dim apart, so attention streams each head's keys and values instead of gathering one
 * head_dim slice from every kv_dim row (twice the time of a stream on Zen 5). */
static inline size_t eng_kv_off(const eng_ctx *c, int cell, int h)
{
    return ((size_t)h * (size_t)c->n_ctx + (size_t)cell) * (size_t)c->hp->head_dim;
}

/* Blocked causal attention for nq query rows whose cells are c0..c0+nq-1, or cells[0..nq) when
 * cells is not NULL (ascending: the rows a selective recompute refreshes), already written to
 * the cache for layer il: q (nq, n_head, head_dim) with row stride ldq floats, out likewise.
 * Each query's result depends only on the cache contents up to its own cell. */
eng_status eng_attention(eng_ctx *c, int il, const float *q, size_t ldq, int c0, const int *cells, int nq,
                         float *out, size_t ldo) ENG_WUR;
size_t eng_attention_scratch_floats(const eng_info *hp);
/* The single query of a decode step at `cell` (already written to the cache): q (n_head,
 * head_dim) -> out (n_head, head_dim). Faster for one query than eng_attention; its results
 * may differ from eng_attention's in the last bits. */
eng_status eng_attention_decode(eng_ctx *c, int il, const float *q, int cell, float *out) ENG_WUR;

/* ---- norm.c ---- */
/* y = the model's norm of x (n floats) times w, plus b when b is given (LayerNorm only); y may
 * be x. */
void eng_norm_row(const eng_info *hp, const float *x, const float *w, const float *b, int n, float *y);

/* ---- forward.c: the pass, and its pieces for blend.c ---- */
/* Evaluates n tokens into cells n_cells.. (scratch row i holds cell n_cells + i). out_rows:
 * how many of the last rows want logits (0, 1 or n), written to logits (n_vocab per row). */
eng_status eng_forward(eng_ctx *c, const int32_t *tokens, const int32_t *pos, int n, int decode, int out_rows,
                       float *logits) ENG_WUR;
/* Logits of the last out_rows of the n scratch rows, after eng_fwd_layers ran every layer. */
void eng_fwd_logits(eng_ctx *c, int n, int out_rows, float *logits);
/* Scratch rows 0..n-1 get the embeddings of tokens and the RoPE tables of pos. */
eng_status eng_fwd_begin(eng_ctx *c, const int32_t *tokens, const int32_t *pos, int n) ENG_WUR;
/* Layers [il0, il1) over the n scratch rows, row i at cell c0 + i or cells[i] (ascending):
 * each layer's K and V are stored in those cells, each row attends to the cells up to its own. */
eng_status eng_fwd_layers(eng_ctx *c, int n, int c0, const int *cells, int il0, int il1, int decode) ENG_WUR;
/* Layer il's K (normed, RoPE'd) and V of the n scratch rows into c->kk and c->vv; the cache is
 * not touched. */
void eng_fwd_kv(eng_ctx *c, int il, int n);

#endif
