/* kvfetch/cmd_inspect.c: `kvfetch inspect FILE [--json] [--trust DIR]`: a summary of a blob read
 * from its header and manifest only (document, model, tokenizer, RoPE, codec, sizes, signer). */
#include "format/kvblob.h"
#include "kvfetch/kvfetch.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static void usage(FILE *f)
{
    fputs("usage: kvfetch inspect FILE [--json] [--trust DIR]\n"
          "Summarises a kvblob from its header and manifest: document, model, tokenizer, RoPE,\n"
          "codec, sizes and compression ratio, signer key id, validity window.\n"
          "Without --trust the signature is NOT checked (use 'kvfetch verify' for a full check).\n"
          "  --json       one JSON object on stdout (the manifest under \"manifest\")\n"
          "  --trust DIR  also check the signature against the trust directory DIR\n"
          "Exit codes (spec/kvblob.md): 0 ok, 1 signature refused, 2 usage or I/O, 3 malformed blob.\n",
          f);
}

static const char *hex32(const uint8_t *b, char *out) { return kvc_hex(b, KVC_SHA256_LEN, out); }

/* The signed manifest bytes, re-read from the file so --json shows them exactly. */
static json_t *raw_manifest(const char *path, const kvb_header *h)
{
    FILE *f = fopen(path, "rb");
    char *buf = malloc(h->manifest_len);
    json_t *j = NULL;
    if (f && buf && fseek(f, KVB_HEADER_LEN, SEEK_SET) == 0 && fread(buf, 1, h->manifest_len, f) == h->manifest_len)
        j = json_loadb(buf, h->manifest_len, 0, NULL);
    free(buf);
    if (f)
        fclose(f);
    return j ? j : json_null();
}

