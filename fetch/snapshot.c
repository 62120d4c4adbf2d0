/* snapshot.c: the client side of signed catalog snapshots (spec/repository.md): fetch one from a
 * repository or a file, verify the envelope's signature before parsing the payload, refuse a
 * frozen (expired) one, remember the highest version per signer to refuse rollbacks, and pick
 * the listing for a document and a model. */
#include "fetch/fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

enum { MAX_LISTINGS = 1 << 20, MAX_KEYS = 4096 };

typedef struct snap_key {
    uint8_t id[KVC_KEYID_LEN];
    int state;       /* 0 active, 1 retired, 2 revoked */
    int64_t cutoff;  /* 0 = none */
} snap_key;

struct kvf_snapshot {
    char *payload;   /* the verified bytes, NUL-terminated */
    size_t payload_len;
    json_t *doc;     /* owns the strings the listings borrow */
    uint64_t version;
    uint8_t signer[KVC_KEYID_LEN];
    int64_t issued, expires;
    kvf_listing *items;
    size_t n;
    snap_key *keys;
    size_t n_keys;
};

/* Strict "YYYY-MM-DDTHH:MM:SSZ" (spec/kvblob.md's time): 0, or -1 for anything else. */
static int parse_time(const char *s, int64_t *out)
{
    struct tm tm = {0};
    char back[32];
    if (!s || strlen(s) != 20 || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                                        &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    struct tm again;
    /* a date that does not exist (Feb 30) normalises to another: refuse it */
    if (t < 0 || !gmtime_r(&t, &again) || strftime(back, sizeof back, "%Y-%m-%dT%H:%M:%SZ", &again) != 20 ||
        strcmp(back, s) != 0)
        return -1;
    *out = (int64_t)t;
    return 0;
}

/* The fields a payload must hold, read into the snapshot; a message names the first bad one. */
typedef struct rd {
    int bad;
    char what[96];
} rd;

static json_t *need(rd *r, json_t *o, const char *k, json_type type)
{
    json_t *v = json_object_get(o, k);
    if (!r->bad && (!v || json_typeof(v) != type)) {
        r->bad = 1;
        snprintf(r->what, sizeof r->what, "%s", k);
    }
    return r->bad ? NULL : v;
}

static const char *need_str(rd *r, json_t *o, const char *k)
{
    json_t *v = need(r, o, k, JSON_STRING);
    return v ? json_string_value(v) : "";
}

static uint64_t need_uint(rd *r, json_t *o, const char *k)
{
    json_t *v = need(r, o, k, JSON_INTEGER);
    json_int_t i = v ? json_integer_value(v) : 0;
    if (!r->bad && i < 0) {
        r->bad = 1;
        snprintf(r->what, sizeof r->what, "%s", k);
    }
    return r->bad ? 0 : (uint64_t)i;
}

static void need_hex(rd *r, json_t *o, const char *k, uint8_t *out, size_t n)
{
    const char *s = need_str(r, o, k);
    if (!r->bad && (strlen(s) != 2 * n || kvc_unhex(s, out, n) != KVC_OK)) {
        r->bad = 1;
        snprintf(r->what, sizeof r->what, "%s", k);
    }
}

/* A time, or null (0) when nullable. */
static int64_t need_time(rd *r, json_t *o, const char *k, int nullable)
{
    json_t *v = json_object_get(o, k);
    int64_t t = 0;
    if (r->bad || (nullable && json_is_null(v)))
        return 0;
    if (!json_is_string(v) || parse_time(json_string_value(v), &t) != 0) {
        r->bad = 1;
        snprintf(r->what, sizeof r->what, "%s", k);
    }
    return t;
}

static void read_listing(rd *r, json_t *o, kvf_listing *l)
{
    if (!json_is_object(o)) {
        r->bad = 1;
        snprintf(r->what, sizeof r->what, "blobs[]");
        return;
    }
    need_hex(r, o, "id", l->id, 32);
    l->bytes = need_uint(r, o, "bytes");
    l->codec = need_str(r, o, "codec");
    l->created = need_time(r, o, "created", 1);
    l->expires = need_time(r, o, "expires", 1);
    l->price = need_uint(r, o, "price");
    l->n_tokens = need_uint(r, o, "tokens");
    need_hex(r, o, "publisher_key_id", l->publisher_id, KVC_KEYID_LEN);
    need_hex(r, o, "tokenizer_fingerprint", l->tokenizer_fp, 32);
    json_t *d = need(r, o, "document", JSON_OBJECT), *m = need(r, o, "model", JSON_OBJECT);
    if (d) {
        need_hex(r, d, "sha256", l->doc_sha256, 32);
        l->title = need_str(r, d, "title");
        l->media_type = need_str(r, d, "media_type");
        l->doc_bytes = need_uint(r, d, "bytes");
    }
    if (m) {
        need_hex(r, m, "fingerprint", l->model_fp, 32);
        l->model_arch = need_str(r, m, "arch");
    }
    json_t *c = json_object_get(o, "context");
    if (!r->bad && json_is_object(c)) {
        need_hex(r, c, "sha256", l->context_sha256, 32);
        uint64_t n = need_uint(r, c, "tokens");
        l->n_context = n >= 1 && n <= 65536 ? (uint32_t)n : 0;
        if (!r->bad && !l->n_context) {
            r->bad = 1;
            snprintf(r->what, sizeof r->what, "context.tokens");
        }
    } else if (!r->bad && !json_is_null(c)) {
        r->bad = 1;
        snprintf(r->what, sizeof r->what, "context");
    }
}

static void read_key(rd *r, json_t *o, snap_key *k)
{
    uint8_t pub[32], id[KVC_SHA256_LEN];
    need_hex(r, o, "key_id", k->id, KVC_KEYID_LEN);
    need_hex(r, o, "public_key", pub, 32);
    const char *state = need_str(r, o, "state");
    k->cutoff = need_time(r, o, "cutoff", 1);
    k->state = !strcmp(state, "active") ? 0 : !strcmp(state, "retired") ? 1 : !strcmp(state, "revoked") ? 2 : -1;
    kvc_sha256(pub, sizeof pub, id);
    if (!r->bad && (k->state < 0 || memcmp(id, k->id, KVC_KEYID_LEN) != 0)) {
        r->bad = 1;
        snprintf(r->what, sizeof r->what, "keys[].%s", k->state < 0 ? "state" : "key_id");
    }
}

/* Parses the verified payload into s. */
static kvf_status read_payload(kvf_snapshot *s, char *err, size_t errlen)
{
    json_error_t je;
    s->doc = json_loadb(s->payload, s->payload_len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(s->doc))
        return kvf_fail(err, errlen, KVF_ERR_SNAPSHOT, "snapshot payload is not a JSON object: %s", je.text);
    rd r = {0};
    const char *format = need_str(&r, s->doc, "format");
    uint64_t fv = need_uint(&r, s->doc, "format_version");
    if (!r.bad && (strcmp(format, "kvpub-snapshot") != 0 || fv != 1))
        return kvf_fail(err, errlen, KVF_ERR_SNAPSHOT, "not a kvpub snapshot of format version 1 (format '%s', "
                        "version %llu)", format, (unsigned long long)fv);
    s->version = need_uint(&r, s->doc, "version");
    uint8_t kid[KVC_KEYID_LEN];
    need_hex(&r, s->doc, "key_id", kid, KVC_KEYID_LEN);
    s->issued = need_time(&r, s->doc, "issued", 0);
    s->expires = need_time(&r, s->doc, "expires", 0);
    json_t *blobs = need(&r, s->doc, "blobs", JSON_ARRAY), *keys = need(&r, s->doc, "keys", JSON_ARRAY);
    need(&r, s->doc, "revoked", JSON_ARRAY);
    if (r.bad)
        return kvf_fail(err, errlen, KVF_ERR_SNAPSHOT, "snapshot payload: field '%s' is missing or malformed", r.what);
    if (memcmp(kid, s->signer, sizeof kid) != 0)
        return kvf_fail(err, errlen, KVF_ERR_SNAPSHOT, "snapshot payload names another signing key than signed it");
    if (s->version < 1 || s->expires <= s->issued)
        return kvf_fail(err, errlen, KVF_ERR_SNAPSHOT, "snapshot payload: version must be >= 1 and expires after issued");
    size_t nb = json_array_size(blobs), nk = json_array_size(keys);
    if (nb > MAX_LISTINGS || nk > MAX_KEYS)
        return kvf_fail(err, errlen, KVF_ERR_SNAPSHOT, "snapshot lists %zu blobs and %zu keys: over the limits "
                        "(%d, %d)", nb, nk, MAX_LISTINGS, MAX_KEYS);
    s->items = calloc(nb ? nb : 1, sizeof *s->items);
    s->keys = calloc(nk ? nk : 1, sizeof *s->keys);
    if (!s->items || !s->keys)
        return kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory reading a snapshot");
    for (size_t i = 0; i < nb && !r.bad; i++)
        read_listing(&r, json_array_get(blobs, i), &s->items[i]);
    for (size_t i = 0; i < nk && !r.bad; i++)
        read_key(&r, json_array_get(keys, i), &s->keys[i]);
    if (r.bad)
        return kvf_fail(err, errlen, KVF_ERR_SNAPSHOT, "snapshot payload: field '%s' is missing or malformed", r.what);
    s->n = nb;
    s->n_keys = nk;
    return KVF_OK;
}

/* Finds the envelope's signature by a trusted key and checks it over the payload bytes. */
static kvf_status check_envelope(kvf_snapshot *s, const void *bytes, size_t len, const kvc_trust *trust, char *err,
                                 size_t errlen)
{
    json_error_t je;
    json_t *env = json_loadb(bytes, len, JSON_REJECT_DUPLICATES, &je);
    json_t *payload = json_object_get(env, "payload"), *sigs = json_object_get(env, "signatures");
    kvf_status st = KVF_OK;
    if (!json_is_object(env) || !json_is_string(payload) || !json_is_array(sigs) || json_array_size(sigs) < 1 ||
        json_array_size(sigs) > 16) {
        st = kvf_fail(err, errlen, KVF_ERR_SNAPSHOT, "not a snapshot envelope (want {\"payload\", \"signatures\"}"
                      "%s%s)", env ? "" : ": ", env ? "" : je.text);
        json_decref(env);
        return st;
    }
    uint8_t *raw = NULL;
    size_t rawlen = 0;
    kvc_status cs = kvc_base64_decode(json_string_value(payload), json_string_length(payload), &raw, &rawlen);
    if (cs != KVC_OK) {
        json_decref(env);
        return kvf_fail(err, errlen, cs == KVC_ERR_NOMEM ? KVF_ERR_NOMEM : KVF_ERR_SNAPSHOT,
                        "snapshot payload is not canonical base64");
    }
    /* the first signature by a key we trust decides; one we do not know is skipped */
    const char *why = "no signature";
    char idhex[17] = "";
    int verified = 0;
    for (size_t i = 0; i < json_array_size(sigs) && !verified; i++) {
        json_t *g = json_array_get(sigs, i);
        const char *kid = json_string_value(json_object_get(g, "key_id"));
        const char *sig = json_string_value(json_object_get(g, "sig"));
        uint8_t id[KVC_KEYID_LEN], sb[KVC_SIG_LEN];
        if (!kid || !sig || strlen(kid) != 16 || strlen(sig) != 128 || kvc_unhex(kid, id, sizeof id) != KVC_OK ||
            kvc_unhex(sig, sb, sizeof sb) != KVC_OK) {
            why = "a malformed signature entry (want key_id: 16 hex, sig: 128 hex)";
            break;
        }
        snprintf(idhex, sizeof idhex, "%s", kid);
        const kvc_key *k = NULL;
        kvc_status ls = kvc_trust_lookup(trust, id, &k);
        if (ls == KVC_ERR_REVOKED) {
            why = "signed by a revoked key";
            break;
        }
        if (ls != KVC_OK) {
            why = "signed by a key that is not in the trust directory";
            continue;
        }
        if (kvc_verify(k, raw, rawlen, sb) != KVC_OK) {
            why = "bad signature";
            break;
        }
        memcpy(s->signer, id, sizeof id);
        verified = 1;
    }
    json_decref(env);
    if (!verified) {
        free(raw);
        return kvf_fail(err, errlen, KVF_ERR_SNAPSHOT, "snapshot refused: %s%s%s", why, *idhex ? " " : "", idhex);
    }
    char *p = realloc(raw, rawlen + 1);
    if (!p) {
        free(raw);
        return kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory reading a snapshot");
    }
    p[rawlen] = '\0';
    s->payload = p;
    s->payload_len = rawlen;
    return KVF_OK;
}

static const snap_key *find_key(const kvf_snapshot *s, const uint8_t id[KVC_KEYID_LEN])
{
    for (size_t i = 0; i < s->n_keys; i++)
        if (memcmp(s->keys[i].id, id, KVC_KEYID_LEN) == 0)
            return &s->keys[i];
    return NULL;
}

kvf_status kvf_snapshot_key_ok(const kvf_snapshot *s, const uint8_t key_id[KVC_KEYID_LEN], int64_t signed_at,
                               char *err, size_t errlen)
{
    const snap_key *k = find_key(s, key_id);
    char hex[17], when[32];
    if (!k || k->state == 0)
        return KVF_OK;
    if (k->state == 2)
        return kvf_fail(err, errlen, KVF_ERR_SNAPSHOT, "key %s is revoked (the snapshot says so)",
                        kvc_hex(key_id, KVC_KEYID_LEN, hex));
    if (signed_at < k->cutoff)
        return KVF_OK;
    return kvf_fail(err, errlen, KVF_ERR_SNAPSHOT, "key %s was retired at %s; a signature dated after that is "
                    "refused", kvc_hex(key_id, KVC_KEYID_LEN, hex), kvb_time_format(k->cutoff, when, sizeof when));
}

kvf_status kvf_snapshot_open(const void *bytes, size_t len, const kvc_trust *trust, int64_t now, kvf_snapshot **out,
                             char *err, size_t errlen)
{
    *out = NULL;
    if (len > KVF_SNAPSHOT_MAX)
        return kvf_fail(err, errlen, KVF_ERR_SNAPSHOT, "snapshot of %zu bytes is over the limit of %zu", len,
                        KVF_SNAPSHOT_MAX);
    kvf_snapshot *s = calloc(1, sizeof *s);
    if (!s)
        return kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory reading a snapshot");
    kvf_status st = check_envelope(s, bytes, len, trust, err, errlen);
    if (st == KVF_OK)
        st = read_payload(s, err, errlen);
    if (st == KVF_OK)
        st = kvf_snapshot_key_ok(s, s->signer, s->issued, err, errlen);
    if (now == 0)
        now = (int64_t)time(NULL);
    char a[32], b[32];
    if (st == KVF_OK && now >= s->expires)
        st = kvf_fail(err, errlen, KVF_ERR_FROZEN, "snapshot version %llu expired at %s (now %s): the repository "
                      "or mirror is serving a stale catalog", (unsigned long long)s->version,
                      kvb_time_format(s->expires, a, sizeof a), kvb_time_format(now, b, sizeof b));
    if (st != KVF_OK) {
        kvf_snapshot_free(s);
        return st;
    }
    *out = s;
    return KVF_OK;
}

void kvf_snapshot_free(kvf_snapshot *s)
{
    if (!s)
        return;
    json_decref(s->doc);
    BASE_FREE_ALL(s->payload, s->items, s->keys, s);
}

uint64_t kvf_snapshot_version(const kvf_snapshot *s) { return s->version; }
const uint8_t *kvf_snapshot_signer(const kvf_snapshot *s) { return s->signer; }
int64_t kvf_snapshot_issued(const kvf_snapshot *s) { return s->issued; }
int64_t kvf_snapshot_expires(const kvf_snapshot *s) { return s->expires; }
size_t kvf_snapshot_count(const kvf_snapshot *s) { return s->n; }

const char *kvf_snapshot_payload(const kvf_snapshot *s, size_t *len)
{
    if (len)
        *len = s->payload_len;
    return s->payload;
}

const kvf_listing *kvf_snapshot_get(const kvf_snapshot *s, size_t i)
{
    return i < s->n ? &s->items[i] : NULL;
}

const kvf_listing *kvf_snapshot_find(const kvf_snapshot *s, const uint8_t id[32])
{
    for (size_t i = 0; i < s->n; i++)
        if (memcmp(s->items[i].id, id, 32) == 0)
            return &s->items[i];
    return NULL;
}

int kvf_listing_current(const kvf_listing *l, int64_t now)
{
    return !l->expires || (now ? now : (int64_t)time(NULL)) < l->expires;
}

/* Lower is preferred: lossless codecs first. */
static int codec_rank(const char *c)
{
    static const char *const order[] = {"f16-zstd", "f16", "q8", "q4"};
    for (int i = 0; i < 4; i++)
        if (strcmp(c, order[i]) == 0)
            return i;
    return 4;
}

kvf_status kvf_snapshot_resolve(const kvf_snapshot *s, const kvf_resolve *r, const kvf_listing **out, char *err,
                                size_t errlen)
{
    *out = NULL;
    for (size_t i = 0; i < s->n; i++) {
        const kvf_listing *l = &s->items[i];
        if (memcmp(l->doc_sha256, r->doc_sha256, 32) != 0 || memcmp(l->model_fp, r->model_fp, 32) != 0 ||
            (r->no_context && l->n_context) ||
            (r->context_sha256 && (!l->n_context || memcmp(l->context_sha256, r->context_sha256, 32) != 0)) ||
            (r->codec && strcmp(r->codec, l->codec) != 0) ||
            (r->publisher_id && memcmp(r->publisher_id, l->publisher_id, KVC_KEYID_LEN) != 0) ||
            !kvf_listing_current(l, r->now))
            continue;
        const kvf_listing *b = *out;
        if (!b || codec_rank(l->codec) < codec_rank(b->codec) ||
            (codec_rank(l->codec) == codec_rank(b->codec) &&
             (l->created > b->created || (l->created == b->created && memcmp(l->id, b->id, 32) < 0))))
            *out = l;
    }
    if (*out)
        return KVF_OK;
    char d[65], m[65];
    return kvf_fail(err, errlen, KVF_ERR_UNLISTED, "snapshot version %llu lists no current blob of document %s for model %s%s",
                    (unsigned long long)s->version, kvc_hex(r->doc_sha256, 32, d), kvc_hex(r->model_fp, 32, m),
                    r->codec || r->context_sha256 || r->no_context || r->publisher_id ? " with these filters" : "");
}

kvf_status kvf_snapshot_remember(const char *dir, const kvf_snapshot *s, uint64_t *seen, char *err, size_t errlen)
{
    if (seen)
        *seen = 0;
    char path[4096], lock[4096], tmp[4200], hex[17];
    kvc_hex(s->signer, KVC_KEYID_LEN, hex);
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, hex) >= sizeof path ||
        (size_t)snprintf(lock, sizeof lock, "%s/.lock", dir) >= sizeof lock)
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "snapshot state directory path too long: %s", dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return kvf_fail(err, errlen, KVF_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
    int lfd = base_lock_file(lock);
    if (lfd < 0)
        return kvf_fail(err, errlen, KVF_ERR_IO, "cannot lock %s: %s", lock, strerror(errno));
    kvf_status st = KVF_OK;
    unsigned long long have = 0;
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%llu", &have) != 1)
            st = kvf_fail(err, errlen, KVF_ERR_IO, "%s does not hold a snapshot version; remove it to start over",
                          path);
        fclose(f);
    }
    if (seen)
        *seen = have;
    if (st == KVF_OK && s->version < have)
        st = kvf_fail(err, errlen, KVF_ERR_ROLLBACK, "snapshot version %llu signed by %s is older than version %llu "
                      "seen before: refusing a rollback", (unsigned long long)s->version, hex, have);
    if (st == KVF_OK && s->version > have) {
        int fd = -1;
        char line[32];
        int n = snprintf(line, sizeof line, "%llu\n", (unsigned long long)s->version);
        snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path);
        if ((fd = mkstemp(tmp)) < 0 || base_write_all(fd, line, (size_t)n) != 0 || fchmod(fd, 0644) != 0 ||
            fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
            st = kvf_fail(err, errlen, KVF_ERR_IO, "cannot record the snapshot version in %s: %s", path,
                          strerror(errno));
            unlink(tmp);
        }
        if (st == KVF_OK)
            base_fsync_dir(dir);
    }
    close(lfd); /* releases the lock */
    return st;
}

