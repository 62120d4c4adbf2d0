/* llama_tok.c: llama.cpp's own tokenizer on a GGUF (vocabulary-only files are enough), through
 * the prebuilt libllama's C API, for the parity test (tests/cli/llamacpp_tokenize.sh) that holds
 * `kvfetch tokenize` to it. The input is split at a separator, as `kvfetch tokenize --separator`
 * does, and each piece's ids go on one line, space-separated; an empty piece gives an empty line.
 *
 * With --pieces, the other way: FILE holds token ids (ID,ID,...) and the output is their
 * pieces back to back, as llama_token_to_piece gives them (special = false, lstrip 0) and as
 * llama-server's /detokenize and its generated text join them, for `kvfetch tokenize
 * --detokenize` and the text `kvfetch generate` prints.
 *
 * --n-vocab prints the vocabulary's size instead (FILE is not read).
 *
 * usage: llama_tok LIBDIR MODEL.gguf FILE [--special] [--add] [--separator SEP] [--pieces]
 *        llama_tok LIBDIR MODEL.gguf - --n-vocab
 *   --special  parse special-token texts (llama_tokenize's parse_special)
 *   --add      add BOS/EOS as the vocabulary says (add_special)
 * LIBDIR is the folder with the ggml CPU backends. Exit 1 on any failure, with one line. */
#define _GNU_SOURCE /* memmem */
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet(enum ggml_log_level level, const char *text, void *user)
{
    (void)level, (void)text, (void)user;
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            char *b = realloc(buf, cap *= 2);
            if (!b)
                free(buf);
            buf = b;
        }
    }
    fclose(f);
    if (buf)
        buf[len] = 0; /* len < cap: the loop ends on a short read */
    *n = len;
    return buf;
}

static int tokenize_piece(const struct llama_vocab *vocab, const char *s, size_t n, int add, int special)
{
    int32_t cap = (int32_t)n + 16;
    llama_token *ids = malloc((size_t)cap * sizeof *ids);
    if (!ids)
        return 1;
    int32_t got = llama_tokenize(vocab, s, (int32_t)n, ids, cap, add, special);
    if (got < 0) {
        fprintf(stderr, "llama_tok: llama_tokenize failed (%d)\n", got);
        free(ids);
        return 1;
    }
    for (int32_t i = 0; i < got; i++)
        printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
    free(ids);
    return 0;
}

/* The pieces of the comma-separated ids in s, written to stdout. */
static int pieces(const struct llama_vocab *vocab, const char *s)
{
    int n_vocab = llama_vocab_n_tokens(vocab);
    char buf[4096];
    for (const char *p = s; *p;) {
        char *e;
        long id = strtol(p, &e, 10);
        if (e == p || id < 0 || id >= n_vocab) {
            fprintf(stderr, "llama_tok: bad token id at \"%.20s\"\n", p);
            return 1;
        }
        int32_t n = llama_token_to_piece(vocab, (llama_token)id, buf, (int32_t)sizeof buf, 0, 0);
        if (n < 0) {
            fprintf(stderr, "llama_tok: piece of %ld longer than %zu bytes\n", id, sizeof buf);
            return 1;
        }
        fwrite(buf, 1, (size_t)n, stdout);
        p = *e == ',' ? e + 1 : e;
        while (*p == '\n' || *p == ' ')
            p++;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: llama_tok LIBDIR MODEL.gguf FILE [--special] [--add] [--separator SEP] [--pieces | --n-vocab]\n");
        return 1;
    }
    int special = 0, add = 0, as_pieces = 0, n_vocab = 0;
    const char *sep = NULL;
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--special") == 0)
            special = 1;
        else if (strcmp(argv[i], "--add") == 0)
            add = 1;
        else if (strcmp(argv[i], "--pieces") == 0)
            as_pieces = 1;
        else if (strcmp(argv[i], "--n-vocab") == 0)
            n_vocab = 1;
        else if (strcmp(argv[i], "--separator") == 0 && i + 1 < argc)
            sep = argv[++i];
        else {
            fprintf(stderr, "llama_tok: unknown option %s\n", argv[i]);
            return 1;
        }
    }
    llama_log_set(quiet, NULL);
    ggml_backend_load_all_from_path(argv[1]);
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = 1;
    struct llama_model *model = llama_model_load_from_file(argv[2], mp);
    if (!model) {
        fprintf(stderr, "llama_tok: llama.cpp cannot load %s\n", argv[2]);
        return 1;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    if (n_vocab) {
        printf("%d\n", llama_vocab_n_tokens(vocab));
        llama_model_free(model);
        return 0;
    }
    size_t len;
    char *text = slurp(argv[3], &len);
    if (!text) {
        fprintf(stderr, "llama_tok: cannot read %s\n", argv[3]);
        return 1;
    }
    int rc = 0;
    if (as_pieces) {
        rc = pieces(vocab, text);
        free(text);
        llama_model_free(model);
        return rc;
    }
    size_t sl = sep ? strlen(sep) : 0;
    const char *p = text, *end = text + len;
    for (;;) {
        const char *hit = sl ? memmem(p, (size_t)(end - p), sep, sl) : NULL;
        const char *stop = hit ? hit : end;
        rc |= tokenize_piece(vocab, p, (size_t)(stop - p), add, special);
        if (!hit)
            break;
        p = hit + sl;
    }
    free(text);
    llama_model_free(model);
    return rc;
}
