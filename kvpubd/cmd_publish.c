/* cmd_publish.c: `kvpubd publish`: tokenizes documents, prefills [BOS, document] with engine/,
 * writes each document's KV as a signed blob (format/) and indexes it in the store (store/). */
#include "kvpubd/kvpubd.h"
#include "kvpubd/blobinfo.h"
#include "kvpubd/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "crypto/kvcrypto.h"
#include "engine/engine.h"
#include "format/kvblob.h"
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
    "  --json              print a JSON summary on stdout\n"
    "A (document, model, codec) this key already lists is skipped. Exit: 0 ok, 2 usage, I/O, or a\n"
    "document longer than the model's context (nothing is published then).\n";

#define DOC_MAX ((size_t)64 << 20) /* bytes of one document file */
#define PREFILL_BATCH 256          /* tokens per eng_prefill call: progress granularity */

typedef struct doc {
    const char *path;
    char *text;
    size_t len;
    uint8_t sha[32];
    int32_t *ids;
    size_t n;
} doc;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int read_doc(doc *d, char *err, size_t errlen)
{
    FILE *f = fopen(d->path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", d->path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > DOC_MAX) {
        snprintf(err, errlen, "%s: not a regular file of at most %zu bytes", d->path, DOC_MAX);
        fclose(f);
        return -1;
    }
    d->text = malloc((size_t)sb.st_size + 1);
    d->len = d->text ? fread(d->text, 1, (size_t)sb.st_size, f) : 0;
    int bad = !d->text || ferror(f) || d->len != (size_t)sb.st_size;
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "%s: read error", d->path);
        return -1;
    }
    d->text[d->len] = 0;
    kvc_sha256(d->text, d->len, d->sha);
    return 0;
}

static void progress(int tty, size_t di, size_t nd, size_t done, size_t total, double t0)
{
    if (!tty)
        return;
    double dt = now_s() - t0;
    double rate = dt > 0 ? (double)done / dt : 0;
    double eta = rate > 0 ? (double)(total - done) / rate : 0;
    int width = 30, fill = total ? (int)((double)done / (double)total * width) : width;
    fprintf(stderr, "\r[%zu/%zu] [%.*s%*s] %zu/%zu tokens  %.1f tok/s  ETA %.0fs ", di + 1, nd, fill,
            "==============================", width - fill, "", done, total, rate, eta);
    fflush(stderr);
}

/* Does this publisher list (document, model, codec) already? Returns 1 and the id if so. */
static int already_published(kvs_store *st, const uint8_t doc_sha[32], const uint8_t model_fp[32], const char *codec,
                             const uint8_t key_id[KVC_KEYID_LEN], uint8_t id[32])
{
    kvs_query q = {.model_fp = model_fp, .doc_sha256 = doc_sha, .publisher_id = key_id, .limit = KVS_QUERY_MAX_LIMIT};
    kvs_list *l = NULL;
    char e[256];
    if (kvs_store_catalog(st, &q, &l, e, sizeof e) != KVS_OK)
        return 0; /* the publish itself will find the duplicate */
    int found = 0;
    for (size_t i = 0; i < kvs_list_count(l) && !found; i++) {
        const kvs_blob *b = kvs_list_get(l, i);
        if (b->codec && strcmp(b->codec, codec) == 0) {
            memcpy(id, b->id, 32);
            found = 1;
        }
    }
    kvs_list_free(l);
    return found;
}

typedef struct pub_opts {
    kvb_codec codec;
    uint64_t price, expires_in;
    uint32_t chunk_tokens;
    const char *title;
    const char *spill_dir; /* the store's tmp/: encoded chunks wait there, not in memory */
    int tty;
} pub_opts;

