/* rope.c: rotary position embedding as ggml computes it (rope_yarn in f32, per-pair angles
 * built by repeated multiplication with theta_scale), and K re-rotation by a position delta. */
#include "engine/ctx_internal.h"
#include "engine/kernels/quant_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Dimension index at which the wavelength covers n_rot_turns turns over n_ctx_orig. */
static float corr_dim(int n_dims, int n_ctx_orig, float n_rot_turns, float base)
{
    return (float)n_dims * logf((float)n_ctx_orig / (n_rot_turns * 2.0f * (float)M_PI)) /
           (2.0f * logf(base));
}

void eng_rope_cfg_init(const eng_rope *r, const float *freq_factors, eng_rope_cfg *cfg)
{
    cfg->type = r->type;
    cfg->freq_factors = freq_factors;
    cfg->n_rot = r->n_rot;
    cfg->theta_scale = powf(r->freq_base, -2.0f / (float)r->n_rot);
    cfg->freq_scale = r->freq_scale > 0 ? r->freq_scale : 1.0f;
    cfg->ext_factor = r->scaling == ENG_ROPE_SCALING_YARN ? r->yarn_ext_factor : 0.0f;
    cfg->attn_factor = r->scaling == ENG_ROPE_SCALING_YARN && r->yarn_attn_factor > 0 ? r->yarn_attn_factor : 1.0f;
    cfg->corr_dims[0] = cfg->corr_dims[1] = 0;
    if (cfg->ext_factor != 0.0f && r->n_ctx_orig > 0) {
        float start = floorf(corr_dim(r->n_rot, r->n_ctx_orig, r->yarn_beta_fast, r->freq_base));
        float end = ceilf(corr_dim(r->n_rot, r->n_ctx_orig, r->yarn_beta_slow, r->freq_base));
        cfg->corr_dims[0] = fmaxf(0.0f, start);
        cfg->corr_dims[1] = fminf((float)(r->n_rot - 1), end);
    }
}

/* YaRN ramp: 1 for dims rotating fast enough to extrapolate, 0 for those to interpolate. */
static float ramp(float low, float high, int i0)
{
    float y = ((float)(i0 / 2) - low) / fmaxf(0.001f, high - low);
    return 1.0f - fminf(1.0f, fmaxf(0.0f, y));
}

void eng_rope_cos_sin(const eng_rope_cfg *cfg, float p, int with_mscale, float *cs)
{
    float theta_extrap = p;
    for (int i0 = 0; i0 < cfg->n_rot; i0 += 2) {
        /* llama3 frequency factors divide the angle before YaRN sees it, as in ggml */
        float te = cfg->freq_factors ? theta_extrap / cfg->freq_factors[i0 / 2] : theta_extrap;
        float theta_interp = cfg->freq_scale * te;
        float theta = theta_interp;
        float mscale = cfg->attn_factor;
        if (cfg->ext_factor != 0.0f) {
            float mix = ramp(cfg->corr_dims[0], cfg->corr_dims[1], i0) * cfg->ext_factor;
            theta = theta_interp * (1 - mix) + te * mix;
            mscale *= 1.0f + 0.1f * logf(1.0f / cfg->freq_scale);
        }
        if (!with_mscale)
            mscale = 1.0f;
        cs[i0] = cosf(theta) * mscale;
        cs[i0 + 1] = sinf(theta) * mscale;
        theta_extrap *= cfg->theta_scale;
    }
}

void eng_rope_apply(const eng_rope_cfg *cfg, const float *cs, float *x)
{
    const int n = cfg->n_rot;
    if (cfg->type == ENG_ROPE_NEOX) {
        const int h = n / 2;
        for (int i = 0; i < h; i++) {
            float c = cs[2 * i], s = cs[2 * i + 1];
            float x0 = x[i], x1 = x[i + h];
            float a = x0 * c, b = x1 * s, d = x0 * s, e = x1 * c;
            x[i] = a - b;
            x[i + h] = d + e;
        }
    } else {
        for (int i = 0; i < n; i += 2) {
            float c = cs[i], s = cs[i + 1];
            float x0 = x[i], x1 = x[i + 1];
            float a = x0 * c, b = x1 * s, d = x0 * s, e = x1 * c;
            x[i] = a - b;
            x[i + 1] = d + e;
        }
    }
}

/* Re-rotation: the angle of pair i at position p is p * theta_i with theta_i independent of
 * p (the YaRN ramp depends on the dim only), so R(p + d) = R(d) R(p): rotating stored K by
 * d * theta_i moves it to p + d. The YaRN magnitude factor is already in K from its first
 * rotation, so the shift uses cos/sin without it. */
void eng_rerot_init(const eng_rope_cfg *cfg, int32_t delta, eng_rerot *t)
{
    float cs[ENG_RERO_MAX_ROT];
    t->type = cfg->type;
    t->n_rot = cfg->n_rot > 0 && cfg->n_rot <= ENG_RERO_MAX_ROT ? cfg->n_rot & ~1 : 0;
    t->delta = delta;
    eng_rope_cos_sin(cfg, (float)delta, 0, cs);
    const int h = t->n_rot / 2;
    for (int i = 0; i < h; i++) {
        if (t->type == ENG_ROPE_NEOX) {
            t->c[i] = cs[2 * i];
            t->s[i] = cs[2 * i + 1];
        } else { /* each pair member gets its pair's angle: lanes line up with the data */
            t->c[2 * i] = t->c[2 * i + 1] = cs[2 * i];
            t->s[2 * i] = t->s[2 * i + 1] = cs[2 * i + 1];
        }
    }
}

