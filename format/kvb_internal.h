/* kvb_internal.h: what the format/ files share and nothing outside format/ may use:
 * little-endian helpers, error formatting, the codecs and the manifest (de)serialiser. */
#ifndef KVPUB_KVB_INTERNAL_H
#define KVPUB_KVB_INTERNAL_H

#include "base/base.h"
#include "format/kvblob.h"

#define KVB_MAGIC "\x89KVBLOB\n"

/* KVB_X86: the AVX2 paths may be compiled (x86-64, GCC or clang, little-endian); KVB_HOST_LE:
 * stored little-endian values can be copied as they are. */
#if defined(__x86_64__) && defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define KVB_X86 1
#endif
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define KVB_HOST_LE 1
#endif

static inline uint16_t kvb_le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t kvb_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline void kvb_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void kvb_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline uint64_t kvb_align(uint64_t x) { return (x + KVB_ALIGN - 1) & ~(uint64_t)(KVB_ALIGN - 1); }

/* snprintf into err (if non-NULL) and return st: every error path is one line. */
#define kvb_fail(err, errlen, st, ...) ((kvb_status)base_fail((st), (err), (errlen), __VA_ARGS__))

/* Parses the fixed 32-byte header (magic, version, flags, signature algorithm, limits). */
kvb_status kvb_header_parse(const uint8_t *p, kvb_header *h, char *err, size_t errlen);
/* The chunk hash the manifest's chunks[i].sha256 holds: SHA-256 of the stored bytes in version
 * 1, the 32 KiB leaf list of kvc_leaf_digest from version 2 on (spec section 4). */
void kvb_chunk_digest(uint16_t version, const void *data, size_t len, uint8_t out[KVC_SHA256_LEN]);
/* Writes the 32-byte header (version KVB_VERSION). */
void kvb_header_write(uint8_t *p, uint32_t manifest_len, const uint8_t key_id[KVC_KEYID_LEN]);

/* Manifest JSON <-> struct. serialize: canonical (sorted keys, compact), malloc'd, no NUL
 * counted in *len. parse: validates every field and the section layout. */
kvb_status kvb_manifest_serialize(const kvb_manifest *m, char **out, size_t *len, char *err, size_t errlen);
kvb_status kvb_manifest_parse(const uint8_t *json, size_t len, kvb_manifest **out, char *err, size_t errlen);
/* Checks the writer-side "in" fields (shape, limits, codec). */
kvb_status kvb_manifest_check_shape(const kvb_manifest *m, char *err, size_t errlen);

/* Number of f16 values in a decoded chunk of n tokens; bytes = 2x. */
static inline uint64_t kvb_chunk_values(uint32_t n_layer, uint32_t n, uint32_t kv_dim)
{
    return (uint64_t)n_layer * 2 * n * kv_dim;
}
/* Fewest and most bytes a chunk of n tokens may take when stored with codec c (a reader
 * refuses a manifest listing a length outside them): f16 exactly its decoded size; f16-zstd
 * more than its raw low-byte plane; q8/q4 at least a byte. */
uint64_t kvb_codec_min_stored(kvb_codec c, uint32_t n_layer, uint32_t n, uint32_t kv_dim);
uint64_t kvb_codec_max_stored(kvb_codec c, uint32_t n_layer, uint32_t n, uint32_t kv_dim);

/* Writers' zstd level when kvb_write_opts.zstd_level is 0 (spec/kvblob.md section 6). */
#define KVB_DEFAULT_ZSTD_LEVEL 3

/* Checks that kv ((n_layer, 2, n, kv_dim) f16) can be encoded with codec: q8/q4 refuse
 * non-finite values (KVB_ERR_USAGE naming the first). Lossless codecs accept anything. */
kvb_status kvb_chunk_check(kvb_codec codec, const uint16_t *kv, uint32_t n_layer, uint32_t n, uint32_t kv_dim,
                           char *err, size_t errlen);

/* Buffers of a chunk or more (chunk bytes, decoded planes) that are streamed through once per
 * chunk: mapped with the huge-page hint of base_alloc_big, since with 4 KiB pages every pass
 * pays a TLB miss per page (measured in the benchmarks' VM: hashing 393 MB took 0.15 s from
 * 4 KiB pages, 0.09 s from huge pages), and kept after kvb_big_free for the next allocation
 * (process-wide, bounded). Their bytes are not zeroed. Plain malloc under ASan, which checks
 * its bounds. kvb_big_alloc returns NULL on failure, else at least n bytes, their number in
 * *cap; kvb_big_free takes that number (NULL: no-op). */
