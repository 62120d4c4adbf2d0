/* kvb_codec.c: the chunk codecs of spec/kvblob.md section "Codecs": f16 (raw), f16-zstd
 * (a zstd frame of the high bytes, then the low bytes raw), q8 and q4 (K scaled per
 * channel, V per token, f16 scales, zstd). The q8/q4 dequantisation has an AVX2/F16C version
 * chosen at run time, bit-identical to the scalar one; the byte planes are kvb_planes.c's. */
#include "format/kvb_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#ifdef KVB_X86
#include <immintrin.h>
#endif

struct kvb_codec_ctx {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    int level;
    uint8_t *scratch;   /* shuffled / quantised payload before zstd */
    size_t scratch_cap;
    float *fscale;      /* q8/q4 decode: one layer's K scales as f32 */
    size_t fscale_cap;  /* floats */
};

/* Scratch grows to a chunk's plane (14.7 MB for 256 tokens of Qwen3-0.6B) and is kept; a
 * kvb_big_alloc buffer, so it takes a few 2 MiB page faults where 4 KiB pages took 7-10 ms
 * of faults per context, a sixth of a 512-token load. */
static void scratch_free(kvb_codec_ctx *c)
{
    kvb_big_free(c->scratch, c->scratch_cap);
    c->scratch = NULL;
    c->scratch_cap = 0;
}

static uint8_t *scratch(kvb_codec_ctx *c, size_t n)
{
    if (c->scratch_cap < n) {
        scratch_free(c);
        c->scratch = kvb_big_alloc(n, &c->scratch_cap);
    }
    return c->scratch;
}

kvb_codec_ctx *kvb_codec_ctx_create(int zstd_level)
{
    kvb_codec_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->level = zstd_level ? zstd_level : KVB_DEFAULT_ZSTD_LEVEL;
    return c;
}

void kvb_codec_ctx_free(kvb_codec_ctx *c)
{
    if (!c)
        return;
    ZSTD_freeCCtx(c->cctx);
    ZSTD_freeDCtx(c->dctx);
    scratch_free(c);
    free(c->fscale);
    free(c);
}

/* Bytes of one layer's quantised payload for n tokens: K scales, V scales, K codes, V codes. */
static uint64_t q_layer_bytes(kvb_codec codec, uint32_t n, uint32_t kv_dim)
{
    uint64_t vals = (uint64_t)n * kv_dim;
    uint64_t codes = codec == KVB_CODEC_Q8 ? vals : (vals + 1) / 2;
    return 2ull * kv_dim + 2ull * n + 2 * codes;
}

static uint64_t payload_bytes(kvb_codec codec, uint32_t n_layer, uint32_t n, uint32_t kv_dim)
{
    if (codec == KVB_CODEC_Q8 || codec == KVB_CODEC_Q4)
        return n_layer * q_layer_bytes(codec, n, kv_dim);
    return 2 * kvb_chunk_values(n_layer, n, kv_dim);
}

uint64_t kvb_codec_min_stored(kvb_codec c, uint32_t n_layer, uint32_t n, uint32_t kv_dim)
{
    const uint64_t p = payload_bytes(c, n_layer, n, kv_dim);
    if (c == KVB_CODEC_F16)
        return p;
    if (c == KVB_CODEC_F16_ZSTD) /* a frame of at least a byte, then the p/2 raw low bytes */
        return p / 2 + 1;
    return 1;
}

uint64_t kvb_codec_max_stored(kvb_codec c, uint32_t n_layer, uint32_t n, uint32_t kv_dim)
{
    uint64_t p = payload_bytes(c, n_layer, n, kv_dim);
    if (c == KVB_CODEC_F16)
        return p;
    /* ZSTD_compressBound's formula, computed in 64 bits: size + size/256 + small margin; for
     * f16-zstd (a frame of p/2 high bytes, then p/2 raw low bytes) this is a loose bound */
    return p + (p >> 8) + 1024;
}

