/* kvb_manifest.c: the manifest as canonical JSON (sorted keys, compact) and its strict parser.
 * The parser runs only on bytes whose signature has been checked, but still trusts nothing. */
#include "format/kvb_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The manifest's names of the RoPE enums, indexed by value: the only copy of these tables. */
static const char *const rope_types[KVB_ROPE_TYPE_COUNT] = {"normal", "neox"};
static const char *const scalings[KVB_SCALING_COUNT] = {"none", "linear", "yarn"};
#define MAX_SAFE_INT 9007199254740991LL /* 2^53 - 1: JSON integers beyond lose precision */

const char *kvb_rope_type_name(kvb_rope_type t)
{
    return (unsigned)t < KVB_ROPE_TYPE_COUNT ? rope_types[t] : "?";
}

const char *kvb_scaling_name(kvb_rope_scaling s)
{
    return (unsigned)s < KVB_SCALING_COUNT ? scalings[s] : "?";
}

kvb_status kvb_manifest_check_shape(const kvb_manifest *m, char *err, size_t errlen)
{
    if (m->n_layer < 1 || m->n_layer > KVB_MAX_LAYERS)
        return kvb_fail(err, errlen, KVB_ERR_LIMIT, "n_layer %u out of range 1..%d", m->n_layer, KVB_MAX_LAYERS);
    if (m->n_head_kv < 1 || m->head_dim < 1 || (uint64_t)m->n_head_kv * m->head_dim > KVB_MAX_KV_DIM)
        return kvb_fail(err, errlen, KVB_ERR_LIMIT, "n_head_kv %u x head_dim %u out of range 1..%d",
                        m->n_head_kv, m->head_dim, KVB_MAX_KV_DIM);
    if (m->n_tokens < 1 || m->n_tokens > KVB_MAX_TOKENS)
        return kvb_fail(err, errlen, KVB_ERR_LIMIT, "n_tokens %u out of range 1..%d", m->n_tokens, KVB_MAX_TOKENS);
    if (m->chunk_tokens < 1 || m->chunk_tokens > KVB_MAX_CHUNK_TOKENS)
        return kvb_fail(err, errlen, KVB_ERR_LIMIT, "chunk_tokens %u out of range 1..%d", m->chunk_tokens,
                        KVB_MAX_CHUNK_TOKENS);
    uint64_t raw = 2 * kvb_chunk_values(m->n_layer, m->chunk_tokens, m->n_head_kv * m->head_dim);
    if (raw > KVB_MAX_CHUNK_RAW)
        return kvb_fail(err, errlen, KVB_ERR_LIMIT, "a chunk of %u tokens is %llu bytes decoded, over the limit of %llu",
                        m->chunk_tokens, (unsigned long long)raw, (unsigned long long)KVB_MAX_CHUNK_RAW);
    uint64_t n_chunks = ((uint64_t)m->n_tokens + m->chunk_tokens - 1) / m->chunk_tokens;
    if (n_chunks > KVB_MAX_CHUNKS)
        return kvb_fail(err, errlen, KVB_ERR_LIMIT, "%llu chunks exceed the limit of %d",
                        (unsigned long long)n_chunks, KVB_MAX_CHUNKS);
    if ((unsigned)m->codec >= KVB_CODEC_COUNT)
        return kvb_fail(err, errlen, KVB_ERR_UNSUPPORTED, "unknown codec %d", (int)m->codec);
    if ((unsigned)m->rope_type >= KVB_ROPE_TYPE_COUNT || (unsigned)m->rope_scaling >= KVB_SCALING_COUNT)
        return kvb_fail(err, errlen, KVB_ERR_UNSUPPORTED, "unknown rope type or scaling");
    if (m->rope_n_rot > m->head_dim)
        return kvb_fail(err, errlen, KVB_ERR_MALFORMED, "rope n_rot %u exceeds head_dim %u", m->rope_n_rot, m->head_dim);
    if (m->rope_n_freq_factors && m->rope_n_freq_factors != m->rope_n_rot / 2)
        return kvb_fail(err, errlen, KVB_ERR_MALFORMED, "rope freq_factors has %u values, n_rot %u needs %u",
                        m->rope_n_freq_factors, m->rope_n_rot, m->rope_n_rot / 2);
    for (uint32_t i = 0; i < m->rope_n_freq_factors; i++)
        if (!(m->rope_freq_factors[i] > 0) || !isfinite(m->rope_freq_factors[i]))
            return kvb_fail(err, errlen, KVB_ERR_MALFORMED, "rope freq_factors[%u] is not a positive number", i);
    if (m->n_context > KVB_MAX_CONTEXT)
        return kvb_fail(err, errlen, KVB_ERR_LIMIT, "a declared context of %u tokens exceeds %d", m->n_context,
                        KVB_MAX_CONTEXT);
    if (m->pos0 < m->n_context)
        return kvb_fail(err, errlen, KVB_ERR_MALFORMED, "pos0 %u is before the end of the %u-token declared context",
                        m->pos0, m->n_context);
    if ((uint64_t)m->pos0 + m->n_tokens > INT32_MAX)
        return kvb_fail(err, errlen, KVB_ERR_LIMIT, "pos0 %u + n_tokens %u exceeds 2^31-1", m->pos0, m->n_tokens);
    if (m->doc_bytes > (uint64_t)MAX_SAFE_INT)
        return kvb_fail(err, errlen, KVB_ERR_LIMIT, "document bytes exceed 2^53-1");
    if (m->created < 0 || m->expires < 0 || m->created > 253402300799LL || m->expires > 253402300799LL)
        return kvb_fail(err, errlen, KVB_ERR_MALFORMED, "created/expires must lie in 1970..9999");
    const char *strs[] = {m->doc_title, m->doc_source_uri, m->doc_media_type, m->model_arch};
    for (size_t i = 0; i < 4; i++)
        if (strs[i] && strlen(strs[i]) > KVB_MAX_STRING)
            return kvb_fail(err, errlen, KVB_ERR_LIMIT, "a manifest string exceeds %d bytes", KVB_MAX_STRING);
    return KVB_OK;
}

