/* util.c: the two small helpers every fetch/ file uses: filling an error buffer
 * and a monotonic clock in seconds. */
#include "fetch/fetch.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

kvf_status kvf_fail(char *err, size_t errlen, kvf_status st, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

double kvf_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}
