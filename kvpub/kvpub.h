/* kvpub.h: the product's flow as a library, above engine, format, store, crypto and fetch and
 * below the tools: the model-identity record and the one check that refuses a blob made for
 * another model; publishing a document (tokenize, prefill after BOS, export, encode, sign,
 * index); loading verified blobs into an engine context after a prefix; the one decode loop;
 * and the compare measurement (full prefill vs loaded). Nothing here prints or exits:
 * functions return a kvp_status and write the detail into a caller's err buffer. */
#ifndef KVPUB_KVPUB_H
#define KVPUB_KVPUB_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/kvcrypto.h"
#include "engine/engine.h"
#include "format/kvblob.h"
#include "store/kvstore.h"

#define KVP_WUR __attribute__((warn_unused_result))

/* Stable values (never renumber). */
typedef enum kvp_status {
    KVP_OK = 0,
    KVP_ERR_USAGE = 1,    /* bad argument */
    KVP_ERR_IO = 2,       /* local file or directory */
    KVP_ERR_NOMEM = 3,
    KVP_ERR_VERIFY = 4,   /* the blob failed verification; the kvb_status says which way */
    KVP_ERR_REFUSED = 5,  /* a verified blob that does not fit: other model, tokenizer, RoPE */
    KVP_ERR_ENGINE = 6,   /* the engine failed (context full, fingerprinting, ...) */
    KVP_ERR_TOO_LONG = 7, /* a document longer than the model's context */
    KVP_ERR_FORMAT = 8,   /* encoding, signing or re-reading a blob */
    KVP_ERR_STORE = 9,    /* the store could not index a blob */
} kvp_status;

/* "ok", "usage", ...; never NULL. */
const char *kvp_status_str(kvp_status st);

/* ---- the model-identity record ----
 * What a blob's KV depends on: the model and tokenizer fingerprints, the KV shape and RoPE as
 * the prefill applied them, and where the document starts. Built from a loaded model or from
 * a manifest; a blob is usable exactly when kvp_identity_check passes. */

#define KVP_ARCH_MAX 64

typedef struct kvp_identity {
    uint8_t model_fp[32];          /* eng_model_fingerprint */
    uint8_t tokenizer_fp[32];      /* eng_tokenizer_fingerprint */
    char arch[KVP_ARCH_MAX];       /* "llama", "qwen2", "qwen3", "stablelm" */
    uint32_t n_layer, n_embd, n_head, n_head_kv, head_dim;
    /* RoPE in the manifest's vocabulary; the model's float values widened to double, so they
     * are compared as float */
    kvb_rope_type rope_type;
    uint32_t rope_n_rot;
    double rope_freq_base, rope_freq_scale;
    kvb_rope_scaling rope_scaling;
    uint32_t rope_n_ctx_orig;
    double yarn_ext_factor, yarn_attn_factor, yarn_beta_fast, yarn_beta_slow;
    uint32_t pos0;                 /* position of the document's first token (1 after BOS) */
    uint32_t rope_n_freq_factors;  /* llama3 rope_freqs: n_rot / 2 factors, or 0 */
    float rope_freq_factors[KVB_MAX_FREQ_FACTORS];
    /* for messages only, not compared (the fingerprints cover them): known from a model,
     * empty and 0 from a manifest */
    char tokenizer[16];
    int32_t n_vocab;
} kvp_identity;

/* Fills id from a loaded model: fingerprints (eng_model_fingerprint: cached, else the weights
 * are hashed), shape, RoPE, and pos0 = 1 when the tokenizer adds BOS. Returns KVP_OK, or
 * KVP_ERR_ENGINE with err saying why the fingerprint could not be made. */
kvp_status kvp_identity_from_model(eng_model *m, kvp_identity *id, char *err, size_t errlen) KVP_WUR;

/* Writes id's fields into the model, tokenizer and RoPE fields of a manifest being written.
 * m->model_arch borrows id->arch: id must outlive m's use. Other fields are left alone. */
void kvp_identity_to_manifest(const kvp_identity *id, kvb_manifest *m);