/* ---- serialise ---- */

static json_t *hexstr(const uint8_t *b, size_t n)
{
    char buf[2 * KVC_SHA256_LEN + 1];
    return json_string(kvc_hex(b, n, buf));
}

static json_t *timestr(int64_t t)
{
    char buf[32];
    return json_string(kvb_time_format(t, buf, sizeof buf));
}

static json_t *section_json(const kvb_section *s, int with_range, int with_raw)
{
    json_t *o = json_object();
    json_object_set_new(o, "offset", json_integer((json_int_t)s->offset));
    json_object_set_new(o, "length", json_integer((json_int_t)s->length));
    json_object_set_new(o, "sha256", hexstr(s->sha256, KVC_SHA256_LEN));
    if (with_raw)
        json_object_set_new(o, "raw_sha256", hexstr(s->raw_sha256, KVC_SHA256_LEN));
    if (with_range) {
        json_object_set_new(o, "t0", json_integer(s->t0));
        json_object_set_new(o, "t1", json_integer(s->t1));
    }
    return o;
}

static const char *nz(const char *s) { return s ? s : ""; }

/* The manifest's "rope" object; the store indexes the same object (kvb_manifest_rope_json). */
static json_t *rope_object(const kvb_manifest *m)
{
    json_t *o = json_pack("{s:s, s:I, s:f, s:f, s:s, s:I, s:f, s:f, s:f, s:f, s:I}",
                          "type", kvb_rope_type_name(m->rope_type), "n_rot", (json_int_t)m->rope_n_rot,
                          "freq_base", m->rope_freq_base, "freq_scale", m->rope_freq_scale,
                          "scaling", kvb_scaling_name(m->rope_scaling), "n_ctx_orig", (json_int_t)m->rope_n_ctx_orig,
                          "yarn_ext_factor", m->yarn_ext_factor, "yarn_attn_factor", m->yarn_attn_factor,
                          "yarn_beta_fast", m->yarn_beta_fast, "yarn_beta_slow", m->yarn_beta_slow,
                          "pos0", (json_int_t)m->pos0);
    if (m->rope_n_freq_factors) { /* absent unless the model has them: older manifests stay as they were */
        json_t *f = json_array();
        for (uint32_t i = 0; i < m->rope_n_freq_factors; i++)
            json_array_append_new(f, json_real(m->rope_freq_factors[i]));
        json_object_set_new(o, "freq_factors", f);
    }
    return o;
}

