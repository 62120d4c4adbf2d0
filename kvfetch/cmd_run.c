/* cmd_run.c: `kvfetch run` (load blobs after a prefix, prefill the prompt, decode) and
 * `kvfetch compare` (the same, plus a full prefill of the identical tokens: TTFT speedup, KL
 * divergence and greedy agreement, bit-exactness). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "fetch/fetch.h"
#include "kvfetch/kvfetch.h"
#include "kvfetch/opts.h"
#include "kvpub/kvpub.h"

#define MAX_BLOBS 16
#define MAX_GEN 4096

static const char usage_run[] =
    "usage: kvfetch run --model M.gguf --blob FILE|URL [--blob ...] [--prefix TEXT] --prompt TEXT\n"
    "                   [-n N] [--temp T] [--seed S] --trust DIR [options]\n"
    "\n"
    "Loads the model, checks that every blob was made by exactly this model, tokenizer and RoPE,\n"
    "builds the cache [BOS, prefix, document 1, document 2, ..., prompt]: BOS and prefix are\n"
    "prefilled, each blob is verified and imported chunk by chunk with its keys re-rotated to\n"
    "where the document now sits, then the prompt is prefilled and N tokens are generated.\n"
    "The text streams to stdout; timings go to stderr (with --json, all of it to stdout).\n"
    "\n"
    "  --model FILE         GGUF model (required)\n"
    "  --blob FILE|URL      a blob file or an https:// URL (fetched like kvfetch get, cached);\n"
    "                       repeat to place several documents in order (at most 16)\n"
    "  --prefix TEXT        text before the documents, e.g. a system prompt (default empty)\n"
    "  --prompt TEXT        text after the documents (required, non-empty)\n"
    "  -n N                 tokens to generate (default 64; stops early at end of generation)\n"
    "  --temp T             sampling temperature; 0 = greedy (default 0)\n"
    "  --top-k K, --top-p P sampling filters (default off)\n"
    "  --seed S             sampler seed (default 1)\n"
    "  --threads N          engine and decode threads (default: all cores)\n"
    "  --json               machine-readable result on stdout\n"
    KVF_SHARED_HELP
    "\n"
    "exit codes: 0 ok; 1 refused: verification failed, or the blob was made for another model,\n"
    "tokenizer or RoPE (the message names both); 2 usage, I/O, network, engine error; 3 malformed\n"
    "or truncated blob; 4 access denied by the server.\n";

static const char usage_compare[] =
    "usage: kvfetch compare (same options as kvfetch run)\n"
    "\n"
    "Runs kvfetch run's loaded path, then a full prefill of the identical token sequence\n"
    "(BOS, prefix, the documents' own token ids from the blobs, prompt) in a fresh context, and\n"
    "reports both times to first token and the speedup. The loaded path decodes greedily; its\n"
    "tokens are teacher-forced into the full path, and at each of the N positions it reports\n"
    "KL(full || loaded) of the next-token distributions and whether both argmaxes agree. When\n"
    "all argmaxes agree the full path's own greedy output is the same text. When every logit\n"
    "matches bit for bit it says 'logits bit-identical to full prefill' (expected with an empty\n"
    "prefix and a lossless codec). --temp is ignored: compare is greedy.\n"
    "\n"
    "exit codes as kvfetch run.\n";

typedef struct args {
    const char *model;
    const char *blobs[MAX_BLOBS];
    int n_blobs;
    const char *prefix, *prompt;
    int n_gen, threads, top_k, json;
    float temp, top_p;
    uint64_t seed;
    kvf_common co;
} args;

static int parse_args(int argc, char **argv, args *a, const char *prog, const char *usage)
{
    enum { O_MODEL = KVF_OPT_SHARED_END + 1, O_BLOB, O_PREFIX, O_PROMPT, O_TEMP, O_SEED, O_TOPK,
           O_TOPP, O_THREADS, O_JSON };
    static const struct option longopts[] = {
        KVF_SHARED_LONGOPTS,
        {"model", required_argument, NULL, O_MODEL},
        {"blob", required_argument, NULL, O_BLOB},
        {"prefix", required_argument, NULL, O_PREFIX},
        {"prompt", required_argument, NULL, O_PROMPT},
        {"temp", required_argument, NULL, O_TEMP},
        {"seed", required_argument, NULL, O_SEED},
        {"top-k", required_argument, NULL, O_TOPK},
        {"top-p", required_argument, NULL, O_TOPP},
        {"threads", required_argument, NULL, O_THREADS},
        {"json", no_argument, NULL, O_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof *a);
    a->prefix = "";
    a->n_gen = 64;
    a->top_p = 1.0f;
    a->seed = 1;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "n:h", longopts, NULL)) != -1) {
        int r = kvf_common_opt(&a->co, c, optarg, prog);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        char *end = NULL;
        errno = 0;
        switch (c) {
        case O_MODEL: a->model = optarg; break;
        case O_BLOB:
            if (a->n_blobs == MAX_BLOBS) {
                fprintf(stderr, "%s: at most %d --blob\n", prog, MAX_BLOBS);
                return 2;
            }
            a->blobs[a->n_blobs++] = optarg;
            break;
        case O_PREFIX: a->prefix = optarg; break;
        case O_PROMPT: a->prompt = optarg; break;
        case O_JSON: a->json = 1; break;
        case 'n': {
            long v;
            if (kvf_parse_long(optarg, 1, MAX_GEN, &v) != 0) {
                fprintf(stderr, "%s: -n '%s' is not a count in 1..%d\n", prog, optarg, MAX_GEN);
                return 2;
            }
            a->n_gen = (int)v;
            break;
        }
        case O_THREADS:
        case O_TOPK: {
            long v;
            if (kvf_parse_long(optarg, 0, 1024, &v) != 0) {
                fprintf(stderr, "%s: '%s' is not a number in 0..1024\n", prog, optarg);
                return 2;
            }
            if (c == O_THREADS)
                a->threads = (int)v;
            else
                a->top_k = (int)v;
            break;
        }
        case O_TEMP:
        case O_TOPP: {
            float v = strtof(optarg, &end);
            if (errno || *end || end == optarg || !(v >= 0) || v > 100) {
                fprintf(stderr, "%s: '%s' is not a number in 0..100\n", prog, optarg);
                return 2;
            }
            if (c == O_TEMP)
                a->temp = v;
            else
                a->top_p = v;
            break;
        }
        case O_SEED: {
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || *end || end == optarg) {
                fprintf(stderr, "%s: --seed '%s' is not a number\n", prog, optarg);
                return 2;
            }
            a->seed = v;
            break;
        }
        case 'h': fputs(usage, stdout); return -1;
        default:
            fprintf(stderr, "%s: unknown or incomplete option '%s' (try --help)\n", prog, argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[optind]);
        return 2;
    }
    if (!a->model || !a->n_blobs || !a->prompt || !*a->prompt) {
        fprintf(stderr, "%s: --model, --blob and a non-empty --prompt are required (try --help)\n", prog);
        return 2;
    }
    return 0;
}

/* Everything one invocation holds, freed in one place. */
typedef struct session {
    args a;
    const char *prog;
    eng_model *model;
    const eng_info *info;
    kvp_identity id;
    char paths[MAX_BLOBS][PATH_MAX];
    int32_t *doc_tokens[MAX_BLOBS];
    uint32_t doc_n[MAX_BLOBS];
    kvp_load_stats ls[MAX_BLOBS];
    int32_t *prefix_ids, *prompt_ids;
    size_t n_prefix, n_prompt;
    int32_t bos;
    size_t n_cells;        /* context size, from the blobs' headers (0 = not yet read) */
    double fetch_s, model_s, fp_s, warm_s;
    int fetched_from_cache;
    eng_ctx *ctx, *ctx_full;
    float *logits, *logits_full;
    char err[8192];
} session;

