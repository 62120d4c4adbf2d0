/* fetch_internal.h: what the fetch/ files share and nothing outside fetch/ may use: the
 * verifying byte stream of a download (vstream.c), the sources of one blob and their order
 * (mirror.c), and the download of chunk ranges from two sources at once (ranges.c). */
#ifndef KVPUB_FETCH_INTERNAL_H
#define KVPUB_FETCH_INTERNAL_H

#include "fetch/fetch.h"

/* One verification pass over the bytes of a blob, in order (a partial file, a download, a
 * cached file). Bytes are held back until the section they end (the header, the signed
 * prefix, the token ids, a chunk, each with the padding before it) is complete, and only then
 * hashed and fed to the reader, which checks that section at once: so `fed` is always a
 * section boundary below which every byte verified, and a download can go back to it. */
typedef struct kvf_vstream {
    const kvf_get_opts *o;
    kvb_reader *r;
    kvc_sha256_ctx *h;     /* the whole file's SHA-256 (the blob id), over the fed bytes */
    int fd;                /* partial file to append to; -1 = only verify */
    uint64_t got;          /* bytes received (in the partial file) */
    uint64_t fed;          /* bytes verified: a section boundary */
    uint8_t *pend;         /* bytes [fed, got), waiting for their section to complete */
    size_t pend_len, pend_cap;
    uint8_t head[KVB_HEADER_LEN];
    uint64_t prefix;       /* header+manifest+signature bytes, once the header is known */
    uint64_t size;         /* whole blob size, once the manifest is verified */
    uint32_t next_chunk;   /* the chunk whose end is the next boundary, once past the token ids */
    int stop_after_tokens; /* 1 = the sink stops the transfer once the token ids verified and
                              two chunks or more are left (the caller splits the rest) */
    int stopped;           /* the sink stopped it there */
    int no_room;           /* a write failed for lack of space (disk full, quota, file limit) */
    kvb_status vst;
} kvf_vstream;

kvf_status kvf_vs_begin(kvf_vstream *v, const kvf_get_opts *o, int fd, char *err, size_t errlen) KVF_WUR;
void kvf_vs_end(kvf_vstream *v);
/* Takes n more bytes: refuses more than the blob's declared size (KVF_ERR_TOO_BIG), appends
 * them to the partial file when store, and feeds each completed section to the reader
 * (KVF_ERR_VERIFY with v->vst on a failure; the reader is then spent: see kvf_vs_rewind). */
kvf_status kvf_vs_consume(kvf_vstream *v, const uint8_t *p, size_t n, int store, char *err, size_t errlen) KVF_WUR;
/* Feeds the whole file behind fd (from its current offset) without rewriting it. */
kvf_status kvf_vs_feed_file(kvf_vstream *v, int fd, char *err, size_t errlen) KVF_WUR;
/* The sink and restart callbacks of kvf_http_download over a vstream (user = the vstream). */
kvf_status kvf_vs_sink(void *user, const void *data, size_t len, char *err, size_t errlen);
kvf_status kvf_vs_restart(void *user, char *err, size_t errlen);
/* Goes back to the last verified boundary: the partial file is cut to v->fed and the held-back
 * bytes dropped; after a verification failure (rebuild = 1) the reader is made afresh and fed
 * the verified bytes again from the file. */
kvf_status kvf_vs_rewind(kvf_vstream *v, int rebuild, char *err, size_t errlen) KVF_WUR;
/* Completes verification and fills res->id, bytes and header. */
kvf_status kvf_vs_finish(kvf_vstream *v, kvf_get_result *res, char *err, size_t errlen) KVF_WUR;

/* How telling a failure is when every source failed: what the bytes or a server said about the
 * blob (2) outranks a network or HTTP error of another source (1). */
static inline int kvf_telling(kvf_status st) { return st == KVF_ERR_NET || st == KVF_ERR_HTTP ? 1 : 2; }

/* The file offset where section i ends: i = 0 the token ids, i = 1 + c chunk c. */
uint64_t kvf_section_end(const kvb_header *h, const kvb_manifest *m, uint32_t i);

/* Splits the sections [first, n) of a blob (ends[i] = the file offset where section i ends,
 * ascending; from = where section first begins, its padding included) into two contiguous runs
 * of about equal bytes: returns the index of the first section of the second run, in
 * (first, n), or first when there are fewer than two sections (no split). */
uint32_t kvf_split_half(const uint64_t *ends, uint32_t first, uint32_t n, uint64_t from);

/* The sources of one download, ranked: src[0..n) in the order they are to be tried. */
typedef struct kvf_sources {
    char url[KVF_SOURCES_MAX][4096];
    kvf_source_report *rep[KVF_SOURCES_MAX]; /* res->sources, in the same order */
    int bad[KVF_SOURCES_MAX];                /* abandoned for this download */
    int n;
} kvf_sources;

/* Fills s and res->sources: primary (NULL = none) first, then each mirror's {base}/v1/blobs/ID
 * (id_hex: the blob id), duplicates dropped; ranked by o->order (probes run here). */
kvf_status kvf_sources_build(kvf_sources *s, const kvf_get_opts *o, const kvf_http_opts *http, const char *primary,
                             const char *id_hex, kvf_get_result *res, char *err, size_t errlen) KVF_WUR;
/* Marks source i abandoned for this download with st and the message why. */
void kvf_source_abandon(kvf_sources *s, int i, kvf_status st, const char *why);

/* Downloads the rest of the blob (v is past its token ids, at v->fed) from two sources at once:
 * the remaining chunks split in two halves (kvf_split_half), each half from one source,
 * verified chunk by chunk as it arrives and written at its offset in v->fd; a source that
 * fails hands the rest of its half to the other. first, second: the sources to start with;
 * stats (the download's) gets the requests' counters added. On KVF_OK every byte of the file
 * was written and verified chunk by chunk (the caller still runs the whole file through a
 * fresh vstream); otherwise the failure of the last source, the partial file cut back to the
 * verified sections from its start. */
kvf_status kvf_ranges_fetch(kvf_vstream *v, kvf_sources *s, const kvf_http_opts *http, int first, int second,
                            kvf_http_stats *stats, char *err, size_t errlen) KVF_WUR;

#endif
