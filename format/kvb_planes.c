/* kvb_planes.c: f16 values to and from their byte planes (the f16-zstd codec), and stored
 * f16 rows into a destination's layout (kvb_rows), with AVX2 versions (and an AVX-512 copy)
 * chosen at run time that give the same bytes as the scalar ones. */
#include "format/kvb_internal.h"

#include <stdlib.h>
#include <string.h>

#ifdef KVB_X86
#include <immintrin.h>
#endif

/* 0: scalar; 1: the AVX2+F16C paths; 2: also the AVX-512 copy. Probed once (base_cpu_has,
 * so KVPUB_CPU=avx2 caps it); KVB_NO_SIMD=1 asks for the scalar paths and KVB_NO_SIMD=avx512
 * for AVX2's, read at every call so that tests can compare them. */
static int simd_level(void)
{
#ifdef KVB_X86
    static int cached = -1; /* every thread computes the same value: a benign, atomic race */
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        v = base_cpu_has(BASE_CPU_AVX2 | BASE_CPU_F16C) ? 1 + base_cpu_has(BASE_CPU_AVX512) : 0;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    const char *no = getenv("KVB_NO_SIMD");
    if (no && strcmp(no, "1") == 0)
        return 0;
    if (no && strcmp(no, "avx512") == 0 && v > 1)
        return 1;
    return v;
#else
    return 0;
#endif
}

int kvb_simd_ok(void) { return simd_level() > 0; }

/* ---- byte planes: f16 values <-> (low bytes, high bytes) ---- */

static void split_scalar(const uint16_t *x, size_t n, uint8_t *lo, uint8_t *hi)
{
    for (size_t i = 0; i < n; i++) {
        lo[i] = (uint8_t)x[i];
        hi[i] = (uint8_t)(x[i] >> 8);
    }
}

static void merge_scalar(const uint8_t *lo, const uint8_t *hi, size_t n, uint16_t *x)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (uint16_t)(lo[i] | (hi[i] << 8));
}

/* Where piece p of row r goes (kvb_merge_planes). */
static inline size_t piece_at(size_t r, size_t p, size_t seg, size_t ss)
{
    return p * ss + r * seg;
}

static void merge_rows_scalar(const uint8_t *lo, const uint8_t *hi, size_t rows, size_t np, size_t seg,
                              size_t ss, uint16_t *x)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t p = 0; p < np; p++)
            merge_scalar(lo + (r * np + p) * seg, hi + (r * np + p) * seg, seg, x + piece_at(r, p, seg, ss));
}

#ifdef KVB_X86
__attribute__((target("avx2"))) static void split_avx2(const uint16_t *x, size_t n, uint8_t *lo, uint8_t *hi)
{
    /* per 128-bit lane: even bytes (low halves) to the first 8, odd bytes to the last 8 */
    const __m256i sh = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                        0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i a = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(x + i)), sh);
        __m256i b = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(x + i + 16)), sh);
        a = _mm256_permute4x64_epi64(a, 0xd8); /* lo 0..15 | hi 0..15 */
        b = _mm256_permute4x64_epi64(b, 0xd8); /* lo 16..31 | hi 16..31 */
        _mm256_storeu_si256((__m256i *)(lo + i), _mm256_permute2x128_si256(a, b, 0x20));
        _mm256_storeu_si256((__m256i *)(hi + i), _mm256_permute2x128_si256(a, b, 0x31));
    }
    split_scalar(x + i, n - i, lo + i, hi + i);
}

/* Large outputs (a chunk is megabytes, more than the caches) are written with non-temporal
 * stores: no read-for-ownership of lines that are overwritten whole (measured: merge 3.3 ms
 * -> 2.2 ms per 14.7M values). A call may be one layer's K or V rows of a chunk (decoding in
 * place: 131K values for a 128-token Qwen3-0.6B chunk), hence KVB_STREAM_MIN of 32K values
 * per section; at 256K such calls stored normally and a 4096-token load took 166 instead of
 * 157 ms. */

/* 32 values of lo and hi merged into y (non-temporal when stream) */
__attribute__((target("avx2"))) static inline void merge32(const uint8_t *l0, const uint8_t *h0, uint16_t *y,
                                                           int stream)
{
    __m256i l = _mm256_loadu_si256((const __m256i *)l0);
    __m256i h = _mm256_loadu_si256((const __m256i *)h0);
    __m256i a = _mm256_unpacklo_epi8(l, h); /* values 0..7 | 16..23 */
    __m256i b = _mm256_unpackhi_epi8(l, h); /* values 8..15 | 24..31 */
    __m256i v0 = _mm256_permute2x128_si256(a, b, 0x20), v1 = _mm256_permute2x128_si256(a, b, 0x31);
    if (stream) {
        _mm256_stream_si256((__m256i *)y, v0);
        _mm256_stream_si256((__m256i *)(y + 16), v1);
    } else {
        _mm256_storeu_si256((__m256i *)y, v0);
        _mm256_storeu_si256((__m256i *)(y + 16), v1);
    }
}

/* kvb_merge_planes. Row by row, each row's pieces in turn: the planes are read once in order
 * and the pieces written as np streams (a micro-benchmark on Zen 5 placing a 4096-token
 * Qwen3-0.6B load in 8 head pieces of 128 values: 20 ms, piece by piece 47 ms, one memcpy
 * per section into rows one after another 35 ms). */