static void session_free(session *s)
{
    if (!s)
        return;
    for (int i = 0; i < MAX_BLOBS; i++)
        free(s->doc_tokens[i]);
    free(s->prefix_ids);
    free(s->prompt_ids);
    free(s->logits);
    free(s->logits_full);
    eng_ctx_free(s->ctx);
    eng_ctx_free(s->ctx_full);
    eng_model_free(s->model);
    kvf_common_close(&s->a.co);
    free(s);
}

/* Resolves every --blob to a local file: URLs through kvf_get (and the cache). */
static int resolve_blobs(session *s)
{
    double t = kvf_now_s();
    for (int i = 0; i < s->a.n_blobs; i++) {
        const char *b = s->a.blobs[i];
        if (!kvf_is_url(b)) {
            if (access(b, R_OK) != 0) {
                fprintf(stderr, "%s: cannot read blob %s: %s\n", s->prog, b, strerror(errno));
                return 2;
            }
            snprintf(s->paths[i], PATH_MAX, "%s", b);
            continue;
        }
        kvf_get_opts go = {0};
        go.url = b;
        go.trust = s->a.co.trust;
        go.now = s->a.co.now;
        go.trust_cached = 1; /* the loader verifies everything while it loads */
        go.http = s->a.co.http;
        kvf_get_result res;
        kvf_status st = kvf_get(s->a.co.cache, &go, &res, s->err, sizeof s->err);
        if (st != KVF_OK) {
            if (st == KVF_ERR_VERIFY)
                fprintf(stderr, "%s: %s: verification failed (%s): %s\n", s->prog, b, kvb_status_str(res.vst), s->err);
            else
                fprintf(stderr, "%s: %s: %s\n", s->prog, b, s->err);
            kvf_get_result_clear(&res);
            return kvf_exit_code(st, res.vst);
        }
        s->fetched_from_cache += res.from_cache;
        snprintf(s->paths[i], PATH_MAX, "%s", res.path);
        kvf_get_result_clear(&res);
    }
    s->fetch_s = kvf_now_s() - t;
    return 0;
}

