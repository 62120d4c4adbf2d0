/* bench_kvblob.c: blob codec throughput on synthetic KV shaped like a Qwen3-0.6B cache
 * (28 layers, 8 KV heads x 128), per codec: ratio; encode (1 thread per core, and wall on n
 * threads, checking both give the same bytes); verify+decode on 1 thread per core (CPU time)
 * and wall on n threads; verify only. All GB/s are of raw f16 KV. */
#include "base/base.h"
#include "bench/bench_util.h"
#include "format/kvblob.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { NL = 28, NKV = 8, HD = 128, KVD = NKV * HD };

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double gauss(void)
{
    /* sum of 4 uniforms: cheap, smooth enough for noise */
    double s = 0;
    for (int i = 0; i < 4; i++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        s += (double)(rng >> 11) * 0x1p-53;
    }
    return (s - 2.0) * 1.732;
}

/* K: per-channel scales (a few large outlier channels, as in real caches), a slow positional
 * component standing in for RoPE, plus noise; V: smaller, per-token varying, noisy. */
static void make_kv(uint16_t **k, uint16_t **v, uint32_t nt)
{
    static double scale[KVD], freq[KVD];
    for (int c = 0; c < KVD; c++) {
        scale[c] = exp(0.6 * gauss()) * ((c % 97) == 0 ? 8.0 : 1.0);
        freq[c] = pow(1000000.0, -(double)(c % HD) / HD);
    }
    for (int l = 0; l < NL; l++)
        for (uint32_t t = 0; t < nt; t++) {
            double tok = 0.5 + 0.5 * gauss();
            for (int c = 0; c < KVD; c++) {
                double kx = scale[c] * (0.8 * cos(t * freq[c] + l) + 0.3 * gauss());
                double vx = 0.2 * tok * gauss() + 0.05 * sin(0.01 * c);
                k[l][(size_t)t * KVD + c] = base_f32_to_f16((float)kx);
                v[l][(size_t)t * KVD + c] = base_f32_to_f16((float)vx);
            }
        }
}

static kvb_status sink(void *user, const kvb_chunk *c, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    *(uint64_t *)user += (uint64_t)(c->t1 - c->t0); /* the loader would import here */
    return KVB_OK;
}

/* Verifies and decodes blob with n threads; returns wall seconds (CPU seconds in *cpu), or -1. */
static double read_once(const uint8_t *blob, size_t len, const kvc_key *key, int threads, int no_decode, double *cpu)
{
    uint64_t toks = 0;
    kvb_read_opts o;
    memset(&o, 0, sizeof o);
    o.key = key;
    o.n_threads = threads;
    o.no_decode = no_decode;
    o.on_chunk = sink;
    o.user = &toks;
    char err[256];
    double t0 = base_now_s(), c0 = bench_cpu_s();
    kvb_reader *r = kvb_reader_create(&o);
    kvb_status st = kvb_reader_feed(r, blob, len, err, sizeof err);
    if (!st)
        st = kvb_reader_finish(r, err, sizeof err);
    kvb_reader_free(r);
    double dt = base_now_s() - t0;
    *cpu = bench_cpu_s() - c0;
    if (st) {
        fprintf(stderr, "bench_kvblob: read failed: %s\n", err);
        return -1;
    }
    return dt;
}

