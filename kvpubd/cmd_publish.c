/* cmd_publish.c: `kvpubd publish`: argv, the progress bar, the summary and exit codes around
 * kvp_publish_document (tokenize, prefill after BOS, encode, sign, index). */
#include "kvpubd/kvpubd.h"
#include "base/base.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "crypto/kvcrypto.h"
#include "engine/engine.h"
#include "format/kvblob.h"
#include "kvpub/kvpub.h"
#include "store/kvstore.h"

static const char publish_usage[] =
    "usage: kvpubd publish --store DIR --model M.gguf [--key PREFIX.key] [options] FILE...\n"
    "Prefills each document after the model's BOS and publishes its KV cache as a signed blob,\n"
    "signed with --key, or without it with the store's active signing key (kvpubd key rotate).\n"
    "  --codec C           f16-zstd (default, lossless), f16, q8, q4\n"
    "  --price N           price in the smallest currency unit, up to 2^63-1 (default 0 = free)\n"
    "  --title T           document title, UTF-8, at most 4096 bytes (default: the file name;\n"
    "                      only with one FILE)\n"
    "  --source-uri URI    where the document can be found, signed in the manifest (default:\n"
    "                      none; the local path is never published; only with one FILE)\n"
    "  --media-type T      e.g. text/html (default: text/markdown for *.md, else text/plain)\n"
    "  --expires DURATION  e.g. 30d, 12h; at most 100 years (default: never)\n"
    "  --chunk-tokens N    tokens per chunk (default: a power of two, 16 to 4096, that keeps a\n"
    "                      decoded chunk within 16 MiB; 128 for Qwen3-0.6B)\n"
    "  --threads N         engine threads (default: all cores)\n"
    "  --from-llama-state S  publish the KV llama.cpp computed: S is a sequence state it saved\n"
    "                      (llama_state_seq_save_file, f16 K/V) holding exactly [BOS, context,\n"
    "                      FILE's tokens] at positions 0..n-1 (one FILE; spec/llama-state.md)\n"
    "A declared context (one of these) is prefilled between BOS and each document and named\n"
    "in the signed manifest; a buyer whose tokens before the document are exactly these gets\n"
    "a load identical to a full prefill (spec/kvblob.md, \"Declared context\"):\n"
    "  --context TEXT      text, tokenized as kvfetch run tokenizes --prefix (special-token\n"
    "                      texts such as <|im_start|> honoured)\n"
    "  --context-file F    the same, read from a file\n"
    "  --context-ids LIST  token ids, e.g. 151644,8948,198\n"
    "  --chat [--system S] the model's chat template up to the user's message (as kvfetch run\n"
    "                      --chat --system S builds it): the document opens the user turn\n"
    "  --json              print a JSON summary on stdout\n"
    "A (document, model, codec, context) you list already is skipped, unless it expired: then it\n"
    "is replaced. Exit: 0 ok, 2 usage, I/O, or a\n"
    "document longer than the model's context, 3 a --from-llama-state file that is not FILE's KV\n"
    "under this model (nothing is published then).\n";

/* The progress bar of document di of nd, drawn on a terminal's stderr. */
typedef struct bar {
    size_t di, nd;
    double t0;
    int drawn;
} bar;

static void progress(void *user, size_t done, size_t total)
{
    bar *b = user;
    double dt = base_now_s() - b->t0;
    double rate = dt > 0 ? (double)done / dt : 0;
    double eta = rate > 0 ? (double)(total - done) / rate : 0;
    int width = 30, fill = total ? (int)((double)done / (double)total * width) : width;
    fprintf(stderr, "\r[%zu/%zu] [%.*s%*s] %zu/%zu tokens  %.1f tok/s  ETA %.0fs ", b->di + 1, b->nd, fill,
            "==============================", width - fill, "", done, total, rate, eta);
    fflush(stderr);
    b->drawn = 1;
}

/* The declared context as the command line gives it (at most one form). */
typedef struct ctx_args {
    const char *text, *file, *ids, *system;
    int chat, forms;
} ctx_args;

/* Resolves the declared context into token ids (*n = 0: none). Returns 0, or -1 with err set. */
static int context_ids(const ctx_args *a, eng_model *model, int32_t **ids, size_t *n, char *err, size_t errlen)
{
    *ids = NULL;
    *n = 0;
    char *text = NULL, *after = NULL;
    const char *t = a->text;
    if (a->ids) {
        int32_t nv = eng_model_info(model)->n_vocab;
        if (base_parse_ids(a->ids, (uint32_t)nv, ids, n) == 0)
            return 0;
        return snprintf(err, errlen, "--context-ids: '%s' is not a comma-separated list of token ids below %d",
                        a->ids, nv), -1;
    }
    if (a->file) {
        FILE *f = fopen(a->file, "rb");
        size_t len = 0;
        text = f ? base_read_stream(f, KVP_DOC_MAX, &len) : NULL;
        if (f)
            fclose(f);
        if (!text || strlen(text) != len)
            return snprintf(err, errlen, "--context-file %s: cannot read it (or it holds a NUL byte, or is over "
                            "64 MiB)", a->file), free(text), -1;
        t = text;
    }
    if (a->chat) {
        kvp_chat_format f;
        char why[256];
        if (kvp_chat_pick(eng_model_chat_template(model), &f, why, sizeof why) != KVP_OK)
            return snprintf(err, errlen, "--chat: %s", why), -1;
        if (kvp_chat_wrap(f, a->system, "", &text, &after) != KVP_OK)
            return snprintf(err, errlen, "out of memory"), -1;
        free(after);
        t = text;
    }
    int rc = 0;
    if (t && *t && eng_tokenize(model, t, strlen(t), 0, 1, ids, n) != ENG_OK)
        rc = -1, snprintf(err, errlen, "cannot tokenize the declared context");
    free(text);
    if (rc == 0 && t && *n == 0)
        rc = -1, snprintf(err, errlen, "the declared context has no tokens");
    return rc;
}

