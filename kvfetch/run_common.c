/* run_common.c: what `kvfetch run` and `kvfetch compare` share: their options, fetching the
 * blobs, loading the model, the loaded path up to the first token (kvp_path_run) and the
 * per-blob and timing report. */
#include "kvfetch/run_common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/fetch.h"
#include "kvfetch/kvfetch.h"

static int parse_args(int argc, char **argv, kvfetch_run_args *a, const char *prog, const char *usage,
                      kvfetch_cmd cmd)
{
    const int exporting = cmd == KVFETCH_CMD_EXPORT;
    const char *follow = NULL;
    enum { O_MODEL = KVF_OPT_SHARED_END + 1, O_BLOB, O_PREFIX, O_PROMPT, O_TEMP, O_SEED, O_TOPK,
           O_TOPP, O_THREADS, O_JSON, O_CHAT, O_SYSTEM, O_SPECIAL, O_NO_SPECIAL, O_LLAMA_STATE, O_V_TRANS,
           O_LOGITS, O_SERVER, O_RECOMPUTE, O_RECOMPUTE_METHOD, O_FOLLOW, O_NO_REROTATE, O_DROP_PREFIX,
           O_NO_DECODED_COPY };
    static const struct option longopts[] = {
        KVF_SHARED_LONGOPTS,
        {"model", required_argument, NULL, O_MODEL},
        {"blob", required_argument, NULL, O_BLOB},
        {"prefix", required_argument, NULL, O_PREFIX},
        {"prompt", required_argument, NULL, O_PROMPT},
        {"temp", required_argument, NULL, O_TEMP},
        {"seed", required_argument, NULL, O_SEED},
        {"top-k", required_argument, NULL, O_TOPK},
        {"top-p", required_argument, NULL, O_TOPP},
        {"threads", required_argument, NULL, O_THREADS},
        {"json", no_argument, NULL, O_JSON},
        {"chat", no_argument, NULL, O_CHAT},
        {"system", required_argument, NULL, O_SYSTEM},
        {"special", no_argument, NULL, O_SPECIAL},
        {"no-special", no_argument, NULL, O_NO_SPECIAL},
        {"llama-state", required_argument, NULL, O_LLAMA_STATE},
        {"v-trans", no_argument, NULL, O_V_TRANS},
        {"logits", required_argument, NULL, O_LOGITS},
        {"server", required_argument, NULL, O_SERVER},
        {"recompute", required_argument, NULL, O_RECOMPUTE},
        {"recompute-method", required_argument, NULL, O_RECOMPUTE_METHOD},
        {"follow", required_argument, NULL, O_FOLLOW},
        {"no-rerotate", no_argument, NULL, O_NO_REROTATE},
        {"drop-prefix", no_argument, NULL, O_DROP_PREFIX},
        {"no-decoded-copy", no_argument, NULL, O_NO_DECODED_COPY},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof *a);
    a->prefix = "";
    a->special = 1;
    a->n_gen = 64;
    a->top_p = 1.0f;
    a->seed = 1;
    int c, gen_opt = 0; /* a generation option was given (export generates nothing) */
    base_opts op = {.prog = prog, .usage = usage, .shortopts = "n:h", .longopts = longopts,
                    .more = kvf_common_hook, .more_ctx = &a->co};
    while ((c = base_opts_next(&op, argc, argv)) > 0) {
        char *end = NULL;
        errno = 0;
        gen_opt |= c == 'n' || c == O_TEMP || c == O_TOPP || c == O_TOPK || c == O_SEED || c == O_LOGITS;
        switch (c) {
        case O_MODEL: a->model = optarg; break;
        case O_BLOB:
            if (a->n_blobs == KVFETCH_MAX_BLOBS) {
                fprintf(stderr, "%s: at most %d --blob\n", prog, KVFETCH_MAX_BLOBS);
                return 2;
            }
            a->blobs[a->n_blobs++] = optarg;
            break;
        case O_PREFIX: a->prefix = optarg; break;
        case O_PROMPT: a->prompt = optarg; break;
        case O_JSON: a->json = 1; break;
        case O_CHAT: a->chat = 1; break;
        case O_SYSTEM: a->system = optarg; break;
        case O_SPECIAL: a->special = 1; break;
        case O_NO_SPECIAL: a->special = 0; break;
        case O_LLAMA_STATE: a->llama_state = optarg; break;
        case O_V_TRANS: a->v_trans = 1; break;
        case O_LOGITS: a->logits_out = optarg; break;
        case O_SERVER: a->server = optarg; break;
        case O_NO_REROTATE: a->no_rerotate = 1; break;
        case O_DROP_PREFIX: a->drop_prefix = 1; break;
        case O_NO_DECODED_COPY: a->no_decoded_copy = 1; break;
        case O_RECOMPUTE:
            a->recompute = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(a->recompute >= 0 && a->recompute <= 1)) {
                fprintf(stderr, "%s: --recompute '%s' is not a fraction in 0..1\n", prog, optarg);
                return 2;
            }
            break;
        case O_RECOMPUTE_METHOD:
            if (strcmp(optarg, "head") == 0) {
                a->method = KVP_RECOMPUTE_HEAD;
            } else if (strcmp(optarg, "blend") == 0) {
                a->method = KVP_RECOMPUTE_BLEND;
            } else {
                fprintf(stderr, "%s: --recompute-method '%s' is not head or blend\n", prog, optarg);
                return 2;
            }
            break;
        case O_FOLLOW:
            if (strcmp(optarg, "full") != 0 && strcmp(optarg, "loaded") != 0) {
                fprintf(stderr, "%s: --follow '%s' is not full or loaded\n", prog, optarg);
                return 2;
            }
            a->follow_full = strcmp(optarg, "full") == 0;
            follow = optarg;
            break;
        case 'n': {
            long v;
            if (kvf_parse_long(optarg, 1, KVFETCH_MAX_GEN, &v) != 0) {
                fprintf(stderr, "%s: -n '%s' is not a count in 1..%d\n", prog, optarg, KVFETCH_MAX_GEN);
                return 2;
            }
            a->n_gen = (int)v;
            break;
        }
        case O_THREADS:
        case O_TOPK: {
            long v;
            if (kvf_parse_long(optarg, 0, 1024, &v) != 0) {
                fprintf(stderr, "%s: '%s' is not a number in 0..1024\n", prog, optarg);
                return 2;
            }
            if (c == O_THREADS)
                a->threads = (int)v;
            else
                a->top_k = (int)v;
            break;
        }
        case O_TEMP:
        case O_TOPP: {
            float v = strtof(optarg, &end);
            if (errno || *end || end == optarg || !(v >= 0) || v > 100) {
                fprintf(stderr, "%s: '%s' is not a number in 0..100\n", prog, optarg);
                return 2;
            }
            if (c == O_TEMP)
                a->temp = v;
            else
                a->top_p = v;
            break;
        }
        case O_SEED: {
            uint64_t v;
            if (base_parse_u64(optarg, &v) != 0) { /* digits only: strtoull would wrap -1 */
                fprintf(stderr, "%s: --seed '%s' is not a number\n", prog, optarg);
                return 2;
            }
            a->seed = v;
            break;
        }
        }
    }
    if (c < 0)
        return op.rc ? op.rc : -1;
    if (base_opts_no_operands(&op, argc, argv, 0))
        return 2;
    if (exporting != !!a->llama_state || (a->v_trans && !exporting)) {
        fprintf(stderr, exporting ? "%s: --llama-state OUT is required (try --help)\n"
                                  : "%s: --llama-state and --v-trans belong to kvfetch export\n", prog);
        return 2;
    }
    if (follow && cmd != KVFETCH_CMD_COMPARE) {
        fprintf(stderr, "%s: --follow belongs to kvfetch compare (there is one path here)\n", prog);
        return 2;
    }
    if (exporting && a->prompt) {
        fprintf(stderr, "%s: the state ends with the documents: no --prompt (the llama.cpp user prompts)\n", prog);
        return 2;
    }
    if (exporting && gen_opt) {
        fprintf(stderr, "%s: -n, --temp, --top-k, --top-p, --seed and --logits are for run and compare: export "
                        "generates nothing\n", prog);
        return 2;
    }
    if (exporting)
        a->n_gen = 0; /* the context holds the documents, not room for a generation */
    if (!a->model || !a->n_blobs || (!exporting && (!a->prompt || !*a->prompt))) {
        fprintf(stderr, "%s: --model, --blob and a non-empty --prompt are required (try --help)\n", prog);
        return 2;
    }
    if (a->chat && *a->prefix) {
        fprintf(stderr, "%s: --chat builds the text before the documents itself: give --system, not --prefix\n",
                prog);
        return 2;
    }
    if (a->system && !a->chat) {
        fprintf(stderr, "%s: --system needs --chat (without it, put the text in --prefix)\n", prog);
        return 2;
    }
    return 0;
}

