/* cmd_get.c: `kvfetch get`: fetch a blob over HTTPS (kvpubd API or any static mirror), verify it
 * while it streams in, resume and retry, and keep it in the content-addressed local cache. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fetch/fetch.h"
#include "kvfetch/kvfetch.h"
#include "kvfetch/opts.h"

static const char usage_text[] =
    "usage: kvfetch get (URL | ID --server URL | --server URL --blob ID) --trust DIR [options]\n"
    "       kvfetch get ID --mirror URL [--mirror URL...] --trust DIR [options]\n"
    "       kvfetch get --snapshot WHERE (--document SHA256 --model M.gguf | --blob ID) --trust DIR\n"
    "\n"
    "Downloads a kvpub blob over HTTPS (certificate verification always on), verifying its\n"
    "signature, trust, revocation, expiry and every chunk hash while the bytes arrive, and\n"
    "keeps it in the local cache named by its SHA-256 (the blob id). A blob already cached is\n"
    "re-verified from disk without the network. An interrupted download is resumed with a\n"
    "Range request from the bytes already on disk. Prints the verified file's path on stdout.\n"
    "A blob whose manifest signs its decoded chunks (raw_sha256: f16-zstd blobs) also gets its\n"
    "decoded copy in the cache, PATH.decoded, about 1.2 times the blob's size, counted in the\n"
    "cache's cap: kvfetch run reads it at the f16 codec's speed, each chunk verified against\n"
    "its signed decoded digest. Decoded bytes that differ from those digests fail the blob.\n"
    "\n"
    "  URL                  a blob URL: the API's /v1/blobs/ID or a static mirror's file\n"
    "  --server URL         kvpubd API base URL (with ID or --blob); with no --token and no\n"
    "                       $KVPUB_TOKEN, the token `kvfetch buy` stored for this blob and\n"
    "                       this server's origin is sent, to that origin only\n"
    "  --blob ID            blob id (64 hex digits): with --server, or checked against URL\n"
    "  --snapshot WHERE     resolve the blob through a signed snapshot (spec/repository.md):\n"
    "                       a repository (kvpubd or a static mirror: https://host[/prefix]), its\n"
    "                       /v1/snapshot URL, or a snapshot file (then --server or --mirror names\n"
    "                       where the blobs are). The snapshot must verify, be current and not\n"
    "                       older than one seen before; a blob it does not list is refused. With\n"
    "                       --mirror, a refused snapshot (one line on stderr) makes it try the\n"
    "                       next mirror's, and a mirror whose snapshot was refused serves no blob\n"
    "  --document SHA256    with --snapshot: the document's blob for --model (lossless codecs\n"
    "                       first, then the newest), narrowed by --codec, --context, --publisher\n"
    "  --model FILE         the GGUF model (its fingerprint), or --model-fp HEX\n"
    "  --codec C, --context HASH|none, --publisher KEYID   filters for --document\n"
    "  -o FILE              also copy the verified blob to FILE\n"
    "  --no-decoded-copy    do not write the decoded copy (below)\n"
    "  --json               print a JSON summary on stdout instead of the path (\"sources\":\n"
    "                       what each source and mirror did)\n"
    KVF_SHARED_HELP
    "\n"
    "exit codes: 0 ok; 1 verification failed or refused (bad signature, untrusted or revoked\n"
    "key, expired, chunk hash, wrong blob id, body larger than the manifest says); 2 usage,\n"
    "I/O, network or HTTP error (a partial download is kept for resuming); 3 malformed,\n"
    "truncated or unsupported blob; 4 access denied by the server (token missing, invalid,\n"
    "expired or used up: buy a new one); 5 snapshot older than one seen before (rollback);\n"
    "6 snapshot expired (a frozen mirror). A snapshot that does not verify, or does not list\n"
    "the blob, is 1. When every source failed: the code of the most telling failure (what the\n"
    "bytes or a server said about the blob before a network error), one line per source.\n";

/* Copies src to dst through a temporary file and rename, so dst is never half-written. */
static int copy_out(const char *src, const char *dst, char *err, size_t errlen)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        snprintf(err, errlen, "cannot open %s: %s", src, strerror(errno));
        return -1;
    }
    base_replace r;
    if (base_replace_open(&r, dst) != 0) {
        snprintf(err, errlen, "cannot create a temporary file beside %s: %s", dst, strerror(errno));
        close(in);
        return -1;
    }
    int rc = base_copy_fd(in, r.fd);
    const int e = errno;
    close(in);
    if (rc != 0) {
        base_replace_abort(&r);
        errno = e;
    } else {
        rc = base_replace_commit(&r);
    }
    if (rc != 0)
        snprintf(err, errlen, "writing %s: %s", dst, strerror(errno));
    return rc;
}

