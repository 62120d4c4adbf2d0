/* fetch.h: the loader side's network and cache library: an HTTPS client (libcurl) with
 * resumable, retrying, stall-guarded downloads; the local content-addressed blob cache; and
 * "get a verified blob" (cache hit, or a download streamed through the verifying kvb reader).
 * Certificate verification is always on. Statuses are kvf_status; nothing here prints. */
#ifndef KVPUB_FETCH_H
#define KVPUB_FETCH_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "crypto/kvcrypto.h"
#include "format/kvblob.h"

#define KVF_WUR __attribute__((warn_unused_result))

/* Stable values (never renumber). */
typedef enum kvf_status {
    KVF_OK = 0,
    KVF_ERR_USAGE = 1,    /* bad argument */
    KVF_ERR_IO = 2,       /* local file or directory */
    KVF_ERR_NOMEM = 3,
    KVF_ERR_NET = 4,      /* connection, TLS, timeout, 5xx, still failing after the retries */
    KVF_ERR_HTTP = 5,     /* the server answered with a non-retryable error (404, ...) */
    KVF_ERR_DENIED = 6,   /* 401/402/403: token missing, invalid, expired or used up */
    KVF_ERR_VERIFY = 7,   /* the blob failed verification; the kvb_status says which way */
    KVF_ERR_REFUSED = 8,  /* a verified blob that does not fit: other model, tokenizer, RoPE */
    KVF_ERR_TOO_BIG = 9,  /* the server sent more bytes than the blob's manifest declares */
    KVF_ERR_ENGINE = 10,  /* the engine failed (context full, ...) */
    KVF_ERR_SNAPSHOT = 11, /* a catalog snapshot that does not verify: malformed, bad signature,
                              untrusted, revoked or retired signer (spec/repository.md) */
    KVF_ERR_ROLLBACK = 12, /* a snapshot older than one this client has seen (rollback) */
    KVF_ERR_FROZEN = 13,   /* a snapshot past its expiry (a mirror frozen in time) */
    KVF_ERR_UNLISTED = 14, /* the verified snapshot does not list the blob asked for */
} kvf_status;

/* Writes the printf-style message to err (if non-NULL) and returns st. */
#define kvf_fail(err, errlen, st, ...) ((kvf_status)base_fail((st), (err), (errlen), __VA_ARGS__))

/* ---- HTTPS client ---- */

/* Progress of a download: have of total bytes (total 0 = unknown), rate the mean bytes/s so
 * far; done = 1 once after the last call, when the download is over (a bar may be erased). */
typedef void (*kvf_progress_fn)(void *user, uint64_t have, uint64_t total, double rate, int done);

/* Zero-initialise; zero fields take the defaults noted. */
typedef struct kvf_http_opts {
    const char *cacert;        /* PEM bundle to trust instead of the system's (test servers) */
    const char *token;         /* Bearer token for priced blobs; NULL = none */
    const char *token_origin;  /* the origin that sold the token ("https://host:port", any URL of
                                  it will do): the token is sent only to URLs of exactly this
                                  scheme, host and port, never to another (a mirror, a
                                  redirect). NULL: kvf_get binds it to its server's origin, or
                                  with token_bind_url to its URL's; kvf_http_* send it nowhere */
    int token_bind_url;        /* 1 = the token was given for this very URL (the same command
                                  line): kvf_get may send it to the URL's origin */
    long connect_timeout_s;    /* 0 = 10 */
    long stall_timeout_s;      /* abort a transfer slower than stall_min_bps for this long; 0 = 20 */
    long stall_min_bps;        /* 0 = 1024 bytes/s */
    int max_retries;           /* transient failures retried this many times; 0 = 6, <0 = none */
    double backoff_s;          /* first retry delay, doubled each time, capped at 8 s; 0 = 0.5 */
    kvf_progress_fn progress;  /* called while bytes arrive (at most every 0.1 s); NULL = none */
    void *progress_user;       /* passed to progress */
    int allow_http;            /* 1 = accept plain http:// (never the default) */
    uint64_t max_recv_bps;     /* cap on the download rate in bytes/s; 0 = none */
    int64_t min_avg_bps;       /* an attempt whose mean rate, once it has run for the stall
                                  window (stall_timeout_s), is below this is abandoned and
                                  retried like a stall (the deadline bounds the retries);
                                  0 = KVF_DEFAULT_MIN_AVG_BPS, <0 = no floor */
    double timeout_s;          /* a whole download, every attempt and wait together; 0 = 60 s
                                  plus the body's length at the minimum mean rate (60 s while
                                  the length is unknown; none when the floor is off); <0 = none */
    double start_s;            /* when that whole download began (base_now_s), so that calls
                                  going on with one body share one deadline; 0 = this call */
    const char *if_none_match; /* revalidation: the ETag of the copy the caller holds, and */
    const char *if_modified_since; /* its Last-Modified; sent on a request from byte 0 only. A 304
                                  answer then ends kvf_http_download with KVF_OK, no body and
                                  stats->not_modified set */
} kvf_http_opts;

