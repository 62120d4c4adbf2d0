/* test_kvpub_load.c: kvpub/load.c on stories260K (real weights): a blob loaded right after
 * BOS gives bit-identical logits to a full prefill; after a prefix its layer-0 keys match the
 * full prefill's within f16 rounding (re-rotation is exact up to rounding: layer 0's K depends
 * only on the token and its position); every manifest mismatch is refused with both sides
 * named; a tampered blob is refused and leaves the context as it was. The loaded path, compare
 * and decode over it: bit-identical to a full prefill, the same greedy tokens twice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "kvpub/kvpub.h"
#include "engine/kernels/quant_internal.h"
#include "tests/unit/engine_test_util.h"
#include "tests/unit/test_util.h"

typedef struct fixture {
    eng_model *m;
    const eng_info *in;
    kvp_identity id;
    kvc_key *key;
    kvc_trust *trust;
    char dir[64];
    int32_t *doc;
    size_t n_doc;
} fixture;

static const char DOC[] = "Once upon a time, there was a little girl named Lily. She loved to play "
                          "outside in the park with her dog. One day, she saw a big red ball.";

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char path[1024], err[256];
    if (!(f->m = et_load_model("models/stories260K.gguf")))
        return -1;
    f->in = eng_model_info(f->m);
    if (kvp_identity_from_model(f->m, &f->id, err, sizeof err) != KVP_OK)
        return -1;
    if (eng_tokenize(f->m, DOC, strlen(DOC), 0, 0, &f->doc, &f->n_doc) != ENG_OK || f->n_doc < 40)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/kvpub-test-loader-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s/pub", f->dir);
    f->key = kvc_key_generate();
    if (!f->key || kvc_key_write_pair(f->key, prefix, err, sizeof err) != KVC_OK)
        return -1;
    snprintf(path, sizeof path, "%s/pub.key", f->dir);
    unlink(path); /* the trust directory holds only the public half */
    if (kvc_trust_open(f->dir, &f->trust, err, sizeof err) != KVC_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (tu_rm_rf(f->dir) != 0)
        fprintf(stderr, "could not remove %s\n", f->dir);
    kvc_trust_free(f->trust);
    kvc_key_free(f->key);
    free(f->doc);
    eng_model_free(f->m);
    free(f);
    return 0;
}

static eng_ctx *new_ctx(fixture *f)
{
    eng_ctx *c = NULL;
    char err[256];
    eng_ctx_params p = {.n_ctx = 512, .n_threads = 2};
    assert_int_equal(eng_ctx_create(f->m, &p, &c, err, sizeof err), ENG_OK);
    return c;
}

/* A new context holding BOS alone, where a document's blob goes right after it. */
static eng_ctx *new_ctx_after_bos(fixture *f)
{
    eng_ctx *c = new_ctx(f);
    int32_t bos = f->in->bos_id;
    assert_int_equal(eng_prefill(c, &bos, NULL, 1, NULL, NULL), ENG_OK);
    return c;
}

static uint64_t g_serial;

/* The manifest a publisher writes for this model (as kvpubd publish does). */
static void fill_manifest(fixture *f, kvb_manifest *m, uint32_t n, kvb_codec codec)
{
    memset(m, 0, sizeof *m);
    m->doc_title = "test";
    m->doc_bytes = sizeof DOC - 1;
    kvc_sha256(DOC, sizeof DOC - 1, m->doc_sha256);
    kvp_identity_to_manifest(&f->id, m);
    m->kv_dim = m->n_head_kv * m->head_dim;
    m->n_tokens = n;
    m->codec = codec;
    m->chunk_tokens = 16; /* several chunks even for a short document */
    m->created = 1700000000;
    m->serial = g_serial; /* another serial: another blob of the same document */
}