char *kvb_manifest_rope_json(const kvb_manifest *m)
{
    json_t *o = rope_object(m);
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

kvb_status kvb_manifest_serialize(const kvb_manifest *m, char **out, size_t *len, char *err, size_t errlen)
{
    json_t *root = json_object(), *doc = json_object(), *model = json_object(), *tok = json_object();
    json_t *rope = rope_object(m), *chunks = json_array();
    char serial[24];
    snprintf(serial, sizeof serial, "%llu", (unsigned long long)m->serial);

    json_object_set_new(doc, "sha256", hexstr(m->doc_sha256, KVC_SHA256_LEN));
    json_object_set_new(doc, "title", json_string(nz(m->doc_title)));
    json_object_set_new(doc, "source_uri", json_string(nz(m->doc_source_uri)));
    json_object_set_new(doc, "media_type", json_string(nz(m->doc_media_type)));
    json_object_set_new(doc, "bytes", json_integer((json_int_t)m->doc_bytes));

    json_object_set_new(model, "fingerprint", hexstr(m->model_fingerprint, KVC_SHA256_LEN));
    json_object_set_new(model, "arch", json_string(nz(m->model_arch)));
    json_object_set_new(model, "n_layer", json_integer(m->n_layer));
    json_object_set_new(model, "n_embd", json_integer(m->n_embd));
    json_object_set_new(model, "n_head", json_integer(m->n_head));
    json_object_set_new(model, "n_head_kv", json_integer(m->n_head_kv));
    json_object_set_new(model, "head_dim", json_integer(m->head_dim));

    json_object_set_new(tok, "fingerprint", hexstr(m->tokenizer_fingerprint, KVC_SHA256_LEN));

    for (uint32_t i = 0; i < m->n_chunks; i++)
        json_array_append_new(chunks, section_json(&m->chunks[i], 1, m->has_raw));

    json_object_set_new(root, "format", json_string("kvblob"));
    json_object_set_new(root, "document", doc);
    json_object_set_new(root, "model", model);
    json_object_set_new(root, "tokenizer", tok);
    json_object_set_new(root, "rope", rope);
    json_object_set_new(root, "n_tokens", json_integer(m->n_tokens));
    json_object_set_new(root, "tokens", section_json(&m->tokens, 0, 0));
    json_object_set_new(root, "codec", json_string(kvb_codec_name(m->codec)));
    json_object_set_new(root, "chunk_tokens", json_integer(m->chunk_tokens));
    json_object_set_new(root, "created", timestr(m->created));
    json_object_set_new(root, "expires", m->expires ? timestr(m->expires) : json_null());
    json_object_set_new(root, "serial", json_string(serial));
    json_object_set_new(root, "chunks", chunks);
    if (m->n_context) { /* absent without one: older manifests stay as they were */
        json_t *ctx = json_object(), *ids = json_array();
        uint8_t h[KVC_SHA256_LEN];
        if (kvb_ids_sha256(m->context_ids, m->n_context, h) != 0) {
            json_decref(ctx);
            json_decref(ids);
            json_decref(root);
            return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory serialising the manifest");
        }
        for (uint32_t i = 0; i < m->n_context; i++)
            json_array_append_new(ids, json_integer(m->context_ids[i]));
        json_object_set_new(ctx, "n_tokens", json_integer(m->n_context));
        json_object_set_new(ctx, "ids", ids);
        json_object_set_new(ctx, "sha256", hexstr(h, KVC_SHA256_LEN));
        json_object_set_new(root, "context", ctx);
    }

    char *s = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (!s)
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory serialising the manifest");
    size_t n = strlen(s);
    if (n > KVB_MAX_MANIFEST) {
        free(s);
        return kvb_fail(err, errlen, KVB_ERR_LIMIT, "manifest of %zu bytes exceeds the limit of %d", n,
                        KVB_MAX_MANIFEST);
    }
    *out = s;
    *len = n;
    return KVB_OK;
}

/* ---- parse ---- */

typedef struct pctx {
    char *err;
    size_t errlen;
    kvb_status st; /* first failure */
} pctx;

#define PFAIL(p, code, ...) ((p)->st ? (p)->st : ((p)->st = kvb_fail((p)->err, (p)->errlen, code, __VA_ARGS__)))

static json_t *need(pctx *p, json_t *obj, const char *where, const char *key, json_type type)
{
    json_t *v = json_object_get(obj, key);
    static const char *const tn[] = {"object", "array", "string", "integer", "number", "true", "false", "null"};
    if (!v || (type == JSON_REAL ? !json_is_number(v) : (json_typeof(v) != type))) {
        PFAIL(p, KVB_ERR_MALFORMED, "manifest: %s%s%s is %s, expected %s", where, *where ? "." : "", key,
              v ? "of the wrong type" : "missing", tn[type]);
        return NULL;
    }
    return v;
}

static uint64_t get_uint(pctx *p, json_t *obj, const char *where, const char *key, uint64_t max)
{
    json_t *v = need(p, obj, where, key, JSON_INTEGER);
    if (!v)
        return 0;
    json_int_t x = json_integer_value(v);
    if (x < 0 || (uint64_t)x > max) {
        PFAIL(p, KVB_ERR_LIMIT, "manifest: %s.%s = %lld out of range 0..%llu", where, key, (long long)x,
              (unsigned long long)max);
        return 0;
    }
    return (uint64_t)x;
}

static double get_num(pctx *p, json_t *obj, const char *where, const char *key)
{
    json_t *v = need(p, obj, where, key, JSON_REAL);
    return v ? json_number_value(v) : 0.0;
}

/* rope.freq_factors: optional array of numbers (kvb_manifest_validate checks count and values). */
static void get_freq_factors(pctx *p, json_t *rope, kvb_manifest *m)
{
    json_t *f = json_is_object(rope) ? json_object_get(rope, "freq_factors") : NULL;
    if (!f || p->st)
        return;
    if (!json_is_array(f) || json_array_size(f) > KVB_MAX_FREQ_FACTORS) {
        PFAIL(p, KVB_ERR_MALFORMED, "manifest: rope.freq_factors must be an array of at most %d numbers",
              KVB_MAX_FREQ_FACTORS);
        return;
    }
    for (size_t i = 0; i < json_array_size(f); i++) {
        json_t *v = json_array_get(f, i);
        if (!json_is_number(v)) {
            PFAIL(p, KVB_ERR_MALFORMED, "manifest: rope.freq_factors[%zu] is not a number", i);
            return;
        }
        m->rope_freq_factors[i] = (float)json_number_value(v);
    }
    m->rope_n_freq_factors = (uint32_t)json_array_size(f);
}

static const char *get_str(pctx *p, json_t *obj, const char *where, const char *key);
static void get_hash(pctx *p, json_t *obj, const char *where, const char *key, uint8_t out[KVC_SHA256_LEN]);

/* "context": optional; n_tokens, ids and their sha256 must agree. Returns the ids array (for
 * the caller to copy once the manifest's allocation exists), or NULL when there is none. */
static json_t *get_context(pctx *p, json_t *root, kvb_manifest *m)
{
    json_t *c = json_object_get(root, "context");
    if (!c)
        return NULL;
    if (!json_is_object(c)) {
        PFAIL(p, KVB_ERR_MALFORMED, "manifest: context is not an object");
        return NULL;
    }
    m->n_context = (uint32_t)get_uint(p, c, "context", "n_tokens", KVB_MAX_CONTEXT);
    json_t *ids = need(p, c, "context", "ids", JSON_ARRAY);
    uint8_t want[KVC_SHA256_LEN];
    get_hash(p, c, "context", "sha256", want);
    if (p->st)
        return NULL;
    if (m->n_context == 0 || json_array_size(ids) != m->n_context) {
        PFAIL(p, KVB_ERR_MALFORMED, "manifest: context lists %zu ids for n_tokens %u (at least 1)",
              json_array_size(ids), m->n_context);
        return NULL;
    }
    int32_t *tmp = malloc(m->n_context * sizeof *tmp);
    if (!tmp) {
        PFAIL(p, KVB_ERR_NOMEM, "out of memory parsing the manifest");
        return NULL;
    }
    for (uint32_t i = 0; i < m->n_context && !p->st; i++) {
        json_t *v = json_array_get(ids, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
            PFAIL(p, KVB_ERR_MALFORMED, "manifest: context.ids[%u] is not a token id", i);
        else
            tmp[i] = (int32_t)json_integer_value(v);
    }
    if (!p->st && kvb_ids_sha256(tmp, m->n_context, m->context_sha256) != 0)
        PFAIL(p, KVB_ERR_NOMEM, "out of memory parsing the manifest");
    if (!p->st && memcmp(m->context_sha256, want, KVC_SHA256_LEN) != 0)
        PFAIL(p, KVB_ERR_MALFORMED, "manifest: context.sha256 does not match its ids");
    free(tmp);
    return p->st ? NULL : ids;
}

static const char *get_str(pctx *p, json_t *obj, const char *where, const char *key)
{
    json_t *v = need(p, obj, where, key, JSON_STRING);
    if (!v)
        return "";
    const char *s = json_string_value(v);
    if (json_string_length(v) != strlen(s) || json_string_length(v) > KVB_MAX_STRING) {
        PFAIL(p, KVB_ERR_MALFORMED, "manifest: %s.%s contains NUL or exceeds %d bytes", where, key, KVB_MAX_STRING);
        return "";
    }
    return s;
}

static void get_hash(pctx *p, json_t *obj, const char *where, const char *key, uint8_t out[KVC_SHA256_LEN])
{
    const char *s = get_str(p, obj, where, key);
    if (p->st)
        return;
    if (strlen(s) != 2 * KVC_SHA256_LEN || kvc_unhex(s, out, KVC_SHA256_LEN) != KVC_OK)
        PFAIL(p, KVB_ERR_MALFORMED, "manifest: %s.%s is not 64 hex digits", where, key);
}

static int get_enum(pctx *p, json_t *obj, const char *where, const char *key, const char *const *names, int n)
{
    const char *s = get_str(p, obj, where, key);
    if (p->st)
        return 0;
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    PFAIL(p, KVB_ERR_UNSUPPORTED, "manifest: unknown %s.%s \"%.40s\"", where, key, s);
    return 0;
}

static int64_t get_time(pctx *p, json_t *obj, const char *key, int nullable)
{
    json_t *v = json_object_get(obj, key);
    if (nullable && (!v || json_is_null(v)))
        return 0;
    const char *s = get_str(p, obj, "", key);
    int64_t t = 0;
    if (!p->st && kvb_time_parse(s, &t) != 0)
        PFAIL(p, KVB_ERR_MALFORMED, "manifest: %s \"%.40s\" is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SSZ)", key, s);
    return t;
}

/* Returns 1 when the section carries the optional raw_sha256 (read into s->raw_sha256). */
static int get_section(pctx *p, json_t *obj, const char *where, kvb_section *s, int with_range)
{
    if (!json_is_object(obj)) {
        PFAIL(p, KVB_ERR_MALFORMED, "manifest: %s is not an object", where);
        return 0;
    }
    s->offset = get_uint(p, obj, where, "offset", MAX_SAFE_INT);
    s->length = get_uint(p, obj, where, "length", MAX_SAFE_INT);
    get_hash(p, obj, where, "sha256", s->sha256);
    const int raw = with_range && json_object_get(obj, "raw_sha256") != NULL;
    if (raw)
        get_hash(p, obj, where, "raw_sha256", s->raw_sha256);
    if (with_range) {
        s->t0 = (uint32_t)get_uint(p, obj, where, "t0", KVB_MAX_TOKENS);
        s->t1 = (uint32_t)get_uint(p, obj, where, "t1", KVB_MAX_TOKENS);
    }
    return raw;
}

/* Copies s into the arena at *pos and returns it. */
static const char *arena_str(char *arena, size_t *pos, const char *s)
{
    size_t n = strlen(s) + 1;
    memcpy(arena + *pos, s, n);
    const char *r = arena + *pos;
    *pos += n;
    return r;
}

/* Checks the section table against the shape: contiguous, aligned, in token order. */
static kvb_status check_layout(kvb_manifest *m, kvb_section *ch, char *err, size_t errlen)
{
    if (m->tokens.offset != 0 || m->tokens.length != 4ull * m->n_tokens)
        return kvb_fail(err, errlen, KVB_ERR_MALFORMED,
                        "manifest: token section at %llu+%llu, expected 0+%llu (4 bytes per token)",
                        (unsigned long long)m->tokens.offset, (unsigned long long)m->tokens.length,
                        4ull * m->n_tokens);
    m->tokens.t0 = 0;
    m->tokens.t1 = m->n_tokens;
    uint64_t end = m->tokens.length;
    m->stored_bytes = 0;
    for (uint32_t i = 0; i < m->n_chunks; i++) {
        kvb_section *s = &ch[i];
        uint32_t t0 = i * m->chunk_tokens;
        uint32_t t1 = m->n_tokens - t0 < m->chunk_tokens ? m->n_tokens : t0 + m->chunk_tokens;
        if (s->t0 != t0 || s->t1 != t1)
            return kvb_fail(err, errlen, KVB_ERR_MALFORMED, "chunk %u of %u: token range [%u,%u), expected [%u,%u)",
                            i, m->n_chunks, s->t0, s->t1, t0, t1);
        if (s->offset != kvb_align(end))
            return kvb_fail(err, errlen, KVB_ERR_MALFORMED,
                            "chunk %u of %u: offset %llu, expected %llu (sections are contiguous, %d-byte aligned)",
                            i, m->n_chunks, (unsigned long long)s->offset, (unsigned long long)kvb_align(end), KVB_ALIGN);
        const uint64_t minlen = kvb_codec_min_stored(m->codec, m->n_layer, t1 - t0, m->kv_dim),
                       maxlen = kvb_codec_max_stored(m->codec, m->n_layer, t1 - t0, m->kv_dim);
        if (s->length < minlen || s->length > maxlen)
            return kvb_fail(err, errlen, KVB_ERR_MALFORMED, "chunk %u of %u: length %llu out of range %llu..%llu for %s",
                            i, m->n_chunks, (unsigned long long)s->length, (unsigned long long)minlen,
                            (unsigned long long)maxlen, kvb_codec_name(m->codec));
        end = s->offset + s->length;
        m->stored_bytes += s->length;
    }
    return KVB_OK;
}

kvb_status kvb_manifest_parse(const uint8_t *bytes, size_t len, kvb_manifest **out, char *err, size_t errlen)
{
    json_error_t jerr;
    *out = NULL;
    json_t *root = json_loadb((const char *)bytes, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return kvb_fail(err, errlen, KVB_ERR_MALFORMED, "manifest: invalid JSON at byte %d: %s", jerr.position, jerr.text);
    pctx p = {err, errlen, KVB_OK};
    kvb_manifest m;
    memset(&m, 0, sizeof m);
    const char *title = "", *uri = "", *media = "", *arch = "";
    json_t *chunks = NULL;
    if (!json_is_object(root)) {
        PFAIL(&p, KVB_ERR_MALFORMED, "manifest: top level is not a JSON object");
        goto done;
    }
    if (strcmp(get_str(&p, root, "", "format"), "kvblob") != 0)
        PFAIL(&p, KVB_ERR_MALFORMED, "manifest: format is not \"kvblob\"");
    json_t *doc = need(&p, root, "", "document", JSON_OBJECT);
    json_t *model = need(&p, root, "", "model", JSON_OBJECT);
    json_t *tok = need(&p, root, "", "tokenizer", JSON_OBJECT);
    json_t *rope = need(&p, root, "", "rope", JSON_OBJECT);
    json_t *tsec = need(&p, root, "", "tokens", JSON_OBJECT);
    chunks = need(&p, root, "", "chunks", JSON_ARRAY);
    if (p.st)
        goto done;
    get_hash(&p, doc, "document", "sha256", m.doc_sha256);
    title = get_str(&p, doc, "document", "title");
    uri = get_str(&p, doc, "document", "source_uri");
    media = get_str(&p, doc, "document", "media_type");
    m.doc_bytes = get_uint(&p, doc, "document", "bytes", MAX_SAFE_INT);

    get_hash(&p, model, "model", "fingerprint", m.model_fingerprint);
    arch = get_str(&p, model, "model", "arch");
    m.n_layer = (uint32_t)get_uint(&p, model, "model", "n_layer", KVB_MAX_LAYERS);
    m.n_embd = (uint32_t)get_uint(&p, model, "model", "n_embd", 1u << 20);
    m.n_head = (uint32_t)get_uint(&p, model, "model", "n_head", 1u << 16);
    m.n_head_kv = (uint32_t)get_uint(&p, model, "model", "n_head_kv", KVB_MAX_KV_DIM);
    m.head_dim = (uint32_t)get_uint(&p, model, "model", "head_dim", KVB_MAX_KV_DIM);
    get_hash(&p, tok, "tokenizer", "fingerprint", m.tokenizer_fingerprint);

    m.rope_type = (kvb_rope_type)get_enum(&p, rope, "rope", "type", rope_types, KVB_ROPE_TYPE_COUNT);
    m.rope_n_rot = (uint32_t)get_uint(&p, rope, "rope", "n_rot", KVB_MAX_KV_DIM);
    m.rope_freq_base = get_num(&p, rope, "rope", "freq_base");
    m.rope_freq_scale = get_num(&p, rope, "rope", "freq_scale");
    m.rope_scaling = (kvb_rope_scaling)get_enum(&p, rope, "rope", "scaling", scalings, KVB_SCALING_COUNT);
    m.rope_n_ctx_orig = (uint32_t)get_uint(&p, rope, "rope", "n_ctx_orig", INT32_MAX);
    m.yarn_ext_factor = get_num(&p, rope, "rope", "yarn_ext_factor");
    m.yarn_attn_factor = get_num(&p, rope, "rope", "yarn_attn_factor");
    m.yarn_beta_fast = get_num(&p, rope, "rope", "yarn_beta_fast");
    m.yarn_beta_slow = get_num(&p, rope, "rope", "yarn_beta_slow");
    m.pos0 = (uint32_t)get_uint(&p, rope, "rope", "pos0", INT32_MAX);
    get_freq_factors(&p, rope, &m);

    m.n_tokens = (uint32_t)get_uint(&p, root, "", "n_tokens", KVB_MAX_TOKENS);
    get_section(&p, tsec, "tokens", &m.tokens, 0);
    memcpy(m.tokens_sha256, m.tokens.sha256, KVC_SHA256_LEN);
    const char *codec = get_str(&p, root, "", "codec");
    if (!p.st && kvb_codec_parse(codec, &m.codec) != KVB_OK)
        PFAIL(&p, KVB_ERR_UNSUPPORTED, "manifest: unknown codec \"%.40s\" (expected f16, f16-zstd, q8 or q4)", codec);
    m.chunk_tokens = (uint32_t)get_uint(&p, root, "", "chunk_tokens", KVB_MAX_CHUNK_TOKENS);
    m.created = get_time(&p, root, "created", 0);
    m.expires = get_time(&p, root, "expires", 1);
    const char *serial = get_str(&p, root, "", "serial");
    if (!p.st) {
        size_t n = strlen(serial);
        uint64_t v = 0;
        int ok = n >= 1 && n <= 20 && !(n > 1 && serial[0] == '0');
        for (size_t i = 0; ok && i < n; i++) {
            unsigned d = (unsigned)(serial[i] - '0');
            if (d > 9 || v > (UINT64_MAX - d) / 10)
                ok = 0;
            else
                v = v * 10 + d;
        }
        if (!ok)
            PFAIL(&p, KVB_ERR_MALFORMED, "manifest: serial \"%.24s\" is not a decimal u64", serial);
        m.serial = v;
    }
    json_t *ctx_ids = get_context(&p, root, &m);
    if (p.st)
        goto done;
    if (m.chunk_tokens == 0 || m.n_tokens == 0) {
        PFAIL(&p, KVB_ERR_MALFORMED, "manifest: n_tokens and chunk_tokens must be at least 1");
        goto done;
    }
    if ((p.st = kvb_manifest_check_shape(&m, err, errlen)) != KVB_OK)
        goto done;
    m.kv_dim = m.n_head_kv * m.head_dim;
    m.raw_bytes = 2 * kvb_chunk_values(m.n_layer, m.n_tokens, m.kv_dim);
    m.n_chunks = (m.n_tokens + m.chunk_tokens - 1) / m.chunk_tokens;
    if (json_array_size(chunks) != m.n_chunks) {
        PFAIL(&p, KVB_ERR_MALFORMED, "manifest: %zu chunks listed, expected %u (%u tokens / %u per chunk)",
              json_array_size(chunks), m.n_chunks, m.n_tokens, m.chunk_tokens);
        goto done;
    }
    /* one allocation: struct, section table, strings */
    size_t strbytes = strlen(title) + strlen(uri) + strlen(media) + strlen(arch) + 4;
    size_t secoff = (sizeof(kvb_manifest) + 15) & ~(size_t)15;
    size_t idsoff = secoff + (size_t)m.n_chunks * sizeof(kvb_section);
    size_t stroff = idsoff + (size_t)m.n_context * sizeof(int32_t);
    uint8_t *blk = malloc(stroff + strbytes);
    if (!blk) {
        PFAIL(&p, KVB_ERR_NOMEM, "out of memory parsing the manifest");
        goto done;
    }
    kvb_section *ch = (kvb_section *)(blk + secoff);
    uint32_t n_raw = 0;
    for (uint32_t i = 0; i < m.n_chunks && !p.st; i++) {
        char where[32];
        snprintf(where, sizeof where, "chunks[%u]", i);
        n_raw += (uint32_t)get_section(&p, json_array_get(chunks, i), where, &ch[i], 1);
    }
    /* decoded digests (spec 4.2): on every chunk or none, and only where decoding changes bytes */
    if (!p.st && n_raw && (n_raw != m.n_chunks || m.codec != KVB_CODEC_F16_ZSTD))
        PFAIL(&p, KVB_ERR_MALFORMED, "manifest: raw_sha256 on %u of %u chunks of a %s blob (all or none, f16-zstd only)",
              n_raw, m.n_chunks, kvb_codec_name(m.codec));
    m.has_raw = n_raw != 0;
    if (!p.st)
        p.st = check_layout(&m, ch, err, errlen);
    if (p.st) {
        free(blk);
        goto done;
    }
    size_t pos = 0;
    char *arena = (char *)blk + stroff;
    m.doc_title = arena_str(arena, &pos, title);
    m.doc_source_uri = arena_str(arena, &pos, uri);
    m.doc_media_type = arena_str(arena, &pos, media);
    m.model_arch = arena_str(arena, &pos, arch);
    m.chunks = ch;
    if (ctx_ids) {
        int32_t *ids = (int32_t *)(blk + idsoff);
        for (uint32_t i = 0; i < m.n_context; i++)
            ids[i] = (int32_t)json_integer_value(json_array_get(ctx_ids, i));
        m.context_ids = ids;
    }
    memcpy(blk, &m, sizeof m);
    *out = (kvb_manifest *)blk;
done:
    json_decref(root);
    return p.st;
}

void kvb_manifest_free(kvb_manifest *m)
{
    free(m);
}
