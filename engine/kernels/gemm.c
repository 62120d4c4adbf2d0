/* gemm.c: Y = X W^T in the fixed per-element order of gemm_internal.h: an AVX2/FMA
 * register-blocked kernel (4 X rows x 3 W rows, K in L1-sized blocks) and a portable scalar
 * one that performs the same operations lane by lane, both on packed panels.
 *
 * Why not OpenBLAS sgemm: its per-row results change with M and with a row's place in the
 * call, so split-invariant prefill needed fixed 64-row tiles over f32 copies of every weight,
 * which made a 1-token prefill cost a 64-row product plus dequantizing the whole model. With
 * the order fixed here, a product has the same bits for any number of rows, and small
 * prefills only touch each weight once. */
#include "engine/kernels/gemm_internal.h"
#include "base/base.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

enum {
    MR = ENG_GEMM_MR, /* X rows per register tile */
    NR = ENG_GEMM_NR, /* W rows per register tile: 12 accumulators + 3 W + 1 X = 16 ymm */
    JB = 48,          /* W rows whose accumulators persist across K blocks */
    KC = 512,         /* K block: an X group's slice (8 KiB) stays in L1 while JB W rows pass */
};

void eng_gemm_pack_row(const float *src, int K, int r, int rows, int group, float *dst)
{
    const int Kr = eng_gemm_kr(K), r0 = r / group * group;
    const int g = rows - r0 < group ? rows - r0 : group, i = r - r0;
    float *p = dst + (size_t)r0 * Kr + (size_t)i * 8;
    int k = 0;
    for (; k + 8 <= K; k += 8, p += (size_t)g * 8)
        memcpy(p, src + k, 8 * sizeof(float));
    if (k < K) {
        for (int t = 0; t < 8; t++)
            p[t] = k + t < K ? src[k + t] : 0.0f;
    }
}

/* Panel addressing: group base pointer, then step s, row i at base + (s * g + i) * 8. */
static const float *group_base(const float *P, int r0, int Kr) { return P + (size_t)r0 * Kr; }

/* ---- scalar: the reference order ---- */

