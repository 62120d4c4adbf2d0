/* cmd_search.c: `kvfetch search`: a kvpubd catalog query (GET /v1/catalog) with its filters, or
 * the same filters over a verified, current signed snapshot (a repository or a static mirror,
 * spec/repository.md); the model filter may be a GGUF file (its fingerprint is what catalogs
 * index); printed as a table or as JSON. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "engine/engine.h"
#include "fetch/fetch.h"
#include "kvfetch/kvfetch.h"
#include "kvfetch/opts.h"

static const char usage_search[] =
    "usage: kvfetch search --server URL [filters] [--cacert FILE] [--json]\n"
    "       kvfetch search --snapshot URL|FILE --trust DIR [filters] [--cacert FILE] [--json]\n"
    "Lists a kvpubd catalog (GET /v1/catalog), newest first; or the listings of a signed\n"
    "snapshot, verified against the trust directory, refused when expired or older than one\n"
    "seen before (spec/repository.md).\n"
    "  --server URL        the kvpubd API base, e.g. https://127.0.0.1:8443\n"
    "  --snapshot WHERE    a repository (kvpubd or a static mirror: https://host[/prefix]), its\n"
    "                      /v1/snapshot URL, or a snapshot file\n"
    "  --trust DIR, --cache-dir DIR, --now UNIX, --mirror URL, --mirrors FILE  as for\n"
    "                      kvfetch get (with --snapshot only)\n"
    "  --model FILE        listings for this GGUF model (its fingerprint; hashed once, cached)\n"
    "  --model-fp HEX      the same, by fingerprint\n"
    "  --doc SHA256        listings of this document\n"
    "  --q TEXT            the title contains TEXT\n"
    "  --publisher KEYID   one publisher's listings (16 hex digits)\n"
    "  --context HASH|none listings prefilled after this declared context, or after none\n"
    "  --limit N, --offset N  a page (default 100 from 0)\n"
    "  --cacert FILE       CA bundle for the server's certificate (default: the system's)\n"
    "  --json              the server's JSON page on stdout\n"
    "Exit codes: 0 ok; 1 snapshot refused (bad signature, untrusted, revoked or retired\n"
    "signer, malformed); 2 usage, network or HTTP error; 5 snapshot older than one seen before\n"
    "(rollback); 6 snapshot expired.\n";

/* Appends "&name=value" to q, the value percent-encoded (RFC 3986 unreserved kept). */
static int add_param(char *q, size_t cap, const char *name, const char *value)
{
    size_t n = strlen(q);
    int w = snprintf(q + n, cap - n, "%s%s=", n ? "&" : "", name);
    if (w < 0 || (size_t)w >= cap - n)
        return -1;
    n += (size_t)w;
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if (n + 4 > cap)
            return -1;
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("-._~", *p))
            q[n++] = (char)*p;
        else
            n += (size_t)snprintf(q + n, cap - n, "%%%02X", *p);
    }
    q[n] = 0;
    return 0;
}

/* The string at o.k1[.k2], or "?" when absent. */
static const char *str(json_t *o, const char *k1, const char *k2)
{
    json_t *v = json_object_get(o, k1);
    const char *t = json_string_value(k2 ? json_object_get(v, k2) : v);
    return t ? t : "?";
}

static void print_table(json_t *page)
{
    json_t *items = json_object_get(page, "items");
    size_t i;
    json_t *it;
    printf("%-16s %-10s %7s %-9s %8s %-16s %-8s %s\n", "id", "arch", "tokens", "codec", "price", "publisher", "context",
           "title");
    json_array_foreach(items, i, it) {
        json_t *ctx = json_object_get(it, "context");
        char cbuf[24] = "-";
        if (json_is_object(ctx))
            snprintf(cbuf, sizeof cbuf, "%lld tok", (long long)json_integer_value(json_object_get(ctx, "tokens")));
        printf("%-16.16s %-10.10s %7lld %-9.9s %8lld %-16s %-8s %s\n", str(it, "id", NULL), str(it, "model", "arch"),
               (long long)json_integer_value(json_object_get(it, "tokens")), str(it, "codec", NULL),
               (long long)json_integer_value(json_object_get(it, "price")), str(it, "publisher_key_id", NULL), cbuf,
               str(it, "document", "title"));
    }
    json_t *next = json_object_get(page, "next");
    printf("%zu of %lld listings%s\n", json_array_size(items), (long long)json_integer_value(json_object_get(page, "total")),
           json_is_integer(next) ? " (more: --offset)" : "");
}

