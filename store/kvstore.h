/* kvstore.h: the publisher's store: a SQLite index (DIR/index.db) plus content-addressed blob
 * files (DIR/blobs/ab/abcdef...), atomic publish, orphan reconciliation, GC, catalog queries,
 * purchases with hashed access tokens, publishers and the download log. The whole contract. */
#ifndef KVPUB_KVSTORE_H
#define KVPUB_KVSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/kvcrypto.h"

#define KVS_WUR __attribute__((warn_unused_result))

/* Stable status values: tools and the daemon map them to exit codes / HTTP statuses. */
typedef enum kvs_status {
    KVS_OK = 0,
    KVS_ERR_IO = 1,            /* a file or directory could not be read/written */
    KVS_ERR_DB = 2,            /* SQLite failed (message carries sqlite3_errmsg and the SQL) */
    KVS_ERR_SCHEMA = 3,        /* index.db is from a newer kvpub, or not ours */
    KVS_ERR_INVALID = 4,       /* bad argument: empty codec, value out of range, ... */
    KVS_ERR_NOTFOUND = 5,      /* no such blob / publisher */
    KVS_ERR_EXISTS = 6,        /* publisher already registered; blob id used by another row */
    KVS_ERR_MISMATCH = 7,      /* blob bytes do not match the declared SHA-256 or size */
    KVS_ERR_NOMEM = 8,
    KVS_ERR_CREDENTIAL = 9,    /* publisher upload credential does not match */
    KVS_TOKEN_UNKNOWN = 10,    /* no purchase with this access token */
    KVS_TOKEN_EXPIRED = 11,
    KVS_TOKEN_EXHAUSTED = 12,  /* no downloads left */
    KVS_TOKEN_WRONG_BLOB = 13, /* token was bought for another blob */
    KVS_ERR_REVOKED = 14,      /* the blob's publisher key is revoked: not sold, not served */
} kvs_status;

/* Short constant name of a status. Never NULL. */
const char *kvs_status_str(kvs_status st);

enum {
    KVS_SHA256_LEN = 32,
    KVS_KEYID_LEN = 8,
    KVS_PUBKEY_LEN = 32,
    KVS_TOKEN_LEN = 32,        /* raw access token; callers show it as 64 hex digits */
    KVS_QUERY_MAX_LIMIT = 1000,
    KVS_QUERY_DEFAULT_LIMIT = 100,
};

/* The already-parsed facts about one blob, as the index keeps them. Used as input to publish
 * (strings borrowed from the caller) and as output of lookups (strings owned by the kvs_blob
 * allocation, freed with it). Hashes are raw bytes; the index stores them as lowercase hex so
 * the sqlite3 CLI can read it. */
typedef struct kvs_blob {
    uint8_t id[KVS_SHA256_LEN];           /* SHA-256 of the blob file; all-zero on publish
                                             input = compute it */
    uint8_t doc_sha256[KVS_SHA256_LEN];
    const char *doc_title;                /* required, may be "" */
    const char *doc_source_uri;           /* NULL = none */
    const char *doc_media_type;           /* required, e.g. "text/plain" */
    uint64_t doc_bytes;
    uint8_t model_fp[KVS_SHA256_LEN];
    const char *model_arch;               /* e.g. "qwen3" */
    const char *model_shape;              /* JSON text: layers, heads, dims ... */
    const char *rope;                     /* JSON text: RoPE metadata */
    uint8_t tokenizer_fp[KVS_SHA256_LEN];
    const char *codec;                    /* e.g. "f16-zstd" */
    uint64_t n_tokens;
    uint64_t size;                        /* bytes of the blob file; 0 on input = compute */
    uint64_t serial;
    int64_t created;                      /* unix seconds */
    int64_t expires;                      /* unix seconds; 0 = never */
    uint64_t price;                       /* smallest currency unit; 0 = free */
    uint8_t publisher_id[KVS_KEYID_LEN];
    uint32_t n_context;                   /* tokens of the declared context; 0 = none */
    uint8_t context_sha256[KVS_SHA256_LEN]; /* their hash (manifest context.sha256); zero if none */
    int revoked;                          /* output only: 1 = the publisher key is revoked */
} kvs_blob;

/* Frees a kvs_blob returned by this module (one allocation). NULL is a no-op. */
void kvs_blob_free(kvs_blob *b);