static float reduce8(const float l[8])
{
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

static void gemm_scalar(const float *Xp, int M, const float *Wp, int N, int K, float *Y, size_t ldy)
{
    const int Kr = eng_gemm_kr(K), steps = Kr / 8;
    for (int i = 0; i < M; i++) {
        const int gi = M - i / MR * MR < MR ? M - i / MR * MR : MR;
        const float *xb = group_base(Xp, i / MR * MR, Kr) + (size_t)(i % MR) * 8;
        for (int j = 0; j < N; j++) {
            const int gj = N - j / NR * NR < NR ? N - j / NR * NR : NR;
            const float *wb = group_base(Wp, j / NR * NR, Kr) + (size_t)(j % NR) * 8;
            float l[8] = {0};
            for (int s = 0; s < steps; s++)
                for (int t = 0; t < 8; t++)
                    l[t] = fmaf(xb[(size_t)s * gi * 8 + t], wb[(size_t)s * gj * 8 + t], l[t]);
            Y[(size_t)i * ldy + j] = reduce8(l);
        }
    }
}

#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma")))

static AVX2 inline float hsum8(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

/* One step of 8 columns for an (mr, nr) tile, mr * nr <= 12. In eng_gemm_f16 a lone X row faces
 * 6 W rows: with 3, as in the panel kernel, its FMA chains wait on each other (half the speed). */
enum { NR1 = 6 };
static AVX2 inline __attribute__((always_inline)) void tile_step(const float *x, int mr,
                                                                const __m256 *wv, int nr,
                                                                __m256 acc[][NR1])
{
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++) {
        const __m256 xv = _mm256_load_ps(x + i * 8);
#pragma GCC unroll 6
        for (int j = 0; j < nr; j++)
            acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
}

/* One (mr, nr) register tile over steps [s0, s1) of packed groups xb (mr rows) and wb (nr
 * rows): accumulators come from st (or +0 when first) and go back to st; st holds MR * NR
 * vectors, (i, j) at (i * NR + j) * 8. */
static AVX2 inline __attribute__((always_inline)) void tile(const float *xb, const float *wb,
                                                            int mr, int nr, int s0, int s1,
                                                            float *st, int first)
{
    __m256 acc[MR][NR1];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 3
        for (int j = 0; j < nr; j++)
            acc[i][j] = first ? _mm256_setzero_ps() : _mm256_load_ps(st + (i * NR + j) * 8);
    const float *x = xb + (size_t)s0 * mr * 8, *w = wb + (size_t)s0 * nr * 8;
    for (int s = s0; s < s1; s++, x += mr * 8, w += nr * 8) {
        __m256 wv[NR];
#pragma GCC unroll 3
        for (int j = 0; j < nr; j++)
            wv[j] = _mm256_load_ps(w + j * 8);
        tile_step(x, mr, wv, nr, acc);
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 3
        for (int j = 0; j < nr; j++)
            _mm256_store_ps(st + (i * NR + j) * 8, acc[i][j]);
}

typedef void (*tile_fn)(const float *xb, const float *wb, int s0, int s1, float *st, int first);

#define DEF_TILE(m, n)                                                                            \
    static AVX2 void tile_##m##_##n(const float *xb, const float *wb, int s0, int s1, float *st,  \
                                    int first)                                                    \
    {                                                                                             \
        tile(xb, wb, m, n, s0, s1, st, first);                                                    \
    }
/* Every tile shape up to MR x NR, for the kernels below and their tables. */
#define TILE_SHAPES(X) X(1, 1) X(1, 2) X(1, 3) X(2, 1) X(2, 2) X(2, 3) X(3, 1) X(3, 2) X(3, 3) \
                       X(4, 1) X(4, 2) X(4, 3)
#define TILE_TABLE(prefix)                                                                        \
    {                                                                                             \
        {prefix##1_1, prefix##1_2, prefix##1_3}, {prefix##2_1, prefix##2_2, prefix##2_3},         \
            {prefix##3_1, prefix##3_2, prefix##3_3}, {prefix##4_1, prefix##4_2, prefix##4_3},     \
    }
TILE_SHAPES(DEF_TILE)
#undef DEF_TILE

static const tile_fn k_tiles[MR][NR] = TILE_TABLE(tile_);

static AVX2 void gemm_avx2(const float *Xp, int M, const float *Wp, int N, int K, float *Y, size_t ldy)
{
    /* accumulators of one MR x JB block: (JB / NR) tiles of MR * NR vectors */
    float st[(JB / NR) * MR * NR * 8] __attribute__((aligned(32)));
    const int Kr = eng_gemm_kr(K), steps = Kr / 8;
    for (int i0 = 0; i0 < M; i0 += MR) {
        const int mr = M - i0 < MR ? M - i0 : MR;
        const float *xb = group_base(Xp, i0, Kr);
        for (int jb = 0; jb < N; jb += JB) {
            const int jn = N - jb < JB ? N - jb : JB;
            const int nt = (jn + NR - 1) / NR;
            for (int s0 = 0; s0 < steps; s0 += KC / 8) {
                const int s1 = steps - s0 < KC / 8 ? steps : s0 + KC / 8;
                /* while this group's tiles run, pull the next group's slice of X (which comes
                 * from L3 for long prompts) into cache, a share per tile */
                const float *nx = NULL;
                size_t nlines = 0, per = 0;
                if (i0 + MR < M && jb + JB >= N) {
                    const int nmr = M - i0 - MR < MR ? M - i0 - MR : MR;
                    nx = group_base(Xp, i0 + MR, Kr) + (size_t)s0 * nmr * 8;
                    nlines = (size_t)(s1 - s0) * nmr * 8 / 16;
                    per = (nlines + (size_t)nt - 1) / (size_t)nt;
                }
                for (int t = 0; t < nt; t++) {
                    const int nr = jn - t * NR < NR ? jn - t * NR : NR;
                    for (size_t l = (size_t)t * per; nx && l < (size_t)(t + 1) * per && l < nlines; l++)
                        _mm_prefetch((const char *)(nx + l * 16), _MM_HINT_T0);
                    k_tiles[mr - 1][nr - 1](xb, group_base(Wp, jb + t * NR, Kr), s0, s1,
                                            st + t * MR * NR * 8, s0 == 0);
                }
            }
            for (int t = 0; t * NR < jn; t++) {
                const int nr = jn - t * NR < NR ? jn - t * NR : NR;
                for (int i = 0; i < mr; i++)
                    for (int j = 0; j < nr; j++)
                        Y[(size_t)(i0 + i) * ldy + jb + t * NR + j] =
                            hsum8(_mm256_load_ps(st + t * MR * NR * 8 + (i * NR + j) * 8));
            }
        }
    }
}

/* ---- AVX-512: the same lanes, two elements per register ----
 * A zmm register holds the 8 lanes of two outputs: X rows 2p and 2p + 1 of a group (adjacent
 * in the panel, so one load) against one W row (its 8 values broadcast to both halves). Each
 * lane sees the same FMAs in the same order as in tile(), and the halves are reduced with
 * hsum8, so the bits are those of the AVX2 and scalar kernels; only the width changes. A tile
 * is two full X groups (8 rows) by up to two W groups (6 rows): 24 accumulators. Partial X
 * groups go to the AVX2 kernel. */
#define AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))

enum { ZW = 2 * NR }; /* W rows per AVX-512 tile */

/* One tile over steps [s0, s1): nx (1 or 2) full X groups at x[0..nx), W rows 0..g0-1 from the
 * group at w0 (g0 rows) and rows g0..g0+g1-1 from the group at w1 (g1 rows, 0 when absent).
 * Accumulators come from st (or +0 when first) and go back: pair a (0..3), W row j at
 * (a * ZW + j) * 16. */
static AVX512 inline __attribute__((always_inline)) void ztile(const float *const *x, int nx,
                                                               const float *w0, int g0,
                                                               const float *w1, int g1, int s0,
                                                               int s1, float *st, int first)
{
    __m512 acc[2 * 2][ZW];
    const int na = 2 * nx, nw = g0 + g1;
#pragma GCC unroll 4
    for (int a = 0; a < na; a++)
#pragma GCC unroll 6
        for (int j = 0; j < nw; j++)
            acc[a][j] = first ? _mm512_setzero_ps() : _mm512_load_ps(st + (a * ZW + j) * 16);
    for (int s = s0; s < s1; s++) {
        __m512 xv[4];
#pragma GCC unroll 2
        for (int g = 0; g < nx; g++) {
            xv[2 * g] = _mm512_loadu_ps(x[g] + (size_t)s * MR * 8);
            xv[2 * g + 1] = _mm512_loadu_ps(x[g] + (size_t)s * MR * 8 + 16);
        }
#pragma GCC unroll 6
        for (int j = 0; j < nw; j++) {
            const float *w = j < g0 ? w0 + ((size_t)s * g0 + j) * 8 : w1 + ((size_t)s * g1 + j - g0) * 8;
            const __m512 wv = _mm512_broadcast_f32x8(_mm256_load_ps(w));
#pragma GCC unroll 4
            for (int a = 0; a < na; a++)
                acc[a][j] = _mm512_fmadd_ps(xv[a], wv, acc[a][j]);
        }
    }
#pragma GCC unroll 4
    for (int a = 0; a < na; a++)
#pragma GCC unroll 6
        for (int j = 0; j < nw; j++)
            _mm512_store_ps(st + (a * ZW + j) * 16, acc[a][j]);
}

typedef void (*ztile_fn)(const float *const *x, const float *w0, const float *w1, int s0, int s1,
                         float *st, int first);

#define DEF_ZTILE(nx, g0, g1)                                                                     \
    static AVX512 void ztile_##nx##_##g0##_##g1(const float *const *x, const float *w0,           \
                                                const float *w1, int s0, int s1, float *st,       \
                                                int first)                                        \
    {                                                                                             \
        ztile(x, nx, w0, g0, w1, g1, s0, s1, st, first);                                          \
    }
DEF_ZTILE(2, 3, 3)
DEF_ZTILE(2, 3, 0)
DEF_ZTILE(2, 2, 0)
DEF_ZTILE(2, 1, 0)
DEF_ZTILE(1, 3, 3)
DEF_ZTILE(1, 3, 0)
DEF_ZTILE(1, 2, 0)
DEF_ZTILE(1, 1, 0)
#undef DEF_ZTILE

/* [nx - 1][first group's rows - 1], the second group full when present */
static const ztile_fn k_ztiles[2][NR] = {{ztile_1_1_0, ztile_1_2_0, ztile_1_3_0},
                                         {ztile_2_1_0, ztile_2_2_0, ztile_2_3_0}};
static const ztile_fn k_ztiles_pair[2] = {ztile_1_3_3, ztile_2_3_3};

static AVX512 void gemm_avx512(const float *Xp, int M, const float *Wp, int N, int K, float *Y,
                               size_t ldy)
{
    float st[(JB / ZW) * 4 * ZW * 16] __attribute__((aligned(64)));
    const int Kr = eng_gemm_kr(K), steps = Kr / 8, full = M / MR * MR;
    for (int i0 = 0; i0 < full; i0 += 2 * MR) {
        const int nx = full - i0 >= 2 * MR ? 2 : 1;
        const float *x[2] = {group_base(Xp, i0, Kr), nx == 2 ? group_base(Xp, i0 + MR, Kr) : NULL};
        for (int jb = 0; jb < N; jb += JB) {
            const int jn = N - jb < JB ? N - jb : JB, nt = (jn + ZW - 1) / ZW;
            for (int s0 = 0; s0 < steps; s0 += KC / 8) {
                const int s1 = steps - s0 < KC / 8 ? steps : s0 + KC / 8;
                for (int t = 0; t < nt; t++) {
                    /* r rows left in the block from j0: groups start at multiples of 3 */
                    const int j0 = jb + t * ZW, r = jn - t * ZW;
                    const float *w0 = group_base(Wp, j0, Kr);
                    float *ts = st + t * 4 * ZW * 16;
                    if (r >= ZW) {
                        k_ztiles_pair[nx - 1](x, w0, group_base(Wp, j0 + NR, Kr), s0, s1, ts, s0 == 0);
                        continue;
                    }
                    k_ztiles[nx - 1][(r < NR ? r : NR) - 1](x, w0, NULL, s0, s1, ts, s0 == 0);
                    if (r > NR) /* the last group, partial: its rows keep indices 3.. in ts */
                        k_ztiles[nx - 1][r - NR - 1](x, group_base(Wp, j0 + NR, Kr), NULL, s0, s1,
                                                     ts + NR * 16, s0 == 0);
                }
            }
            for (int t = 0; t < nt; t++) {
                const int nw = jn - t * ZW < ZW ? jn - t * ZW : ZW;
                for (int a = 0; a < 2 * nx; a++)
                    for (int j = 0; j < nw; j++) {
                        const __m512 v = _mm512_load_ps(st + t * 4 * ZW * 16 + (a * ZW + j) * 16);
                        float *y = Y + (size_t)(i0 + 2 * a) * ldy + jb + t * ZW + j;
                        y[0] = hsum8(_mm512_castps512_ps256(v));
                        y[ldy] = hsum8(_mm512_extractf32x8_ps(v, 1));
                    }
            }
        }
    }
    if (full < M)
        gemm_avx2(group_base(Xp, full, Kr), M - full, Wp, N, K, Y + (size_t)full * ldy, ldy);
}

/* ---- few X rows, F16 weights read in place ----
 * With a handful of X rows, converting W into panels costs more than the product: the
 * conversion writes four bytes for every two read, and nothing reuses them. Here each W row
 * is converted in registers as it streams by. The lanes, the order of their FMAs and hsum8
 * are those of tile(), and the f16 -> f32 conversion is exact, so the bits are the same. */
#define AVX2F16 __attribute__((target("avx2,fma,f16c")))

/* 8 f16 of a row tail (k < K < k + 8), zero-padded: columns past K read as 0. */
static AVX2F16 inline __m256 w8_tail(const uint16_t *w, int k, int K)
{
    uint16_t t[8] = {0};
    memcpy(t, w + k, sizeof(uint16_t) * (size_t)(K - k));
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)t));
}