/* Fills id from a (parsed, verified) manifest. */
void kvp_identity_from_manifest(const kvb_manifest *m, kvp_identity *id);

/* Checks that a blob made for `blob` can be used by `model` placed delta positions later than
 * it was computed: model fingerprint, tokenizer fingerprint, KV shape, RoPE parameters, and
 * that delta can be applied exactly. Returns KVP_OK or KVP_ERR_REFUSED with a one-line reason
 * naming both sides, e.g. "model mismatch: blob wants sha256:ab12..., you loaded
 * sha256:cd34... (qwen3, 28 layers)". */
kvp_status kvp_identity_check(const kvp_identity *blob, const kvp_identity *model, int32_t delta,
                              char *err, size_t errlen) KVP_WUR;

/* kvp_identity_check of the identity a manifest states. */
kvp_status kvp_check_manifest(const kvb_manifest *m, const kvp_identity *model, int32_t delta,
                              char *err, size_t errlen) KVP_WUR;

/* ---- the store's index row of a blob ---- */

/* The strings a kvs_blob borrows (shape and RoPE JSON), owned by this struct. */
typedef struct kvp_blobinfo {
    kvs_blob blob;   /* strings point into m and into the two buffers below */
    char *shape_json;
    char *rope_json;
} kvp_blobinfo;

/* Fills bi from m (borrowed: must outlive bi), the signer key id and a price: what the store
 * indexes of a blob, the same for `kvpubd publish` and the daemon's uploads. The blob id and
 * size are left zero (store/ computes them from the bytes). Returns 0, or -1 out of memory. */
int kvp_blobinfo_fill(kvp_blobinfo *bi, const kvb_manifest *m, const uint8_t key_id[KVC_KEYID_LEN],
                      uint64_t price);
void kvp_blobinfo_clear(kvp_blobinfo *bi); /* frees the JSON texts; bi may be filled again */

/* base_tmpfd in STORE/tmp/, for a blob being written (publish, upload): it vanishes with the
 * process, so a crash or a refused blob never leaves anything behind. Returns the descriptor,
 * or -1 with errno set. */
int kvp_store_tmpfd(const char *store_dir);

/* ---- publishing a document ---- */

#define KVP_DOC_MAX ((size_t)64 << 20) /* bytes of one document file */
#define KVP_CHUNK_BYTES ((uint64_t)16 << 20) /* default decoded size of a chunk, at most */

/* Tokens per chunk when the publisher names none: the largest power of two from 16 to 4096
 * whose decoded chunk (n_layer x K and V x kv_dim f16 values per token) fits KVP_CHUNK_BYTES
 * (16 tokens if none does). A loader holds a few chunks in fresh buffers and hashes a chunk
 * whole before decoding it, so chunks of a few MiB start decoding sooner and cost less memory
 * than a fixed token count that grows with the model. */
uint32_t kvp_default_chunk_tokens(uint32_t n_layer, uint32_t kv_dim);

/* A document read and tokenized, ready to publish. */
typedef struct kvp_document {
    const char *path;      /* borrowed from the caller */
    char *text;            /* owned: the file's bytes, NUL-terminated */
    size_t len;
    uint8_t sha256[32];    /* of the bytes */
    int32_t *ids;          /* owned: the document's tokens (no BOS) */
    size_t n_tokens;
} kvp_document;

/* Reads path (a regular file of at most KVP_DOC_MAX bytes), hashes it and tokenizes it with
 * model (special-token strings count as text). Refuses a document without tokens
 * (KVP_ERR_USAGE) or one that does not fit the model's context after BOS (KVP_ERR_TOO_LONG);
 * KVP_ERR_IO, KVP_ERR_ENGINE otherwise. d is always safe to kvp_document_clear. */
kvp_status kvp_document_read(const eng_model *model, const char *path, kvp_document *d,
                             char *err, size_t errlen) KVP_WUR;
void kvp_document_clear(kvp_document *d); /* NULL is a no-op */

/* Called after each prefill batch of a document: done of total tokens. */
typedef void (*kvp_progress_fn)(void *user, size_t done, size_t total);