static int load_model(session *s)
{
    double t = kvf_now_s();
    eng_status es = eng_model_load(s->a.model, &s->model, s->err, sizeof s->err);
    if (es != ENG_OK) {
        fprintf(stderr, "%s: %s: %s\n", s->prog, s->a.model, s->err);
        return 2;
    }
    s->info = eng_model_info(s->model);
    s->model_s = kvf_now_s() - t;
    t = kvf_now_s();
    if (kvp_identity_from_model(s->model, &s->id, s->err, sizeof s->err) != KVP_OK) {
        fprintf(stderr, "%s: fingerprinting %s: %s\n", s->prog, s->a.model, s->err);
        return 2;
    }
    s->fp_s = kvf_now_s() - t;
    s->bos = s->info->add_bos && s->info->bos_id >= 0 ? s->info->bos_id : -1;
    /* prefix and prompt are the caller's own text: special-token strings are honoured */
    if (*s->a.prefix &&
        eng_tokenize(s->model, s->a.prefix, strlen(s->a.prefix), 0, 1, &s->prefix_ids, &s->n_prefix) != ENG_OK) {
        fprintf(stderr, "%s: cannot tokenize --prefix\n", s->prog);
        return 2;
    }
    if (eng_tokenize(s->model, s->a.prompt, strlen(s->a.prompt), 0, 1, &s->prompt_ids, &s->n_prompt) != ENG_OK ||
        s->n_prompt == 0) {
        fprintf(stderr, "%s: cannot tokenize --prompt (or it has no tokens)\n", s->prog);
        return 2;
    }
    return 0;
}

/* Context size: every token of the sequence plus the generation, from the blobs' own headers
 * (unverified sizes only size the context; the content is verified while loading). */
static int make_ctx(session *s, eng_ctx **out, size_t *total_out)
{
    size_t total = s->n_cells; /* compare's second context: the headers were read already */
    if (!total) {
        total = (s->bos >= 0) + s->n_prefix + s->n_prompt + (size_t)s->a.n_gen;
        for (int i = 0; i < s->a.n_blobs; i++) {
            kvb_manifest *m = NULL;
            kvb_status ks = kvb_peek_file(s->paths[i], NULL, NULL, &m, s->err, sizeof s->err);
            if (ks != KVB_OK) {
                fprintf(stderr, "%s: %s: %s\n", s->prog, s->paths[i], s->err);
                return kvb_exit_code(ks);
            }
            total += m->n_tokens;
            kvb_manifest_free(m);
        }
        if (total > (size_t)INT32_MAX / 2) {
            fprintf(stderr, "%s: sequence too long\n", s->prog);
            return 2;
        }
        s->n_cells = total;
    }
    eng_ctx_params p = {.n_ctx = (int)total, .n_threads = s->a.threads};
    if (eng_ctx_create(s->model, &p, out, s->err, sizeof s->err) != ENG_OK) {
        fprintf(stderr, "%s: context of %zu tokens: %s\n", s->prog, total, s->err);
        return 2;
    }
    if (total_out)
        *total_out = total;
    return 0;
}