#define KVF_DEFAULT_MIN_AVG_BPS (32 * 1024)
#define KVF_VALIDATOR_MAX 192 /* longest ETag or Last-Modified value kept */

/* Receives the body bytes in order. Returning non-OK aborts the download without retrying
 * (the status is returned from kvf_http_download and err is kept). */
typedef kvf_status (*kvf_sink_fn)(void *user, const void *data, size_t len, char *err, size_t errlen);
/* Called when the server ignored a Range request and sends the body from byte 0: the sink
 * must discard what it holds. Non-OK aborts. */
typedef kvf_status (*kvf_restart_fn)(void *user, char *err, size_t errlen);

/* Counters of one download, for reports and tests. */
typedef struct kvf_http_stats {
    int attempts;              /* HTTP requests made */
    int resumed;               /* requests that asked for a Range and got 206 */
    uint64_t bytes;            /* body bytes handed to the sink */
    double seconds;
    long last_http_code;
    int not_modified;          /* the server answered 304 to a revalidation */
    char etag[KVF_VALIDATOR_MAX + 1];          /* validators of the last response ("" = none; */
    char last_modified[KVF_VALIDATOR_MAX + 1]; /* values with control characters are dropped) */
} kvf_http_stats;

/* GETs url, asking for bytes [offset, end) with a Range header when offset > 0 or end > 0
 * (end 0 = to the end of the file), and hands the body to sink. Transient failures (connect,
 * TLS handshake reset, timeout/stall, a transfer cut short, 408/429/5xx) are retried with
 * exponential backoff, each retry resuming with Range from the last byte the sink accepted.
 * 401/402/403 give KVF_ERR_DENIED, other 4xx KVF_ERR_HTTP, a certificate that does not verify
 * KVF_ERR_NET at once. A 200 answer to a request with a Range that does not start at 0 calls
 * restart (NULL: KVF_ERR_HTTP). stats may be NULL. */
kvf_status kvf_http_download(const kvf_http_opts *o, const char *url, uint64_t offset, uint64_t end,
                             kvf_sink_fn sink, kvf_restart_fn restart, void *user,
                             kvf_http_stats *stats, char *err, size_t errlen) KVF_WUR;

/* Times a small ranged GET (bytes [0, bytes)) of url, the measure `--mirror-order speed` ranks
 * sources by: *seconds from the request to the last byte. Not retried; bounded by the connect
 * timeout. KVF_OK, or the failure (the source is then ranked last). */
kvf_status kvf_http_probe(const kvf_http_opts *o, const char *url, uint64_t bytes, double *seconds, char *err,
                          size_t errlen) KVF_WUR;

/* One request with a small body in memory (at most max bytes, else KVF_ERR_TOO_BIG):
 * method "GET" or "POST"; json_body (NUL-terminated) is sent as application/json when non-NULL.
 * On success *out is malloc'd NUL-terminated (caller frees) and *code the HTTP status (any
 * status is success here: the caller decides). Not retried. */
