/* cmd_buy.c: `kvfetch buy`: buy a blob from a kvpubd marketplace (POST /v1/purchases) and keep
 * the token in the user's token file, for `kvfetch get` to send to that origin only; and the
 * part of `kvfetch get` that picks a stored token and explains a refusal. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "fetch/fetch.h"
#include "kvfetch/kvfetch.h"
#include "kvfetch/opts.h"

static const char usage_buy[] =
    "usage: kvfetch buy ID --server URL [--buyer NAME] [--cacert FILE] [--json]\n"
    "Buys blob ID (64 hex digits) from the kvpubd marketplace at URL (POST /v1/purchases) and\n"
    "keeps the token in $XDG_CONFIG_HOME/kvpub/tokens.json (default ~/.config/kvpub/tokens.json;\n"
    "directory 0700, file 0600, replaced atomically), keyed by the server's origin and the blob\n"
    "id. `kvfetch get ID --server URL` then sends it to that origin, and to no other. The token\n"
    "itself is never printed. A token file that others may read is refused.\n"
    "  --server URL      the kvpubd API base, e.g. https://shop.example:8443\n"
    "  --buyer NAME      free text recorded with the purchase (at most 200 bytes)\n"
    "  --cacert FILE     CA bundle for the server's certificate (default: the system's)\n"
    "  --json            the purchase as JSON on stdout (without the token)\n"
    "  --now UNIX        judge stored tokens' expiry at this time (tests)\n"
    "Exit codes: 0 bought and stored; 1 the server refused the sale (unknown blob, expired,\n"
    "revoked); 2 usage, I/O, network or another HTTP error (429: too many purchases, wait and\n"
    "retry), or a token file that is not private.\n";

/* The one line an error answer {"error": code, "detail": text} carries, into out. */
static void error_line(const char *body, long code, char *out, size_t cap)
{
    json_t *j = json_loads(body, 0, NULL);
    const char *e = json_string_value(json_object_get(j, "error"));
    const char *d = json_string_value(json_object_get(j, "detail"));
    snprintf(out, cap, "HTTP %ld%s%s%s%s", code, e ? " " : "", e ? e : "", d ? ": " : "", d ? d : "");
    json_decref(j);
}

/* Checks a 201 answer and fills rec from it (origin and blob already set). -1 when malformed. */
static int parse_purchase(const char *body, kvf_token_rec *rec, json_int_t *downloads, const char **expires,
                          json_t **doc)
{
    *doc = json_loads(body, JSON_REJECT_DUPLICATES, NULL);
    const char *tok = json_string_value(json_object_get(*doc, "token"));
    const char *blob = json_string_value(json_object_get(*doc, "blob"));
    json_t *exp = json_object_get(*doc, "expires_unix"), *pur = json_object_get(*doc, "purchase");
    uint8_t id[32];
    if (!tok || strlen(tok) != 64 || strspn(tok, "0123456789abcdef") != 64 || !blob || strlen(blob) != 64 ||
        kvc_unhex(blob, id, 32) != KVC_OK || memcmp(id, rec->blob, 32) != 0 || !json_is_integer(exp))
        return -1;
    snprintf(rec->token, sizeof rec->token, "%s", tok);
    rec->expires = json_integer_value(exp);
    rec->purchase = json_is_integer(pur) ? json_integer_value(pur) : 0;
    *downloads = json_integer_value(json_object_get(*doc, "downloads"));
    *expires = json_string_value(json_object_get(*doc, "expires"));
    return 0;
}