enum { O_SERVER = 1, O_MODEL, O_MODEL_FP, O_DOC, O_Q, O_PUB, O_CTX, O_LIMIT, O_OFFSET, O_JSON, O_SNAPSHOT, O_END };

/* Whether listing it (a snapshot's blobs[] entry) passes the catalog filters in vals. */
static int matches(json_t *it, const char *const *vals)
{
    json_t *ctx = json_object_get(it, "context");
    const char *title = str(it, "document", "title"), *q = vals[O_Q], *c = vals[O_CTX];
    return (!vals[O_MODEL_FP] || !strcasecmp(vals[O_MODEL_FP], str(it, "model", "fingerprint"))) &&
           (!vals[O_DOC] || !strcasecmp(vals[O_DOC], str(it, "document", "sha256"))) &&
           (!vals[O_PUB] || !strcasecmp(vals[O_PUB], str(it, "publisher_key_id", NULL))) &&
           (!q || strcasestr(title, q)) &&
           (!c || (!strcmp(c, "none") ? json_is_null(ctx) : !strcasecmp(c, str(it, "context", "sha256"))));
}

/* The snapshot's current listings that pass the filters, as a catalog page (an expired listing
 * is left out, as the server's catalog leaves it out). Returns an exit code. */
static int search_snapshot(kvf_common *co, const char *where, const char *const *vals, int json)
{
    const char *prog = "kvfetch search";
    long limit = 100, offset = 0;
    if ((vals[O_LIMIT] && kvf_parse_long(vals[O_LIMIT], 1, 1000, &limit) != 0) ||
        (vals[O_OFFSET] && kvf_parse_long(vals[O_OFFSET], 0, 1000000000L, &offset) != 0)) {
        fprintf(stderr, "%s: --limit is 1..1000 and --offset 0..10^9\n", prog);
        return 2;
    }
    int rc = kvf_common_open(co, prog);
    kvf_snapshot *snap = NULL;
    if (rc == 0)
        rc = kvf_repo_open_any(co, where, prog, &snap, NULL, 0);
    if (rc != 0) {
        kvf_common_close(co);
        return rc;
    }
    size_t plen;
    const char *payload = kvf_snapshot_payload(snap, &plen);
    json_t *doc = json_loadb(payload, plen, 0, NULL), *items = json_array(), *it;
    size_t i, total = 0;
    json_array_foreach(json_object_get(doc, "blobs"), i, it) {
        const kvf_listing *l = kvf_snapshot_get(snap, i); /* the same listing, parsed */
        if (!matches(it, vals) || !l || !kvf_listing_current(l, co->now))
            continue;
        if (total >= (size_t)offset && total < (size_t)(offset + limit))
            json_array_append(items, it);
        total++;
    }
    size_t next = (size_t)offset + json_array_size(items);
    char kid[17];
    json_t *page = json_pack("{s:o, s:I, s:I, s:o, s:{s:I, s:s, s:O, s:O}}", "items", items, "total",
                             (json_int_t)total, "offset", (json_int_t)offset, "next",
                             next < total ? json_integer((json_int_t)next) : json_null(), "snapshot", "version",
                             (json_int_t)kvf_snapshot_version(snap), "key_id",
                             kvc_hex(kvf_snapshot_signer(snap), KVC_KEYID_LEN, kid), "issued",
                             json_object_get(doc, "issued"), "expires", json_object_get(doc, "expires"));
    if (!page) {
        fprintf(stderr, "%s: out of memory\n", prog);
        rc = 2;
    } else if (json) {
        char *text = json_dumps(page, JSON_COMPACT);
        printf("%s\n", text ? text : "{}");
        free(text);
    } else {
        print_table(page);
        if (!co->quiet)
            fprintf(stderr, "snapshot version %llu signed by %s, expires %s\n",
                    (unsigned long long)kvf_snapshot_version(snap), kid,
                    json_string_value(json_object_get(doc, "expires")));
    }
    json_decref(page);
    json_decref(doc);
    kvf_snapshot_free(snap);
    kvf_common_close(co);
    return rc;
}