/* The furthest a publish may set its blob's expiry: 100 years (as kvpubd listing set). */
#define KVP_MAX_EXPIRES_S (100ull * 366 * 86400)

typedef struct kvp_publish_opts {
    eng_model *model;
    const kvp_identity *identity; /* the model's, from kvp_identity_from_model */
    const kvc_key *key;           /* the signer (private key) */
    kvs_store *store;             /* where the blob is indexed */
    const char *store_dir;        /* that store's directory: the blob is written in its tmp/ */
    kvb_codec codec;
    uint32_t chunk_tokens;        /* 0 = kvp_default_chunk_tokens */
    uint64_t price;               /* smallest currency unit; 0 = free */
    uint64_t expires_in;          /* seconds from now; 0 = never; at most KVP_MAX_EXPIRES_S */
    const char *title;            /* NULL = the file name */
    const char *source_uri;       /* signed in the manifest; NULL = none (never the local path) */
    const char *media_type;       /* NULL = text/markdown for *.md, else text/plain */
    const char *llama_state;      /* a llama.cpp sequence state holding [BOS, context, document]:
                                   * its KV is published instead of a prefill (kvp_llama_state_read) */
    const int32_t *context_ids;   /* the declared context, prefilled between BOS and the document
                                   * and named in the manifest (its KV is not in the blob) */
    size_t n_context;             /* 0 = none: the document follows BOS */
    int n_threads;                /* engine threads; 0 = all cores */
    kvp_progress_fn progress;     /* NULL = none */
    void *user;                   /* passed to progress */
} kvp_publish_opts;

typedef struct kvp_publish_result {
    uint8_t id[32];               /* the blob id (SHA-256 of the file) */
    uint64_t bytes;               /* its size */
    int skipped;                  /* 1 = this key already listed (document, model, codec, context) */
} kvp_publish_result;

/* Publishes d: unless this key already lists (document, model, codec, context), prefills
 * [BOS, context, d] (a context that, with d, does not fit the model: KVP_ERR_TOO_LONG) in
 * a fresh context (or reads o->llama_state's KV, checked to be exactly that sequence), exports the KV chunk by chunk, encodes and signs it into a blob in the
 * store's tmp/ and indexes it from the blob's own manifest. Nothing is left behind on
 * failure. Statuses: KVP_ERR_USAGE, KVP_ERR_IO, KVP_ERR_NOMEM, KVP_ERR_ENGINE,
 * KVP_ERR_FORMAT, KVP_ERR_STORE, and with llama_state KVP_ERR_REFUSED. */
kvp_status kvp_publish_document(const kvp_publish_opts *o, const kvp_document *d,
                                kvp_publish_result *res, char *err, size_t errlen) KVP_WUR;

/* ---- loading a blob into an engine context ---- */

/* What one load cost, in seconds of wall time on the calling thread. */
typedef struct kvp_load_stats {
    double read_s;        /* reading the file; the chunks of a regular file are read by the
                             decode workers (kvb_reader_feed_fd): their summed time, which ran
                             beside verify_decode_s */
    double verify_decode_s; /* inside the reader (signature, hashes, waiting for decode workers) */
    double rerotate_s;    /* importing with K re-rotated on the way in (delta != 0: the rotation
                             is fused into the copy, eng_kv_import_layer_rerotated) */
    double import_s;      /* plain imports (delta == 0) and commits */
    double total_s;
    double cpu_s;         /* CPU time of the whole process during the load (all threads) */
    uint64_t file_bytes;  /* blob bytes read */
    int mapped;           /* 1 = the file was mapped and hashed from the mapping, not read */
    uint64_t raw_bytes;   /* decoded f16 K+V bytes imported */
    uint32_t n_tokens, n_chunks;
    int32_t pos, delta;   /* first position used, and the re-rotation applied */
    int n_threads;        /* decode workers */
    /* the blob's declared context against the tokens before it (kvp_load_opts.before) */
    uint32_t n_context;   /* its length; 0 = the blob declares none */
    int context_exact;    /* 1 = the tokens before it are exactly the context: loaded unrotated,
                             as a full prefill computes it */
    char context_note[200]; /* when a declared context does not match: how, in one line */
    uint32_t n_recomputed; /* tokens recomputed at every layer (kvp_load_opts.recompute) */
    double recompute_s;   /* the recompute's time (with blend: layer 0 of all tokens too) */
    int decoded_copy;     /* 1 = read from the blob's decoded copy (KVB_DECODED_SUFFIX) */
    char copy_note[320];  /* when a decoded copy was there but the blob was read: why */
} kvp_load_stats;