static AVX2F16 inline __attribute__((always_inline)) void tile_f16(const float *xb, int mr,
                                                                   const uint16_t *w, size_t ldw,
                                                                   int nr, int K, float *Y, size_t ldy)
{
    __m256 acc[MR][NR1], wv[NR1];
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 6
        for (int j = 0; j < nr; j++)
            acc[i][j] = _mm256_setzero_ps();
    const float *x = xb;
    /* The next tile's rows, one cache line of each per 32 columns: with several rows streaming
     * at once the hardware prefetcher falls behind (measured: half the bandwidth of one row) */
    const uint16_t *next = w + (size_t)nr * ldw;
    int k = 0;
    for (; k + 8 <= K; k += 8, x += mr * 8) {
        if ((k & 31) == 0)
#pragma GCC unroll 6
            for (int j = 0; j < nr; j++)
                _mm_prefetch((const char *)(next + (size_t)j * ldw + k), _MM_HINT_T0);
#pragma GCC unroll 6
        for (int j = 0; j < nr; j++)
            wv[j] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + (size_t)j * ldw + k)));
        tile_step(x, mr, wv, nr, acc);
    }
    if (k < K) {
        for (int j = 0; j < nr; j++)
            wv[j] = w8_tail(w + (size_t)j * ldw, k, K);
        tile_step(x, mr, wv, nr, acc);
    }