/* A store handle owns one SQLite connection: use it from one thread at a time (open one per
 * thread or worker). Processes coordinate through SQLite locks and flock()ed temp files. */
typedef struct kvs_store kvs_store;

/* Opens (creating if needed) the store in dir: dir/, dir/blobs/, dir/tmp/, dir/index.db in WAL
 * mode with a busy timeout; runs pending schema migrations; then reconciles orphans (see
 * kvs_store_reconcile). Several processes may open the same store. On success *out owns the
 * handle. */
kvs_status kvs_store_open(const char *dir, kvs_store **out, char *err, size_t errlen) KVS_WUR;
void kvs_store_close(kvs_store *s); /* NULL is a no-op */

/* Schema version of the open index (PRAGMA user_version) and the newest this build knows. */
int kvs_store_schema_version(kvs_store *s);
int kvs_schema_latest(void);

/* Makes files and index agree, under the index write lock so no publish is half-way:
 * removes temp files left by dead writers, blob files without a row (or whose size differs
 * from the row), and rows whose file is missing. Counts go to the optional out-pointers. */
kvs_status kvs_store_reconcile(kvs_store *s, size_t *files_removed, size_t *rows_removed, char *err,
                               size_t errlen) KVS_WUR;

/* Result of a publish. */
typedef struct kvs_publish_result {
    uint8_t id[KVS_SHA256_LEN]; /* the blob id (new or existing) */
    int already;                /* 1: this publisher already lists (document, model, codec);
                                   nothing written, id is the existing blob's */
} kvs_publish_result;

/* Publishes the blob whose bytes are read from fd (to EOF) or from path. The bytes go to a
 * temp file (fsynced) while being hashed; a declared id/size must match them
 * (KVS_ERR_MISMATCH). Then, in one BEGIN IMMEDIATE transaction, the file is renamed to its
 * content address and the rows are inserted. A listing belongs to its publisher: the same
 * (document, model, codec) again from the same publisher is a no-op reporting the existing
 * id; from another publisher it is a listing of its own, whatever was listed before. A
 * revoked publisher key is KVS_ERR_REVOKED. The title, source and media type shown for the
 * listing are info's (the blob's signed manifest). Strings in info are borrowed. */
kvs_status kvs_store_publish_fd(kvs_store *s, const kvs_blob *info, int fd, kvs_publish_result *res, char *err,
                                size_t errlen) KVS_WUR;
kvs_status kvs_store_publish_file(kvs_store *s, const kvs_blob *info, const char *path, kvs_publish_result *res,
                                  char *err, size_t errlen) KVS_WUR;
/* kvs_store_publish_fd for a file the store may keep as it is: fd is a nameless file made in
 * the store's tmp/ with O_TMPFILE (kvp_store_tmpfd), read from its start. It is linked there,
 * hashed where it lies and renamed into place, so the bytes are written once, not twice; the
 * caller must not write to fd afterwards (it still closes it). A file with a name, or one the
 * kernel will not link, is copied as kvs_store_publish_fd does. */
kvs_status kvs_store_publish_own(kvs_store *s, const kvs_blob *info, int fd, kvs_publish_result *res, char *err,
                                 size_t errlen) KVS_WUR;

/* Looks up one blob. On success *out is a new kvs_blob (free with kvs_blob_free); an unknown
 * id is KVS_ERR_NOTFOUND. */
kvs_status kvs_store_blob_get(kvs_store *s, const uint8_t id[KVS_SHA256_LEN], kvs_blob **out, char *err,
                              size_t errlen) KVS_WUR;
/* Writes the path of a blob's file into out (KVS_ERR_NOTFOUND when no such row,
 * KVS_ERR_INVALID when outlen is too small). */
kvs_status kvs_store_blob_path(kvs_store *s, const uint8_t id[KVS_SHA256_LEN], char *out, size_t outlen, char *err,
                               size_t errlen) KVS_WUR;

/* Catalog filters; NULL / 0 fields do not filter. */
typedef struct kvs_query {
    const uint8_t *model_fp;    /* KVS_SHA256_LEN bytes */
    const uint8_t *doc_sha256;  /* KVS_SHA256_LEN bytes */
    const char *title_contains; /* case-insensitive (ASCII) substring of the listing's title */
    const uint8_t *publisher_id; /* KVS_KEYID_LEN bytes: one publisher's listings */
    const uint8_t *context_sha256; /* KVS_SHA256_LEN bytes: listings made after this declared
                                    context (the hash of its ids) */
    int no_context;             /* 1: only listings without a declared context */
    int64_t now;                /* > 0: hide blobs expired at this time */
    size_t limit;               /* 0 = KVS_QUERY_DEFAULT_LIMIT; capped at KVS_QUERY_MAX_LIMIT */
    size_t offset;
} kvs_query;