/* Prefills [BOS, doc] and writes the doc's KV as the blob f->dir/doc.kvb, its path to path. */
static void make_blob(fixture *f, kvb_codec codec, char path[128])
{
    snprintf(path, 128, "%s/doc.kvb", f->dir);
    eng_ctx *c = new_ctx_after_bos(f);
    assert_int_equal(eng_prefill(c, f->doc, NULL, f->n_doc, NULL, NULL), ENG_OK);
    int L = f->in->n_layer, n = (int)f->n_doc;
    size_t kvd = (size_t)f->in->n_head_kv * f->in->head_dim;
    uint16_t **k = calloc((size_t)L, sizeof *k), **v = calloc((size_t)L, sizeof *v);
    for (int l = 0; l < L; l++) {
        k[l] = malloc((size_t)n * kvd * 2);
        v[l] = malloc((size_t)n * kvd * 2);
        assert_int_equal(eng_kv_export_layer(c, l, 1, n, k[l], v[l]), ENG_OK);
    }
    kvb_manifest m;
    fill_manifest(f, &m, (uint32_t)n, codec);
    char err[256];
    kvb_status st = kvb_write(&m, f->doc, (const uint16_t *const *)k, (const uint16_t *const *)v, NULL,
                              f->key, path, NULL, NULL, err, sizeof err);
    if (st != KVB_OK)
        fail_msg("kvb_write: %s", err);
    for (int l = 0; l < L; l++) {
        free(k[l]);
        free(v[l]);
    }
    free(k);
    free(v);
    eng_ctx_free(c);
}

static int g_no_copy; /* kvp_load_opts.no_decoded_copy for load_doc */

static kvp_status load_doc(fixture *f, eng_ctx *c, const char *path, kvp_load_stats *st, char *err, size_t errlen)
{
    kvp_load_opts o = {.model = f->m, .ctx = c, .identity = &f->id, .trust = f->trust, .n_threads = 2,
                       .no_decoded_copy = g_no_copy};
    kvb_status vst;
    uint32_t n = 0;
    int32_t *ids = NULL;
    kvp_status s = kvp_load_blob(&o, path, &ids, &n, st, &vst, err, errlen);
    if (s == KVP_OK) {
        assert_int_equal(n, f->n_doc);
        assert_memory_equal(ids, f->doc, n * sizeof *ids);
    }
    free(ids);
    return s;
}

/* Flips a bit 8 bytes before the end of the blob at path: inside its last chunk. */
static void flip_in_last_chunk(const char *path)
{
    FILE *fp = fopen(path, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, -8, SEEK_END), 0);
    int ch = fgetc(fp);
    assert_int_equal(fseek(fp, -8, SEEK_END), 0);
    fputc(ch ^ 0x40, fp);
    assert_int_equal(fclose(fp), 0);
}

/* Writes the decoded copy of the blob at path beside it (as kvfetch get does). */
static void write_copy(fixture *f, const char *path)
{
    char copy[160], err[256];
    snprintf(copy, sizeof copy, "%s" KVB_DECODED_SUFFIX, path);
    kvb_read_opts ro = {.trust = f->trust, .n_threads = 2};
    if (kvb_decoded_write(path, copy, &ro, err, sizeof err) != KVB_OK)
        fail_msg("kvb_decoded_write: %s", err);
}

/* Loads a fresh blob of the document (with copy: from its decoded copy) right after BOS and
 * checks the next logits are those of a full prefill, bit for bit; returns whether the loader
 * mapped the file. */
static int exact_after_bos_copy(fixture *f, kvb_codec codec, int copy)
{
    char path[128], err[512];
    make_blob(f, codec, path);
    if (copy)
        write_copy(f, path);
    int32_t suffix[3] = {f->doc[0], f->doc[1], f->doc[2]};
    int nv = f->in->n_vocab;
    float *a = malloc((size_t)nv * 4), *b = malloc((size_t)nv * 4);

    eng_ctx *c = new_ctx_after_bos(f);
    kvp_load_stats st;
    if (load_doc(f, c, path, &st, err, sizeof err) != KVP_OK)
        fail_msg("load: %s", err);
    assert_int_equal(st.decoded_copy, copy);
    assert_string_equal(st.copy_note, "");
    assert_int_equal(st.delta, 0);
    assert_int_equal(st.n_chunks, (f->n_doc + 15) / 16);
    assert_int_equal(eng_kv_len(c), 1 + (int)f->n_doc);
    assert_int_equal(eng_kv_next_pos(c), 1 + (int)f->n_doc);
    assert_int_equal(eng_prefill(c, suffix, NULL, 3, a, NULL), ENG_OK);

    eng_ctx *full = new_ctx(f);
    int32_t *seq = malloc((f->n_doc + 4) * sizeof *seq);
    seq[0] = f->in->bos_id;
    memcpy(seq + 1, f->doc, f->n_doc * sizeof *seq);
    memcpy(seq + 1 + f->n_doc, suffix, sizeof suffix);
    assert_int_equal(eng_prefill(full, seq, NULL, f->n_doc + 4, b, NULL), ENG_OK);
    assert_memory_equal(a, b, (size_t)nv * 4); /* bit-identical */
    free(seq);
    free(a);
    free(b);
    eng_ctx_free(c);
    eng_ctx_free(full);
    if (copy) {
        char cp[160];
        snprintf(cp, sizeof cp, "%s" KVB_DECODED_SUFFIX, path);
        unlink(cp);
    }
    return st.mapped;
}

