/* test_engine_rope.c: K re-rotation (K computed at pos0 then shifted by delta vs K computed at
 * pos0 + delta, for normal, NEOX, YaRN and partial RoPE), the buffer re-rotation, KV API argument
 * checks, and model load errors (missing / misshaped tensor, bad file). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <unistd.h>

#include "engine/kernels/quant_internal.h"
#include "tests/unit/engine_test_util.h"

/* One f16 ulp at magnitude x (normal range). */
static double ulp16(double x)
{
    if (x < 6.1e-5)
        return 5.96e-8; /* subnormal spacing */
    return ldexp(1.0, (int)floor(log2(x)) - 10);
}

/* Runs the comparison on model path p. Bound: in layer 0 the two K differ only by rounding: the
 * shifted one was rounded to f16, rotated in f32 by delta and rounded again, the direct one was
 * rotated once; each pair (x0, x1) may differ by RERO_ULPS f16 ulps of the pair's magnitude.
 * Deeper layers see attention over keys that themselves carry this rounding, so they get
 * DEEP_ULPS (measured worst printed). */
enum { RERO_ULPS = 2, DEEP_ULPS = 128 }; /* measured worst: 1 and 54 */

static void check_rerotate(const char *path)
{
    char err[512];
    eng_model *m = NULL;
    assert_int_equal(eng_model_load(path, &m, err, sizeof err), ENG_OK);
    const eng_info *hp = eng_model_info(m);
    enum { N = 40 };
    const int32_t pos0 = 1, delta = 100;
    int32_t toks[N], pa[N], pb[N];
    for (int i = 0; i < N; i++) {
        toks[i] = 3 + (i * 37) % (hp->n_vocab - 3);
        pa[i] = pos0 + delta + i;
        pb[i] = pos0 + i;
    }
    eng_ctx *a = et_ctx(m, 256, 0), *b = et_ctx(m, 256, 0);
    assert_int_equal(eng_prefill(a, toks, pa, N, NULL, NULL), ENG_OK);
    assert_int_equal(eng_prefill(b, toks, pb, N, NULL, NULL), ENG_OK);
    const int hd = hp->head_dim, kvd = hp->n_head_kv * hd;
    uint16_t *kb0 = malloc(sizeof(uint16_t) * N * kvd), *vb0 = malloc(sizeof(uint16_t) * N * kvd);
    uint16_t *ka = malloc(sizeof(uint16_t) * N * kvd), *kb = malloc(sizeof(uint16_t) * N * kvd);
    /* layer 0 of b, before the shift, for the buffer variant */
    assert_int_equal(eng_kv_export_layer(b, 0, 0, N, kb0, vb0), ENG_OK);
    assert_int_equal(eng_kv_rerotate(b, 0, N, delta), ENG_OK);
    assert_int_equal(eng_kv_next_pos(b), pos0 + delta + N);
    double worst[2] = {0, 0};
    for (int il = 0; il < hp->n_layer; il++) {
        assert_int_equal(eng_kv_export_layer(a, il, 0, N, ka, NULL), ENG_OK);
        assert_int_equal(eng_kv_export_layer(b, il, 0, N, kb, NULL), ENG_OK);
        const double lim = il == 0 ? RERO_ULPS : DEEP_ULPS;
        const int nr = hp->rope.n_rot;
        for (int r = 0; r < N * hp->n_head_kv; r++) {
            const uint16_t *x = ka + (size_t)r * hd, *y = kb + (size_t)r * hd;
            /* partial rotary: the dims past n_rot are never turned; in layer 0 they do not
             * depend on the position at all, deeper they carry the attention's rounding (in
             * ulps of the head's largest value: single values may be near cancellation) */
            double top = 0;
            for (int j = 0; j < hd; j++)
                top = fmax(top, fabs(base_f16_to_f32(x[j])));
            for (int j = nr; j < hd; j++) {
                double a0 = base_f16_to_f32(x[j]), b0 = base_f16_to_f32(y[j]);
                if (il == 0 ? x[j] != y[j] : fabs(a0 - b0) / ulp16(top) > DEEP_ULPS)
                    fail_msg("%s layer %d row %d unrotated dim %d: %g vs %g", path, il, r, j, a0, b0);
            }
            for (int i = 0; i < nr / 2; i++) {
                /* pair members: adjacent (normal) or half the rotated dims apart (neox) */
                int j0 = hp->rope.type == ENG_ROPE_NEOX ? i : 2 * i;
                int j1 = hp->rope.type == ENG_ROPE_NEOX ? i + nr / 2 : 2 * i + 1;
                double a0 = base_f16_to_f32(x[j0]), a1 = base_f16_to_f32(x[j1]);
                double b0 = base_f16_to_f32(y[j0]), b1 = base_f16_to_f32(y[j1]);
                double mag = sqrt(a0 * a0 + a1 * a1), u = ulp16(mag);
                double d = fmax(fabs(a0 - b0), fabs(a1 - b1)) / u;
                if (d > worst[il != 0])
                    worst[il != 0] = d;
                if (d > lim)
                    fail_msg("%s layer %d row %d pair %d: %g vs %g, %g vs %g (%.1f ulps)", path, il, r, i,
                             a0, b0, a1, b1, d);
            }
        }
    }
    printf("%s: re-rotation vs direct, worst %.2f f16 ulps (layer 0), %.2f (deeper)\n", path,
           worst[0], worst[1]);
    /* the buffer variant is the same computation */
    eng_rope_rerotate_f16(m, kb0, N, delta);
    assert_int_equal(eng_kv_export_layer(b, 0, 0, N, kb, NULL), ENG_OK);
    assert_memory_equal(kb0, kb, sizeof(uint16_t) * N * kvd);
    free(kb0);
    free(vb0);
    free(ka);
    free(kb);
    eng_ctx_free(a);
    eng_ctx_free(b);
    eng_model_free(m);
}