/* How kvp_load_opts.recompute picks its tokens (docs/quality.md measures both). */
typedef enum kvp_recompute_method {
    KVP_RECOMPUTE_HEAD,  /* EPIC: the document's first tokens, prefilled before the rest is
                            imported (they carry the attention sink its own BOS gave them) */
    KVP_RECOMPUTE_BLEND, /* CacheBlend: after the import, layer 0 of every token, then the
                            tokens whose layer-1 K/V deviate most (eng_kv_blend) */
} kvp_recompute_method;

typedef struct kvp_load_opts {
    eng_model *model;
    eng_ctx *ctx;
    const kvp_identity *identity; /* the model's, from kvp_identity_from_model */
    const kvc_trust *trust;
    int64_t now;               /* expiry check time; 0 = time(NULL) */
    int n_threads;             /* decode workers; 0 = eng_default_threads() */
    const int32_t *before;     /* the tokens before the blob after BOS (prefix and earlier
                                  documents), compared with its declared context; may be NULL */
    size_t n_before;
    double recompute;          /* when the blob does not sit exactly where it was computed: this
                                  fraction of its tokens is recomputed at every layer, attending to
                                  the real prefix, and the rest loaded re-rotated; 0 = none, 1 = all
                                  (a full prefill of the document) */
    kvp_recompute_method method; /* which tokens: KVP_RECOMPUTE_HEAD (0) or _BLEND */
    int no_rerotate;           /* baseline for measurements only: keys keep the rotation of the
                                  positions they were computed at (wrong by delta) */
    int no_decoded_copy;       /* 1 = read the blob even when its decoded copy is beside it */
} kvp_load_opts;

/* Appends the blob at path to ctx: its tokens go to cells kv_len.. at positions
 * next_pos.., K re-rotated by delta = next_pos - pos0. Everything is verified (signature,
 * trust, revocation, expiry, chunk hashes, kvp_identity_check) before it is used; on any
 * failure ctx is truncated back to its previous length. On success *tokens (may be NULL) gets
 * the document's token ids (malloc'd, caller frees) and *n_tokens their count. st may be
 * NULL; *vst (may be NULL) gets the reader status when the result is KVP_ERR_VERIFY.
 * A regular file is read by the decode workers (pread, a few leaves at a time), or mapped
 * when one of its chunks is over 64 MiB (a chunk buffer per worker would cost too much);
 * KVPUB_BLOB_READ=map maps every regular file, =pread maps none, auto (or unset) decides as
 * said. Anything else (a pipe) is read(2) as it comes.
 * Statuses: KVP_ERR_VERIFY, KVP_ERR_REFUSED, KVP_ERR_ENGINE, KVP_ERR_IO, KVP_ERR_NOMEM,
 * KVP_ERR_USAGE (also for a KVPUB_BLOB_READ that is not map, pread or auto). */
/* A decoded copy beside the blob (PATH.decoded) is read instead, unless o->no_decoded_copy;
 * a copy that fails for any reason is passed over for the blob (st->copy_note says why), and
 * removed when its bytes are bad. */
kvp_status kvp_load_blob(const kvp_load_opts *o, const char *path, int32_t **tokens,
                         uint32_t *n_tokens, kvp_load_stats *st, kvb_status *vst,
                         char *err, size_t errlen) KVP_WUR;

/* ---- the loaded path: [BOS, prefix] prefilled, blobs loaded, prompt prefilled ---- */

