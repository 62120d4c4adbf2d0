/* kvpub.h: the product's flow as a library, above engine, format, store, crypto and fetch and
 * below the tools: the model-identity record and the one check that refuses a blob made for
 * another model, and loading a verified blob into an engine context. Nothing here prints or
 * exits: functions return a kvp_status and write the detail into a caller's err buffer. */
#ifndef KVPUB_KVPUB_H
#define KVPUB_KVPUB_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/kvcrypto.h"
#include "engine/engine.h"
#include "format/kvblob.h"

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
    char arch[KVP_ARCH_MAX];       /* "llama", "qwen2", "qwen3" */
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
    /* a declared context before the document (not in manifests yet): 0 tokens = none */
    uint32_t n_context;
    uint8_t context_sha256[32];
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

/* ---- loading a blob into an engine context ---- */

/* What one load cost, in seconds of wall time on the calling thread. */
typedef struct kvp_load_stats {
    double read_s;        /* reading the file */
    double verify_decode_s; /* inside the reader (signature, hashes, waiting for decode workers) */
    double rerotate_s;    /* importing with K re-rotated on the way in (delta != 0: the rotation
                             is fused into the copy, eng_kv_import_layer_rerotated) */
    double import_s;      /* plain imports (delta == 0) and commits */
    double total_s;
    double cpu_s;         /* CPU time of the whole process during the load (all threads) */
    uint64_t file_bytes;  /* blob bytes read */
    uint64_t raw_bytes;   /* decoded f16 K+V bytes imported */
    uint32_t n_tokens, n_chunks;
    int32_t pos, delta;   /* first position used, and the re-rotation applied */
    int n_threads;        /* decode workers */
} kvp_load_stats;

typedef struct kvp_load_opts {
    eng_model *model;
    eng_ctx *ctx;
    const kvp_identity *identity; /* the model's, from kvp_identity_from_model */
    const kvc_trust *trust;
    int64_t now;               /* expiry check time; 0 = time(NULL) */
    int n_threads;             /* decode workers; 0 = eng_default_threads() */
} kvp_load_opts;

/* Appends the blob at path to ctx: its tokens go to cells kv_len.. at positions
 * next_pos.., K re-rotated by delta = next_pos - pos0. Everything is verified (signature,
 * trust, revocation, expiry, chunk hashes, kvp_identity_check) before it is used; on any
 * failure ctx is truncated back to its previous length. On success *tokens (may be NULL) gets
 * the document's token ids (malloc'd, caller frees) and *n_tokens their count. st may be
 * NULL; *vst (may be NULL) gets the reader status when the result is KVP_ERR_VERIFY.
 * Statuses: KVP_ERR_VERIFY, KVP_ERR_REFUSED, KVP_ERR_ENGINE, KVP_ERR_IO, KVP_ERR_NOMEM,
 * KVP_ERR_USAGE. */
kvp_status kvp_load_blob(const kvp_load_opts *o, const char *path, int32_t **tokens,
                         uint32_t *n_tokens, kvp_load_stats *st, kvb_status *vst,
                         char *err, size_t errlen) KVP_WUR;

#endif
