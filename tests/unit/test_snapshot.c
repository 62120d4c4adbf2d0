/* test_snapshot.c: signed catalog snapshots (spec/repository.md) from both ends: strict base64,
 * the store signing and counting versions, the client verifying, refusing tampered, untrusted,
 * expired and rolled-back snapshots, judging retired keys by their cut-off, and resolving the
 * listing for a document and a model; listing changes and key rotation move the generation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <unistd.h>

#include "fetch/fetch.h"
#include "store/kvstore.h"
#include "test_util.h"

#define NOW 1700000000

static void test_base64_strict(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = 0;
        char *e = kvc_base64_encode(cases[i][0], strlen(cases[i][0]), &n);
        assert_string_equal(e, cases[i][1]);
        uint8_t *d = NULL;
        assert_int_equal(kvc_base64_decode(e, n, &d, &n), KVC_OK);
        assert_int_equal(n, strlen(cases[i][0]));
        assert_memory_equal(d, cases[i][0], n);
        free(d);
        free(e);
    }
    /* non-canonical last character, bad alphabet, bad length, whitespace, misplaced padding */
    static const char *const bad[] = {"Zh==", "Zm9=", "Zm9v!A==", "Zm9", "Zm9v\n", "Z=9v", "===="};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t *d = (uint8_t *)1;
        size_t n = 7;
        assert_int_equal(kvc_base64_decode(bad[i], strlen(bad[i]), &d, &n), KVC_ERR_FORMAT);
        assert_null(d);
    }
}

static void list_blob(kvs_store *s, const char *dir, unsigned doc, unsigned model, const char *codec, int64_t created,
                      uint8_t id[32]);

/* A listing of document doc for model model with codec, published into s from fake bytes (the
 * store indexes what it is told; the blob format is not its business). */
static void list_blob(kvs_store *s, const char *dir, unsigned doc, unsigned model, const char *codec, int64_t created,
                      uint8_t id[32])
{
    char buf[64], path[512], err[512] = "";
    kvs_blob b = {.doc_title = "t", .doc_media_type = "text/plain", .doc_bytes = 1, .model_arch = "qwen3",
                  .model_shape = "{}", .rope = "{}", .codec = codec, .n_tokens = 4, .serial = 1, .created = created};
    snprintf(buf, sizeof buf, "document %u", doc);
    kvc_sha256(buf, strlen(buf), b.doc_sha256);
    snprintf(buf, sizeof buf, "model %u", model);
    kvc_sha256(buf, strlen(buf), b.model_fp);
    memset(b.publisher_id, 0x5a, sizeof b.publisher_id);
    snprintf(buf, sizeof buf, "bytes %u %u %s", doc, model, codec);
    snprintf(path, sizeof path, "%s/in.blob", dir);
    tu_write_file(path, buf, strlen(buf));
    kvs_publish_result r;
    assert_int_equal(kvs_store_publish_file(s, &b, path, &r, err, sizeof err), KVS_OK);
    memcpy(id, r.id, 32);
}

