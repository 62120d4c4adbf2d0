/* cmd_common.c: what several kvpubd commands share: opening the store and saying why not. */
#include "kvpubd/kvpubd.h"

#include <stdio.h>

#include "store/kvstore.h"

int kvpubd_store_open(const char *prog, const char *dir, kvs_store **s, char *err, size_t errlen)
{
    if (kvs_store_open(dir, s, err, errlen) == KVS_OK)
        return 0;
    fprintf(stderr, "%s: %s\n", prog, err);
    return 2;
}