typedef struct loaded_times {
    double prefix_s, load_s, suffix_s, sample_s, ttft_s;
    int32_t first;
} loaded_times;

/* Readies a fresh context as a long-lived one would be (llama.cpp likewise clears its whole KV
 * buffer when it creates a context): zeros are imported into every cell but the last, then one
 * throwaway token is prefilled in the last cell, and the context is cleared. That faults in
 * the mmap'd weights, the KV cache pages and the attention scratch, and starts the engine's
 * threads, so neither path's time to first token pays for first-touch page faults; the cost
 * is reported as warm-up. */
static int warm_up(session *s, eng_ctx *c, size_t n_cells)
{
    double t = kvf_now_s();
    enum { BLOCK = 256 };
    size_t kvd = (size_t)s->info->n_head_kv * (size_t)s->info->head_dim;
    uint16_t *zero = calloc((size_t)BLOCK * kvd, sizeof *zero);
    if (!zero) {
        fprintf(stderr, "%s: out of memory\n", s->prog);
        return 2;
    }
    eng_status es = ENG_OK;
    for (size_t c0 = 0; es == ENG_OK && c0 + 1 < n_cells; c0 += BLOCK) {
        int n = (int)(n_cells - 1 - c0 < BLOCK ? n_cells - 1 - c0 : BLOCK);
        for (int il = 0; es == ENG_OK && il < s->info->n_layer; il++)
            es = eng_kv_import_layer(c, il, (int)c0, n, zero, zero);
        if (es == ENG_OK)
            es = eng_kv_commit(c, (int)c0, n, (int32_t)c0);
    }
    free(zero);
    int32_t tok = s->bos >= 0 ? s->bos : s->prompt_ids[0];
    if (es == ENG_OK)
        es = eng_prefill(c, &tok, NULL, 1, NULL, NULL);
    eng_kv_clear(c);
    s->warm_s += kvf_now_s() - t;
    if (es != ENG_OK) {
        fprintf(stderr, "%s: warm-up: %s\n", s->prog, eng_status_str(es));
        return 2;
    }
    return 0;
}

/* The loaded path up to the first token's logits: [BOS, prefix] prefilled, blobs imported,
 * prompt prefilled. */
static int loaded_path(session *s, loaded_times *lt)
{
    size_t total = 0;
    int rc = make_ctx(s, &s->ctx, &total);
    if (rc)
        return rc;
    s->logits = malloc((size_t)s->info->n_vocab * sizeof *s->logits);
    if (!s->logits) {
        fprintf(stderr, "%s: out of memory\n", s->prog);
        return 2;
    }
    if ((rc = warm_up(s, s->ctx, total)) != 0)
        return rc;
    double t0 = kvf_now_s();
    size_t nh = (s->bos >= 0) + s->n_prefix;
    if (nh) {
        int32_t *head = malloc(nh * sizeof *head);
        if (!head) {
            fprintf(stderr, "%s: out of memory\n", s->prog);
            return 2;
        }
        size_t k = 0;
        if (s->bos >= 0)
            head[k++] = s->bos;
        if (s->n_prefix)
            memcpy(head + k, s->prefix_ids, s->n_prefix * sizeof *head);
        eng_status es = eng_prefill(s->ctx, head, NULL, nh, NULL, NULL);
        free(head);
        if (es != ENG_OK) {
            fprintf(stderr, "%s: prefill of BOS+prefix: %s\n", s->prog, eng_status_str(es));
            return 2;
        }
    }
    lt->prefix_s = kvf_now_s() - t0;
    double t1 = kvf_now_s();
    kvp_load_opts lo = {.model = s->model, .ctx = s->ctx, .identity = &s->id, .trust = s->a.co.trust,
                        .now = s->a.co.now, .n_threads = s->a.threads};
    for (int i = 0; i < s->a.n_blobs; i++) {
        kvb_status vst;
        kvp_status st = kvp_load_blob(&lo, s->paths[i], &s->doc_tokens[i], &s->doc_n[i], &s->ls[i], &vst,
                                      s->err, sizeof s->err);
        if (st != KVP_OK) {
            if (st == KVP_ERR_VERIFY) {
                fprintf(stderr, "%s: %s: verification failed (%s): %s\n", s->prog, s->a.blobs[i],
                        kvb_status_str(vst), s->err);
                return kvb_exit_code(vst);
            }
            fprintf(stderr, "%s: %s: %s\n", s->prog, s->a.blobs[i], s->err);
            return st == KVP_ERR_REFUSED ? KVF_EXIT_REFUSED : 2;
        }
    }
    lt->load_s = kvf_now_s() - t1;
    double t2 = kvf_now_s();
    eng_status es = eng_prefill(s->ctx, s->prompt_ids, NULL, s->n_prompt, s->logits, NULL);
    if (es != ENG_OK) {
        fprintf(stderr, "%s: prefill of the prompt: %s\n", s->prog, eng_status_str(es));
        return 2;
    }
    lt->suffix_s = kvf_now_s() - t2;
    lt->ttft_s = kvf_now_s() - t0; /* the first token is sampled from these logits */
    return 0;
}