static int exact_after_bos(fixture *f, kvb_codec codec) { return exact_after_bos_copy(f, codec, 0); }

static void test_exact_after_bos(void **state)
{
    fixture *f = *state;
    assert_int_equal(exact_after_bos(f, KVB_CODEC_F16_ZSTD), 0);
}

/* KVPUB_BLOB_READ: the workers' pread (auto, for chunks this small, or pread) or a mapping
 * (map, as auto does for chunks over 64 MiB) load the same bits, into place (f16) or through
 * a chunk buffer (f16-zstd), and both refuse a tampered chunk and roll back; a bad value is
 * refused with one line before the file is opened. */
static void test_read_ways(void **state)
{
    fixture *f = *state;
    static const char *const ways[] = {"auto", "", "pread", "map"};
    static const kvb_codec codecs[] = {KVB_CODEC_F16, KVB_CODEC_F16_ZSTD};
    for (int w = 0; w < 4; w++) {
        assert_int_equal(setenv("KVPUB_BLOB_READ", ways[w], 1), 0);
        const int want_map = strcmp(ways[w], "map") == 0;
        for (int i = 0; i < 2; i++)
            assert_int_equal(exact_after_bos(f, codecs[i]), want_map);
        char path[128], err[512];
        make_blob(f, KVB_CODEC_F16, path);
        flip_in_last_chunk(path);
        eng_ctx *c = new_ctx_after_bos(f);
        kvp_load_stats st;
        assert_int_equal(load_doc(f, c, path, &st, err, sizeof err), KVP_ERR_VERIFY);
        assert_int_equal(st.mapped, want_map);
        assert_non_null(strstr(err, "chunk"));
        assert_int_equal(eng_kv_len(c), 1);
        eng_ctx_free(c);
    }
    assert_int_equal(setenv("KVPUB_BLOB_READ", "mmap", 1), 0);
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/missing.kvb", f->dir);
    eng_ctx *c = new_ctx_after_bos(f);
    kvp_load_stats st;
    assert_int_equal(load_doc(f, c, path, &st, err, sizeof err), KVP_ERR_USAGE);
    assert_string_equal(err, "KVPUB_BLOB_READ='mmap' is not map, pread or auto");
    assert_int_equal(eng_kv_len(c), 1);
    eng_ctx_free(c);
    unsetenv("KVPUB_BLOB_READ");
}

static void test_rerotated_layer0(void **state)
{
    fixture *f = *state;
    char path[128], err[512];
    make_blob(f, KVB_CODEC_F16, path);
    int32_t head[1 + 23];
    head[0] = f->in->bos_id;
    for (int i = 1; i < 24; i++)
        head[i] = f->doc[(i * 7) % f->n_doc]; /* some other tokens as a prefix */
    eng_ctx *c = new_ctx(f), *full = new_ctx(f);
    assert_int_equal(eng_prefill(c, head, NULL, 24, NULL, NULL), ENG_OK);
    kvp_load_stats st;
    if (load_doc(f, c, path, &st, err, sizeof err) != KVP_OK)
        fail_msg("load: %s", err);
    assert_int_equal(st.pos, 24);
    assert_int_equal(st.delta, 23);
    assert_true(st.rerotate_s > 0);
    assert_int_equal(eng_kv_next_pos(c), 24 + (int)f->n_doc);

    assert_int_equal(eng_prefill(full, head, NULL, 24, NULL, NULL), ENG_OK);
    assert_int_equal(eng_prefill(full, f->doc, NULL, f->n_doc, NULL, NULL), ENG_OK);
    size_t kvd = (size_t)f->in->n_head_kv * f->in->head_dim, nv = f->n_doc * kvd;
    uint16_t *k1 = malloc(nv * 2), *v1 = malloc(nv * 2), *k2 = malloc(nv * 2), *v2 = malloc(nv * 2);
    assert_int_equal(eng_kv_export_layer(c, 0, 24, (int)f->n_doc, k1, v1), ENG_OK);
    assert_int_equal(eng_kv_export_layer(full, 0, 24, (int)f->n_doc, k2, v2), ENG_OK);
    double maxabs = 0, maxk = 0;
    for (size_t i = 0; i < nv; i++) {
        double a = base_f16_to_f32(k1[i]), b = base_f16_to_f32(k2[i]);
        maxabs = fmax(maxabs, fabs(a - b));
        maxk = fmax(maxk, fabs(b));
    }
    /* two f16 roundings of the same rotation: a few ulp of the largest |K| */
    printf("layer 0 K after re-rotation by 23: max |diff| %.3g, max |K| %.3g\n", maxabs, maxk);
    assert_true(maxk > 0.1);
    assert_true(maxabs <= 4e-3 * maxk);
    /* V is never rotated: layer 0 V is identical */
    assert_memory_equal(v1, v2, nv * 2);
    free(k1);
    free(v1);
    free(k2);
    free(v2);
    eng_ctx_free(c);
    eng_ctx_free(full);
}

