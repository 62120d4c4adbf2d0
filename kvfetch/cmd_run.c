/* cmd_run.c: `kvfetch run`: load blobs after a prefix, prefill the prompt, decode; the text
 * streams to stdout, timings to stderr (or everything as JSON). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "kvfetch/kvfetch.h"
#include "kvfetch/run_common.h"
#include "kvpub/kvpub.h"

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
    KVFETCH_RUN_HELP
    KVF_SHARED_HELP
    "\n"
    "exit codes: 0 ok; 1 refused: verification failed, or the blob was made for another model,\n"
    "tokenizer or RoPE (the message names both); 2 usage, I/O, network, engine error; 3 malformed\n"
    "or truncated blob; 4 access denied by the server.\n";

/* The generated text, kept for --json and streamed to stdout otherwise. */
typedef struct out_text {
    char *buf;
    size_t len;
    int stream;
    json_t *ids;   /* --json: the generated token ids */
} out_text;

/* Appends the detokenized bytes of each token to the buffer (grown, capped by
 * KVFETCH_MAX_GEN tokens' worth) and prints them unless --json. */
static int on_token(void *user, const kvp_token *t)
{
    out_text *o = user;
    if (o->ids && t->id >= 0)
        json_array_append_new(o->ids, json_integer(t->id));
    if (!t->len)
        return 0;
    char *q = realloc(o->buf, o->len + t->len + 1);
    if (q) {
        memcpy(q + o->len, t->text, t->len);
        o->len += t->len;
        q[o->len] = 0;
        o->buf = q;
    }
    if (o->stream) {
        fwrite(t->text, 1, t->len, stdout);
        if (t->i >= 0)
            fflush(stdout);
    }
    return 0;
}

int kvfetch_run_main(int argc, char **argv)
{
    kvfetch_session *s;
    out_text text = {0};
    eng_sampler *smp = NULL;
    int done, rc = kvfetch_session_start("kvfetch run", argc, argv, usage_run, KVFETCH_CMD_RUN, &s, &done);
    if (done)
        goto out;
    smp = eng_sampler_create(s->a.temp, s->a.top_k, s->a.top_p, s->a.seed);
    if (!smp) {
        rc = 2;
        goto out;
    }
    text.stream = !s->a.json;
    text.ids = s->a.json ? json_array() : NULL;
    kvp_decode_opts d = {.model = s->model, .ctx = s->ctx, .sampler = smp, .n_max = s->a.n_gen, .text = 1,
                         .on_token = on_token, .user = &text};
    kvp_decode_stats ds;
    if (kvp_decode(&d, s->logits, &ds, s->err, sizeof s->err) != KVP_OK) {
        fprintf(stderr, "%s: decode: %s\n", s->prog, s->err);
        rc = 2;
        goto out;
    }
    double ttft = s->pr.ttft_s + ds.first_s; /* sampling the first token belongs to TTFT */
    double dec_s = ds.total_s - ds.first_s;
    double tps = ds.n_tokens > 1 && dec_s > 0 ? (ds.n_tokens - 1) / dec_s : 0;
    if (s->a.json) {
        json_t *o = json_object();
        kvfetch_json_text(o, text.buf, text.len);
        json_object_set_new(o, "generated_tokens", json_integer(ds.n_tokens));
        json_object_set_new(o, "token_ids", json_incref(text.ids));
        kvfetch_stats_json(o, s, ttft);
        json_object_set_new(json_object_get(o, "timings"), "decode_tok_per_s", json_real(tps));
        kvfetch_print_json(o);
    } else {
        printf("\n");
        if (!s->a.co.quiet) {
            kvfetch_stats_text(s, ttft);
            fprintf(stderr, "decode: %d tokens, %.1f tok/s\n", ds.n_tokens, tps);
        }
    }
out:
    json_decref(text.ids);
    free(text.buf);
    eng_sampler_free(smp);
    kvfetch_session_free(s);
    return rc;
}
