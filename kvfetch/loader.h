/* loader.h: load verified kvpub blobs into an engine context: check that a blob was made by the
 * loaded model, tokenizer and RoPE, stream it through the verifying reader, re-rotate each
 * chunk's K to where the document now sits, import chunk by chunk. Used by run and compare. */
#ifndef KVPUB_KVFETCH_LOADER_H
#define KVPUB_KVFETCH_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/kvcrypto.h"
#include "engine/engine.h"
#include "fetch/fetch.h"
#include "format/kvblob.h"

/* What one load cost, in seconds of wall time on the calling thread. */
typedef struct kvf_load_stats {
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
} kvf_load_stats;

typedef struct kvf_load_opts {
    eng_model *model;
    eng_ctx *ctx;
    const uint8_t *model_fp;   /* 32 bytes: eng_model_fingerprint of model */
    const uint8_t *tok_fp;     /* 32 bytes: eng_tokenizer_fingerprint of model */
    const kvc_trust *trust;
    int64_t now;               /* expiry check time; 0 = time(NULL) */
    int n_threads;             /* decode workers; 0 = eng_default_threads() */
} kvf_load_opts;

/* Checks a (verified) manifest against the loaded model before any KV is used: model
 * fingerprint, tokenizer fingerprint, KV shape and RoPE parameters (and that delta can be
 * applied exactly). Returns KVF_OK or KVF_ERR_REFUSED with a one-line reason naming both
 * sides, e.g. "model mismatch: blob wants sha256:ab12..., you loaded sha256:cd34... (qwen3,
 * 28 layers)". */
kvf_status kvf_check_manifest(const kvb_manifest *m, const eng_model *model,
                              const uint8_t model_fp[32], const uint8_t tok_fp[32],
                              int32_t delta, char *err, size_t errlen) KVF_WUR;

/* Appends the blob at path to ctx: its tokens go to cells kv_len.. at positions
 * next_pos.., K re-rotated by delta = next_pos - pos0. Everything is verified (signature,
 * trust, revocation, expiry, chunk hashes) before it is used; on any failure ctx is truncated
 * back to its previous length. On success *tokens (may be NULL) gets the document's token ids
 * (malloc'd, caller frees) and *n_tokens their count. st may be NULL; *vst (may be NULL) gets
 * the reader status when the result is KVF_ERR_VERIFY. */
kvf_status kvf_load_blob(const kvf_load_opts *o, const char *path, int32_t **tokens,
                         uint32_t *n_tokens, kvf_load_stats *st, kvb_status *vst,
                         char *err, size_t errlen) KVF_WUR;

#endif