static void test_manifest_checks(void **state)
{
    fixture *f = *state;
    char err[512];
    kvb_manifest m;
    fill_manifest(f, &m, 10, KVB_CODEC_F16);
    assert_int_equal(kvp_check_manifest(&m, &f->id, 5, err, sizeof err), KVP_OK);

    static const struct {
        int what;
        const char *want;
    } cases[] = {
        {0, "model mismatch: blob wants sha256:"},
        {1, "tokenizer mismatch: blob wants sha256:"},
        {2, "cannot re-rotate exactly: RoPE freq_base: blob 500000, model 10000"},
        {3, "cannot re-rotate exactly: RoPE type: blob neox, model normal"},
        {4, "blob does not fit the model: KV shape: blob 6 layers"},
        {5, "cannot re-rotate exactly: RoPE scaling: blob linear, model none"},
        {6, "model mismatch: blob wants sha256:0000000000000000... (llama, 5 layers), you loaded sha256:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fill_manifest(f, &m, 10, KVB_CODEC_F16);
        switch (cases[i].what) {
        case 0: m.model_fingerprint[31] ^= 1; break;
        case 1: m.tokenizer_fingerprint[0] ^= 0x80; break;
        case 2: m.rope_freq_base = 500000; break;
        case 3: m.rope_type = KVB_ROPE_NEOX; break;
        case 4: m.n_layer = 6; break;
        case 5: m.rope_scaling = KVB_SCALING_LINEAR; break;
        case 6: memset(m.model_fingerprint, 0, 32); m.rope_freq_base = 1e6; break;
        }
        err[0] = 0;
        assert_int_equal(kvp_check_manifest(&m, &f->id, 5, err, sizeof err), KVP_ERR_REFUSED);
        if (!strstr(err, cases[i].want))
            fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].want);
    }
    /* the model mismatch also names the RoPE difference */
    fill_manifest(f, &m, 10, KVB_CODEC_F16);
    m.model_fingerprint[0] ^= 1;
    m.rope_freq_base = 1e6;
    assert_int_equal(kvp_check_manifest(&m, &f->id, 0, err, sizeof err), KVP_ERR_REFUSED);
    assert_non_null(strstr(err, "RoPE freq_base: blob 1e+06, model 10000"));
}

/* Makes the f16-zstd blob and its decoded copy, lets damage change the copy, loads: the blob
 * itself loads (the right tokens, load_doc checks), st.copy_note contains note, and the copy
 * is removed or kept as removed says. */
static void copy_case(fixture *f, void (*damage)(fixture *f, const char *path, const char *copy), const char *note,
                      int removed)
{
    char path[128], copy[160], err[512];
    make_blob(f, KVB_CODEC_F16_ZSTD, path);
    snprintf(copy, sizeof copy, "%s" KVB_DECODED_SUFFIX, path);
    write_copy(f, path);
    damage(f, path, copy);
    eng_ctx *c = new_ctx_after_bos(f);
    kvp_load_stats st;
    if (load_doc(f, c, path, &st, err, sizeof err) != KVP_OK)
        fail_msg("load: %s", err);
    assert_int_equal(st.decoded_copy, 0);
    if (!strstr(st.copy_note, note))
        fail_msg("copy_note '%s' lacks '%s'", st.copy_note, note);
    assert_int_equal(access(copy, F_OK) != 0, removed);
    assert_int_equal(eng_kv_len(c), 1 + (int)f->n_doc);
    eng_ctx_free(c);
    unlink(copy);
}

