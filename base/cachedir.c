/* cachedir.c: base_cache_dir, where the tools keep what they cache (downloaded blobs, model
 * fingerprints), from the environment in one place. */
#include "base/base.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

const char *base_cache_dir(const char *sub, char *buf, size_t n)
{
    const char *d = getenv("KVPUB_CACHE_DIR");
    const char *slash = sub ? "/" : "", *tail = sub ? sub : "";
    int w;
    if (d && *d)
        w = snprintf(buf, n, "%s", d);
    else if ((d = getenv("XDG_CACHE_HOME")) && *d)
        w = snprintf(buf, n, "%s/kvpub%s%s", d, slash, tail);
    else if ((d = getenv("HOME")) && *d)
        w = snprintf(buf, n, "%s/.cache/kvpub%s%s", d, slash, tail);
    else {
        errno = ENOENT;
        return NULL;
    }
    if (w < 0 || (size_t)w >= n) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    return buf;
}
