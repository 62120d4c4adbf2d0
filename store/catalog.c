/* catalog.c: reading the index: one blob by id, its file path, and filtered, paginated
 * catalog pages. */
#include "store/store_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/kvcrypto.h"

/* Columns in the order row_to_blob reads them. */
#define BLOB_COLUMNS                                                                                          \
    "b.id, d.sha256, b.title, b.source_uri, b.media_type, d.bytes, m.fingerprint, m.arch, m.shape, m.rope, " \
    "t.fingerprint, b.codec, b.tokens, b.size, b.serial, b.created, b.expires, b.price, b.publisher_key_id, "  \
    "EXISTS (SELECT 1 FROM revocations r WHERE r.key_id = b.publisher_key_id), b.context_sha256, "              \
    "b.context_tokens"
#define BLOB_FROM                                                                                             \
    " FROM blobs b JOIN documents d ON d.id = b.document_id JOIN models m ON m.id = b.model_id "            \
    "JOIN tokenizers t ON t.id = b.tokenizer_id "

enum { COL_ID, COL_DOC, COL_TITLE, COL_URI, COL_MEDIA, COL_DOC_BYTES, COL_MODEL, COL_ARCH, COL_SHAPE, COL_ROPE,
       COL_TOK, COL_CODEC, COL_TOKENS, COL_SIZE, COL_SERIAL, COL_CREATED, COL_EXPIRES, COL_PRICE, COL_PUB,
       COL_REVOKED, COL_CTX, COL_CTX_TOKENS };

struct kvs_list {
    kvs_blob **rows;
    size_t n;
    uint64_t total;
};

/* Builds a kvs_blob from the current row as ONE allocation: the struct followed by its
 * strings, so kvs_blob_free is a plain free(). */
static kvs_status row_to_blob(sqlite3_stmt *st, kvs_blob **out, char *err, size_t errlen)
{
    static const int text_cols[] = {COL_TITLE, COL_URI, COL_MEDIA, COL_ARCH, COL_SHAPE, COL_ROPE, COL_CODEC};
    enum { N_TEXT = sizeof text_cols / sizeof text_cols[0] };
    size_t lens[N_TEXT], total = sizeof(kvs_blob);
    for (size_t i = 0; i < N_TEXT; i++) {
        lens[i] = (size_t)sqlite3_column_bytes(st, text_cols[i]);
        total += lens[i] + 1;
    }
    kvs_blob *b = calloc(1, total);
    if (!b) {
        base_errf(err, errlen, "out of memory reading a catalog row");
        return KVS_ERR_NOMEM;
    }
    char *p = (char *)(b + 1);
    const char *strs[N_TEXT];
    for (size_t i = 0; i < N_TEXT; i++) {
        const unsigned char *t = sqlite3_column_text(st, text_cols[i]);
        if (!t) {
            strs[i] = NULL; /* SQL NULL (only source_uri may be) */
            continue;
        }
        memcpy(p, t, lens[i]);
        p[lens[i]] = '\0';
        strs[i] = p;
        p += lens[i] + 1;
    }
    b->doc_title = strs[0];
    b->doc_source_uri = strs[1];
    b->doc_media_type = strs[2];
    b->model_arch = strs[3];
    b->model_shape = strs[4];
    b->rope = strs[5];
    b->codec = strs[6];
    if (db_column_hex(st, COL_ID, b->id, KVS_SHA256_LEN) || db_column_hex(st, COL_DOC, b->doc_sha256, KVS_SHA256_LEN) ||
        db_column_hex(st, COL_MODEL, b->model_fp, KVS_SHA256_LEN) ||
        db_column_hex(st, COL_TOK, b->tokenizer_fp, KVS_SHA256_LEN) ||
        db_column_hex(st, COL_PUB, b->publisher_id, KVS_KEYID_LEN)) {
        base_errf(err, errlen, "index row for blob %.64s holds a malformed hash",
                  (const char *)sqlite3_column_text(st, COL_ID));
        free(b);
        return KVS_ERR_DB;
    }
    b->doc_bytes = (uint64_t)sqlite3_column_int64(st, COL_DOC_BYTES);
    b->n_tokens = (uint64_t)sqlite3_column_int64(st, COL_TOKENS);
    b->size = (uint64_t)sqlite3_column_int64(st, COL_SIZE);
    b->serial = (uint64_t)sqlite3_column_int64(st, COL_SERIAL);
    b->created = sqlite3_column_int64(st, COL_CREATED);
    b->expires = sqlite3_column_int64(st, COL_EXPIRES); /* NULL reads as 0 = never */
    b->price = (uint64_t)sqlite3_column_int64(st, COL_PRICE);
    b->revoked = sqlite3_column_int(st, COL_REVOKED) != 0;
    b->n_context = (uint32_t)sqlite3_column_int64(st, COL_CTX_TOKENS);
    if (b->n_context && db_column_hex(st, COL_CTX, b->context_sha256, KVS_SHA256_LEN)) {
        base_errf(err, errlen, "index row for blob %.64s holds a malformed context hash",
                  (const char *)sqlite3_column_text(st, COL_ID));
        free(b);
        return KVS_ERR_DB;
    }
    *out = b;
    return KVS_OK;
}

