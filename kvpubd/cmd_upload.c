/* cmd_upload.c: `kvpubd upload`: a publisher sends a signed blob to a kvpubd marketplace
 * (PUT /v1/blobs with the upload credential that `kvpubd publisher add` printed), and learns in
 * one line, with a documented exit code, whether it is listed and why not. */
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "crypto/kvcrypto.h"
#include "fetch/fetch.h"
#include "kvpubd/kvpubd.h"

static const char usage_upload[] =
    "usage: kvpubd upload BLOB --server URL [--credential-file FILE] [--price N] [--cacert FILE] [--json]\n"
    "Uploads the signed blob file BLOB to the kvpubd at URL (PUT /v1/blobs, spec/http-api.md),\n"
    "which verifies it against your registered key and lists it. The upload credential (from\n"
    "`kvpubd publisher add`) is read from --credential-file FILE (first line), else from\n"
    "--credential C (visible to other users in the process list), else from $KVPUB_CREDENTIAL;\n"
    "it is sent to URL's origin only, never printed and never sent across a redirect.\n"
    "  --server URL           the kvpubd API base, e.g. https://shop.example:8443\n"
    "  --price N              the listing's price in the smallest currency unit (default 0)\n"
    "  --cacert FILE          CA bundle for the server's certificate (default: the system's)\n"
    "  --json                 the server's answer as JSON on stdout\n"
    "Prints the blob id and whether it was published or already listed.\n"
    "Exit codes: 0 published, or already listed by you; 1 the blob was refused (422 invalid:\n"
    "bad signature, hash, truncated, expired; 403 foreign_key: signed by another key than the\n"
    "credential's; 409 conflict; 410); 2 usage, I/O, network or another HTTP error; 3 the blob is\n"
    "larger than the server accepts (413); 4 the credential was refused (401 missing or wrong,\n"
    "403 key_revoked).\n";

enum { UP_OK = 0, UP_REFUSED = 1, UP_USAGE = 2, UP_TOO_LARGE = 3, UP_DENIED = 4 };

/* The exit code for an answer: status and the API's stable error code. */
static int exit_for(long code, const char *error)
{
    if (code == 200 || code == 201)
        return UP_OK;
    if (code == 401 || (code == 403 && error && strcmp(error, "key_revoked") == 0))
        return UP_DENIED;
    if (code == 413)
        return UP_TOO_LARGE;
    if (code == 403 || code == 409 || code == 410 || code == 422)
        return UP_REFUSED;
    return UP_USAGE;
}

/* Reads the first line of file into buf (cap bytes). -1 (with err) when missing or empty. */
static int read_credential(const char *file, char *buf, size_t cap, char *err, size_t errlen)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open --credential-file %s", file);
        return -1;
    }
    int ok = fgets(buf, (int)cap, f) != NULL;
    fclose(f);
    buf[ok ? strcspn(buf, "\r\n") : 0] = 0;
    if (!*buf) {
        snprintf(err, errlen, "--credential-file %s holds no credential", file);
        return -1;
    }
    return 0;
}

int kvpubd_upload_main(int argc, char **argv)
{
    const char *prog = "kvpubd upload";
    static const struct option longopts[] = {
        {"server", required_argument, NULL, 's'},     {"credential", required_argument, NULL, 'c'},
        {"credential-file", required_argument, NULL, 'f'}, {"price", required_argument, NULL, 'p'},
        {"cacert", required_argument, NULL, 'a'},     {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},             {NULL, 0, NULL, 0},
    };
    const char *server = NULL, *cred_arg = NULL, *cred_file = NULL, *price = NULL;
    kvf_http_opts http = {0};
    int json = 0, c;
    base_opts op = {.prog = prog, .usage = usage_upload, .shortopts = "h", .longopts = longopts};
    while ((c = base_opts_next(&op, argc, argv)) > 0) {
        switch (c) {
        case 's': server = optarg; break;
        case 'c': cred_arg = optarg; break;
        case 'f': cred_file = optarg; break;
        case 'p': price = optarg; break;
        case 'a': http.cacert = optarg; break;
        case 'j': json = 1; break;
        }
    }
    if (c < 0)
        return op.rc; /* UP_OK after --help, UP_USAGE */
    if (optind != argc - 1 || !server) {
        fprintf(stderr, "%s: give one blob file and --server URL (try --help)\n", prog);
        return UP_USAGE;
    }
    const char *blob = argv[optind];
    uint64_t p = 0;
    if (price && (base_parse_u64(price, &p) != 0 || p > INT64_MAX)) {
        fprintf(stderr, "%s: --price '%s' is not a whole number in 0..2^63-1\n", prog, price);
        return UP_USAGE;
    }
    char cred[512] = "", err[1024], url[4200];
    const char *env = getenv("KVPUB_CREDENTIAL");
    if (cred_file) {
        if (read_credential(cred_file, cred, sizeof cred, err, sizeof err) != 0) {
            fprintf(stderr, "%s: %s\n", prog, err);
            return UP_USAGE;
        }
    } else {
        snprintf(cred, sizeof cred, "%s", cred_arg ? cred_arg : env ? env : "");
    }
    if (!*cred) {
        fprintf(stderr, "%s: no upload credential: give --credential-file FILE or set $KVPUB_CREDENTIAL "
                        "(kvpubd publisher add prints one)\n", prog);
        return UP_USAGE;
    }
    size_t n = strlen(server);
    while (n && server[n - 1] == '/')
        n--;
    char query[40] = "";
    if (price)
        snprintf(query, sizeof query, "?price=%llu", (unsigned long long)p);
    if (!kvf_is_url(server) || kvf_url_origin(server, (char[512]){0}, 512) != 0 ||
        snprintf(url, sizeof url, "%.*s/v1/blobs%s", (int)n, server, query) >= (int)sizeof url) {
        fprintf(stderr, "%s: --server '%s' is not an https://host[:port] URL\n", prog, server);
        kvc_wipe(cred, sizeof cred);
        return UP_USAGE;
    }
    char *resp = NULL;
    long code = 0;
    kvf_status st = kvf_http_upload(&http, url, blob, cred, &resp, &code, err, sizeof err);
    kvc_wipe(cred, sizeof cred);
    if (st != KVF_OK) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return UP_USAGE;
    }
    json_t *j = json_loads(resp, 0, NULL);
    const char *error = json_string_value(json_object_get(j, "error"));
    const char *detail = json_string_value(json_object_get(j, "detail"));
    const char *id = json_string_value(json_object_get(j, "id"));
    const char *status = json_string_value(json_object_get(j, "status"));
    int rc = exit_for(code, error);
    if (json && rc == UP_OK)
        printf("%s\n", resp);
    else if (rc == UP_OK)
        printf("%s %s\n", id ? id : "?", status ? status : "?");
    else
        fprintf(stderr, "%s: %s: HTTP %ld %s%s%s\n", prog, blob, code, error ? error : "(no error code)",
                detail ? ": " : "", detail ? detail : "");
    json_decref(j);
    free(resp);
    return rc;
}