/* check_rerotate on a model under $KVPUB_SHARED */
static void check_rerotate_shared(const char *rel)
{
    char p[1024];
    et_path(p, sizeof p, rel);
    check_rerotate(p);
}

static void test_rerotate_normal(void **state)
{
    (void)state;
    check_rerotate_shared("models/stories260K.gguf");
    check_rerotate_shared("models/synth/synth-llama-tiny-f16.gguf");
}

static void test_rerotate_neox(void **state)
{
    (void)state;
    check_rerotate_shared("models/synth/synth-qwen2-tiny-f32.gguf");
    check_rerotate_shared("models/synth/synth-qwen3-tiny-f32.gguf");
}

/* Writes a model with kvsynth (arch and extra options) to out and loads it; skips the test
 * without kvsynth. */
static eng_model *synth_load(const char *args, char *out, size_t n)
{
    char all[512];
    snprintf(all, sizeof all,
             "%s --layers 2 --dim 64 --heads 4 --kv-heads 2 --head-dim 32 --ffn 128 --vocab 512 "
             "--ctx 256 --type f32 --seed 3",
             args);
    eng_model *m = et_synth("rope", all, out, n);
    if (!m)
        skip();
    return m;
}

/* YaRN model written by kvsynth (scaling 4, original context 256). */
static void test_rerotate_yarn(void **state)
{
    (void)state;
    char out[256];
    eng_model *m = synth_load("--arch qwen3 --yarn 4", out, sizeof out);
    assert_int_equal(eng_model_info(m)->rope.scaling, ENG_ROPE_SCALING_YARN);
    eng_model_free(m);
    check_rerotate(out);
    unlink(out);
}

/* llama3 frequency factors (rope_freqs.weight, original context 256): re-rotation by delta turns
 * each pair by delta * theta_i / factor_i, landing where a direct prefill puts it. */
static void test_rerotate_rope_freqs(void **state)
{
    (void)state;
    char out[256];
    eng_model *m = synth_load("--arch llama --rope-freqs", out, sizeof out);
    const float *ff;
    size_t n = eng_model_rope_freqs(m, &ff);
    assert_int_equal(n, 16);
    assert_true(ff[0] == 1.0f && ff[15] == 8.0f); /* the fastest pair unscaled, the slowest by 8 */
    eng_model_free(m);
    check_rerotate(out);
    unlink(out);
}

