/* fuzz_kvblob.c: libFuzzer target for the blob reader: the streaming state machine (input split
 * into pieces chosen by the first byte), the manifest parser and the codecs, plus kvb_peek.
 * The signature check is skipped so mutated manifests reach the parser; seed with spec/vectors. */
#include "format/kvblob.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static kvb_status sink(void *user, const kvb_chunk *c, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    /* touch every decoded value so ASan sees out-of-bounds deliveries */
    volatile uint16_t acc = 0;
    size_t n = (size_t)c->n_layer * 2 * (c->t1 - c->t0) * c->kv_dim;
    for (size_t i = 0; i < n; i++)
        acc ^= c->kv[i];
    (void)user;
    return KVB_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
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
    for (size_t off = 0; !st && off < size; off += piece)
        st = kvb_reader_feed(r, data + off, size - off < piece ? size - off : piece, err, sizeof err);
    if (!st)
        (void)kvb_reader_finish(r, err, sizeof err);
    kvb_reader_free(r);
    return 0;
}