/* Opens the store under dir with a first signing key; trust gets that key. */
static kvs_store *store_with_key(const char *dir, kvs_signing_key *k, kvc_trust **trust)
{
    char sdir[512], err[512] = "";
    kvs_store *s = NULL;
    snprintf(sdir, sizeof sdir, "%s/store", dir);
    assert_int_equal(kvs_store_open(sdir, &s, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_key_rotate(s, NOW - 100, 0, k, err, sizeof err), KVS_OK);
    strcat(sdir, "/signing");
    assert_int_equal(kvc_trust_open(sdir, trust, err, sizeof err), KVC_OK);
    return s;
}

static void sign(kvs_store *s, int64_t now, kvs_snapshot *out)
{
    char err[512] = "";
    kvc_key *key = NULL;
    assert_int_equal(kvs_store_key_active(s, &key, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_snapshot(s, key, now, 3600, out, err, sizeof err), KVS_OK);
    kvc_key_free(key);
}

static void test_sign_verify_refuse(void **state)
{
    const char *dir = *state;
    char err[512] = "", sdir[512];
    kvs_signing_key k;
    kvc_trust *trust = NULL;
    kvs_store *s = store_with_key(dir, &k, &trust);
    kvs_snapshot a, b, again;
    sign(s, NOW, &a);
    sign(s, NOW + 1, &again); /* the same catalog signed again keeps its version */
    assert_int_equal(a.version, 1);
    assert_int_equal(again.version, 1);
    assert_true(strcmp(again.payload, a.payload) != 0); /* issued and expires moved */
    free(again.bytes);
    free(again.payload);
    uint8_t id[32];
    list_blob(s, dir, 1, 1, "f16", NOW - 5, id);
    sign(s, NOW + 1, &b);
    assert_int_equal(b.version, 2);

    kvf_snapshot *snap = NULL;
    assert_int_equal(kvf_snapshot_open(b.bytes, b.len, trust, NOW + 2, &snap, err, sizeof err), KVF_OK);
    assert_int_equal(kvf_snapshot_version(snap), 2);
    assert_memory_equal(kvf_snapshot_signer(snap), k.key_id, 8);
    assert_int_equal(kvf_snapshot_expires(snap), NOW + 1 + 3600);
    size_t plen;
    assert_string_equal(kvf_snapshot_payload(snap, &plen), b.payload);

    /* rollback: version 2 recorded, then 1 is refused and 2 again is fine */
    snprintf(sdir, sizeof sdir, "%s/state", dir);
    uint64_t seen = 9;
    assert_int_equal(kvf_snapshot_remember(sdir, snap, &seen, err, sizeof err), KVF_OK);
    assert_int_equal(seen, 0);
    kvf_snapshot *old = NULL;
    assert_int_equal(kvf_snapshot_open(a.bytes, a.len, trust, NOW + 2, &old, err, sizeof err), KVF_OK);
    assert_int_equal(kvf_snapshot_remember(sdir, old, &seen, err, sizeof err), KVF_ERR_ROLLBACK);
    assert_int_equal(seen, 2);
    assert_non_null(strstr(err, "older than version 2"));
    assert_int_equal(kvf_snapshot_remember(sdir, snap, NULL, err, sizeof err), KVF_OK);
    kvf_snapshot_free(old);
    kvf_snapshot_free(snap);

    /* frozen at its expiry, not a second before */
    assert_int_equal(kvf_snapshot_open(b.bytes, b.len, trust, NOW + 1 + 3599, &snap, err, sizeof err), KVF_OK);
    kvf_snapshot_free(snap);
    assert_int_equal(kvf_snapshot_open(b.bytes, b.len, trust, NOW + 1 + 3600, &snap, err, sizeof err), KVF_ERR_FROZEN);
    assert_null(snap);

    /* one flipped bit of the signature, of the payload, or an empty trust store */
    char *t = strdup(b.bytes);
    char *sig = strstr(t, "\"sig\":\"") + 7;
    *sig = *sig == '0' ? '1' : '0';
    assert_int_equal(kvf_snapshot_open(t, b.len, trust, NOW + 2, &snap, err, sizeof err), KVF_ERR_SNAPSHOT);
    assert_non_null(strstr(err, "bad signature"));
    memcpy(t, b.bytes, b.len);
    t[strlen("{\"payload\":\"") + 4] ^= 1;
    assert_int_equal(kvf_snapshot_open(t, b.len, trust, NOW + 2, &snap, err, sizeof err), KVF_ERR_SNAPSHOT);
    free(t);
    kvc_trust *none = NULL;
    snprintf(sdir, sizeof sdir, "%s/empty", dir);
    assert_int_equal(mkdir(sdir, 0755), 0);
    assert_int_equal(kvc_trust_open(sdir, &none, err, sizeof err), KVC_OK);
    assert_int_equal(kvf_snapshot_open(b.bytes, b.len, none, NOW + 2, &snap, err, sizeof err), KVF_ERR_SNAPSHOT);
    assert_non_null(strstr(err, "not in the trust directory"));
    assert_int_equal(kvf_snapshot_open("{}", 2, trust, NOW, &snap, err, sizeof err), KVF_ERR_SNAPSHOT);
    kvc_trust_free(none);
    kvc_trust_free(trust);
    free(a.bytes), free(a.payload), free(b.bytes), free(b.payload);
    kvs_store_close(s);
}

static void test_rotation_cutoff(void **state)
{
    const char *dir = *state;
    char err[512] = "";
    kvs_signing_key k1, k2;
    kvc_trust *trust = NULL;
    kvs_store *s = store_with_key(dir, &k1, &trust);
    uint64_t g0 = 0, g1 = 0;
    assert_int_equal(kvs_store_catalog_gen(s, &g0, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_key_rotate(s, NOW, NOW + 50, &k2, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_catalog_gen(s, &g1, err, sizeof err), KVS_OK);
    assert_true(g1 > g0);
    kvs_signing_key *keys = NULL;
    size_t n = 0;
    assert_int_equal(kvs_store_key_list(s, &keys, &n, err, sizeof err), KVS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(keys[0].state, KVS_KEY_RETIRED);
    assert_int_equal(keys[0].cutoff, NOW + 50);
    assert_int_equal(keys[1].state, KVS_KEY_ACTIVE);
    free(keys);

    kvs_snapshot snap;
    sign(s, NOW + 10, &snap);
    assert_int_equal(snap.version, 1); /* versions count per key */
    char sdir[512];
    snprintf(sdir, sizeof sdir, "%s/store/signing", dir);
    kvc_trust_free(trust);
    assert_int_equal(kvc_trust_open(sdir, &trust, err, sizeof err), KVC_OK);
    kvf_snapshot *v = NULL;
    assert_int_equal(kvf_snapshot_open(snap.bytes, snap.len, trust, NOW + 11, &v, err, sizeof err), KVF_OK);
    assert_int_equal(kvf_snapshot_key_ok(v, k1.key_id, NOW + 49, err, sizeof err), KVF_OK);
    assert_int_equal(kvf_snapshot_key_ok(v, k1.key_id, NOW + 50, err, sizeof err), KVF_ERR_SNAPSHOT);
    assert_int_equal(kvf_snapshot_key_ok(v, k2.key_id, NOW + 500, err, sizeof err), KVF_OK);
    kvf_snapshot_free(v);
    free(snap.bytes);
    free(snap.payload);

    /* the retired key signing after its cut-off: its own snapshot says so, and it is refused */
    kvc_key *old = NULL;
    char path[600];
    snprintf(path, sizeof path, "%s/%s", sdir, "");
    kvc_hex(k1.key_id, 8, path + strlen(path));
    strcat(path, ".key");
    assert_int_equal(kvc_key_load_private(path, &old, err, sizeof err), KVC_OK);
    assert_int_equal(kvs_store_snapshot(s, old, NOW + 60, 3600, &snap, err, sizeof err), KVS_OK);
    assert_int_equal(kvf_snapshot_open(snap.bytes, snap.len, trust, NOW + 61, &v, err, sizeof err), KVF_ERR_SNAPSHOT);
    assert_non_null(strstr(err, "retired"));
    free(snap.bytes);
    free(snap.payload);
    kvc_key_free(old);

    assert_int_equal(kvs_store_key_revoke(s, k1.key_id, NULL, NOW + 70, err, sizeof err), KVS_OK);
    int revoked = 0;
    assert_int_equal(kvs_store_key_revoked(s, k1.key_id, &revoked, NULL, err, sizeof err), KVS_OK);
    assert_true(revoked);
    kvc_trust_free(trust);
    kvs_store_close(s);
}

static void test_resolve_and_listing_set(void **state)
{
    const char *dir = *state;
    char err[512] = "";
    kvs_signing_key k;
    kvc_trust *trust = NULL;
    kvs_store *s = store_with_key(dir, &k, &trust);
    uint8_t q8[32], zstd[32], other[32];
    list_blob(s, dir, 1, 1, "q8", NOW - 5, q8);
    list_blob(s, dir, 1, 1, "f16-zstd", NOW - 9, zstd);
    list_blob(s, dir, 2, 1, "f16", NOW - 1, other);
    uint64_t g0 = 0, g1 = 0;
    assert_int_equal(kvs_store_catalog_gen(s, &g0, err, sizeof err), KVS_OK);
    kvs_listing_update u = {.set_price = 1, .price = 42, .title = "new title"};
    assert_int_equal(kvs_store_listing_set(s, q8, &u, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_catalog_gen(s, &g1, err, sizeof err), KVS_OK);
    assert_true(g1 > g0);
    uint8_t nope[32] = {0};
    assert_int_equal(kvs_store_listing_set(s, nope, &u, err, sizeof err), KVS_ERR_NOTFOUND);

    kvs_snapshot snap;
    sign(s, NOW, &snap);
    assert_int_equal(snap.n_blobs, 3);
    kvf_snapshot *v = NULL;
    assert_int_equal(kvf_snapshot_open(snap.bytes, snap.len, trust, NOW + 1, &v, err, sizeof err), KVF_OK);
    assert_int_equal(kvf_snapshot_count(v), 3);
    const kvf_listing *l = kvf_snapshot_find(v, q8);
    assert_non_null(l);
    assert_int_equal(l->price, 42);
    assert_string_equal(l->title, "new title");

    uint8_t doc[32], model[32], model2[32];
    kvc_sha256("document 1", 10, doc);
    kvc_sha256("model 1", 7, model);
    kvc_sha256("model 2", 7, model2);
    kvf_resolve r = {.doc_sha256 = doc, .model_fp = model};
    assert_int_equal(kvf_snapshot_resolve(v, &r, &l, err, sizeof err), KVF_OK);
    assert_memory_equal(l->id, zstd, 32); /* lossless first, though older */
    r.codec = "q8";
    assert_int_equal(kvf_snapshot_resolve(v, &r, &l, err, sizeof err), KVF_OK);
    assert_memory_equal(l->id, q8, 32);
    r.codec = NULL;
    r.model_fp = model2;
    assert_int_equal(kvf_snapshot_resolve(v, &r, &l, err, sizeof err), KVF_ERR_UNLISTED);
    assert_null(l);
    assert_null(kvf_snapshot_find(v, nope));
    kvf_snapshot_free(v);
    free(snap.bytes);
    free(snap.payload);

    /* a listing's expiry drops it without a new version: the client judges it at its now */
    kvs_listing_update ue = {.set_expires = 1, .expires = NOW + 100};
    assert_int_equal(kvs_store_listing_set(s, zstd, &ue, err, sizeof err), KVS_OK);
    sign(s, NOW, &snap);
    assert_int_equal(snap.n_blobs, 3);
    assert_int_equal(kvf_snapshot_open(snap.bytes, snap.len, trust, NOW + 1, &v, err, sizeof err), KVF_OK);
    l = kvf_snapshot_find(v, zstd);
    assert_non_null(l);
    assert_int_equal(l->expires, NOW + 100);
    assert_true(kvf_listing_current(l, NOW + 99));
    assert_false(kvf_listing_current(l, NOW + 100));
    assert_true(kvf_listing_current(kvf_snapshot_find(v, q8), NOW + 100000)); /* never expires */
    r.model_fp = model;
    r.now = NOW + 99;
    assert_int_equal(kvf_snapshot_resolve(v, &r, &l, err, sizeof err), KVF_OK);
    assert_memory_equal(l->id, zstd, 32);
    r.now = NOW + 100;
    assert_int_equal(kvf_snapshot_resolve(v, &r, &l, err, sizeof err), KVF_OK);
    assert_memory_equal(l->id, q8, 32); /* the lossless listing expired: the next one */
    r.codec = "f16-zstd";
    assert_int_equal(kvf_snapshot_resolve(v, &r, &l, err, sizeof err), KVF_ERR_UNLISTED);
    assert_non_null(strstr(err, "no current blob"));
    kvf_snapshot_free(v);
    free(snap.bytes);
    free(snap.payload);
    kvc_trust_free(trust);
    kvs_store_close(s);
}

static void test_keys_find(void **state)
{
    (void)state;
    char err[512] = "";
    kvc_key *k = kvc_key_generate(), *got = NULL;
    uint8_t id[8], raw[32], wrong[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    char hex[65], idh[17], doc[512];
    kvc_key_id(k, id);
    kvc_key_raw_public(k, raw);
    /* the document's key_id field is never believed: only the id computed from the key */
    snprintf(doc, sizeof doc, "{\"keys\":[],\"signing\":[{\"key_id\":\"%s\",\"public_key\":\"%s\"}]}",
             kvc_hex(wrong, 8, idh), kvc_hex(raw, 32, hex));
    assert_int_equal(kvf_keys_find(doc, strlen(doc), wrong, &got, err, sizeof err), KVF_ERR_REFUSED);
    assert_int_equal(kvf_keys_find(doc, strlen(doc), id, &got, err, sizeof err), KVF_OK);
    uint8_t got_id[8];
    kvc_key_id(got, got_id);
    assert_memory_equal(got_id, id, 8);
    kvc_key_free(got);
    char *pem = kvc_key_public_pem(k);
    assert_int_equal(kvf_keys_find(pem, strlen(pem), id, &got, err, sizeof err), KVF_OK);
    kvc_key_free(got);
    assert_int_equal(kvf_keys_find(pem, strlen(pem), wrong, &got, err, sizeof err), KVF_ERR_REFUSED);
    free(pem);
    kvc_key_free(k);
}

/* Revoking a signing key revokes it as a publisher and as a signing key in one transaction:
 * when the second half fails (a trigger here makes the signing_keys update abort), neither
 * stays, so the key cannot end up listed as revoked while it still signs snapshots. */
static void test_key_revoke_is_atomic(void **state)
{
    const char *dir = *state;
    char err[512] = "", db_path[600];
    kvs_signing_key k;
    kvc_trust *trust = NULL;
    kvs_store *s = store_with_key(dir, &k, &trust);
    snprintf(db_path, sizeof db_path, "%s/store/index.db", dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TRIGGER no_revoke BEFORE UPDATE ON signing_keys "
                                      "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_not_equal(kvs_store_key_revoke(s, k.key_id, NULL, NOW, err, sizeof err), KVS_OK);
    int revoked = 1;
    assert_int_equal(kvs_store_key_revoked(s, k.key_id, &revoked, NULL, err, sizeof err), KVS_OK);
    assert_false(revoked); /* the publisher half was rolled back with the rest */
    kvc_key *key = NULL;
    assert_int_equal(kvs_store_key_active(s, &key, err, sizeof err), KVS_OK);
    kvc_key_free(key);
    assert_int_equal(sqlite3_exec(db, "DROP TRIGGER no_revoke", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_int_equal(kvs_store_key_revoke(s, k.key_id, NULL, NOW, err, sizeof err), KVS_OK);
    assert_int_equal(kvs_store_key_revoked(s, k.key_id, &revoked, NULL, err, sizeof err), KVS_OK);
    assert_true(revoked);
    kvc_trust_free(trust);
    kvs_store_close(s);
}

typedef struct setter {
    kvs_store *s;
    const uint8_t *id;
    kvs_status st;
    char err[512];
} setter;

static void *set_price(void *arg)
{
    setter *t = arg;
    kvs_listing_update u = {.set_price = 1, .price = 7};
    t->st = kvs_store_listing_set(t->s, t->id, &u, t->err, sizeof t->err);
    return NULL;
}

/* A listing change races a revocation another process is committing: the change waits for the
 * write lock and then sees the revocation (KVS_ERR_REVOKED), instead of having checked before
 * and written after it. */
static void test_listing_set_waits_for_a_revocation(void **state)
{
    const char *dir = *state;
    char db_path[600], sql[256];
    kvs_signing_key k;
    kvc_trust *trust = NULL;
    kvs_store *s = store_with_key(dir, &k, &trust);
    uint8_t id[32];
    list_blob(s, dir, 1, 1, "f16", NOW - 5, id);
    snprintf(db_path, sizeof db_path, "%s/store/index.db", dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    snprintf(sql, sizeof sql, "INSERT INTO revocations (key_id, revoked, reason) VALUES ('%s', %lld, 'test')",
             "5a5a5a5a5a5a5a5a", (long long)NOW);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    setter t = {s, id, KVS_OK, ""};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, set_price, &t), 0);
    usleep(300 * 1000); /* the change is under way: waiting for the lock, or (before) past its check */
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(t.st, KVS_ERR_REVOKED);
    kvs_blob *b = NULL;
    char err[512] = "";
    assert_int_equal(kvs_store_blob_get(s, id, &b, err, sizeof err), KVS_OK);
    assert_int_not_equal(b->price, 7);
    kvs_blob_free(b);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    kvc_trust_free(trust);
    kvs_store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64_strict),
        TU_TMPDIR_TEST(test_sign_verify_refuse),
        TU_TMPDIR_TEST(test_rotation_cutoff),
        TU_TMPDIR_TEST(test_resolve_and_listing_set),
        cmocka_unit_test(test_keys_find),
        TU_TMPDIR_TEST(test_key_revoke_is_atomic),
        TU_TMPDIR_TEST(test_listing_set_waits_for_a_revocation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