/* Readies a fresh context for timing: the row buffers of a batch of n_rows are made and
 * faulted in, every cell but the last few is written (zeros), then copies of tok (n_rows of
 * them, at most 64) are prefilled in those, then the context is cleared, so no later step
 * pays for first-touch page faults or thread start-up. n_cells: the context's size; n_rows
 * (1 .. n_cells; clamped to that): the largest batch the timed work will prefill at once, as
 * the loaded path's pass of [BOS, prefix] and the prompt, or a full prefill's (up to 2048
 * tokens a pass). Returns KVP_OK, KVP_ERR_NOMEM or KVP_ERR_ENGINE ("warm-up: ..."). */
kvp_status kvp_ctx_warm_up(eng_ctx *c, const eng_model *m, size_t n_cells, int32_t tok, size_t n_rows,
                           char *err, size_t errlen) KVP_WUR;

typedef struct kvp_path {
    int32_t bos;                 /* prefilled first; -1 = none */
    const int32_t *prefix;       /* then these (may be NULL with n_prefix 0) */
    size_t n_prefix;
    const char *const *blobs;    /* local blob files, placed in this order after the prefix */
    int n_blobs;
    const int32_t *prompt;       /* prefilled after the documents; its last logits are kept
                                  * (n_prompt 0: the path ends with the documents, no logits) */
    size_t n_prompt;
} kvp_path;

/* What kvp_path_run filled; the arrays are the caller's, n_blobs entries each. */
typedef struct kvp_path_result {
    kvp_load_stats *ls;          /* per blob */
    int32_t **doc_tokens;        /* per blob: its token ids (malloc'd; the caller frees) */
    uint32_t *doc_n;
    int failed_blob;             /* the blob that was refused or failed; -1 = none */
    kvb_status vst;              /* how it failed verification, with KVP_ERR_VERIFY */
    double prefix_s, load_s, suffix_s;
    double ttft_s;               /* from the first prefill to the prompt's logits */
    int head_with_prompt;        /* [bos, prefix] was evaluated in the prompt's pass (suffix_s) */
} kvp_path_result;

/* Runs the loaded path in lo->ctx (empty, with room for every token): [bos, prefix], kvp_load_blob
 * of each blob, prefill of the prompt with its last logits in logits (n_vocab). Without
 * recompute (lo->recompute 0) no document attends to [bos, prefix] in this run, so their cells
 * are held and evaluated in the prompt's pass (eng_prefill_held): the weights are read once for
 * both, and the bits are those of prefills in order. Otherwise [bos, prefix] is prefilled first.
 * Statuses as kvp_load_blob (failed_blob says which), or KVP_ERR_ENGINE ("prefill of
 * BOS+prefix: ...", "prefill of the prompt: ..."), KVP_ERR_NOMEM. */
kvp_status kvp_path_run(const kvp_load_opts *lo, const kvp_path *p, float *logits,
                        kvp_path_result *r, char *err, size_t errlen) KVP_WUR;

/* The identical sequence for a full prefill: bos, prefix, each document's ids (from r), prompt.
 * *seq is malloc'd (caller frees), *n its length. Returns KVP_OK or KVP_ERR_NOMEM. */
kvp_status kvp_path_sequence(const kvp_path *p, const kvp_path_result *r, int32_t **seq,
                             size_t *n) KVP_WUR;

/* ---- decoding ---- */

/* Index of the largest of x[0..n) (the first one on ties): greedy decoding. */
int32_t kvp_argmax(const float *x, int n);

/* One token kvp_decode picked, as its callback sees it. */
typedef struct kvp_token {
    int i;                 /* 0.. ; -1 for the held-back text flushed after the last token */
    int32_t id;            /* -1 with i == -1 */
    int eog;               /* it ends generation: nothing follows */
    int more;              /* it will be fed back and another token picked */
    const float *logits;   /* (n_vocab) it was picked from; NULL with i == -1 */
    const char *text;      /* its bytes (complete UTF-8 only; may be 0 of them); NULL without
                              kvp_decode_opts.text and for an eog token */
    size_t len;
} kvp_token;

/* Returns 0 to go on, non-zero to stop after this token. */
typedef int (*kvp_token_fn)(void *user, const kvp_token *t);

