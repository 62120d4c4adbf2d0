/* test_sampler.c: eng_sampler: greedy ties, top-k, top-p cut, sampled frequencies against the
 * softmax computed here in double, and seed determinism. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"

static void test_greedy_ties(void **state)
{
    (void)state;
    eng_sampler *s = eng_sampler_create(0.0f, 0, 1.0f, 1);
    assert_non_null(s);
    float a[] = {1, 3, 3, 2};
    assert_int_equal(eng_sample(s, a, 4), 1);
    float b[] = {5, 5, 5};
    assert_int_equal(eng_sample(s, b, 3), 0);
    float c[] = {-INFINITY, NAN, -1, 7, 7};
    assert_int_equal(eng_sample(s, c, 5), 3);
    float d[] = {NAN, -INFINITY};
    assert_int_equal(eng_sample(s, d, 2), 0);
    assert_int_equal(eng_sample(s, a, 0), -1);
    eng_sampler_free(s);
    eng_sampler_free(NULL);
    /* temperature <= 0 is greedy whatever the other settings */
    s = eng_sampler_create(-1.0f, 3, 0.5f, 9);
    assert_int_equal(eng_sample(s, a, 4), 1);
    eng_sampler_free(s);
}

static void test_top_k1_is_greedy(void **state)
{
    (void)state;
    eng_sampler *s = eng_sampler_create(1.5f, 1, 1.0f, 77);
    enum { N = 1000 };
    static float l[N];
    uint64_t x = 3;
    for (int round = 0; round < 50; round++) {
        int want = 0;
        for (int i = 0; i < N; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            l[i] = (float)(x >> 40) / 65536.0f; /* coarse values: ties happen */
            if (l[i] > l[want])
                want = i;
        }
        assert_int_equal(eng_sample(s, l, N), want);
    }
    eng_sampler_free(s);
}

/* Samples `draws` times and checks each id's frequency against want[] (0 = never). */
static void check_freq(eng_sampler *s, const float *logits, int n, const double *want, int draws)
{
    int *cnt = calloc((size_t)n, sizeof *cnt);
    assert_non_null(cnt);
    for (int i = 0; i < draws; i++) {
        int32_t id = eng_sample(s, logits, n);
        assert_true(id >= 0 && id < n);
        cnt[id]++;
    }
    for (int i = 0; i < n; i++) {
        double f = (double)cnt[i] / draws;
        double sd = sqrt(want[i] * (1 - want[i]) / draws);
        if (want[i] == 0 ? cnt[i] != 0 : fabs(f - want[i]) > 5 * sd + 1e-4)
            fail_msg("id %d: frequency %.4f, want %.4f", i, f, want[i]);
    }
    free(cnt);
}

static void test_distribution(void **state)
{
    (void)state;
    static const double p[5] = {0.1, 0.2, 0.3, 0.4, 0.0};
    float l[5];
    for (int i = 0; i < 4; i++)
        l[i] = (float)log(p[i]) + 2.0f; /* an offset must not matter */
    l[4] = -INFINITY;
    eng_sampler *s = eng_sampler_create(1.0f, 0, 1.0f, 1234);
    check_freq(s, l, 5, p, 200000);
    eng_sampler_free(s);

    /* temperature 0.5 squares the probabilities */
    double q[5], z = 0;
    for (int i = 0; i < 5; i++)
        z += q[i] = p[i] * p[i];
    for (int i = 0; i < 5; i++)
        q[i] /= z;
    s = eng_sampler_create(0.5f, 0, 1.0f, 99);
    check_freq(s, l, 5, q, 200000);
    eng_sampler_free(s);

    /* top-k 2 renormalises over the two best */
    double k2[5] = {0, 0, 0.3 / 0.7, 0.4 / 0.7, 0};
    s = eng_sampler_create(1.0f, 2, 1.0f, 5);
    check_freq(s, l, 5, k2, 100000);
    eng_sampler_free(s);
}