void kvfetch_session_free(kvfetch_session *s)
{
    if (!s)
        return;
    for (int i = 0; i < KVFETCH_MAX_BLOBS; i++) {
        free(s->doc_tokens[i]);
        if (s->spool_fd[i] >= 0)
            close(s->spool_fd[i]);
    }
    free(s->chat_before);
    free(s->chat_after);
    free(s->prefix_ids);
    free(s->prompt_ids);
    free(s->logits);
    eng_ctx_free(s->ctx);
    eng_ctx_free(s->ctx_full);
    eng_model_free(s->model);
    kvf_common_close(&s->a.co);
    free(s);
}

/* A --blob that is no regular file (a pipe, `<(...)`) is read twice, its header to size the
 * context and then whole by the loader, so it is first copied into an unnamed temporary file
 * (in $TMPDIR, else /tmp), which paths[i] then names through /proc/self/fd. */
static int spool(kvfetch_session *s, int i, const char *b)
{
    const char *dir = getenv("TMPDIR");
    int in = open(b, O_RDONLY | O_CLOEXEC), out = base_tmpfd(dir && *dir ? dir : "/tmp");
    const int ok = in >= 0 && out >= 0 && base_copy_fd(in, out) == 0;
    const int e = errno;
    if (in >= 0)
        close(in);
    if (!ok) {
        fprintf(stderr, "%s: cannot copy blob %s to a temporary file: %s\n", s->prog, b, strerror(e));
        if (out >= 0)
            close(out);
        return 2;
    }
    s->spool_fd[i] = out;
    snprintf(s->paths[i], PATH_MAX, "/proc/self/fd/%d", out);
    return 0;
}