static void stats_json(json_t *o, const session *s, const loaded_times *lt)
{
    json_t *blobs = json_array();
    for (int i = 0; i < s->a.n_blobs; i++) {
        const kvp_load_stats *l = &s->ls[i];
        json_t *b = json_object();
        json_object_set_new(b, "blob", json_string(s->a.blobs[i]));
        json_object_set_new(b, "path", json_string(s->paths[i]));
        json_object_set_new(b, "tokens", json_integer(l->n_tokens));
        json_object_set_new(b, "chunks", json_integer(l->n_chunks));
        json_object_set_new(b, "position", json_integer(l->pos));
        json_object_set_new(b, "delta", json_integer(l->delta));
        json_object_set_new(b, "file_bytes", json_integer((json_int_t)l->file_bytes));
        json_object_set_new(b, "raw_kv_bytes", json_integer((json_int_t)l->raw_bytes));
        json_object_set_new(b, "read_s", json_real(l->read_s));
        json_object_set_new(b, "verify_decode_s", json_real(l->verify_decode_s));
        json_object_set_new(b, "rerotate_s", json_real(l->rerotate_s));
        json_object_set_new(b, "import_s", json_real(l->import_s));
        json_object_set_new(b, "load_s", json_real(l->total_s));
        json_object_set_new(b, "load_cpu_s", json_real(l->cpu_s));
        json_object_set_new(b, "decode_threads", json_integer(l->n_threads));
        json_object_set_new(b, "chunk_digest", json_string(kvc_leaf_digest_engine()));
        json_array_append_new(blobs, b);
    }
    json_object_set_new(o, "blobs", blobs);
    json_t *t = json_object();
    json_object_set_new(t, "fetch_s", json_real(s->fetch_s));
    json_object_set_new(t, "model_load_s", json_real(s->model_s));
    json_object_set_new(t, "fingerprint_s", json_real(s->fp_s));
    json_object_set_new(t, "warm_up_s", json_real(s->warm_s));
    json_object_set_new(t, "prefix_prefill_s", json_real(lt->prefix_s));
    json_object_set_new(t, "blob_load_s", json_real(lt->load_s));
    json_object_set_new(t, "suffix_prefill_s", json_real(lt->suffix_s));
    json_object_set_new(t, "ttft_s", json_real(lt->ttft_s));
    json_object_set_new(o, "timings", t);
    json_object_set_new(o, "prefix_tokens", json_integer((json_int_t)s->n_prefix));
    json_object_set_new(o, "prompt_tokens", json_integer((json_int_t)s->n_prompt));
}

static void stats_text(const session *s, const loaded_times *lt)
{
    for (int i = 0; i < s->a.n_blobs; i++) {
        const kvp_load_stats *l = &s->ls[i];
        double gbs = l->total_s > 0 ? (double)l->raw_bytes / l->total_s / 1e9 : 0;
        fprintf(stderr,
                "blob %d: %u tokens at position %d (re-rotated by %d), %.1f MB raw KV in %.2f ms "
                "(%.2f GB/s, %.2f ms CPU): read %.2f, verify+decode %.2f (%d threads), re-rotate+import %.2f, "
                "import %.2f ms\n",
                i + 1, l->n_tokens, l->pos, l->delta, (double)l->raw_bytes / 1e6, l->total_s * 1e3, gbs, l->cpu_s * 1e3,
                l->read_s * 1e3, l->verify_decode_s * 1e3, l->n_threads, l->rerotate_s * 1e3,
                l->import_s * 1e3);
    }
    fprintf(stderr,
            "timings: fetch %.3f s%s, model load %.3f s, fingerprints %.3f s, warm-up %.3f s; prefix prefill (%zu tokens) "
            "%.2f ms, blob load %.2f ms, suffix prefill (%zu tokens) %.2f ms, time to first token %.2f ms\n",
            s->fetch_s, s->fetched_from_cache ? " (cache)" : "", s->model_s, s->fp_s, s->warm_s,
            (s->bos >= 0) + s->n_prefix, lt->prefix_s * 1e3, lt->load_s * 1e3, s->n_prompt,
            lt->suffix_s * 1e3, lt->ttft_s * 1e3);
}

