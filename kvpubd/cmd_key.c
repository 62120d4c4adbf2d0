/* cmd_key.c: `kvpubd key rotate|list|revoke`: the store's own signing keys (spec/repository.md,
 * "Keys"), which sign its snapshots and, by default, the blobs `kvpubd publish` makes. */
#include "kvpubd/kvpubd.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/base.h"
#include "crypto/kvcrypto.h"
#include "format/kvblob.h"
#include "store/kvstore.h"

static const char key_usage[] =
    "usage: kvpubd key rotate --store DIR [--cutoff UNIX]\n"
    "       kvpubd key list --store DIR\n"
    "       kvpubd key revoke --store DIR --key-id HEX16 [--reason TEXT]\n"
    "rotate makes a new signing key (DIR/signing/ID.key, 0600) and makes it the active one: new\n"
    "snapshots and blobs are signed with it. The key active until then is retired: clients\n"
    "accept its signatures dated before the cut-off (default: now) and refuse later ones. The\n"
    "first rotate gives a store its first key. Prints the new key id.\n"
    "list prints each key: id, state (active, retired, revoked), created, cut-off.\n"
    "revoke marks a signing key revoked: the blobs it signed leave the catalog and the snapshot\n"
    "and are no longer served (as kvpubd publisher revoke).\n"
    "Exit: 0 ok, 1 refused (no such signing key), 2 usage or I/O error.\n";

int kvpubd_key_main(int argc, char **argv)
{
    const char *prog = "kvpubd key";
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(key_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *verb = argv[1];
    if (strcmp(verb, "rotate") && strcmp(verb, "list") && strcmp(verb, "revoke")) {
        fprintf(stderr, "%s: unknown action '%s' (rotate, list, revoke; try --help)\n", prog, verb);
        return 2;
    }
    enum { O_STORE = 1, O_CUTOFF, O_KEYID, O_REASON };
    static const struct option longopts[] = {
        {"store", required_argument, NULL, O_STORE}, {"cutoff", required_argument, NULL, O_CUTOFF},
        {"key-id", required_argument, NULL, O_KEYID}, {"reason", required_argument, NULL, O_REASON},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    const char *store = NULL, *keyid = NULL, *reason = NULL;
    uint64_t cutoff = 0;
    int c;
    base_opts op = {.prog = prog, .usage = key_usage, .shortopts = "h", .longopts = longopts, .first = 2};
    while ((c = base_opts_next(&op, argc, argv)) > 0) {
        switch (c) {
        case O_STORE: store = optarg; break;
        case O_KEYID: keyid = optarg; break;
        case O_REASON: reason = optarg; break;
        case O_CUTOFF:
            if (base_parse_u64(optarg, &cutoff) != 0 || cutoff == 0 || cutoff > (uint64_t)INT32_MAX * 64) {
                fprintf(stderr, "%s: --cutoff '%s' is not unix seconds\n", prog, optarg);
                return 2;
            }
            break;
        }
    }
    if (c < 0)
        return op.rc;
    uint8_t id[KVC_KEYID_LEN];
    if (!store || optind < argc || (!strcmp(verb, "revoke") && (!keyid || strlen(keyid) != 16 ||
                                                                 kvc_unhex(keyid, id, sizeof id) != KVC_OK))) {
        fprintf(stderr, "%s %s: give --store DIR%s (try --help)\n", prog, verb,
                !strcmp(verb, "revoke") ? " and --key-id HEX16 (16 hex digits)" : "");
        return 2;
    }
    char err[1024], hex[17], t1[32], t2[32];
    kvs_store *s = NULL;
    if (kvpubd_store_open(prog, store, &s, err, sizeof err))
        return 2;
    int64_t now = (int64_t)time(NULL);
    kvs_status st;
    if (!strcmp(verb, "rotate")) {
        kvs_signing_key k;
        st = kvs_store_key_rotate(s, now, (int64_t)cutoff, &k, err, sizeof err);
        if (st == KVS_OK)
            printf("%s\n", kvc_hex(k.key_id, KVC_KEYID_LEN, hex));
    } else if (!strcmp(verb, "revoke")) {
        st = kvs_store_key_revoke(s, id, reason, now, err, sizeof err);
        if (st == KVS_OK)
            fprintf(stderr, "signing key %s revoked\n", keyid);
    } else {
        kvs_signing_key *keys = NULL;
        size_t n = 0;
        st = kvs_store_key_list(s, &keys, &n, err, sizeof err);
        for (size_t i = 0; st == KVS_OK && i < n; i++)
            printf("%s %-7s created %s cutoff %s\n", kvc_hex(keys[i].key_id, KVC_KEYID_LEN, hex),
                   kvs_key_state_str(keys[i].state), kvb_time_format(keys[i].created, t1, sizeof t1),
                   keys[i].cutoff ? kvb_time_format(keys[i].cutoff, t2, sizeof t2) : "-");
        free(keys);
    }
    kvs_store_close(s);
    if (st != KVS_OK) {
        fprintf(stderr, "%s %s: %s\n", prog, verb, err);
        return st == KVS_ERR_NOTFOUND ? 1 : 2;
    }
    return 0;
}