int kvfetch_inspect_main(int argc, char **argv)
{
    kvf_blob_args args;
    int rc = kvf_blob_args_parse(argc, argv, 0, usage, &args);
    if (rc >= 0)
        return rc;
    char err[256];
    kvb_header h;
    kvb_manifest *m = NULL;
    kvb_status st = kvb_peek_file(args.file, NULL, &h, &m, err, sizeof err);
    if (st) {
        fprintf(stderr, "kvfetch inspect: %s: %s\n", args.file, err);
        return kvb_exit_code(st);
    }
    char kid[2 * KVC_KEYID_LEN + 1];
    kvc_hex(h.key_id, KVC_KEYID_LEN, kid);
    const char *sig = "not checked";
    rc = 0;
    if (args.trust_dir) {
        kvc_trust *t = NULL;
        const kvc_key *key = NULL;
        kvb_manifest *m2 = NULL;
        if (kvc_trust_open(args.trust_dir, &t, err, sizeof err) != KVC_OK) {
            fprintf(stderr, "kvfetch inspect: %s\n", err);
            kvb_manifest_free(m);
            return 2;
        }
        kvc_status ks = kvc_trust_lookup(t, h.key_id, &key);
        if (ks == KVC_ERR_REVOKED) {
            st = KVB_ERR_REVOKED;
            snprintf(err, sizeof err, "signer key id %s is revoked", kid);
        } else if (ks != KVC_OK) {
            st = KVB_ERR_UNTRUSTED;
            snprintf(err, sizeof err, "signer key id %s is not in the trust store", kid);
        } else {
            st = kvb_peek_file(args.file, key, NULL, &m2, err, sizeof err);
            kvb_manifest_free(m2);
        }
        kvc_trust_free(t);
        sig = st ? kvb_status_str(st) : "good (trusted)";
        if (st) {
            fprintf(stderr, "kvfetch inspect: %s: %s\n", args.file, err);
            rc = kvb_exit_code(st);
        }
    }
    struct stat sb;
    long long fsize = stat(args.file, &sb) == 0 ? (long long)sb.st_size : -1;
    int64_t now = (int64_t)time(NULL);
    int expired = m->expires && now >= m->expires;
    double ratio = m->stored_bytes ? (double)m->raw_bytes / (double)m->stored_bytes : 0.0;
    char created[32], expires[32], a[65], b[65], c[65], d[65];
    kvb_time_format(m->created, created, sizeof created);
    if (m->expires)
        kvb_time_format(m->expires, expires, sizeof expires);
    else
        snprintf(expires, sizeof expires, "never");

    if (args.as_json) {
        json_t *o = json_object();
        json_object_set_new(o, "file", json_string(args.file));
        json_object_set_new(o, "file_bytes", json_integer(fsize));
        json_object_set_new(o, "blob_bytes", json_integer((json_int_t)h.file_size));
        json_object_set_new(o, "complete", json_boolean(fsize == (long long)h.file_size));
        json_object_set_new(o, "version", json_integer(h.version));
        json_object_set_new(o, "key_id", json_string(kid));
        json_object_set_new(o, "signature", json_string(sig));
        json_object_set_new(o, "raw_bytes", json_integer((json_int_t)m->raw_bytes));
        json_object_set_new(o, "stored_bytes", json_integer((json_int_t)m->stored_bytes));
        json_object_set_new(o, "ratio", json_real(ratio));
        json_object_set_new(o, "expired", json_boolean(expired));
        json_object_set_new(o, "manifest", raw_manifest(args.file, &h));
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (s)
            puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("file:       %s (%lld bytes%s)\n", args.file, fsize,
               fsize == (long long)h.file_size ? "" : fsize < (long long)h.file_size ? ", INCOMPLETE" : ", TRAILING DATA");
        printf("document:   \"%s\" %s, %llu bytes, sha256:%s\n", m->doc_title, m->doc_media_type,
               (unsigned long long)m->doc_bytes, hex32(m->doc_sha256, a));
        printf("source:     %s\n", m->doc_source_uri[0] ? m->doc_source_uri : "-");
        printf("model:      %s, %u layers, n_embd %u, %u heads (%u KV) x %u, sha256:%s\n", m->model_arch, m->n_layer,
               m->n_embd, m->n_head, m->n_head_kv, m->head_dim, hex32(m->model_fingerprint, b));
        printf("tokenizer:  sha256:%s\n", hex32(m->tokenizer_fingerprint, c));
        printf("rope:       %s, n_rot %u, freq_base %g, freq_scale %g, scaling %s, n_ctx_orig %u, pos0 %u\n",
               kvb_rope_type_name(m->rope_type), m->rope_n_rot, m->rope_freq_base, m->rope_freq_scale,
               kvb_scaling_name(m->rope_scaling), m->rope_n_ctx_orig, m->pos0);
        if (m->rope_scaling == KVB_SCALING_YARN)
            printf("yarn:       ext %g, attn %g, beta_fast %g, beta_slow %g\n", m->yarn_ext_factor,
                   m->yarn_attn_factor, m->yarn_beta_fast, m->yarn_beta_slow);
        if (m->rope_n_freq_factors)
            printf("rope freqs: %u llama3 frequency factors (rope_freqs), %g .. %g\n", m->rope_n_freq_factors,
                   m->rope_freq_factors[0], m->rope_freq_factors[m->rope_n_freq_factors - 1]);
        if (m->n_context)
            printf("context:    %u tokens declared before the document (not in the blob), sha256:%s\n", m->n_context,
                   hex32(m->context_sha256, d));
        printf("tokens:     %u (ids sha256:%s)\n", m->n_tokens, hex32(m->tokens_sha256, d));
        printf("codec:      %s, %u tokens per chunk, %u chunks (container version %u: chunks hashed %s)\n",
               kvb_codec_name(m->codec), m->chunk_tokens, m->n_chunks, h.version,
               h.version == 1 ? "whole with SHA-256" : "as SHA-256 lists of 32 KiB leaves");
        printf("size:       raw KV %llu bytes, stored %llu bytes, ratio %.3fx\n", (unsigned long long)m->raw_bytes,
               (unsigned long long)m->stored_bytes, ratio);
        printf("signer:     key id %s, signature %s\n", kid, sig);
        printf("validity:   created %s, expires %s%s, serial %llu\n", created, expires, expired ? " (EXPIRED)" : "",
               (unsigned long long)m->serial);
    }
    kvb_manifest_free(m);
    return rc;
}
