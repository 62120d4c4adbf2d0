/* llama_bench.c: llama.cpp's own throughput on one GGUF, through its C API (the prebuilt
 * libllama from node-llama-cpp's @node-llama-cpp/linux-x64 package), measured the way
 * bench/bench_engine.c measures our engine, so that the two print comparable lines:
 * prefill tokens/s at 512 and 2048 tokens (one llama_decode of the whole prompt, logits of the
 * last position only), decode tokens/s at 2048 context (one token per llama_decode), plus the
 * time to save and restore a 2048-token sequence state (llama_state_seq_get_data/set_data).
 * Median of --runs runs; a fresh context per run; F16 K/V cache; n_ubatch 512; flash attention
 * on and/or off (--fa on|off|both). A benchmark helper only: not part of the build or tests.
 *
 * usage: llama_bench LIBDIR MODEL.gguf [--threads N] [--runs N] [--decode N] [--brief 1] [--fa on|off|both]
 * LIBDIR is the folder with libllama*.so / libggml-cpu-*.so; its CPU backends are loaded from there. */
#define _POSIX_C_SOURCE 200809L
#include "llama.h"
#include "../../bench/bench_util.h" /* by path: built outside the Makefile */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void quiet_log(enum ggml_log_level level, const char *text, void *ud)
{
    (void)ud;
    if (level == GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

static void die(const char *msg)
{
    fprintf(stderr, "llama_bench: %s\n", msg);
    exit(2);
}

int main(int argc, char **argv)
{
    const int help = argc == 2 && strcmp(argv[1], "--help") == 0;
    if (argc < 3) {
        fputs("usage: llama_bench LIBDIR MODEL.gguf [--threads N] [--runs N] [--decode N] [--brief 1] [--fa on|off|both]\n",
              help ? stdout : stderr);
        return help ? 0 : 2;
    }
    bench_opts o = {2, 3, 32, 0};
    int fa_on = 1, fa_off = 1;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (bench_take_opt(&o, argv[i], argv[i + 1]))
            continue;
        if (strcmp(argv[i], "--fa") != 0)
            die("unknown option");
        fa_on = strcmp(argv[i + 1], "off") != 0;
        fa_off = strcmp(argv[i + 1], "on") != 0;
    }
    const int threads = o.threads, runs = o.runs, n_dec = o.n_dec;
    if (runs < 1 || runs > 99 || n_dec < 1 || threads < 1)
        die("bad --threads / --runs / --decode");

    llama_log_set(quiet_log, NULL);
    ggml_backend_load_all_from_path(argv[1]);
    llama_backend_init();

    /* The header comes from the package's source bundle; check that the library agrees on the
     * parameter structs' layout by looking at the documented defaults before relying on them. */
    struct llama_context_params cp = llama_context_default_params();
    if (cp.n_batch != 2048 || cp.n_ubatch != 512 || cp.flash_attn_type != LLAMA_FLASH_ATTN_TYPE_AUTO ||
        cp.type_k != GGML_TYPE_F16 || cp.type_v != GGML_TYPE_F16)
        die("llama.h does not match the library (unexpected llama_context_default_params)");

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(argv[2], mp);
    if (!model)
        die("cannot load the model");
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    const int bos = llama_vocab_bos(vocab);

    enum { NMAX = 2048 };
    llama_token *toks = malloc(sizeof(llama_token) * (NMAX + 1));
    uint64_t s = 1; /* the same token stream as bench_engine */
    for (int i = 0; i <= NMAX; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        toks[i] = i == 0 && bos >= 0 ? bos : (llama_token)((s >> 33) % (uint64_t)n_vocab);
    }

    /* which CPU variant ggml picked (libggml-cpu-<variant>.so), from our own mappings */
    char cpu[256] = "?", line[1024];
    FILE *maps = fopen("/proc/self/maps", "r");
    while (maps && fgets(line, sizeof line, maps)) {
        char *p = strstr(line, "libggml-cpu-");
        if (p) {
            snprintf(cpu, sizeof cpu, "%s", p);
            cpu[strcspn(cpu, "\n")] = 0;
            break;
        }
    }
    if (maps)
        fclose(maps);
    char desc[128];
    llama_model_desc(model, desc, sizeof desc);
    printf("model %s: %s, %d layers, n_embd %d, threads %d\n", argv[2], desc, llama_model_n_layer(model),
           llama_model_n_embd(model), threads);
    printf("llama.cpp %s (node-llama-cpp 3.22.1 prebuilt), backend %s; %s\n", llama_version(), cpu,
           llama_print_system_info());

    cp.n_ctx = NMAX + (uint32_t)n_dec + 1;
    cp.n_batch = NMAX;
    cp.n_ubatch = 512;
    cp.n_seq_max = 1;
    cp.n_threads = cp.n_threads_batch = threads;
    cp.type_k = cp.type_v = GGML_TYPE_F16;
    cp.no_perf = true;

    for (int fa = 1; fa >= 0; fa--) {
        if ((fa && !fa_on) || (!fa && !fa_off))
            continue;
        cp.flash_attn_type = fa ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
        printf("-- flash attention %s, K/V cache f16, n_batch %u, n_ubatch %u\n", fa ? "on" : "off", cp.n_batch,
               cp.n_ubatch);
        fflush(stdout);
        const int lens[2] = {512, NMAX};
        double dec[99], sv[99], rs[99];
        size_t state_bytes = 0;
        for (int li = o.brief ? 1 : 0; li < 2; li++) {
            double tps[99];
            for (int r = 0; r < runs; r++) {
                struct llama_context *c = llama_init_from_model(model, cp);
                if (!c)
                    die("cannot create a context");
                double t0 = now_s();
                if (llama_decode(c, llama_batch_get_one(toks, lens[li])) != 0)
                    die("prefill failed");
                llama_synchronize(c);
                if (!llama_get_logits_ith(c, -1))
                    die("no logits after prefill");
                tps[r] = lens[li] / (now_s() - t0);
                if (lens[li] == NMAX) {
                    /* save: size the state, allocate, copy it out; restore: into a cleared memory */
                    double t1 = now_s();
                    size_t n = llama_state_seq_get_size(c, 0);
                    unsigned char *buf = malloc(n);
                    if (!buf || llama_state_seq_get_data(c, buf, n, 0) != n)
                        die("llama_state_seq_get_data failed");
                    sv[r] = now_s() - t1;
                    state_bytes = n;
                    llama_memory_clear(llama_get_memory(c), true);
                    t1 = now_s();
                    if (llama_state_seq_set_data(c, buf, n, 0) != n)
                        die("llama_state_seq_set_data failed");
                    rs[r] = now_s() - t1;
                    free(buf);
                    if (llama_memory_seq_pos_max(llama_get_memory(c), 0) != NMAX - 1)
                        die("restored state has the wrong length");
                    /* decode continues on the restored state */
                    llama_token t = toks[NMAX];
                    t1 = now_s();
                    for (int i = 0; i < n_dec; i++) {
                        if (llama_decode(c, llama_batch_get_one(&t, 1)) != 0)
                            die("decode failed");
                        llama_synchronize(c);
                        if (!llama_get_logits_ith(c, -1))
                            die("no logits after decode");
                        t = (t * 7 + 3) % n_vocab;
                    }
                    dec[r] = n_dec / (now_s() - t1);
                }
                llama_free(c);
            }
            printf("prefill %d tokens: %.2f tok/s (median of %d)\n", lens[li], bench_median(tps, runs), runs);
            fflush(stdout);
        }
        printf("decode at %d context: %.2f tok/s (median of %d, %d tokens each)\n", NMAX, bench_median(dec, runs), runs,
               n_dec);
        printf("save %d-token state: %.3f s (median of %d, %zu bytes)\n", NMAX, bench_median(sv, runs), runs,
               state_bytes);
        printf("restore %d-token state: %.3f s (median of %d)\n", NMAX, bench_median(rs, runs), runs);
        fflush(stdout);
    }
    bench_print_peak_rss();
    free(toks);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