kvf_status kvf_snapshot_fetch(const kvf_http_opts *o, const char *where, char **bytes, size_t *len, char *base,
                              size_t basecap, char *err, size_t errlen)
{
    *bytes = NULL;
    *len = 0;
    if (base && basecap)
        base[0] = '\0';
    if (!kvf_is_url(where)) {
        FILE *f = fopen(where, "rb");
        if (!f)
            return kvf_fail(err, errlen, KVF_ERR_IO, "cannot open snapshot %s: %s", where, strerror(errno));
        *bytes = base_read_stream(f, KVF_SNAPSHOT_MAX, len);
        int bad = ferror(f);
        fclose(f);
        if (!*bytes || bad)
            return kvf_fail(err, errlen, KVF_ERR_IO, "cannot read snapshot %s (or it is over %zu bytes)", where,
                            KVF_SNAPSHOT_MAX);
        return KVF_OK;
    }
    static const char tail[] = "/v1/snapshot";
    size_t n = strlen(where);
    while (n && where[n - 1] == '/')
        n--;
    if (n >= sizeof tail - 1 && memcmp(where + n - (sizeof tail - 1), tail, sizeof tail - 1) == 0)
        n -= sizeof tail - 1;
    char url[4096];
    if ((size_t)snprintf(url, sizeof url, "%.*s%s", (int)n, where, tail) >= sizeof url || (base && n >= basecap))
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "repository URL too long");
    if (base)
        snprintf(base, basecap, "%.*s", (int)n, where);
    long code = 0;
    kvf_status st = kvf_http_request(o, "GET", url, NULL, KVF_SNAPSHOT_MAX, bytes, len, &code, err, errlen);
    if (st == KVF_OK && code != 200) {
        free(*bytes);
        *bytes = NULL;
        st = kvf_fail(err, errlen, code == 401 || code == 403 ? KVF_ERR_DENIED : KVF_ERR_HTTP,
                      "HTTP %ld from %s", code, url);
    }
    return st;
}

