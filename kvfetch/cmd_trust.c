/* cmd_trust.c: `kvfetch trust add`: adds a publisher's or repository's public key to a trust
 * directory only when the key fetched has the fingerprint the user got out of band: trust on
 * explicit confirmation, never on whatever a server says. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fetch/fetch.h"
#include "kvfetch/kvfetch.h"
#include "kvfetch/opts.h"

static const char usage_trust[] =
    "usage: kvfetch trust add URL|FILE --fingerprint KEYID --trust DIR [--cacert FILE]\n"
    "Reads a key document (a repository's /v1/keys, e.g. https://host/v1/keys, or a PEM public\n"
    "key file), finds the key whose id (the first 8 bytes of SHA-256 of the raw public key,\n"
    "computed here, never read from the document) is KEYID, and writes it to DIR/KEYID.pub.\n"
    "Get KEYID from the publisher through another channel than the document itself.\n"
    "Exit codes: 0 added (or already there); 1 no key with this fingerprint there; 2 usage,\n"
    "I/O, network or HTTP error.\n";

int kvfetch_trust_main(int argc, char **argv)
{
    enum { O_FP = 1, O_TRUST, O_CACERT };
    static const struct option longopts[] = {
        {"fingerprint", required_argument, NULL, O_FP}, {"trust", required_argument, NULL, O_TRUST},
        {"cacert", required_argument, NULL, O_CACERT}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    const char *prog = "kvfetch trust add";
    base_opts op = {.prog = prog, .usage = usage_trust, .shortopts = "h", .longopts = longopts, .first = 2};
    if (!base_opts_verb(&op, argc, argv, "add"))
        return op.rc;
    const char *fp = NULL, *dir = NULL;
    kvf_http_opts http = {0};
    int c;
    while ((c = base_opts_next(&op, argc, argv)) > 0) {
        switch (c) {
        case O_FP: fp = optarg; break;
        case O_TRUST: dir = optarg; break;
        case O_CACERT: http.cacert = optarg; break;
        }
    }
    if (c < 0)
        return op.rc;
    uint8_t id[KVC_KEYID_LEN];
    if (optind + 1 != argc || !fp || !dir || strlen(fp) != 16 || kvc_unhex(fp, id, sizeof id) != KVC_OK) {
        fprintf(stderr, "%s: give one URL or FILE, --fingerprint KEYID (16 hex digits) and --trust DIR\n", prog);
        return 2;
    }
    const char *where = argv[optind];
    char *doc = NULL, err[1024], path[4200], hex[17];
    size_t len = 0;
    long code = 200;
    kvf_status st = KVF_OK;
    if (kvf_is_url(where)) {
        st = kvf_http_request(&http, "GET", where, NULL, 1u << 20, &doc, &len, &code, err, sizeof err);
    } else {
        FILE *f = fopen(where, "rb");
        doc = f ? base_read_stream(f, 1u << 20, &len) : NULL;
        if (f)
            fclose(f);
        if (!doc)
            st = kvf_fail(err, sizeof err, KVF_ERR_IO, "cannot read %s (or it is over 1 MiB)", where);
    }
    if (st == KVF_OK && code != 200)
        st = kvf_fail(err, sizeof err, KVF_ERR_HTTP, "HTTP %ld from %s", code, where);
    kvc_key *k = NULL, *old = NULL;
    if (st == KVF_OK)
        st = kvf_keys_find(doc, len, id, &k, err, sizeof err);
    free(doc);
    snprintf(path, sizeof path, "%s/%s.pub", dir, kvc_hex(id, KVC_KEYID_LEN, hex));
    if (st == KVF_OK && mkdir(dir, 0755) != 0 && errno != EEXIST)
        st = kvf_fail(err, sizeof err, KVF_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
    uint8_t old_id[KVC_KEYID_LEN];
    int already = st == KVF_OK && kvc_key_load_public(path, &old, err, sizeof err) == KVC_OK;
    if (already) {
        kvc_key_id(old, old_id);
        already = memcmp(old_id, id, sizeof id) == 0; /* a file of that name with another key is replaced */
    }
    kvc_key_free(old);
    if (st == KVF_OK && !already && kvc_key_write_public(k, path, err, sizeof err) != KVC_OK)
        st = KVF_ERR_IO;
    kvc_key_free(k);
    if (st != KVF_OK) {
        fprintf(stderr, "%s: %s: %s\n", prog, where, err);
        return st == KVF_ERR_REFUSED ? 1 : 2;
    }
    printf("%s\n", path);
    fprintf(stderr, "key %s %s %s\n", hex, already ? "was already in" : "added to", dir);
    return 0;
}