int main(int argc, char **argv)
{
    uint32_t nt = 4096;
    int only = -1, threads = 2, level = 0;
    uint32_t chunk = 256;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--tokens") == 0 && i + 1 < argc) {
            nt = (uint32_t)strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--codec") == 0 && i + 1 < argc) {
            kvb_codec c;
            if (kvb_codec_parse(argv[++i], &c) != KVB_OK) {
                fprintf(stderr, "bench_kvblob: unknown codec '%s'\n", argv[i]);
                return 2;
            }
            only = (int)c;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--level") == 0 && i + 1 < argc) {
            level = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--chunk-tokens") == 0 && i + 1 < argc) {
            chunk = (uint32_t)strtoul(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--help") == 0) {
            puts("usage: bench_kvblob [--tokens N (4096)] [--codec f16|f16-zstd|q8|q4] [--threads N (2)]\n"
                 "                    [--level ZSTD_LEVEL (0 = writer default)]\n"
                 "Ratio, encode and verify+decode throughput (GB/s of raw f16 KV) per codec, on\n"
                 "synthetic KV shaped like Qwen3-0.6B (28 layers, 8 KV heads x 128). \"/core\" figures\n"
                 "are per CPU-second on one thread; \"wall\" figures use --threads threads.");
            return 0;
        } else {
            fprintf(stderr, "bench_kvblob: unknown option '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    if (threads < 1 || threads > 64) {
        fputs("bench_kvblob: --threads must be 1..64\n", stderr);
        return 2;
    }
    if (nt < 1 || nt > KVB_MAX_TOKENS) {
        fputs("bench_kvblob: --tokens must be 1..1048576\n", stderr);
        return 2;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    uint16_t *k[NL], *v[NL];
    for (int l = 0; l < NL; l++) {
        k[l] = malloc((size_t)nt * KVD * 2);
        v[l] = malloc((size_t)nt * KVD * 2);
        if (!k[l] || !v[l]) {
            fputs("bench_kvblob: out of memory\n", stderr);
            return 2;
        }
    }
    make_kv(k, v, nt);
    double raw = (double)nt * NL * 2 * KVD * 2;
    double load[3] = {0, 0, 0};
    if (getloadavg(load, 3) < 0)
        load[0] = -1;
    printf("kvblob bench: %u tokens x %d layers x %d kv_dim, raw f16 KV %.1f MB, %ld cores, load %.2f, "
           "%d threads for wall figures\n", nt, NL, KVD, raw / 1e6, cores, load[0], threads);
    printf("chunk digest (32 KiB SHA-256 leaves) on: %s\n", kvc_leaf_digest_engine());
    kvc_key *key = kvc_key_generate();
    int32_t *tok = malloc(sizeof(int32_t) * nt);
    for (uint32_t i = 0; i < nt; i++)
        tok[i] = (int32_t)(i % 151000);
    kvb_manifest m;
    memset(&m, 0, sizeof m);
    m.model_arch = "qwen3";
    m.n_layer = NL;
    m.n_embd = 1024;
    m.n_head = 16;
    m.n_head_kv = NKV;
    m.head_dim = HD;
    m.rope_type = KVB_ROPE_NEOX;
    m.rope_n_rot = HD;
    m.rope_freq_base = 1000000.0;
    m.rope_freq_scale = 1.0;
    m.pos0 = 1;
    m.n_tokens = nt;
    m.chunk_tokens = chunk;
    m.created = 1700000000;
    const uint16_t *kp[NL], *vp[NL];
    for (int l = 0; l < NL; l++) {
        kp[l] = k[l];
        vp[l] = v[l];
    }
    int rc = 0;
    for (int c = 0; c < KVB_CODEC_COUNT; c++) {
        if (only >= 0 && c != only)
            continue;
        m.codec = (kvb_codec)c;
        uint8_t *blob = NULL, *blob_n = NULL;
        size_t len = 0, len_n = 0;
        char err[256];
        kvb_write_opts wo = {level, 1, NULL};
        double c0 = bench_cpu_s();
        kvb_status st = kvb_write(&m, tok, kp, vp, &wo, key, NULL, &blob, &len, err, sizeof err);
        double enc1 = bench_cpu_s() - c0;
        wo.n_threads = threads;
        double w0 = base_now_s();
        if (!st)
            st = kvb_write(&m, tok, kp, vp, &wo, key, NULL, &blob_n, &len_n, err, sizeof err);
        double encn = base_now_s() - w0;
        if (st) {
            fprintf(stderr, "bench_kvblob: %s: %s\n", kvb_codec_name(m.codec), err);
            free(blob);
            rc = 1;
            continue;
        }
        if (len != len_n || memcmp(blob, blob_n, len) != 0) {
            fprintf(stderr, "bench_kvblob: %s: %d threads wrote other bytes than 1 thread\n",
                    kvb_codec_name(m.codec), threads);
            rc = 1;
        }
        free(blob_n);
        double d1c = 1e9, dnw = 1e9, h1c = 1e9;
        for (int rep = 0; rep < 3; rep++) { /* best of 3: the first run also faults pages in */
            double c1, c2_unused, ch, w = read_once(blob, len, key, 1, 0, &c1);
            double wn = read_once(blob, len, key, threads, 0, &c2_unused);
            double wh = read_once(blob, len, key, 1, 1, &ch);
            if (w < 0 || wn < 0 || wh < 0) {
                rc = 1;
                break;
            }
            d1c = c1 < d1c ? c1 : d1c;
            dnw = wn < dnw ? wn : dnw;
            h1c = ch < h1c ? ch : h1c;
        }
        printf("%-9s ratio %6.4fx (%10zu B) | encode %5.2f GB/s/core, %5.2f GB/s wall | verify+decode %5.2f "
               "GB/s/core, %5.2f GB/s wall | verify only %5.2f GB/s/core\n",
               kvb_codec_name(m.codec), raw / (double)len, len, raw / enc1 / 1e9, raw / encn / 1e9, raw / d1c / 1e9,
               raw / dnw / 1e9, raw / h1c / 1e9);
        fflush(stdout);
        free(blob);
    }
    kvc_key_free(key);
    free(tok);
    for (int l = 0; l < NL; l++) {
        free(k[l]);
        free(v[l]);
    }
    return rc;
}
