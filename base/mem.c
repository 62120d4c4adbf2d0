/* mem.c: the growable array every module keeps (token ids, heaps, tensor lists, paths). */
#include "base/base.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int base_grow(void *items, size_t *cap, size_t n, size_t size, size_t first)
{
    if (n < *cap)
        return 1;
    size_t ncap = *cap ? 2 * *cap : first;
    if (ncap < *cap || ncap > SIZE_MAX / size)
        return 0;
    void *p;
    memcpy(&p, items, sizeof p); /* items is the address of any T *: no aliasing cast */
    p = realloc(p, ncap * size);
    if (!p)
        return 0;
    memcpy(items, &p, sizeof p);
    *cap = ncap;
    return 1;
}