/* A page of catalog rows, newest first (created desc, then id). Listings of revoked publisher
 * keys are never in it. */
typedef struct kvs_list kvs_list;
kvs_status kvs_store_catalog(kvs_store *s, const kvs_query *q, kvs_list **out, char *err, size_t errlen) KVS_WUR;
size_t kvs_list_count(const kvs_list *l);
/* Number of rows matching the filters, ignoring limit/offset (for pagination). */
uint64_t kvs_list_total(const kvs_list *l);
/* The i-th row, borrowed from l; NULL when i is out of range. */
const kvs_blob *kvs_list_get(const kvs_list *l, size_t i);
void kvs_list_free(kvs_list *l);

/* Removes blobs expired at now (rows, then files), documents/models/tokenizers no blob
 * references any more, and then reconciles. Counts go to the optional out-pointer. */
kvs_status kvs_store_gc(kvs_store *s, int64_t now, size_t *blobs_removed, char *err, size_t errlen) KVS_WUR;

/* ---- purchases and access tokens ---- */

/* Records a purchase of blob id (KVS_ERR_REVOKED when its publisher key is revoked) and
 * creates its access token: 32 random bytes written to
 * token (shown to the caller once; only its SHA-256 is stored), valid until expires (unix
 * seconds, must be > now) for max_downloads (>= 1) downloads. buyer is free text (may be
 * NULL). *purchase_id (optional) receives the purchase row id. */
kvs_status kvs_store_purchase(kvs_store *s, const uint8_t id[KVS_SHA256_LEN], const char *buyer, int64_t now,
                              int64_t expires, uint32_t max_downloads, uint8_t token[KVS_TOKEN_LEN],
                              int64_t *purchase_id, char *err, size_t errlen) KVS_WUR;

/* The download budget is counted in bytes: max_downloads x the blob's size at purchase.
 * Checks an access token for a GET of `bytes` bytes of blob id at time now and, when it is
 * good, spends them, atomically (one BEGIN IMMEDIATE transaction). Returns KVS_OK,
 * KVS_TOKEN_UNKNOWN, KVS_TOKEN_WRONG_BLOB, KVS_ERR_REVOKED, KVS_TOKEN_EXPIRED or
 * KVS_TOKEN_EXHAUSTED (fewer bytes left than asked; checked in that order), or an error;
 * bytes 0 only checks (HEAD).
 * *downloads_left (whole downloads left after this one) and *purchase_id are optional. */
kvs_status kvs_store_token_spend(kvs_store *s, const uint8_t token[KVS_TOKEN_LEN], const uint8_t id[KVS_SHA256_LEN],
                                 int64_t now, uint64_t bytes, uint32_t *downloads_left, int64_t *purchase_id,
                                 char *err, size_t errlen) KVS_WUR;
/* Gives back bytes a spent GET did not deliver (the client went away, the server stopped), so
 * resuming it costs only what is still missing; they come off the purchase's delivered bytes
 * too (kvs_store_token_spend counts them as delivered when it spends them). A purchase whose
 * publisher was revoked while the GET held its budget is refunded at now, as a revocation
 * refunds every purchase whose token could still download. */
kvs_status kvs_store_token_refund(kvs_store *s, const uint8_t token[KVS_TOKEN_LEN], uint64_t bytes, int64_t now,
                                  char *err, size_t errlen) KVS_WUR;

/* ---- publishers ---- */

enum { KVS_NAME_MAX = 200 };

typedef struct kvs_publisher {
    uint8_t key_id[KVS_KEYID_LEN];
    uint8_t public_key[KVS_PUBKEY_LEN];
    char name[KVS_NAME_MAX + 1];
    int has_credential;         /* 0: this publisher cannot upload */
    int64_t created;
} kvs_publisher;

/* Registers a publisher. The credential (cred_len bytes, NULL = none) is stored only as its
 * SHA-256. An already registered key id is KVS_ERR_EXISTS; a name longer than KVS_NAME_MAX
 * is KVS_ERR_INVALID. */
