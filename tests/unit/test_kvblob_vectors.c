/* test_kvblob_vectors.c: the spec/vectors blobs, byte for byte: file hashes, header bytes,
 * manifest fields, and decoded values against an independent copy of the spec's generator;
 * the f16 and f16-zstd chunks are also decoded here straight from the spec text (libzstd
 * only), not through format/. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <zstd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format/kvblob.h"

enum { L = 2, KVD = 16, TMAX = 600 };

static const struct {
    const char *name;
    kvb_codec codec;
    const char *sha256;
    int qmax; /* 0 = lossless */
    int version, t, ct, chunks;
} vecs[] = {
    {"vec-f16.kvb", KVB_CODEC_F16, "685f327e8511b0a6f8bcc343f5359e708df8221b6cbbecb0a290abe292ecab46", 0, 2, 40, 16, 3},
    {"vec-f16-zstd.kvb", KVB_CODEC_F16_ZSTD, "dbbdbe9472428dd001c33a037de57172afc8f1b0afadca8a131958583e7637dd", 0, 2, 40, 16, 3},
    {"vec-q8.kvb", KVB_CODEC_Q8, "8f8ede6fcbd59e7faf75d867f95e04a6ff86a64bdd1947996895efc564f15d29", 127, 2, 40, 16, 3},
    {"vec-q4.kvb", KVB_CODEC_Q4, "a71627e5ff3188a1ef3fffd236791d1f6350edb189934d9a47129ae4727130cf", 7, 2, 40, 16, 3},
    {"vec-f16-leaves.kvb", KVB_CODEC_F16, "3d45e51bb9a89379cbbacbc85fba6ff4813e0024fa6ff8d84621904fe9c5a406", 0, 2, 600, 560, 2},
    /* written by the version 1 writer (whole-chunk SHA-256): readers still accept it */
    {"v1-f16-zstd.kvb", KVB_CODEC_F16_ZSTD, "f4f0b0ec5a1c5189a61116c756711c5f528fcc12faa5887250b8fa801c54fd6b", 0, 1, 40, 16, 3},
};

static double expect_k[L][TMAX * KVD], expect_v[L][TMAX * KVD];
static uint16_t got_k[L][TMAX * KVD], got_v[L][TMAX * KVD];

/* spec/kvblob.md "Test vectors", written again from the spec text, for T tokens */
static void generate(int T)
{
    uint64_t s = 0x6b76707562ull;
    for (int l = 0; l < L; l++)
        for (int w = 0; w < 2; w++)
            for (int t = 0; t < T; t++)
                for (int c = 0; c < KVD; c++) {
                    s += 0x9E3779B97F4A7C15ull;
                    uint64_t z = s;
                    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
                    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
                    z ^= z >> 31;
                    double x = ldexp((double)((int)(z >> 53) - 1024), -(11 - c % 4));
                    (w ? expect_v : expect_k)[l][t * KVD + c] = x;
                }
}

/* spec/kvblob.md section 4, "Chunk digest", written again from the spec text: version 1
 * hashes the stored bytes; version 2 hashes the SHA-256s of their 32 KiB leaves, concatenated. */
static void spec_digest(int version, const uint8_t *p, size_t len, uint8_t out[32])
{
    if (version == 1) {
        kvc_sha256(p, len, out);
        return;
    }
    size_t n = (len + 32767) / 32768;
    uint8_t *cat = malloc(n * 32 + 1);
    for (size_t i = 0; i < n; i++)
        kvc_sha256(p + i * 32768, len - i * 32768 < 32768 ? len - i * 32768 : 32768, cat + i * 32);
    kvc_sha256(cat, n * 32, out);
    free(cat);
}

/* spec/kvblob.md section 6, written again from the spec text: decodes chunk `stored` (len
 * bytes, nv values) of codec f16 or f16-zstd into out. Returns 0 on success. */
static int spec_decode(kvb_codec codec, const uint8_t *stored, size_t len, size_t nv, uint16_t *out)
{
    if (codec == KVB_CODEC_F16) {
        if (len != 2 * nv)
            return -1;
        for (size_t i = 0; i < nv; i++)
            out[i] = (uint16_t)(stored[2 * i] | stored[2 * i + 1] << 8);
        return 0;
    }
    if (len < nv)
        return -1;
    size_t zlen = len - nv; /* Z = first length - N bytes: one frame of the N high bytes */
    if (ZSTD_getFrameContentSize(stored, zlen) != nv || ZSTD_findFrameCompressedSize(stored, zlen) != zlen)
        return -1;
    uint8_t *hi = malloc(nv);
    size_t got = ZSTD_decompress(hi, nv, stored, zlen);
    int rc = ZSTD_isError(got) || got != nv ? -1 : 0;
    for (size_t i = 0; !rc && i < nv; i++) /* L = the N low bytes, raw */
        out[i] = (uint16_t)(stored[zlen + i] | hi[i] << 8);
    free(hi);
    return rc;
}

