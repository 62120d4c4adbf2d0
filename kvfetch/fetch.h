/* fetch.h: "get a verified blob": answer from the local cache, or download over HTTPS while
 * streaming the bytes through the verifying kvb reader, resume partial downloads, and move the
 * verified file into the cache. Shared by kvfetch get, run and compare. */
#ifndef KVPUB_KVFETCH_FETCH_H
#define KVPUB_KVFETCH_FETCH_H

#include <limits.h>
#include <stdint.h>

#include "crypto/kvcrypto.h"
#include "format/kvblob.h"
#include "kvfetch/cache.h"
#include "kvfetch/client.h"
#include "kvfetch/status.h"

typedef struct kvf_get_opts {
    const char *url;         /* a blob URL (API or static mirror); or NULL and server + blob_id */
    const char *server;      /* API base, e.g. https://127.0.0.1:8443: GET {server}/v1/blobs/{id} */
    const char *blob_id;     /* 64 hex digits; required with server; with url an extra check
                                (a URL whose last path segment is 64 hex names its id too) */
    const kvc_trust *trust;  /* signer must be trusted and not revoked (required) */
    int64_t now;             /* unix seconds for expiry; 0 = time(NULL) */
    int trust_cached;        /* 1 = a cache hit is returned without re-verifying (the caller
                                verifies while loading); 0 = re-verify it (hashes only) */
    kvf_http_opts http;
} kvf_get_opts;

typedef struct kvf_get_result {
    char path[PATH_MAX];     /* the verified blob, in the cache */
    uint8_t id[32];          /* SHA-256 of the whole file */
    uint64_t bytes;
    int from_cache;          /* 1 = answered without the network */
    uint64_t reused;         /* bytes of an earlier partial download that were kept */
    int discarded_partial;   /* an earlier partial download failed verification and was dropped */
    kvf_http_stats http;
    double seconds;
    kvb_status vst;          /* why verification failed, with KVF_ERR_VERIFY */
    kvb_manifest *manifest;  /* the verified manifest when known; owned, kvf_get_result_clear */
    kvb_header header;
} kvf_get_result;

/* Gets a verified blob into the cache. Statuses: KVF_ERR_VERIFY (res->vst says how; the
 * partial download is deleted), KVF_ERR_REFUSED (a valid blob with another id than asked),
 * KVF_ERR_TOO_BIG (more bytes than the manifest declares), KVF_ERR_NET (kept for a later
 * resume), KVF_ERR_DENIED, KVF_ERR_HTTP, KVF_ERR_IO, KVF_ERR_USAGE. */
kvf_status kvf_get(kvf_cache *cache, const kvf_get_opts *o, kvf_get_result *res,
                   char *err, size_t errlen) KVF_WUR;
void kvf_get_result_clear(kvf_get_result *res); /* frees the manifest; the struct stays usable */

/* Exit code for a kvf_get status (see status.h). */
int kvf_exit_code(kvf_status st, kvb_status vst);

/* Extracts the 64-hex blob id from the last path segment of url (before '?', an optional
 * extension after a '.' allowed). Returns 1 and fills id, else 0. */
int kvf_url_blob_id(const char *url, uint8_t id[32]);

/* Is s something kvf_get should download (https:// or http://)? */
int kvf_is_url(const char *s);

#endif
