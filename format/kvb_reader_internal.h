/* kvb_reader_internal.h: the streaming reader's state, shared by kvb_reader.c (the byte
 * stream) and kvb_reader_fd.c (chunks read with pread on the decode workers). */
#ifndef KVPUB_KVB_READER_INTERNAL_H
#define KVPUB_KVB_READER_INTERNAL_H

#include "format/kvb_internal.h"

#include <pthread.h>

enum { ERRLEN = 256, MAX_THREADS = 64, STAGE = 64 << 10 };
enum phase { P_HEADER, P_PREFIX, P_PAD, P_SECTION, P_DONE };
enum slot_state { S_EMPTY, S_QUEUED, S_RUNNING, S_DONE };

/* A thread's pread piece buffer: KVB_RD_PIECE_BYTES from kvb_big_alloc, so that a reader
 * takes the one a reader before it (or kvb_reader_reserve) kept instead of fresh pages. */
enum { KVB_RD_PIECE_BYTES = 2 * 16 * KVC_LEAF_LEN }; /* twice kvb_reader_fd.c's PIECE: its largest */
typedef struct kvb_piece {
    uint8_t *p;
    size_t cap;
} kvb_piece;

/* One chunk in flight: its stored bytes, its decoded K/V, its outcome. */
typedef struct slot {
    uint8_t *in;            /* owned copy, when the chunk arrived in several pieces */
    size_t in_cap, in_len;
    int fd;                 /* pread: the job reads the chunk itself from fd at file_off */
    int pread;
    uint64_t file_off;
    double read_s;          /* seconds the job spent in pread */
    const uint8_t *data;    /* the stored bytes: in, or the caller's piece (borrowed) */
    int borrowed;
    uint16_t *out;   /* the reader's own decode buffer */
    size_t out_cap;  /* bytes */
    uint16_t *sec[2 * KVB_MAX_LAYERS]; /* where each layer's K and V decode: out, or on_dest's rows */
    kvb_rows rows;   /* their layout (seg 0 in out) */
    int in_place;
    uint32_t index;
    int decode;
    enum slot_state state;
    kvb_status st;
    char err[ERRLEN];
} slot;

struct kvb_reader {
    kvb_read_opts o;
    kvb_status st;          /* sticky first error */
    char err[ERRLEN];
    enum phase phase;
    uint64_t pos;           /* bytes consumed so far */
    uint8_t hdr[KVB_HEADER_LEN];
    kvb_header h;
    const kvc_key *signer;
    uint8_t *prefix;        /* header + manifest + signature */
    size_t prefix_len;
    kvb_manifest *m;
    uint64_t pad_to;        /* P_PAD: absolute offset where the next section starts */
    int64_t sec;            /* P_SECTION: -1 token ids, else chunk index */
    uint64_t sec_have;
    uint8_t *tokbuf;
    int32_t *tokens;        /* valid once the token section verified */
    slot *cur;              /* chunk slot being filled */
    /* decode pool: slots form a ring indexed by chunk number */
    slot *slots;
    uint32_t nslots;
    uint32_t next_submit, next_run, next_deliver;
    int nthreads;           /* workers started; 0 = decode inline */
    int idle;               /* workers waiting for a chunk, or woken for one but not yet on it */
    pthread_t thr[MAX_THREADS];
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    int shutdown;
    kvb_codec_ctx *inline_ctx;
    int borrowing;          /* some slot's data points into the piece being fed */
    uint8_t *stage;         /* kvb_reader_buffer for padding and trailing bytes */
    kvb_piece piece;        /* the caller's thread's pread piece, when it decodes inline */
    double read_s;          /* summed seconds of the delivered chunks' pread jobs */
    uint8_t *lent;          /* what kvb_reader_buffer returned last (NULL: nothing lent) */
    size_t lent_len;
};

/* Defined in kvb_reader.c, used by kvb_reader_fd.c as well. */
kvb_status kvb_rd_err(kvb_reader *r, kvb_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
kvb_status kvb_rd_ret(const kvb_reader *r, char *err, size_t errlen);
/* A failure found by the feeder itself: chunks before it in the byte stream report first. */
kvb_status kvb_rd_feeder_fail(kvb_reader *r, kvb_status st, const char *msg);
void kvb_rd_enter_section(kvb_reader *r);
kvb_status kvb_rd_section_done(kvb_reader *r);
uint64_t kvb_rd_longest_chunk(const kvb_manifest *m);
/* s's own chunk buffer, room for the blob's longest chunk; NULL when out of memory. */
uint8_t *kvb_rd_slot_in(const kvb_manifest *m, slot *s);
/* Before a feed call returns: waits until no job still reads the caller's bytes (a borrowed
 * piece, or fd). Finished jobs keep their decoded output: they are delivered later as usual. */
void kvb_rd_wait_caller(kvb_reader *r);
/* Decodes the verified chunk in s->data (s->in_len bytes): the second half of a job. */
void kvb_rd_decode(const kvb_reader *r, slot *s, kvb_codec_ctx *cc);
/* 1 when blob m's f16 chunks, decoded in place from a file, go piece by piece straight to
 * their rows (no chunk buffer): pieces can hold whole rows and whole leaves. */
int kvb_rd_f16_pieces(const kvb_manifest *m);
/* The whole job of a chunk that s->pread says to read from s->fd (kvb_reader_fd.c); piece is
 * the thread's own piece buffer (taken on first use, given back by kvb_rd_piece_free). */
void kvb_rd_pread_job(const kvb_reader *r, slot *s, kvb_codec_ctx *cc, kvb_piece *piece);
void kvb_rd_piece_free(kvb_piece *piece);

#endif