kvs_status kvs_store_blob_get(kvs_store *s, const uint8_t id[KVS_SHA256_LEN], kvs_blob **out, char *err,
                              size_t errlen)
{
    *out = NULL;
    db_stmt q;
    kvs_status st = kvs_prepare(s, "SELECT " BLOB_COLUMNS BLOB_FROM "WHERE b.id = :id", &q, err, errlen);
    db_bind_hex(&q, ":id", id, KVS_SHA256_LEN);
    int row = 0;
    if (st == KVS_OK)
        st = db_step(&q, &row, err, errlen);
    if (st == KVS_OK && !row) {
        char hex[65];
        base_errf(err, errlen, "no blob %s in the store", kvc_hex(id, KVS_SHA256_LEN, hex));
        st = KVS_ERR_NOTFOUND;
    }
    if (st == KVS_OK)
        st = row_to_blob(q.st, out, err, errlen);
    db_finalize(&q);
    return st;
}

kvs_status kvs_store_blob_path(kvs_store *s, const uint8_t id[KVS_SHA256_LEN], char *out, size_t outlen, char *err,
                               size_t errlen)
{
    if (outlen)
        out[0] = '\0';
    int row;
    kvs_status st = kvs_has_row(s, "SELECT 1 FROM blobs WHERE id = :id", ":id", id, KVS_SHA256_LEN, &row, err, errlen);
    char hex[65];
    if (st == KVS_OK && !row) {
        base_errf(err, errlen, "no blob %s in the store", kvc_hex(id, KVS_SHA256_LEN, hex));
        return KVS_ERR_NOTFOUND;
    }
    if (st == KVS_OK && store_blob_path(s, id, out, outlen) != 0) {
        if (outlen)
            out[0] = '\0';
        base_errf(err, errlen, "path buffer of %zu bytes is too small for the blob path", outlen);
        return KVS_ERR_INVALID;
    }
    return st;
}

/* NULL filters match everything; one fixed statement instead of SQL assembled from pieces. */
#define CATALOG_WHERE                                                                      \
    "WHERE (:model IS NULL OR m.fingerprint = :model) AND (:doc IS NULL OR d.sha256 = :doc) " \
    "AND (:title IS NULL OR instr(lower(b.title), lower(:title)) > 0) "                    \
    "AND (:now IS NULL OR b.expires IS NULL OR b.expires > :now) "                         \
    "AND (:publisher IS NULL OR b.publisher_key_id = :publisher) "                         \
    "AND (:ctx IS NULL OR b.context_sha256 = :ctx) "                                       \
    "AND NOT EXISTS (SELECT 1 FROM revocations r WHERE r.key_id = b.publisher_key_id) "