kvs_status kvs_store_publisher_add(kvs_store *s, const uint8_t key_id[KVS_KEYID_LEN],
                                   const uint8_t public_key[KVS_PUBKEY_LEN], const char *name, const void *cred,
                                   size_t cred_len, int64_t now, char *err, size_t errlen) KVS_WUR;
/* Fills *out; KVS_ERR_NOTFOUND for an unknown key id. */
kvs_status kvs_store_publisher_get(kvs_store *s, const uint8_t key_id[KVS_KEYID_LEN], kvs_publisher *out,
                                   char *err, size_t errlen) KVS_WUR;
/* KVS_OK when cred matches the publisher's stored credential hash; KVS_ERR_NOTFOUND for an
 * unknown key id; KVS_ERR_CREDENTIAL when it does not match or none is stored. */
kvs_status kvs_store_publisher_check(kvs_store *s, const uint8_t key_id[KVS_KEYID_LEN], const void *cred,
                                     size_t cred_len, char *err, size_t errlen) KVS_WUR;

/* Revokes a publisher key (known to the store as a publisher or only as a blob signer): its
 * listings leave the catalog at once, its blobs are neither sold (kvs_store_purchase) nor
 * served to token holders (kvs_store_token_spend: KVS_ERR_REVOKED) nor published again, and
 * every purchase of them whose token was still usable at now gets a refunds row of its price
 * (reason is recorded with the revocation and each refund). All in one transaction. Revoking
 * a revoked key again changes nothing (counts 0). *blobs and *refunds (optional) get how
 * many listings were withdrawn and how many purchases refunded. */
kvs_status kvs_store_publisher_revoke(kvs_store *s, const uint8_t key_id[KVS_KEYID_LEN], const char *reason,
                                      int64_t now, size_t *blobs, size_t *refunds, char *err,
                                      size_t errlen) KVS_WUR;
/* *revoked = 1 and *at (optional) the revocation time when key_id is revoked, else 0. */
kvs_status kvs_store_key_revoked(kvs_store *s, const uint8_t key_id[KVS_KEYID_LEN], int *revoked, int64_t *at,
                                 char *err, size_t errlen) KVS_WUR;

/* ---- listings ---- */

/* What kvs_store_listing_set changes; a field left unset keeps its value. */
typedef struct kvs_listing_update {
    const char *title;     /* NULL = keep */
    int set_price;
    uint64_t price;
    int set_expires;
    int64_t expires;       /* unix seconds; 0 = never */
} kvs_listing_update;

/* Changes a listing's price, title or expiry in the index without touching the blob (its signed
 * manifest keeps what was published; the next snapshot carries the change). An unknown id is
 * KVS_ERR_NOTFOUND, a revoked publisher's listing KVS_ERR_REVOKED, a title over 4096 bytes or a
 * price over 2^63-1 KVS_ERR_INVALID. */
kvs_status kvs_store_listing_set(kvs_store *s, const uint8_t id[KVS_SHA256_LEN], const kvs_listing_update *u,
                                 char *err, size_t errlen) KVS_WUR;

/* ---- the store's signing keys and signed catalog snapshots (spec/repository.md) ---- */

typedef enum kvs_key_state { KVS_KEY_ACTIVE = 0, KVS_KEY_RETIRED = 1, KVS_KEY_REVOKED = 2 } kvs_key_state;

typedef struct kvs_signing_key {
    uint8_t key_id[KVS_KEYID_LEN];
    uint8_t public_key[KVS_PUBKEY_LEN];
    int64_t created;
    kvs_key_state state;
    int64_t cutoff;         /* retired or revoked: signatures dated at or after this do not count */
} kvs_signing_key;

/* "active", "retired" or "revoked". */
const char *kvs_key_state_str(kvs_key_state st);

/* Makes a new signing key (DIR/signing/<key id>.key, 0600, and .pub) and makes it the active
 * one; the key active until now, if any, is retired with the given cut-off (unix seconds,
 * >= its creation; 0 = now), all in one transaction after the files are written. *made
 * (optional) describes the new key. */
kvs_status kvs_store_key_rotate(kvs_store *s, int64_t now, int64_t cutoff, kvs_signing_key *made, char *err,
                                size_t errlen) KVS_WUR;
/* Revokes a signing key: it is listed as revoked with cut-off now, and as a publisher key it is
 * revoked too (kvs_store_publisher_revoke: the blobs it signed leave the catalog and the
 * snapshot). A revoked active key leaves the store without one until the next rotate. */