#define KVB_KEEP_BYTES ((uint64_t)256 << 20) /* kept after kvb_big_free, at most */
void *kvb_big_alloc(size_t n, size_t *cap);
void kvb_big_free(void *p, size_t cap);

/* Reads n bytes of fd at off into buf: how many were read (fewer at the end of the file), or
 * -1 (errno). in_order: a pipe, which cannot pread, is read where it stands instead (the
 * caller reads a fresh one from its start, in order). */
ssize_t kvb_pread_full(int fd, void *buf, size_t n, uint64_t off, int in_order);

/* ---- kvb_planes.c ---- */
/* 1 if this CPU runs the AVX2+F16C paths and KVB_NO_SIMD=1 does not ask for the scalar ones
 * (tests compare both). */
int kvb_simd_ok(void);
/* n f16 values into their low and high bytes. */
void kvb_split_planes(const uint16_t *x, size_t n, uint8_t *lo, uint8_t *hi);
/* rows rows of np pieces of seg values each (the values in order in lo and hi) into x: piece
 * p of row r at x + p * ss + r * seg (kvb_rows; np = 1 with rows = 1: one run of values).
 * big: the values are part of a section of at least KVB_STREAM_MIN, written with
 * non-temporal stores. */
enum { KVB_STREAM_MIN = 1 << 15 };
void kvb_merge_planes(const uint8_t *lo, const uint8_t *hi, size_t rows, size_t np, size_t seg, size_t ss,
                      uint16_t *x, int big);
/* The same for f16 values copied as they are, byte for byte (src not necessarily aligned:
 * the f16 codec's stored values on a little-endian host, or native rows); the streaming
 * stores are 64 bytes wide where the CPU has AVX-512 and KVB_NO_SIMD is not avx512. */
void kvb_copy_rows(const uint8_t *src, size_t rows, size_t np, size_t seg, size_t ss, uint16_t *x, int big);

/* Rows [g, g + k) of an f16 chunk's payload (its 2 * n_layer sections of n rows of kv_dim
 * values, one after another), stored at src, to the sections sec laid out as rows says: the
 * f16 codec's decoding, of a whole chunk or of the rows a piece of it holds. */
void kvb_f16_place(const uint8_t *src, uint64_t g, size_t k, uint32_t n, uint32_t kv_dim, uint16_t *const *sec,
                   const kvb_rows *rows);

/* Bytes of scratch kvb_chunk_decode takes to decode a chunk of n tokens with codec. */
uint64_t kvb_decode_scratch_bytes(kvb_codec codec, uint32_t n_layer, uint32_t n, uint32_t kv_dim);

/* Per-thread codec scratch (zstd contexts + buffers); create returns NULL on OOM. */
typedef struct kvb_codec_ctx kvb_codec_ctx;
kvb_codec_ctx *kvb_codec_ctx_create(int zstd_level);
void kvb_codec_ctx_free(kvb_codec_ctx *c);

/* Encodes one chunk (kv: (n_layer, 2, n, kv_dim) f16) into *out (malloc'd, *outlen bytes). */
kvb_status kvb_chunk_encode(kvb_codec_ctx *c, kvb_codec codec, const uint16_t *kv, uint32_t n_layer,
                            uint32_t n, uint32_t kv_dim, uint8_t **out, size_t *outlen,
                            char *err, size_t errlen);
/* Decodes len stored bytes into its 2 * n_layer sections: sec[2l] receives layer l's K and
 * sec[2l + 1] its V, each (n, kv_dim) f16 laid out as rows says (NULL: rows one after another;
 * the sections may lie anywhere, e.g. in a KV cache). The caller has checked the hash; a size
 * mismatch is KVB_ERR_DECODE. */
kvb_status kvb_chunk_decode(kvb_codec_ctx *c, kvb_codec codec, const uint8_t *in, size_t len,
                            uint32_t n_layer, uint32_t n, uint32_t kv_dim, uint16_t *const *sec,
                            const kvb_rows *rows, char *err, size_t errlen);

/* The parsed manifest, handed over to the caller (who frees it with kvb_manifest_free), or
 * NULL before one was read; stops the reader's workers first, since after an error a job may
 * still read it. For kvb_read_file. */
kvb_manifest *kvb_reader_take_manifest(kvb_reader *r);

/* Parses "YYYY-MM-DDTHH:MM:SSZ". Returns 0 on success. */
int kvb_time_parse(const char *s, int64_t *out);

#endif