typedef struct kvp_decode_opts {
    eng_model *model;
    eng_ctx *ctx;          /* holds the sequence so far; each picked token is appended */
    eng_sampler *sampler;  /* NULL = greedy (kvp_argmax) */
    int n_max;             /* tokens to pick at most */
    int text;              /* 1 = detokenize: kvp_token.text, and a last call with i == -1 */
    kvp_token_fn on_token; /* may be NULL */
    void *user;
} kvp_decode_opts;

typedef struct kvp_decode_stats {
    int n_tokens;          /* picked, end-of-generation token not counted */
    int n_decoded;         /* fed back through eng_decode */
    double first_s;        /* from the start to the first token picked */
    double decode_s;       /* inside eng_decode */
    double total_s;        /* the whole call, callbacks included */
} kvp_decode_stats;

/* The one sample/decode loop: logits (n_vocab) holds the next token's logits on entry and is
 * overwritten by each decode. Picks up to n_max tokens, stopping after an end-of-generation
 * token or when on_token returns non-zero. st may be NULL. Returns KVP_OK, KVP_ERR_NOMEM, or
 * KVP_ERR_ENGINE with err holding only the engine's status text (e.g. "context full"). */
kvp_status kvp_decode(const kvp_decode_opts *o, float *logits, kvp_decode_stats *st,
                      char *err, size_t errlen) KVP_WUR;

/* ---- compare: the loaded path against a full prefill ---- */

typedef struct kvp_compare_opts {
    eng_model *model;
    eng_ctx *loaded;       /* the loaded path, ready to pick its first token */
    eng_ctx *full;         /* an empty context with room for n_seq + n_gen tokens */
    const int32_t *seq;    /* the identical sequence: BOS, prefix, documents' ids, prompt */
    size_t n_seq;
    int n_gen;             /* positions to compare */
    int follow_full;       /* 0: the loaded path decodes greedily and the full path is fed its
                              tokens; 1: the other way round (the reference continuation, the
                              same tokens for every way of loading the same document) */
} kvp_compare_opts;

typedef struct kvp_compare_result {
    double full_prefill_s; /* prefill of seq in the full context */
    double sample_s;       /* picking the first token (counted in both paths' TTFT) */
    double full_ttft_s;    /* full_prefill_s + sample_s */
    double decode_s;       /* the leading path's decode time */
    int positions;         /* compared (the leading path's end-of-generation token included) */
    int32_t *tokens;       /* (positions) the leading path's greedy tokens; owned */
    double *kl;            /* (positions) KL(full || loaded) in nats; owned */
    double kl_mean, kl_max;
    int argmax_agree;      /* positions whose argmaxes agree */
    int first_disagreement; /* -1 when none */
    int bit_identical;     /* every logit of every position equal bit for bit */
} kvp_compare_result;

/* Prefills o->seq into o->full (timed), then decodes the loaded path greedily for up to
 * n_gen positions, teacher-forcing its tokens into the full path and comparing the two
 * next-token distributions at each. logits (n_vocab) holds the loaded path's next-token
 * logits on entry (overwritten). r is always safe to kvp_compare_result_clear. Returns
 * KVP_OK, KVP_ERR_USAGE, KVP_ERR_NOMEM, or KVP_ERR_ENGINE ("full prefill of N tokens: ...",
 * "decode: ..."). */
kvp_status kvp_compare(const kvp_compare_opts *o, float *logits, kvp_compare_result *r,
                       char *err, size_t errlen) KVP_WUR;
void kvp_compare_result_clear(kvp_compare_result *r); /* frees tokens and kl; NULL is a no-op */

/* ---- chat formats (chat.c) ----
 * The conversation a llama.cpp user's prompt holds, as llama_chat_apply_template renders the
 * GGUF's tokenizer.chat_template with its built-in formats (not Jinja): ChatML (Qwen), Llama 3,
 * Phi-3, and the [INST] family (Mistral v1/v3/v3-tekken/v7/v7-tekken, Llama 2 and variants),
 * each under llama.cpp's name for it. */

