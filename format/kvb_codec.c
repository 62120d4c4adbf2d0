/* kvb_codec.c: the chunk codecs of spec/kvblob.md section "Codecs": f16 (raw), f16-zstd
 * (per matrix: zstd frame of the high bytes, then the low bytes raw), q8 and q4 (K scaled per
 * channel, V per token, f16 scales, zstd). The byte (un)shuffle and the q8/q4 dequantisation
 * have AVX2/F16C versions chosen at run time, bit-identical to the scalar ones. */
#include "format/kvb_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#if defined(__x86_64__) && defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define KVB_X86 1
#include <immintrin.h>
#endif

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define KVB_HOST_LE 1
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

/* 1 if this CPU runs the AVX2+F16C paths. */
static int simd_ok(void)
{
#ifdef KVB_X86
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#else
    return 0;
#endif
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
    free(c->scratch);
    free(c->fscale);
    free(c);
}

static uint8_t *scratch(kvb_codec_ctx *c, size_t n)
{
    if (c->scratch_cap < n) {
        free(c->scratch);
        c->scratch = malloc(n);
        c->scratch_cap = c->scratch ? n : 0;
    }
    return c->scratch;
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

uint64_t kvb_codec_max_stored(kvb_codec c, uint32_t n_layer, uint32_t n, uint32_t kv_dim)
{
    uint64_t p = payload_bytes(c, n_layer, n, kv_dim);
    if (c == KVB_CODEC_F16)
        return p;
    /* ZSTD_compressBound's formula, computed in 64 bits: size + size/256 + small margin */
    return p + (p >> 8) + 1024;
}

/* ---- scale selection shared by q8 and q4 ----
 * The stored scale s is the smallest f16 with s * qmax >= maxabs, so every |x| / s <= qmax and
 * the rounding error is at most s/2 (spec: error bound). */
static uint16_t pick_scale(float maxabs, int qmax)
{
    if (!(maxabs > 0.0f))
        return 0;
    uint16_t s = kvb_f32_to_f16(maxabs / (float)qmax);
    if (s == 0)
        s = 1; /* smallest subnormal, 2^-24 */
    while (kvb_f16_to_f32(s) * (float)qmax < maxabs && s < 0x7bff)
        s++; /* next f16 up: positive f16 bit patterns are ordered like their values */
    while (s > 1 && kvb_f16_to_f32((uint16_t)(s - 1)) * (float)qmax >= maxabs)
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

/* Quantises one layer: k, v (n, kv_dim) -> p (q_layer_bytes). Non-finite input is refused. */
static kvb_status quant_layer(kvb_codec codec, const uint16_t *k, const uint16_t *v, uint32_t n,
                              uint32_t kv_dim, uint8_t *p, uint32_t layer, char *err, size_t errlen)
{
    int qmax = codec == KVB_CODEC_Q8 ? 127 : 7;
    uint8_t *ks = p, *vs = p + 2ull * kv_dim;
    uint8_t *kc = vs + 2ull * n;
    uint8_t *vc = kc + (codec == KVB_CODEC_Q8 ? (size_t)n * kv_dim : ((size_t)n * kv_dim + 1) / 2);
    for (size_t i = 0; i < (size_t)n * kv_dim; i++)
        if (!isfinite(kvb_f16_to_f32(k[i])) || !isfinite(kvb_f16_to_f32(v[i])))
            return kvb_fail(err, errlen, KVB_ERR_USAGE,
                            "layer %u token %zu channel %zu: non-finite K or V value; %s needs finite values",
                            layer, i / kv_dim, i % kv_dim, kvb_codec_name(codec));
    for (uint32_t c = 0; c < kv_dim; c++) { /* K: one scale per channel */
        float m = 0.0f;
        for (uint32_t t = 0; t < n; t++)
            m = fmaxf(m, fabsf(kvb_f16_to_f32(k[(size_t)t * kv_dim + c])));
        uint16_t s = pick_scale(m, qmax);
        kvb_put16(ks + 2ull * c, s);
        float sf = kvb_f16_to_f32(s);
        for (uint32_t t = 0; t < n; t++) {
            size_t i = (size_t)t * kv_dim + c;
            put_code(kc, codec, i, quant(kvb_f16_to_f32(k[i]), sf, qmax));
        }
    }
    for (uint32_t t = 0; t < n; t++) { /* V: one scale per token */
        const uint16_t *row = v + (size_t)t * kv_dim;
        float m = 0.0f;
        for (uint32_t c = 0; c < kv_dim; c++)
            m = fmaxf(m, fabsf(kvb_f16_to_f32(row[c])));
        uint16_t s = pick_scale(m, qmax);
        kvb_put16(vs + 2ull * t, s);
        float sf = kvb_f16_to_f32(s);
        for (uint32_t c = 0; c < kv_dim; c++)
            put_code(vc, codec, (size_t)t * kv_dim + c, quant(kvb_f16_to_f32(row[c]), sf, qmax));
    }
    return KVB_OK;
}

static void dequant_layer(kvb_codec codec, const uint8_t *p, uint32_t n, uint32_t kv_dim,
                          uint16_t *k, uint16_t *v)
{
    const uint8_t *ks = p, *vs = p + 2ull * kv_dim;
    const uint8_t *kc = vs + 2ull * n;
    const uint8_t *vc = kc + (codec == KVB_CODEC_Q8 ? (size_t)n * kv_dim : ((size_t)n * kv_dim + 1) / 2);
    for (uint32_t t = 0; t < n; t++) {
        float vsf = kvb_f16_to_f32(kvb_le16(vs + 2ull * t));
        for (uint32_t c = 0; c < kv_dim; c++) {
            size_t i = (size_t)t * kv_dim + c;
            k[i] = kvb_f32_to_f16((float)get_code(kc, codec, i) * kvb_f16_to_f32(kvb_le16(ks + 2ull * c)));
            v[i] = kvb_f32_to_f16((float)get_code(vc, codec, i) * vsf);
        }
    }
}

kvb_status kvb_chunk_encode(kvb_codec_ctx *c, kvb_codec codec, const uint16_t *kv, uint32_t n_layer,
                            uint32_t n, uint32_t kv_dim, uint8_t **out, size_t *outlen,
                            char *err, size_t errlen)
{
    uint64_t nvals = kvb_chunk_values(n_layer, n, kv_dim);
    uint64_t pbytes = payload_bytes(codec, n_layer, n, kv_dim);
    if ((unsigned)codec >= KVB_CODEC_COUNT)
        return kvb_fail(err, errlen, KVB_ERR_UNSUPPORTED, "unknown codec %d", (int)codec);
    if (pbytes > SIZE_MAX / 2)
        return kvb_fail(err, errlen, KVB_ERR_LIMIT, "chunk of %llu bytes is too large", (unsigned long long)pbytes);
    if (codec == KVB_CODEC_F16) {
        uint8_t *o = malloc(pbytes ? pbytes : 1);
        if (!o)
            return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory encoding a chunk");
        for (uint64_t i = 0; i < nvals; i++)
            kvb_put16(o + 2 * i, kv[i]);
        *out = o;
        *outlen = pbytes;
        return KVB_OK;
    }
    uint8_t *p = scratch(c, pbytes);
    if (!p)
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory encoding a chunk");
    if (codec == KVB_CODEC_F16_ZSTD) {
        for (uint64_t i = 0; i < nvals; i++) { /* low bytes, then high bytes */
            p[i] = (uint8_t)kv[i];
            p[nvals + i] = (uint8_t)(kv[i] >> 8);
        }
    } else {
        size_t layer_vals = (size_t)n * kv_dim;
        uint64_t lb = q_layer_bytes(codec, n, kv_dim);
        for (uint32_t l = 0; l < n_layer; l++) {
            const uint16_t *k = kv + 2 * l * layer_vals, *v = k + layer_vals;
            kvb_status st = quant_layer(codec, k, v, n, kv_dim, p + l * lb, l, err, errlen);
            if (st)
                return st;
        }
    }
    if (!c->cctx && !(c->cctx = ZSTD_createCCtx()))
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory creating a zstd context");
    size_t bound = ZSTD_compressBound(pbytes);
    uint8_t *o = malloc(bound);
    if (!o)
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory encoding a chunk");
    size_t z = ZSTD_compressCCtx(c->cctx, o, bound, p, pbytes, c->level);
    if (ZSTD_isError(z)) {
        free(o);
        return kvb_fail(err, errlen, KVB_ERR_INTERNAL, "zstd compression failed: %s", ZSTD_getErrorName(z));
    }
    uint8_t *shrunk = realloc(o, z ? z : 1);
    *out = shrunk ? shrunk : o;
    *outlen = z;
    return KVB_OK;
}

kvb_status kvb_chunk_decode(kvb_codec_ctx *c, kvb_codec codec, const uint8_t *in, size_t len,
                            uint32_t n_layer, uint32_t n, uint32_t kv_dim, uint16_t *kv,
                            char *err, size_t errlen)
{
    uint64_t nvals = kvb_chunk_values(n_layer, n, kv_dim);
    uint64_t pbytes = payload_bytes(codec, n_layer, n, kv_dim);
    if (codec == KVB_CODEC_F16) {
        if (len != pbytes)
            return kvb_fail(err, errlen, KVB_ERR_DECODE, "f16 chunk is %zu bytes, expected %llu", len,
                            (unsigned long long)pbytes);
        for (uint64_t i = 0; i < nvals; i++)
            kv[i] = kvb_le16(in + 2 * i);
        return KVB_OK;
    }
    if ((unsigned)codec >= KVB_CODEC_COUNT)
        return kvb_fail(err, errlen, KVB_ERR_UNSUPPORTED, "unknown codec %d", (int)codec);
    /* The frame must declare exactly the payload size: checked before decompressing so a
     * signed-but-wrong chunk cannot make us write past the buffer or spin on huge output. */
    unsigned long long fcs = ZSTD_getFrameContentSize(in, len);
    if (fcs != pbytes)
        return kvb_fail(err, errlen, KVB_ERR_DECODE, "zstd frame declares %lld bytes, expected %llu",
                        fcs >= ZSTD_CONTENTSIZE_ERROR ? -1LL : (long long)fcs, (unsigned long long)pbytes);
    uint8_t *p = scratch(c, pbytes);
    if (!p)
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory decoding a chunk");
    if (!c->dctx && !(c->dctx = ZSTD_createDCtx()))
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory creating a zstd context");
    size_t z = ZSTD_decompressDCtx(c->dctx, p, pbytes, in, len);
    if (ZSTD_isError(z) || z != pbytes)
        return kvb_fail(err, errlen, KVB_ERR_DECODE, "zstd: %s",
                        ZSTD_isError(z) ? ZSTD_getErrorName(z) : "short output");
    if (codec == KVB_CODEC_F16_ZSTD) {
        const uint8_t *lo = p, *hi = p + nvals;
        for (uint64_t i = 0; i < nvals; i++)
            kv[i] = (uint16_t)(lo[i] | (hi[i] << 8));
        return KVB_OK;
    }
    size_t layer_vals = (size_t)n * kv_dim;
    uint64_t lb = q_layer_bytes(codec, n, kv_dim);
    for (uint32_t l = 0; l < n_layer; l++)
        dequant_layer(codec, p + l * lb, n, kv_dim, kv + 2 * l * layer_vals, kv + (2 * l + 1) * layer_vals);
    return KVB_OK;
}
