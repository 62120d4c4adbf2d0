/* fuzz_kvblob.c: libFuzzer target for the blob reader: the streaming state machine (input split
 * into pieces chosen by the first byte, fed by kvb_reader_feed or read into kvb_reader_buffer),
 * the manifest parser, plus kvb_peek. The signature check is skipped so mutated manifests reach
 * the parser; seed with spec/vectors. Inputs starting "KVBDEC" go to the chunk decoders directly
 * (a signed chunk can hold any bytes; through the reader a mutated chunk never passes its hash):
 * codec, n_layer, n, kv_dim bytes, then the stored bytes. That is why this format/ harness uses
 * format/kvb_internal.h. */
#include "format/kvb_internal.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
    size_t piece = size ? (size_t)data[0] * 37 + 1 : 1;
    kvb_read_opts o;
    memset(&o, 0, sizeof o);
    o.skip_signature = 1;
    o.now = -1;
    o.n_threads = (size & 1) ? 1 : 2;
    o.on_chunk = sink;
    kvb_reader *r = kvb_reader_create(&o);
    if (!r)
        return 0;
    kvb_status st = KVB_OK;
    int direct = (size & 2) != 0;
    for (size_t off = 0; !st && off < size;) {
        size_t n = size - off < piece ? size - off : piece;
        if (direct) {
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
    if (!st)
        (void)kvb_reader_finish(r, err, sizeof err);
    kvb_reader_free(r);
    return 0;
}