/* The pieces of a section's (n, kv_dim) rows and where each goes: piece s of every row lands
 * contiguously at dst + s * seg_stride (kvb_rows); seg 0 is one piece, the whole rows. */
static uint32_t pieces(const kvb_rows *L, uint32_t kv_dim, uint32_t *seg)
{
    *seg = L && L->seg ? L->seg : kv_dim;
    return kv_dim / *seg;
}

/* ---- scale selection shared by q8 and q4 ----
 * The stored scale s is the smallest f16 with s * qmax >= maxabs, so every |x| / s <= qmax and
 * the rounding error is at most s/2 (spec: error bound). */
static uint16_t pick_scale(float maxabs, int qmax)
{
    if (!(maxabs > 0.0f))
        return 0;
    uint16_t s = base_f32_to_f16(maxabs / (float)qmax);
    if (s == 0)
        s = 1; /* smallest subnormal, 2^-24 */
    while (base_f16_to_f32(s) * (float)qmax < maxabs && s < 0x7bff)
        s++; /* next f16 up: positive f16 bit patterns are ordered like their values */
    while (s > 1 && base_f16_to_f32((uint16_t)(s - 1)) * (float)qmax >= maxabs)
        s--; /* double rounding of maxabs/qmax can overshoot by one: keep the smallest */
    return s;
}

static int quant(float x, float s, int qmax)
{
    float q = s > 0.0f ? nearbyintf(x / s) : 0.0f;
    if (q > (float)qmax)
        q = (float)qmax;
    if (q < -(float)qmax)
        q = -(float)qmax;
    return (int)q;
}

static void put_code(uint8_t *codes, kvb_codec codec, size_t i, int q)
{
    if (codec == KVB_CODEC_Q8) {
        codes[i] = (uint8_t)(int8_t)q;
    } else {
        uint8_t nib = (uint8_t)(q + 8);
        if (i & 1)
            codes[i >> 1] = (uint8_t)((codes[i >> 1] & 0x0f) | (nib << 4));
        else
            codes[i >> 1] = nib; /* clears the high nibble, set by the odd neighbour next */
    }
}

static int get_code(const uint8_t *codes, kvb_codec codec, size_t i)
{
    if (codec == KVB_CODEC_Q8)
        return (int8_t)codes[i];
    return (int)((codes[i >> 1] >> ((i & 1) * 4)) & 0x0f) - 8;
}

/* 1 if the f16 bit pattern is inf or NaN. */
static int f16_nonfinite(uint16_t h) { return (h & 0x7c00) == 0x7c00; }

kvb_status kvb_chunk_check(kvb_codec codec, const uint16_t *kv, uint32_t n_layer, uint32_t n, uint32_t kv_dim,
                           char *err, size_t errlen)
{
    if (codec != KVB_CODEC_Q8 && codec != KVB_CODEC_Q4)
        return KVB_OK; /* the lossless codecs carry any bit pattern */
    size_t layer_vals = (size_t)n * kv_dim;
    for (uint32_t l = 0; l < n_layer; l++) {
        const uint16_t *k = kv + 2 * l * layer_vals, *v = k + layer_vals;
        for (size_t i = 0; i < layer_vals; i++)
            if (f16_nonfinite(k[i]) || f16_nonfinite(v[i]))
                return kvb_fail(err, errlen, KVB_ERR_USAGE,
                                "layer %u token %zu channel %zu: non-finite K or V value; %s needs finite values",
                                l, i / kv_dim, i % kv_dim, kvb_codec_name(codec));
    }
    return KVB_OK;
}