kvf_status kvf_http_request(const kvf_http_opts *o, const char *method, const char *url,
                            const char *json_body, size_t max, char **out, size_t *outlen,
                            long *code, char *err, size_t errlen) KVF_WUR;

/* ---- local blob cache: verified blobs named by the SHA-256 of the whole file (the blob id),
 * partial downloads kept for resumption, LRU eviction under a cap ---- */

#define KVF_CACHE_DEFAULT_MAX ((uint64_t)10 << 30) /* 10 GiB */

typedef struct kvf_cache kvf_cache;

/* Opens (creating, mode 0700) the cache directory: dir if non-NULL, else $KVPUB_CACHE_DIR,
 * else $XDG_CACHE_HOME/kvpub/blobs, else $HOME/.cache/kvpub/blobs. max_bytes: the size cap
 * (0 = $KVPUB_CACHE_MAX if set, else KVF_CACHE_DEFAULT_MAX). On success *out owns the handle. */
kvf_status kvf_cache_open(const char *dir, uint64_t max_bytes, kvf_cache **out,
                          char *err, size_t errlen) KVF_WUR;
void kvf_cache_free(kvf_cache *c); /* NULL is a no-op */

const char *kvf_cache_dir(const kvf_cache *c);
uint64_t kvf_cache_max(const kvf_cache *c);

/* Path of the blob with this id if it is in the cache (and marks it used now for LRU):
 * returns 1 and fills path, else 0. */
int kvf_cache_lookup(kvf_cache *c, const uint8_t id[32], char *path, size_t pathlen);

/* Path where a partial download named key (64 hex digits: the blob id when known, else the
 * SHA-256 of the URL) is kept between attempts. Returns 0, or -1 if pathlen is too small. */
int kvf_cache_part_path(const kvf_cache *c, const char *key, char *path, size_t pathlen);

/* Moves a complete, verified file (on the same filesystem, e.g. a part path) into the cache
 * under id: fsync, rename, fsync of the directory; then evicts least recently used blobs until
 * the total fits the cap (never the one just added). path gets the final path. */
kvf_status kvf_cache_insert(kvf_cache *c, const char *src, const uint8_t id[32], char *path,
                            size_t pathlen, char *err, size_t errlen) KVF_WUR;

/* Removes the blob with this id (a cached file that no longer verifies), and its decoded copy. */
void kvf_cache_remove(kvf_cache *c, const uint8_t id[32]);

/* What a URL served last: the blob id and the HTTP validators it came with. */
typedef struct kvf_url_rec {
    uint8_t id[32];
    char etag[KVF_VALIDATOR_MAX + 1];          /* "" = the server sent none */
    char last_modified[KVF_VALIDATOR_MAX + 1];
} kvf_url_rec;

/* Remembers what url served, so a later get of a URL that does not name its id can revalidate
 * the cached blob (If-None-Match / If-Modified-Since) instead of downloading it again. get
 * returns 1 and fills rec if known (an older record without validators reads as having none). */
void kvf_cache_url_put(kvf_cache *c, const char *url, const kvf_url_rec *rec);
int kvf_cache_url_get(kvf_cache *c, const char *url, kvf_url_rec *rec);

/* Evicts least recently used blobs with their decoded copies (by the later access time of the
 * two; lookup sets the blob's explicitly), decoded copies whose blob is gone, and
 * abandoned partial downloads (by their last write; never one a kvfetch is writing) until the
 * total size of both is at most the cap; keep (may be NULL) is never evicted. Returns the
 * number of files removed. */
int kvf_cache_evict(kvf_cache *c, const uint8_t *keep);

/* ---- mirrors: other repositories that carry the same blobs (spec/repository.md section 4) ---- */

#define KVF_MIRRORS_MAX 16 /* mirrors per download, besides the primary source */
#define KVF_SOURCES_MAX (KVF_MIRRORS_MAX + 1)

#define KVF_MIRROR_URL_MAX 1024 /* bytes of a mirror's base URL, its NUL included */

