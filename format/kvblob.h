/* kvblob.h: the kvpub blob container (spec/kvblob.md): a signed manifest followed by chunks of
 * per-layer f16 K/V. A writer, a streaming verifying reader and the codecs. The whole contract. */
#ifndef KVPUB_KVBLOB_H
#define KVPUB_KVBLOB_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "crypto/kvcrypto.h"

#define KVB_WUR __attribute__((warn_unused_result))

/* Stable status values (never renumber). kvb_exit_code() maps them to process exit codes. */
typedef enum kvb_status {
    KVB_OK = 0,
    KVB_ERR_USAGE = 1,        /* bad argument from the caller (not from the blob) */
    KVB_ERR_IO = 2,           /* read/write/open failed */
    KVB_ERR_NOMEM = 3,
    KVB_ERR_TRUNCATED = 4,    /* input ended before the blob did */
    KVB_ERR_MAGIC = 5,        /* not a kvblob */
    KVB_ERR_VERSION = 6,      /* unknown container version */
    KVB_ERR_UNSUPPORTED = 7,  /* unknown flags, signature algorithm or codec */
    KVB_ERR_MALFORMED = 8,    /* header/manifest/layout inconsistent */
    KVB_ERR_LIMIT = 9,        /* a count or size exceeds a hard limit below */
    KVB_ERR_BAD_SIG = 10,     /* Ed25519 signature does not verify */
    KVB_ERR_UNTRUSTED = 11,   /* signer key id not in the trust store */
    KVB_ERR_REVOKED = 12,     /* signer key id revoked */
    KVB_ERR_WRONG_KEY = 13,   /* signed by a key other than the one the caller expected */
    KVB_ERR_EXPIRED = 14,     /* now >= expires */
    KVB_ERR_CHUNK_HASH = 15,  /* a chunk's SHA-256 differs from the manifest */
    KVB_ERR_TOKENS_HASH = 16, /* the token-id section's SHA-256 differs from the manifest */
    KVB_ERR_DECODE = 17,      /* a hash-valid chunk does not decode to the expected size */
    KVB_ERR_CALLBACK = 18,    /* a caller callback refused (its message is kept) */
    KVB_ERR_INTERNAL = 19,
} kvb_status;

/* 1 when st says the bytes themselves are bad (damaged, cut short, not a blob), as opposed to
 * policy (trust, revocation, expiry) or the caller: a cached file with such a status is
 * corruption to remove, not a refusal to report. */
int kvb_bytes_bad(kvb_status st);
/* Short constant name ("chunk hash mismatch", ...). Never NULL. */
const char *kvb_status_str(kvb_status st);
/* Exit code a tool returns for st, as spec/kvblob.md section "Exit codes" documents:
 * 0 ok; 1 verification failed (signature, trust, revoked, wrong key, expired, hashes);
 * 2 usage, I/O, memory, internal; 3 malformed, truncated or unsupported blob. */
int kvb_exit_code(kvb_status st);

/* Hard limits: a reader refuses (KVB_ERR_LIMIT) anything larger, before allocating. */
enum {
    KVB_HEADER_LEN = 32,
    KVB_ALIGN = 64,                       /* data section and each section start aligned */
    KVB_VERSION = 2,                      /* written; readers also accept 1 (spec section 2) */
    KVB_VERSION_MIN = 1,
    KVB_SIG_ED25519 = 1,
    KVB_MAX_MANIFEST = 16 << 20,          /* bytes of manifest JSON */
    KVB_MAX_TOKENS = 1 << 20,
    KVB_MAX_LAYERS = 256,
    KVB_MAX_KV_DIM = 32768,               /* n_head_kv * head_dim */
    KVB_MAX_FREQ_FACTORS = 256,           /* RoPE frequency factors: n_rot / 2 <= 256 */
    KVB_MAX_CHUNK_TOKENS = 4096,
    KVB_MAX_CHUNKS = 65536,
    KVB_MAX_STRING = 4096,                /* bytes of any manifest string */
    KVB_MAX_CONTEXT = 65536,              /* tokens of a declared context */
};
#define KVB_MAX_CHUNK_RAW ((uint64_t)512 << 20) /* decoded bytes of one chunk */