#pragma GCC unroll 4
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 6
        for (int j = 0; j < nr; j++)
            Y[(size_t)i * ldy + j] = hsum8(acc[i][j]);
}

typedef void (*tile_f16_fn)(const float *xb, const uint16_t *w, size_t ldw, int K, float *Y, size_t ldy);

#define DEF_TILE_F16(m, n)                                                                        \
    static AVX2F16 void tile_f16_##m##_##n(const float *xb, const uint16_t *w, size_t ldw, int K, \
                                           float *Y, size_t ldy)                                  \
    {                                                                                             \
        tile_f16(xb, m, w, ldw, n, K, Y, ldy);                                                    \
    }
TILE_SHAPES(DEF_TILE_F16)
DEF_TILE_F16(1, 4)
DEF_TILE_F16(1, 5)
DEF_TILE_F16(1, 6)
#undef DEF_TILE_F16

static const tile_f16_fn k_tiles_f16[MR][NR] = TILE_TABLE(tile_f16_);
static const tile_f16_fn k_row_f16[NR1] = {tile_f16_1_1, tile_f16_1_2, tile_f16_1_3,
                                           tile_f16_1_4, tile_f16_1_5, tile_f16_1_6};

/* AVX-512, F16 weights in place: every X row of the call against ZNW W rows at a time, so that
 * W streams from memory once per call, not once per X group (an 8-token prefill read every
 * weight twice). As in gemm_avx512 a zmm holds the lanes of X rows 2p and 2p + 1 (adjacent in
 * their group's panel: one load) against one W row, converted once into both halves; the lanes,
 * their FMAs and hsum8 are those of tile(), so the bits are too. */