static void print_json(const kvf_get_result *r, const char *out_path)
{
    char id[65], fp[65], kid[17];
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(kvc_hex(r->id, 32, id)));
    json_object_set_new(o, "path", json_string(out_path ? out_path : r->path));
    json_object_set_new(o, "cache_path", json_string(r->path));
    json_object_set_new(o, "bytes", json_integer((json_int_t)r->bytes));
    json_object_set_new(o, "from_cache", json_boolean(r->from_cache));
    json_object_set_new(o, "revalidated", json_boolean(r->revalidated));
    json_object_set_new(o, "stale", json_boolean(r->stale));
    json_object_set_new(o, "resumed_bytes", json_integer((json_int_t)r->reused));
    json_object_set_new(o, "http_attempts", json_integer(r->http.attempts));
    json_object_set_new(o, "http_bytes", json_integer((json_int_t)r->http.bytes));
    json_object_set_new(o, "seconds", json_real(r->seconds));
    json_object_set_new(o, "signer", json_string(kvc_hex(r->header.key_id, KVC_KEYID_LEN, kid)));
    json_object_set_new(o, "parallel", json_boolean(r->parallel_used));
    json_object_set_new(o, "decoded_path", r->decoded[0] ? json_string(r->decoded) : json_null());
    json_object_set_new(o, "decoded_seconds", json_real(r->decoded_s));
    if (r->decoded_note[0])
        json_object_set_new(o, "decoded_note", json_string(r->decoded_note));
    json_t *srcs = json_array();
    for (int i = 0; i < r->n_sources; i++) {
        const kvf_source_report *s = &r->sources[i];
        json_t *e = json_object();
        json_object_set_new(e, "url", json_string(s->url));
        json_object_set_new(e, "mirror", json_boolean(s->mirror));
        json_object_set_new(e, "result", json_string(s->ok ? "ok" : s->abandoned ? "abandoned" : s->used ? "partial"
                                                                                                  : "unused"));
        json_object_set_new(e, "from", json_integer((json_int_t)s->from));
        json_object_set_new(e, "bytes", json_integer((json_int_t)s->bytes));
        if (s->probe_s >= 0)
            json_object_set_new(e, "probe_ms", json_real(s->probe_s * 1e3));
        if (s->abandoned)
            json_object_set_new(e, "error", json_string(s->why));
        json_array_append_new(srcs, e);
    }
    json_object_set_new(o, "sources", srcs);
    if (r->manifest) {
        const kvb_manifest *m = r->manifest;
        json_object_set_new(o, "title", json_string(m->doc_title));
        json_object_set_new(o, "model_arch", json_string(m->model_arch));
        json_object_set_new(o, "model_fingerprint", json_string(kvc_hex(m->model_fingerprint, 32, fp)));
        json_object_set_new(o, "n_tokens", json_integer(m->n_tokens));
        json_object_set_new(o, "codec", json_string(kvb_codec_name(m->codec)));
        json_object_set_new(o, "expires", json_integer(m->expires));
    }
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(o);
}

/* What --snapshot resolves through. */
typedef struct snap_args {
    const char *where, *document, *model, *model_fp, *codec, *context, *publisher;
} snap_args;