/* Partial rotary (stablelm: the first n_rot dims of each 32-dim head turn): 16 takes the SIMD
 * NEOX re-rotation, 8 and 12 the scalar one; the other dims stay as they were. */
static void test_rerotate_partial(void **state)
{
    (void)state;
    static const char *const args[] = {"--arch stablelm --n-rot 16", "--arch stablelm --n-rot 8",
                                       "--arch stablelm --n-rot 12 --parallel --qk-norm"};
    for (size_t i = 0; i < sizeof args / sizeof args[0]; i++) {
        char out[256];
        eng_model *m = synth_load(args[i], out, sizeof out);
        assert_true(eng_model_info(m)->rope.n_rot < eng_model_info(m)->head_dim);
        assert_int_equal(eng_model_info(m)->norm, ENG_NORM_LAYER);
        eng_model_free(m);
        check_rerotate(out);
        unlink(out);
    }
}

/* ---- load errors: edit a copy of stories260K.gguf ---- */

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static void spit(const char *path, const unsigned char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* offset of the tensor-info name "name" (preceded by its u64 length) in the header */
static size_t find_name(const unsigned char *b, size_t n, const char *name)
{
    size_t l = strlen(name);
    for (size_t i = 8; i + l < n; i++)
        if (memcmp(b + i, name, l) == 0 && b[i - 8] == l && b[i - 7] == 0)
            return i;
    fail_msg("tensor name %s not found", name);
    return 0;
}

static void expect_load_error(const char *path, eng_status want, const char *needle)
{
    char err[512] = "";
    eng_model *m = NULL;
    eng_status st = eng_model_load(path, &m, err, sizeof err);
    printf("expected error: [%s] %s\n", eng_status_str(st), err);
    assert_null(m);
    assert_int_equal(st, want);
    assert_non_null(strstr(err, needle));
}

static void test_load_errors(void **state)
{
    (void)state;
    char src[1024], tmp[256];
    et_path(src, sizeof src, "models/stories260K.gguf");
    snprintf(tmp, sizeof tmp, "/tmp/kvpub-test-bad-%d.gguf", (int)getpid());
    size_t n;
    unsigned char *orig = slurp(src, &n), *b = malloc(n);

    /* missing tensor: rename blk.1.attn_k.weight (same length, so the file stays valid) */
    memcpy(b, orig, n);
    size_t at = find_name(b, n, "blk.1.attn_k.weight");
    b[at + strlen("blk.1.attn_k.weigh")] = 'X';
    spit(tmp, b, n);
    expect_load_error(tmp, ENG_ERR_FORMAT, "missing tensor 'blk.1.attn_k.weight'");

    /* misshaped: blk.0.attn_q.weight ne[1] 64 -> 32 (name, n_dims u32, ne0 u64, ne1 u64) */
    memcpy(b, orig, n);
    at = find_name(b, n, "blk.0.attn_q.weight") + strlen("blk.0.attn_q.weight");
    assert_int_equal(b[at], 2);
    assert_int_equal(b[at + 4 + 8], 64);
    b[at + 4 + 8] = 32;
    spit(tmp, b, n);
    expect_load_error(tmp, ENG_ERR_FORMAT, "blk.0.attn_q.weight");

    /* not a GGUF */
    memcpy(b, orig, n);
    b[0] = 'X';
    spit(tmp, b, n);
    char err[256];
    eng_model *m = NULL;
    assert_int_not_equal(eng_model_load(tmp, &m, err, sizeof err), ENG_OK);
    assert_null(m);
    assert_int_equal(eng_model_load("/nonexistent/model.gguf", &m, err, sizeof err), ENG_ERR_IO);

    unlink(tmp);
    free(orig);
    free(b);
}

/* stablelm files as llama.cpp's loader reads them: output.weight and the LayerNorm biases are
 * required; without its FFN norm weight (the parallel residual) the bias is a tensor nothing
 * reads, and the renamed weight too. Each case renames one
 * tensor of a kvsynth stablelm file (same length, so the file stays valid). */
static void test_load_errors_stablelm(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        const char *needle;
    } cases[] = {
        {"output.weight", "missing tensor 'output.weight'"},
        {"blk.1.attn_norm.bias", "missing tensor 'blk.1.attn_norm.bias'"},
        {"output_norm.bias", "missing tensor 'output_norm.bias'"},
        {"blk.0.ffn_norm.weight", "is not used by the stablelm forward pass"},
    };
    char src[256], tmp[256];
    eng_model_free(synth_load("--arch stablelm --n-rot 8", src, sizeof src));
    snprintf(tmp, sizeof tmp, "/tmp/kvpub-test-bad-%d.gguf", (int)getpid());
    size_t n;
    unsigned char *orig = slurp(src, &n), *b = malloc(n);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(b, orig, n);
        size_t at = find_name(b, n, cases[i].name);
        b[at + strlen(cases[i].name) - 1] = 'X';
        spit(tmp, b, n);
        expect_load_error(tmp, i < 3 ? ENG_ERR_FORMAT : ENG_ERR_UNSUPPORTED, cases[i].needle);
    }
    unlink(tmp);
    unlink(src);
    free(orig);
    free(b);
}