/* Quantises one layer: k, v (n, kv_dim) -> p (q_layer_bytes); values are finite (checked). */
static void quant_layer(kvb_codec codec, const uint16_t *k, const uint16_t *v, uint32_t n, uint32_t kv_dim,
                        uint8_t *p)
{
    int qmax = codec == KVB_CODEC_Q8 ? 127 : 7;
    uint8_t *ks = p, *vs = p + 2ull * kv_dim;
    uint8_t *kc = vs + 2ull * n;
    uint8_t *vc = kc + (codec == KVB_CODEC_Q8 ? (size_t)n * kv_dim : ((size_t)n * kv_dim + 1) / 2);
    for (uint32_t c = 0; c < kv_dim; c++) { /* K: one scale per channel */
        float m = 0.0f;
        for (uint32_t t = 0; t < n; t++)
            m = fmaxf(m, fabsf(base_f16_to_f32(k[(size_t)t * kv_dim + c])));
        uint16_t s = pick_scale(m, qmax);
        kvb_put16(ks + 2ull * c, s);
        float sf = base_f16_to_f32(s);
        for (uint32_t t = 0; t < n; t++) {
            size_t i = (size_t)t * kv_dim + c;
            put_code(kc, codec, i, quant(base_f16_to_f32(k[i]), sf, qmax));
        }
    }
    for (uint32_t t = 0; t < n; t++) { /* V: one scale per token */
        const uint16_t *row = v + (size_t)t * kv_dim;
        float m = 0.0f;
        for (uint32_t c = 0; c < kv_dim; c++)
            m = fmaxf(m, fabsf(base_f16_to_f32(row[c])));
        uint16_t s = pick_scale(m, qmax);
        kvb_put16(vs + 2ull * t, s);
        float sf = base_f16_to_f32(s);
        for (uint32_t c = 0; c < kv_dim; c++)
            put_code(vc, codec, (size_t)t * kv_dim + c, quant(base_f16_to_f32(row[c]), sf, qmax));
    }
}

/* ---- dequantisation: x' = f16_rne(code * scale), computed in f32 ---- */

/* One row of kv_dim values from codes starting at element index i (row-major in the layer). */
static void dequant_row_scalar(kvb_codec codec, const uint8_t *codes, size_t i, uint32_t kv_dim,
                               const float *sc, float s1, uint16_t *out)
{
    for (uint32_t c = 0; c < kv_dim; c++)
        out[c] = base_f32_to_f16((float)get_code(codes, codec, i + c) * (sc ? sc[c] : s1));
}

#ifdef KVB_X86
/* kv_dim % 16 == 0 and i even: 16 codes at a time, widened to f32, scaled, rounded by F16C
 * (round to nearest even, the same as base_f32_to_f16; no FMA, so the product is the same). */
__attribute__((target("avx2,f16c"))) static void dequant_row_avx2(kvb_codec codec, const uint8_t *codes, size_t i,
                                                                   uint32_t kv_dim, const float *sc, float s1,
                                                                   uint16_t *out)
{
    const __m256 one = _mm256_set1_ps(s1);
    const __m128i nib = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    for (uint32_t c = 0; c < kv_dim; c += 16) {
        __m128i q;
        if (codec == KVB_CODEC_Q8) {
            q = _mm_loadu_si128((const __m128i *)(codes + i + c));
        } else {
            __m128i b = _mm_loadl_epi64((const __m128i *)(codes + (i + c) / 2));
            __m128i lo = _mm_and_si128(b, nib), hi = _mm_and_si128(_mm_srli_epi16(b, 4), nib);
            q = _mm_sub_epi8(_mm_unpacklo_epi8(lo, hi), eight); /* element 2j low nibble, 2j+1 high */
        }
        __m256 f0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
        __m256 f1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(q, 8)));
        __m256 s0 = sc ? _mm256_loadu_ps(sc + c) : one, s8 = sc ? _mm256_loadu_ps(sc + c + 8) : one;
        _mm_storeu_si128((__m128i *)(out + c), _mm256_cvtps_ph(_mm256_mul_ps(f0, s0), _MM_FROUND_TO_NEAREST_INT));
        _mm_storeu_si128((__m128i *)(out + c + 8), _mm256_cvtps_ph(_mm256_mul_ps(f1, s8), _MM_FROUND_TO_NEAREST_INT));
    }
}
#endif

