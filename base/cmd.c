/* cmd.c: base_cmd_dispatch, the subcommand dispatcher of the tools' main(). The one place in
 * base/ that prints: usage and "unknown command" are what it is for. */
#include "base/base.h"

#include <stdio.h>

static void usage(const char *prog, const base_cmd *cmds)
{
    printf("usage: %s COMMAND [options]   (%s COMMAND --help for details)\n\ncommands:\n", prog, prog);
    for (size_t i = 0; cmds[i].name; i++)
        printf("  %-10s %s\n", cmds[i].name, cmds[i].summary);
}

int base_cmd_dispatch(const char *prog, const base_cmd *cmds, int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "%s: missing command (try %s --help)\n", prog, prog);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(prog, cmds);
        return 0;
    }
    for (size_t i = 0; cmds[i].name; i++)
        if (strcmp(argv[1], cmds[i].name) == 0)
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "%s: unknown command '%s' (try %s --help)\n", prog, argv[1], prog);
    return 2;
}