/* One head vector, f32 math per pair exactly as eng_rope_apply: (x0 c - x1 s, x0 s + x1 c). */
static void rerot_row_scalar(const eng_rerot *t, const uint16_t *src, uint16_t *dst)
{
    const int n = t->n_rot, h = n / 2;
    if (t->type == ENG_ROPE_NEOX) {
        for (int i = 0; i < h; i++) {
            float x0 = base_f16_to_f32(src[i]), x1 = base_f16_to_f32(src[i + h]);
            float c = t->c[i], s = t->s[i];
            float a = x0 * c, b = x1 * s, d = x0 * s, e = x1 * c;
            dst[i] = base_f32_to_f16(a - b);
            dst[i + h] = base_f32_to_f16(d + e);
        }
    } else {
        for (int i = 0; i < n; i += 2) {
            float x0 = base_f16_to_f32(src[i]), x1 = base_f16_to_f32(src[i + 1]);
            float c = t->c[i], s = t->s[i];
            float a = x0 * c, b = x1 * s, d = x0 * s, e = x1 * c;
            dst[i] = base_f32_to_f16(a - b);
            dst[i + 1] = base_f32_to_f16(d + e);
        }
    }
}

#if defined(__x86_64__)
#include <immintrin.h>

/* 8 f16 at a time: the same f32 products and one sum per lane as the scalar code (no FMA in
 * the target, so nothing is contracted), rounded to nearest even by F16C as base_f32_to_f16
 * rounds: bit-identical to rerot_row_scalar. NEOX needs n_rot % 16 == 0, normal n_rot % 8. */
__attribute__((target("avx2,f16c"))) static void rerot_rows_avx2(const eng_rerot *t, const uint16_t *src,
                                                                   uint16_t *dst, size_t rows, int hd)
{
    const int n = t->n_rot, h = n / 2;
    for (size_t r = 0; r < rows; r++) {
        const uint16_t *x = src + r * (size_t)hd;
        uint16_t *y = dst + r * (size_t)hd;
        if (t->type == ENG_ROPE_NEOX) {
            for (int i = 0; i < h; i += 8) {
                __m256 x0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i)));
                __m256 x1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i + h)));
                __m256 c = _mm256_loadu_ps(t->c + i), s = _mm256_loadu_ps(t->s + i);
                __m256 y0 = _mm256_sub_ps(_mm256_mul_ps(x0, c), _mm256_mul_ps(x1, s));
                __m256 y1 = _mm256_add_ps(_mm256_mul_ps(x0, s), _mm256_mul_ps(x1, c));
                _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(y0, _MM_FROUND_TO_NEAREST_INT));
                _mm_storeu_si128((__m128i *)(y + i + h), _mm256_cvtps_ph(y1, _MM_FROUND_TO_NEAREST_INT));
            }
        } else {
            for (int i = 0; i < n; i += 8) {
                __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i)));
                __m256 sw = _mm256_permute_ps(v, 0xB1); /* (x1, x0) in each pair */
                /* even lanes x0 c - x1 s, odd lanes x1 c + x0 s (= x0 s + x1 c: one rounded sum) */
                __m256 o = _mm256_addsub_ps(_mm256_mul_ps(v, _mm256_loadu_ps(t->c + i)),
                                            _mm256_mul_ps(sw, _mm256_loadu_ps(t->s + i)));
                _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(o, _MM_FROUND_TO_NEAREST_INT));
            }
        }
        if (y != x && n < hd)
            memcpy(y + n, x + n, (size_t)(hd - n) * sizeof *y);
    }
}
#endif

void eng_rerot_f16(const eng_rerot *t, const uint16_t *src, uint16_t *dst, size_t rows, int hd)
{
    if (t->delta == 0 || t->n_rot == 0 || t->n_rot > hd) {
        if (dst != src)
            memmove(dst, src, rows * (size_t)hd * sizeof *dst);
        return;
    }
#if defined(__x86_64__)
    int simd = t->type == ENG_ROPE_NEOX ? t->n_rot % 16 == 0 : t->n_rot % 8 == 0;
    if (simd && strcmp(eng_quant_kernels(), "avx2") == 0) {
        rerot_rows_avx2(t, src, dst, rows, hd);
        return;
    }
#endif
    for (size_t r = 0; r < rows; r++) {
        rerot_row_scalar(t, src + r * (size_t)hd, dst + r * (size_t)hd);
        if (dst != src && t->n_rot < hd)
            memcpy(dst + r * (size_t)hd + t->n_rot, src + r * (size_t)hd + t->n_rot,
                   (size_t)(hd - t->n_rot) * sizeof *dst);
    }
}

void eng_rope_rerotate_f16(const eng_model *m, uint16_t *k, int n, int32_t delta)
{
    const eng_info *hp = eng_model_info(m);
    if (delta == 0 || n <= 0 || hp->rope.n_rot > ENG_RERO_MAX_ROT)
        return;
    eng_rope_cfg cfg;
    eng_rerot t;
    eng_rope_cfg_init(&hp->rope, eng_model_weights(m)->rope_freqs, &cfg);
    eng_rerot_init(&cfg, delta, &t);
    eng_rerot_f16(&t, k, k, (size_t)n * (size_t)hp->n_head_kv, hp->head_dim);
}
