/* test_engine_golden.c: the forward pass against llama.cpp's golden logits (shared/golden):
 * last-position logits, argmax at every position and greedy continuations, for stories260K
 * and the synthetic llama / qwen2 / qwen3 models in f32, f16 and q8_0, with the f16 KV cache
 * (config f16kv) and the f32 one (config exact). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/unit/engine_test_util.h"

/* Tolerances: k_tol in engine_test_util.h, with the measured figures behind them. */

static void run_model(const et_golden_model *gc)
{
    char rel[256];
    snprintf(rel, sizeof rel, "golden/models/%s.json", gc->name);
    json_t *root = et_load_json(rel);
    assert_non_null(root);
    eng_model *m = et_load_model(json_string_value(json_object_get(root, "model")));
    assert_non_null(m);
    const int V = eng_model_info(m)->n_vocab;
    const int n_ctx = (int)json_integer_value(json_object_get(root, "n_ctx"));
    json_t *cases = json_object_get(root, "cases");
    size_t ci;
    json_t *cs;
    double worst_abs = 0, worst_n = 0;
    int bad = 0;
    json_array_foreach(cases, ci, cs) {
        const char *config = json_string_value(json_object_get(cs, "config"));
        const int kv_f32 = et_config_kv_f32(config);
        if (kv_f32 < 0)
            continue;
        size_t n;
        int32_t *toks = et_json_ids(json_object_get(cs, "tokens"), &n);
        float *want = et_read_f32(json_string_value(json_object_get(cs, "logits_file")), (size_t)V);
        assert_non_null(want);
        const tol *t = &k_tol[gc->wtype][kv_f32 ? 0 : 1];
        const double margin = 2 * t->maxabs > MIN_MARGIN ? 2 * t->maxabs : MIN_MARGIN;
        eng_ctx *c = et_ctx(m, n_ctx, kv_f32);
        assert_non_null(c);
        float *all = malloc(n * (size_t)V * sizeof(float));
        float *last = malloc((size_t)V * sizeof(float));
        assert_int_equal(eng_prefill(c, toks, NULL, n, last, all), ENG_OK);
        et_err e = et_compare(last, want, (size_t)V);
        printf("%-22s %-6s len %3zu: maxabs %.3g nerr %.3g\n", gc->name, config, n, e.maxabs, e.nerr);
        if (e.maxabs > worst_abs)
            worst_abs = e.maxabs;
        if (e.nerr > worst_n)
            worst_n = e.nerr;
        if (e.maxabs > t->maxabs || e.nerr > t->nerr) {
            printf("  FAIL: logits beyond tolerance\n");
            bad++;
        }
        /* argmax per position: equal unless our own top-1/top-2 margin there is tiny */
        json_t *am = json_object_get(cs, "argmax_per_position");
        for (size_t p = 0; p < n; p++) {
            const float *row = all + p * (size_t)V;
            int ours = et_argmax(row, V), theirs = (int)json_integer_value(json_array_get(am, p));
            if (ours != theirs) {
                printf("  pos %zu: argmax %d vs %d (logit gap %.3g)\n", p, ours, theirs, row[ours] - row[theirs]);
                if (row[ours] - row[theirs] >= margin)
                    bad++;
            }
        }
        /* greedy continuation, one decode step at a time */
        json_t *g32 = json_object_get(cs, "greedy32"), *mg = json_object_get(cs, "greedy32_margin_top1_minus_top2");
        int tok = et_argmax(last, V);
        for (size_t s = 0; s < json_array_size(g32); s++) {
            if (json_real_value(json_array_get(mg, s)) < margin)
                break;
            if (tok != (int)json_integer_value(json_array_get(g32, s))) {
                printf("  FAIL: greedy step %zu: %d vs %d\n", s, tok,
                       (int)json_integer_value(json_array_get(g32, s)));
                bad++;
                break;
            }
            if (s + 1 == json_array_size(g32))
                break;
            assert_int_equal(eng_decode(c, tok, -1, last), ENG_OK);
            tok = et_argmax(last, V);
        }
        eng_ctx_free(c);
        free(all);
        free(last);
        free(want);
        free(toks);
    }
    printf("%-22s worst: maxabs %.3g nerr %.3g\n", gc->name, worst_abs, worst_n);
    eng_model_free(m);
    json_decref(root);
    assert_int_equal(bad, 0);
}

static void test_golden(void **state)
{
    (void)state;
    run_model(*state ? (const et_golden_model *)*state : &k_golden_models[0]);
}

static int setup_case(void **state)
{
    (void)state;
    return 0;
}

#define GCASE(i) cmocka_unit_test_prestate_setup_teardown(test_golden, setup_case, NULL, (void *)&k_golden_models[i])

int main(void)
{
    const struct CMUnitTest tests[] = {
        GCASE(0), GCASE(1), GCASE(2), GCASE(3), GCASE(4),
        GCASE(5), GCASE(6), GCASE(7), GCASE(8), GCASE(9),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