/* ksf: kv_dim floats of scratch for the K scales; row: 2 * kv_dim values of scratch when the
 * rows are cut into pieces (NULL when they are not). */
static void dequant_layer(kvb_codec codec, const uint8_t *p, uint32_t n, uint32_t kv_dim, float *ksf,
                          uint16_t *row, const kvb_rows *rows, uint16_t *k, uint16_t *v)
{
    const int cut = row != NULL;
    uint32_t seg, np = pieces(rows, kv_dim, &seg);
    const uint8_t *ks = p, *vs = p + 2ull * kv_dim;
    const uint8_t *kc = vs + 2ull * n;
    const uint8_t *vc = kc + (codec == KVB_CODEC_Q8 ? (size_t)n * kv_dim : ((size_t)n * kv_dim + 1) / 2);
    for (uint32_t c = 0; c < kv_dim; c++)
        ksf[c] = base_f16_to_f32(kvb_le16(ks + 2ull * c));
    int vec = kvb_simd_ok() && kv_dim % 16 == 0;
    for (uint32_t t = 0; t < n; t++) {
        float vsf = base_f16_to_f32(kvb_le16(vs + 2ull * t));
        size_t i = (size_t)t * kv_dim;
        uint16_t *ko = cut ? row : k + i, *vo = cut ? row + kv_dim : v + i;
#ifdef KVB_X86
        if (vec) {
            dequant_row_avx2(codec, kc, i, kv_dim, ksf, 0.0f, ko);
            dequant_row_avx2(codec, vc, i, kv_dim, NULL, vsf, vo);
        } else
#endif
        {
            dequant_row_scalar(codec, kc, i, kv_dim, ksf, 0.0f, ko);
            dequant_row_scalar(codec, vc, i, kv_dim, NULL, vsf, vo);
        }
        (void)vec;
        if (cut) { /* the row's pieces to their places, as bytes */
            kvb_copy_rows((const uint8_t *)ko, 1, np, seg, rows->seg_stride, k + (size_t)t * seg, 0);
            kvb_copy_rows((const uint8_t *)vo, 1, np, seg, rows->seg_stride, v + (size_t)t * seg, 0);
        }
    }
}

/* Compresses n bytes at src into one zstd frame. section > 0: the bytes are sections of that
 * many bytes with their own statistics (one layer's K or V), so each section ends a zstd block
 * and gets its own Huffman table instead of sharing a block with its neighbour. */
static kvb_status zstd_into(kvb_codec_ctx *c, uint8_t *dst, size_t cap, const uint8_t *src, size_t n, size_t section,
                            size_t *z, char *err, size_t errlen)
{
    if (!c->cctx) {
        if (!(c->cctx = ZSTD_createCCtx()))
            return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory creating a zstd context");
        /* KV bytes are noise-like: short matches barely shrink them but each one costs the
         * decoder a sequence, so matches shorter than 7 bytes are not searched for (decoding
         * is about 9% faster at the same ratio; spec/kvblob.md section 6). */
        if (ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, c->level)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_minMatch, 7)))
            return kvb_fail(err, errlen, KVB_ERR_INTERNAL, "zstd refused the compression parameters");
    }
    ZSTD_CCtx_reset(c->cctx, ZSTD_reset_session_only);
    ZSTD_CCtx_setPledgedSrcSize(c->cctx, n); /* the frame header carries the content size */
    if (section == 0 || section > n)
        section = n;
    ZSTD_outBuffer ob = {dst, cap, 0};
    for (size_t at = 0; at < n || n == 0;) {
        size_t len = n - at < section ? n - at : section;
        int last = at + len == n;
        ZSTD_inBuffer ib = {src + at, len, 0};
        size_t left;
        do
            left = ZSTD_compressStream2(c->cctx, &ob, &ib, last ? ZSTD_e_end : ZSTD_e_flush);
        while (!ZSTD_isError(left) && left != 0 && ob.pos < ob.size);
        if (ZSTD_isError(left) || left != 0)
            return kvb_fail(err, errlen, KVB_ERR_INTERNAL, "zstd compression failed: %s",
                            ZSTD_isError(left) ? ZSTD_getErrorName(left) : "output buffer too small");
        at += len;
        if (last)
            break;
    }
    *z = ob.pos;
    return KVB_OK;
}

