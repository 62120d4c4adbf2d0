/* run_common.h: what `kvfetch run` and `kvfetch compare` share: their options, and a session
 * that fetches the blobs, loads the model and runs the loaded path up to the first token. */
#ifndef KVPUB_KVFETCH_RUN_COMMON_H
#define KVPUB_KVFETCH_RUN_COMMON_H

#include <jansson.h>
#include <limits.h>
#include <stdint.h>

#include "engine/engine.h"
#include "kvfetch/opts.h"
#include "kvpub/kvpub.h"

#define KVFETCH_MAX_BLOBS 16
#define KVFETCH_MAX_GEN 4096

/* The options of run and compare, and of export (no prompt, no generation), for their --help. */
#define KVFETCH_HELP_LOAD \
    "  --model FILE         GGUF model (required)\n" \
    "  --blob FILE|URL|ID   a blob file, an https:// URL (fetched like kvfetch get, cached), or a\n" \
    "                       blob id (64 hex: the local cache, else --server); repeat to place\n" \
    "                       several documents in order (at most 16)\n" \
    "  --server URL         kvpubd API base to fetch --blob IDs from (GET /v1/blobs/ID); and/or\n" \
    "                       the --mirror repositories (below)\n" \
    "  --recompute R        when a document does not sit exactly where it was computed, recompute\n" \
    "                       R (0..1) of its tokens at every layer after the real prefix and load\n" \
    "                       the rest re-rotated (default 0; docs/quality.md has the measurements)\n" \
    "  --recompute-method M which tokens: head (EPIC: the document's first ones, default) or blend\n" \
    "                       (CacheBlend: layer 0 of all, then those whose K/V deviate most)\n" \
    "  --no-decoded-copy    read each blob itself even when its decoded copy (kvfetch get\n" \
    "                       writes it for f16-zstd blobs) is beside it\n"
#define KVFETCH_HELP_BASELINES \
    "  --follow full|loaded compare: whose greedy tokens both paths are fed (default loaded; full:\n" \
    "                       the reference continuation, the same for every way of loading)\n" \
    "  --no-rerotate, --drop-prefix  measurement baselines: keys left at the positions they were\n" \
    "                       computed for; the prefix left out of the loaded path (compare keeps\n" \
    "                       it in the full prefill)\n"
#define KVFETCH_HELP_PREFIX \
    "  --prefix TEXT        text before the documents, e.g. a system prompt (default empty)\n"
#define KVFETCH_HELP_PROMPT \
    "  --prompt TEXT        text after the documents (required, non-empty)\n"
#define KVFETCH_HELP_TEXT \
    "  --chat               build the conversation with the model's chat template (ChatML/Qwen,\n" \
    "                       Llama 3, Phi-3, as llama.cpp renders them): [--system turn,] a user\n" \
    "                       turn holding the documents, a blank line and --prompt, then the\n" \
    "                       assistant's header; other templates are refused\n" \
    "  --system TEXT        with --chat: the system message\n" \
    "  --special            match special-token texts (<|im_start|>, ...) in --prefix and\n" \
    "                       --prompt (the default for prompts; documents never are)\n" \
    "  --no-special         treat them as plain text\n"
#define KVFETCH_HELP_GEN \
    "  --logits FILE        write the loaded path's logits after the prompt (n_vocab f32 LE)\n" \
    "  -n N                 tokens to generate (default 64; stops early at end of generation)\n" \
    "  --temp T             sampling temperature; 0 = greedy (default 0)\n" \
    "  --top-k K, --top-p P sampling filters (default off)\n" \
    "  --seed S             sampler seed (default 1)\n"
#define KVFETCH_HELP_TAIL \
    "  --threads N          engine and decode threads (default: all cores)\n" \
    "  --json               machine-readable result on stdout\n"
#define KVFETCH_RUN_HELP                                                                          \
    KVFETCH_HELP_LOAD KVFETCH_HELP_BASELINES KVFETCH_HELP_PREFIX KVFETCH_HELP_PROMPT KVFETCH_HELP_TEXT \
    KVFETCH_HELP_GEN KVFETCH_HELP_TAIL
#define KVFETCH_EXPORT_HELP KVFETCH_HELP_LOAD KVFETCH_HELP_PREFIX KVFETCH_HELP_TEXT KVFETCH_HELP_TAIL

