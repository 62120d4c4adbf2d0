/* llama_chat.c: llama.cpp's own rendering of a conversation with a chat template
 * (llama_chat_apply_template: its built-in formats, detected from the template text), for the
 * parity test of `kvfetch tokenize --chat --text` (tests/cli/llamacpp_chat.sh).
 *
 * usage: llama_chat TEMPLATE_FILE SYSTEM USER
 * Prints [system (when SYSTEM is not empty), user] with the assistant's header after them, then
 * a newline. Exit 3 when llama.cpp does not know the template, 1 on other failures. */
#define _POSIX_C_SOURCE 200809L
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: llama_chat TEMPLATE_FILE SYSTEM USER\n");
        return 1;
    }
    FILE *f = fopen(argv[1], "rb");
    static char tmpl[1 << 20];
    size_t n = f ? fread(tmpl, 1, sizeof tmpl - 1, f) : 0;
    if (!f || ferror(f) || n == sizeof tmpl - 1) {
        fprintf(stderr, "llama_chat: cannot read %s\n", argv[1]);
        return 1;
    }
    fclose(f);
    tmpl[n] = 0;
    struct llama_chat_message msgs[2] = {{"system", argv[2]}, {"user", argv[3]}};
    int skip = argv[2][0] == 0;
    static char out[1 << 20];
    int32_t got = llama_chat_apply_template(tmpl, msgs + skip, 2 - (size_t)skip, true, out, (int32_t)sizeof out);
    if (got < 0)
        return 3;
    if ((size_t)got >= sizeof out) {
        fprintf(stderr, "llama_chat: rendering too long\n");
        return 1;
    }
    fwrite(out, 1, (size_t)got, stdout);
    putchar('\n');
    return 0;
}