typedef enum kvb_codec {
    KVB_CODEC_F16 = 0,       /* "f16": raw little-endian f16 */
    KVB_CODEC_F16_ZSTD = 1,  /* "f16-zstd": byte-shuffle then zstd; lossless; the default */
    KVB_CODEC_Q8 = 2,        /* "q8": int8, K per channel, V per token, f16 scales, zstd */
    KVB_CODEC_Q4 = 3,        /* "q4": int4, same scaling, zstd */
    KVB_CODEC_COUNT
} kvb_codec;

/* "f16", "f16-zstd", "q8", "q4"; "?" for an unknown value. */
const char *kvb_codec_name(kvb_codec c);
/* Parses a codec name. Returns KVB_OK or KVB_ERR_UNSUPPORTED. */
kvb_status kvb_codec_parse(const char *name, kvb_codec *out) KVB_WUR;

/* RoPE as manifests name it. A new value needs its name in kvb_manifest.c's table and the
 * engine mapping in kvpub/identity.c, nothing else. */
typedef enum kvb_rope_type { KVB_ROPE_NORMAL = 0, KVB_ROPE_NEOX = 1, KVB_ROPE_TYPE_COUNT } kvb_rope_type;
typedef enum kvb_rope_scaling {
    KVB_SCALING_NONE = 0, KVB_SCALING_LINEAR = 1, KVB_SCALING_YARN = 2, KVB_SCALING_COUNT
} kvb_rope_scaling;

/* "normal", "neox"; "?" for an unknown value. */
const char *kvb_rope_type_name(kvb_rope_type t);
/* "none", "linear", "yarn"; "?" for an unknown value. */
const char *kvb_scaling_name(kvb_rope_scaling s);

/* One section (token ids or a chunk). offset is relative to the data section start. */
typedef struct kvb_section {
    uint64_t offset;
    uint64_t length;                 /* bytes as stored (after compression) */
    uint32_t t0, t1;                 /* token range [t0, t1); the token section covers all */
    uint8_t sha256[KVC_SHA256_LEN];  /* of the stored bytes */
    uint8_t raw_sha256[KVC_SHA256_LEN]; /* chunks of a manifest with has_raw: the chunk digest
                                           of the decoded bytes (spec/kvblob.md 4.2) */
} kvb_section;

/* The manifest. For a parsed manifest every pointer points into the same allocation and all
 * strings are NUL-terminated (empty string when absent). For the writer the caller fills the
 * fields marked "in" (strings may be NULL = empty); fields marked "out" are computed. */
