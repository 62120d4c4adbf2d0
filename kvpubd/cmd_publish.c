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
    "usage: kvpubd publish --store DIR --model M.gguf --key PREFIX.key [options] FILE...\n"
    "Prefills each document after the model's BOS and publishes its KV cache as a signed blob.\n"
    "  --codec C           f16-zstd (default, lossless), f16, q8, q4\n"
    "  --price N           price in the smallest currency unit (default 0 = free)\n"
    "  --title T           document title (default: the file name; only with one FILE)\n"
    "  --expires DURATION  e.g. 30d, 12h (default: never)\n"
    "  --chunk-tokens N    tokens per chunk (default 256)\n"
    "  --threads N         engine threads (default: all cores)\n"
    "  --from-llama-state S  publish the KV llama.cpp computed: S is a sequence state it saved\n"
    "                      (llama_state_seq_save_file, f16 K/V) holding exactly [BOS, FILE's\n"
    "                      tokens] at positions 0..n-1 (one FILE; spec/llama-state.md)\n"
    "  --json              print a JSON summary on stdout\n"
    "A (document, model, codec) already in the store is skipped. Exit: 0 ok, 2 usage, I/O, or a\n"
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

int kvpubd_publish_main(int argc, char **argv)
{
    const char *store_dir = NULL, *model_path = NULL, *key_path = NULL, *codec_name = "f16-zstd";
    kvp_publish_opts po = {.chunk_tokens = KVP_CHUNK_TOKENS};
    int tty = isatty(2);
    int json_out = 0;
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
        else if (strcmp(a, "--price") == 0)
            bad = base_parse_u64(val, &po.price) != 0;
        else if (strcmp(a, "--expires") == 0)
            bad = base_parse_duration(val, &po.expires_in) != 0 || po.expires_in == 0;
        else if (strcmp(a, "--chunk-tokens") == 0) {
            bad = base_parse_u64(val, &v) != 0 || v < 1 || v > KVB_MAX_CHUNK_TOKENS;
            po.chunk_tokens = (uint32_t)v;
        } else if (strcmp(a, "--from-llama-state") == 0)
            bad = !(po.llama_state = val);
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
    if (!store_dir || !model_path || !key_path || nf == 0) {
        fprintf(stderr, "kvpubd publish: --store, --model, --key and at least one FILE are required\n%s",
                publish_usage);
        free(files);
        return 2;
    }
    if (po.llama_state && nf != 1) {
        fprintf(stderr, "kvpubd publish: --from-llama-state holds one document; %zu FILEs given\n", nf);
        free(files);
        return 2;
    }
    if (po.title && nf > 1) {
        fprintf(stderr, "kvpubd publish: --title applies to one FILE; %zu given\n", nf);
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
    if (kvc_key_load_private(key_path, &key, err, sizeof err) != KVC_OK) {
        fprintf(stderr, "kvpubd publish: %s\n", err);
        goto done;
    }
    if (eng_model_load(model_path, &model, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "kvpubd publish: %s\n", err);
        goto done;
    }
    char fp_dir[PATH_MAX];
    eng_model_set_fingerprint_cache(model, base_cache_dir(NULL, fp_dir, sizeof fp_dir));
    if (kvp_identity_from_model(model, &id, err, sizeof err) != KVP_OK) {
        fprintf(stderr, "kvpubd publish: %s\n", err);
        goto done;
    }
    /* Pass 1: read and tokenize everything, so a document that cannot fit stops the run
     * before the store is touched. */
    for (size_t i = 0; i < nf; i++)
        if (kvp_document_read(model, files[i], &docs[i], err, sizeof err) != KVP_OK) {
            fprintf(stderr, "kvpubd publish: %s\n", err);
            goto done;
        }
    if (kvs_store_open(store_dir, &st, err, sizeof err) != KVS_OK) {
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
        if (!json_out)
            printf("%s %s %s (%zu tokens, %" PRIu64 " bytes, %.2fs)\n", skipped ? "skipped" : "published", idh,
                   d->path, d->n_tokens, res.bytes, secs);
        else
            json_array_append_new(summary, json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:f}", "file", d->path, "id", idh,
                                                     "sha256", shah, "tokens", (json_int_t)d->n_tokens, "bytes",
                                                     (json_int_t)res.bytes, "status", skipped ? "skipped" : "published",
                                                     "seconds", secs));
    }
    rc = 0;
    if (json_out) {
        json_t *o = json_pack("{s:O}", "documents", summary);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (s)
            printf("%s\n", s);
        free(s);
    }
done:
    for (size_t i = 0; docs && i < nf; i++)
        kvp_document_clear(&docs[i]);
    free(docs);
    json_decref(summary);
    kvs_store_close(st);
    eng_model_free(model);
    kvc_key_free(key);
    free(files);
    return rc;
}
