/* kvfetch/cmd_tokenize.c: `kvfetch tokenize`: the token ids a model's tokenizer gives a text, as
 * publish and run compute them, so a user can see what a blob's document or a prompt becomes
 * and hold it against llama.cpp's llama_tokenize (tests/cli/llamacpp_tokenize.sh does). */
#include "base/base.h"
#include "engine/engine.h"
#include "kvfetch/kvfetch.h"
#include "kvfetch/run_common.h"
#include "kvpub/kvpub.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKENIZE_MAX_INPUT ((size_t)1 << 30) /* the tokenizer's own limit */

static void usage(FILE *f)
{
    fputs("usage: kvfetch tokenize --model M.gguf [options] [TEXT | -]\n"
          "Prints the token ids the model's tokenizer gives TEXT (standard input with '-' or no\n"
          "TEXT), space-separated on one line. Only the vocabulary is read: a vocabulary-only GGUF\n"
          "is enough.\n"
          "  --model FILE     GGUF model or vocabulary\n"
          "  --special        match special-token texts such as <|im_start|> (the default, as for\n"
          "                   prompts in run and generate)\n"
          "  --no-special     treat them as plain text, as publish treats documents (user-defined\n"
          "                   tokens such as <think> still match, as in llama.cpp)\n"
          "  --no-bos         never add BOS (by default it is added when the vocabulary says so)\n"
          "  --separator SEP  tokenize each part of the input between occurrences of SEP on its\n"
          "                   own, one line per part (one model load for many texts)\n"
          "  --chat           the text is a user message: wrap it in the GGUF's chat template (ChatML/\n"
          "                   Qwen, Llama 3, Phi-3, Mistral or Llama 2 [INST], rendered as llama.cpp's\n"
          "                   llama_chat_apply_template does) with the assistant's header after it\n"
          "                   (where the format has one); implies --special\n"
          "  --system S       with --chat: a system message first\n"
          "  --text           print the text that would be tokenized (after --chat) instead of ids\n"
          "  --json           one JSON object: ids, and per token its vocabulary text and the\n"
          "                   bytes it stands for (null when those are not UTF-8 on their own)\n"
          "  --detokenize ID,ID,...\n"
          "                   the other way: print the text those token ids stand for ('-': the\n"
          "                   list from standard input), each token as llama.cpp's\n"
          "                   llama_token_to_piece gives it and llama-server's /detokenize joins\n"
          "                   them: control tokens print nothing and no leading space is dropped.\n"
          "                   With --json: {ids, text, text_utf8}, bytes that are not UTF-8 as U+FFFD\n"
          "Exit codes: 0 ok, 2 usage or I/O error, 3 the vocabulary cannot be read or used.\n",
          f);
}

/* One token for --json: {"id", "text" (the vocabulary entry), "piece" (what it decodes to)}. */
static json_t *token_json(const eng_vocab *v, int32_t id)
{
    size_t tl;
    const char *text = eng_vocab_token_text(v, id, &tl);
    size_t pl = 0;
    const char *piece = eng_vocab_piece(v, id, &pl);
    json_t *jp = piece ? json_stringn(piece, pl) : NULL; /* NULL when the bytes are not UTF-8 alone */
    json_t *jt = text ? json_stringn(text, tl) : NULL;
    return json_pack("{s:I, s:o, s:o}", "id", (json_int_t)id, "text", jt ? jt : json_null(), "piece",
                     jp ? jp : json_null());
}