typedef enum kvp_chat_format {
    KVP_CHAT_NONE = 0, KVP_CHAT_CHATML, KVP_CHAT_LLAMA3, KVP_CHAT_PHI3,
    KVP_CHAT_MISTRAL_V1, KVP_CHAT_MISTRAL_V3, KVP_CHAT_MISTRAL_V3_TEKKEN, KVP_CHAT_MISTRAL_V7,
    KVP_CHAT_MISTRAL_V7_TEKKEN,
    KVP_CHAT_LLAMA2, KVP_CHAT_LLAMA2_SYS, KVP_CHAT_LLAMA2_SYS_BOS, KVP_CHAT_LLAMA2_SYS_STRIP, /* Llama 2 last */
    KVP_CHAT_COUNT
} kvp_chat_format;

typedef struct kvp_chat_msg {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
} kvp_chat_msg;

/* The format llama.cpp's detector picks for a template (Jinja source or a bare format name).
 * KVP_CHAT_NONE when it is none of those: *other then names what it is (for the refusal). */
kvp_chat_format kvp_chat_detect(const char *tmpl, const char **other);
const char *kvp_chat_format_name(kvp_chat_format f); /* llama.cpp's name ("chatml", "mistral-v7", ...), "none" */
/* kvp_chat_detect for a command that needs a format: KVP_OK and *f, or KVP_ERR_USAGE with
 * err saying which template it is and which ones kvpub renders. */
kvp_status kvp_chat_pick(const char *tmpl, kvp_chat_format *f, char *err, size_t errlen) KVP_WUR;

/* The whole conversation as text (malloc'd), with the assistant's header when add_assistant. */
kvp_status kvp_chat_render(kvp_chat_format f, const kvp_chat_msg *msgs, size_t n, int add_assistant,
                           char **out) KVP_WUR;

/* A conversation with the documents in the user turn, as the text before them (optional system
 * turn, the user header) and after them ("\n\n", the question, the end of the turn and the
 * assistant's header): documents placed between the two give render(system, documents +
 * "\n\n" + question), but for a trim of the documents' leading white space where the format
 * trims messages (Llama 3, llama2-sys-strip): documents are published as they are. Both
 * malloc'd. */
kvp_status kvp_chat_wrap(kvp_chat_format f, const char *system, const char *question, char **before,
                         char **after) KVP_WUR;

/* ---- llama.cpp sequence state (llama_state.c, spec/llama-state.md) ---- */

/* Writes the n cells of ctx (tokens[i] at position i, f16 K/V, i.e. exactly the sequence
 * [BOS, prefix, documents] a path placed) as a llama.cpp sequence-state file: the format of
 * llama_state_seq_save_file in the pinned llama.cpp (magic 'ggsq', version 3, one stream), for a
 * llama.cpp context with type_k = type_v = f16 and V transposed (flash attention off) when
 * v_trans, else not (flash attention on, llama.cpp's CPU default). Atomic: written beside path
 * and renamed. KVP_ERR_USAGE when ctx does not hold exactly positions 0..n-1, KVP_ERR_IO. */
kvp_status kvp_llama_state_write(eng_ctx *ctx, const eng_model *m, const int32_t *tokens, size_t n, int v_trans,
                                 const char *path, char *err, size_t errlen) KVP_WUR;

/* Reads a state file llama.cpp saved (either V layout, f16 K/V) into the empty ctx (an f16
 * cache), after checking that it holds exactly the tokens want[0..n_want) (BOS and the
 * document under the model's tokenizer) at positions 0..n-1 of one sequence, with the model's
 * layer count and row sizes. K and V go a layer at a time straight into the cells, so the
 * state is never held whole; the cells are committed only once the whole file has checked out.
 * KVP_ERR_REFUSED (other tokens, positions, shapes or cache types), KVP_ERR_FORMAT (not such a
 * file, truncated, trailing bytes), KVP_ERR_IO, KVP_ERR_NOMEM, KVP_ERR_ENGINE (a ctx that
 * cannot take the cells: too small, not empty, or an f32 cache). */
kvp_status kvp_llama_state_read(eng_ctx *ctx, const eng_model *m, const char *path, const int32_t *want,
                                size_t n_want, char *err, size_t errlen) KVP_WUR;

#endif