int kvpubd_publish_main(int argc, char **argv)
{
    const char *store_dir = NULL, *model_path = NULL, *key_path = NULL, *codec_name = "f16-zstd";
    kvp_publish_opts po = {0};
    int tty = isatty(2);
    int json_out = 0;
    ctx_args ca = {0};
    int32_t *cids = NULL;
    size_t ncids = 0;
    uint64_t threads = 0, v;
    const char **files = calloc((size_t)argc, sizeof *files);
    size_t nf = 0;
    if (!files)
        return 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(publish_usage, stdout);
            free(files);
            return 0;
        }
        if (strcmp(a, "--json") == 0) {
            json_out = 1;
            continue;
        }
        if (strcmp(a, "--chat") == 0) {
            ca.chat = 1;
            ca.forms++;
            continue;
        }
        if (a[0] != '-' || strcmp(a, "-") == 0) {
            files[nf++] = a;
            continue;
        }
        const char *val = i + 1 < argc ? argv[++i] : NULL;
        int bad = !val;
        if (bad)
            ;
        else if (strcmp(a, "--store") == 0)
            store_dir = val;
        else if (strcmp(a, "--model") == 0)
            model_path = val;
        else if (strcmp(a, "--key") == 0)
            key_path = val;
        else if (strcmp(a, "--codec") == 0)
            codec_name = val;
        else if (strcmp(a, "--title") == 0)
            po.title = val;
        else if (strcmp(a, "--source-uri") == 0)
            bad = strlen(po.source_uri = val) > KVB_MAX_STRING;
        else if (strcmp(a, "--media-type") == 0)
            bad = !*(po.media_type = val) || strlen(val) > 255;
        else if (strcmp(a, "--price") == 0)
            bad = base_parse_u64(val, &po.price) != 0 || po.price > INT64_MAX;
        else if (strcmp(a, "--expires") == 0)
            bad = base_parse_duration(val, &po.expires_in) != 0 || po.expires_in == 0 ||
                  po.expires_in > KVP_MAX_EXPIRES_S;
        else if (strcmp(a, "--chunk-tokens") == 0) {
            bad = base_parse_u64(val, &v) != 0 || v < 1 || v > KVB_MAX_CHUNK_TOKENS;
            po.chunk_tokens = (uint32_t)v;
        } else if (strcmp(a, "--from-llama-state") == 0)
            bad = !(po.llama_state = val);
        else if (strcmp(a, "--context") == 0)
            ca.text = val, ca.forms++;
        else if (strcmp(a, "--context-file") == 0)
            ca.file = val, ca.forms++;
        else if (strcmp(a, "--context-ids") == 0)
            ca.ids = val, ca.forms++;
        else if (strcmp(a, "--system") == 0)
            ca.system = val;
        else if (strcmp(a, "--threads") == 0)
            bad = base_parse_u64(val, &threads) != 0 || threads > 1024;
        else {
            fprintf(stderr, "kvpubd publish: unknown option %s\n%s", a, publish_usage);
            free(files);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "kvpubd publish: %s: missing or invalid value%s%s\n", a, val ? " " : "", val ? val : "");
            free(files);
            return 2;
        }
    }
    if (!store_dir || !model_path || nf == 0) {
        fprintf(stderr, "kvpubd publish: --store, --model and at least one FILE are required\n%s",
                publish_usage);
        free(files);
        return 2;
    }
    if (po.llama_state && nf != 1) {
        fprintf(stderr, "kvpubd publish: --from-llama-state holds one document; %zu FILEs given\n", nf);
        free(files);
        return 2;
    }
    if (ca.forms > 1 || (ca.system && !ca.chat)) {
        fprintf(stderr, "kvpubd publish: give one of --context, --context-file, --context-ids, --chat "
                        "(--system goes with --chat)\n");
        free(files);
        return 2;
    }
    if ((po.title || po.source_uri) && nf > 1) {
        fprintf(stderr, "kvpubd publish: --title and --source-uri apply to one FILE; %zu given\n", nf);
        free(files);
        return 2;
    }
    if (kvb_codec_parse(codec_name, &po.codec) != KVB_OK) {
        fprintf(stderr, "kvpubd publish: unknown codec '%s' (f16-zstd, f16, q8, q4)\n", codec_name);
        free(files);
        return 2;
    }

    int rc = 2;
    char err[512];
    kvc_key *key = NULL;
    eng_model *model = NULL;
    kvs_store *st = NULL;
    kvp_identity id;
    kvp_document *docs = calloc(nf, sizeof *docs);
    json_t *summary = json_array();
    if (!docs || !summary)
        goto done;
    if (key_path && kvc_key_load_private(key_path, &key, err, sizeof err) != KVC_OK) {
        fprintf(stderr, "kvpubd publish: %s\n", err);
        goto done;
    }
    /* from a state nothing is computed with the weights: mapping them spares the copy */
    if (eng_model_load_held(model_path, po.llama_state ? "map" : NULL, &model, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "kvpubd publish: %s\n", err);
        goto done;
    }
    char fp_dir[PATH_MAX];
    eng_model_set_fingerprint_cache(model, base_cache_dir(NULL, fp_dir, sizeof fp_dir));
    if (kvp_identity_from_model(model, &id, err, sizeof err) != KVP_OK) {
        fprintf(stderr, "kvpubd publish: %s\n", err);
        goto done;
    }
    if (context_ids(&ca, model, &cids, &ncids, err, sizeof err) != 0) {
        fprintf(stderr, "kvpubd publish: %s\n", err);
        goto done;
    }
    po.context_ids = cids;
    po.n_context = ncids;
    /* Pass 1: read and tokenize everything, so a document that cannot fit stops the run
     * before the store is touched. */
    for (size_t i = 0; i < nf; i++)
        if (kvp_document_read(model, files[i], &docs[i], err, sizeof err) != KVP_OK) {
            fprintf(stderr, "kvpubd publish: %s\n", err);
            goto done;
        }
    if (kvs_store_open(store_dir, &st, err, sizeof err) != KVS_OK ||
        (!key && kvs_store_key_active(st, &key, err, sizeof err) != KVS_OK)) {
        fprintf(stderr, "kvpubd publish: %s\n", err);
        goto done;
    }
    po.model = model;
    po.identity = &id;
    po.key = key;
    po.store = st;
    po.store_dir = store_dir;
    po.n_threads = (int)threads;
    for (size_t i = 0; i < nf; i++) {
        kvp_document *d = &docs[i];
        bar b = {.di = i, .nd = nf, .t0 = base_now_s()};
        po.progress = tty ? progress : NULL;
        po.user = &b;
        kvp_publish_result res;
        kvp_status ps = kvp_publish_document(&po, d, &res, err, sizeof err);
        if (b.drawn)
            fputc('\n', stderr);
        if (ps != KVP_OK) {
            fprintf(stderr, "kvpubd publish: %s\n", err);
            if (po.llama_state && (ps == KVP_ERR_REFUSED || ps == KVP_ERR_FORMAT))
                rc = 3;
            goto done;
        }
        double secs = base_now_s() - b.t0;
        int skipped = res.skipped;
        char idh[65], shah[65];
        kvc_hex(d->sha256, 32, shah);
        kvc_hex(res.id, 32, idh);
        if (!json_out) {
            printf("%s %s %s (%zu tokens", skipped ? "skipped" : "published", idh, d->path, d->n_tokens);
            if (ncids)
                printf(" after a %zu-token context", ncids);
            printf(", %" PRIu64 " bytes, %.2fs)\n", res.bytes, secs);
        } else {
            json_t *file = json_string(d->path); /* NULL for a name that is not UTF-8: null */
            json_t *row = json_pack("{s:o, s:s, s:s, s:I, s:I, s:s, s:f, s:I}", "file", file ? file : json_null(),
                                    "id", idh, "sha256", shah, "tokens", (json_int_t)d->n_tokens, "bytes",
                                    (json_int_t)res.bytes, "status", skipped ? "skipped" : "published", "seconds",
                                    secs, "context_tokens", (json_int_t)ncids);
            if (!row) {
                fprintf(stderr, "kvpubd publish: out of memory\n");
                goto done;
            }
            if (ncids) {
                uint8_t ch[32];
                char chh[65];
                if (kvb_ids_sha256(cids, ncids, ch) == 0)
                    json_object_set_new(row, "context_sha256", json_string(kvc_hex(ch, 32, chh)));
            }
            json_array_append_new(summary, row);
        }
    }
    rc = 0;
done:
    /* with --json, what was published is on stdout also when a later document failed */
    if (json_out && summary && (rc == 0 || json_array_size(summary))) {
        json_t *o = json_pack("{s:O, s:s}", "documents", summary, "weights", eng_model_weights_held(model));
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (s)
            printf("%s\n", s);
        free(s);
    }
    for (size_t i = 0; docs && i < nf; i++)
        kvp_document_clear(&docs[i]);
    free(docs);
    json_decref(summary);
    kvs_store_close(st);
    eng_model_free(model);
    kvc_key_free(key);
    free(files);
    free(cids);
    return rc;
}