static void dmg_flip(fixture *f, const char *path, const char *copy) { (void)f, (void)path, flip_in_last_chunk(copy); }
static void dmg_cut(fixture *f, const char *path, const char *copy)
{
    (void)f, (void)path;
    FILE *fp = fopen(copy, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    assert_int_equal(ftruncate(fileno(fp), ftell(fp) - 100), 0);
    fclose(fp);
}
/* the blob is replaced by another (a later serial) of the same document and signer */
static void dmg_other(fixture *f, const char *path, const char *copy)
{
    char moved[170], p2[128];
    snprintf(moved, sizeof moved, "%s.keep", copy);
    assert_int_equal(rename(copy, moved), 0);
    g_serial++;
    make_blob(f, KVB_CODEC_F16_ZSTD, p2);
    g_serial--;
    assert_string_equal(p2, path);
    assert_int_equal(rename(moved, copy), 0);
}
/* a blob without decoded digests, with a "copy" that is the blob itself */
static void dmg_f16(fixture *f, const char *path, const char *copy)
{
    char p2[128], cmd[512];
    make_blob(f, KVB_CODEC_F16, p2);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path, copy);
    assert_int_equal(system(cmd), 0);
}

/* A decoded copy beside an f16-zstd blob loads the same bits as the blob (exact after BOS),
 * and is passed over for the blob when it is damaged, cut short, another blob's, or not a
 * decoded copy at all; bytes that are bad get it removed. no_decoded_copy reads the blob. */
static void test_decoded_copy(void **state)
{
    fixture *f = *state;
    static const char *const ways[] = {"pread", "map"};
    for (int w = 0; w < 2; w++) {
        assert_int_equal(setenv("KVPUB_BLOB_READ", ways[w], 1), 0);
        assert_int_equal(exact_after_bos_copy(f, KVB_CODEC_F16_ZSTD, 1), w);
    }
    unsetenv("KVPUB_BLOB_READ");
    copy_case(f, dmg_flip, "decoded copy refused and removed: chunk", 1);
    copy_case(f, dmg_cut, "decoded copy refused and removed", 1);
    copy_case(f, dmg_other, "decoded copy refused and removed: it is not this blob's", 1);
    copy_case(f, dmg_f16, "decoded copy not used: no decoded copy: the manifest carries no decoded chunk digests", 0);
    /* the copy named as the blob: refused, with a hint */
    {
        char p[128], cp[160], e[512];
        make_blob(f, KVB_CODEC_F16_ZSTD, p);
        write_copy(f, p);
        snprintf(cp, sizeof cp, "%s" KVB_DECODED_SUFFIX, p);
        eng_ctx *c = new_ctx_after_bos(f);
        kvp_load_stats st;
        assert_int_equal(load_doc(f, c, cp, &st, e, sizeof e), KVP_ERR_VERIFY);
        if (!strstr(e, "looks like a decoded copy: give its blob"))
            fail_msg("no hint: %s", e);
        assert_int_equal(eng_kv_len(c), 1);
        eng_ctx_free(c);
        unlink(cp);
    }
    /* no_decoded_copy: the blob, without a word */
    char path[128], copy[160], err[512];
    make_blob(f, KVB_CODEC_F16_ZSTD, path);
    write_copy(f, path);
    g_no_copy = 1;
    eng_ctx *c = new_ctx_after_bos(f);
    kvp_load_stats st;
    assert_int_equal(load_doc(f, c, path, &st, err, sizeof err), KVP_OK);
    g_no_copy = 0;
    assert_int_equal(st.decoded_copy, 0);
    assert_string_equal(st.copy_note, "");
    eng_ctx_free(c);
    /* an f16 blob has no decoded copy to write */
    make_blob(f, KVB_CODEC_F16, path);
    snprintf(copy, sizeof copy, "%s" KVB_DECODED_SUFFIX, path);
    unlink(copy);
    kvb_read_opts ro = {.trust = f->trust};
    assert_int_equal(kvb_decoded_write(path, copy, &ro, err, sizeof err), KVB_ERR_UNSUPPORTED);
    assert_int_equal(access(copy, F_OK), -1);
}

