/* kvpubd.h: the subcommands of build/kvpubd (the publisher CLI and daemon), one file each.
 * Each returns a process exit code: 0 ok, 1 refused, 2 usage or I/O error. */
#ifndef KVPUB_KVPUBD_H
#define KVPUB_KVPUBD_H

#include <stddef.h>

#include "store/kvstore.h"

int kvpubd_keygen_main(int argc, char **argv);
int kvpubd_publish_main(int argc, char **argv);   /* cmd_publish.c */
int kvpubd_serve_main(int argc, char **argv);     /* cmd_serve.c */
int kvpubd_publisher_main(int argc, char **argv); /* cmd_publisher.c */
int kvpubd_gc_main(int argc, char **argv);        /* cmd_gc.c */
int kvpubd_snapshot_main(int argc, char **argv);  /* cmd_repo.c */
int kvpubd_export_main(int argc, char **argv);    /* cmd_repo.c */
int kvpubd_key_main(int argc, char **argv);       /* cmd_key.c */
int kvpubd_listing_main(int argc, char **argv);   /* cmd_listing.c */
int kvpubd_upload_main(int argc, char **argv);    /* cmd_upload.c */

/* Shared by the commands (cmd_common.c). */
/* Opens the store at dir into *s (kvs_store_open, err as its buffer). Returns 0, or 2 after
 * printing "PROG: why" on stderr. */
int kvpubd_store_open(const char *prog, const char *dir, kvs_store **s, char *err, size_t errlen);

#endif
