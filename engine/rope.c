/* rope.c: rotary position embedding as ggml computes it (rope_yarn in f32, per-pair angles
 * built by repeated multiplication with theta_scale), and K re-rotation by a position delta. */
#include "engine/ctx_internal.h"
#include "engine/quant_internal.h"

#include <math.h>
#include <stdlib.h>

/* Dimension index at which the wavelength covers n_rot_turns turns over n_ctx_orig. */
static float corr_dim(int n_dims, int n_ctx_orig, float n_rot_turns, float base)
{
    return (float)n_dims * logf((float)n_ctx_orig / (n_rot_turns * 2.0f * (float)M_PI)) /
           (2.0f * logf(base));
}

void eng_rope_cfg_init(const eng_rope *r, eng_rope_cfg *cfg)
{
    cfg->type = r->type;
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
        float theta_interp = cfg->freq_scale * theta_extrap;
        float theta = theta_interp;
        float mscale = cfg->attn_factor;
        if (cfg->ext_factor != 0.0f) {
            float mix = ramp(cfg->corr_dims[0], cfg->corr_dims[1], i0) * cfg->ext_factor;
            theta = theta_interp * (1 - mix) + theta_extrap * mix;
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
void eng_rope_rerotate_f16(const eng_model *m, uint16_t *k, int n, int32_t delta)
{
    const eng_info *hp = eng_model_info(m);
    eng_rope_cfg cfg;
    eng_rope_cfg_init(&hp->rope, &cfg);
    if (delta == 0 || n <= 0)
        return;
    const int hd = hp->head_dim, rows = n * hp->n_head_kv;
    float cs[1024], x[512];
    if (hd > 512) /* hparams bounds head_dim well below this */
        return;
    eng_rope_cos_sin(&cfg, (float)delta, 0, cs);
    for (int r = 0; r < rows; r++) {
        uint16_t *h = k + (size_t)r * hd;
        eng_f16_to_f32_row(h, x, (size_t)hd);
        eng_rope_apply(&cfg, cs, x);
        eng_f32_to_f16_row(x, h, (size_t)hd);
    }
}
