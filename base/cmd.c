/* cmd.c: base_cmd_dispatch, the subcommand dispatcher of the tools' main(), and base_opts, their
 * option loop. The one place in base/ that prints: usage, "unknown command" and bad options are
 * what it is for. */
#include "base/base.h"

#include <getopt.h>
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

static void opts_usage(const base_opts *o, FILE *out)
{
    if (o->usage)
        fputs(o->usage, out);
    else
        o->usage_fn(out);
}

int base_opts_next(base_opts *o, int argc, char **argv)
{
    if (!o->started) {
        optind = o->first ? o->first : 1;
        opterr = o->getopt_says;
        o->started = 1;
    }
    for (;;) {
        int c = getopt_long(argc, argv, o->shortopts, o->longopts, NULL);
        if (c == -1)
            return 0;
        int took = o->more ? o->more(o->more_ctx, c, optarg, o->prog) : 0;
        if (took > 0)
            continue;
        if (took == 0 && c == 'h') {
            opts_usage(o, stdout);
            o->rc = 0;
            return -1;
        }
        if (took < 0 || c == '?') {
            if (took == 0 && o->getopt_says)
                opts_usage(o, stderr);
            else if (took == 0)
                fprintf(stderr, "%s: %s '%s' (try %s)\n", o->prog, o->bad ? o->bad : "unknown or incomplete option",
                        argv[optind - 1], o->hint ? o->hint : "--help");
            o->rc = 2;
            return -1;
        }
        return c;
    }
}

int base_opts_no_operands(const base_opts *o, int argc, char **argv, int hint)
{
    if (optind >= argc)
        return 0;
    fprintf(stderr, "%s: unexpected argument '%s'%s%s%s\n", o->prog, argv[optind], hint ? " (try " : "",
            hint ? (o->hint ? o->hint : "--help") : "", hint ? ")" : "");
    return 2;
}

int base_opts_verb(base_opts *o, int argc, char **argv, const char *verb)
{
    if (argc >= 2 && strcmp(argv[1], verb) == 0)
        return 1;
    int help = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
    opts_usage(o, help ? stdout : stderr);
    o->rc = help ? 0 : 2;
    return 0;
}