static double h2d(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

static uint8_t *slurp(const char *name, size_t *len)
{
    const char *root = getenv("KVPUB_ROOT");
    char path[1024];
    snprintf(path, sizeof path, "%s/spec/vectors/%s", root ? root : ".", name);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    uint8_t *b = malloc(1 << 20);
    *len = fread(b, 1, 1 << 20, f);
    fclose(f);
    return b;
}

static kvb_status collect(void *user, const kvb_chunk *c, char *err, size_t errlen)
{
    (void)user;
    (void)err;
    (void)errlen;
    for (uint32_t l = 0; l < L; l++) {
        memcpy(got_k[l] + c->t0 * KVD, kvb_chunk_k(c, l), (c->t1 - c->t0) * KVD * 2);
        memcpy(got_v[l] + c->t0 * KVD, kvb_chunk_v(c, l), (c->t1 - c->t0) * KVD * 2);
    }
    return KVB_OK;
}

static void test_vectors(void **state)
{
    (void)state;
    const char *root = getenv("KVPUB_ROOT");
    char path[1024], err[256];
    snprintf(path, sizeof path, "%s/spec/vectors/test-key.pub", root ? root : ".");
    kvc_key *pub = NULL;
    assert_int_equal(kvc_key_load_public(path, &pub, err, sizeof err), KVC_OK);
    uint8_t id[KVC_KEYID_LEN];
    char hex[65];
    kvc_key_id(pub, id);
    assert_string_equal(kvc_hex(id, KVC_KEYID_LEN, hex), "e5337331b87e3772");
    for (size_t v = 0; v < sizeof vecs / sizeof *vecs; v++) {
        size_t len;
        uint8_t *b = slurp(vecs[v].name, &len);
        const int T = vecs[v].t, CT = vecs[v].ct;
        generate(T);
        uint8_t h[32];
        kvc_sha256(b, len, h);
        if (strcmp(kvc_hex(h, 32, hex), vecs[v].sha256) != 0)
            fail_msg("%s: sha256 %s, spec/vectors says %s", vecs[v].name, hex, vecs[v].sha256);
        /* magic, version, flags 0, Ed25519, reserved, manifest length (any), reserved, key id */
        uint8_t hdr0[16] = {0x89, 'K', 'V', 'B', 'L', 'O', 'B', '\n', (uint8_t)vecs[v].version, 0, 0, 0, 1, 0, 0, 0};
        static const uint8_t hdr1[12] = {0, 0, 0, 0, 0xe5, 0x33, 0x73, 0x31, 0xb8, 0x7e, 0x37, 0x72};
        assert_memory_equal(b, hdr0, 16);
        assert_memory_equal(b + 20, hdr1, 12);
        memset(got_k, 0, sizeof got_k);
        memset(got_v, 0, sizeof got_v);
        kvb_read_opts o;
        memset(&o, 0, sizeof o);
        o.key = pub;
        o.n_threads = 2;
        o.on_chunk = collect;
        kvb_reader *r = kvb_reader_create(&o);
        assert_int_equal(kvb_reader_feed(r, b, len, err, sizeof err), KVB_OK);
        assert_int_equal(kvb_reader_finish(r, err, sizeof err), KVB_OK);
        const kvb_manifest *m = kvb_reader_manifest(r);
        assert_int_equal(m->codec, vecs[v].codec);
        /* f16-zstd signs its decoded chunks (spec 4.2): the same digests as the f16 vector's
         * chunks (which kvblob_vectors.sh recomputes from the spec with openssl) */
        static uint8_t f16_digest[3][KVC_SHA256_LEN];
        assert_int_equal(m->has_raw, m->codec == KVB_CODEC_F16_ZSTD && vecs[v].version == 2);
        for (uint32_t c = 0; c < m->n_chunks && vecs[v].t == 40 && vecs[v].version == 2; c++) {
            if (m->codec == KVB_CODEC_F16)
                memcpy(f16_digest[c], m->chunks[c].sha256, KVC_SHA256_LEN);
            else if (m->codec == KVB_CODEC_F16_ZSTD)
                assert_memory_equal(m->chunks[c].raw_sha256, f16_digest[c], KVC_SHA256_LEN);
        }
        assert_string_equal(m->doc_title, "kvpub test vector");
        assert_string_equal(m->doc_source_uri, "https://example.invalid/kvpub/vector.txt");
        assert_string_equal(m->model_arch, "synthetic");
        assert_int_equal(m->n_tokens, T);
        assert_int_equal(m->chunk_tokens, CT);
        assert_int_equal(m->n_chunks, vecs[v].chunks);
        assert_int_equal(m->created, 1700000000);
        assert_int_equal(m->expires, 0);
        assert_int_equal(m->serial, 1);
        assert_int_equal(m->pos0, 1);
        assert_int_equal(m->rope_type, KVB_ROPE_NEOX);
        assert_true(m->rope_freq_base == 10000.0);
        assert_int_equal(m->doc_sha256[31], 31);
        assert_int_equal(m->model_fingerprint[0], 0x20);
        assert_int_equal(m->tokenizer_fingerprint[0], 0x40);
        const int32_t *tok = kvb_reader_tokens(r);
        for (int i = 0; i < T; i++)
            assert_int_equal(tok[i], (i * 7919 + 13) % 32000);
        for (int l = 0; l < L; l++)
            for (int i = 0; i < T * KVD; i++) {
                double gk = h2d(got_k[l][i]), gv = h2d(got_v[l][i]);
                if (!vecs[v].qmax) {
                    assert_true(gk == expect_k[l][i]);
                    assert_true(gv == expect_v[l][i]);
                    continue;
                }
                int t = i / KVD, c = i % KVD, t0 = t / CT * CT, t1 = t0 + CT < T ? t0 + CT : T;
                double kmax = 0, vmax = 0;
                for (int u = t0; u < t1; u++)
                    kmax = fmax(kmax, fabs(expect_k[l][u * KVD + c]));
                for (int d = 0; d < KVD; d++)
                    vmax = fmax(vmax, fabs(expect_v[l][t * KVD + d]));
                double sk = kmax / vecs[v].qmax * (1 + ldexp(1, -10)) + ldexp(1, -24);
                double sv = vmax / vecs[v].qmax * (1 + ldexp(1, -10)) + ldexp(1, -24);
                assert_true(fabs(gk - expect_k[l][i]) <= sk / 2 + ldexp(fabs(gk), -11) + ldexp(1, -25));
                assert_true(fabs(gv - expect_v[l][i]) <= sv / 2 + ldexp(fabs(gv), -11) + ldexp(1, -25));
            }
        /* data offset = align64(32 + manifest_len + 64); chunk offsets from the manifest */
        uint32_t ml = (uint32_t)b[16] | (uint32_t)b[17] << 8 | (uint32_t)b[18] << 16 | (uint32_t)b[19] << 24;
        size_t data = (32 + ml + 64 + 63) & ~(size_t)63;
        for (uint32_t c = 0; c < m->n_chunks; c++) {
            const kvb_section *sec = &m->chunks[c];
            assert_true(data + sec->offset + sec->length <= len);
            spec_digest(vecs[v].version, b + data + sec->offset, sec->length, h);
            assert_memory_equal(h, sec->sha256, 32);
        }
        if (vecs[v].codec == KVB_CODEC_F16 || vecs[v].codec == KVB_CODEC_F16_ZSTD) {
            for (uint32_t c = 0; c < m->n_chunks; c++) {
                const kvb_section *sec = &m->chunks[c];
                size_t n = sec->t1 - sec->t0, nv = (size_t)L * 2 * n * KVD;
                assert_true(data + sec->offset + sec->length <= len);
                uint16_t *dec = malloc(nv * 2);
                if (spec_decode(vecs[v].codec, b + data + sec->offset, sec->length, nv, dec) != 0)
                    fail_msg("%s: chunk %u does not decode by the spec", vecs[v].name, c);
                for (int l = 0; l < L; l++)
                    for (size_t i = 0; i < n * KVD; i++) {
                        size_t at = sec->t0 * KVD + i;
                        assert_true(h2d(dec[(2 * l) * n * KVD + i]) == expect_k[l][at]);
                        assert_true(h2d(dec[(2 * l + 1) * n * KVD + i]) == expect_v[l][at]);
                    }
                free(dec);
            }
        }
        kvb_reader_free(r);
        free(b);
    }
    kvc_key_free(pub);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_vectors)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
