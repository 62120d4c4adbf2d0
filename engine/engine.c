/* engine.c: small engine-wide helpers of engine.h: status names, the default thread count,
 * the SIGBUS handler for programs that map files. */
#include "engine/engine_internal.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

const char *eng_status_str(eng_status st)
{
    switch (st) {
    case ENG_OK: return "ok";
    case ENG_ERR_IO: return "I/O error";
    case ENG_ERR_FORMAT: return "malformed file";
    case ENG_ERR_UNSUPPORTED: return "unsupported";
    case ENG_ERR_NOMEM: return "out of memory";
    case ENG_ERR_RANGE: return "out of range";
    case ENG_ERR_ARG: return "invalid argument";
    case ENG_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

int eng_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > 256 ? 256 : (int)n;
}

static char sigbus_msg[256];
static size_t sigbus_len;

static void on_sigbus(int sig)
{
    (void)sig;
    /* async-signal-safe only: the message was formatted at install time */
    ssize_t w = write(STDERR_FILENO, sigbus_msg, sigbus_len);
    (void)w;
    _exit(2);
}

void eng_exit_on_sigbus(const char *prog)
{
    static const char tail[] = ": a file mapped into memory (model or blob) was truncated or became "
                               "unreadable while in use\n";
    size_t n = strlen(prog);
    if (n > sizeof sigbus_msg - sizeof tail)
        n = sizeof sigbus_msg - sizeof tail;
    memcpy(sigbus_msg, prog, n);
    memcpy(sigbus_msg + n, tail, sizeof tail);
    sigbus_len = n + sizeof tail - 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigbus;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}