typedef struct kvb_manifest {
    /* document */
    uint8_t doc_sha256[KVC_SHA256_LEN];       /* in */
    const char *doc_title;                    /* in */
    const char *doc_source_uri;               /* in */
    const char *doc_media_type;               /* in, e.g. "text/plain" */
    uint64_t doc_bytes;                       /* in */
    /* model: the KV shape and identity */
    uint8_t model_fingerprint[KVC_SHA256_LEN];/* in */
    const char *model_arch;                   /* in, e.g. "qwen3" */
    uint32_t n_layer, n_embd, n_head, n_head_kv, head_dim; /* in */
    uint8_t tokenizer_fingerprint[KVC_SHA256_LEN]; /* in */
    /* RoPE as the publisher's prefill applied it */
    kvb_rope_type rope_type;                  /* in */
    uint32_t rope_n_rot;                      /* in */
    double rope_freq_base, rope_freq_scale;   /* in */
    kvb_rope_scaling rope_scaling;            /* in */
    uint32_t rope_n_ctx_orig;                 /* in */
    double yarn_ext_factor, yarn_attn_factor, yarn_beta_fast, yarn_beta_slow; /* in */
    uint32_t pos0;                            /* in: position of the first token (1 after BOS) */
    uint32_t rope_n_freq_factors;             /* in: 0, or n_rot / 2 (llama3 rope_freqs) */
    float rope_freq_factors[KVB_MAX_FREQ_FACTORS]; /* in: pair i turns at theta_i / factor i */
    /* the declared context: the tokens the publisher prefilled between BOS and the document
     * (pos0 = BOS + n_context); the blob holds only the document's KV */
    uint32_t n_context;                       /* in: 0 = none (the document follows BOS) */
    const int32_t *context_ids;               /* in: n_context ids */
    uint8_t context_sha256[KVC_SHA256_LEN];   /* out: SHA-256 of the ids as LE int32 */
    /* payload */
    uint32_t n_tokens;                        /* in */
    kvb_codec codec;                          /* in */
    uint32_t chunk_tokens;                    /* in: tokens per chunk (last may be shorter); 0 = 256 */
    int64_t created;                          /* in: unix seconds */
    int64_t expires;                          /* in: unix seconds; 0 = never */
    uint64_t serial;                          /* in */
    uint8_t tokens_sha256[KVC_SHA256_LEN];    /* out: SHA-256 of the ids as LE int32 */
    kvb_section tokens;                       /* out: the token-id section */
    uint32_t n_chunks;                        /* out */
    const kvb_section *chunks;                /* out: n_chunks entries, in token order */
    int has_raw;                              /* out: every chunk carries raw_sha256 (the writer
                                                 adds them for f16-zstd) */
    /* derived on parse (out), for convenience */
    uint32_t kv_dim;                          /* n_head_kv * head_dim */
    uint64_t raw_bytes;                       /* n_tokens * n_layer * 2 * kv_dim * 2 */
    uint64_t stored_bytes;                    /* sum of chunk lengths */
} kvb_manifest;

void kvb_manifest_free(kvb_manifest *m); /* NULL is a no-op */

/* SHA-256 of token ids as little-endian int32 (the token section's and a declared context's
 * hash). Returns 0, or -1 out of memory. */
int kvb_ids_sha256(const int32_t *ids, size_t n, uint8_t out[KVC_SHA256_LEN]);

/* The manifest's "rope" object (RoPE parameters and pos0) as compact JSON with sorted keys,
 * as the store's index shows it. Returns a malloc'd string (caller frees), NULL out of memory. */
char *kvb_manifest_rope_json(const kvb_manifest *m);

/* Fixed header fields. */
typedef struct kvb_header {
    uint16_t version, flags, sig_alg;
    uint32_t manifest_len;
    uint8_t key_id[KVC_KEYID_LEN];
    uint64_t data_offset;  /* file offset of the data section (aligned to KVB_ALIGN) */
    uint64_t file_size;    /* total file size the manifest implies; 0 until parsed */
} kvb_header;

/* Bytes of header+manifest+signature a peek needs: 0 if len < KVB_HEADER_LEN (need 32 first),
 * else KVB_HEADER_LEN + manifest_len + 64 (after checking magic/version/limits; on a bad header
 * returns 0 and *st != KVB_OK). */
size_t kvb_prefix_len(const void *data, size_t len, kvb_status *st);

/* Parses header and manifest from the first len bytes of a blob (chunks not needed).
 * key: the expected signer (public or private); NULL = do NOT verify the signature (inspect,
 * indexing before a key lookup). Expiry is not checked. On success *out owns a new manifest;
 * hdr may be NULL. */
kvb_status kvb_peek(const void *data, size_t len, const kvc_key *key, kvb_header *hdr,
                    kvb_manifest **out, char *err, size_t errlen) KVB_WUR;
/* Same, reading the prefix of the file at path. Messages do not repeat path (callers name
 * the file): "No such file or directory", "Is a directory", or kvb_peek's. */
kvb_status kvb_peek_file(const char *path, const kvc_key *key, kvb_header *hdr,
                         kvb_manifest **out, char *err, size_t errlen) KVB_WUR;
/* Same, reading the prefix of the file open on fd from offset 0 (pread: fd's offset is left
 * alone; a pipe is read from where it stands). */
