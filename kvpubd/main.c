/* kvpubd: the publisher CLI and daemon. Thin dispatcher over the kvpubd/cmd_ files. */
#include "engine/engine.h"
#include "kvpubd/kvpubd.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmds[] = {
    /* entries are added as commands land */
    {"keygen", kvpubd_keygen_main, "create an Ed25519 publisher key pair"},
    {"publish", kvpubd_publish_main, "prefill documents and publish signed KV blobs to a store"},
    {"serve", kvpubd_serve_main, "serve a store over HTTPS (catalog, blobs, purchases, uploads)"},
    {"publisher", kvpubd_publisher_main, "register publishers (keys + upload credentials) in a store"},
    {"gc", kvpubd_gc_main, "remove expired blobs and reconcile a store"},
    {NULL, NULL, NULL},
};

static void usage(FILE *f)
{
    fputs("usage: kvpubd COMMAND [options]   (kvpubd COMMAND --help for details)\n\ncommands:\n", f);
    for (size_t i = 0; cmds[i].name; i++)
        fprintf(f, "  %-10s %s\n", cmds[i].name, cmds[i].help);
}

int main(int argc, char **argv)
{
    eng_exit_on_sigbus("kvpubd"); /* a mapped model or blob truncated under us: error, not core */
    if (argc < 2) {
        fputs("kvpubd: missing command (try kvpubd --help)\n", stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; cmds[i].name; i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "kvpubd: unknown command '%s' (try kvpubd --help)\n", argv[1]);
    return 2;
}
