/* cmd_gc.c: `kvpubd gc`: removes expired blobs and reconciles the store (thin over store/). */
#include "kvpubd/kvpubd.h"
#include "base/base.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/kvstore.h"

static const char gc_usage[] =
    "usage: kvpubd gc --store DIR [--now UNIX_SECONDS]\n"
    "Removes blobs expired at now (default: the current time), unreferenced documents/models,\n"
    "then orphan files and rows. Prints what it removed. Exit: 0 ok, 2 usage or I/O error.\n";

int kvpubd_gc_main(int argc, char **argv)
{
    const char *dir = NULL;
    long long now = (long long)time(NULL);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(gc_usage, stdout);
            return 0;
        }
        if (i + 1 < argc && strcmp(argv[i], "--store") == 0)
            dir = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--now") == 0) {
            uint64_t v = 0;
            if (base_parse_u64(argv[++i], &v) != 0 || v == 0 || v > (uint64_t)INT64_MAX) {
                fprintf(stderr, "kvpubd gc: --now '%s': expected unix seconds\n", argv[i]);
                return 2;
            }
            now = (long long)v;
        } else {
            fprintf(stderr, "kvpubd gc: unexpected argument '%s'\n%s", argv[i], gc_usage);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "kvpubd gc: --store DIR is required\n%s", gc_usage);
        return 2;
    }
    char err[512];
    kvs_store *s = NULL;
    if (kvpubd_store_open("kvpubd gc", dir, &s, err, sizeof err))
        return 2;
    size_t blobs = 0;
    kvs_status st = kvs_store_gc(s, (int64_t)now, &blobs, err, sizeof err);
    kvs_store_close(s);
    if (st != KVS_OK) {
        fprintf(stderr, "kvpubd gc: %s\n", err);
        return 2;
    }
    printf("removed %zu expired blob%s\n", blobs, blobs == 1 ? "" : "s");
    return 0;
}