kvb_status kvb_peek_fd(int fd, const kvc_key *key, kvb_header *hdr, kvb_manifest **out,
                       char *err, size_t errlen) KVB_WUR;
/* Same, in the reader's order (spec/kvblob.md 3): the header's signer looked up in trust
 * (KVB_ERR_UNTRUSTED, KVB_ERR_REVOKED), then its signature over header + manifest, and only
 * then the manifest parsed; so a blob nobody trusted never gets as far as a manifest error. */
kvb_status kvb_peek_fd_trusted(int fd, const kvc_trust *trust, kvb_header *hdr, kvb_manifest **out,
                               char *err, size_t errlen) KVB_WUR;
/* The signer of key_id in trust, with the reader's errors: KVB_ERR_REVOKED, KVB_ERR_UNTRUSTED. */
kvb_status kvb_trust_signer(const kvc_trust *trust, const uint8_t key_id[KVC_KEYID_LEN], const kvc_key **signer,
                            char *err, size_t errlen) KVB_WUR;

/* ---- reading: streaming, verifying, multithreaded ---- */

/* A decoded chunk, valid only during the callback. Layer l's K is sec[2l] and its V sec[2l+1],
 * each (n, kv_dim) f16 bit patterns, n = t1 - t0: the engine's exchange layout per layer
 * (eng_kv_import_layer). in_place: decoded straight into the destinations on_dest gave. */
typedef struct kvb_chunk {
    uint32_t index, n_chunks;
    uint32_t t0, t1;
    uint32_t n_layer, kv_dim;
    const uint16_t *const *sec; /* 2 * n_layer rows */
    int in_place;
} kvb_chunk;

static inline const uint16_t *kvb_chunk_k(const kvb_chunk *c, uint32_t layer) { return c->sec[2 * layer]; }
static inline const uint16_t *kvb_chunk_v(const kvb_chunk *c, uint32_t layer) { return c->sec[2 * layer + 1]; }

/* Callbacks run on the thread calling kvb_reader_feed/finish, in order. Returning non-OK
 * stops the reader with that status; put the reason in err. */
typedef kvb_status (*kvb_manifest_fn)(void *user, const kvb_manifest *m, const kvb_header *h,
                                      char *err, size_t errlen);
typedef kvb_status (*kvb_chunk_fn)(void *user, const kvb_chunk *c, char *err, size_t errlen);
/* How the rows of one decoded K or V land at their destination: (n, kv_dim) rows one after
 * another when seg is 0; else each row is cut into kv_dim / seg pieces of seg values, and piece
 * s of row r lands at s * seg_stride + r * seg values from the destination (a cache that keeps
 * each kv head's cells together: seg = head_dim). */
typedef struct kvb_rows {
    uint32_t seg;
    size_t seg_stride;
} kvb_rows;

/* Where chunk index (tokens t0..t1) should be decoded, instead of the reader's own buffer: set
 * k[l] and v[l] for every layer l < n_layer to room for (t1 - t0) rows of kv_dim f16 laid out
 * as *rows says (zeroed before the call: rows one after another), and return 1; or return 0
 * for the reader's buffer. A seg that does not divide kv_dim fails the read (KVB_ERR_USAGE).
 * Called on the thread calling feed/finish, in chunk order, before the chunk's hash is
 * checked; the chunk is decoded there (on a decode thread) only once its hash matched, and
 * on_chunk then sees in_place = 1. The rows must stay valid and must not be read until
 * on_chunk for that chunk; after a failure they may hold any bytes. */
typedef int (*kvb_dest_fn)(void *user, uint32_t index, uint32_t t0, uint32_t t1, uint16_t **k, uint16_t **v,
                           kvb_rows *rows);

