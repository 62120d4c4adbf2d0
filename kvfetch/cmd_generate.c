/* kvfetch/cmd_generate.c: `kvfetch generate`: plain text generation with a local GGUF model
 * (no blobs): tokenize or take ids, prefill, decode (kvp_decode), stream text or ids. */
#include "engine/engine.h"
#include "fetch/fetch.h"
#include "kvfetch/kvfetch.h"
#include "kvfetch/opts.h"
#include "kvpub/kvpub.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f)
{
    fputs("usage: kvfetch generate --model M.gguf (--prompt TEXT | --prompt-ids ID,ID,...) [options]\n"
          "Generates text with a local model: prefill of the prompt, then one token at a time.\n"
          "  --model FILE        GGUF model (llama, qwen2, qwen3, stablelm)\n"
          "  --prompt TEXT       prompt text, tokenized with BOS as the model's policy says\n"
          "  --special           match special-token texts such as <|im_start|> in the prompt (the\n"
          "                      default for prompts everywhere: generate, run, compare, tokenize)\n"
          "  --no-special        treat them as plain text (as publish treats documents)\n"
          "  --prompt-ids LIST   comma-separated token ids, used as they are (no BOS added)\n"
          "  -n N                tokens to generate (default 64); stops earlier at end of generation\n"
          "  --temp T            temperature (default 0: greedy)\n"
          "  --top-k K           top-k (default 0: off)\n"
          "  --top-p P           nucleus sampling (default 1: off)\n"
          "  --seed S            sampler seed (default 1)\n"
          "  --tokens            print the generated ids (space-separated) instead of text\n"
          "  --threads N         threads (default: all cores)\n"
          "  --ctx N             context size in tokens (default: prompt + n)\n"
          "  --kv-f32            f32 K/V cache instead of f16 (exact comparisons with other runtimes)\n"
          "  --logits FILE       write the logits after the prompt (n_vocab little-endian f32) to\n"
          "                      FILE, to hold them against another runtime's\n"
          "Text goes to stdout; prefill and decode speeds to stderr.\n"
          "Exit codes: 0 ok, 2 usage or I/O error, 3 the model cannot be run.\n",
          f);
}

/* A number in 0..100 (what run takes for --temp and --top-p): NaN, infinities and negatives
 * are refused. */
static int parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !(v >= 0) || v > 100)
        return -1;
    *out = v;
    return 0;
}

/* Streams each token to stdout: its id (user points to --tokens) or its text. */
static int print_token(void *user, const kvp_token *t)
{
    if (t->eog)
        return 0;
    if (*(const int *)user)
        printf(t->i ? " %d" : "%d", t->id);
    else
        fwrite(t->text, 1, t->len, stdout);
    if (t->i >= 0)
        fflush(stdout);
    return 0;
}

static int exit_for(eng_status st)
{
    return st == ENG_ERR_UNSUPPORTED || st == ENG_ERR_FORMAT ? 3 : 2;
}

