/* cpu.c: base_cpu_features, the one CPUID probe every SIMD dispatch (engine kernels, blob
 * codecs) asks, computed once per process. */
#include "base/base.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

static unsigned g_features;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* Asks the CPU directly (clang's __builtin_cpu_supports knows no "f16c" everywhere). AVX-family
 * bits count only when the OS saves YMM state (OSXSAVE and XCR0 bits 1-2), as the compilers'
 * own builtins do. */
static void detect(void)
{
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) || !(c & bit_AVX))
        return;
    unsigned xlo, xhi;
    __asm__("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    (void)xhi;
    if ((xlo & 6) != 6)
        return;
    unsigned f = 0;
    if (c & bit_FMA)
        f |= BASE_CPU_FMA;
    if (c & bit_F16C)
        f |= BASE_CPU_F16C;
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        if (b & bit_AVX2)
            f |= BASE_CPU_AVX2;
        /* XCR0 bits 5-7: opmask and both halves of the ZMM registers */
        const unsigned z = bit_AVX512F | bit_AVX512DQ | bit_AVX512BW | bit_AVX512VL;
        if ((b & z) == z && (xlo & 0xe0) == 0xe0)
            f |= BASE_CPU_AVX512 | (c & bit_AVX512VNNI ? BASE_CPU_AVX512VNNI : 0);
    }
    const char *cap = getenv("KVPUB_CPU");
    if (cap && strcmp(cap, "avx2") == 0)
        f &= ~(unsigned)(BASE_CPU_AVX512 | BASE_CPU_AVX512VNNI);
    else if (cap && strcmp(cap, "none") == 0)
        f = 0;
    g_features = f;
#endif
}

unsigned base_cpu_features(void)
{
    pthread_once(&g_once, detect);
    return g_features;
}

int base_cpu_has(unsigned want) { return (base_cpu_features() & want) == want; }
