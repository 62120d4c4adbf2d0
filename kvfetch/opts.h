/* opts.h: option handling kvfetch get, run and compare share: trust store, TLS, token, cache,
 * retry and timeout flags, parsed into one struct so the three commands accept the same words. */
#ifndef KVPUB_KVFETCH_OPTS_H
#define KVPUB_KVFETCH_OPTS_H

#include <getopt.h>
#include <stdint.h>

#include "crypto/kvcrypto.h"
#include "fetch/fetch.h"

/* getopt_long codes of the shared long options (above any short option character). */
enum {
    KVF_OPT_TRUST = 1000, KVF_OPT_CACERT, KVF_OPT_TOKEN, KVF_OPT_CACHE_DIR, KVF_OPT_CACHE_MAX,
    KVF_OPT_RETRIES, KVF_OPT_CONNECT_TIMEOUT, KVF_OPT_STALL_TIMEOUT, KVF_OPT_NOW, KVF_OPT_QUIET,
    KVF_OPT_LIMIT_RATE, KVF_OPT_TOKEN_ORIGIN, KVF_OPT_MIN_RATE, KVF_OPT_TIMEOUT, KVF_OPT_MIRROR,
    KVF_OPT_MIRRORS, KVF_OPT_MIRROR_ORDER, KVF_OPT_PARALLEL,
    KVF_OPT_SHARED_END
};

/* The shared long options, to splice into a command's table (no terminator). */
#define KVF_SHARED_LONGOPTS                                                   \
    {"trust", required_argument, NULL, KVF_OPT_TRUST},                        \
    {"cacert", required_argument, NULL, KVF_OPT_CACERT},                      \
    {"token", required_argument, NULL, KVF_OPT_TOKEN},                        \
    {"cache-dir", required_argument, NULL, KVF_OPT_CACHE_DIR},                \
    {"cache-max", required_argument, NULL, KVF_OPT_CACHE_MAX},                \
    {"retries", required_argument, NULL, KVF_OPT_RETRIES},                    \
    {"connect-timeout", required_argument, NULL, KVF_OPT_CONNECT_TIMEOUT},    \
    {"stall-timeout", required_argument, NULL, KVF_OPT_STALL_TIMEOUT},        \
    {"now", required_argument, NULL, KVF_OPT_NOW},                            \
    {"quiet", no_argument, NULL, KVF_OPT_QUIET},                              \
    {"limit-rate", required_argument, NULL, KVF_OPT_LIMIT_RATE},                \
    {"token-origin", required_argument, NULL, KVF_OPT_TOKEN_ORIGIN},          \
    {"min-rate", required_argument, NULL, KVF_OPT_MIN_RATE},                  \
    {"timeout", required_argument, NULL, KVF_OPT_TIMEOUT},                    \
    {"mirror", required_argument, NULL, KVF_OPT_MIRROR},                      \
    {"mirrors", required_argument, NULL, KVF_OPT_MIRRORS},                    \
    {"mirror-order", required_argument, NULL, KVF_OPT_MIRROR_ORDER},          \
    {"parallel", required_argument, NULL, KVF_OPT_PARALLEL}