static void test_tampered_rolls_back(void **state)
{
    fixture *f = *state;
    char path[128], err[512];
    make_blob(f, KVB_CODEC_F16, path);
    flip_in_last_chunk(path);
    eng_ctx *c = new_ctx_after_bos(f);
    kvp_load_opts o = {.model = f->m, .ctx = c, .identity = &f->id, .trust = f->trust};
    kvb_status vst = KVB_OK;
    int32_t *ids = NULL;
    uint32_t n = 0;
    assert_int_equal(kvp_load_blob(&o, path, &ids, &n, NULL, &vst, err, sizeof err), KVP_ERR_VERIFY);
    assert_int_equal(vst, KVB_ERR_CHUNK_HASH);
    assert_null(ids);
    assert_int_equal(eng_kv_len(c), 1); /* the chunks imported before the bad one are gone */
    assert_int_equal(eng_kv_next_pos(c), 1);
    /* a model mismatch is refused before anything is imported */
    make_blob(f, KVB_CODEC_F16, path);
    kvp_identity other = f->id;
    other.model_fp[5] ^= 1;
    o.identity = &other;
    assert_int_equal(kvp_load_blob(&o, path, NULL, NULL, NULL, &vst, err, sizeof err), KVP_ERR_REFUSED);
    assert_non_null(strstr(err, "model mismatch"));
    assert_int_equal(eng_kv_len(c), 1);
    eng_ctx_free(c);
}

/* The loader's fused path (K re-rotated on its way into the cache) leaves the same bits as
 * importing the unrotated K and re-rotating the cells afterwards, with the SIMD kernels and
 * with the portable scalar ones. */
static void test_rerotated_import_bits(void **state)
{
    fixture *f = *state;
    char path[128], err[512];
    make_blob(f, KVB_CODEC_F16_ZSTD, path);
    enum { HEAD = 24 };
    int32_t head[HEAD];
    head[0] = f->in->bos_id;
    for (int i = 1; i < HEAD; i++)
        head[i] = f->doc[(i * 5) % f->n_doc];
    const int n = (int)f->n_doc, L = f->in->n_layer;
    size_t kvd = (size_t)f->in->n_head_kv * f->in->head_dim, nv = (size_t)n * kvd;
    uint16_t *k = malloc(nv * 2), *v = malloc(nv * 2), *k2 = malloc(nv * 2), *v2 = malloc(nv * 2);

    /* reference: the document's KV computed after BOS, imported as is, then re-rotated */
    eng_ctx *src = new_ctx(f), *ref = new_ctx(f);
    assert_int_equal(eng_prefill(src, head, NULL, 1, NULL, NULL), ENG_OK);
    assert_int_equal(eng_prefill(src, f->doc, NULL, f->n_doc, NULL, NULL), ENG_OK);
    assert_int_equal(eng_prefill(ref, head, NULL, HEAD, NULL, NULL), ENG_OK);
    for (int l = 0; l < L; l++) {
        assert_int_equal(eng_kv_export_layer(src, l, 1, n, k, v), ENG_OK);
        assert_int_equal(eng_kv_import_layer(ref, l, HEAD, n, k, v), ENG_OK);
    }
    assert_int_equal(eng_kv_commit(ref, HEAD, n, 1), ENG_OK);
    assert_int_equal(eng_kv_rerotate(ref, HEAD, n, HEAD - 1), ENG_OK);

    for (int scalar = 0; scalar < 2; scalar++) {
        int prev = eng_quant_force_scalar(scalar);
        eng_ctx *c = new_ctx(f);
        assert_int_equal(eng_prefill(c, head, NULL, HEAD, NULL, NULL), ENG_OK);
        kvp_load_stats st;
        if (load_doc(f, c, path, &st, err, sizeof err) != KVP_OK)
            fail_msg("load: %s", err);
        assert_int_equal(st.delta, HEAD - 1);
        assert_int_equal(eng_kv_next_pos(c), eng_kv_next_pos(ref));
        for (int l = 0; l < L; l++) {
            assert_int_equal(eng_kv_export_layer(c, l, HEAD, n, k, v), ENG_OK);
            assert_int_equal(eng_kv_export_layer(ref, l, HEAD, n, k2, v2), ENG_OK);
            assert_memory_equal(k, k2, nv * 2);
            assert_memory_equal(v, v2, nv * 2);
        }
        eng_ctx_free(c);
        eng_quant_force_scalar(prev);
    }
    free(k);
    free(v);
    free(k2);
    free(v2);
    eng_ctx_free(src);
    eng_ctx_free(ref);
}

