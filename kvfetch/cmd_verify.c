/* kvfetch/cmd_verify.c: `kvfetch verify FILE --trust DIR [--json]`: exit 0 only when the signature
 * is good, the signer trusted and not revoked, the blob not expired and every hash matches. */
#include "format/kvblob.h"
#include "kvfetch/kvfetch.h"
#include "kvfetch/opts.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fputs("usage: kvfetch verify FILE --trust DIR [--json] [--hash-only] [--threads N]\n"
          "Checks a kvblob completely: Ed25519 signature over header+manifest, signer in the trust\n"
          "directory DIR and not revoked, not expired, token-id and every chunk SHA-256, and that\n"
          "every chunk decodes, to the signed decoded digests where the manifest has them\n"
          "(f16-zstd: raw_sha256); skip decoding with --hash-only. FILE '-' reads stdin.\n"
          "  --json       print the result as one JSON object on stdout\n"
          "  --threads N  decode threads (default 0 = all cores)\n"
          "Exit codes (spec/kvblob.md): 0 verified, 1 verification failed (signature, untrusted,\n"
          "revoked, expired, hash mismatch), 2 usage or I/O, 3 malformed/truncated/unsupported blob.\n",
          f);
}

int kvf_blob_args_parse(int argc, char **argv, int verify, void (*usage_fn)(FILE *f), kvf_blob_args *a)
{
    const char *prog = verify ? "kvfetch verify" : "kvfetch inspect";
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage_fn(stdout);
            return 0;
        } else if (strcmp(argv[i], "--json") == 0) {
            a->as_json = 1;
        } else if (verify && strcmp(argv[i], "--hash-only") == 0) {
            a->hash_only = 1;
        } else if (strcmp(argv[i], "--trust") == 0 && i + 1 < argc) {
            a->trust_dir = argv[++i];
        } else if (verify && strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            long v;
            if (kvf_parse_long(argv[++i], 0, 64, &v) != 0) {
                fprintf(stderr, "%s: --threads wants 0..64, got '%s'\n", prog, argv[i]);
                return 2;
            }
            a->threads = (int)v;
        } else if ((argv[i][0] != '-' || (verify && strcmp(argv[i], "-") == 0)) && !a->file) {
            a->file = argv[i];
        } else {
            fprintf(stderr, "%s: unexpected argument '%s' (try --help)\n", prog, argv[i]);
            return 2;
        }
    }
    if (!a->file || (verify && !a->trust_dir)) {
        fprintf(stderr, "%s: %s required (try --help)\n", prog, verify ? "FILE and --trust DIR are" : "FILE is");
        return 2;
    }
    return -1;
}

int kvfetch_verify_main(int argc, char **argv)
{
    kvf_blob_args args;
    int rc = kvf_blob_args_parse(argc, argv, 1, usage, &args);
    if (rc >= 0)
        return rc;
    const char *file = args.file;
    char err[256];
    kvc_trust *t = NULL;
    kvb_manifest *m = NULL;
    kvb_header h;
    memset(&h, 0, sizeof h);
    kvb_status st = KVB_OK;
    const int trust_ok = kvc_trust_open(args.trust_dir, &t, err, sizeof err) == KVC_OK;
    if (!trust_ok) {
        st = KVB_ERR_USAGE; /* reported like any other failure: --json still gets its object */
    } else {
        kvb_read_opts o;
        memset(&o, 0, sizeof o);
        o.trust = t;
        o.no_decode = args.hash_only;
        o.check_raw = 1; /* a decoded chunk against its signed decoded digest, where there is one */
        o.n_threads = args.threads;
        st = kvb_read_file(file, &o, &m, &h, err, sizeof err);
        kvc_trust_free(t);
    }
    char kid[2 * KVC_KEYID_LEN + 1] = "";
    if (m)
        kvc_hex(h.key_id, KVC_KEYID_LEN, kid);
    if (args.as_json) {
        json_t *j = json_object();
        json_object_set_new(j, "file", json_string(file));
        json_object_set_new(j, "ok", json_boolean(st == KVB_OK));
        json_object_set_new(j, "status", json_string(kvb_status_str(st)));
        json_object_set_new(j, "error", st ? json_string(err) : json_null());
        json_object_set_new(j, "exit_code", json_integer(kvb_exit_code(st)));
        json_object_set_new(j, "key_id", m ? json_string(kid) : json_null());
        json_object_set_new(j, "chunks", json_integer(m ? m->n_chunks : 0));
        json_object_set_new(j, "tokens", json_integer(m ? m->n_tokens : 0));
        json_object_set_new(j, "codec", m ? json_string(kvb_codec_name(m->codec)) : json_null());
        json_object_set_new(j, "decoded", json_boolean(st == KVB_OK && !args.hash_only));
        char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (s)
            puts(s);
        free(s);
        json_decref(j);
    } else if (st == KVB_OK) {
        char exp[32] = "never";
        if (m->expires)
            kvb_time_format(m->expires, exp, sizeof exp);
        printf("OK %s: signed by trusted key id %s; %u tokens in %u chunks (%s) %s; expires %s\n", file, kid,
               m->n_tokens, m->n_chunks, kvb_codec_name(m->codec), args.hash_only ? "hash-checked" : "hash-checked and decoded",
               exp);
    }
    if (st && !trust_ok)
        fprintf(stderr, "kvfetch verify: %s\n", err);
    else if (st)
        fprintf(stderr, "kvfetch verify: %s: %s\n", file, err);
    kvb_manifest_free(m);
    return kvb_exit_code(st);
}