#define AVX512F16 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c")))

/* A tile is up to 4 row pairs (two X groups) by ZNW W rows: 24 accumulators + 6 W + 1 X = 31
 * zmm; or, for 9 or 10 rows, ZP pairs (three groups) by ZNW5 W rows: 25 + 5 + 1. More X rows go
 * in further blocks against the same W rows, which then come from cache: 8 pairs by 3 W rows
 * measured slower (the compiler folds each X load into every FMA), and a ninth row in a block of
 * its own (a BOS before an 8-token prompt) cost 14 ms of a 99 ms pass over 4096 cells. */
enum { ZP = MR + 1, ZNW = 6, ZNW5 = 5 };

/* 8 f16 at w, the first n of them (the rest read as 0), converted into both halves. */
static AVX512F16 inline __m512 zw8(const uint16_t *w, __mmask8 n)
{
    return _mm512_cvtph_ps(_mm256_broadcastsi128_si256(_mm_maskz_loadu_epi16(n, w)));
}

/* One step of 8 columns for np pairs of up to three X groups, pair p in group p / 2: the full
 * groups at x + g * gs (step stride 4 * 8 floats), the last at xl. The last pair loads under lm:
 * where its second row is absent those lanes read as 0 and are never stored. */
static AVX512F16 inline __attribute__((always_inline)) void zstep(const float *x, size_t gs,
                                                                  const float *xl, __mmask16 lm,
                                                                  int np, const __m512 *wv, int nw,
                                                                  __m512 acc[][ZNW])
{
#pragma GCC unroll 5
    for (int p = 0; p < np; p++) {
        const float *a = (p / 2 == (np - 1) / 2 ? xl : x + (size_t)(p / 2) * gs) + (p % 2) * 16;
        const __m512 xv = p == np - 1 ? _mm512_maskz_loadu_ps(lm, a) : _mm512_loadu_ps(a);
#pragma GCC unroll 6
        for (int j = 0; j < nw; j++)
            acc[p][j] = _mm512_fmadd_ps(xv, wv[j], acc[p][j]);
    }
}

/* Y rows 0..m-1 (m = 2 * np or 2 * np - 1), columns 0..nw-1, from the X groups at xb (the
 * others, if any, each gs floats on) and the W rows at w + j * ldw. */