int kvfetch_generate_main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"model", required_argument, NULL, 'm'},  {"prompt", required_argument, NULL, 'p'},
        {"prompt-ids", required_argument, NULL, 'i'}, {"temp", required_argument, NULL, 't'},
        {"top-k", required_argument, NULL, 'k'},  {"top-p", required_argument, NULL, 'P'},
        {"seed", required_argument, NULL, 's'},   {"tokens", no_argument, NULL, 'T'},
        {"threads", required_argument, NULL, 'j'}, {"ctx", required_argument, NULL, 'c'},
        {"special", no_argument, NULL, 'S'},      {"no-special", no_argument, NULL, 'N'},
        {"kv-f32", no_argument, NULL, 'F'},       {"logits", required_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *model = NULL, *prompt = NULL, *prompt_ids = NULL, *logits_out = NULL;
    int special = 1, kv_f32 = 0;
    long n_gen = 64, top_k = 0, threads = 0, n_ctx = 0, seed = 1;
    float temp = 0, top_p = 1;
    int print_ids = 0, c;
    base_opts op = {.prog = "kvfetch generate", .usage_fn = usage, .shortopts = "n:h", .longopts = lo,
                    .getopt_says = 1};
    while ((c = base_opts_next(&op, argc, argv)) > 0) {
        int bad = 0;
        switch (c) {
        case 'm': model = optarg; break;
        case 'p': prompt = optarg; break;
        case 'i': prompt_ids = optarg; break;
        case 'n': bad = kvf_parse_long(optarg, 0, 1 << 20, &n_gen); break;
        case 't': bad = parse_float(optarg, &temp); break;
        case 'k': bad = kvf_parse_long(optarg, 0, 1 << 30, &top_k); break;
        case 'P': bad = parse_float(optarg, &top_p); break;
        case 's': bad = kvf_parse_long(optarg, 0, 0x7fffffffL, &seed); break;
        case 'T': print_ids = 1; break;
        case 'S': special = 1; break;
        case 'N': special = 0; break;
        case 'F': kv_f32 = 1; break;
        case 'L': logits_out = optarg; break;
        case 'j': bad = kvf_parse_long(optarg, 1, 256, &threads); break;
        case 'c': bad = kvf_parse_long(optarg, 1, 1 << 20, &n_ctx); break;
        }
        if (bad) {
            fprintf(stderr, "kvfetch generate: bad value '%s' for --%s\n", optarg,
                    c == 'n' ? "n" : c == 't' ? "temp" : c == 'k' ? "top-k" : c == 'P' ? "top-p" :
                    c == 's' ? "seed" : c == 'j' ? "threads" : "ctx");
            return 2;
        }
    }
    if (c < 0)
        return op.rc;
    if (base_opts_no_operands(&op, argc, argv, 0))
        return 2;
    if (!model || (!prompt == !prompt_ids)) {
        fprintf(stderr, "kvfetch generate: need --model and exactly one of --prompt / --prompt-ids "
                        "(try --help)\n");
        return 2;
    }
    char err[512];
    eng_model *m = NULL;
    eng_status st = eng_model_load(model, &m, err, sizeof err);
    if (st) {
        fprintf(stderr, "kvfetch generate: %s\n", err);
        return exit_for(st);
    }
    const eng_info *hp = eng_model_info(m);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = 2;
    eng_ctx *ctx = NULL;
    eng_sampler *smp = NULL;
    float *logits = NULL;
    if (prompt_ids) {
        if (base_parse_ids(prompt_ids, (uint32_t)INT32_MAX + 1, &ids, &n_ids)) {
            fprintf(stderr, "kvfetch generate: bad --prompt-ids '%s' (expected ID,ID,... of non-negative "
                            "integers)\n", prompt_ids);
            goto out;
        }
        for (size_t i = 0; i < n_ids; i++)
            if (ids[i] >= hp->n_vocab) {
                fprintf(stderr, "kvfetch generate: token id %d out of range (vocabulary has %d)\n", ids[i],
                        hp->n_vocab);
                goto out;
            }
    } else if ((st = eng_tokenize(m, prompt, strlen(prompt), 1, special, &ids, &n_ids))) {
        fprintf(stderr, "kvfetch generate: cannot tokenize the prompt: %s\n", eng_status_str(st));
        goto out;
    }
    if (n_ids == 0) {
        fprintf(stderr, "kvfetch generate: the prompt is empty\n");
        goto out;
    }
    if (n_ctx == 0)
        n_ctx = (long)n_ids + n_gen;
    if ((long)n_ids + n_gen > n_ctx) {
        fprintf(stderr, "kvfetch generate: prompt (%zu tokens) + -n %ld exceeds --ctx %ld\n", n_ids, n_gen,
                n_ctx);
        goto out;
    }
    eng_ctx_params cp = {(int)n_ctx, (int)threads, kv_f32};
    if ((st = eng_ctx_create(m, &cp, &ctx, err, sizeof err))) {
        fprintf(stderr, "kvfetch generate: %s\n", err);
        goto out;
    }
    smp = eng_sampler_create(temp, (int)top_k, top_p, (uint64_t)seed);
    logits = malloc(sizeof(float) * (size_t)hp->n_vocab);
    if (!smp || !logits) {
        fprintf(stderr, "kvfetch generate: out of memory\n");
        goto out;
    }
    double t0 = base_now_s();
    if ((st = eng_prefill(ctx, ids, NULL, n_ids, logits, NULL))) {
        fprintf(stderr, "kvfetch generate: prefill failed: %s\n", eng_status_str(st));
        goto out;
    }
    double t1 = base_now_s();
    if (logits_out && base_write_f32_le(logits_out, logits, (size_t)hp->n_vocab) != 0) {
        fprintf(stderr, "kvfetch generate: cannot write %s: %s\n", logits_out, strerror(errno));
        goto out;
    }
    kvp_decode_opts d = {.model = m, .ctx = ctx, .sampler = smp, .n_max = (int)n_gen, .text = !print_ids,
                         .on_token = print_token, .user = &print_ids};
    kvp_decode_stats ds;
    if (kvp_decode(&d, logits, &ds, err, sizeof err) != KVP_OK) {
        fprintf(stderr, "\nkvfetch generate: decode failed: %s\n", err);
        goto out;
    }
    long n_dec = ds.n_decoded;
    putchar('\n');
    double t2 = base_now_s();
    fprintf(stderr, "prefill: %zu tokens in %.3f s (%.1f tok/s); decode: %ld tokens in %.3f s (%.1f tok/s)\n",
            n_ids, t1 - t0, (double)n_ids / (t1 - t0), n_dec, t2 - t1,
            n_dec ? (double)n_dec / (t2 - t1) : 0.0);
    rc = fflush(stdout) == 0 ? 0 : 2;
out:
    free(logits);
    eng_sampler_free(smp);
    eng_ctx_free(ctx);
    free(ids);
    eng_model_free(m);
    return rc;
}
