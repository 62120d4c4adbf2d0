/* blobinfo.c: manifest -> kvs_blob (the index row), including the shape and RoPE JSON texts
 * the catalog shows, and the store's temp files, so the daemon and kvp_publish_document
 * write and index blobs the same way. */
#include "kvpub/kvpub.h"
#include "base/base.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static char *dump(json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    return s;
}

int kvp_blobinfo_fill(kvp_blobinfo *bi, const kvb_manifest *m, const uint8_t key_id[KVC_KEYID_LEN],
                      uint64_t price)
{
    memset(bi, 0, sizeof *bi);
    bi->shape_json = dump(json_pack("{s:I, s:I, s:I, s:I, s:I}", "n_layer", (json_int_t)m->n_layer,
                                    "n_embd", (json_int_t)m->n_embd, "n_head", (json_int_t)m->n_head,
                                    "n_head_kv", (json_int_t)m->n_head_kv, "head_dim",
                                    (json_int_t)m->head_dim));
    bi->rope_json = kvb_manifest_rope_json(m);
    if (!bi->shape_json || !bi->rope_json) {
        kvp_blobinfo_clear(bi);
        return -1;
    }
    kvs_blob *b = &bi->blob;
    memcpy(b->doc_sha256, m->doc_sha256, sizeof b->doc_sha256);
    b->doc_title = m->doc_title ? m->doc_title : "";
    b->doc_source_uri = m->doc_source_uri && m->doc_source_uri[0] ? m->doc_source_uri : NULL;
    b->doc_media_type = m->doc_media_type && m->doc_media_type[0] ? m->doc_media_type : "text/plain";
    b->doc_bytes = m->doc_bytes;
    memcpy(b->model_fp, m->model_fingerprint, sizeof b->model_fp);
    b->model_arch = m->model_arch ? m->model_arch : "";
    b->model_shape = bi->shape_json;
    b->rope = bi->rope_json;
    memcpy(b->tokenizer_fp, m->tokenizer_fingerprint, sizeof b->tokenizer_fp);
    b->codec = kvb_codec_name(m->codec);
    b->n_tokens = m->n_tokens;
    b->serial = m->serial;
    b->created = m->created;
    b->expires = m->expires;
    b->price = price;
    memcpy(b->publisher_id, key_id, KVS_KEYID_LEN);
    b->n_context = m->n_context;
    if (m->n_context)
        memcpy(b->context_sha256, m->context_sha256, KVS_SHA256_LEN);
    return 0;
}

int kvp_store_tmpfd(const char *store_dir)
{
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof dir, "%s/tmp", store_dir) >= (int)sizeof dir) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return base_tmpfd(dir);
}

void kvp_blobinfo_clear(kvp_blobinfo *bi)
{
    free(bi->shape_json);
    free(bi->rope_json);
    bi->shape_json = bi->rope_json = NULL;
}
