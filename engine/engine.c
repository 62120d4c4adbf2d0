/* engine.c: small engine-wide helpers of engine.h: status names and the default thread
 * count. */
#include "engine/engine.h"

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