/* Resolves every --blob to a local file: URLs through kvf_get (and the cache). */
static int resolve_blobs(kvfetch_session *s)
{
    double t = base_now_s();
    for (int i = 0; i < s->a.n_blobs; i++) {
        const char *b = s->a.blobs[i];
        uint8_t id[32];
        int is_id = !kvf_is_url(b) && access(b, F_OK) != 0 && strlen(b) == 64 && kvc_unhex(b, id, 32) == KVC_OK;
        if (is_id && !s->a.server && !s->a.co.mirrors.n) { /* a blob id: the local cache, or --server */
            if (!kvf_cache_lookup(s->a.co.cache, id, s->paths[i], PATH_MAX)) {
                fprintf(stderr, "%s: blob %s is not in the local cache (%s); give --server URL to fetch it\n",
                        s->prog, b, kvf_cache_dir(s->a.co.cache));
                return 2;
            }
            s->path_of[i] = s->paths[i];
            continue;
        }
        if (!kvf_is_url(b) && !is_id) {
            struct stat sb;
            if (access(b, R_OK) != 0 || stat(b, &sb) != 0) {
                fprintf(stderr, "%s: cannot read blob %s: %s\n", s->prog, b, strerror(errno));
                return 2;
            }
            if (!S_ISREG(sb.st_mode)) {
                int rc = spool(s, i, b);
                if (rc)
                    return rc;
            } else {
                snprintf(s->paths[i], PATH_MAX, "%s", b);
            }
            s->path_of[i] = s->paths[i];
            continue;
        }
        kvf_get_opts go = {0};
        go.url = is_id ? NULL : b;
        go.server = is_id ? s->a.server : NULL;
        go.blob_id = is_id ? b : NULL;
        go.trust = s->a.co.trust;
        go.now = s->a.co.now;
        go.trust_cached = 1; /* the loader verifies everything while it loads */
        go.no_decoded_copy = s->a.no_decoded_copy;
        go.http = s->a.co.http;
        kvf_common_mirrors(&s->a.co, &go);
        uint8_t uid[32];
        if (!is_id && !kvf_url_blob_id(b, uid))
            go.mirrors = NULL; /* a URL that does not name its blob: only it can serve it */
        kvf_get_result res;
        kvf_status st = kvf_get(s->a.co.cache, &go, &res, s->err, sizeof s->err);
        kvf_report_sources(&res, s->prog);
        if (st != KVF_OK) {
            if (st == KVF_ERR_VERIFY)
                fprintf(stderr, "%s: %s: verification failed (%s): %s\n", s->prog, b, kvb_status_str(res.vst), s->err);
            else
                fprintf(stderr, "%s: %s: %s\n", s->prog, b, s->err);
            kvf_get_result_clear(&res);
            return kvf_exit_code(st, res.vst);
        }
        s->fetched_from_cache += res.from_cache;
        if (res.stale)
            fprintf(stderr, "%s: warning: could not ask whether %s changed (%s); using the copy it "
                            "served last, verified\n", s->prog, b, res.stale_why);
        snprintf(s->paths[i], PATH_MAX, "%s", res.path);
        s->path_of[i] = s->paths[i];
        kvf_get_result_clear(&res);
    }
    s->fetch_s = base_now_s() - t;
    return 0;
}

