/* kvfetch: the loader CLI. Thin dispatcher over the kvfetch/cmd_ files. */
#include "engine/engine.h"
#include "kvfetch/kvfetch.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmds[] = {
    /* entries are added as commands land */
    {"get", kvfetch_get_main, "fetch a blob over HTTPS, verify it and keep it in the local cache"},
    {"run", kvfetch_run_main, "load blobs after a prefix into a model and generate"},
    {"compare", kvfetch_compare_main, "run, plus a full prefill: TTFT speedup, KL, bit-exactness"},
    {"inspect", kvfetch_inspect_main, "summarise a blob: document, model, codec, sizes, signer"},
    {"verify", kvfetch_verify_main, "check a blob: signature, trust, expiry, every chunk hash"},
    {"generate", kvfetch_generate_main, "generate text with a local GGUF model (no blobs)"},
    {NULL, NULL, NULL},
};

static void usage(FILE *f)
{
    fputs("usage: kvfetch COMMAND [options]   (kvfetch COMMAND --help for details)\n\ncommands:\n", f);
    for (size_t i = 0; cmds[i].name; i++)
        fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].help);
}

int main(int argc, char **argv)
{
    eng_exit_on_sigbus("kvfetch"); /* a mapped model or blob truncated under us: error, not core */
    if (argc < 2) {
        fputs("kvfetch: missing command (try kvfetch --help)\n", stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; cmds[i].name; i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "kvfetch: unknown command '%s' (try kvfetch --help)\n", argv[1]);
    return 2;
}
