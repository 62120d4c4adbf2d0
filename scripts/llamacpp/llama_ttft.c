/* llama_ttft.c (make bench, section llamastate; a benchmark, not a test): the time to first token
 * a llama.cpp user sees for one document, two ways, in the prebuilt libllama: restoring a
 * sequence-state file (the one `kvfetch export --llama-state` wrote) and then decoding the
 * prompt, against llama.cpp's own full prefill of the same tokens plus the prompt. Both run in
 * the same context (created once, outside the timings; its memory cleared between runs).
 *
 * usage: llama_ttft LIBDIR MODEL.gguf STATE PROMPT_IDS [--fa on|off] [--threads N] [--runs N]
 * Prints, as medians over the runs:
 *   restore N-token state: X s
 *   prompt after restore: X s
 *   ttft with the state: X s
 *   full prefill N+P tokens: X s
 * and exits 1 on any failure. */
#define _POSIX_C_SOURCE 200809L
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAXT = 16384, MAXRUNS = 15 };

static void quiet(enum ggml_log_level level, const char *text, void *user)
{
    (void)level, (void)text, (void)user;
}

static int die(const char *what)
{
    fprintf(stderr, "llama_ttft: %s\n", what);
    return 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Decodes toks[0..n) from position pos0 in batches of at most nb, logits for the last token only. */
static int decode_all(struct llama_context *c, const llama_token *toks, int n, int pos0, int nb)
{
    struct llama_batch b = llama_batch_init(nb, 0, 1);
    int rc = 0;
    for (int i = 0; i < n && !rc; i += nb) {
        int k = n - i < nb ? n - i : nb;
        b.n_tokens = k;
        for (int j = 0; j < k; j++) {
            b.token[j] = toks[i + j];
            b.pos[j] = pos0 + i + j;
            b.n_seq_id[j] = 1;
            b.seq_id[j][0] = 0;
            b.logits[j] = i + j == n - 1;
        }
        rc = llama_decode(c, b) != 0;
    }
    llama_batch_free(b);
    return rc;
}

static int parse_ids(const char *s, llama_token *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s)
            return -1;
        out[n++] = (llama_token)v;
        s = *end == ',' ? end + 1 : end;
    }
    return *s ? -1 : n;
}

int main(int argc, char **argv)
{
    if (argc < 5)
        return die("usage: llama_ttft LIBDIR MODEL STATE PROMPT_IDS [--fa on|off] [--threads N] [--runs N]");
    int fa = 1, threads = 2, runs = 3;
    for (int i = 5; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--fa"))
            fa = strcmp(argv[i + 1], "off") != 0;
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--runs"))
            runs = atoi(argv[i + 1]);
        else
            return die("unknown option");
    }
    if (runs < 1 || runs > MAXRUNS || threads < 1)
        return die("--runs 1..15, --threads >= 1");
    llama_log_set(quiet, NULL);
    ggml_backend_load_all_from_path(argv[1]);
    struct llama_model *m = llama_model_load_from_file(argv[2], llama_model_default_params());
    if (!m)
        return die("llama.cpp cannot load the model");
    static llama_token seq[MAXT];
    int np = parse_ids(argv[4], seq, MAXT);
    if (np <= 0)
        return die("bad PROMPT_IDS");
    llama_token prompt[64];
    if (np > 64)
        return die("prompt longer than 64 tokens");
    memcpy(prompt, seq, (size_t)np * sizeof *prompt);

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = MAXT;
    cp.n_batch = cp.n_ubatch = 512;
    cp.n_seq_max = 1;
    cp.n_threads = cp.n_threads_batch = threads;
    cp.type_k = cp.type_v = GGML_TYPE_F16;
    cp.flash_attn_type = fa ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    struct llama_context *c = llama_init_from_model(m, cp);
    if (!c)
        return die("cannot create a context");
    llama_memory_t mem = llama_get_memory(c);

    double rs[MAXRUNS], pr[MAXRUNS], tt[MAXRUNS], fu[MAXRUNS];
    size_t nt = 0;
    for (int r = 0; r < runs; r++) {
        llama_memory_clear(mem, true);
        double t0 = now_s();
        if (llama_state_seq_load_file(c, argv[3], 0, seq, MAXT - 64, &nt) == 0 || nt == 0)
            return die("llama_state_seq_load_file failed");
        double t1 = now_s();
        if (decode_all(c, prompt, np, (int)nt, 512))
            return die("decoding the prompt after the restore failed");
        (void)llama_get_logits_ith(c, -1);
        double t2 = now_s();
        rs[r] = t1 - t0;
        pr[r] = t2 - t1;
        tt[r] = t2 - t0;
    }
    /* the same tokens and prompt, prefilled by llama.cpp itself */
    memcpy(seq + nt, prompt, (size_t)np * sizeof *prompt);
    for (int r = 0; r < runs; r++) {
        llama_memory_clear(mem, true);
        double t0 = now_s();
        if (decode_all(c, seq, (int)nt + np, 0, 512))
            return die("full prefill failed");
        (void)llama_get_logits_ith(c, -1);
        fu[r] = now_s() - t0;
    }
    printf("restore %zu-token state: %.4f s\n", nt, median(rs, runs));
    printf("prompt after restore: %.4f s\n", median(pr, runs));
    printf("ttft with the state: %.4f s\n", median(tt, runs));
    printf("full prefill %zu+%d tokens: %.4f s\n", nt, np, median(fu, runs));
    llama_free(c);
    llama_model_free(m);
    return 0;
}
