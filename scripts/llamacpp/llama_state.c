/* llama_state.c: restores a sequence-state file into the prebuilt libllama and checks what it
 * computes from there, for the interop test (tests/cli/llamacpp_state.sh): `kvfetch export`
 * writes the file, llama.cpp loads it with llama_state_seq_load_file, decodes the prompt, and
 * its logits must match llama.cpp's own full prefill of [file tokens, prompt] (and optionally
 * our loaded path's logits), greedy tokens included up to the first near-tie.
 *
 * usage: llama_state LIBDIR MODEL.gguf STATE PROMPT_IDS --fa on|off --tol T [--greedy N]
 *                    [--ours OURS.f32] [--reference OWN_STATE] [--resave OUT] [--save-after-prefill OUT]
 *   --tol T      largest |restored - full| allowed over the prompt's last logits; greedy
 *                steps whose top-2 margin is under 2T may differ (and end the comparison)
 *   --ours F     compare the restored logits with ours (n_vocab f32) within T instead (the
 *                reference difference is still printed)
 *   --resave OUT right after restoring, save the sequence again with llama_state_seq_save_file:
 *                the same bytes back mean llama.cpp read every cell, position and value as meant
 *   --reference S  compare with llama.cpp restoring its own state S of the same tokens instead of
 *                its full prefill
 *   --save-after-prefill OUT  instead of all that: prefill [file tokens] in a fresh context
 *                and save it with llama_state_seq_save_file (llama.cpp's own state of the same
 *                tokens, for `kvpubd publish --from-llama-state`); prints the greedy tokens
 * Prints one line per check; exit 2 when a check fails, 1 on any other failure. */
#define _POSIX_C_SOURCE 200809L
#include "llama.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAXT = 8192 };

static void quiet(enum ggml_log_level level, const char *text, void *user)
{
    (void)level, (void)user;
    if (getenv("LLAMA_STATE_VERBOSE"))
        fputs(text, stderr);
}

static int die(const char *what)
{
    fprintf(stderr, "llama_state: %s\n", what);
    return 1;
}

static struct llama_context *new_ctx(struct llama_model *m, int fa)
{
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = cp.n_batch = cp.n_ubatch = 1024;
    cp.n_seq_max = 1;
    cp.n_threads = cp.n_threads_batch = 2;
    cp.type_k = cp.type_v = GGML_TYPE_F16;
    cp.flash_attn_type = fa ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.no_perf = true;
    return llama_init_from_model(m, cp);
}

static int argmax(const float *x, int n, float *margin)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    float second = -INFINITY;
    for (int i = 0; i < n; i++)
        if (i != b && x[i] > second)
            second = x[i];
    *margin = x[b] - second;
    return b;
}

/* Greedy continuation: n tokens from logits lg (copied), each decoded; margins recorded. */
static void greedy(struct llama_context *c, const float *lg, int nv, int n, int *out, float *margin)
{
    float *cur = malloc((size_t)nv * sizeof *cur);
    memcpy(cur, lg, (size_t)nv * sizeof *cur);
    for (int i = 0; i < n; i++) {
        out[i] = argmax(cur, nv, &margin[i]);
        llama_token t = out[i];
        if (llama_decode(c, llama_batch_get_one(&t, 1)) != 0)
            break;
        memcpy(cur, llama_get_logits_ith(c, -1), (size_t)nv * sizeof *cur);
    }
    free(cur);
}

static int parse_ids(char *s, llama_token *ids, int cap)
{
    int n = 0;
    while (*s && n < cap) {
        ids[n++] = (llama_token)strtol(s, &s, 10);
        if (*s == ',')
            s++;
    }
    return n;
}

