/* cmd_search.c: `kvfetch search`: a kvpubd catalog query (GET /v1/catalog) with its filters, the
 * model filter given as a GGUF file (its fingerprint is what the catalog indexes), printed as a
 * table or passed through as JSON. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "engine/engine.h"
#include "fetch/fetch.h"
#include "kvfetch/kvfetch.h"
#include "kvfetch/opts.h"

static const char usage_search[] =
    "usage: kvfetch search --server URL [filters] [--cacert FILE] [--json]\n"
    "Lists a kvpubd catalog (GET /v1/catalog), newest first.\n"
    "  --server URL        the kvpubd API base, e.g. https://127.0.0.1:8443\n"
    "  --model FILE        listings for this GGUF model (its fingerprint; hashed once, cached)\n"
    "  --model-fp HEX      the same, by fingerprint\n"
    "  --doc SHA256        listings of this document\n"
    "  --q TEXT            the title contains TEXT\n"
    "  --publisher KEYID   one publisher's listings (16 hex digits)\n"
    "  --context HASH|none listings prefilled after this declared context, or after none\n"
    "  --limit N, --offset N  a page (default 100 from 0)\n"
    "  --cacert FILE       CA bundle for the server's certificate (default: the system's)\n"
    "  --json              the server's JSON page on stdout\n"
    "Exit codes: 0 ok; 2 usage, network or HTTP error.\n";

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

/* The fingerprint of the GGUF at path, in hex. Returns 0, or 2 after printing why not. */
static int model_fp(const char *path, char hex[65])
{
    char err[512], dir[PATH_MAX];
    eng_model *m = NULL;
    uint8_t fp[32];
    if (eng_model_load(path, &m, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "kvfetch search: %s: %s\n", path, err);
        return 2;
    }
    eng_model_set_fingerprint_cache(m, base_cache_dir(NULL, dir, sizeof dir));
    eng_status st = eng_model_fingerprint(m, fp, err, sizeof err);
    eng_model_free(m);
    if (st != ENG_OK) {
        fprintf(stderr, "kvfetch search: fingerprinting %s: %s\n", path, err);
        return 2;
    }
    kvc_hex(fp, 32, hex);
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

int kvfetch_search_main(int argc, char **argv)
{
    enum { O_SERVER = 1, O_MODEL, O_MODEL_FP, O_DOC, O_Q, O_PUB, O_CTX, O_LIMIT, O_OFFSET, O_CACERT, O_JSON };
    static const struct option longopts[] = {
        {"server", required_argument, NULL, O_SERVER}, {"model", required_argument, NULL, O_MODEL},
        {"model-fp", required_argument, NULL, O_MODEL_FP}, {"doc", required_argument, NULL, O_DOC},
        {"q", required_argument, NULL, O_Q}, {"publisher", required_argument, NULL, O_PUB},
        {"context", required_argument, NULL, O_CTX}, {"limit", required_argument, NULL, O_LIMIT},
        {"offset", required_argument, NULL, O_OFFSET}, {"cacert", required_argument, NULL, O_CACERT},
        {"json", no_argument, NULL, O_JSON}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    const char *server = NULL, *model = NULL, *vals[O_JSON + 1] = {0};
    kvf_http_opts http = {0};
    int json = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_SERVER: server = optarg; break;
        case O_MODEL: model = optarg; break;
        case O_CACERT: http.cacert = optarg; break;
        case O_JSON: json = 1; break;
        case 'h': fputs(usage_search, stdout); return 0;
        case O_MODEL_FP: case O_DOC: case O_Q: case O_PUB: case O_CTX: case O_LIMIT: case O_OFFSET:
            vals[c] = optarg;
            break;
        default:
            fprintf(stderr, "kvfetch search: unknown or incomplete option '%s' (try --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (!server || optind < argc || (model && vals[O_MODEL_FP])) {
        fprintf(stderr, "kvfetch search: give --server URL (and at most one of --model, --model-fp; try --help)\n");
        return 2;
    }
    char fphex[65];
    if (model) {
        int rc = model_fp(model, fphex);
        if (rc)
            return rc;
        vals[O_MODEL_FP] = fphex;
    }
    static const char *const names[O_JSON + 1] = {[O_MODEL_FP] = "model", [O_DOC] = "doc", [O_Q] = "q",
                                                  [O_PUB] = "publisher", [O_CTX] = "context", [O_LIMIT] = "limit",
                                                  [O_OFFSET] = "offset"};
    char query[2048] = "", url[4096];
    for (int i = 0; i <= O_JSON; i++)
        if (vals[i] && add_param(query, sizeof query, names[i], vals[i]) != 0) {
            fprintf(stderr, "kvfetch search: the filters are too long\n");
            return 2;
        }
    size_t sl = strlen(server);
    while (sl && server[sl - 1] == '/')
        sl--;
    if (snprintf(url, sizeof url, "%.*s/v1/catalog%s%s", (int)sl, server, *query ? "?" : "", query) >= (int)sizeof url) {
        fprintf(stderr, "kvfetch search: URL too long\n");
        return 2;
    }
    char *body = NULL, err[1024];
    long code = 0;
    if (kvf_http_request(&http, "GET", url, NULL, 16u << 20, &body, NULL, &code, err, sizeof err) != KVF_OK) {
        fprintf(stderr, "kvfetch search: %s\n", err);
        return 2;
    }
    json_error_t je;
    json_t *page = json_loads(body, 0, &je);
    int rc = 0;
    if (code != 200) {
        json_t *msg = page ? json_object_get(page, "detail") : NULL;
        fprintf(stderr, "kvfetch search: HTTP %ld from %s%s%s\n", code, url, msg ? ": " : "",
                msg ? json_string_value(msg) : "");
        rc = 2;
    } else if (!page || !json_is_array(json_object_get(page, "items"))) {
        fprintf(stderr, "kvfetch search: %s did not answer a catalog page\n", url);
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
