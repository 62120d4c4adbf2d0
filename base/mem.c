/* mem.c: the growable array every module keeps (token ids, heaps, tensor lists, paths), the
 * large zeroed buffers of the engine's caches, and the destructors' cleanup lists. */
#include "base/base.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

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

void *base_alloc_big(size_t n)
{
    if (n == 0)
        n = 1;
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#if defined(MADV_HUGEPAGE)
    if (n >= (size_t)2 << 20)
        (void)madvise(p, n, MADV_HUGEPAGE); /* a hint: without it the pages are 4 KiB */
#endif
    return p;
}

void base_touch_big(void *p, size_t n)
{
#ifdef MADV_POPULATE_WRITE
    if (madvise(p, n, MADV_POPULATE_WRITE) == 0)
        return;
#endif
    memset(p, 0, n); /* a kernel before 5.14: the writes fault the pages in */
}

void base_free_big(void *p, size_t n)
{
    if (p)
        munmap(p, n ? n : 1);
}

void base_free_n(void *const *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(p[i]);
}

int base_huge_pages(void)
{
    char buf[128] = "";
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, "[always]") || strstr(buf, "[madvise]");
}

uint64_t base_mem_available(void)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f)
        return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return (uint64_t)kb * 1024;
}
