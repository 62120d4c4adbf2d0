/* signing.c: the store's own signing keys (spec/repository.md, "Keys"): one active key that
 * signs snapshots and new blobs, retired keys with the cut-off after which their signatures no
 * longer count, revoked keys; and the /v1/keys document that lists them beside the publishers. */
#include "store/store_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

static const char *const state_names[] = {"active", "retired", "revoked"};

const char *kvs_key_state_str(kvs_key_state st)
{
    return (unsigned)st < 3 ? state_names[st] : "?";
}

/* DIR/signing/<key id> (the prefix of its .key and .pub) into out. */
static kvs_status key_prefix(const kvs_store *s, const uint8_t id[KVS_KEYID_LEN], char *out, size_t outlen,
                             char *err, size_t errlen)
{
    char hex[17];
    if ((size_t)snprintf(out, outlen, "%s/signing/%s", s->dir, kvc_hex(id, KVS_KEYID_LEN, hex)) >= outlen - 8)
        return base_fail(KVS_ERR_INVALID, err, errlen, "store path too long: %s", s->dir);
    return KVS_OK;
}

kvs_status kvs_store_key_list(kvs_store *s, kvs_signing_key **keys, size_t *n, char *err, size_t errlen)
{
    *keys = NULL;
    *n = 0;
    db_stmt q;
    kvs_status st = kvs_prepare(s, "SELECT key_id, public_key, created, state, cutoff FROM signing_keys "
                                   "ORDER BY created, key_id", &q, err, errlen);
    size_t cap = 0;
    int row = 0;
    while (st == KVS_OK && (st = db_step(&q, &row, err, errlen)) == KVS_OK && row) {
        if (!base_grow(keys, &cap, *n, sizeof **keys, 4)) {
            st = base_fail(KVS_ERR_NOMEM, err, errlen, "out of memory listing signing keys");
            break;
        }
        kvs_signing_key *k = &(*keys)[*n];
        memset(k, 0, sizeof *k);
        const char *state = (const char *)sqlite3_column_text(q.st, 3);
        if (db_column_hex(q.st, 0, k->key_id, KVS_KEYID_LEN) || db_column_hex(q.st, 1, k->public_key, KVS_PUBKEY_LEN)) {
            st = base_fail(KVS_ERR_DB, err, errlen, "signing_keys holds a malformed key");
            break;
        }
        k->created = sqlite3_column_int64(q.st, 2);
        k->state = state && !strcmp(state, "active") ? KVS_KEY_ACTIVE
                   : state && !strcmp(state, "retired") ? KVS_KEY_RETIRED : KVS_KEY_REVOKED;
        k->cutoff = sqlite3_column_int64(q.st, 4);
        (*n)++;
    }
    db_finalize(&q);
    if (st != KVS_OK) {
        free(*keys);
        *keys = NULL;
        *n = 0;
    }
    return st;
}

/* The active key's id: KVS_OK with *found 1 or 0. */
static kvs_status active_id(kvs_store *s, uint8_t id[KVS_KEYID_LEN], int *found, char *err, size_t errlen)
{
    db_stmt q;
    kvs_status st = kvs_prepare(s, "SELECT key_id FROM signing_keys WHERE state = 'active'", &q, err, errlen);
    if (st == KVS_OK)
        st = db_step(&q, found, err, errlen);
    if (st == KVS_OK && *found && db_column_hex(q.st, 0, id, KVS_KEYID_LEN))
        st = base_fail(KVS_ERR_DB, err, errlen, "signing_keys holds a malformed key id");
    db_finalize(&q);
    return st;
}

