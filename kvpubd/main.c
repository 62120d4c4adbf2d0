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
    {NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
    eng_exit_on_sigbus("kvpubd"); /* a mapped model or blob truncated under us: error, not core */
    return base_cmd_dispatch("kvpubd", cmds, argc, argv);
}