/* The AVX2 re-rotation kernel against the scalar one on random finite f16 rows, for NEOX
 * (qwen3) and normal (llama) RoPE, for many deltas. */
static void test_rerotate_kernels_agree(void **state)
{
    (void)state;
    const char *models[] = {"models/synth/synth-qwen3-tiny-f32.gguf", "models/stories260K.gguf"};
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t mi = 0; mi < sizeof models / sizeof *models; mi++) {
        eng_model *m = et_load_model(models[mi]);
        assert_non_null(m);
        const eng_info *in = eng_model_info(m);
        enum { N = 37 };
        size_t cnt = (size_t)N * in->n_head_kv * in->head_dim;
        uint16_t *a = malloc(cnt * 2), *b = malloc(cnt * 2);
        const int32_t deltas[] = {1, -1, 7, 23, -100, 4095, 40000};
        for (size_t di = 0; di < sizeof deltas / sizeof *deltas; di++) {
            for (size_t i = 0; i < cnt; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                a[i] = base_f32_to_f16((float)((int64_t)(x >> 40) - (1 << 23)) / (float)(1 << 20));
            }
            memcpy(b, a, cnt * 2);
            eng_rope_rerotate_f16(m, a, N, deltas[di]);
            int prev = eng_quant_force_scalar(1);
            eng_rope_rerotate_f16(m, b, N, deltas[di]);
            eng_quant_force_scalar(prev);
            assert_memory_equal(a, b, cnt * 2);
        }
        free(a);
        free(b);
        eng_model_free(m);
    }
}

typedef struct collected {
    int32_t ids[16];
    int n;
} collected;

static int collect(void *user, const kvp_token *t)
{
    collected *c = user;
    if (t->i >= 0 && c->n < 16)
        c->ids[c->n++] = t->id;
    return 0;
}

/* The library's loaded path right after BOS, measured by kvp_compare against a full prefill:
 * bit-identical logits at every position, KL 0, every argmax agreeing; and kvp_decode picks
 * the same greedy tokens again from a second loaded path. */
static void test_path_compare_decode(void **state)
{
    fixture *f = *state;
    char path[128], err[512];
    make_blob(f, KVB_CODEC_F16_ZSTD, path);
    int32_t prompt[3] = {f->doc[0], f->doc[1], f->doc[2]};
    const char *blobs[1] = {path};
    kvp_path p = {.bos = f->in->bos_id, .blobs = blobs, .n_blobs = 1, .prompt = prompt, .n_prompt = 3};
    int nv = f->in->n_vocab;
    float *logits = malloc((size_t)nv * sizeof *logits);
    collected first = {0}, again = {0};
    for (int pass = 0; pass < 2; pass++) {
        eng_ctx *c = new_ctx(f), *full = new_ctx(f);
        assert_int_equal(kvp_ctx_warm_up(c, f->m, 512, f->in->bos_id, 4, err, sizeof err), KVP_OK);
        kvp_load_stats ls;
        int32_t *doc = NULL;
        uint32_t doc_n = 0;
        kvp_path_result r = {.ls = &ls, .doc_tokens = &doc, .doc_n = &doc_n};
        kvp_load_opts lo = {.model = f->m, .ctx = c, .identity = &f->id, .trust = f->trust, .n_threads = 2};
        if (kvp_path_run(&lo, &p, logits, &r, err, sizeof err) != KVP_OK)
            fail_msg("path: %s", err);
        assert_int_equal(r.failed_blob, -1);
        assert_int_equal(doc_n, f->n_doc);
        assert_int_equal(eng_kv_len(c), 1 + (int)f->n_doc + 3);
        if (pass == 0) {
            int32_t *seq = NULL;
            size_t n_seq = 0;
            assert_int_equal(kvp_path_sequence(&p, &r, &seq, &n_seq), KVP_OK);
            assert_int_equal(n_seq, 1 + f->n_doc + 3);
            kvp_compare_opts co = {.model = f->m, .loaded = c, .full = full, .seq = seq, .n_seq = n_seq, .n_gen = 8};
            kvp_compare_result cr;
            if (kvp_compare(&co, logits, &cr, err, sizeof err) != KVP_OK)
                fail_msg("compare: %s", err);
            assert_true(cr.positions >= 1 && cr.positions <= 8);
            assert_true(cr.bit_identical);
            assert_true(cr.kl_max == 0);
            assert_int_equal(cr.argmax_agree, cr.positions);
            assert_int_equal(cr.first_disagreement, -1);
            for (int i = 0; i < cr.positions; i++)
                collect(&first, &(kvp_token){.i = i, .id = cr.tokens[i]});
            kvp_compare_result_clear(&cr);
            free(seq);
        } else {
            kvp_decode_opts d = {.model = f->m, .ctx = c, .n_max = 8, .on_token = collect, .user = &again};
            kvp_decode_stats ds;
            assert_int_equal(kvp_decode(&d, logits, &ds, err, sizeof err), KVP_OK);
            assert_int_equal(ds.n_decoded, again.n - 1);
            assert_int_equal(again.n, first.n);
            assert_memory_equal(again.ids, first.ids, (size_t)first.n * sizeof *first.ids);
        }
        free(doc);
        eng_ctx_free(c);
        eng_ctx_free(full);
    }
    free(logits);
}