/* A list of repository base URLs (https://host[:port][/prefix]); the blob with id ID is at
 * {base}/v1/blobs/{ID}. Zero-initialise; it owns no memory (kvf_mirrors_clear only empties it). */
typedef struct kvf_mirror_list {
    char url[KVF_MIRRORS_MAX][KVF_MIRROR_URL_MAX];
    int n;
} kvf_mirror_list;

/* Appends url (copied, trailing '/' removed) unless the list holds it already. KVF_ERR_USAGE for
 * a URL that is not https://host... (http:// when allow_http), one longer than
 * KVF_MIRROR_URL_MAX - 1 bytes, or one more than KVF_MIRRORS_MAX; err says which. */
kvf_status kvf_mirrors_add(kvf_mirror_list *l, const char *url, int allow_http, char *err, size_t errlen) KVF_WUR;
/* Appends the mirrors of a mirrors file's text (len bytes): one base URL per line; blank lines
 * and everything from a '#' at the start of a line or after a blank are ignored; surrounding
 * blanks are trimmed. KVF_ERR_USAGE names the first bad line ("line 3: ..."). */
kvf_status kvf_mirrors_parse(kvf_mirror_list *l, const char *text, size_t len, int allow_http, char *err,
                             size_t errlen) KVF_WUR;
void kvf_mirrors_clear(kvf_mirror_list *l);

/* The order sources are tried in. */
typedef enum kvf_mirror_order {
    KVF_ORDER_GIVEN = 0, /* the primary source, then the mirrors as listed */
    KVF_ORDER_SPEED = 1, /* by the time of a small ranged GET of each (kvf_http_probe), fastest
                            first; sources whose probe failed last, in the given order */
} kvf_mirror_order;

/* What one source did for a download (kvf_get_result.sources). */
typedef struct kvf_source_report {
    char url[1024];          /* the blob URL asked (cut at 1023 bytes) */
    int mirror;              /* 0 = the primary source (URL, --server, snapshot), 1 = a mirror */
    int used;                /* 1 = a download was asked of it */
    int ok;                  /* 1 = it served its part of the blob and every byte verified */
    int abandoned;           /* 1 = it failed (why says how) and the download went on without it */
    kvf_status st;           /* the failure, with abandoned */
    uint64_t bytes;          /* verified bytes it contributed */
    uint64_t from;           /* the first byte it was asked for */
    double probe_s;          /* --mirror-order speed: the probe's time; -1 = not probed or failed */
    char why[512];
} kvf_source_report;

/* ---- get a verified blob ---- */

typedef struct kvf_get_opts {
    const char *url;         /* a blob URL (API or static mirror); or NULL and server + blob_id */
    const char *server;      /* API base, e.g. https://127.0.0.1:8443: GET {server}/v1/blobs/{id} */
    const char *blob_id;     /* 64 hex digits; required with server; with url an extra check
                                (a URL whose last path segment is 64 hex names its id too) */
    const kvc_trust *trust;  /* signer must be trusted and not revoked (required) */
    int64_t now;             /* unix seconds for expiry; 0 = time(NULL) */
    int trust_cached;        /* 1 = a cache hit is returned without re-verifying (the caller
                                verifies while loading); 0 = re-verify it (hashes only) */
    const kvf_mirror_list *mirrors; /* more sources of the same blob (needs its id: with url
                                alone it is used only when the URL names the id); NULL = none.
                                With mirrors, server and url may both be NULL */
    kvf_mirror_order order;
    int parallel;            /* 2 = fetch two halves of the chunks from two sources at once, when
                                there are two sources and at least two chunks left; 0/1 = one
                                source at a time */
    kvf_http_opts http;
    int no_decoded_copy;     /* 1 = do not write the blob's decoded copy (spec/kvblob.md 4.2)
                                beside it in the cache */
} kvf_get_opts;

