/* norm.c: the row normalisations of the forward pass as ggml computes them: RMSNorm (llama,
 * qwen2, qwen3) and LayerNorm (stablelm), each followed by the weight multiply and, for
 * LayerNorm, the bias add, as separate f32 operations (llama.cpp's build_norm). */
#include "engine/ctx_internal.h"

#include <math.h>

/* ggml_rms_norm: the sum of squares in double. */
static void rms_row(const float *x, const float *w, int n, float eps, float *y)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int i = 0; i < n; i++)
        y[i] = (x[i] * scale) * w[i];
}

/* ggml_norm: the mean, then the variance of the centred values, each summed in double. */
static void layer_row(const float *x, const float *w, const float *b, int n, float eps, float *y)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += (double)x[i];
    const float mean = (float)sum / (float)n; /* ggml_vec_sum_f32 hands back a float */
    double var = 0;
    for (int i = 0; i < n; i++) {
        const float d = x[i] - mean;
        y[i] = d;
        var += (double)(d * d);
    }
    const float scale = 1.0f / sqrtf((float)(var / n) + eps);
    for (int i = 0; i < n; i++) {
        const float v = (y[i] * scale) * w[i];
        y[i] = b ? v + b[i] : v;
    }
}

void eng_norm_row(const eng_info *hp, const float *x, const float *w, const float *b, int n, float *y)
{
    if (hp->norm == ENG_NORM_LAYER)
        layer_row(x, w, b, n, hp->norm_eps, y);
    else
        rms_row(x, w, n, hp->norm_eps, y);
}
