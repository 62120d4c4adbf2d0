/* kvb_reader_fd.c: the reader on a file descriptor (kvb_reader_feed_fd). Each chunk is read
 * with pread(2) by the decode worker that verifies it, a piece at a time, and each piece is
 * hashed while it is still in that core's cache: fed through read(2) by one thread, a chunk
 * crossed memory four times (the kernel's copy out and in, the hash, the decode) and the
 * reads ran on one core. An f16 chunk decoded in place goes further: each piece is copied to
 * its rows as soon as it is hashed, and never lands in a chunk buffer at all. Those rows hold
 * unverified bytes until the chunk's digest is checked; on_chunk still hears of a chunk only
 * once it is verified, as spec/kvblob.md requires of what a reader hands over. */
#include "format/kvb_reader_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bytes read and hashed at a time: 16 leaves, the AVX-512 manager's lanes, which stay in a
 * core's L2 while they are hashed and then copied or decoded; a piece buffer holds twice that,
 * row_piece's largest. */
enum { PIECE = KVB_RD_PIECE_BYTES / 2 };

/* Bytes per piece that hold whole rows of kv_dim f16 and whole leaves (a multiple of both, the
 * largest up to PIECE, or the least multiple above it); 0 when that passes 2 * PIECE. */
static size_t row_piece(uint32_t kv_dim)
{
    const size_t row = 2 * (size_t)kv_dim;
    size_t a = KVC_LEAF_LEN, b = row;
    while (b) {
        const size_t t = a % b;
        a = b;
        b = t;
    }
    const size_t lcm = KVC_LEAF_LEN / a * row;
    if (lcm > 2 * PIECE)
        return 0;
    return lcm >= PIECE ? lcm : PIECE / lcm * lcm;
}

int kvb_rd_f16_pieces(const kvb_manifest *m) { return m->codec == KVB_CODEC_F16 && row_piece(m->kv_dim); }

void kvb_rd_piece_free(kvb_piece *piece)
{
    kvb_big_free(piece->p, piece->cap);
    piece->p = NULL;
}

void kvb_rd_pread_job(const kvb_reader *r, slot *s, kvb_codec_ctx *cc, kvb_piece *piece)
{
    const kvb_manifest *m = r->m;
    const kvb_section *sec = &m->chunks[s->index];
    const uint32_t n = sec->t1 - sec->t0;
    const size_t len = s->in_len, row = 2 * (size_t)m->kv_dim;
    /* the size check is the f16 decoder's: a chunk of any other length takes the usual path
     * and fails there */
    const int direct = s->decode && s->in_place && kvb_rd_f16_pieces(m) &&
                       len == 2 * kvb_chunk_values(m->n_layer, n, m->kv_dim);
    const size_t step = direct ? row_piece(m->kv_dim) : PIECE;
    const int own = direct || !s->decode; /* into the piece buffer, not the chunk's */
    if (own && !piece->p)
        piece->p = kvb_big_alloc(KVB_RD_PIECE_BYTES, &piece->cap);
    kvc_leaf_ctx *lc = (own ? piece->p : kvb_rd_slot_in(m, s)) ? kvc_leaf_begin() : NULL;
    if (!lc) {
        s->st = kvb_fail(s->err, sizeof s->err, KVB_ERR_NOMEM, "chunk %u of %u: out of memory", s->index, m->n_chunks);
        return;
    }
    uint8_t h[KVC_SHA256_LEN];
    for (size_t off = 0; off < len;) {
        const size_t k = len - off < step ? len - off : step;
        uint8_t *p = own ? piece->p : s->in + off;
        const double t = base_now_s();
        const ssize_t got = kvb_pread_full(s->fd, p, k, s->file_off + off, 0);
        const int e = errno;
        s->read_s += base_now_s() - t;
        if (got != (ssize_t)k) {
            kvc_leaf_end(lc, h);
            if (got < 0)
                s->st = kvb_fail(s->err, sizeof s->err, KVB_ERR_IO, "chunk %u of %u: reading: %s", s->index,
                                 m->n_chunks, strerror(e));
            else
                s->st = kvb_fail(s->err, sizeof s->err, KVB_ERR_TRUNCATED,
                                 "truncated: input ends at byte %llu inside chunk %u of %u; the blob is %llu bytes",
                                 (unsigned long long)(s->file_off + off + (size_t)got), s->index, m->n_chunks,
                                 (unsigned long long)r->h.file_size);
            return;
        }
        kvc_leaf_update(lc, p, k);
        if (direct)
            kvb_f16_place(p, off / row, k / row, n, m->kv_dim, s->sec, &s->rows);
        off += k;
    }
    kvc_leaf_end(lc, h);
    if (memcmp(h, sec->sha256, KVC_SHA256_LEN) != 0) {
        s->st = kvb_fail(s->err, sizeof s->err, KVB_ERR_CHUNK_HASH, "chunk %u of %u: sha256 mismatch", s->index,
                         m->n_chunks);
        return;
    }
    if (direct || !s->decode) {
        s->st = KVB_OK;
        return;
    }
    s->data = s->in;
    kvb_rd_decode(r, s, cc);
}

kvb_status kvb_reader_feed_fd(kvb_reader *r, int fd, char *err, size_t errlen)
{
    struct stat sb;
    if (!r->st && (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)))
        kvb_rd_err(r, KVB_ERR_USAGE, "reader: kvb_reader_feed_fd needs a regular file");
    while (!r->st) {
        if (r->phase == P_PAD && r->pos == r->pad_to)
            kvb_rd_enter_section(r);
        if (r->st)
            break;
        /* a whole chunk (of a version-2 blob, whose digest goes leaf by leaf): a job */
        if (r->phase == P_SECTION && r->sec >= 0 && r->sec_have == 0 && r->h.version >= 2) {
            slot *s = r->cur;
            s->pread = 1;
            s->fd = fd;
            s->file_off = r->pos;
            s->in_len = r->m->chunks[r->sec].length;
            r->pos += s->in_len;
            r->sec_have = s->in_len;
            kvb_rd_section_done(r);
            continue;
        }
        void *buf;
        size_t cap;
        if (kvb_reader_buffer(r, &buf, &cap, NULL, 0) != KVB_OK)
            break;
        const ssize_t k = kvb_pread_full(fd, buf, cap, r->pos, 0);
        if (k < 0) {
            char msg[200];
            snprintf(msg, sizeof msg, "reading at byte %llu: %s", (unsigned long long)r->pos, strerror(errno));
            kvb_rd_feeder_fail(r, KVB_ERR_IO, msg);
            break;
        }
        if (k == 0 || kvb_reader_commit(r, (size_t)k, NULL, 0) != KVB_OK)
            break; /* at the end: kvb_reader_finish says whether the blob was whole */
    }
    kvb_rd_wait_caller(r); /* the caller may close fd */
    return kvb_rd_ret(r, err, errlen);
}

double kvb_reader_read_seconds(const kvb_reader *r) { return r->read_s; }