static json_t *ids_json(const int32_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

static int emit(const eng_vocab *v, const int32_t *ids, size_t n, json_t *parts)
{
    if (!parts) {
        for (size_t i = 0; i < n; i++)
            printf(i ? " %d" : "%d", ids[i]);
        putchar('\n');
        return 0;
    }
    json_t *jids = ids_json(ids, n), *toks = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(toks, token_json(v, ids[i]));
    return json_array_append_new(parts, json_pack("{s:o, s:o}", "ids", jids, "tokens", toks));
}

static int open_vocab(const char *model, eng_vocab **v)
{
    char err[256];
    eng_status st = eng_vocab_load(model, v, err, sizeof err);
    if (st == ENG_OK)
        return KVF_EXIT_OK;
    fprintf(stderr, "kvfetch tokenize: %s: %s\n", model, err);
    return st == ENG_ERR_IO ? KVF_EXIT_USAGE : KVF_EXIT_MALFORMED;
}

/* --detokenize: the pieces of the ids in list ("-": standard input) back to back. */
static int detokenize(const eng_vocab *v, const char *list, int as_json)
{
    char *in = NULL;
    size_t n_in = 0;
    if (strcmp(list, "-") == 0) {
        if (!(in = base_read_stream(stdin, TOKENIZE_MAX_INPUT, &n_in))) {
            fprintf(stderr, "kvfetch tokenize: reading standard input: %s\n", strerror(errno));
            return KVF_EXIT_USAGE;
        }
        while (n_in > 0 && (in[n_in - 1] == '\n' || in[n_in - 1] == ' '))
            in[--n_in] = 0;
        list = in;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    const size_t nv = eng_vocab_n_tokens(v);
    int rc = KVF_EXIT_OK;
    if (base_parse_ids(list, (uint32_t)INT32_MAX + 1, &ids, &n) != 0) {
        fputs("kvfetch tokenize: --detokenize takes ID,ID,... of non-negative token ids\n", stderr);
        rc = KVF_EXIT_USAGE;
    }
    for (size_t i = 0; !rc && i < n; i++)
        if ((size_t)ids[i] >= nv) {
            fprintf(stderr, "kvfetch tokenize: token id %d is not in the vocabulary (%zu tokens)\n", (int)ids[i], nv);
            rc = KVF_EXIT_USAGE;
        }
    char *text = NULL;
    size_t len = 0;
    if (!rc && eng_vocab_detokenize(v, ids, n, 0, &text, &len) != ENG_OK) {
        fputs("kvfetch tokenize: out of memory\n", stderr);
        rc = KVF_EXIT_USAGE;
    }
    if (!rc && as_json) {
        json_t *o = json_object();
        json_object_set_new(o, "ids", ids_json(ids, n));
        kvfetch_json_text(o, text, len);
        if (json_dumpf(o, stdout, JSON_COMPACT) != 0 || putchar('\n') == EOF)
            rc = KVF_EXIT_USAGE;
        json_decref(o);
    } else if (!rc && fwrite(text, 1, len, stdout) != len) {
        rc = KVF_EXIT_USAGE;
    }
    free(text);
    free(ids);
    free(in);
    return rc;
}

/* The conversation --chat tokenizes: [system,] user = the n bytes at s, assistant header. */
static char *chat_text(kvp_chat_format fmt, const char *system, const char *s, size_t n)
{
    char *user = strndup(s, n), *conv = NULL;
    if (system && !*system)
        system = NULL; /* an empty system message is none */
    kvp_chat_msg msgs[2] = {{"system", system ? system : ""}, {"user", user}};
    if (user && kvp_chat_render(fmt, system ? msgs : msgs + 1, system ? 2 : 1, 1, &conv) != KVP_OK)
        conv = NULL;
    free(user);
    return conv;
}

int kvfetch_tokenize_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},  {"special", no_argument, NULL, 's'},
        {"no-special", no_argument, NULL, 'S'},   {"no-bos", no_argument, NULL, 'B'},
        {"separator", required_argument, NULL, 'p'}, {"json", no_argument, NULL, 'j'},
        {"chat", no_argument, NULL, 'c'},         {"system", required_argument, NULL, 'y'},
        {"text", no_argument, NULL, 't'},         {"detokenize", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model = NULL, *sep = NULL, *system = NULL, *detok = NULL;
    int special = 1, add_bos = 1, as_json = 0, chat = 0, show_text = 0, tok_opt = 0, c;
    base_opts op = {.prog = "kvfetch tokenize", .usage_fn = usage, .shortopts = "h", .longopts = longopts,
                    .bad = "unexpected option"};
    while ((c = base_opts_next(&op, argc, argv)) > 0) {
        switch (c) {
        case 'm': model = optarg; break;
        case 's': special = 1, tok_opt = 1; break;
        case 'S': special = 0, tok_opt = 1; break;
        case 'B': add_bos = 0, tok_opt = 1; break;
        case 'p': sep = optarg; break;
        case 'j': as_json = 1; break;
        case 'c': chat = 1; break;
        case 'y': system = optarg; break;
        case 't': show_text = 1; break;
        case 'd': detok = optarg; break;
        }
    }
    if (c < 0)
        return op.rc; /* KVF_EXIT_OK after --help, KVF_EXIT_USAGE */
    if (!model || argc - optind > 1 || (sep && !*sep) || (show_text && as_json) || (system && !chat)) {
        fputs(!model ? "kvfetch tokenize: --model is required (try --help)\n"
              : sep && !*sep ? "kvfetch tokenize: --separator must not be empty\n"
              : system && !chat ? "kvfetch tokenize: --system goes with --chat\n"
              : show_text && as_json ? "kvfetch tokenize: --text prints the text itself; --json is for the ids\n"
                             : "kvfetch tokenize: one TEXT at most (try --help)\n",
              stderr);
        return KVF_EXIT_USAGE;
    }
    if (detok && (chat || sep || show_text || tok_opt || optind < argc)) {
        fputs("kvfetch tokenize: --detokenize takes the ids alone (no TEXT, --chat, --separator, --text, "
              "--special, --no-special or --no-bos)\n",
              stderr);
        return KVF_EXIT_USAGE;
    }
    eng_vocab *v = NULL;
    if (detok) {
        int rc = open_vocab(model, &v);
        if (rc == KVF_EXIT_OK)
            rc = detokenize(v, detok, as_json);
        eng_vocab_free(v);
        return rc;
    }
    size_t len;
    char *text;
    if (optind < argc && strcmp(argv[optind], "-") != 0) {
        len = strlen(argv[optind]);
        text = strdup(argv[optind]);
    } else if (!(text = base_read_stream(stdin, TOKENIZE_MAX_INPUT, &len))) {
        fprintf(stderr, "kvfetch tokenize: reading standard input: %s\n", strerror(errno));
        return KVF_EXIT_USAGE;
    }
    char err[256];
    eng_status st;
    int vrc = open_vocab(model, &v);
    if (vrc != KVF_EXIT_OK) {
        free(text);
        return vrc;
    }
    kvp_chat_format fmt = KVP_CHAT_NONE;
    if (chat) {
        char why[256];
        if (kvp_chat_pick(eng_vocab_chat_template(v), &fmt, why, sizeof why) != KVP_OK) {
            fprintf(stderr, "kvfetch tokenize: %s: %s\n", model, why);
            eng_vocab_free(v);
            free(text);
            return KVF_EXIT_MALFORMED;
        }
        special = 1;
    }
    json_t *parts = as_json ? json_array() : NULL;
    int rc = KVF_EXIT_OK;
    size_t sl = sep ? strlen(sep) : 0;
    const char *p = text, *end = text + len;
    for (;;) {
        const char *hit = sl ? memmem(p, (size_t)(end - p), sep, sl) : NULL;
        const char *stop = hit ? hit : end;
        int32_t *ids = NULL;
        size_t n = 0;
        const char *in = p;
        size_t in_n = (size_t)(stop - p);
        char *conv = chat ? chat_text(fmt, system, p, in_n) : NULL;
        if (conv) {
            in = conv;
            in_n = strlen(conv);
        }
        err[0] = 0;
        if (chat && !conv)
            st = ENG_ERR_NOMEM;
        else if (show_text)
            st = fwrite(in, 1, in_n, stdout) == in_n && putchar('\n') != EOF ? ENG_OK : ENG_ERR_IO;
        else
            st = eng_vocab_tokenize(v, in, in_n, add_bos, special, &ids, &n, err, sizeof err);
        free(conv);
        if (st != ENG_OK) {
            fprintf(stderr, "kvfetch tokenize: %s\n", err[0] ? err : eng_status_str(st));
            rc = st == ENG_ERR_NOMEM || st == ENG_ERR_IO ? KVF_EXIT_USAGE : KVF_EXIT_MALFORMED;
        } else if (!show_text && emit(v, ids, n, parts) != 0) {
            fputs("kvfetch tokenize: out of memory\n", stderr);
            rc = KVF_EXIT_USAGE;
        }
        free(ids);
        if (rc != KVF_EXIT_OK || !hit)
            break;
        p = hit + sl;
    }
    if (parts && rc == KVF_EXIT_OK) {
        json_t *doc = sep ? json_pack("{s:o}", "parts", parts) : json_incref(json_array_get(parts, 0));
        if (sep)
            parts = NULL;
        if (json_dumpf(doc, stdout, JSON_COMPACT) != 0 || putchar('\n') == EOF)
            rc = KVF_EXIT_USAGE;
        json_decref(doc);
    }
    json_decref(parts);
    eng_vocab_free(v);
    free(text);
    if (fflush(stdout) != 0) {
        fputs("kvfetch tokenize: cannot write standard output\n", stderr);
        rc = KVF_EXIT_USAGE;
    }
    return rc;
}
