/* test_kvpub_identity.c: the model-identity record (kvpub/identity.c): built from real and
 * synthetic models (the engine's RoPE enum mapped to the manifest's), written into a signed
 * manifest and read back unchanged, and each refusal with the message that names both sides. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine_test_util.h"
#include "kvpub/kvpub.h"

typedef struct fixture {
    eng_model *llama, *qwen3; /* stories260K (normal RoPE), synthetic qwen3 (NEOX) */
    kvp_identity id_llama, id_qwen3;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char err[256];
    if (!f || !(f->llama = et_load_model("models/stories260K.gguf")) ||
        !(f->qwen3 = et_load_model("models/synth/synth-qwen3-tiny-f32.gguf")))
        return -1;
    if (kvp_identity_from_model(f->llama, &f->id_llama, err, sizeof err) != KVP_OK ||
        kvp_identity_from_model(f->qwen3, &f->id_qwen3, err, sizeof err) != KVP_OK) {
        fprintf(stderr, "identity: %s\n", err);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    eng_model_free(f->llama);
    eng_model_free(f->qwen3);
    free(f);
    return 0;
}

/* The record states what the engine loaded, RoPE in the manifest's vocabulary. */
static void test_from_model(void **state)
{
    fixture *f = *state;
    const struct {
        const eng_model *m;
        const kvp_identity *id;
        kvb_rope_type want;
    } cases[] = {{f->llama, &f->id_llama, KVB_ROPE_NORMAL}, {f->qwen3, &f->id_qwen3, KVB_ROPE_NEOX}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const eng_info *in = eng_model_info(cases[i].m);
        const kvp_identity *id = cases[i].id;
        uint8_t fp[32], tfp[32];
        char err[256];
        assert_int_equal(eng_model_fingerprint((eng_model *)cases[i].m, fp, err, sizeof err), ENG_OK);
        eng_tokenizer_fingerprint(cases[i].m, tfp);
        assert_memory_equal(id->model_fp, fp, 32);
        assert_memory_equal(id->tokenizer_fp, tfp, 32);
        assert_string_equal(id->arch, in->arch);
        assert_int_equal(id->n_layer, in->n_layer);
        assert_int_equal(id->n_embd, in->n_embd);
        assert_int_equal(id->n_head, in->n_head);
        assert_int_equal(id->n_head_kv, in->n_head_kv);
        assert_int_equal(id->head_dim, in->head_dim);
        assert_int_equal(id->rope_type, cases[i].want);
        assert_int_equal(id->rope_n_rot, in->rope.n_rot);
        assert_true((float)id->rope_freq_base == in->rope.freq_base);
        assert_true((float)id->rope_freq_scale == in->rope.freq_scale);
        assert_int_equal(id->rope_scaling, KVB_SCALING_NONE);
        assert_int_equal(id->pos0, in->add_bos && in->bos_id >= 0 ? 1 : 0);
        assert_int_equal(id->n_vocab, in->n_vocab);
    }
}

/* The fields a manifest carries, compared one by one (descriptive fields are not carried). */
static void assert_same_identity(const kvp_identity *a, const kvp_identity *b)
{
    assert_memory_equal(a->model_fp, b->model_fp, 32);
    assert_memory_equal(a->tokenizer_fp, b->tokenizer_fp, 32);
    assert_string_equal(a->arch, b->arch);
    assert_int_equal(a->n_layer, b->n_layer);
    assert_int_equal(a->n_embd, b->n_embd);
    assert_int_equal(a->n_head, b->n_head);
    assert_int_equal(a->n_head_kv, b->n_head_kv);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_int_equal(a->rope_type, b->rope_type);
    assert_int_equal(a->rope_n_rot, b->rope_n_rot);
    assert_true(a->rope_freq_base == b->rope_freq_base);
    assert_true(a->rope_freq_scale == b->rope_freq_scale);
    assert_int_equal(a->rope_scaling, b->rope_scaling);
    assert_int_equal(a->rope_n_ctx_orig, b->rope_n_ctx_orig);
    assert_true(a->yarn_ext_factor == b->yarn_ext_factor);
    assert_true(a->yarn_attn_factor == b->yarn_attn_factor);
    assert_true(a->yarn_beta_fast == b->yarn_beta_fast);
    assert_true(a->yarn_beta_slow == b->yarn_beta_slow);
    assert_int_equal(a->pos0, b->pos0);
    assert_int_equal(a->rope_n_freq_factors, b->rope_n_freq_factors);
    for (uint32_t i = 0; i < a->rope_n_freq_factors; i++)
        assert_true(a->rope_freq_factors[i] == b->rope_freq_factors[i]);
}