static AVX512F16 inline __attribute__((always_inline)) void zf16(const float *xb, size_t gs, int m,
                                                                 const uint16_t *w, size_t ldw,
                                                                 int np, int nw, int K, float *Y,
                                                                 size_t ldy)
{
    __m512 acc[ZP][ZNW];
#pragma GCC unroll 5
    for (int p = 0; p < np; p++)
#pragma GCC unroll 6
        for (int j = 0; j < nw; j++)
            acc[p][j] = _mm512_setzero_ps();
    const int gl = (np - 1) / 2;                 /* the last group */
    const size_t ls = (size_t)(m - gl * MR) * 8; /* its step stride */
    const __mmask16 lm = m % 2 ? 0xff : 0xffff;
    const float *x = xb, *xl = xb + (size_t)gl * gs;
    /* the next tile's rows, as in tile_f16 */
    const uint16_t *next = w + (size_t)nw * ldw;
    int k = 0;
    for (; k + 8 <= K; k += 8, x += MR * 8, xl += ls) {
        if ((k & 31) == 0)
#pragma GCC unroll 6
            for (int j = 0; j < nw; j++)
                _mm_prefetch((const char *)(next + (size_t)j * ldw + k), _MM_HINT_T0);
        __m512 wv[ZNW];
#pragma GCC unroll 6
        for (int j = 0; j < nw; j++)
            wv[j] = _mm512_cvtph_ps(
                _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(w + (size_t)j * ldw + k))));
        zstep(x, gs, xl, lm, np, wv, nw, acc);
    }
    if (k < K) {
        __m512 wv[ZNW];
        for (int j = 0; j < nw; j++)
            wv[j] = zw8(w + (size_t)j * ldw + k, (__mmask8)((1u << (K - k)) - 1));
        zstep(x, gs, xl, lm, np, wv, nw, acc);
    }
#pragma GCC unroll 5
    for (int p = 0; p < np; p++)
#pragma GCC unroll 6
        for (int j = 0; j < nw; j++) {
            float *y = Y + (size_t)(2 * p) * ldy + j;
            y[0] = hsum8(_mm512_castps512_ps256(acc[p][j]));
            if (2 * p + 1 < m)
                y[ldy] = hsum8(_mm512_extractf32x8_ps(acc[p][j], 1));
        }
}

typedef void (*zf16_fn)(const float *xb, size_t gs, int m, const uint16_t *w, size_t ldw, int K,
                        float *Y, size_t ldy);

#define DEF_ZF16(np, nw)                                                                          \
    static AVX512F16 void zf16_##np##_##nw(const float *xb, size_t gs, int m, const uint16_t *w,  \
                                           size_t ldw, int K, float *Y, size_t ldy)               \
    {                                                                                             \
        zf16(xb, gs, m, w, ldw, np, nw, K, Y, ldy);                                               \
    }
#define ZF16_ROW5(X, np) X(np, 1) X(np, 2) X(np, 3) X(np, 4) X(np, 5)
#define ZF16_ROW(X, np) ZF16_ROW5(X, np) X(np, 6)
ZF16_ROW(DEF_ZF16, 1)
ZF16_ROW(DEF_ZF16, 2)
ZF16_ROW(DEF_ZF16, 3)
ZF16_ROW(DEF_ZF16, 4)
ZF16_ROW5(DEF_ZF16, 5)
#undef DEF_ZF16
#define ZF16_ENTRY(np, nw) zf16_##np##_##nw,
static const zf16_fn k_zf16[ZP][ZNW] = {{ZF16_ROW(ZF16_ENTRY, 1)}, {ZF16_ROW(ZF16_ENTRY, 2)},
                                        {ZF16_ROW(ZF16_ENTRY, 3)}, {ZF16_ROW(ZF16_ENTRY, 4)},
                                        {ZF16_ROW5(ZF16_ENTRY, 5)}};
#undef ZF16_ENTRY
#undef ZF16_ROW
#undef ZF16_ROW5