/* The key in arr (a /v1/keys list) whose public key has id key_id, or NULL. */
static kvc_key *key_in(json_t *arr, const uint8_t key_id[KVC_KEYID_LEN])
{
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        const char *hex = json_string_value(json_object_get(o, "public_key"));
        uint8_t raw[KVC_PUBKEY_LEN], id[KVC_KEYID_LEN];
        kvc_key *k = NULL;
        if (!hex || strlen(hex) != 64 || kvc_unhex(hex, raw, sizeof raw) != KVC_OK ||
            kvc_key_from_raw_public(raw, &k) != KVC_OK)
            continue;
        kvc_key_id(k, id);
        if (memcmp(id, key_id, sizeof id) == 0)
            return k;
        kvc_key_free(k);
    }
    return NULL;
}

kvf_status kvf_keys_find(const char *doc, size_t len, const uint8_t key_id[KVC_KEYID_LEN], kvc_key **out, char *err,
                         size_t errlen)
{
    *out = NULL;
    char hex[17];
    kvc_hex(key_id, KVC_KEYID_LEN, hex);
    kvc_key *k = NULL;
    if (len >= 10 && memcmp(doc, "-----BEGIN", 10) == 0) {
        if (kvc_key_from_pem_public(doc, len, &k) != KVC_OK)
            return kvf_fail(err, errlen, KVF_ERR_REFUSED, "not an Ed25519 public key in PEM form");
        uint8_t id[KVC_KEYID_LEN];
        kvc_key_id(k, id);
        if (memcmp(id, key_id, sizeof id) != 0) {
            char got[17];
            kvc_key_free(k);
            return kvf_fail(err, errlen, KVF_ERR_REFUSED, "the key's id is %s, not the fingerprint %s given",
                            kvc_hex(id, KVC_KEYID_LEN, got), hex);
        }
    } else {
        json_t *j = json_loadb(doc, len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(j)) {
            json_decref(j);
            return kvf_fail(err, errlen, KVF_ERR_REFUSED, "neither a PEM public key nor a /v1/keys JSON document");
        }
        k = key_in(json_object_get(j, "signing"), key_id);
        if (!k)
            k = key_in(json_object_get(j, "keys"), key_id);
        json_decref(j);
        if (!k)
            return kvf_fail(err, errlen, KVF_ERR_REFUSED, "no key with fingerprint %s in this key document", hex);
    }
    *out = k;
    return KVF_OK;
}