/* Zero-initialise, then set what you need. Exactly one of trust / key / skip_signature. */
typedef struct kvb_read_opts {
    const kvc_trust *trust;    /* signer must be in this store and not revoked */
    const kvc_key *key;        /* or: signer must be exactly this key (server upload check) */
    int skip_signature;        /* or: 1 = do not verify the signature (fuzzing, inspect) */
    int64_t now;               /* unix seconds for the expiry check; 0 = time(NULL); <0 = skip */
    int n_threads;             /* decode workers; 0 = online cores; 1 = on the caller's thread */
    int no_decode;             /* 1 = verify hashes only, never decompress (verify, upload) */
    uint32_t max_chunks;       /* deliver only the first max_chunks chunks (0 = all); the rest
                                  are still hash-checked if fed */
    int check_raw;             /* 1 = also check each decoded chunk against its signed
                                  raw_sha256 (manifests with has_raw; chunks decoded into the
                                  reader's own buffer, not on_dest's): KVB_ERR_CHUNK_HASH */
    int decoded;               /* 1 = the input is a blob's decoded copy (spec/kvblob.md 4.2),
                                  read as the f16 blob its manifest's raw digests describe:
                                  on_manifest sees that manifest (kvb_manifest_to_decoded) */
    kvb_manifest_fn on_manifest; /* after the signature check and manifest parse; may be NULL */
    kvb_chunk_fn on_chunk;     /* each decoded chunk in order; may be NULL */
    kvb_dest_fn on_dest;       /* decode chunks straight into the caller's memory; may be NULL */
    void *user;
} kvb_read_opts;

typedef struct kvb_reader kvb_reader;

/* Creates a reader (opts copied; trust/key borrowed, must outlive the reader). NULL on OOM. */
kvb_reader *kvb_reader_create(const kvb_read_opts *opts) KVB_WUR;
void kvb_reader_free(kvb_reader *r); /* NULL is a no-op; stops its worker threads */

/* How the reader that kvb_reader_reserve readies for will run. IN_PLACE: on_dest decodes in
 * place (no decoded K/V of the reader's own). FILE: it is fed by kvb_reader_feed_fd, where an
 * f16 chunk decoded in place goes from small pieces straight to its rows and takes no chunk
 * buffer (a version-1 blob's chunks still take theirs, on demand). */
enum { KVB_RESERVE_IN_PLACE = 1, KVB_RESERVE_FILE = 2 };
/* Makes ready the large buffers that a reader with n_threads decode workers takes for blob m
 * (each chunk slot's stored bytes, each worker's decode scratch, and the decoded K/V), as
 * flags (KVB_RESERVE_*) say it will run, and keeps them for the readers that follow in this
 * process: fresh memory costs about as much as hashing it on some machines, so a process
 * that readies itself before it times its first load (as it readies its KV cache) calls
 * this then. Best effort, within the bound of the kept buffers (256 MiB). */
void kvb_reader_reserve(const kvb_manifest *m, int n_threads, int flags);
/* Bytes of the buffers that freed readers (and kvb_reader_reserve) keep for the next ones in
 * this process (0 under ASan, which checks plain allocations instead). */
size_t kvb_buffers_kept(void);
/* Gives the kept buffers back to the system: for a long-lived process that stops loading for
 * a while (a server between uploads). Buffers of live readers are theirs; thread-safe. */
void kvb_buffers_release(void);

/* Feeds the next len bytes of the blob, in pieces of any size (borrowed only during the call: a
 * chunk that lies whole inside the piece is hashed and decoded from it in place, and the call
 * waits for that before returning; other chunk bytes are copied once). Verifies the signature over the
 * raw header+manifest bytes before parsing the manifest, and each section's SHA-256 before
 * decoding it. Returns KVB_OK or the first error (sticky: later calls return it again, with
 * the same message). err gets one line such as "chunk 3 of 16: sha256 mismatch". */
kvb_status kvb_reader_feed(kvb_reader *r, const void *data, size_t len, char *err, size_t errlen) KVB_WUR;
/* Zero-copy feeding, an alternative to kvb_reader_feed (mix them freely): *buf gets where the
 * next bytes of the blob go and *len how many of them fit there (> 0); write n <= *len bytes
 * there (e.g. read(2) into it), then kvb_reader_commit(r, n). Chunk bytes land directly in the
 * buffer they are hashed and decoded from. The buffer is borrowed from r and valid until the
 * next call on r. Returns KVB_OK or the sticky error. */
