/* bench_burn.c: a busy neighbour for the benchmarks that measure speed on a shared machine: one
 * CPU-bound process that runs for a bounded time and exits by itself (a benchmark killed half
 * way leaves no burner behind). With --mem MiB it streams over a buffer of that size instead of
 * spinning in registers, to tell time-slice contention from memory-bandwidth contention.
 * usage: bench_burn SECONDS [--mem MiB] */
#include "base/base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0) {
        fputs("usage: bench_burn SECONDS [--mem MiB]\n", argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const double seconds = atof(argv[1]);
    size_t mib = argc == 4 && strcmp(argv[2], "--mem") == 0 ? (size_t)atol(argv[3]) : 0;
    if (seconds <= 0 || seconds > 3600 || (argc != 2 && !mib) || mib > 4096) {
        fputs("bench_burn: bad arguments (SECONDS in (0, 3600], --mem 1..4096)\n", stderr);
        return 2;
    }
    const size_t n = mib << 20 >> 3;
    volatile uint64_t *buf = n ? malloc(n * sizeof *buf) : NULL;
    if (n && !buf) {
        fputs("bench_burn: out of memory\n", stderr);
        return 1;
    }
    const double end = base_now_s() + seconds;
    uint64_t x = 1;
    while (base_now_s() < end) {
        if (buf)
            for (size_t i = 0; i < n; i++)
                buf[i] += x;
        else
            for (int i = 0; i < 1 << 20; i++)
                x = x * 6364136223846793005ull + 1442695040888963407ull;
        x++;
    }
    free((void *)buf);
    return (int)(x & 0); /* keeps x live */
}