/* KV API range checks and status names. */
static void test_kv_args(void **state)
{
    (void)state;
    eng_model *m = et_load_model("models/stories260K.gguf");
    assert_non_null(m);
    eng_ctx *c = et_ctx(m, 16, 0);
    int32_t t[20] = {1, 5, 6, 7};
    assert_int_equal(eng_prefill(c, t, NULL, 17, NULL, NULL), ENG_ERR_RANGE); /* context full */
    int32_t badtok = 100000;
    assert_int_equal(eng_prefill(c, &badtok, NULL, 1, NULL, NULL), ENG_ERR_RANGE);
    assert_int_equal(eng_prefill(c, t, NULL, 4, NULL, NULL), ENG_OK);
    assert_int_equal(eng_kv_len(c), 4);
    assert_int_equal(eng_kv_next_pos(c), 4);
    uint16_t buf[4 * 64];
    assert_int_equal(eng_kv_export_layer(c, 0, 2, 3, buf, buf), ENG_ERR_RANGE);
    assert_int_equal(eng_kv_export_layer(c, 99, 0, 1, buf, buf), ENG_ERR_RANGE);
    assert_int_equal(eng_kv_import_layer(c, 0, 5, 1, buf, buf), ENG_ERR_RANGE); /* gap */
    /* rows to fill in place: only unfilled cells, inside the context, of a real layer */
    uint16_t *rk = NULL, *rv = NULL, *rk2 = NULL, *rv2 = NULL;
    size_t hs = 0, hs2 = 0;
    assert_int_equal(eng_kv_rows_f16(c, 0, 3, 1, &rk, &rv, &hs), ENG_ERR_RANGE);  /* filled cell */
    assert_int_equal(eng_kv_rows_f16(c, 0, 4, 13, &rk, &rv, &hs), ENG_ERR_RANGE); /* past n_ctx */
    assert_int_equal(eng_kv_rows_f16(c, 5, 4, 1, &rk, &rv, &hs), ENG_ERR_RANGE);  /* no layer 5 */
    assert_int_equal(eng_kv_rows_f16(c, 0, 4, 1, &rk, &rv, NULL), ENG_ERR_ARG);
    assert_int_equal(eng_kv_rows_f16(c, 0, 4, 2, &rk, &rv, &hs), ENG_OK);
    assert_int_equal(eng_kv_rows_f16(c, 0, 5, 1, &rk2, &rv2, &hs2), ENG_OK);
    /* 4 kv heads of 8 dims: a head's cells are head_dim apart, heads n_ctx cells apart */
    assert_ptr_equal(rk2, rk + 8);
    assert_ptr_equal(rv2, rv + 8);
    assert_int_equal(hs, 16 * 8);
    assert_int_equal(hs2, hs);
    assert_ptr_not_equal(rk, rv);
    /* what is written there is what export reads back, in the exchange layout (cell, head, dim) */
    for (int h = 0; h < 4; h++)
        for (int i = 0; i < 2; i++)
            for (int d = 0; d < 8; d++) {
                rk[h * hs + (size_t)i * 8 + d] = (uint16_t)(0x3c00 + 64 * h + 8 * i + d);
                rv[h * hs + (size_t)i * 8 + d] = (uint16_t)(0x4400 + 64 * h + 8 * i + d);
            }
    assert_int_equal(eng_kv_commit(c, 4, 2, 4), ENG_OK);
    uint16_t ek[2 * 32], ev[2 * 32];
    assert_int_equal(eng_kv_export_layer(c, 0, 4, 2, ek, ev), ENG_OK);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 32; j++) {
            assert_int_equal(ek[i * 32 + j], 0x3c00 + 64 * (j / 8) + 8 * i + j % 8);
            assert_int_equal(ev[i * 32 + j], 0x4400 + 64 * (j / 8) + 8 * i + j % 8);
        }
    assert_int_equal(eng_kv_truncate(c, 4), ENG_OK);
    eng_ctx *cf = et_ctx(m, 16, 1);
    assert_int_equal(eng_kv_rows_f16(cf, 0, 0, 1, &rk, &rv, &hs), ENG_ERR_UNSUPPORTED); /* f32 cache */
    eng_ctx_free(cf);
    assert_int_equal(eng_kv_rerotate(c, 0, 4, -10), ENG_ERR_RANGE);            /* negative pos */
    assert_int_equal(eng_kv_truncate(c, 5), ENG_ERR_RANGE);
    assert_int_equal(eng_kv_truncate(c, 2), ENG_OK);
    assert_int_equal(eng_kv_next_pos(c), 2);
    assert_int_equal(eng_decode(c, -5, -1, NULL), ENG_ERR_RANGE);
    assert_int_equal(eng_decode(c, 1, -2, NULL), ENG_ERR_ARG); /* only -1 means "next" */
    assert_int_equal(eng_kv_next_pos(c), 2);
    eng_ctx *bad = NULL;
    eng_ctx_params neg = {-1, 0, 0};
    assert_int_equal(eng_ctx_create(m, &neg, &bad, NULL, 0), ENG_ERR_ARG);
    neg = (eng_ctx_params){16, -3, 0};
    assert_int_equal(eng_ctx_create(m, &neg, &bad, NULL, 0), ENG_ERR_ARG);
    assert_null(bad);
    /* positions stop at INT32_MAX - 1, so next_pos (last + 1) never overflows */
    assert_int_equal(eng_kv_rerotate(c, 0, 2, INT32_MAX - 1), ENG_ERR_RANGE);
    assert_int_equal(eng_kv_rerotate(c, 0, 2, INT32_MAX - 2), ENG_OK);
    assert_int_equal(eng_kv_next_pos(c), INT32_MAX);
    assert_int_equal(eng_decode(c, 1, -1, NULL), ENG_ERR_RANGE);
    assert_int_equal(eng_prefill(c, t, NULL, 1, NULL, NULL), ENG_ERR_RANGE);
    const int32_t maxpos = INT32_MAX;
    assert_int_equal(eng_prefill(c, t, &maxpos, 1, NULL, NULL), ENG_ERR_RANGE);
    assert_int_equal(eng_kv_commit(c, 0, 1, INT32_MAX), ENG_ERR_RANGE);
    assert_int_equal(eng_kv_len(c), 2);
    eng_kv_clear(c);
    assert_int_equal(eng_kv_len(c), 0);
    assert_int_equal(eng_kv_next_pos(c), 0);
    assert_int_equal((int)eng_kv_token_bytes(m), 5 * 2 * 32 * 2);
    assert_string_equal(eng_status_str(ENG_ERR_RANGE), "out of range");
    assert_true(eng_default_threads() >= 1);
    eng_ctx_free(c);
    eng_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rerotate_normal),
        cmocka_unit_test(test_rerotate_neox),
        cmocka_unit_test(test_rerotate_yarn),
        cmocka_unit_test(test_rerotate_rope_freqs),
        cmocka_unit_test(test_rerotate_partial),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_errors_stablelm),
        cmocka_unit_test(test_kv_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