int main(int argc, char **argv)
{
    if (argc < 5)
        return die("usage: llama_state LIBDIR MODEL.gguf STATE PROMPT_IDS --fa on|off --tol T [--greedy N] "
                   "[--ours F] [--save-after-prefill OUT]");
    int fa = 1, n_greedy = 0;
    double tol = 0;
    const char *ours = NULL, *save = NULL, *ref = NULL, *resave = NULL;
    for (int i = 5; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--fa"))
            fa = strcmp(argv[i + 1], "off") != 0;
        else if (!strcmp(argv[i], "--tol"))
            tol = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--greedy"))
            n_greedy = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--ours"))
            ours = argv[i + 1];
        else if (!strcmp(argv[i], "--save-after-prefill"))
            save = argv[i + 1];
        else if (!strcmp(argv[i], "--reference"))
            ref = argv[i + 1];
        else if (!strcmp(argv[i], "--resave"))
            resave = argv[i + 1];
        else
            return die("unknown option");
    }
    llama_log_set(quiet, NULL);
    ggml_backend_load_all_from_path(argv[1]);
    struct llama_model *m = llama_model_load_from_file(argv[2], llama_model_default_params());
    if (!m)
        return die("llama.cpp cannot load the model");
    const int nv = llama_vocab_n_tokens(llama_model_get_vocab(m));
    static llama_token toks[MAXT], prompt[MAXT];
    int np = parse_ids(argv[4], prompt, MAXT);

    if (save) { /* llama.cpp's own state of the token ids in STATE's place: here a list of ids */
        int nt = parse_ids(argv[3], toks, MAXT);
        struct llama_context *c = new_ctx(m, fa);
        if (!c || llama_decode(c, llama_batch_get_one(toks, nt)) != 0)
            return die("prefill failed");
        float *lg = malloc((size_t)nv * sizeof *lg);
        memcpy(lg, llama_get_logits_ith(c, -1), (size_t)nv * sizeof *lg);
        if (llama_state_seq_save_file(c, save, 0, toks, (size_t)nt) == 0)
            return die("llama_state_seq_save_file failed");
        /* what llama.cpp continues with after [tokens, prompt] */
        if (np && llama_decode(c, llama_batch_get_one(prompt, np)) == 0)
            memcpy(lg, llama_get_logits_ith(c, -1), (size_t)nv * sizeof *lg);
        int g[64];
        float mg[64];
        int ng = n_greedy < 64 ? n_greedy : 64;
        greedy(c, lg, nv, ng, g, mg);
        for (int i = 0; i < ng; i++)
            printf(i ? " %d" : "%d", g[i]);
        printf("\n");
        return 0;
    }

    /* restored: load the file, then the prompt */
    struct llama_context *a = new_ctx(m, fa);
    size_t nt = 0;
    if (!a || llama_state_seq_load_file(a, argv[3], 0, toks, MAXT, &nt) == 0)
        return die("llama_state_seq_load_file refused the file");
    if (resave && llama_state_seq_save_file(a, resave, 0, toks, nt) == 0)
        return die("llama_state_seq_save_file failed");
    if (llama_decode(a, llama_batch_get_one(prompt, np)) != 0)
        return die("decode of the prompt after the restored state failed");
    float *la = malloc((size_t)nv * sizeof *la), *lb = malloc((size_t)nv * sizeof *lb);
    memcpy(la, llama_get_logits_ith(a, -1), (size_t)nv * sizeof *la);

    /* the reference: llama.cpp's own prefill of the same tokens, or (--reference) its own
     * saved state of them restored the same way, which isolates the KV from batch-shape effects
     * (with flash attention the same tokens give other logits in one batch or two) */
    struct llama_context *b = new_ctx(m, fa);
    static llama_token all[2 * MAXT];
    size_t nr = 0;
    if (ref) {
        if (!b || llama_state_seq_load_file(b, ref, 0, all, MAXT, &nr) == 0 || nr != nt ||
            memcmp(all, toks, nt * sizeof *toks) != 0)
            return die("the reference state does not hold the same tokens");
        if (llama_decode(b, llama_batch_get_one(prompt, np)) != 0)
            return die("decode after the reference state failed");
    } else {
        memcpy(all, toks, nt * sizeof *toks);
        memcpy(all + nt, prompt, (size_t)np * sizeof *prompt);
        if (!b || llama_decode(b, llama_batch_get_one(all, (int32_t)nt + np)) != 0)
            return die("full prefill failed");
    }
    memcpy(lb, llama_get_logits_ith(b, -1), (size_t)nv * sizeof *lb);

    int rc = 0;
    double worst = 0;
    for (int i = 0; i < nv; i++)
        worst = fmax(worst, fabs((double)la[i] - lb[i]));
    printf("restored %zu tokens + %d prompt: max |restored - llama.cpp %s| = %.3g (tolerance %.3g)\n", nt, np,
           ref ? "restoring its own state" : "full prefill", worst, tol);
    if (!(worst <= tol) && !ours) /* with --ours, the check is against ours (after a prefix the
                                     * re-rotated document is not a full prefill's) */
        rc = 2;
    if (ours) {
        float *lo = malloc((size_t)nv * sizeof *lo);
        FILE *f = fopen(ours, "rb");
        if (!f || fread(lo, sizeof *lo, (size_t)nv, f) != (size_t)nv)
            return die("cannot read our logits");
        fclose(f);
        double w2 = 0;
        for (int i = 0; i < nv; i++)
            w2 = fmax(w2, fabs((double)la[i] - lo[i]));
        printf("max |restored in llama.cpp - our loaded path| = %.3g (tolerance %.3g)\n", w2, tol);
        if (!(w2 <= tol))
            rc = 2;
        free(lo);
    }
    if (n_greedy > 0) {
        int ga[64], gb[64];
        float ma[64], mb[64];
        int ng = n_greedy < 64 ? n_greedy : 64;
        greedy(a, la, nv, ng, ga, ma);
        greedy(b, lb, nv, ng, gb, mb);
        int same = 0;
        while (same < ng && ga[same] == gb[same])
            same++;
        int tie = same < ng && (ma[same] < 2 * tol || mb[same] < 2 * tol);
        printf("greedy: %d of %d tokens the same%s\n", same, ng,
               same == ng ? "" : tie ? " (then a near-tie: margin under twice the tolerance)" : " (then they differ)");
        if (same < ng && !tie)
            rc = 2;
    }
    free(la);
    free(lb);
    llama_free(a);
    llama_free(b);
    llama_model_free(m);
    return rc;
}