static void test_top_p(void **state)
{
    (void)state;
    /* probabilities 0.1 0.4 0.2 0.3 over ids 0..3: best first is 1, 3, 2, 0 */
    static const double p[4] = {0.1, 0.4, 0.2, 0.3};
    float l[4];
    for (int i = 0; i < 4; i++)
        l[i] = (float)log(p[i]);
    double keep2[4] = {0, 0.4 / 0.7, 0, 0.3 / 0.7};
    eng_sampler *s = eng_sampler_create(1.0f, 0, 0.65f, 11); /* 0.4 < 0.65 <= 0.7 */
    check_freq(s, l, 4, keep2, 100000);
    eng_sampler_free(s);

    double keep3[4] = {0, 0.4 / 0.9, 0.2 / 0.9, 0.3 / 0.9};
    s = eng_sampler_create(1.0f, 0, 0.75f, 12);
    check_freq(s, l, 4, keep3, 100000);
    eng_sampler_free(s);

    double keep1[4] = {0, 1, 0, 0};
    s = eng_sampler_create(1.0f, 0, 0.3f, 13);
    check_freq(s, l, 4, keep1, 1000);
    eng_sampler_free(s);

    /* a nucleus wider than the sampler's prefilter: 2000 equal tokens in a big vocabulary,
     * top_p 0.45 keeps the 900 lowest ids (ties rank by id) */
    enum { N = 50000 };
    float *big = malloc(sizeof(float) * N);
    assert_non_null(big);
    for (int i = 0; i < N; i++)
        big[i] = i % 25 == 0 ? 10.0f : -1e30f;
    s = eng_sampler_create(1.0f, 0, 0.45f, 14);
    int seen_hi = 0;
    for (int i = 0; i < 400; i++) {
        int32_t id = eng_sample(s, big, N);
        assert_true(id % 25 == 0 && id / 25 < 900);
        seen_hi |= id / 25 >= 800;
    }
    assert_true(seen_hi); /* not cut at the prefilter */
    eng_sampler_free(s);
    free(big);
}

static void test_seed_determinism(void **state)
{
    (void)state;
    enum { N = 64, T = 200 };
    float l[N];
    for (int i = 0; i < N; i++)
        l[i] = (float)sin(i * 0.7) * 2;
    int32_t a[T], b[T], c[T];
    eng_sampler *s1 = eng_sampler_create(0.8f, 40, 0.95f, 42);
    eng_sampler *s2 = eng_sampler_create(0.8f, 40, 0.95f, 42);
    eng_sampler *s3 = eng_sampler_create(0.8f, 40, 0.95f, 43);
    for (int t = 0; t < T; t++) {
        a[t] = eng_sample(s1, l, N);
        b[t] = eng_sample(s2, l, N);
        c[t] = eng_sample(s3, l, N);
    }
    assert_memory_equal(a, b, sizeof a);
    assert_true(memcmp(a, c, sizeof a) != 0);
    eng_sampler_free(s1);
    eng_sampler_free(s2);
    eng_sampler_free(s3);
}

/* Non-finite inputs: a +inf logit is the one certain token on every path (plain temperature
 * drew token 0: every weight was NaN); a NaN temperature is greedy, never a banned token; an
 * infinite one draws uniformly over the tokens that are not -inf. */
static void test_non_finite(void **state)
{
    (void)state;
    const float inf[] = {0, 1, 2, INFINITY, 1, 0};
    for (int path = 0; path < 3; path++) {
        eng_sampler *s = eng_sampler_create(1.0f, path == 1 ? 3 : 0, path == 2 ? 0.9f : 1.0f, 7);
        for (int i = 0; i < 200; i++)
            assert_int_equal(eng_sample(s, inf, 6), 3);
        eng_sampler_free(s);
    }
    const float banned[] = {-INFINITY, 1, 3, 2, -INFINITY, 0};
    eng_sampler *s = eng_sampler_create(NAN, 0, 1.0f, 7);
    for (int i = 0; i < 200; i++)
        assert_int_equal(eng_sample(s, banned, 6), 2);
    eng_sampler_free(s);
    s = eng_sampler_create(INFINITY, 0, 1.0f, 7);
    int seen[6] = {0};
    for (int i = 0; i < 4000; i++) {
        int32_t t = eng_sample(s, banned, 6);
        assert_true(t >= 0 && t < 6);
        seen[t]++;
    }
    eng_sampler_free(s);
    assert_int_equal(seen[0] + seen[4], 0);
    for (int t = 1; t < 6; t++)
        if (t != 4)
            assert_true(seen[t] > 800 && seen[t] < 1200); /* 1000 expected, about 5 sigma */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_ties),
        cmocka_unit_test(test_top_k1_is_greedy),
        cmocka_unit_test(test_distribution),
        cmocka_unit_test(test_top_p),
        cmocka_unit_test(test_seed_determinism),
        cmocka_unit_test(test_non_finite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