/* Resolves the blob through a verified, current snapshot: fills go->server (the repository,
 * unless --server named it) and go->blob_id (idbuf). Returns an exit code; *snap owns the
 * snapshot on 0. */
static int resolve(kvf_common *co, const snap_args *a, kvf_get_opts *go, char *base, size_t basecap, char idbuf[65],
                   kvf_snapshot **snap)
{
    const char *prog = "kvfetch get";
    uint8_t doc[32], fp[32], ctx[32], pub[KVC_KEYID_LEN], id[32];
    char fphex[65], err[1024];
    if ((!go->blob_id) == (!a->document) || (a->document && !a->model == !a->model_fp) || go->url) {
        fprintf(stderr, "%s: with --snapshot give --blob ID, or --document SHA256 and one of --model, --model-fp "
                        "(and no URL)\n", prog);
        return 2;
    }
    if ((a->document && (strlen(a->document) != 64 || kvc_unhex(a->document, doc, 32) != KVC_OK)) ||
        (a->model_fp && (strlen(a->model_fp) != 64 || kvc_unhex(a->model_fp, fp, 32) != KVC_OK)) ||
        (a->context && strcmp(a->context, "none") && (strlen(a->context) != 64 || kvc_unhex(a->context, ctx, 32))) ||
        (a->publisher && (strlen(a->publisher) != 16 || kvc_unhex(a->publisher, pub, sizeof pub) != KVC_OK)) ||
        (go->blob_id && (strlen(go->blob_id) != 64 || kvc_unhex(go->blob_id, id, 32) != KVC_OK))) {
        fprintf(stderr, "%s: --document, --model-fp, --context and --blob take 64 hex digits, --publisher 16\n", prog);
        return 2;
    }
    if (a->model) {
        int rc = kvf_model_fp_hex(a->model, fphex, prog);
        if (rc || kvc_unhex(fphex, fp, 32) != KVC_OK)
            return rc ? rc : 2;
    }
    int rc = kvf_repo_open_any(co, a->where, prog, snap, base, basecap);
    if (rc)
        return rc;
    const kvf_listing *l = NULL;
    kvf_status st = KVF_OK;
    if (go->blob_id) {
        char t[32];
        if (!(l = kvf_snapshot_find(*snap, id)))
            st = kvf_fail(err, sizeof err, KVF_ERR_UNLISTED, "snapshot version %llu does not list blob %s: refusing it",
                          (unsigned long long)kvf_snapshot_version(*snap), go->blob_id);
        else if (!kvf_listing_current(l, co->now))
            st = kvf_fail(err, sizeof err, KVF_ERR_UNLISTED,
                          "snapshot version %llu lists blob %s only until %s: refusing it",
                          (unsigned long long)kvf_snapshot_version(*snap), go->blob_id,
                          kvb_time_format(l->expires, t, sizeof t));
    } else {
        kvf_resolve r = {.doc_sha256 = doc, .model_fp = fp, .codec = a->codec,
                         .context_sha256 = a->context && strcmp(a->context, "none") ? ctx : NULL,
                         .no_context = a->context && !strcmp(a->context, "none"),
                         .publisher_id = a->publisher ? pub : NULL, .now = co->now};
        st = kvf_snapshot_resolve(*snap, &r, &l, err, sizeof err);
    }
    if (st == KVF_OK && !go->server && !*base && !co->mirrors.n)
        st = kvf_fail(err, sizeof err, KVF_ERR_USAGE,
                      "a snapshot file names no repository: give --server URL or --mirror URL");
    if (st != KVF_OK) {
        fprintf(stderr, "%s: %s\n", prog, err);
        kvf_snapshot_free(*snap);
        *snap = NULL;
        return kvf_exit_code(st, KVB_OK);
    }
    go->blob_id = kvc_hex(l->id, 32, idbuf);
    if (!go->server && *base)
        go->server = base;
    return 0;
}