/* Help text for the shared options. */
#define KVF_SHARED_HELP                                                                        \
    "  --trust DIR          trusted publisher keys (*.pub) and optional 'revoked' list (required)\n" \
    "  --cacert FILE        CA bundle for the server's certificate (default: the system's)\n"   \
    "  --token T            Bearer token for a priced blob (or $KVPUB_TOKEN); sent only to the\n" \
    "                       origin that sold it: --server, else the URL given with --token\n"  \
    "  --token-origin URL   that origin, e.g. https://shop.example:8443 (or $KVPUB_TOKEN_ORIGIN);\n" \
    "                       a $KVPUB_TOKEN goes to --server or this origin only\n"              \
    "  --cache-dir DIR      blob cache (default $KVPUB_CACHE_DIR, $XDG_CACHE_HOME/kvpub/blobs,\n" \
    "                       ~/.cache/kvpub/blobs)\n"                                              \
    "  --cache-max SIZE     cache size cap, LRU eviction (default $KVPUB_CACHE_MAX or 10G)\n"      \
    "  --retries N          retries of a failed transfer, exponential backoff (default 6)\n"      \
    "  --connect-timeout S  seconds (default 10)\n"                                              \
    "  --stall-timeout S    abort a transfer under 1 KiB/s for S seconds (default 20)\n"          \
    "  --limit-rate SIZE    cap the download rate, bytes per second (e.g. 2M; default none)\n"  \
    "  --min-rate SIZE      abandon a transfer whose mean rate, after the stall timeout, is\n"   \
    "                       below SIZE bytes/s (default 32K; 0 = no floor)\n"                  \
    "  --timeout S          give up on a source after S seconds, retries and resumed bodies\n" \
    "                       included; each mirror has its own (default 60 s plus the blob's\n" \
    "                       length at the --min-rate; 0 = none)\n"                             \
    "  --mirror URL         another repository that carries the blob (base URL: the blob is\n"  \
    "                       URL/v1/blobs/ID); repeatable; tried after the primary source when\n" \
    "                       it fails (errors, stalls, wrong bytes: kept up to the last verified\n" \
    "                       chunk, the rest from the next mirror); tokens are never sent to one\n" \
    "  --mirrors FILE       more mirrors, one base URL a line, '#' comments (default\n"        \
    "                       $XDG_CONFIG_HOME/kvpub/mirrors or ~/.config/kvpub/mirrors when it\n" \
    "                       exists; --mirrors /dev/null for none)\n"                           \
    "  --mirror-order O     given (default: the primary source, then the mirrors as listed) or\n" \
    "                       speed (by the time of a 16 KiB ranged GET of each, fastest first)\n" \
    "  --parallel N         2 = fetch the two halves of a blob's chunks from two sources at once\n" \
    "                       (default 1)\n"                                                     \
    "  --now UNIX           judge expiry at this time instead of the clock (tests)\n"            \
    "  --quiet              no progress bar or summaries on stderr\n"

typedef struct kvf_common {
    const char *trust_dir;
    const char *cache_dir;
    uint64_t cache_max;
    int64_t now;
    int quiet;
    kvf_http_opts http;
    kvf_mirror_list mirrors; /* --mirror, then the mirrors file's (kvf_common_open reads it) */
    const char *mirrors_file;
    kvf_mirror_order order;
    int parallel;
    int mirrors_loaded;
    kvc_trust *trust;   /* opened by kvf_common_open */
    kvf_cache *cache;
} kvf_common;

/* Parses a whole decimal number in lo..hi: digits, after a '-' at most (no blanks, no '+').
 * Returns 0, or -1 (nothing printed). */
int kvf_parse_long(const char *s, long lo, long hi, long *out);

/* Handles one shared option (c is getopt's return). Returns 1 if it was one, 0 if not, -1 on a
 * bad value (message printed to stderr with prog as prefix). */
int kvf_common_opt(kvf_common *co, int c, const char *arg, const char *prog);
/* kvf_common_opt as base_opts' hook for options parsed elsewhere (co: the kvf_common). */
int kvf_common_hook(void *co, int c, const char *arg, const char *prog);
/* Opens the trust store and the cache. Returns an exit code: 0, or 2 after printing. */
int kvf_common_open(kvf_common *co, const char *prog);
void kvf_common_close(kvf_common *co);

/* Appends the mirrors of --mirrors FILE, or of the default mirrors file when there is one
 * (once; kvf_common_open calls it too). Returns 0, or 2 after printing. */
int kvf_common_load_mirrors(kvf_common *co, const char *prog);
/* go's mirror options from co (mirrors, order, parallel). */
void kvf_common_mirrors(const kvf_common *co, kvf_get_opts *go);
/* One line on stderr for each source a download with several abandoned: which, and why. */
void kvf_report_sources(const kvf_get_result *res, const char *prog);

/* The fingerprint of the GGUF model at path as 64 hex digits (hashed once, then cached).
 * Returns 0, or 2 after printing why not with prog as prefix. */
int kvf_model_fp_hex(const char *path, char hex[65], const char *prog);

/* Reads the snapshot at `where` (repository URL or file; kvf_snapshot_fetch), verifies it
 * against co's trust store at co's time, and checks and records its version in the cache's
 * snapshots/ directory (rollback protection). base gets the repository URL ("" for a file).
 * Returns an exit code: 0 and *out, or non-zero after printing one line. */
int kvf_repo_open(kvf_common *co, const char *where, const char *prog, kvf_snapshot **out, char *base,
                  size_t basecap);

/* kvf_repo_open at `where`, else at each of co's mirrors in turn (each refusal is one line on
 * stderr). A mirror whose snapshot was refused is dropped from co->mirrors: a repository that
 * shows an old or frozen catalog serves no blob either. Returns an exit code: 0, or that of the
 * last refusal. */
int kvf_repo_open_any(kvf_common *co, const char *where, const char *prog, kvf_snapshot **out, char *base,
                      size_t basecap);

#endif
