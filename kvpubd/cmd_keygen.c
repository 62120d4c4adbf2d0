/* cmd_keygen.c: `kvpubd keygen`: create an Ed25519 publisher key pair (PREFIX.key 0600,
 * PREFIX.pub 0644) and print its key id. */
#include "kvpubd/kvpubd.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/base.h"
#include "crypto/kvcrypto.h"

static void keygen_usage(FILE *f)
{
    fputs("usage: kvpubd keygen -o PREFIX [--json]\n"
          "\n"
          "Creates an Ed25519 publisher key pair: PREFIX.key (private, PKCS#8 PEM, mode 0600)\n"
          "and PREFIX.pub (public, SubjectPublicKeyInfo PEM, mode 0644). Existing files are\n"
          "never overwritten. Prints the key id (16 hex digits: the first 8 bytes of SHA-256\n"
          "of the raw public key) on stdout.\n"
          "\n"
          "  -o, --out PREFIX   path prefix of the two files (required)\n"
          "      --json         print {\"key_id\":...,\"private\":...,\"public\":...} instead\n"
          "  -h, --help         this help\n"
          "\n"
          "exit status: 0 created, 1 refused (a file exists), 2 usage or I/O error\n",
          f);
}

/* Prints the result as one JSON object; returns 0 or -1 when out of memory. */
static int print_json(const char *key_id, const char *prefix)
{
    size_t n = strlen(prefix) + 5;
    char *priv = malloc(n), *pub = malloc(n);
    json_t *o = NULL;
    char *s = NULL;
    int rc = -1;
    if (priv && pub) {
        snprintf(priv, n, "%s.key", prefix);
        snprintf(pub, n, "%s.pub", prefix);
        o = json_pack("{s:s, s:s, s:s}", "key_id", key_id, "private", priv, "public", pub);
    }
    if (o)
        s = json_dumps(o, JSON_COMPACT);
    if (s && printf("%s\n", s) > 0)
        rc = 0;
    json_decref(o);
    BASE_FREE_ALL(s, priv, pub);
    return rc;
}

int kvpubd_keygen_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, NULL, 'o'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    base_opts op = {.prog = "kvpubd keygen", .usage_fn = keygen_usage, .shortopts = "+o:h", .longopts = opts,
                    .hint = "kvpubd keygen --help"};
    const char *prefix = NULL;
    int json = 0, c;
    while ((c = base_opts_next(&op, argc, argv)) > 0) {
        switch (c) {
        case 'o': prefix = optarg; break;
        case 'j': json = 1; break;
        }
    }
    if (c < 0)
        return op.rc;
    if (base_opts_no_operands(&op, argc, argv, 1))
        return 2;
    if (!prefix || !*prefix) {
        fprintf(stderr, "kvpubd keygen: missing -o PREFIX (where to write PREFIX.key and PREFIX.pub)\n");
        return 2;
    }

    kvc_key *k = kvc_key_generate();
    if (!k) {
        fprintf(stderr, "kvpubd keygen: could not generate an Ed25519 key (OpenSSL failure)\n");
        return 2;
    }
    char err[512] = "";
    kvc_status st = kvc_key_write_pair(k, prefix, err, sizeof err);
    if (st != KVC_OK) {
        kvc_key_free(k);
        fprintf(stderr, "kvpubd keygen: %s\n", err);
        return st == KVC_ERR_PERM ? 1 : 2;
    }
    uint8_t id[KVC_KEYID_LEN];
    char hex[2 * KVC_KEYID_LEN + 1];
    kvc_key_id(k, id);
    kvc_key_free(k);
    kvc_hex(id, sizeof id, hex);
    int out_ok = json ? print_json(hex, prefix) == 0 : printf("%s\n", hex) > 0;
    if (!out_ok || fflush(stdout) != 0) {
        fprintf(stderr, "kvpubd keygen: keys written, but could not print the key id\n");
        return 2;
    }
    return 0;
}
