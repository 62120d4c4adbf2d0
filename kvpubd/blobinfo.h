/* blobinfo.h: turns a verified blob manifest into the facts store/ indexes (kvs_blob), shared
 * by `kvpubd publish` and the daemon's upload endpoint so both index a blob identically. */
#ifndef KVPUB_KVPUBD_BLOBINFO_H
#define KVPUB_KVPUBD_BLOBINFO_H

#include "format/kvblob.h"
#include "store/kvstore.h"

/* The strings a kvs_blob borrows (shape and RoPE JSON), owned by this struct. */
typedef struct kvpubd_blobinfo {
    kvs_blob blob;   /* strings point into m and into the two buffers below */
    char *shape_json;
    char *rope_json;
} kvpubd_blobinfo;

/* Fills bi from m (borrowed: must outlive bi), the signer key id and a price. The blob id and
 * size are left zero (store/ computes them from the bytes). Returns 0, or -1 out of memory. */
int kvpubd_blobinfo_fill(kvpubd_blobinfo *bi, const kvb_manifest *m, const uint8_t key_id[KVC_KEYID_LEN],
                         uint64_t price);
void kvpubd_blobinfo_clear(kvpubd_blobinfo *bi);

#endif
