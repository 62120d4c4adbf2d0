/* cache.h: kvfetch's local content-addressed blob cache: verified blobs named by the SHA-256 of
 * the whole file (the blob id), partial downloads kept for resumption, LRU eviction under a cap. */
#ifndef KVPUB_KVFETCH_CACHE_H
#define KVPUB_KVFETCH_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "kvfetch/status.h"

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

/* Removes the blob with this id (a cached file that no longer verifies). */
void kvf_cache_remove(kvf_cache *c, const uint8_t id[32]);

/* Remembers that url served the blob id, so a later get of a URL that does not name its id
 * can be answered from the cache without the network. get returns 1 and fills id if known. */
void kvf_cache_url_put(kvf_cache *c, const char *url, const uint8_t id[32]);
int kvf_cache_url_get(kvf_cache *c, const char *url, uint8_t id[32]);

/* Evicts least recently used blobs (by access time, which lookup sets explicitly) until the
 * total size is at most the cap; keep (may be NULL) is never evicted. Returns the number of
 * blobs removed. */
int kvf_cache_evict(kvf_cache *c, const uint8_t *keep);

/* Parses a size such as "512M", "10G", "1048576" (K/M/G/T are powers of 1024). 0 on success. */
int kvf_parse_size(const char *s, uint64_t *out);

#endif