/* f16-zstd: one zstd frame of the N high bytes (sign, exponent, top mantissa bits: they
 * compress), then the N low bytes as they are (mantissa noise that zstd cannot shrink; decoding
 * merges them straight from the stored bytes). */
static kvb_status encode_f16_zstd(kvb_codec_ctx *c, const uint16_t *kv, size_t nv, size_t section, uint8_t **out,
                                  size_t *outlen, char *err, size_t errlen)
{
    size_t bound = ZSTD_compressBound(nv);
    uint8_t *o = malloc(bound + nv);
    uint8_t *hi = scratch(c, 2 * nv), *lo = hi + nv;
    if (!o || !hi) {
        free(o);
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory encoding a chunk");
    }
    kvb_split_planes(kv, nv, lo, hi);
    size_t z;
    kvb_status st = zstd_into(c, o, bound, hi, nv, section, &z, err, errlen);
    if (st) {
        free(o);
        return st;
    }
    memcpy(o + z, lo, nv);
    uint8_t *shrunk = realloc(o, z + nv);
    *out = shrunk ? shrunk : o;
    *outlen = z + nv;
    return KVB_OK;
}

/* A chunk's zstd frame must declare exactly want bytes and span exactly its zlen stored bytes
 * (spec/kvblob.md section 6): checked before decompressing, so a signed-but-wrong chunk can
 * neither make us write past the buffer or spin on huge output, nor carry bytes after its frame
 * (a skippable frame, say) that no decoder looks at. what names the frame in the size error. */
static kvb_status frame_ok(const void *in, size_t zlen, uint64_t want, const char *what, char *err, size_t errlen)
{
    const unsigned long long fcs = ZSTD_getFrameContentSize(in, zlen);
    if (fcs != want)
        return kvb_fail(err, errlen, KVB_ERR_DECODE, "zstd frame declares %lld bytes, expected %llu",
                        fcs >= ZSTD_CONTENTSIZE_ERROR ? -1LL : (long long)fcs, (unsigned long long)want);
    const size_t fs = ZSTD_findFrameCompressedSize(in, zlen);
    if (fs != zlen)
        return kvb_fail(err, errlen, KVB_ERR_DECODE, "zstd frame %sis %lld bytes, expected %zu", what,
                        ZSTD_isError(fs) ? -1LL : (long long)fs, zlen);
    return KVB_OK;
}

static kvb_status decode_f16_zstd(kvb_codec_ctx *c, const uint8_t *in, size_t len, size_t nv, uint32_t nsec,
                                  uint32_t n, uint32_t kv_dim, uint16_t *const *sec, const kvb_rows *rows,
                                  char *err, size_t errlen)
{
    if (len < nv)
        return kvb_fail(err, errlen, KVB_ERR_DECODE, "f16-zstd chunk is %zu bytes, less than its %zu low bytes",
                        len, nv);
    size_t zlen = len - nv;
    kvb_status st = frame_ok(in, zlen, nv, "of the high bytes ", err, errlen);
    if (st != KVB_OK)
        return st;
    uint8_t *hi = scratch(c, nv);
    if (!hi)
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory decoding a chunk");
    if (!c->dctx && !(c->dctx = ZSTD_createDCtx()))
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory creating a zstd context");
    size_t z = ZSTD_decompressDCtx(c->dctx, hi, nv, in, zlen);
    if (ZSTD_isError(z) || z != nv)
        return kvb_fail(err, errlen, KVB_ERR_DECODE, "zstd: %s", ZSTD_isError(z) ? ZSTD_getErrorName(z) : "short output");
    size_t secn = nv / nsec; /* values per section: the plane is nsec equal sections */
    uint32_t seg, np = pieces(rows, kv_dim, &seg);
    for (uint32_t i = 0; i < nsec; i++) {
        const uint8_t *lo = in + zlen + i * secn, *h = hi + i * secn;
        if (np == 1)
            kvb_merge_planes(lo, h, 1, 1, secn, 0, sec[i], secn >= KVB_STREAM_MIN);
        else
            kvb_merge_planes(lo, h, n, np, seg, rows->seg_stride, sec[i], secn >= KVB_STREAM_MIN);
    }
    return KVB_OK;
}

