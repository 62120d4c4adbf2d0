/* errf.c: the one formatter behind every module's error buffer (base_errf and its variants). */
#include "base/base.h"

#include <stdio.h>

void base_verrf(char *err, size_t errlen, const char *fmt, va_list ap)
{
    if (err && errlen)
        vsnprintf(err, errlen, fmt, ap);
}

int base_fail(int st, char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    base_verrf(err, errlen, fmt, ap);
    va_end(ap);
    return st;
}

void base_errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    base_verrf(err, errlen, fmt, ap);
    va_end(ap);
}