/* how: the weights' default hold (eng_model_load_held) */
static int load_model(kvfetch_session *s, const char *how)
{
    double t = base_now_s();
    eng_status es = eng_model_load_held(s->a.model, how, &s->model, s->err, sizeof s->err);
    if (es != ENG_OK) {
        fprintf(stderr, "%s: %s: %s\n", s->prog, s->a.model, s->err);
        return 2;
    }
    char fp_dir[PATH_MAX];
    eng_model_set_fingerprint_cache(s->model, base_cache_dir(NULL, fp_dir, sizeof fp_dir));
    s->info = eng_model_info(s->model);
    s->model_s = base_now_s() - t;
    t = base_now_s();
    if (kvp_identity_from_model(s->model, &s->id, s->err, sizeof s->err) != KVP_OK) {
        fprintf(stderr, "%s: fingerprinting %s: %s\n", s->prog, s->a.model, s->err);
        return 2;
    }
    s->fp_s = base_now_s() - t;
    s->path.bos = s->info->add_bos && s->info->bos_id >= 0 ? s->info->bos_id : -1;
    const char *prefix = s->a.prefix, *prompt = s->a.prompt;
    if (s->a.chat) {
        kvp_chat_format f;
        if (kvp_chat_pick(eng_model_chat_template(s->model), &f, s->err, sizeof s->err) != KVP_OK) {
            fprintf(stderr, "%s: --chat: %s\n", s->prog, s->err);
            return 2;
        }
        if (kvp_chat_wrap(f, s->a.system, s->a.prompt ? s->a.prompt : "", &s->chat_before, &s->chat_after) !=
            KVP_OK) {
            fprintf(stderr, "%s: out of memory\n", s->prog);
            return 2;
        }
        prefix = s->chat_before;
        prompt = s->a.llama_state ? NULL : s->chat_after; /* export ends with the documents */
    }
    /* prefix and prompt are the caller's own text: special-token strings are honoured unless
     * --no-special says otherwise (--chat's markers always are) */
    int special = s->a.special || s->a.chat;
    if (*prefix && eng_tokenize(s->model, prefix, strlen(prefix), 0, special, &s->prefix_ids, &s->n_prefix) != ENG_OK) {
        fprintf(stderr, "%s: cannot tokenize --prefix\n", s->prog);
        return 2;
    }
    if (!prompt) /* export: the documents end the sequence */
        return 0;
    if (eng_tokenize(s->model, prompt, strlen(prompt), 0, special, &s->prompt_ids, &s->n_prompt) != ENG_OK ||
        s->n_prompt == 0) {
        fprintf(stderr, "%s: cannot tokenize --prompt (or it has no tokens)\n", s->prog);
        return 2;
    }
    return 0;
}