kvs_status kvs_store_key_active(kvs_store *s, kvc_key **out, char *err, size_t errlen)
{
    *out = NULL;
    uint8_t id[KVS_KEYID_LEN];
    int found = 0;
    char path[PATH_MAX], e[512];
    kvs_status st = active_id(s, id, &found, err, errlen);
    if (st == KVS_OK && !found)
        return base_fail(KVS_ERR_NOTFOUND, err, errlen,
                         "the store has no active signing key (make one with kvpubd key rotate)");
    if (st == KVS_OK)
        st = key_prefix(s, id, path, sizeof path, err, errlen);
    if (st != KVS_OK)
        return st;
    strcat(path, ".key");
    if (kvc_key_load_private(path, out, e, sizeof e) != KVC_OK)
        return base_fail(KVS_ERR_IO, err, errlen, "signing key %s: %s", path, e);
    uint8_t got[KVS_KEYID_LEN];
    kvc_key_id(*out, got);
    if (memcmp(got, id, sizeof got) != 0) {
        kvc_key_free(*out);
        *out = NULL;
        return base_fail(KVS_ERR_MISMATCH, err, errlen, "%s holds another key than its name says", path);
    }
    return KVS_OK;
}

kvs_status kvs_store_key_rotate(kvs_store *s, int64_t now, int64_t cutoff, kvs_signing_key *made, char *err,
                                size_t errlen)
{
    char dir[PATH_MAX], prefix[PATH_MAX];
    if ((size_t)snprintf(dir, sizeof dir, "%s/signing", s->dir) >= sizeof dir)
        return base_fail(KVS_ERR_INVALID, err, errlen, "store path too long: %s", s->dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return base_fail(KVS_ERR_IO, err, errlen, "cannot create %s: %s", dir, strerror(errno));
    kvc_key *k = kvc_key_generate();
    if (!k)
        return base_fail(KVS_ERR_NOMEM, err, errlen, "could not generate an Ed25519 key");
    kvs_signing_key nk = {.created = now, .state = KVS_KEY_ACTIVE};
    kvc_key_id(k, nk.key_id);
    kvc_key_raw_public(k, nk.public_key);
    char e[512];
    kvs_status st = key_prefix(s, nk.key_id, prefix, sizeof prefix, err, errlen);
    /* the files first: a crash before the transaction leaves an unused key file, never an
     * active key without its private half */
    if (st == KVS_OK && kvc_key_write_pair(k, prefix, e, sizeof e) != KVC_OK)
        st = base_fail(KVS_ERR_IO, err, errlen, "%s", e);
    kvc_key_free(k);
    if (st == KVS_OK)
        st = db_begin(s->db, err, errlen);
    if (st != KVS_OK)
        return st;
    db_stmt q;
    st = kvs_prepare(s, "UPDATE signing_keys SET state = 'retired', cutoff = max(created, :cutoff) "
                        "WHERE state = 'active'", &q, err, errlen);
    if (st == KVS_OK) {
        db_bind_int64(&q, ":cutoff", cutoff ? cutoff : now);
        st = db_run(&q, err, errlen);
        db_finalize(&q);
    }
    if (st == KVS_OK)
        st = kvs_prepare(s, "INSERT INTO signing_keys (key_id, public_key, created, state) "
                            "VALUES (:kid, :pub, :now, 'active')", &q, err, errlen);
    if (st == KVS_OK) {
        db_bind_hex(&q, ":kid", nk.key_id, KVS_KEYID_LEN);
        db_bind_hex(&q, ":pub", nk.public_key, KVS_PUBKEY_LEN);
        db_bind_int64(&q, ":now", now);
        st = db_run(&q, err, errlen);
        db_finalize(&q);
    }
    st = db_end(s->db, st, err, errlen);
    if (st == KVS_OK && made)
        *made = nk;
    return st;
}

kvs_status kvs_store_key_revoke(kvs_store *s, const uint8_t key_id[KVS_KEYID_LEN], const char *reason, int64_t now,
                                char *err, size_t errlen)
{
    /* one write transaction: the key is revoked as a publisher and as a signing key together,
     * or not at all (a crash between the two left it listed as revoked but still signing) */
    kvs_status st = db_begin(s->db, err, errlen);
    if (st != KVS_OK)
        return st;
    int row = 0;
    st = kvs_has_row(s, "SELECT 1 FROM signing_keys WHERE key_id = :kid", ":kid", key_id, KVS_KEYID_LEN, &row, err,
                     errlen);
    char hex[17];
    if (st == KVS_OK && !row)
        st = base_fail(KVS_ERR_NOTFOUND, err, errlen, "%s is not one of the store's signing keys",
                       kvc_hex(key_id, KVS_KEYID_LEN, hex));
    size_t n_blobs = 0, n_refunds = 0;
    if (st == KVS_OK)
        st = kvs_store_publisher_revoke_locked(s, key_id, reason ? reason : "signing key revoked", now, &n_blobs,
                                               &n_refunds, err, errlen);
    db_stmt q;
    if (st == KVS_OK)
        st = kvs_prepare(s, "UPDATE signing_keys SET state = 'revoked', cutoff = min(coalesce(cutoff, :now), :now) "
                            "WHERE key_id = :kid AND state <> 'revoked'", &q, err, errlen);
    if (st == KVS_OK) {
        db_bind_hex(&q, ":kid", key_id, KVS_KEYID_LEN);
        db_bind_int64(&q, ":now", now);
        st = db_run(&q, err, errlen);
        db_finalize(&q);
    }
    return db_end(s->db, st, err, errlen);
}

/* ---- the /v1/keys document ---- */

/* {"key_id", "public_key", "pem"} of k, plus name when given. */
static json_t *key_json(const kvc_key *k, const char *name)
{
    uint8_t id[KVS_KEYID_LEN], raw[KVS_PUBKEY_LEN];
    char idh[17], rawh[65];
    kvc_key_id(k, id);
    kvc_key_raw_public(k, raw);
    char *pem = kvc_key_public_pem(k);
    json_t *o = pem ? json_pack("{s:s, s:s?, s:s, s:s}", "key_id", kvc_hex(id, 8, idh), "name", name, "public_key",
                                kvc_hex(raw, 32, rawh), "pem", pem)
                    : NULL;
    free(pem);
    return o;
}

/* Adds the signing keys to doc as "signing": [...]. */
static kvs_status add_signing(kvs_store *s, json_t *doc, char *err, size_t errlen)
{
    kvs_signing_key *keys;
    size_t n;
    kvs_status st = kvs_store_key_list(s, &keys, &n, err, errlen);
    json_t *arr = json_array();
    for (size_t i = 0; st == KVS_OK && i < n; i++) {
        kvc_key *k = NULL;
        char when[32];
        json_t *o = kvc_key_from_raw_public(keys[i].public_key, &k) == KVC_OK ? key_json(k, NULL) : NULL;
        kvc_key_free(k);
        if (!o || json_object_set_new(o, "state", json_string(kvs_key_state_str(keys[i].state))) ||
            json_object_set_new(o, "created", json_string(store_time_format(keys[i].created, when, sizeof when))) ||
            json_object_set_new(o, "cutoff", keys[i].cutoff ? json_string(store_time_format(keys[i].cutoff, when,
                                                                                                sizeof when))
                                                             : json_null()) ||
            json_array_append_new(arr, o))
            st = base_fail(KVS_ERR_NOMEM, err, errlen, "out of memory listing signing keys");
    }
    free(keys);
    if (st == KVS_OK && json_object_set_new(doc, "signing", arr) != 0)
        st = base_fail(KVS_ERR_NOMEM, err, errlen, "out of memory listing signing keys");
    else if (st != KVS_OK)
        json_decref(arr);
    return st;
}

/* Adds the ids revoked in DIR/keys/revoked or in the index, each once, sorted. */
static kvs_status add_revoked(kvs_store *s, const kvc_trust *t, json_t *doc, char *err, size_t errlen)
{
    json_t *set = json_object();
    char hex[17];
    for (size_t i = 0; t && i < kvc_trust_revoked_count(t); i++)
        json_object_set_new(set, kvc_hex(kvc_trust_revoked_id(t, i), 8, hex), json_true());
    db_stmt q;
    int row = 0;
    kvs_status st = kvs_prepare(s, "SELECT key_id FROM revocations", &q, err, errlen);
    while (st == KVS_OK && (st = db_step(&q, &row, err, errlen)) == KVS_OK && row) {
        const char *id = (const char *)sqlite3_column_text(q.st, 0);
        if (id)
            json_object_set_new(set, id, json_true());
    }
    db_finalize(&q);
    json_t *arr = json_array();
    const char *key;
    json_t *v;
    /* jansson's object iteration follows insertion order; sort for a stable document */
    size_t n = json_object_size(set), i = 0;
    const char **ids = calloc(n ? n : 1, sizeof *ids);
    if (ids)
        json_object_foreach(set, key, v) ids[i++] = key;
    for (size_t a = 1; ids && a < n; a++)
        for (size_t b = a; b > 0 && strcmp(ids[b - 1], ids[b]) > 0; b--) {
            const char *tmp = ids[b];
            ids[b] = ids[b - 1];
            ids[b - 1] = tmp;
        }
    for (i = 0; ids && i < n; i++)
        json_array_append_new(arr, json_string(ids[i]));
    if (st == KVS_OK && (!ids || json_object_set_new(doc, "revoked", arr) != 0))
        st = base_fail(KVS_ERR_NOMEM, err, errlen, "out of memory listing revoked keys");
    else if (st != KVS_OK)
        json_decref(arr);
    free(ids);
    json_decref(set);
    return st;
}

kvs_status kvs_store_keys_document(kvs_store *s, char **out, size_t *len, char *err, size_t errlen)
{
    *out = NULL;
    char dir[PATH_MAX], e[512];
    if ((size_t)snprintf(dir, sizeof dir, "%s/keys", s->dir) >= sizeof dir)
        return base_fail(KVS_ERR_INVALID, err, errlen, "store path too long: %s", s->dir);
    kvc_trust *t = NULL;
    struct stat sb;
    if (stat(dir, &sb) == 0 && kvc_trust_open(dir, &t, e, sizeof e) != KVC_OK)
        return base_fail(KVS_ERR_IO, err, errlen, "key directory %s: %s", dir, e);
    json_t *doc = json_object(), *keys = json_array();
    kvs_status st = doc && keys ? KVS_OK : KVS_ERR_NOMEM;
    for (size_t i = 0; st == KVS_OK && t && i < kvc_trust_count(t); i++) {
        const kvc_key *k = kvc_trust_key(t, i);
        uint8_t id[KVS_KEYID_LEN];
        kvc_key_id(k, id);
        kvs_publisher p;
        const char *name = kvs_store_publisher_get(s, id, &p, e, sizeof e) == KVS_OK ? p.name : NULL;
        if (json_array_append_new(keys, key_json(k, name)) != 0)
            st = KVS_ERR_NOMEM;
    }
    if (st == KVS_OK && json_object_set_new(doc, "keys", keys) != 0)
        st = KVS_ERR_NOMEM;
    else if (st != KVS_OK)
        json_decref(keys);
    if (st == KVS_ERR_NOMEM)
        base_errf(err, errlen, "out of memory listing keys");
    if (st == KVS_OK)
        st = add_revoked(s, t, doc, err, errlen);
    if (st == KVS_OK)
        st = add_signing(s, doc, err, errlen);
    kvc_trust_free(t);
    if (st == KVS_OK && !(*out = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER)))
        st = base_fail(KVS_ERR_NOMEM, err, errlen, "out of memory writing the keys document");
    json_decref(doc);
    if (st == KVS_OK && len)
        *len = strlen(*out);
    return st;
}