static AVX512F16 void gemm_f16_avx512(const float *Xp, int M, const uint16_t *W, size_t ldw, int N,
                                      int K, float *Y, size_t ldy)
{
    /* W in blocks of about 128 KiB, which stay in L2 while each 8-row X block passes (and that
     * X block stays in L1 across the tiles where K is small): W comes from memory once. Tiles of
     * equal width: 15 rows as 5 + 5 + 5, not 6 + 6 + 3 with a half-empty last tile. */
    const int Kr = eng_gemm_kr(K), jb = 65536 / K > ZNW ? 65536 / K : ZNW;
    for (int b0 = 0; b0 < N; b0 += jb) {
        const int bn = N - b0 < jb ? N - b0 : jb;
        /* blocks of 8 rows, the last of up to 10 */
        for (int i0 = 0, m; i0 < M; i0 += m) {
            m = M - i0 <= 2 * ZP ? M - i0 : 2 * MR;
            const int zn = m > 2 * MR ? ZNW5 : ZNW, nt = (bn + zn - 1) / zn;
            const int wide = (bn + nt - 1) / nt;
            for (int j0 = b0; j0 < b0 + bn; j0 += wide) {
                const int nr = b0 + bn - j0 < wide ? b0 + bn - j0 : wide;
                k_zf16[(m + 1) / 2 - 1][nr - 1](group_base(Xp, i0, Kr), (size_t)MR * Kr, m,
                                                W + (size_t)j0 * ldw, ldw, K, Y + (size_t)i0 * ldy + j0,
                                                ldy);
            }
        }
    }
}
#endif

static int g_force; /* an eng_gemm_level, ENG_GEMM_AUTO for the CPU's best */

int eng_gemm_force(int level)
{
    int prev = g_force;
    g_force = level;
    return prev;
}

int eng_gemm_level(void)
{
#if defined(__x86_64__)
    if (g_force != ENG_GEMM_SCALAR && base_cpu_has(BASE_CPU_AVX2 | BASE_CPU_FMA)) {
        if (g_force != ENG_GEMM_AVX2 && base_cpu_has(BASE_CPU_AVX512))
            return ENG_GEMM_AVX512;
        return ENG_GEMM_AVX2;
    }
#endif
    return ENG_GEMM_SCALAR;
}

void eng_gemm_packed(const float *Xp, int M, const float *Wp, int N, int K, float *Y, size_t ldy)
{
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            memset(Y + (size_t)i * ldy, 0, sizeof(float) * (size_t)N);
        return;
    }
    switch (eng_gemm_level()) {
#if defined(__x86_64__)
    case ENG_GEMM_AVX512: gemm_avx512(Xp, M, Wp, N, K, Y, ldy); return;
    case ENG_GEMM_AVX2: gemm_avx2(Xp, M, Wp, N, K, Y, ldy); return;
#endif
    default: gemm_scalar(Xp, M, Wp, N, K, Y, ldy);
    }
}

int eng_gemm_f16_in_place(void)
{
#if defined(__x86_64__)
    return eng_gemm_level() != ENG_GEMM_SCALAR && base_cpu_has(BASE_CPU_F16C);
#else
    return 0;
#endif
}

int eng_gemm_f16(const float *Xp, int M, const uint16_t *W, size_t ldw, int N, int K, float *Y, size_t ldy)
{
#if defined(__x86_64__)
    if (!eng_gemm_f16_in_place() || K <= 0)
        return 0;
    /* a lone row would fill half of each zmm: the AVX2 row kernel does the same work */
    if (eng_gemm_level() == ENG_GEMM_AVX512 && M > 1) {
        gemm_f16_avx512(Xp, M, W, ldw, N, K, Y, ldy);
        return 1;
    }
    const int Kr = eng_gemm_kr(K);
    for (int i0 = 0; i0 < M; i0 += MR) {
        const int mr = M - i0 < MR ? M - i0 : MR, wide = mr == 1 ? NR1 : NR;
        for (int j0 = 0; j0 < N; j0 += wide) {
            const int nr = N - j0 < wide ? N - j0 : wide;
            (mr == 1 ? k_row_f16[nr - 1] : k_tiles_f16[mr - 1][nr - 1])(
                group_base(Xp, i0, Kr), W + (size_t)j0 * ldw, ldw, K, Y + (size_t)i0 * ldy + j0, ldy);
        }
    }
    return 1;
#else
    (void)Xp, (void)M, (void)W, (void)ldw, (void)N, (void)K, (void)Y, (void)ldy;
    return 0;
#endif
}

const char *eng_gemm_kernel(void)
{
    static const char *const names[] = {"scalar", "scalar", "avx2", "avx512"};
    return names[eng_gemm_level()];
}