/* A blob a snapshot picked must be what the snapshot says: its publisher's, signed while its
 * key counted. Returns an exit code after printing why not. */
static int check_listed(const kvf_snapshot *snap, const kvf_get_result *res)
{
    const kvf_listing *l = kvf_snapshot_find(snap, res->id);
    char err[512], a[17], b[17];
    if (l && memcmp(l->publisher_id, res->header.key_id, KVC_KEYID_LEN) != 0) {
        fprintf(stderr, "kvfetch get: the blob is signed by %s, the snapshot lists it for publisher %s: refused\n",
                kvc_hex(res->header.key_id, KVC_KEYID_LEN, a), kvc_hex(l->publisher_id, KVC_KEYID_LEN, b));
        return KVF_EXIT_REFUSED;
    }
    if (kvf_snapshot_key_ok(snap, res->header.key_id, res->manifest ? res->manifest->created : INT64_MAX, err,
                            sizeof err) != KVF_OK) {
        fprintf(stderr, "kvfetch get: %s\n", err);
        return KVF_EXIT_REFUSED;
    }
    return 0;
}

int kvfetch_get_main(int argc, char **argv)
{
    const char *prog = "kvfetch get";
    static const struct option longopts[] = {
        KVF_SHARED_LONGOPTS,
        {"server", required_argument, NULL, 's'},
        {"blob", required_argument, NULL, 'b'},
        {"output", required_argument, NULL, 'o'},
        {"json", no_argument, NULL, 'j'},
        {"snapshot", required_argument, NULL, 'S'},
        {"document", required_argument, NULL, 'D'},
        {"model", required_argument, NULL, 'M'},
        {"model-fp", required_argument, NULL, 'F'},
        {"codec", required_argument, NULL, 'C'},
        {"context", required_argument, NULL, 'X'},
        {"publisher", required_argument, NULL, 'P'},
        {"no-decoded-copy", no_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    kvf_common co = {0};
    kvf_get_opts go = {0};
    const char *out_path = NULL;
    snap_args sa = {0};
    int json = 0, c;
    base_opts op = {.prog = prog, .usage = usage_text, .shortopts = "o:h", .longopts = longopts,
                    .more = kvf_common_hook, .more_ctx = &co};
    while ((c = base_opts_next(&op, argc, argv)) > 0) {
        switch (c) {
        case 's': go.server = optarg; break;
        case 'b': go.blob_id = optarg; break;
        case 'o': out_path = optarg; break;
        case 'j': json = 1; break;
        case 'S': sa.where = optarg; break;
        case 'D': sa.document = optarg; break;
        case 'M': sa.model = optarg; break;
        case 'F': sa.model_fp = optarg; break;
        case 'C': sa.codec = optarg; break;
        case 'X': sa.context = optarg; break;
        case 'P': sa.publisher = optarg; break;
        case 'N': go.no_decoded_copy = 1; break;
        }
    }
    if (c < 0)
        return op.rc;
    if (optind < argc)
        go.url = argv[optind++];
    if (base_opts_no_operands(&op, argc, argv, 0))
        return 2;
    if ((sa.document || sa.model || sa.model_fp || sa.codec || sa.context || sa.publisher) && !sa.where) {
        fprintf(stderr, "%s: --document, --model, --codec, --context and --publisher need --snapshot\n", prog);
        return 2;
    }
    if (kvf_common_load_mirrors(&co, prog) != 0)
        return 2;
    if (go.url && (go.server || co.mirrors.n) && !go.blob_id && !kvf_is_url(go.url)) {
        go.blob_id = go.url; /* kvfetch get ID --server URL, kvfetch get ID --mirror URL */
        go.url = NULL;
    }
    if (!sa.where && !go.url && !(go.blob_id && (go.server || co.mirrors.n))) {
        fprintf(stderr, "%s: give a blob URL, or --server URL (or --mirror URL) and --blob ID (try --help)\n", prog);
        return 2;
    }
    uint8_t uid[32];
    if (go.url && co.mirrors.n && !go.blob_id && !kvf_url_blob_id(go.url, uid)) {
        fprintf(stderr, "%s: --mirror needs the blob's id: this URL does not name one (add --blob ID)\n", prog);
        return 2;
    }
    if (go.url && go.server) {
        fprintf(stderr, "%s: give either a URL or --server, not both\n", prog);
        return 2;
    }
    int rc = kvf_common_open(&co, prog);
    if (rc != 0)
        return rc;
    go.trust = co.trust;
    go.now = co.now;
    go.http = co.http;
    kvf_common_mirrors(&co, &go);
    kvf_snapshot *snap = NULL;
    char base[4096], idbuf[65];
    if (sa.where && (rc = resolve(&co, &sa, &go, base, sizeof base, idbuf, &snap)) != 0) {
        kvf_common_close(&co);
        return rc;
    }
    kvf_common_mirrors(&co, &go); /* the mirrors whose snapshot was refused are gone */

    kvf_token_rec tok;
    if ((rc = kvf_stored_token(&go, &tok, prog)) != 0) {
        kvf_snapshot_free(snap);
        kvf_common_close(&co);
        return rc;
    }
    kvf_get_result res;
    char err[8192] = "";
    kvf_status st = kvf_get(co.cache, &go, &res, err, sizeof err);
    kvf_report_sources(&res, prog);
    if (st == KVF_OK && snap && (rc = check_listed(snap, &res)) != 0)
        goto out;
    if (st != KVF_OK) {
        rc = kvf_exit_code(st, res.vst);
        if (st == KVF_ERR_VERIFY)
            fprintf(stderr, "%s: verification failed (%s): %s\n", prog, kvb_status_str(res.vst), err);
        else if (st == KVF_ERR_NET && res.http.bytes + res.reused > 0)
            fprintf(stderr, "%s: %s (partial download kept; run again to resume)\n", prog, err);
        else
            fprintf(stderr, "%s: %s\n", prog, err);
        if (st == KVF_ERR_DENIED)
            kvf_token_hint(&go, &tok, co.now ? co.now : (int64_t)time(NULL), prog);
        goto out;
    }
    if (out_path && copy_out(res.path, out_path, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", prog, err);
        rc = 2;
        goto out;
    }
    if (res.stale)
        fprintf(stderr, "%s: warning: could not ask whether %s changed (%s); using the copy it "
                        "served last, verified\n", prog, go.url, res.stale_why);
    if (res.decoded_note[0])
        fprintf(stderr, "%s: warning: no decoded copy (%s); loads read the blob itself\n", prog, res.decoded_note);
    if (json) {
        print_json(&res, out_path);
    } else {
        printf("%s\n", out_path ? out_path : res.path);
        if (!co.quiet) {
            char id[65], kid[17];
            const kvb_manifest *m = res.manifest;
            fprintf(stderr, "verified blob %s: %s, %u tokens, model %s, signer %s; %s in %.3f s\n",
                    kvc_hex(res.id, 32, id), m ? m->doc_title : "?", m ? m->n_tokens : 0,
                    m ? m->model_arch : "?", kvc_hex(res.header.key_id, KVC_KEYID_LEN, kid),
                    !res.from_cache ? "downloaded"
                    : res.revalidated ? "from the local cache (the server says it is unchanged)"
                    : res.stale ? "from the local cache (stale)"
                    : "from the local cache (no network)",
                    res.seconds);
            if (res.reused)
                fprintf(stderr, "resumed: %llu bytes were already on disk\n", (unsigned long long)res.reused);
            if (res.decoded_s > 0)
                fprintf(stderr, "decoded copy %s written and verified in %.3f s\n", res.decoded, res.decoded_s);
        }
    }
out:
    kvc_wipe(&tok, sizeof tok);
    kvf_snapshot_free(snap);
    kvf_get_result_clear(&res);
    kvf_common_close(&co);
    return rc;
}