/* A warmed context with room for every token of the sequence plus the generation, sized from
 * the blobs' own headers (unverified sizes only size the context; the content is verified
 * while loading). */
static int make_ctx(kvfetch_session *s, eng_ctx **out)
{
    size_t total = s->n_cells; /* compare's second context: the headers were read already */
    kvb_manifest **ms = NULL;  /* the blobs' manifests, for reserving the loader's buffers */
    int rc = 0;
    if (!total) {
        total = (s->path.bos >= 0) + s->n_prefix + s->n_prompt + (size_t)s->a.n_gen;
        ms = calloc((size_t)s->a.n_blobs + 1, sizeof *ms);
        if (!ms) {
            fprintf(stderr, "%s: out of memory\n", s->prog);
            return 2;
        }
        for (int i = 0; i < s->a.n_blobs; i++) {
            /* in the loader's order: signer, signature, then the manifest (spec/kvblob.md 3) */
            int fd = open(s->paths[i], O_RDONLY | O_CLOEXEC);
            kvb_status ks = fd < 0 ? KVB_ERR_IO
                                   : kvb_peek_fd_trusted(fd, s->a.co.trust, NULL, &ms[i], s->err, sizeof s->err);
            if (fd < 0)
                snprintf(s->err, sizeof s->err, "%s", strerror(errno));
            else
                close(fd);
            if (ks != KVB_OK) {
                rc = kvb_exit_code(ks);
                if (rc == 1) /* as the loader words it */
                    fprintf(stderr, "%s: %s: verification failed (%s): %s\n", s->prog, s->a.blobs[i],
                            kvb_status_str(ks), s->err);
                else
                    fprintf(stderr, "%s: %s: %s\n", s->prog, s->paths[i], s->err);
                goto done;
            }
            total += ms[i]->n_tokens;
        }
        size_t n_ctx = (size_t)eng_model_info(s->model)->n_ctx_train;
        if (total - (size_t)s->a.n_gen > n_ctx) {
            fprintf(stderr, "%s: the sequence is %zu tokens (BOS, prefix, documents, prompt), but the "
                            "model's context is %zu tokens: it would not fit in the runtime that "
                            "made the blob either\n", s->prog, total - (size_t)s->a.n_gen, n_ctx);
            rc = KVF_EXIT_REFUSED;
            goto done;
        }
        if (total > n_ctx) {
            fprintf(stderr, "%s: %zu tokens plus --n-gen %d exceed the model's context of %zu "
                            "tokens: ask for at most %zu\n", s->prog, total - (size_t)s->a.n_gen,
                    s->a.n_gen, n_ctx, n_ctx - (total - (size_t)s->a.n_gen));
            rc = 2;
            goto done;
        }
        s->n_cells = total;
    }
    eng_ctx_params p = {.n_ctx = (int)total, .n_threads = s->a.threads};
    if (eng_ctx_create(s->model, &p, out, s->err, sizeof s->err) != ENG_OK) {
        fprintf(stderr, "%s: context of %zu tokens: %s\n", s->prog, total, s->err);
        rc = 2;
        goto done;
    }
    /* the cost of readying it is reported as warm-up, outside both paths' times; export times
     * nothing against another path, and its own work touches every page the warm-up would */
    if (s->a.llama_state)
        goto done;
    double t = base_now_s();
    int32_t warm_tok = s->path.bos >= 0 ? s->path.bos : s->n_prompt ? s->prompt_ids[0] : 0;
    /* the largest batch of the path it is for: the loaded path's one pass over [BOS, prefix]
     * and the prompt, or (compare's second context) the full prefill of the whole sequence */
    const size_t rows = ms ? (s->path.bos >= 0) + s->n_prefix + s->n_prompt : total;
    kvp_status ws = kvp_ctx_warm_up(*out, s->model, total, warm_tok, rows, s->err, sizeof s->err);
    /* and the loader's buffers, which a long-lived process keeps from one load to the next
     * (kvb_reader_reserve; chunks decode straight into the f16 cache, read from the blob's
     * file by the decode workers); once per process */
    for (int i = 0; ws == KVP_OK && ms && i < s->a.n_blobs; i++)
        kvb_reader_reserve(ms[i], s->a.threads > 0 ? s->a.threads : eng_default_threads(),
                           KVB_RESERVE_IN_PLACE | KVB_RESERVE_FILE);
    s->warm_s += base_now_s() - t;
    if (ws != KVP_OK) {
        fprintf(stderr, "%s: %s\n", s->prog, s->err);
        rc = 2;
    }
done:
    for (int i = 0; ms && i < s->a.n_blobs; i++)
        kvb_manifest_free(ms[i]);
    free(ms);
    return rc;
}