static void bind_query(db_stmt *q, const kvs_query *f)
{
    db_bind_hex(q, ":model", f->model_fp, KVS_SHA256_LEN);
    db_bind_hex(q, ":doc", f->doc_sha256, KVS_SHA256_LEN);
    db_bind_text(q, ":title", f->title_contains && *f->title_contains ? f->title_contains : NULL);
    db_bind_hex(q, ":publisher", f->publisher_id, KVS_KEYID_LEN);
    if (f->context_sha256)
        db_bind_hex(q, ":ctx", f->context_sha256, KVS_SHA256_LEN);
    else
        db_bind_text(q, ":ctx", f->no_context ? "" : NULL);
    if (f->now > 0)
        db_bind_int64(q, ":now", f->now);
    else
        db_bind_text(q, ":now", NULL);
}

void kvs_list_free(kvs_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        kvs_blob_free(l->rows[i]);
    free(l->rows);
    free(l);
}

size_t kvs_list_count(const kvs_list *l)
{
    return l->n;
}

uint64_t kvs_list_total(const kvs_list *l)
{
    return l->total;
}

const kvs_blob *kvs_list_get(const kvs_list *l, size_t i)
{
    return i < l->n ? l->rows[i] : NULL;
}

kvs_status kvs_store_catalog(kvs_store *s, const kvs_query *qry, kvs_list **out, char *err, size_t errlen)
{
    *out = NULL;
    static const kvs_query all;
    const kvs_query *f = qry ? qry : &all;
    size_t limit = f->limit ? f->limit : KVS_QUERY_DEFAULT_LIMIT;
    if (limit > KVS_QUERY_MAX_LIMIT)
        limit = KVS_QUERY_MAX_LIMIT;
    if (f->offset > (size_t)INT64_MAX) {
        base_errf(err, errlen, "catalog offset %zu is out of range", f->offset);
        return KVS_ERR_INVALID;
    }
    kvs_list *l = calloc(1, sizeof *l);
    if (!l || !(l->rows = calloc(limit, sizeof *l->rows))) {
        free(l);
        base_errf(err, errlen, "out of memory for a catalog page");
        return KVS_ERR_NOMEM;
    }

    /* count and page in one read transaction so the total matches the page */
    kvs_status st = db_exec(s->db, "BEGIN", err, errlen);
    if (st != KVS_OK) {
        kvs_list_free(l);
        return st;
    }
    db_stmt q;
    st = kvs_prepare(s, "SELECT count(*)" BLOB_FROM CATALOG_WHERE, &q, err, errlen);
    bind_query(&q, f);
    int row = 0;
    if (st == KVS_OK)
        st = db_step(&q, &row, err, errlen);
    if (st == KVS_OK && row)
        l->total = (uint64_t)sqlite3_column_int64(q.st, 0);
    db_finalize(&q);

    if (st == KVS_OK)
        st = kvs_prepare(s,
                        "SELECT " BLOB_COLUMNS BLOB_FROM CATALOG_WHERE
                        "ORDER BY b.created DESC, b.id LIMIT :limit OFFSET :offset",
                        &q, err, errlen);
    if (st == KVS_OK) {
        bind_query(&q, f);
        db_bind_int64(&q, ":limit", (int64_t)limit);
        db_bind_int64(&q, ":offset", (int64_t)f->offset);
    }
    while (st == KVS_OK && (st = db_step(&q, &row, err, errlen)) == KVS_OK && row && l->n < limit) {
        st = row_to_blob(q.st, &l->rows[l->n], err, errlen);
        if (st == KVS_OK)
            l->n++;
    }
    db_finalize(&q);
    db_rollback(s->db); /* read-only: ends the transaction */
    if (st != KVS_OK) {
        kvs_list_free(l);
        return st;
    }
    *out = l;
    return KVS_OK;
}