typedef struct kvf_get_result {
    char path[PATH_MAX];     /* the verified blob, in the cache */
    uint8_t id[32];          /* SHA-256 of the whole file */
    uint64_t bytes;
    int from_cache;          /* 1 = the cached blob (for a URL without an id: after revalidation) */
    int revalidated;         /* a URL without an id was asked whether it changed: 304, it had not */
    int stale;               /* that question got no answer (network error): the cached blob is
                                returned, still verified, and stale_why says what failed */
    char stale_why[256];
    uint64_t reused;         /* bytes of an earlier partial download that were kept */
    int discarded_partial;   /* an earlier partial download failed verification and was dropped */
    kvf_http_stats http;
    double seconds;
    kvb_status vst;          /* why verification failed, with KVF_ERR_VERIFY */
    kvf_source_report sources[KVF_SOURCES_MAX]; /* the sources in the order they were ranked */
    int n_sources;
    int parallel_used;       /* two sources served chunk ranges at once */
    kvb_manifest *manifest;  /* the verified manifest when known; owned, kvf_get_result_clear */
    kvb_header header;
    char decoded[PATH_MAX];  /* the blob's decoded copy beside it ("" = none: the blob has no
                                raw digests, no_decoded_copy, or it could not be written) */
    double decoded_s;        /* seconds writing it (0 when it was there already) */
    char decoded_note[256];  /* why it could not be written (disk full, ...), or "" */
} kvf_get_result;

/* Gets a verified blob into the cache. A URL or id that names the blob is immutable: a cached
 * copy is used without the network. With mirrors, the sources are tried one after another
 * (o->order): a source that fails (network after its retries, an HTTP error, a stall, more
 * bytes than declared, or bytes that do not verify against the signed manifest) is abandoned,
 * the partial file cut back to the last verified section, and the download goes on from there
 * with the next source; res->sources says what each did. A blob is accepted only when every
 * byte verified; when every source failed, the last failure is returned. A URL without an id (a mirror's "latest.kvb") is
 * revalidated with the validators it last came with, and downloaded again when it changed or
 * when the server sent none. Statuses: KVF_ERR_VERIFY (res->vst says how; the
 * partial download is deleted), KVF_ERR_REFUSED (a valid blob with another id than asked),
 * KVF_ERR_TOO_BIG (more bytes than the manifest declares), KVF_ERR_NET (kept for a later
 * resume), KVF_ERR_DENIED, KVF_ERR_HTTP, KVF_ERR_IO, KVF_ERR_USAGE.
 * Then, for a blob whose manifest carries decoded digests (f16-zstd), the decoded copy is
 * written beside it (res->decoded) unless o->no_decoded_copy or it is there already: a blob
 * whose decoded bytes differ from those signed digests fails as KVF_ERR_VERIFY and is removed;
 * a copy that cannot be written is only noted (res->decoded_note). */
kvf_status kvf_get(kvf_cache *cache, const kvf_get_opts *o, kvf_get_result *res,
                   char *err, size_t errlen) KVF_WUR;
void kvf_get_result_clear(kvf_get_result *res); /* frees the manifest; the struct stays usable */

/* ---- signed catalog snapshots (spec/repository.md) ---- */

#define KVF_SNAPSHOT_MAX ((size_t)64 << 20) /* largest snapshot file read */

/* One listing of a snapshot; strings are borrowed from the snapshot. */
typedef struct kvf_listing {
    uint8_t id[32];
    uint64_t bytes;                /* the blob file's size */
    uint8_t doc_sha256[32];
    const char *title, *media_type;
    uint64_t doc_bytes;
    uint8_t model_fp[32];
    const char *model_arch;
    uint8_t tokenizer_fp[32];
    uint32_t n_context;            /* tokens of the declared context, 0 = none */
    uint8_t context_sha256[32];
    const char *codec;
    uint64_t n_tokens, price;
    int64_t created, expires;      /* unix seconds; expires 0 = never */
    uint8_t publisher_id[KVC_KEYID_LEN];
} kvf_listing;

/* A verified, parsed snapshot. Opaque. */
typedef struct kvf_snapshot kvf_snapshot;