int kvfetch_search_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        KVF_SHARED_LONGOPTS,
        {"server", required_argument, NULL, O_SERVER}, {"model", required_argument, NULL, O_MODEL},
        {"model-fp", required_argument, NULL, O_MODEL_FP}, {"doc", required_argument, NULL, O_DOC},
        {"q", required_argument, NULL, O_Q}, {"publisher", required_argument, NULL, O_PUB},
        {"context", required_argument, NULL, O_CTX}, {"limit", required_argument, NULL, O_LIMIT},
        {"offset", required_argument, NULL, O_OFFSET}, {"snapshot", required_argument, NULL, O_SNAPSHOT},
        {"json", no_argument, NULL, O_JSON}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    const char *prog = "kvfetch search";
    kvf_common co = {0};
    const char *server = NULL, *model = NULL, *snapshot = NULL, *vals[O_END] = {0};
    int json = 0, c;
    base_opts op = {.prog = prog, .usage = usage_search, .shortopts = "h", .longopts = longopts,
                    .more = kvf_common_hook, .more_ctx = &co};
    while ((c = base_opts_next(&op, argc, argv)) > 0) {
        switch (c) {
        case O_SERVER: server = optarg; break;
        case O_SNAPSHOT: snapshot = optarg; break;
        case O_MODEL: model = optarg; break;
        case O_JSON: json = 1; break;
        case O_MODEL_FP: case O_DOC: case O_Q: case O_PUB: case O_CTX: case O_LIMIT: case O_OFFSET:
            vals[c] = optarg;
            break;
        }
    }
    if (c < 0)
        return op.rc;
    if (!server == !snapshot || optind < argc || (model && vals[O_MODEL_FP])) {
        fprintf(stderr, "%s: give --server URL or --snapshot URL|FILE (and at most one of --model, --model-fp; "
                        "try --help)\n", prog);
        return 2;
    }
    /* a server's catalog is neither signed nor mirrored: options only a snapshot uses are
     * refused, not silently ignored */
    const char *only_snap = co.trust_dir ? "--trust" : co.now ? "--now" : co.cache_dir ? "--cache-dir"
                            : co.mirrors.n ? "--mirror" : co.mirrors_file ? "--mirrors" : NULL;
    if (server && only_snap) {
        fprintf(stderr, "%s: %s applies to --snapshot only (a server's catalog is not signed)\n", prog, only_snap);
        return 2;
    }
    char fphex[65];
    if (model) {
        int rc = kvf_model_fp_hex(model, fphex, prog);
        if (rc)
            return rc;
        vals[O_MODEL_FP] = fphex;
    }
    if (snapshot)
        return search_snapshot(&co, snapshot, vals, json);
    static const char *const names[O_END] = {[O_MODEL_FP] = "model", [O_DOC] = "doc", [O_Q] = "q",
                                             [O_PUB] = "publisher", [O_CTX] = "context", [O_LIMIT] = "limit",
                                             [O_OFFSET] = "offset"};
    char query[2048] = "", url[4096];
    for (int i = 0; i < O_END; i++)
        if (vals[i] && add_param(query, sizeof query, names[i], vals[i]) != 0) {
            fprintf(stderr, "%s: the filters are too long\n", prog);
            return 2;
        }
    size_t sl = strlen(server);
    while (sl && server[sl - 1] == '/')
        sl--;
    if (snprintf(url, sizeof url, "%.*s/v1/catalog%s%s", (int)sl, server, *query ? "?" : "", query) >= (int)sizeof url) {
        fprintf(stderr, "%s: URL too long\n", prog);
        return 2;
    }
    char *body = NULL, err[1024];
    long code = 0;
    if (kvf_http_request(&co.http, "GET", url, NULL, 16u << 20, &body, NULL, &code, err, sizeof err) != KVF_OK) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return 2;
    }
    json_error_t je;
    json_t *page = json_loads(body, 0, &je);
    int rc = 0;
    if (code != 200) {
        json_t *msg = page ? json_object_get(page, "detail") : NULL;
        fprintf(stderr, "%s: HTTP %ld from %s%s%s\n", prog, code, url, msg ? ": " : "",
                msg ? json_string_value(msg) : "");
        rc = 2;
    } else if (!page || !json_is_array(json_object_get(page, "items"))) {
        fprintf(stderr, "%s: %s did not answer a catalog page\n", prog, url);
        rc = 2;
    } else if (json) {
        printf("%s\n", body);
    } else {
        print_table(page);
    }
    json_decref(page);
    free(body);
    return rc;
}