kvs_status kvs_store_key_revoke(kvs_store *s, const uint8_t key_id[KVS_KEYID_LEN], const char *reason, int64_t now,
                                char *err, size_t errlen) KVS_WUR;
/* Every signing key, oldest first: *keys is a new array of *n (caller frees; NULL when none). */
kvs_status kvs_store_key_list(kvs_store *s, kvs_signing_key **keys, size_t *n, char *err, size_t errlen) KVS_WUR;
/* Loads the active signing key's private half: *out owns it. No active key: KVS_ERR_NOTFOUND. */
kvs_status kvs_store_key_active(kvs_store *s, kvc_key **out, char *err, size_t errlen) KVS_WUR;

/* A counter that grows with every change a snapshot shows (listings published, changed or
 * removed; revocations; signing keys rotated or revoked). */
kvs_status kvs_store_catalog_gen(kvs_store *s, uint64_t *gen, char *err, size_t errlen) KVS_WUR;

/* A signed snapshot, as kvs_store_snapshot made it. */
typedef struct kvs_snapshot {
    char *bytes;           /* the envelope file, NUL-terminated (len bytes); caller frees */
    size_t len;
    char *payload;         /* the signed payload JSON, NUL-terminated; caller frees */
    uint64_t version;      /* this signing key's snapshot version for this catalog */
    int64_t issued, expires;
    uint64_t gen;          /* the kvs_store_catalog_gen the listing was read at */
    size_t n_blobs;
} kvs_snapshot;

/* Lists every current listing at now (not expired, publisher not revoked), the signing keys and
 * the revoked key ids; takes key's version for it (kept in the index with the catalog
 * generation it was signed at, so every process signing with this key counts on: the same
 * catalog keeps its version, a changed one gets the next); and signs the payload with key
 * (private): the envelope of spec/repository.md. ttl: seconds until it expires (>= 1). */
kvs_status kvs_store_snapshot(kvs_store *s, const kvc_key *key, int64_t now, int64_t ttl, kvs_snapshot *out,
                              char *err, size_t errlen) KVS_WUR;

/* The /v1/keys document (spec/http-api.md): the publisher keys of DIR/keys with their names,
 * the revoked ids, and the signing keys with their state. *out is a new NUL-terminated string
 * (caller frees). */
kvs_status kvs_store_keys_document(kvs_store *s, char **out, size_t *len, char *err, size_t errlen) KVS_WUR;

/* ---- download log ---- */

/* Appends one download record. purchase_id 0 = free download; client may be NULL; status is
 * the HTTP status sent. */
kvs_status kvs_store_log_download(kvs_store *s, const uint8_t id[KVS_SHA256_LEN], int64_t purchase_id,
                                  const char *client, uint64_t bytes, int status, int64_t now, char *err,
                                  size_t errlen) KVS_WUR;
/* Number of log rows for blob id (all blobs when id is NULL). */
kvs_status kvs_store_download_count(kvs_store *s, const uint8_t *id, uint64_t *count, char *err,
                                    size_t errlen) KVS_WUR;

/* ---- housekeeping ---- */

/* What kvs_store_prune deletes; a time of 0 turns that kind off. Times are unix seconds. */
typedef struct kvs_prune_policy {
    int64_t now;
    /* unpaid purchases created before this: free ones, and priced ones under which no byte was
     * ever delivered, once their token can no longer download (expired, used up or gone) and
     * no refund names them; their token rows go with them */
    int64_t unpaid_before;
    int64_t tokens_expired_before; /* access tokens that expired before this */
    int64_t log_before;            /* download log rows written before this */
    uint32_t batch;                /* rows of each kind per call, 1..10000 */
} kvs_prune_policy;

typedef struct kvs_prune_counts {
    uint64_t purchases, tokens, log_rows;
} kvs_prune_counts;

/* Deletes at most p->batch rows of each kind, oldest first, in one short write transaction,
 * so a caller can prune a large backlog in steps without holding the write lock for long.
 * *c gets what this call deleted: call again while any count equals p->batch. Purchases
 * under which bytes were delivered (and were not free) are the ledger and never pruned. */
kvs_status kvs_store_prune(kvs_store *s, const kvs_prune_policy *p, kvs_prune_counts *c, char *err,
                           size_t errlen) KVS_WUR;

#endif