/* Verifies a snapshot file (len bytes) and parses it, in the order spec/repository.md gives:
 * envelope, a signature by a key of trust that is neither revoked nor (per the payload)
 * retired before the snapshot was issued, then the payload. Statuses: KVF_ERR_SNAPSHOT (with
 * the reason), KVF_ERR_FROZEN when now >= its expiry (now 0 = the clock), KVF_ERR_NOMEM. On
 * KVF_OK *out owns the snapshot. Says nothing about rollback: see kvf_snapshot_remember. */
kvf_status kvf_snapshot_open(const void *bytes, size_t len, const kvc_trust *trust, int64_t now, kvf_snapshot **out,
                             char *err, size_t errlen) KVF_WUR;
void kvf_snapshot_free(kvf_snapshot *s); /* NULL is a no-op */

uint64_t kvf_snapshot_version(const kvf_snapshot *s);
const uint8_t *kvf_snapshot_signer(const kvf_snapshot *s); /* KVC_KEYID_LEN bytes */
int64_t kvf_snapshot_issued(const kvf_snapshot *s);
int64_t kvf_snapshot_expires(const kvf_snapshot *s);
/* The verified payload bytes (what the signature covers), borrowed. */
const char *kvf_snapshot_payload(const kvf_snapshot *s, size_t *len);
size_t kvf_snapshot_count(const kvf_snapshot *s);
const kvf_listing *kvf_snapshot_get(const kvf_snapshot *s, size_t i); /* NULL when out of range */
/* The listing of blob id, or NULL when the snapshot does not list it. */
const kvf_listing *kvf_snapshot_find(const kvf_snapshot *s, const uint8_t id[32]);
/* Whether listing l is still current at now (0 = the clock): a listing's expiry drops it from
 * the catalog without a new snapshot version (spec/repository.md 2.1), so clients check it. */
int kvf_listing_current(const kvf_listing *l, int64_t now);

/* Whether a signature by key_id dated signed_at (a blob's created time) still counts under
 * this snapshot's key list: KVF_OK for a key it lists as active or does not list, and for a
 * retired key before its cut-off; KVF_ERR_SNAPSHOT otherwise (err says which cut-off). */
kvf_status kvf_snapshot_key_ok(const kvf_snapshot *s, const uint8_t key_id[KVC_KEYID_LEN], int64_t signed_at,
                               char *err, size_t errlen) KVF_WUR;

/* What kvf_snapshot_resolve picks from; NULL fields do not filter. */
typedef struct kvf_resolve {
    const uint8_t *doc_sha256;     /* required */
    const uint8_t *model_fp;       /* required */
    const uint8_t *context_sha256; /* only listings after this declared context */
    int no_context;                /* 1: only listings without one */
    const char *codec;
    const uint8_t *publisher_id;
    int64_t now;                   /* expired listings are passed over; 0 = the clock */
} kvf_resolve;

/* The one current listing for document and model: among those matching, the lossless codecs
 * first (f16-zstd, f16, then q8, q4), then the newest. KVF_ERR_UNLISTED when none matches. */
kvf_status kvf_snapshot_resolve(const kvf_snapshot *s, const kvf_resolve *r, const kvf_listing **out, char *err,
                                size_t errlen) KVF_WUR;

/* Rollback protection: compares the snapshot's version with the highest one recorded for its
 * signer in dir (a file per key id, created 0700/0644), under a lock: lower is
 * KVF_ERR_ROLLBACK, the same or higher is KVF_OK and a higher one is recorded. *seen
 * (optional) gets the version recorded before (0 = none). */
kvf_status kvf_snapshot_remember(const char *dir, const kvf_snapshot *s, uint64_t *seen, char *err,
                                 size_t errlen) KVF_WUR;

/* Reads a snapshot from a local file, or GETs it from a repository: `where` is a file path, a
 * repository base URL (https://host[:port][/prefix], the snapshot is then {base}/v1/snapshot)
 * or that snapshot URL itself. *bytes is new (caller frees, *len bytes, NUL-terminated); base
 * (optional, basecap bytes) gets the repository base URL ("" for a file). */
