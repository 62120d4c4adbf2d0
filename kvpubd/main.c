/* kvpubd: the publisher CLI and daemon. Thin dispatcher over the kvpubd/cmd_ files. */
#include "kvpubd/kvpubd.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmds[] = {
    /* entries are added as commands land */
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
    if (argc < 2) {
        usage(stderr);
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