/* to-manifest, signed and written, parsed back, from-manifest: the same record, accepted. */
static void test_manifest_round_trip(void **state)
{
    fixture *f = *state;
    /* the llama record again with llama3 frequency factors, as a Llama 3.1 model has them */
    kvp_identity with_ff = f->id_llama;
    with_ff.rope_n_freq_factors = with_ff.rope_n_rot / 2;
    for (uint32_t i = 0; i < with_ff.rope_n_freq_factors; i++)
        with_ff.rope_freq_factors[i] = 1.0f + 7.0f * (float)i / (float)with_ff.rope_n_freq_factors + 1.0f / 3;
    const kvp_identity *ids[] = {&f->id_llama, &f->id_qwen3, &with_ff};
    char dir[] = "/tmp/kvpub-test-identity-XXXXXX";
    assert_non_null(mkdtemp(dir));
    kvc_key *key = kvc_key_generate();
    assert_non_null(key);
    for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
        const kvp_identity *id = ids[i];
        enum { N = 3 };
        size_t kvd = (size_t)id->n_head_kv * id->head_dim;
        uint16_t **k = calloc(id->n_layer, sizeof *k);
        assert_non_null(k);
        for (uint32_t l = 0; l < id->n_layer; l++)
            assert_non_null(k[l] = calloc(N * kvd, sizeof **k));
        int32_t tokens[N] = {1, 2, 3};
        kvb_manifest m;
        memset(&m, 0, sizeof m);
        m.doc_title = "identity";
        m.n_tokens = N;
        m.codec = KVB_CODEC_F16;
        m.chunk_tokens = 2;
        m.created = 1700000000;
        kvp_identity_to_manifest(id, &m);
        char path[128], err[512];
        snprintf(path, sizeof path, "%s/b%zu.kvb", dir, i);
        if (kvb_write(&m, tokens, (const uint16_t *const *)k, (const uint16_t *const *)k, NULL, key, path, NULL,
                      NULL, err, sizeof err) != KVB_OK)
            fail_msg("kvb_write: %s", err);
        kvb_manifest *back = NULL;
        assert_int_equal(kvb_peek_file(path, key, NULL, &back, err, sizeof err), KVB_OK);
        kvp_identity got;
        kvp_identity_from_manifest(back, &got);
        assert_same_identity(&got, id);
        assert_int_equal(kvp_check_manifest(back, id, 0, err, sizeof err), KVP_OK);
        assert_int_equal(kvp_identity_check(&got, id, 17, err, sizeof err), KVP_OK);
        kvb_manifest_free(back);
        unlink(path);
        for (uint32_t l = 0; l < id->n_layer; l++)
            free(k[l]);
        free(k);
    }
    kvc_key_free(key);
    rmdir(dir);
}