kvb_status kvb_chunk_encode(kvb_codec_ctx *c, kvb_codec codec, const uint16_t *kv, uint32_t n_layer,
                            uint32_t n, uint32_t kv_dim, uint8_t **out, size_t *outlen,
                            char *err, size_t errlen)
{
    uint64_t nvals = kvb_chunk_values(n_layer, n, kv_dim);
    uint64_t pbytes = payload_bytes(codec, n_layer, n, kv_dim);
    if ((unsigned)codec >= KVB_CODEC_COUNT)
        return kvb_fail(err, errlen, KVB_ERR_UNSUPPORTED, "unknown codec %d", (int)codec);
    if (pbytes > SIZE_MAX / 4)
        return kvb_fail(err, errlen, KVB_ERR_LIMIT, "chunk of %llu bytes is too large", (unsigned long long)pbytes);
    kvb_status st = kvb_chunk_check(codec, kv, n_layer, n, kv_dim, err, errlen);
    if (st)
        return st;
    if (codec == KVB_CODEC_F16_ZSTD)
        return encode_f16_zstd(c, kv, (size_t)nvals, (size_t)n * kv_dim, out, outlen, err, errlen);
    if (codec == KVB_CODEC_F16) {
        uint8_t *o = malloc(pbytes ? pbytes : 1);
        if (!o)
            return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory encoding a chunk");
#ifdef KVB_HOST_LE
        memcpy(o, kv, pbytes);
#else
        for (uint64_t i = 0; i < nvals; i++)
            kvb_put16(o + 2 * i, kv[i]);
#endif
        (void)nvals;
        *out = o;
        *outlen = pbytes;
        return KVB_OK;
    }
    uint8_t *p = scratch(c, pbytes);
    if (!p)
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory encoding a chunk");
    size_t layer_vals = (size_t)n * kv_dim;
    uint64_t lb = q_layer_bytes(codec, n, kv_dim);
    for (uint32_t l = 0; l < n_layer; l++) {
        const uint16_t *k = kv + 2 * l * layer_vals, *v = k + layer_vals;
        quant_layer(codec, k, v, n, kv_dim, p + l * lb);
    }
    size_t bound = ZSTD_compressBound(pbytes), z = 0;
    uint8_t *o = malloc(bound);
    if (!o)
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory encoding a chunk");
    st = zstd_into(c, o, bound, p, pbytes, 0, &z, err, errlen);
    if (st) {
        free(o);
        return st;
    }
    uint8_t *shrunk = realloc(o, z ? z : 1);
    *out = shrunk ? shrunk : o;
    *outlen = z;
    return KVB_OK;
}

uint64_t kvb_decode_scratch_bytes(kvb_codec codec, uint32_t n_layer, uint32_t n, uint32_t kv_dim)
{
    if (codec == KVB_CODEC_F16)
        return 0;
    if (codec == KVB_CODEC_F16_ZSTD)
        return kvb_chunk_values(n_layer, n, kv_dim); /* the high-byte plane */
    return payload_bytes(codec, n_layer, n, kv_dim);
}

