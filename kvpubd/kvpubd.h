/* kvpubd.h: the subcommands of build/kvpubd (the publisher CLI and daemon), one file each.
 * Each returns a process exit code: 0 ok, 1 refused, 2 usage or I/O error. */
#ifndef KVPUB_KVPUBD_H
#define KVPUB_KVPUBD_H

int kvpubd_keygen_main(int argc, char **argv);

#endif