static long minor_faults(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt;
}

/* The warm-up leaves the context empty and readies a batch of n_rows: a prefill of that many
 * tokens afterwards maps no fresh row buffers (the engine grows them to the largest batch
 * yet), where after a one-row warm-up it does; so too for a batch larger than the warm-up's
 * own pass (64 tokens at most: the buffers are readied without one); n_rows past the context
 * is clamped to it. */
static void test_warm_up_rows(void **state)
{
    fixture *f = *state;
    char err[256];
    static const int rows[] = {48, 200};
    int32_t toks[200];
    for (int i = 0; i < 200; i++)
        toks[i] = f->doc[i % (int)f->n_doc];
    for (size_t r = 0; r < sizeof rows / sizeof *rows; r++) {
        eng_ctx *one = new_ctx(f), *many = new_ctx(f), *all = new_ctx(f);
        assert_int_equal(kvp_ctx_warm_up(one, f->m, 512, f->in->bos_id, 1, err, sizeof err), KVP_OK);
        assert_int_equal(kvp_ctx_warm_up(many, f->m, 512, f->in->bos_id, (size_t)rows[r], err, sizeof err), KVP_OK);
        assert_int_equal(kvp_ctx_warm_up(all, f->m, 512, f->in->bos_id, 100000, err, sizeof err), KVP_OK);
        assert_int_equal(eng_kv_len(one), 0);
        assert_int_equal(eng_kv_len(many), 0);
        assert_int_equal(eng_kv_len(all), 0);
        long f0 = minor_faults();
        assert_int_equal(eng_prefill(many, toks, NULL, (size_t)rows[r], NULL, NULL), ENG_OK);
        const long readied = minor_faults() - f0;
        f0 = minor_faults();
        assert_int_equal(eng_prefill(one, toks, NULL, (size_t)rows[r], NULL, NULL), ENG_OK);
        const long fresh = minor_faults() - f0;
        print_message("page faults of a %d-token prefill: %ld after a one-row warm-up, %ld after a %d-row one\n",
                      rows[r], fresh, readied, rows[r]);
        assert_true(fresh >= readied + 8);
        eng_ctx_free(one);
        eng_ctx_free(many);
        eng_ctx_free(all);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_after_bos),
        cmocka_unit_test(test_read_ways),
        cmocka_unit_test(test_rerotated_layer0),
        cmocka_unit_test(test_manifest_checks),
        cmocka_unit_test(test_tampered_rolls_back),
        cmocka_unit_test(test_decoded_copy),
        cmocka_unit_test(test_rerotated_import_bits),
        cmocka_unit_test(test_rerotate_kernels_agree),
        cmocka_unit_test(test_path_compare_decode),
        cmocka_unit_test(test_warm_up_rows),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