typedef struct kvfetch_run_args {
    const char *model;
    const char *blobs[KVFETCH_MAX_BLOBS];
    int n_blobs;
    const char *prefix, *prompt, *system;
    int n_gen, threads, top_k, json, chat, special;
    double recompute;          /* kvp_load_opts.recompute */
    kvp_recompute_method method; /* kvp_load_opts.method */
    int no_rerotate, drop_prefix; /* measurement baselines (kvfetch compare) */
    int no_decoded_copy;       /* kvp_load_opts.no_decoded_copy, and none written on fetch */
    int follow_full;           /* compare: kvp_compare_opts.follow_full */
    const char *llama_state;   /* export: the llama.cpp sequence-state file to write */
    const char *server;        /* kvpubd API base that --blob IDs are fetched from */
    const char *logits_out;    /* run: write the loaded path's first logits here */
    int v_trans;               /* export: V transposed (llama.cpp without flash attention) */
    float temp, top_p;
    uint64_t seed;
    kvf_common co;
} kvfetch_run_args;

/* Everything one invocation holds, freed in one place. */
typedef struct kvfetch_session {
    kvfetch_run_args a;
    const char *prog;
    eng_model *model;
    const eng_info *info;
    kvp_identity id;
    char paths[KVFETCH_MAX_BLOBS][PATH_MAX];
    const char *path_of[KVFETCH_MAX_BLOBS]; /* paths[i], as kvp_path takes them */
    int spool_fd[KVFETCH_MAX_BLOBS]; /* a --blob that is no regular file, copied (-1: none) */
    int32_t *doc_tokens[KVFETCH_MAX_BLOBS];
    uint32_t doc_n[KVFETCH_MAX_BLOBS];
    kvp_load_stats ls[KVFETCH_MAX_BLOBS];
    char *chat_before, *chat_after; /* --chat: the text around the documents */
    int32_t *prefix_ids, *prompt_ids;
    size_t n_prefix, n_prompt;
    size_t n_cells;        /* context size, from the blobs' headers (0 = not yet read) */
    double fetch_s, model_s, fp_s, warm_s;
    int fetched_from_cache;
    eng_ctx *ctx, *ctx_full;
    float *logits;         /* (n_vocab) the loaded path's next-token logits */
    kvp_path path;         /* what the loaded path placed */
    kvp_path_result pr;    /* and what it cost */
    char err[8192];
} kvfetch_session;

/* Which command's arguments: export has --llama-state (required) and no --prompt (the path
 * ends with the documents); compare alone has --follow. */
typedef enum kvfetch_cmd { KVFETCH_CMD_RUN, KVFETCH_CMD_COMPARE, KVFETCH_CMD_EXPORT } kvfetch_cmd;

/* What run, compare and export share up to the first token: parse, open trust and cache, fetch
 * the blobs, load the model, run the loaded path. Returns an exit code and sets *done when the
 * command is over (an error, or --help); *out is always set (kvfetch_session_free it). */
int kvfetch_session_start(const char *prog, int argc, char **argv, const char *usage, kvfetch_cmd cmd,
                          kvfetch_session **out, int *done);
void kvfetch_session_free(kvfetch_session *s); /* NULL is a no-op */

/* The placed sequence [BOS, prefix, documents, prompt] (kvp_path_sequence), malloc'd into *seq.
 * Returns an exit code (0, or 2 after printing). */
int kvfetch_session_sequence(kvfetch_session *s, int32_t **seq, size_t *n);

/* A fresh, warmed context with room for the whole sequence and the generation (compare's full
 * path). Returns an exit code (0, or non-zero after printing). */
int kvfetch_session_ctx(kvfetch_session *s, eng_ctx **out);

/* The per-blob and timing report: into o's "blobs" and "timings" (--json), or on stderr.
 * ttft_s: the loaded path's time to first token, the first token's pick included. */
void kvfetch_stats_json(json_t *o, const kvfetch_session *s, double ttft_s);
void kvfetch_stats_text(const kvfetch_session *s, double ttft_s);

/* Prints o as indented JSON on stdout and frees it. */
void kvfetch_print_json(json_t *o);
/* Sets o's "text" to the generated bytes as a JSON string (a byte that starts no valid UTF-8
 * sequence becomes U+FFFD), "text_utf8" to whether none had to be replaced, and then
 * "text_hex" to the exact bytes in hex: the field is never dropped. */
void kvfetch_json_text(json_t *o, const char *text, size_t n);

#endif