int kvfetch_session_sequence(kvfetch_session *s, int32_t **seq, size_t *n)
{
    if (kvp_path_sequence(&s->path, &s->pr, seq, n) == KVP_OK)
        return 0;
    fprintf(stderr, "%s: out of memory\n", s->prog);
    return 2;
}

int kvfetch_session_ctx(kvfetch_session *s, eng_ctx **out)
{
    return make_ctx(s, out);
}

/* The loaded path up to the first token's logits. */
static int loaded_path(kvfetch_session *s)
{
    int rc = make_ctx(s, &s->ctx);
    if (rc)
        return rc;
    s->logits = malloc((size_t)s->info->n_vocab * sizeof *s->logits);
    if (!s->logits) {
        fprintf(stderr, "%s: out of memory\n", s->prog);
        return 2;
    }
    s->path.prefix = s->prefix_ids;
    s->path.n_prefix = s->n_prefix;
    s->path.blobs = s->path_of;
    s->path.n_blobs = s->a.n_blobs;
    s->path.prompt = s->prompt_ids;
    s->path.n_prompt = s->n_prompt;
    s->pr.ls = s->ls;
    s->pr.doc_tokens = s->doc_tokens;
    s->pr.doc_n = s->doc_n;
    kvp_load_opts lo = {.model = s->model, .ctx = s->ctx, .identity = &s->id, .trust = s->a.co.trust,
                        .now = s->a.co.now, .n_threads = s->a.threads, .recompute = s->a.recompute,
                        .method = s->a.method,
                        .no_rerotate = s->a.no_rerotate, .no_decoded_copy = s->a.no_decoded_copy};
    if (s->a.drop_prefix) /* the baseline that ignores the prefix; compare's full path keeps it */
        s->path.n_prefix = 0;
    kvp_status st = kvp_path_run(&lo, &s->path, s->logits, &s->pr, s->err, sizeof s->err);
    s->path.n_prefix = s->n_prefix;
    if (st == KVP_OK && s->a.logits_out && s->n_prompt &&
        base_write_f32_le(s->a.logits_out, s->logits, (size_t)s->info->n_vocab) != 0) {
        fprintf(stderr, "%s: cannot write %s: %s\n", s->prog, s->a.logits_out, strerror(errno));
        return 2;
    }
    if (st == KVP_OK) {
        for (int b = 0; b < s->a.n_blobs; b++) /* a damaged copy is worth a word even with --quiet */
            if (s->ls[b].copy_note[0])
                fprintf(stderr, "%s: %s: warning: %s; loaded the blob itself\n", s->prog, s->a.blobs[b],
                        s->ls[b].copy_note);
        for (int b = 0; b < s->a.n_blobs && !s->a.co.quiet; b++) {
            const kvp_load_stats *l = &s->ls[b];
            if (l->context_exact)
                fprintf(stderr, "%s: %s: its declared context (%u tokens) matched: loaded exactly as a full "
                                "prefill computes it\n", s->prog, s->a.blobs[b], l->n_context);
            else if (l->n_context)
                fprintf(stderr, "%s: %s: %s; loaded re-rotated by %d positions instead (approximate)\n", s->prog,
                        s->a.blobs[b], l->context_note, (int)l->delta);
        }
        return 0;
    }
    int i = s->pr.failed_blob;
    if (i < 0) {
        fprintf(stderr, "%s: %s\n", s->prog, s->err);
        return 2;
    }
    if (st == KVP_ERR_VERIFY) {
        fprintf(stderr, "%s: %s: verification failed (%s): %s\n", s->prog, s->a.blobs[i], kvb_status_str(s->pr.vst),
                s->err);
        return kvb_exit_code(s->pr.vst);
    }
    fprintf(stderr, "%s: %s: %s\n", s->prog, s->a.blobs[i], s->err);
    return st == KVP_ERR_REFUSED ? KVF_EXIT_REFUSED : 2;
}

