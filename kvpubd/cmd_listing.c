/* cmd_listing.c: `kvpubd listing set`: change a listing's price, title or expiry without
 * republishing its blob; the next snapshot carries the change under a new version. */
#include "kvpubd/kvpubd.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "crypto/kvcrypto.h"
#include "format/kvblob.h"
#include "store/kvstore.h"

static const char listing_usage[] =
    "usage: kvpubd listing set --store DIR ID [--price N] [--title T] [--expires DURATION|never]\n"
    "Changes what the catalog and the snapshot say about listing ID (its blob id). The blob's\n"
    "signed manifest keeps what was published; the listing cannot outlive it: an expiry past\n"
    "the manifest's own is refused. --expires counts from now.\n"
    "Exit: 0 ok, 1 refused (unknown id, revoked publisher, expiry past the blob's), 2 usage or I/O.\n";

int kvpubd_listing_main(int argc, char **argv)
{
    enum { O_STORE = 1, O_PRICE, O_TITLE, O_EXPIRES };
    static const struct option longopts[] = {
        {"store", required_argument, NULL, O_STORE}, {"price", required_argument, NULL, O_PRICE},
        {"title", required_argument, NULL, O_TITLE}, {"expires", required_argument, NULL, O_EXPIRES},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    const char *prog = "kvpubd listing set";
    base_opts op = {.prog = prog, .usage = listing_usage, .shortopts = "h", .longopts = longopts, .first = 2};
    if (!base_opts_verb(&op, argc, argv, "set"))
        return op.rc;
    const char *store = NULL;
    kvs_listing_update u = {0};
    int64_t now = (int64_t)time(NULL);
    uint64_t v;
    int c;
    while ((c = base_opts_next(&op, argc, argv)) > 0) {
        switch (c) {
        case O_STORE: store = optarg; break;
        case O_TITLE: u.title = optarg; break;
        case O_PRICE:
            if (base_parse_u64(optarg, &u.price) != 0 || u.price > (uint64_t)INT64_MAX) {
                fprintf(stderr, "%s: --price '%s' is not a whole number up to 2^63-1\n", prog, optarg);
                return 2;
            }
            u.set_price = 1;
            break;
        case O_EXPIRES:
            u.set_expires = 1;
            if (strcmp(optarg, "never") == 0)
                break;
            if (base_parse_duration(optarg, &v) != 0 || v == 0 || v > 100u * 366 * 86400) {
                fprintf(stderr, "%s: --expires '%s' is not a duration (e.g. 30d) or 'never'\n", prog, optarg);
                return 2;
            }
            u.expires = now + (int64_t)v;
            break;
        }
    }
    if (c < 0)
        return op.rc;
    uint8_t id[32];
    if (!store || optind + 1 != argc || strlen(argv[optind]) != 64 || kvc_unhex(argv[optind], id, 32) != KVC_OK ||
        (!u.title && !u.set_price && !u.set_expires)) {
        fprintf(stderr, "%s: give --store DIR, one blob ID (64 hex digits) and something to change (try --help)\n",
                prog);
        return 2;
    }
    char err[1024], path[4096], a[32], b[32];
    kvs_store *s = NULL;
    if (kvpubd_store_open(prog, store, &s, err, sizeof err))
        return 2;
    kvs_status st = kvs_store_blob_path(s, id, path, sizeof path, err, sizeof err);
    int rc = 0;
    if (st == KVS_OK && u.set_expires) {
        /* the blob itself refuses loading after its signed expiry: a listing cannot promise more */
        kvb_manifest *m = NULL;
        char perr[512];
        if (kvb_peek_file(path, NULL, NULL, &m, perr, sizeof perr) != KVB_OK) {
            base_errf(err, sizeof err, "%s: %s", path, perr);
            rc = 2;
        } else if (m->expires && (!u.expires || u.expires > m->expires)) {
            base_errf(err, sizeof err, "the blob's signed manifest expires at %s; the listing cannot expire %s%s",
                     kvb_time_format(m->expires, a, sizeof a), u.expires ? "at " : "never",
                     u.expires ? kvb_time_format(u.expires, b, sizeof b) : "");
            rc = 1;
        }
        kvb_manifest_free(m);
    }
    if (st == KVS_OK && !rc)
        st = kvs_store_listing_set(s, id, &u, err, sizeof err);
    kvs_store_close(s);
    if (st != KVS_OK)
        rc = st == KVS_ERR_NOTFOUND || st == KVS_ERR_REVOKED ? 1 : 2;
    if (rc)
        fprintf(stderr, "%s: %s\n", prog, err);
    return rc;
}