/* Each way a blob can be made for something else, refused with the one message. */
static void test_refusals(void **state)
{
    fixture *f = *state;
    enum { OTHER_MODEL, OTHER_TOKENIZER, OTHER_SHAPE, OTHER_ROPE_TYPE, OTHER_FREQ, OTHER_SCALING, OTHER_YARN,
           ODD_N_ROT, NO_N_ROT, FACTORS_MISSING, FACTOR_VALUE };
    static const struct {
        int what;
        int32_t delta;
        const char *want; /* the message starts with this */
    } cases[] = {
        {OTHER_MODEL, 0, "model mismatch: blob wants sha256:"},
        {OTHER_TOKENIZER, 0, "tokenizer mismatch: blob wants sha256:"},
        {OTHER_SHAPE, 0, "blob does not fit the model: KV shape: blob 5 layers x 2 kv heads x 3, model"},
        {OTHER_ROPE_TYPE, 0, "cannot re-rotate exactly: RoPE type: blob neox, model normal"},
        {OTHER_FREQ, 0, "cannot re-rotate exactly: RoPE freq_scale: blob 0.5, model 1"},
        {OTHER_SCALING, 0, "cannot re-rotate exactly: RoPE scaling: blob yarn, model none"},
        {OTHER_YARN, 0, "cannot re-rotate exactly: YaRN parameters: blob n_ctx_orig 4096 ext 1 attn 1 beta 32/1, "
                        "model n_ctx_orig 2048 ext 1 attn 1 beta 32/1"},
        {ODD_N_ROT, 3, "cannot re-rotate: RoPE n_rot 7 with head_dim"},
        {NO_N_ROT, -2, "cannot re-rotate: RoPE n_rot 0 with head_dim"},
        {FACTORS_MISSING, 0, "cannot re-rotate exactly: RoPE frequency factors (rope_freqs): blob 2, model 0"},
        {FACTOR_VALUE, 0, "cannot re-rotate exactly: RoPE frequency factor 1: blob 8, model 4"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        kvp_identity blob = f->id_llama, model = f->id_llama;
        switch (cases[i].what) {
        case OTHER_MODEL: blob.model_fp[31] ^= 1; break;
        case OTHER_TOKENIZER: blob.tokenizer_fp[0] ^= 0x80; break;
        case OTHER_SHAPE: blob.n_layer = 5; blob.n_head_kv = 2; blob.head_dim = 3; break;
        case OTHER_ROPE_TYPE: blob.rope_type = KVB_ROPE_NEOX; break;
        case OTHER_FREQ: blob.rope_freq_scale = 0.5; break;
        case OTHER_SCALING: blob.rope_scaling = KVB_SCALING_YARN; break;
        case OTHER_YARN: /* both YaRN, another original context */
            blob.rope_scaling = model.rope_scaling = KVB_SCALING_YARN;
            blob.yarn_ext_factor = model.yarn_ext_factor = 1;
            blob.yarn_attn_factor = model.yarn_attn_factor = 1;
            blob.yarn_beta_fast = model.yarn_beta_fast = 32;
            blob.yarn_beta_slow = model.yarn_beta_slow = 1;
            blob.rope_n_ctx_orig = 4096;
            model.rope_n_ctx_orig = 2048;
            break;
        case ODD_N_ROT: blob.rope_n_rot = model.rope_n_rot = 7; break;
        case NO_N_ROT: blob.rope_n_rot = model.rope_n_rot = 0; break;
        case FACTORS_MISSING:
            blob.rope_n_freq_factors = 2;
            blob.rope_freq_factors[0] = blob.rope_freq_factors[1] = 8;
            break;
        case FACTOR_VALUE:
            blob.rope_n_freq_factors = model.rope_n_freq_factors = 2;
            blob.rope_freq_factors[0] = model.rope_freq_factors[0] = 1;
            blob.rope_freq_factors[1] = 8;
            model.rope_freq_factors[1] = 4;
            break;
        }
        char err[512] = "";
        assert_int_equal(kvp_identity_check(&blob, &model, cases[i].delta, err, sizeof err), KVP_ERR_REFUSED);
        if (strncmp(err, cases[i].want, strlen(cases[i].want)) != 0)
            fail_msg("case %zu: '%s' does not start with '%s'", i, err, cases[i].want);
        /* a RoPE that cannot be re-rotated still fits where the blob was made */
        if (cases[i].delta != 0)
            assert_int_equal(kvp_identity_check(&blob, &model, 0, err, sizeof err), KVP_OK);
    }
}

/* A blob for one model offered to another: the first line names both models, then the RoPE
 * and shape differences. */
static void test_other_model_names_both(void **state)
{
    fixture *f = *state;
    char err[1024], a[65], b[65], want[256];
    assert_int_equal(kvp_identity_check(&f->id_qwen3, &f->id_llama, 0, err, sizeof err), KVP_ERR_REFUSED);
    kvc_hex(f->id_qwen3.model_fp, 32, a);
    kvc_hex(f->id_llama.model_fp, 32, b);
    snprintf(want, sizeof want, "model mismatch: blob wants sha256:%.16s... (qwen3, %u layers), you loaded "
             "sha256:%.16s... (llama, %u layers); RoPE type: blob neox, model normal",
             a, f->id_qwen3.n_layer, b, f->id_llama.n_layer);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("'%s' does not start with '%s'", err, want);
    if (f->id_qwen3.n_layer != f->id_llama.n_layer || f->id_qwen3.head_dim != f->id_llama.head_dim)
        assert_non_null(strstr(err, "; KV shape: blob "));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_from_model),
        cmocka_unit_test(test_manifest_round_trip),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_other_model_names_both),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