/* Prefills one document and writes its blob into the open file f. */
static int prefill_and_write(eng_model *model, const eng_info *info, const uint8_t mfp[32], const uint8_t tfp[32],
                             const kvc_key *key, const doc *d, const pub_opts *po, int threads, size_t di, size_t nd,
                             FILE *f, char *err, size_t errlen)
{
    uint32_t pos0 = info->add_bos && info->bos_id >= 0 ? 1 : 0;
    eng_ctx_params cp = {.n_ctx = (int)(d->n + pos0), .n_threads = threads};
    eng_ctx *ctx = NULL;
    if (eng_ctx_create(model, &cp, &ctx, err, errlen) != ENG_OK)
        return -1;
    int rc = -1;
    double t0 = now_s();
    eng_status es = ENG_OK;
    if (pos0) {
        int32_t bos = info->bos_id;
        es = eng_prefill(ctx, &bos, NULL, 1, NULL, NULL);
    }
    for (size_t i = 0; i < d->n && es == ENG_OK; i += PREFILL_BATCH) {
        size_t n = d->n - i < PREFILL_BATCH ? d->n - i : PREFILL_BATCH;
        es = eng_prefill(ctx, d->ids + i, NULL, n, NULL, NULL);
        progress(po->tty, di, nd, i + n, d->n, t0);
    }
    if (es != ENG_OK) {
        snprintf(err, errlen, "%s: prefill failed: %s", d->path, eng_status_str(es));
        eng_ctx_free(ctx);
        return -1;
    }
    char title[512], uri[PATH_MAX + 8], abspath[PATH_MAX];
    const char *base = strrchr(d->path, '/');
    snprintf(title, sizeof title, "%s", po->title ? po->title : base ? base + 1 : d->path);
    snprintf(uri, sizeof uri, "file://%s", realpath(d->path, abspath) ? abspath : d->path);
    size_t pl = strlen(d->path);
    kvb_manifest m = {0};
    memcpy(m.doc_sha256, d->sha, 32);
    m.doc_title = title;
    m.doc_source_uri = uri;
    m.doc_media_type = pl > 3 && strcmp(d->path + pl - 3, ".md") == 0 ? "text/markdown" : "text/plain";
    m.doc_bytes = d->len;
    memcpy(m.model_fingerprint, mfp, 32);
    m.model_arch = info->arch;
    m.n_layer = (uint32_t)info->n_layer;
    m.n_embd = (uint32_t)info->n_embd;
    m.n_head = (uint32_t)info->n_head;
    m.n_head_kv = (uint32_t)info->n_head_kv;
    m.head_dim = (uint32_t)info->head_dim;
    memcpy(m.tokenizer_fingerprint, tfp, 32);
    m.rope_type = info->rope.type == ENG_ROPE_NEOX ? KVB_ROPE_NEOX : KVB_ROPE_NORMAL;
    m.rope_n_rot = (uint32_t)info->rope.n_rot;
    m.rope_freq_base = info->rope.freq_base;
    m.rope_freq_scale = info->rope.freq_scale;
    m.rope_scaling = info->rope.scaling == ENG_ROPE_SCALING_YARN     ? KVB_SCALING_YARN
                     : info->rope.scaling == ENG_ROPE_SCALING_LINEAR ? KVB_SCALING_LINEAR
                                                                     : KVB_SCALING_NONE;
    m.rope_n_ctx_orig = (uint32_t)info->rope.n_ctx_orig;
    m.yarn_ext_factor = info->rope.yarn_ext_factor;
    m.yarn_attn_factor = info->rope.yarn_attn_factor;
    m.yarn_beta_fast = info->rope.yarn_beta_fast;
    m.yarn_beta_slow = info->rope.yarn_beta_slow;
    m.pos0 = pos0;
    m.n_tokens = (uint32_t)d->n;
    m.codec = po->codec;
    m.chunk_tokens = po->chunk_tokens;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m.created = (int64_t)ts.tv_sec;
    m.expires = po->expires_in ? m.created + (int64_t)po->expires_in : 0;
    /* unix nanoseconds: increases across runs without any state to keep */
    m.serial = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;

    kvb_writer *w = NULL;
    uint32_t kv_dim = m.n_head_kv * m.head_dim, ct = po->chunk_tokens;
    size_t per_layer = (size_t)ct * kv_dim; /* f16 values of K (or V) of one layer in a chunk */
    uint16_t *buf = malloc(per_layer * 2 * m.n_layer * sizeof *buf);
    kvb_write_opts wo = {0, 0, po->spill_dir};
    kvb_status bs = buf ? kvb_writer_create(&m, d->ids, &wo, &w, err, errlen) : KVB_ERR_NOMEM;
    if (bs != KVB_OK) {
        if (!buf)
            snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (uint32_t t0c = 0; t0c < m.n_tokens; t0c += ct) {
        uint32_t n = m.n_tokens - t0c < ct ? m.n_tokens - t0c : ct;
        /* chunk layout (n_layer, 2, n, kv_dim); document token t sits in cell pos0 + t */
        for (uint32_t l = 0; l < m.n_layer; l++) {
            uint16_t *k = buf + (size_t)(2 * l) * n * kv_dim, *v = k + (size_t)n * kv_dim;
            es = eng_kv_export_layer(ctx, (int)l, (int)(pos0 + t0c), (int)n, k, v);
            if (es != ENG_OK) {
                snprintf(err, errlen, "%s: KV export failed: %s", d->path, eng_status_str(es));
                goto out;
            }
        }
        if (kvb_writer_add_chunk(w, buf, n, err, errlen) != KVB_OK)
            goto out;
    }
    if (kvb_writer_finish_file(w, key, f, err, errlen) != KVB_OK)
        goto out;
    rc = 0;
out:
    free(buf);
    kvb_writer_free(w);
    eng_ctx_free(ctx);
    return rc;
}

/* An unnamed temp file in the store's filesystem (vanishes with the process). */
static FILE *store_tmpfile(const char *dir)
{
    int fd = kvpubd_store_tmpfd(dir);
    FILE *f = fd >= 0 ? fdopen(fd, "w+b") : NULL;
    if (!f && fd >= 0)
        close(fd);
    return f;
}

int kvpubd_publish_main(int argc, char **argv)
{
    const char *store_dir = NULL, *model_path = NULL, *key_path = NULL, *codec_name = "f16-zstd";
    pub_opts po = {.chunk_tokens = 256, .tty = isatty(2)};
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
            bad = kvpubd_parse_uint(val, &po.price) != 0;
        else if (strcmp(a, "--expires") == 0)
            bad = kvpubd_parse_duration(val, &po.expires_in) != 0 || po.expires_in == 0;
        else if (strcmp(a, "--chunk-tokens") == 0) {
            bad = kvpubd_parse_uint(val, &v) != 0 || v < 1 || v > KVB_MAX_CHUNK_TOKENS;
            po.chunk_tokens = (uint32_t)v;
        } else if (strcmp(a, "--threads") == 0)
            bad = kvpubd_parse_uint(val, &threads) != 0 || threads > 1024;
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
    doc *docs = calloc(nf, sizeof *docs);
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
    const eng_info *info = eng_model_info(model);
    uint8_t mfp[32], tfp[32], key_id[KVC_KEYID_LEN];
    if (eng_model_fingerprint(model, mfp, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "kvpubd publish: %s\n", err);
        goto done;
    }
    eng_tokenizer_fingerprint(model, tfp);
    kvc_key_id(key, key_id);
    size_t pos0 = info->add_bos && info->bos_id >= 0 ? 1 : 0;
    /* Pass 1: read and tokenize everything, so a document that cannot fit stops the run
     * before the store is touched. */
    for (size_t i = 0; i < nf; i++) {
        docs[i].path = files[i];
        if (read_doc(&docs[i], err, sizeof err) != 0) {
            fprintf(stderr, "kvpubd publish: %s\n", err);
            goto done;
        }
        eng_status es = eng_tokenize(model, docs[i].text, docs[i].len, 0, 0, &docs[i].ids, &docs[i].n);
        if (es != ENG_OK) {
            fprintf(stderr, "kvpubd publish: %s: tokenizer failed: %s\n", files[i], eng_status_str(es));
            goto done;
        }
        if (docs[i].n == 0) {
            fprintf(stderr, "kvpubd publish: %s: the document has no tokens\n", files[i]);
            goto done;
        }
        if (docs[i].n + pos0 > (size_t)info->n_ctx_train || docs[i].n > KVB_MAX_TOKENS) {
            fprintf(stderr,
                    "kvpubd publish: %s: document is %zu tokens, but the model's context is %d tokens "
                    "(%zu after BOS); split the document\n",
                    files[i], docs[i].n, info->n_ctx_train, (size_t)info->n_ctx_train - pos0);
            goto done;
        }
    }
    if (kvs_store_open(store_dir, &st, err, sizeof err) != KVS_OK) {
        fprintf(stderr, "kvpubd publish: %s\n", err);
        goto done;
    }
    const char *codec = kvb_codec_name(po.codec);
    char spill[PATH_MAX];
    if (snprintf(spill, sizeof spill, "%s/tmp", store_dir) < (int)sizeof spill)
        po.spill_dir = spill;
    for (size_t i = 0; i < nf; i++) {
        doc *d = &docs[i];
        double t0 = now_s();
        uint8_t id[32];
        char idh[65], shah[65];
        kvc_hex(d->sha, 32, shah);
        uint64_t bytes = 0;
        int skipped = already_published(st, d->sha, mfp, codec, key_id, id);
        if (!skipped) {
            FILE *f = store_tmpfile(store_dir);
            if (!f) {
                fprintf(stderr, "kvpubd publish: temp file in %s: %s\n", store_dir, strerror(errno));
                goto done;
            }
            int bad = prefill_and_write(model, info, mfp, tfp, key, d, &po, (int)threads, i, nf, f, err, sizeof err);
            if (po.tty)
                fputc('\n', stderr);
            kvb_manifest *m = NULL;
            kvpubd_blobinfo bi = {0};
            kvs_publish_result res;
            /* index what was written, from the file's own manifest (as an upload would be) */
            if (!bad) {
                struct stat sb;
                bad = fflush(f) != 0 || fstat(fileno(f), &sb) != 0 || lseek(fileno(f), 0, SEEK_SET) != 0;
                bytes = bad ? 0 : (uint64_t)sb.st_size;
                if (bad)
                    snprintf(err, sizeof err, "%s: writing the blob: %s", d->path, strerror(errno));
            }
            if (!bad) {
                uint8_t *pre = malloc(KVB_HEADER_LEN + KVB_MAX_MANIFEST + KVC_SIG_LEN);
                ssize_t got = pre ? pread(fileno(f), pre, KVB_HEADER_LEN + KVB_MAX_MANIFEST + KVC_SIG_LEN, 0) : -1;
                bad = got <= 0 || kvb_peek(pre, (size_t)got, key, NULL, &m, err, sizeof err) != KVB_OK ||
                      kvpubd_blobinfo_fill(&bi, m, key_id, po.price) != 0;
                free(pre);
            }
            if (!bad) {
                kvs_status ss = kvs_store_publish_fd(st, &bi.blob, fileno(f), &res, err, sizeof err);
                bad = ss != KVS_OK;
                memcpy(id, res.id, 32);
                skipped = !bad && res.already;
            }
            kvpubd_blobinfo_clear(&bi);
            kvb_manifest_free(m);
            fclose(f);
            if (bad) {
                fprintf(stderr, "kvpubd publish: %s\n", err);
                goto done;
            }
        } else {
            kvs_blob *b = NULL;
            if (kvs_store_blob_get(st, id, &b, err, sizeof err) == KVS_OK)
                bytes = b->size;
            kvs_blob_free(b);
        }
        double secs = now_s() - t0;
        kvc_hex(id, 32, idh);
        if (!json_out)
            printf("%s %s %s (%zu tokens, %" PRIu64 " bytes, %.2fs)\n", skipped ? "skipped" : "published", idh,
                   d->path, d->n, bytes, secs);
        else
            json_array_append_new(summary, json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:f}", "file", d->path, "id", idh,
                                                     "sha256", shah, "tokens", (json_int_t)d->n, "bytes",
                                                     (json_int_t)bytes, "status", skipped ? "skipped" : "published",
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
    for (size_t i = 0; docs && i < nf; i++) {
        free(docs[i].text);
        free(docs[i].ids);
    }
    free(docs);
    json_decref(summary);
    kvs_store_close(st);
    eng_model_free(model);
    kvc_key_free(key);
    free(files);
    return rc;
}