kvb_status kvb_reader_buffer(kvb_reader *r, void **buf, size_t *len, char *err, size_t errlen) KVB_WUR;
/* Feeds the n bytes written into the buffer that kvb_reader_buffer returned last. */
kvb_status kvb_reader_commit(kvb_reader *r, size_t n, char *err, size_t errlen) KVB_WUR;
/* Feeds the rest of the blob from fd, a regular file that holds it from offset 0 (bytes fed
 * before stay fed; the rest are read at their offsets with pread, so fd's offset is left
 * alone), up to the end of the file; then call kvb_reader_finish as usual. The chunks of a
 * version-2 blob are read by the decode workers themselves, a few leaves at a time, each
 * piece hashed while it is in cache (then decoded, from the chunk's buffer); the call returns
 * once no worker reads fd any more. An f16 chunk that
 * on_dest places is copied to its rows piece by piece as it is hashed: those rows hold
 * unverified bytes until the chunk's digest matches, but on_chunk still runs only for a
 * verified chunk, and after an error the rows of the chunks never delivered are the caller's
 * to ignore. Errors as for kvb_reader_feed, plus KVB_ERR_IO; KVB_ERR_USAGE if fd is not a
 * regular file. */
kvb_status kvb_reader_feed_fd(kvb_reader *r, int fd, char *err, size_t errlen) KVB_WUR;
/* Seconds the delivered chunks' reads took on the decode workers (kvb_reader_feed_fd): their
 * sum over the workers, which ran beside the hashing and decoding. */
double kvb_reader_read_seconds(const kvb_reader *r);
/* Declares end of input: waits for pending decodes, delivers them, and returns KVB_OK only if
 * the whole blob was received and verified (else e.g. KVB_ERR_TRUNCATED). */
kvb_status kvb_reader_finish(kvb_reader *r, char *err, size_t errlen) KVB_WUR;

/* The verified manifest and header, or NULL before they are parsed. Borrowed from r. */
const kvb_manifest *kvb_reader_manifest(const kvb_reader *r);
const kvb_header *kvb_reader_header(const kvb_reader *r);
/* The verified token ids (n_tokens of them), or NULL before the token section arrived. */
const int32_t *kvb_reader_tokens(const kvb_reader *r);

/* Convenience: creates a reader, read(2)s the file at path (or "-" = stdin) straight into the
 * reader's buffers (kvb_reader_buffer), finishes. If mout is non-NULL and the manifest was
 * parsed, *mout gets a copy the caller frees (also on verification failures after the parse,
 * so tools can still describe it). */
kvb_status kvb_read_file(const char *path, const kvb_read_opts *opts, kvb_manifest **mout,
                         kvb_header *hout, char *err, size_t errlen) KVB_WUR;

/* ---- decoded copies (spec/kvblob.md 4.2) ---- */

/* A blob's decoded copy sits beside it, named PATH.decoded (kvfetch get writes it, loaders
 * prefer it). */
#define KVB_DECODED_SUFFIX ".decoded"

/* Turns m (with has_raw, codec f16-zstd) into the manifest of its decoded copy: codec f16,
 * each chunk at the next 64-byte boundary with its decoded length and raw_sha256 as its
 * digest; and, when h is not NULL, sets h->file_size to the copy's size. KVB_ERR_UNSUPPORTED
 * (m unchanged) when m has no raw digests. */
kvb_status kvb_manifest_to_decoded(kvb_manifest *m, kvb_header *h, char *err, size_t errlen) KVB_WUR;
/* Writes the decoded copy of the blob at blob to path (replaced whole, through a temporary
 * file: path holds all of the copy or stays as it was). opts says whose signature to accept
 * and how many threads decode (its callbacks, decoded and no_decode are ignored). The blob is
 * verified as it is read; the copy, once written, is read back and verified against the raw
 * digests before it replaces path: KVB_ERR_CHUNK_HASH when a decoded chunk differs from its
 * signed raw_sha256 (the publisher's digests are wrong), KVB_ERR_UNSUPPORTED when the blob
 * has no raw digests; else the reader's errors, or KVB_ERR_IO. */