void kvb_f16_place(const uint8_t *src, uint64_t g, size_t k, uint32_t n, uint32_t kv_dim, uint16_t *const *sec,
                   const kvb_rows *rows)
{
    uint32_t seg, np = pieces(rows, kv_dim, &seg);
    const int big = (size_t)n * kv_dim >= KVB_STREAM_MIN;
    while (k > 0) {
        const uint64_t i = g / n, t = g % n;
        const size_t m = n - t < k ? (size_t)(n - t) : k;
        uint16_t *x = sec[i] + t * (np == 1 ? kv_dim : seg);
#ifdef KVB_HOST_LE
        if (np == 1)
            memcpy(x, src, 2 * m * kv_dim);
        else
            kvb_copy_rows(src, m, np, seg, rows->seg_stride, x, big);
#else
        (void)big;
        for (size_t j = 0; j < m * kv_dim; j++) {
            const size_t r = j / kv_dim, q = j % kv_dim / seg, e = j % seg;
            x[np == 1 ? j : q * rows->seg_stride + r * seg + e] = kvb_le16(src + 2 * j);
        }
#endif
        src += 2 * m * kv_dim;
        g += m;
        k -= m;
    }
}

kvb_status kvb_chunk_decode(kvb_codec_ctx *c, kvb_codec codec, const uint8_t *in, size_t len,
                            uint32_t n_layer, uint32_t n, uint32_t kv_dim, uint16_t *const *sec,
                            const kvb_rows *rows, char *err, size_t errlen)
{
    if (rows && rows->seg && (rows->seg > kv_dim || kv_dim % rows->seg))
        return kvb_fail(err, errlen, KVB_ERR_USAGE, "rows of %u values cut into pieces of %u", kv_dim, rows->seg);
    uint64_t nvals = kvb_chunk_values(n_layer, n, kv_dim);
    uint64_t pbytes = payload_bytes(codec, n_layer, n, kv_dim);
    if (codec == KVB_CODEC_F16) {
        if (len != pbytes)
            return kvb_fail(err, errlen, KVB_ERR_DECODE, "f16 chunk is %zu bytes, expected %llu", len,
                            (unsigned long long)pbytes);
        kvb_f16_place(in, 0, 2 * (size_t)n_layer * n, n, kv_dim, sec, rows);
        return KVB_OK;
    }
    if (codec == KVB_CODEC_F16_ZSTD)
        return decode_f16_zstd(c, in, len, (size_t)nvals, 2 * n_layer, n, kv_dim, sec, rows, err, errlen);
    if ((unsigned)codec >= KVB_CODEC_COUNT)
        return kvb_fail(err, errlen, KVB_ERR_UNSUPPORTED, "unknown codec %d", (int)codec);
    kvb_status fst = frame_ok(in, len, pbytes, "", err, errlen);
    if (fst != KVB_OK)
        return fst;
    uint8_t *p = scratch(c, pbytes);
    if (!p)
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory decoding a chunk");
    if (c->fscale_cap < kv_dim) {
        free(c->fscale);
        c->fscale = malloc(sizeof(float) * kv_dim);
        c->fscale_cap = c->fscale ? kv_dim : 0;
        if (!c->fscale)
            return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory decoding a chunk");
    }
    if (!c->dctx && !(c->dctx = ZSTD_createDCtx()))
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory creating a zstd context");
    size_t z = ZSTD_decompressDCtx(c->dctx, p, pbytes, in, len);
    if (ZSTD_isError(z) || z != pbytes)
        return kvb_fail(err, errlen, KVB_ERR_DECODE, "zstd: %s",
                        ZSTD_isError(z) ? ZSTD_getErrorName(z) : "short output");
    uint32_t seg;
    uint16_t *row = NULL; /* a row's K and V before they are cut into pieces */
    if (pieces(rows, kv_dim, &seg) > 1 && !(row = malloc(sizeof(uint16_t) * 2 * (size_t)kv_dim)))
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory decoding a chunk");
    uint64_t lb = q_layer_bytes(codec, n, kv_dim);
    for (uint32_t l = 0; l < n_layer; l++)
        dequant_layer(codec, p + l * lb, n, kv_dim, c->fscale, row, rows, sec[2 * l], sec[2 * l + 1]);
    free(row);
    return KVB_OK;
}