kvf_status kvf_snapshot_fetch(const kvf_http_opts *o, const char *where, char **bytes, size_t *len, char *base,
                              size_t basecap, char *err, size_t errlen) KVF_WUR;

/* Finds the key whose id is key_id in a key document (len bytes): a PEM public key, or the JSON
 * of GET /v1/keys (its "keys" and "signing" lists). The id is computed from the public key
 * itself, never taken from the document. KVF_ERR_REFUSED when no key there has this id. On
 * KVF_OK *out owns the public key. */
kvf_status kvf_keys_find(const char *doc, size_t len, const uint8_t key_id[KVC_KEYID_LEN], kvc_key **out, char *err,
                         size_t errlen) KVF_WUR;

/* Extracts the 64-hex blob id from the last path segment of url (before '?', an optional
 * extension after a '.' allowed). Returns 1 and fills id, else 0. */
int kvf_url_blob_id(const char *url, uint8_t id[32]);

/* Writes the origin of url, "scheme://host:port" with scheme and host in lower case and the
 * default port (443, 80) made explicit, into out. Returns 0, or -1 for a URL that is not
 * http(s)://host... or does not fit. */
int kvf_url_origin(const char *url, char *out, size_t outlen);

/* Is s something kvf_get should download (https:// or http://)? */
int kvf_is_url(const char *s);

/* ---- the buyer's purchase tokens (kvfetch buy / get) ---- */

#define KVF_TOKENS_MAX 4096 /* entries kept; the oldest go first */

/* One stored purchase token: what kvfetch buy keeps and kvfetch get uses. */
typedef struct kvf_token_rec {
    char origin[256];  /* the origin that sold it, as kvf_url_origin writes it */
    uint8_t blob[32];  /* the blob it was bought for */
    char token[130];   /* the bearer token (64 hex from kvpubd) */
    int64_t expires;   /* unix seconds */
    int64_t purchase;  /* the server's purchase number, 0 = unknown */
} kvf_token_rec;

/* The default token file, into path: $XDG_CONFIG_HOME/kvpub/tokens.json, else
 * $HOME/.config/kvpub/tokens.json. KVF_ERR_USAGE when neither is set or it does not fit. */
kvf_status kvf_tokens_default_path(char *path, size_t cap, char *err, size_t errlen) KVF_WUR;

/* The token bought from url's origin for blob, from the token file at path: *found 1 and *out
 * filled (the newest such purchase, expired or not: the caller judges), or *found 0 (also when
 * there is no file). A file that is not the caller's own, or that its group or others may
 * read, is refused with KVF_ERR_IO and says how to fix it. */
kvf_status kvf_tokens_find(const char *path, const char *url, const uint8_t blob[32], kvf_token_rec *out,
                           int *found, char *err, size_t errlen) KVF_WUR;

/* Adds rec (rec->origin already an origin) to the token file at path, replacing the entry for
 * the same origin and blob and dropping entries expired at now: the directories are created
 * 0700, the file written as a 0600 temporary file, fsynced and renamed over the old one under
 * an exclusive lock (path.lock), so a reader sees the old file or the new one. */
kvf_status kvf_tokens_put(const char *path, const kvf_token_rec *rec, int64_t now, char *err, size_t errlen) KVF_WUR;

/* PUTs the file at path to url (a publisher's upload, spec/http-api.md "PUT /v1/blobs") with
 * "Authorization: Bearer <credential>" sent to that URL only (no redirect is followed) and
 * "Expect: 100-continue", so an early refusal arrives before the body is sent. On KVF_OK *code
 * is the HTTP status and *out the response body (malloc'd, NUL-terminated, at most 64 KiB;
 * caller frees). Not retried. */
kvf_status kvf_http_upload(const kvf_http_opts *o, const char *url, const char *path, const char *credential,
                           char **out, long *code, char *err, size_t errlen) KVF_WUR;

#endif