kvb_status kvb_decoded_write(const char *blob, const char *path, const kvb_read_opts *opts, char *err,
                             size_t errlen) KVB_WUR;

/* ---- writing ---- */

typedef struct kvb_write_opts {
    int zstd_level;  /* 0 = the default (3); the blob's bytes depend on it */
    int n_threads;   /* encode workers; 0 = online cores; 1 = on the caller's thread. The blob's
                        bytes do not depend on it. */
    const char *spill_dir; /* non-NULL: encoded chunks wait for finish in an unnamed temporary
                              file in this directory instead of in memory (long documents:
                              the writer then holds about one chunk per worker). Same bytes. */
} kvb_write_opts;

typedef struct kvb_writer kvb_writer;

/* Starts a blob. meta: the "in" fields of the manifest (copied). tokens: n_tokens ids (copied).
 * opts may be NULL (defaults). Encoded chunks are kept in memory (or in opts->spill_dir) until
 * finish. With encode
 * workers, add_chunk copies kv (workers + 1 chunk copies in flight, at most 1 GiB; fewer
 * workers when chunks are large) and returns while the chunk is encoded in the background; an
 * encoding failure other than a refused value is then reported by the next call or by finish. */
kvb_status kvb_writer_create(const kvb_manifest *meta, const int32_t *tokens,
                             const kvb_write_opts *opts, kvb_writer **out,
                             char *err, size_t errlen) KVB_WUR;
void kvb_writer_free(kvb_writer *w); /* NULL is a no-op */

/* Adds the next chunk: n tokens (chunk_tokens, or fewer for the last), kv laid out as
 * kvb_chunk's kv: (n_layer, 2, n, kv_dim) f16. */
kvb_status kvb_writer_add_chunk(kvb_writer *w, const uint16_t *kv, uint32_t n,
                                char *err, size_t errlen) KVB_WUR;
/* Adds all n_tokens at once from per-layer arrays: k[l], v[l] each (n_tokens, kv_dim) f16.
 * Only valid before any add_chunk. */
kvb_status kvb_writer_add_layers(kvb_writer *w, const uint16_t *const *k,
                                 const uint16_t *const *v, char *err, size_t errlen) KVB_WUR;

/* Signs with key (must be private) and emits the blob. All tokens must have been added.
 * _mem: *out is malloc'd (caller frees). _file: writes to f (not closed, flushed).
 * _path: writes PATH.tmp.XXXXXX, fsyncs, renames to path; nothing is left on failure. */
kvb_status kvb_writer_finish_mem(kvb_writer *w, const kvc_key *key, uint8_t **out, size_t *len,
                                 char *err, size_t errlen) KVB_WUR;
kvb_status kvb_writer_finish_file(kvb_writer *w, const kvc_key *key, FILE *f,
                                  char *err, size_t errlen) KVB_WUR;
kvb_status kvb_writer_finish_path(kvb_writer *w, const kvc_key *key, const char *path,
                                  char *err, size_t errlen) KVB_WUR;

/* Writes a whole blob in one call (create + add_layers + finish_path or _mem when path NULL). */
kvb_status kvb_write(const kvb_manifest *meta, const int32_t *tokens, const uint16_t *const *k,
                     const uint16_t *const *v, const kvb_write_opts *opts, const kvc_key *key,
                     const char *path, uint8_t **out, size_t *len, char *err, size_t errlen) KVB_WUR;

/* ---- helpers ---- */

/* Formats unix seconds as RFC 3339 UTC ("2025-01-02T03:04:05Z") into out (>= 21 bytes). */
char *kvb_time_format(int64_t t, char *out, size_t outlen);

#endif