/* Appends the detokenized bytes of id to buf (grown, capped by MAX_GEN tokens' worth). */
static void text_append(char **buf, size_t *len, const char *p, size_t n)
{
    char *q = realloc(*buf, *len + n + 1);
    if (!q)
        return;
    memcpy(q + *len, p, n);
    *len += n;
    q[*len] = 0;
    *buf = q;
}

/* What run and compare share up to the first token: parse, open trust and cache, fetch the
 * blobs, load the model, run the loaded path. Returns an exit code and sets *done when the
 * command is over (an error, or --help); *out is always set (session_free it). */
static int start(const char *prog, int argc, char **argv, const char *usage, session **out,
                 loaded_times *lt, int *done)
{
    *done = 1;
    session *s = *out = calloc(1, sizeof *s);
    if (!s) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return 2;
    }
    s->prog = prog;
    int rc = parse_args(argc, argv, &s->a, prog, usage);
    if (rc)
        return rc < 0 ? 0 : rc; /* -1: --help was printed */
    if ((rc = kvf_common_open(&s->a.co, prog)) != 0 || (rc = resolve_blobs(s)) != 0 ||
        (rc = load_model(s)) != 0 || (rc = loaded_path(s, lt)) != 0)
        return rc;
    *done = 0;
    return 0;
}

int kvfetch_run_main(int argc, char **argv)
{
    session *s;
    loaded_times lt = {0};
    char *text = NULL;
    size_t text_len = 0;
    eng_sampler *smp = NULL;
    eng_detok *dt = NULL;
    int done, rc = start("kvfetch run", argc, argv, usage_run, &s, &lt, &done);
    if (done)
        goto out;
    smp = eng_sampler_create(s->a.temp, s->a.top_k, s->a.top_p, s->a.seed);
    dt = eng_detok_create(s->model);
    if (!smp || !dt) {
        rc = 2;
        goto out;
    }
    int n_out = 0;
    double td = kvf_now_s(), t_first = 0;
    for (int i = 0; i < s->a.n_gen; i++) {
        int32_t tok = eng_sample(smp, s->logits, s->info->n_vocab);
        if (i == 0)
            t_first = kvf_now_s() - td; /* sampling the first token belongs to TTFT */
        if (eng_token_is_eog(s->model, tok))
            break;
        size_t n;
        const char *p = eng_detok_push(dt, tok, &n);
        if (n) {
            text_append(&text, &text_len, p, n);
            if (!s->a.json) {
                fwrite(p, 1, n, stdout);
                fflush(stdout);
            }
        }
        n_out++;
        if (i + 1 < s->a.n_gen) {
            eng_status es = eng_decode(s->ctx, tok, -1, s->logits);
            if (es != ENG_OK) {
                fprintf(stderr, "%s: decode: %s\n", s->prog, eng_status_str(es));
                rc = 2;
                goto out;
            }
        }
    }
    size_t n;
    const char *p = eng_detok_flush(dt, &n);
    if (n) {
        text_append(&text, &text_len, p, n);
        if (!s->a.json)
            fwrite(p, 1, n, stdout);
    }
    double dec_s = kvf_now_s() - td - t_first;
    lt.ttft_s += t_first;
    double tps = n_out > 1 && dec_s > 0 ? (n_out - 1) / dec_s : 0;
    if (s->a.json) {
        json_t *o = json_object();
        json_object_set_new(o, "text", json_stringn(text ? text : "", text_len));
        json_object_set_new(o, "generated_tokens", json_integer(n_out));
        stats_json(o, s, &lt);
        json_object_set_new(json_object_get(o, "timings"), "decode_tok_per_s", json_real(tps));
        char *js = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (js)
            printf("%s\n", js);
        free(js);
        json_decref(o);
    } else {
        printf("\n");
        if (!s->a.co.quiet) {
            stats_text(s, &lt);
            fprintf(stderr, "decode: %d tokens, %.1f tok/s\n", n_out, tps);
        }
    }
out:
    free(text);
    eng_sampler_free(smp);
    eng_detok_free(dt);
    session_free(s);
    return rc;
}

