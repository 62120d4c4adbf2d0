/* kvpubd: the publisher CLI and daemon. Thin dispatcher over the kvpubd/cmd_ files. */
#include "base/base.h"
#include "engine/engine.h"
#include "kvpubd/kvpubd.h"

static const base_cmd cmds[] = {
    /* entries are added as commands land */
    {"keygen", kvpubd_keygen_main, "create an Ed25519 publisher key pair"},
    {"publish", kvpubd_publish_main, "prefill documents and publish signed KV blobs to a store"},
    {"serve", kvpubd_serve_main, "serve a store over HTTPS (catalog, blobs, purchases, uploads)"},
    {"publisher", kvpubd_publisher_main, "register publishers (keys + upload credentials) in a store"},
    {"gc", kvpubd_gc_main, "remove expired blobs and reconcile a store"},
    {"snapshot", kvpubd_snapshot_main, "sign the catalog as a versioned, expiring snapshot"},
    {"export", kvpubd_export_main, "write a static repository tree any web server can serve"},
    {"key", kvpubd_key_main, "rotate, list or revoke the store's signing keys"},
    {"upload", kvpubd_upload_main, "upload a signed blob to a kvpubd marketplace (publishers)"},
    {"listing", kvpubd_listing_main, "change a listing's price, title or expiry (no new blob)"},
    {NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
    eng_exit_on_sigbus("kvpubd"); /* a mapped model or blob truncated under us: error, not core */
    return base_cmd_dispatch("kvpubd", cmds, argc, argv);
}