__attribute__((target("avx2"))) static void merge_avx2(const uint8_t *lo, const uint8_t *hi, size_t rows, size_t np,
                                                       size_t seg, size_t ss, uint16_t *x, int big)
{
    const int stream = big && ((uintptr_t)x & 1) == 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t p = 0; p < np; p++) {
            const uint8_t *l0 = lo + (r * np + p) * seg, *h0 = hi + (r * np + p) * seg;
            uint16_t *y = x + piece_at(r, p, seg, ss);
            size_t i = 0;
            if (stream) { /* scalar head up to a 32-byte boundary */
                size_t head = ((32 - ((uintptr_t)y & 31)) & 31) / 2;
                i = head < seg ? head : seg;
                merge_scalar(l0, h0, i, y);
            }
            for (; i + 32 <= seg; i += 32)
                merge32(l0 + i, h0 + i, y + i, stream);
            merge_scalar(l0 + i, h0 + i, seg - i, y + i);
        }
    if (stream)
        _mm_sfence(); /* the stores are visible before the chunk is handed over */
}

/* kvb_copy_rows, in merge_avx2's order: a memcpy call per piece cost more than the bytes. */
__attribute__((target("avx2"))) static void copy_avx2(const uint8_t *src, size_t rows, size_t np, size_t seg,
                                                      size_t ss, uint16_t *x, int big)
{
    const int stream = big && ((uintptr_t)x & 1) == 0;
    for (size_t r = 0; r < rows; r++)
        for (size_t p = 0; p < np; p++) {
            const uint8_t *a = src + 2 * (r * np + p) * seg;
            uint16_t *y = x + piece_at(r, p, seg, ss);
            size_t i = 0;
            if (stream) {
                size_t head = ((32 - ((uintptr_t)y & 31)) & 31) / 2;
                i = head < seg ? head : seg;
                if (i)
                    memcpy(y, a, 2 * i);
            }
            for (; i + 16 <= seg; i += 16) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(a + 2 * i));
                if (stream)
                    _mm256_stream_si256((__m256i *)(y + i), v);
                else
                    _mm256_storeu_si256((__m256i *)(y + i), v);
            }
            if (i < seg) /* a call even for no bytes cost a fifth of a head piece's copy */
                memcpy(y + i, a + 2 * i, 2 * (seg - i));
        }
    if (stream)
        _mm_sfence();
}

/* copy_avx2's streaming case with 64-byte stores, each filling a whole line (the pieces' heads
 * up to a 64-byte boundary stored as they are). In a 4096-token Qwen3-0.6B f16 load, two
 * threads placing 8 head pieces a row beside the kernel's page-cache reads, perf found the
 * 32-byte streaming stores stalled, and the load took 0.086 s and 0.158 s of CPU, against
 * 0.080 s and 0.148 s with these. (merge_avx2 so widened made no measurable difference to an
 * f16-zstd load, whose time is zstd's.) */
#define WIDE __attribute__((target("avx512f,avx512bw,avx2")))

static WIDE inline size_t wide_head(const uint16_t *y, size_t seg)
{
    const size_t head = ((64 - ((uintptr_t)y & 63)) & 63) / 2;
    return head < seg ? head : seg;
}

WIDE static void copy_avx512(const uint8_t *src, size_t rows, size_t np, size_t seg, size_t ss, uint16_t *x)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t p = 0; p < np; p++) {
            const uint8_t *a = src + 2 * (r * np + p) * seg;
            uint16_t *y = x + piece_at(r, p, seg, ss);
            size_t i = wide_head(y, seg);
            if (i)
                memcpy(y, a, 2 * i);
            for (; i + 32 <= seg; i += 32)
                _mm512_stream_si512((void *)(y + i), _mm512_loadu_si512((const void *)(a + 2 * i)));
            if (i < seg)
                memcpy(y + i, a + 2 * i, 2 * (seg - i));
        }
    _mm_sfence();
}
#undef WIDE
#endif

void kvb_split_planes(const uint16_t *x, size_t n, uint8_t *lo, uint8_t *hi)
{
#if defined(KVB_X86) && defined(KVB_HOST_LE)
    if (kvb_simd_ok()) {
        split_avx2(x, n, lo, hi);
        return;
    }
#endif
    split_scalar(x, n, lo, hi);
}

void kvb_merge_planes(const uint8_t *lo, const uint8_t *hi, size_t rows, size_t np, size_t seg, size_t ss,
                      uint16_t *x, int big)
{
#if defined(KVB_X86) && defined(KVB_HOST_LE)
    if (kvb_simd_ok()) {
        merge_avx2(lo, hi, rows, np, seg, ss, x, big);
        return;
    }
#endif
    (void)big;
    merge_rows_scalar(lo, hi, rows, np, seg, ss, x);
}

void kvb_copy_rows(const uint8_t *src, size_t rows, size_t np, size_t seg, size_t ss, uint16_t *x, int big)
{
#if defined(KVB_X86) && defined(KVB_HOST_LE)
    const int level = simd_level();
    if (level) {
        if (level > 1 && big && ((uintptr_t)x & 1) == 0)
            copy_avx512(src, rows, np, seg, ss, x);
        else
            copy_avx2(src, rows, np, seg, ss, x, big);
        return;
    }
#endif
    (void)big;
    for (size_t r = 0; r < rows; r++)
        for (size_t p = 0; p < np; p++)
            memcpy(x + piece_at(r, p, seg, ss), src + 2 * (r * np + p) * seg, 2 * seg);
}