int kvfetch_buy_main(int argc, char **argv)
{
    const char *prog = "kvfetch buy";
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'}, {"buyer", required_argument, NULL, 'b'},
        {"cacert", required_argument, NULL, 'c'}, {"json", no_argument, NULL, 'j'},
        {"now", required_argument, NULL, 'n'},    {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *server = NULL, *buyer = NULL;
    kvf_http_opts http = {0};
    int json = 0, c;
    long now = 0;
    base_opts op = {.prog = prog, .usage = usage_buy, .shortopts = "h", .longopts = longopts};
    while ((c = base_opts_next(&op, argc, argv)) > 0) {
        switch (c) {
        case 's': server = optarg; break;
        case 'b': buyer = optarg; break;
        case 'c': http.cacert = optarg; break;
        case 'j': json = 1; break;
        case 'n':
            if (kvf_parse_long(optarg, 1, 0x7fffffffffffL, &now) != 0) {
                fprintf(stderr, "%s: --now '%s' is not unix seconds\n", prog, optarg);
                return 2;
            }
            break;
        }
    }
    if (c < 0)
        return op.rc;
    kvf_token_rec rec = {0};
    if (optind != argc - 1 || !server) {
        fprintf(stderr, "%s: give one blob ID and --server URL (try --help)\n", prog);
        return 2;
    }
    const char *id = argv[optind];
    if (strlen(id) != 64 || kvc_unhex(id, rec.blob, 32) != KVC_OK) {
        fprintf(stderr, "%s: '%s' is not a blob id (64 hex digits)\n", prog, id);
        return 2;
    }
    if (buyer && strlen(buyer) > 200) {
        fprintf(stderr, "%s: --buyer is at most 200 bytes\n", prog);
        return 2;
    }
    char url[4200], path[4200], err[1024], idhex[65];
    size_t n = strlen(server);
    while (n && server[n - 1] == '/')
        n--;
    if (kvf_url_origin(server, rec.origin, sizeof rec.origin) != 0 || !kvf_is_url(server) ||
        snprintf(url, sizeof url, "%.*s/v1/purchases", (int)n, server) >= (int)sizeof url) {
        fprintf(stderr, "%s: --server '%s' is not an https://host[:port] URL\n", prog, server);
        return 2;
    }
    if (kvf_tokens_default_path(path, sizeof path, err, sizeof err) != KVF_OK) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return 2;
    }
    /* refuse a token file that is not private before buying anything */
    kvf_token_rec old;
    int found;
    if (kvf_tokens_find(path, server, rec.blob, &old, &found, err, sizeof err) != KVF_OK) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return 2;
    }
    kvc_wipe(&old, sizeof old);
    json_t *req = json_pack("{s:s}", "blob", kvc_hex(rec.blob, 32, idhex));
    if (req && buyer)
        json_object_set_new(req, "buyer", json_string(buyer));
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL, *resp = NULL;
    json_decref(req);
    long code = 0;
    kvf_status st = body ? kvf_http_request(&http, "POST", url, body, 64 * 1024, &resp, NULL, &code, err, sizeof err)
                         : kvf_fail(err, sizeof err, KVF_ERR_NOMEM, "out of memory");
    free(body);
    if (st != KVF_OK) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return 2;
    }
    json_t *doc = NULL;
    json_int_t downloads = 0;
    const char *expires = NULL;
    int rc = 0;
    if (code != 201) {
        error_line(resp, code, err, sizeof err);
        fprintf(stderr, "%s: %s refused the purchase: %s\n", prog, rec.origin, err);
        rc = code == 404 || code == 410 ? 1 : 2;
    } else if (parse_purchase(resp, &rec, &downloads, &expires, &doc) != 0) {
        fprintf(stderr, "%s: %s answered 201 without a token for blob %s\n", prog, rec.origin, id);
        rc = 2;
    } else if (kvf_tokens_put(path, &rec, now ? now : (int64_t)time(NULL), err, sizeof err) != KVF_OK) {
        fprintf(stderr, "%s: bought, but the token could not be stored: %s\n", prog, err);
        rc = 2;
    } else if (json) {
        json_t *o = json_pack("{s:s, s:s, s:I, s:s?, s:I, s:I}", "blob", idhex, "origin", rec.origin, "purchase",
                              (json_int_t)rec.purchase, "expires", expires, "expires_unix", (json_int_t)rec.expires,
                              "downloads", downloads);
        /* apart: json_pack refuses the whole object for one string that is not UTF-8, and a
         * path need not be (the key is then left out) */
        if (o)
            json_object_set_new(o, "token_file", json_string(path));
        char *s = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        if (s)
            printf("%s\n", s);
        free(s);
        json_decref(o);
    } else {
        printf("bought blob %s from %s: purchase %lld, %lld downloads until %s; token kept in %s\n", idhex, rec.origin,
               (long long)rec.purchase, (long long)downloads, expires ? expires : "?", path);
    }
    if (resp)
        kvc_wipe(resp, strlen(resp));
    free(resp);
    json_decref(doc);
    kvc_wipe(&rec, sizeof rec);
    return rc;
}

/* Where get will send its request: the server, or the URL given; the blob id it names. */
static int get_target(const kvf_get_opts *go, uint8_t id[32])
{
    if (go->blob_id)
        return strlen(go->blob_id) == 64 && kvc_unhex(go->blob_id, id, 32) == KVC_OK;
    return go->url && kvf_url_blob_id(go->url, id);
}

int kvf_stored_token(kvf_get_opts *go, kvf_token_rec *rec, const char *prog)
{
    uint8_t id[32];
    char path[4200], err[1024];
    int found = 0;
    const char *where = go->server ? go->server : go->url;
    memset(rec, 0, sizeof *rec);
    if (go->http.token || !where || !get_target(go, id))
        return 0;
    if (kvf_tokens_default_path(path, sizeof path, err, sizeof err) != KVF_OK)
        return 0; /* no config directory: nothing was ever bought here */
    if (kvf_tokens_find(path, where, id, rec, &found, err, sizeof err) != KVF_OK) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return 2;
    }
    if (!found)
        return 0;
    /* sent only to the origin that sold it, whatever the URL names after a redirect */
    go->http.token = rec->token;
    go->http.token_origin = rec->origin;
    return 0;
}

void kvf_token_hint(const kvf_get_opts *go, const kvf_token_rec *rec, int64_t now, const char *prog)
{
    char id[65] = "ID";
    uint8_t b[32];
    const char *server = go->server ? go->server : rec->origin[0] ? rec->origin : "URL";
    if (get_target(go, b))
        kvc_hex(b, 32, id);
    if (!rec->token[0] && go->http.token)
        return; /* a token the user gave: they know where it came from */
    if (!rec->token[0])
        fprintf(stderr, "%s: no stored token for this blob from this server: buy one with `kvfetch buy %s --server %s`\n",
                prog, id, server);
    else if (rec->expires <= now)
        fprintf(stderr, "%s: the stored token (purchase %lld) expired %lld s ago: buy a new one with "
                        "`kvfetch buy %s --server %s`\n", prog, (long long)rec->purchase,
                (long long)(now - rec->expires), id, server);
    else
        fprintf(stderr, "%s: the server refused the stored token (purchase %lld: unknown to it, or its downloads "
                        "are used up): buy a new one with `kvfetch buy %s --server %s`\n", prog,
                (long long)rec->purchase, id, server);
}