void kvfetch_stats_json(json_t *o, const kvfetch_session *s, double ttft_s)
{
    json_t *blobs = json_array();
    for (int i = 0; i < s->a.n_blobs; i++) {
        const kvp_load_stats *l = &s->ls[i];
        /* the blob argument and the path are added apart: json_pack refuses a whole object for
         * one string that is not UTF-8, and a file name need not be */
        json_t *b = json_pack("{s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:s, s:s*, s:I, s:I, s:f, s:f, s:f, "
                              "s:f, s:f, s:f, s:i, s:s}",
                              "tokens", (json_int_t)l->n_tokens, "chunks", (json_int_t)l->n_chunks,
                              "position", (json_int_t)l->pos, "delta", (json_int_t)l->delta,
                              "recomputed_tokens", (json_int_t)l->n_recomputed, "recompute_s", l->recompute_s,
                              "context_tokens", (json_int_t)l->n_context,
                              "context", !l->n_context ? "none" : l->context_exact ? "exact" : "differs",
                              "context_note", l->context_note[0] ? l->context_note : NULL,
                              "file_bytes", (json_int_t)l->file_bytes, "raw_kv_bytes", (json_int_t)l->raw_bytes,
                              "read_s", l->read_s, "verify_decode_s", l->verify_decode_s,
                              "rerotate_s", l->rerotate_s, "import_s", l->import_s, "load_s", l->total_s,
                              "load_cpu_s", l->cpu_s, "decode_threads", l->n_threads,
                              "chunk_digest", kvc_leaf_digest_engine());
        json_object_set_new(b, "decoded_copy", json_boolean(l->decoded_copy));
        if (l->copy_note[0])
            json_object_set_new(b, "decoded_copy_note", json_string(l->copy_note));
        json_object_set_new(b, "blob", json_string(s->a.blobs[i]));
        json_object_set_new(b, "path", json_string(s->paths[i]));
        json_array_append_new(blobs, b);
    }
    json_object_set_new(o, "blobs", blobs);
    json_t *t = json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "fetch_s", s->fetch_s,
                          "model_load_s", s->model_s, "fingerprint_s", s->fp_s, "warm_up_s", s->warm_s,
                          "prefix_prefill_s", s->pr.prefix_s, "blob_load_s", s->pr.load_s,
                          "suffix_prefill_s", s->pr.suffix_s, "ttft_s", ttft_s);
    json_object_set_new(o, "timings", t);
    /* the weights read into memory on huge pages ("copy") or mapped (eng_model_load; export,
     * which computes one pass, maps them) */
    json_object_set_new(o, "weights", json_string(s->model ? eng_model_weights_held(s->model) : "none"));
    json_object_set_new(o, "prefix_tokens", json_integer((json_int_t)s->n_prefix));
    /* [BOS, prefix] evaluated in the suffix's pass (suffix_prefill_s): prefix_prefill_s is then
     * only the time to hold its cells */
    json_object_set_new(o, "prefix_with_suffix", json_boolean(s->pr.head_with_prompt));
    json_object_set_new(o, "prompt_tokens", json_integer((json_int_t)s->n_prompt));
}