/* Softmax in double; returns the log-sum-exp so log p_i = x_i - lse. */
static double log_sum_exp(const float *x, int n)
{
    double m = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > m)
            m = x[i];
    double s = 0;
    for (int i = 0; i < n; i++)
        s += exp((double)x[i] - m);
    return m + log(s);
}

/* KL(P || Q) of the next-token distributions given as logits p, q. */
static double kl_div(const float *p, const float *q, int n)
{
    double lp = log_sum_exp(p, n), lq = log_sum_exp(q, n), kl = 0;
    for (int i = 0; i < n; i++) {
        double a = (double)p[i] - lp;
        kl += exp(a) * (a - ((double)q[i] - lq));
    }
    return kl > 0 ? kl : 0;
}

static int32_t argmax(const float *x, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

int kvfetch_compare_main(int argc, char **argv)
{
    session *s;
    loaded_times lt = {0};
    char *text = NULL;
    size_t text_len = 0;
    int32_t *seq = NULL, *gen = NULL;
    double *kls = NULL;
    int done, rc = start("kvfetch compare", argc, argv, usage_compare, &s, &lt, &done);
    if (done)
        goto out;
    int nv = s->info->n_vocab;

    /* the identical sequence, for the full prefill */
    size_t total = (s->bos >= 0) + s->n_prefix + s->n_prompt, k = 0;
    for (int i = 0; i < s->a.n_blobs; i++)
        total += s->doc_n[i];
    seq = malloc(total * sizeof *seq);
    gen = malloc((size_t)s->a.n_gen * sizeof *gen);
    kls = calloc((size_t)s->a.n_gen, sizeof *kls);
    s->logits_full = malloc((size_t)nv * sizeof *s->logits_full);
    if (!seq || !gen || !kls || !s->logits_full) {
        fprintf(stderr, "%s: out of memory\n", s->prog);
        rc = 2;
        goto out;
    }
    if (s->bos >= 0)
        seq[k++] = s->bos;
    if (s->n_prefix)
        memcpy(seq + k, s->prefix_ids, s->n_prefix * sizeof *seq);
    k += s->n_prefix;
    for (int i = 0; i < s->a.n_blobs; i++) {
        memcpy(seq + k, s->doc_tokens[i], s->doc_n[i] * sizeof *seq);
        k += s->doc_n[i];
    }
    memcpy(seq + k, s->prompt_ids, s->n_prompt * sizeof *seq);
    size_t cells = 0;
    if ((rc = make_ctx(s, &s->ctx_full, &cells)) != 0 || (rc = warm_up(s, s->ctx_full, cells)) != 0)
        goto out;
    double tf = kvf_now_s();
    eng_status es = eng_prefill(s->ctx_full, seq, NULL, total, s->logits_full, NULL);
    double full_prefill_s = kvf_now_s() - tf;
    if (es != ENG_OK) {
        fprintf(stderr, "%s: full prefill of %zu tokens: %s\n", s->prog, total, eng_status_str(es));
        rc = 2;
        goto out;
    }
    /* the first token: argmax costs the same on both paths, count it in both TTFTs */
    double ts = kvf_now_s();
    (void)argmax(s->logits, nv);
    double t_sample = kvf_now_s() - ts;
    lt.ttft_s += t_sample;
    double ttft_full = full_prefill_s + t_sample;

    /* teacher-forced lockstep: the loaded path's greedy token goes into both contexts */
    int n_done = 0, agree = 0, first_disagree = -1, bit_identical = 1;
    double kl_max = 0, kl_sum = 0, dec_s = 0;
    for (int i = 0; i < s->a.n_gen; i++) {
        int32_t tl = argmax(s->logits, nv), tfull = argmax(s->logits_full, nv);
        if (memcmp(s->logits, s->logits_full, (size_t)nv * sizeof(float)) != 0)
            bit_identical = 0;
        kls[i] = kl_div(s->logits_full, s->logits, nv);
        kl_sum += kls[i];
        if (kls[i] > kl_max)
            kl_max = kls[i];
        if (tl == tfull)
            agree++;
        else if (first_disagree < 0)
            first_disagree = i;
        gen[n_done++] = tl;
        if (eng_token_is_eog(s->model, tl) || i + 1 == s->a.n_gen)
            break;
        double t = kvf_now_s();
        es = eng_decode(s->ctx, tl, -1, s->logits);
        dec_s += kvf_now_s() - t;
        if (es == ENG_OK)
            es = eng_decode(s->ctx_full, tl, -1, s->logits_full);
        if (es != ENG_OK) {
            fprintf(stderr, "%s: decode: %s\n", s->prog, eng_status_str(es));
            rc = 2;
            goto out;
        }
    }
    size_t n_text = 0;
    if (eng_detokenize(s->model, gen, (size_t)n_done - (n_done && eng_token_is_eog(s->model, gen[n_done - 1])),
                       &text, &n_text) != ENG_OK)
        text = NULL;
    text_len = n_text;
    double speedup = lt.ttft_s > 0 ? ttft_full / lt.ttft_s : 0;
    double tps = dec_s > 0 && n_done > 1 ? (n_done - 1) / dec_s : 0;
    if (s->a.json) {
        json_t *o = json_object();
        json_object_set_new(o, "text", json_stringn(text ? text : "", text_len));
        json_object_set_new(o, "generated_tokens", json_integer(n_done));
        stats_json(o, s, &lt);
        json_t *t = json_object_get(o, "timings");
        json_object_set_new(t, "decode_tok_per_s", json_real(tps));
        json_object_set_new(t, "full_prefill_s", json_real(full_prefill_s));
        json_object_set_new(t, "full_ttft_s", json_real(ttft_full));
        json_object_set_new(o, "sequence_tokens", json_integer((json_int_t)total));
        json_object_set_new(o, "speedup", json_real(speedup));
        json_object_set_new(o, "method", json_string("teacher-forced with the loaded path's greedy tokens"));
        json_object_set_new(o, "kl_mean", json_real(n_done ? kl_sum / n_done : 0));
        json_object_set_new(o, "kl_max", json_real(kl_max));
        json_t *ka = json_array();
        for (int i = 0; i < n_done; i++)
            json_array_append_new(ka, json_real(kls[i]));
        json_object_set_new(o, "kl", ka);
        json_object_set_new(o, "positions", json_integer(n_done));
        json_object_set_new(o, "argmax_agree", json_integer(agree));
        json_object_set_new(o, "first_disagreement", json_integer(first_disagree));
        json_object_set_new(o, "greedy_outputs_agree", json_boolean(agree == n_done));
        json_object_set_new(o, "bit_identical", json_boolean(bit_identical));
        char *js = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (js)
            printf("%s\n", js);
        free(js);
        json_decref(o);
    } else {
        if (!s->a.co.quiet)
            stats_text(s, &lt);
        printf("generated (greedy, %d tokens): %s\n", n_done, text ? text : "");
        printf("loaded path: time to first token %.2f ms (prefix prefill %.2f, blob load %.2f, suffix prefill %.2f)\n",
               lt.ttft_s * 1e3, lt.prefix_s * 1e3, lt.load_s * 1e3, lt.suffix_s * 1e3);
        printf("full prefill: time to first token %.2f ms (%zu tokens)\n", ttft_full * 1e3, total);
        printf("speedup: %.1fx\n", speedup);
        printf("KL(full || loaded) over %d positions, teacher-forced with the loaded path's greedy tokens: "
               "mean %.3g, max %.3g\n", n_done, n_done ? kl_sum / n_done : 0, kl_max);
        if (agree == n_done)
            printf("greedy outputs agree (%d/%d positions)\n", agree, n_done);
        else
            printf("greedy outputs differ: argmax agrees at %d/%d positions, first difference at position %d\n",
                   agree, n_done, first_disagree);
        if (bit_identical)
            printf("logits bit-identical to full prefill\n");
        else
            printf("logits differ from full prefill\n");
        printf("decode: %.1f tok/s\n", tps);
    }
out:
    free(text);
    free(seq);
    free(gen);
    free(kls);
    session_free(s);
    return rc;
}
