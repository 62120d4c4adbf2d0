/* kvb_decoded.c: a blob's decoded copy (spec/kvblob.md 4.2): the signed prefix and token ids
 * as they are, then every chunk decoded to f16, verified against the manifest's signed
 * raw_sha256. A local file that loads at the f16 codec's speed. */
#include "format/kvb_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

kvb_status kvb_manifest_to_decoded(kvb_manifest *m, kvb_header *h, char *err, size_t errlen)
{
    if (!m->has_raw || m->codec != KVB_CODEC_F16_ZSTD || h->version < 2)
        return kvb_fail(err, errlen, KVB_ERR_UNSUPPORTED,
                        "no decoded copy: the manifest carries no decoded chunk digests (raw_sha256)");
    kvb_section *ch = (kvb_section *)m->chunks; /* the caller's manifest: its own allocation */
    uint64_t end = m->tokens.length;
    for (uint32_t i = 0; i < m->n_chunks; i++) {
        ch[i].offset = kvb_align(end);
        ch[i].length = 2 * kvb_chunk_values(m->n_layer, ch[i].t1 - ch[i].t0, m->kv_dim);
        memcpy(ch[i].sha256, ch[i].raw_sha256, KVC_SHA256_LEN);
        end = ch[i].offset + ch[i].length;
    }
    m->codec = KVB_CODEC_F16;
    m->has_raw = 0; /* the table now describes f16 chunks: converting again is refused */
    m->stored_bytes = m->raw_bytes;
    h->file_size = h->data_offset + end;
    return KVB_OK;
}

typedef struct copy {
    int fd;
    const kvb_manifest *dm; /* the decoded layout */
    uint64_t data_offset;
    int err_no;
} copy;

/* Writes a decoded chunk where the decoded copy keeps it: layer by layer, K then V. */
static kvb_status put_chunk(void *user, const kvb_chunk *c, char *err, size_t errlen)
{
    copy *cp = user;
    const size_t rows = (size_t)(c->t1 - c->t0) * c->kv_dim * 2;
    uint64_t off = cp->data_offset + cp->dm->chunks[c->index].offset;
    for (uint32_t s = 0; s < 2 * c->n_layer; s++, off += rows) {
        if (base_pwrite_all(cp->fd, c->sec[s], rows, off) != 0) {
            cp->err_no = errno;
            return kvb_fail(err, errlen, KVB_ERR_IO, "writing the decoded copy: %s", strerror(errno));
        }
    }
    return KVB_OK;
}

static kvb_status peek(int fd, const kvb_read_opts *o, kvb_header *h, kvb_manifest **m, char *err, size_t errlen)
{
    if (o->trust)
        return kvb_peek_fd_trusted(fd, o->trust, h, m, err, errlen);
    if (!o->key && !o->skip_signature)
        return kvb_fail(err, errlen, KVB_ERR_USAGE, "decoded copy: no trust store or key to check the signature with");
    return kvb_peek_fd(fd, o->key, h, m, err, errlen);
}

/* Reads the file on fd through a reader with opts o to its end. */
static kvb_status read_all(int fd, const kvb_read_opts *o, char *err, size_t errlen)
{
    kvb_reader *r = kvb_reader_create(o);
    if (!r)
        return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory");
    kvb_status st = kvb_reader_feed_fd(r, fd, err, errlen);
    if (st == KVB_OK)
        st = kvb_reader_finish(r, err, errlen);
    kvb_reader_free(r);
    return st;
}

kvb_status kvb_decoded_write(const char *blob, const char *path, const kvb_read_opts *opts, char *err,
                             size_t errlen)
{
#ifndef KVB_HOST_LE
    return kvb_fail(err, errlen, KVB_ERR_UNSUPPORTED, "decoded copies are written on little-endian hosts only");
#endif
    int in = open(blob, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return kvb_fail(err, errlen, KVB_ERR_IO, "cannot open %s: %s", blob, strerror(errno));
    kvb_header h;
    kvb_manifest *dm = NULL;
    kvb_status st = peek(in, opts, &h, &dm, err, errlen);
    if (st == KVB_OK)
        st = kvb_manifest_to_decoded(dm, &h, err, errlen);
    if (st != KVB_OK) {
        kvb_manifest_free(dm);
        close(in);
        return st;
    }
    base_replace rep;
    if (base_replace_open(&rep, path) != 0) {
        st = kvb_fail(err, errlen, KVB_ERR_IO, "cannot create a file beside %s: %s", path, strerror(errno));
        kvb_manifest_free(dm);
        close(in);
        return st;
    }
    /* The signed prefix, its padding and the token ids as they are; the reader below checks
     * them all before a chunk is written, and the read-back checks them again. */
    const uint64_t head = h.data_offset + dm->tokens.length;
    uint8_t *buf = malloc(head);
    copy cp = {.fd = rep.fd, .dm = dm, .data_offset = h.data_offset};
    if (!buf) {
        st = kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory");
    } else if (pread(in, buf, head, 0) != (ssize_t)head) {
        st = kvb_fail(err, errlen, KVB_ERR_TRUNCATED, "%s ends inside its token ids", blob);
    } else if (base_pwrite_all(rep.fd, buf, head, 0) != 0 || ftruncate(rep.fd, (off_t)h.file_size) != 0) {
        st = kvb_fail(err, errlen, KVB_ERR_IO, "writing the decoded copy %s: %s", path, strerror(errno));
    } else {
        kvb_read_opts ro = *opts;
        ro.decoded = 0;
        ro.no_decode = 0;
        ro.max_chunks = 0;
        ro.on_manifest = NULL;
        ro.on_dest = NULL;
        ro.on_chunk = put_chunk;
        ro.user = &cp;
        st = read_all(in, &ro, err, errlen);
        if (st == KVB_ERR_CALLBACK && cp.err_no)
            st = KVB_ERR_IO;
    }
    free(buf);
    if (st == KVB_OK) {
        /* read back as a loader will: every chunk against its signed decoded digest */
        kvb_read_opts ro = {.trust = opts->trust, .key = opts->key, .skip_signature = opts->skip_signature,
                            .now = opts->now, .n_threads = opts->n_threads, .no_decode = 1, .decoded = 1};
        char e[256];
        st = read_all(rep.fd, &ro, e, sizeof e);
        if (st != KVB_OK)
            kvb_fail(err, errlen, st, "decoded copy: %s%s", e,
                     st == KVB_ERR_CHUNK_HASH ? " (the decoded bytes differ from the signed raw_sha256)" : "");
    }
    if (st == KVB_OK && base_replace_commit(&rep) != 0)
        st = kvb_fail(err, errlen, KVB_ERR_IO, "saving the decoded copy %s: %s", path, strerror(errno));
    else if (st != KVB_OK)
        base_replace_abort(&rep);
    kvb_manifest_free(dm);
    close(in);
    return st;
}