void kvfetch_stats_text(const kvfetch_session *s, double ttft_s)
{
    for (int i = 0; i < s->a.n_blobs; i++) {
        const kvp_load_stats *l = &s->ls[i];
        double gbs = l->total_s > 0 ? (double)l->raw_bytes / l->total_s / 1e9 : 0;
        fprintf(stderr,
                "blob %d: %u tokens at position %d (re-rotated by %d), %.1f MB raw KV in %.2f ms "
                "(%.2f GB/s, %.2f ms CPU): read %.2f, verify+decode %.2f (%d threads), re-rotate+import %.2f, "
                "import %.2f ms%s%s",
                i + 1, l->n_tokens, l->pos, l->delta, (double)l->raw_bytes / 1e6, l->total_s * 1e3, gbs, l->cpu_s * 1e3,
                l->read_s * 1e3, l->verify_decode_s * 1e3, l->n_threads, l->rerotate_s * 1e3,
                l->import_s * 1e3, l->decoded_copy ? " (from its decoded copy)" : "", l->n_recomputed ? "" : "\n");
        if (l->n_recomputed)
            fprintf(stderr, s->a.method == KVP_RECOMPUTE_BLEND
                                ? "; layer 0 and the %u most deviating tokens recomputed in %.2f ms\n"
                                : "; its first %u tokens recomputed in %.2f ms\n",
                    l->n_recomputed, l->recompute_s * 1e3);
    }
    fprintf(stderr,
            "timings: fetch %.3f s%s, model load %.3f s (%s), fingerprints %.3f s, warm-up %.3f s; prefix prefill (%zu tokens) "
            "%.2f ms, blob load %.2f ms, suffix prefill (%zu tokens%s) %.2f ms, time to first token %.2f ms\n",
            s->fetch_s, s->fetched_from_cache ? " (cache)" : "", s->model_s,
            s->model ? eng_model_weights_held(s->model) : "none", s->fp_s, s->warm_s,
            (s->path.bos >= 0) + s->n_prefix, s->pr.prefix_s * 1e3, s->pr.load_s * 1e3, s->n_prompt,
            s->pr.head_with_prompt ? ", with the prefix" : "", s->pr.suffix_s * 1e3, ttft_s * 1e3);
}

/* Length of the valid UTF-8 sequence at p (n bytes left), or 0 (RFC 3629: no overlong forms,
 * no surrogates, nothing above U+10FFFF). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (!len || len > n)
        return 0;
    uint32_t cp = len == 1 ? c : c & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

void kvfetch_json_text(json_t *o, const char *text, size_t n)
{
    const unsigned char *p = (const unsigned char *)(text ? text : "");
    char *out = malloc(3 * n + 1); /* each byte at most becomes U+FFFD's 3 */
    size_t k = 0, bad = 0;
    for (size_t i = 0; out && i < n;) {
        size_t l = utf8_len(p + i, n - i);
        memcpy(out + k, l ? (const char *)p + i : "\xef\xbf\xbd", l ? l : 3);
        k += l ? l : 3;
        i += l ? l : 1;
        bad += !l;
    }
    if (out)
        out[k] = 0;
    json_object_set_new(o, "text", out ? json_stringn(out, k) : json_null());
    json_object_set_new(o, "text_utf8", json_boolean(out && !bad));
    char *hex = bad ? malloc(2 * n + 1) : NULL;
    if (hex) /* the exact bytes, for a caller that needs them */
        json_object_set_new(o, "text_hex", json_string(kvc_hex(p, n, hex)));
    free(out);
    free(hex);
}

void kvfetch_print_json(json_t *o)
{
    char *js = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (js)
        printf("%s\n", js);
    free(js);
    json_decref(o);
}

int kvfetch_session_start(const char *prog, int argc, char **argv, const char *usage, kvfetch_cmd cmd,
                          kvfetch_session **out, int *done)
{
    *done = 1;
    kvfetch_session *s = *out = calloc(1, sizeof *s);
    if (!s) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return 2;
    }
    s->prog = prog;
    for (int i = 0; i < KVFETCH_MAX_BLOBS; i++)
        s->spool_fd[i] = -1;
    int rc = parse_args(argc, argv, &s->a, prog, usage, cmd);
    if (rc)
        return rc < 0 ? 0 : rc; /* -1: --help was printed */
    if ((rc = kvf_common_open(&s->a.co, prog)) != 0 || (rc = resolve_blobs(s)) != 0 ||
        (rc = load_model(s, cmd == KVFETCH_CMD_EXPORT ? "map" : NULL)) != 0 || (rc = loaded_path(s)) != 0)
        return rc;
    *done = 0;
    return 0;
}
