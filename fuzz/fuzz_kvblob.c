/* fuzz_kvblob.c: libFuzzer target for the blob reader: the streaming state machine (input split
 * into pieces chosen by the first byte, fed by kvb_reader_feed or read into kvb_reader_buffer),
 * the file path (the first piece fed, the rest read by kvb_reader_feed_fd from a memfd, with
 * f16 chunks placed in the harness's rows as they are hashed), the manifest parser, plus
 * kvb_peek. Every input goes through each way of feeding, and once more read as a decoded copy. The signature check is skipped so mutated manifests reach
 * the parser; seed with spec/vectors. Inputs starting "KVBDEC" go to the chunk decoders directly
 * (a signed chunk can hold any bytes; through the reader a mutated chunk never passes its hash):
 * codec, n_layer, n, kv_dim bytes, then the stored bytes. That is why this format/ harness uses
 * format/kvb_internal.h. */
#include "format/kvb_internal.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static kvb_status sink(void *user, const kvb_chunk *c, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    /* touch every decoded value so ASan sees out-of-bounds deliveries */
    volatile uint16_t acc = 0;
    size_t n = (size_t)(c->t1 - c->t0) * c->kv_dim;
    for (uint32_t l = 0; l < 2 * c->n_layer; l++)
        for (size_t i = 0; i < n; i++)
            acc ^= c->sec[l][i];
    (void)user;
    return KVB_OK;
}

static void fuzz_decode(const uint8_t *data, size_t size)
{
    if (size < 10)
        return;
    kvb_codec codec = (kvb_codec)(data[6] % KVB_CODEC_COUNT);
    uint32_t n_layer = 1 + data[7] % 4, n = 1 + data[8] % 64, kv_dim = 1 + data[9] % 64;
    uint16_t *kv = malloc(2 * kvb_chunk_values(n_layer, n, kv_dim)), *sec[8];
    kvb_codec_ctx *c = kvb_codec_ctx_create(0);
    char err[256];
    for (uint32_t i = 0; kv && i < 2 * n_layer; i++) /* sections in reverse order: any placement works */
        sec[i] = kv + (size_t)(2 * n_layer - 1 - i) * n * kv_dim;
    /* rows cut into pieces (a cache keeping each head's cells together) when data[9] says so:
     * the pieces of a section fill exactly its n * kv_dim values */
    const uint32_t seg = kv_dim % 2 == 0 && data[9] & 0x40 ? kv_dim / 2 : 0;
    const kvb_rows rows = {seg, (size_t)n * seg};
    if (kv && c)
        (void)kvb_chunk_decode(c, codec, data + 10, size - 10, n_layer, n, kv_dim, sec, &rows, err, sizeof err);
    kvb_codec_ctx_free(c);
    free(kv);
}

/* The rows on_dest hands out: each chunk's own block, freed after the reader. */
typedef struct dests {
    uint32_t n_layer, kv_dim, head_dim;
    int cut; /* 1: rows cut into head_dim pieces, as the engine's cache keeps them; 2: one more */
    uint16_t *blocks[64];
    int n;
} dests;

static kvb_status on_manifest(void *user, const kvb_manifest *m, const kvb_header *h, char *err, size_t errlen)
{
    (void)h;
    (void)err;
    (void)errlen;
    dests *d = user;
    d->n_layer = m->n_layer;
    d->kv_dim = m->kv_dim;
    d->head_dim = m->head_dim;
    return KVB_OK;
}

static int on_dest(void *user, uint32_t index, uint32_t t0, uint32_t t1, uint16_t **k, uint16_t **v,
                   kvb_rows *rows)
{
    (void)index;
    dests *d = user;
    const size_t sec = (size_t)(t1 - t0) * d->kv_dim;
    if (d->n == 64 || d->n_layer == 0 || sec == 0 || sec > ((size_t)4 << 20) / 4 / d->n_layer)
        return 0; /* the reader's buffer (a mutated manifest may ask for a lot) */
    uint16_t *b = calloc(2 * (size_t)d->n_layer, sec * sizeof *b);
    if (!b)
        return 0;
    d->blocks[d->n++] = b;
    for (uint32_t l = 0; l < d->n_layer; l++) {
        k[l] = b + 2 * l * sec;
        v[l] = b + (2 * l + 1) * sec;
    }
    /* pieces of a head's dimension, or one more: a seg that does not divide kv_dim must fail
     * the read cleanly, and one that does must stay inside the n * kv_dim values given */
    const uint32_t seg = d->head_dim + (d->cut > 1);
    if (d->cut && seg < d->kv_dim)
        *rows = (kvb_rows){seg, (size_t)(t1 - t0) * seg};
    return 1;
}

enum { FEED, BUFFER, FD, FD_DEST, FD_DECODED, N_WAYS };

static void read_blob(const uint8_t *data, size_t size, int way)
{
    char err[256];
    size_t piece = size ? (size_t)data[0] * 37 + 1 : 1;
    dests d = {.cut = size > 1 ? data[1] % 3 : 0};
    kvb_read_opts o;
    memset(&o, 0, sizeof o);
    o.skip_signature = 1;
    o.now = -1;
    o.n_threads = (size & 1) ? 1 : 2;
    o.on_chunk = sink;
    o.on_manifest = on_manifest;
    o.on_dest = way == FD_DEST ? on_dest : NULL;
    o.check_raw = 1;                /* decoded chunks against raw_sha256, where there are any */
    o.decoded = way == FD_DECODED; /* the input as a decoded copy (spec/kvblob.md 4.2) */
    o.user = &d;
    kvb_reader *r = kvb_reader_create(&o);
    if (!r)
        return;
    kvb_status st = KVB_OK;
    size_t off = 0;
    while (!st && off < size && !(off > 0 && way >= FD)) {
        size_t n = size - off < piece ? size - off : piece;
        if (way == BUFFER) {
            void *buf;
            size_t cap;
            st = kvb_reader_buffer(r, &buf, &cap, err, sizeof err);
            if (st)
                break;
            n = n < cap ? n : cap;
            memcpy(buf, data + off, n);
            st = kvb_reader_commit(r, n, err, sizeof err);
        } else {
            st = kvb_reader_feed(r, data + off, n, err, sizeof err);
        }
        off += n;
    }
    if (!st && way >= FD) { /* the rest from a file, at its offsets */
        int fd = memfd_create("fuzz_kvblob", 0);
        if (fd >= 0 && (size == 0 || write(fd, data, size) == (ssize_t)size))
            st = kvb_reader_feed_fd(r, fd, err, sizeof err);
        if (fd >= 0)
            close(fd);
    }
    if (!st)
        (void)kvb_reader_finish(r, err, sizeof err);
    kvb_reader_free(r);
    for (int i = 0; i < d.n; i++)
        free(d.blocks[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size >= 6 && memcmp(data, "KVBDEC", 6) == 0) {
        fuzz_decode(data, size);
        return 0;
    }
    kvb_manifest *m = NULL;
    char err[256];
    if (kvb_peek(data, size, NULL, NULL, &m, err, sizeof err) == KVB_OK)
        kvb_manifest_free(m);
    for (int way = 0; way < N_WAYS; way++)
        read_blob(data, size, way);
    return 0;
}
