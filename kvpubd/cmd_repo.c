/* cmd_repo.c: `kvpubd snapshot` (sign the catalog as a snapshot file) and `kvpubd export` (a
 * static repository tree that any web server or CDN serves as plain files, laid out as the
 * API's URLs: spec/repository.md). */
#include "kvpubd/kvpubd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "base/base.h"
#include "crypto/kvcrypto.h"
#include "format/kvblob.h"
#include "store/kvstore.h"

static const char snapshot_usage[] =
    "usage: kvpubd snapshot --store DIR [--expires DURATION] [--key PREFIX.key] [-o FILE]\n"
    "Signs the store's catalog as a snapshot (spec/repository.md): every current listing, the\n"
    "signing keys, the revoked key ids, the next version of the signing key's counter, and an\n"
    "expiry. Written to FILE (atomically) or stdout.\n"
    "  --expires DURATION  lifetime, e.g. 12h, 1d (default 1d): clients refuse it afterwards\n"
    "  --key PREFIX.key    sign with this key instead of the store's active signing key\n"
    "  --now UNIX          issue it at this time instead of the clock (tests)\n"
    "  --json              with -o: print {version, listings, expires, out} on stdout\n"
    "Exit: 0 ok, 2 usage, I/O or no signing key.\n";

static const char export_usage[] =
    "usage: kvpubd export --store DIR --out DIR [--expires DURATION] [--key PREFIX.key]\n"
    "Writes a static repository: OUT/v1/blobs/ID, OUT/v1/manifests/ID, OUT/v1/keys and, last,\n"
    "OUT/v1/snapshot, the same URLs kvpubd serve answers, so kvfetch cannot tell a web server\n"
    "serving OUT from kvpubd. Incremental: blobs already there are kept, new ones are hard\n"
    "links to the store's files (or copies) put in place by rename; blobs no longer listed are\n"
    "removed after the new snapshot is in place. Priced listings stay in the snapshot but\n"
    "their blobs are not exported (a plain file server cannot check a token).\n"
    "  --expires DURATION, --key PREFIX.key, --now UNIX   as for kvpubd snapshot\n"
    "  --json              print the counts as JSON\n"
    "Exit: 0 ok, 2 usage, I/O or no signing key.\n";

typedef struct repo_args {
    const char *prog; /* "kvpubd snapshot" or "kvpubd export": prefixes messages */
    const char *store, *out, *key;
    uint64_t ttl;
    int64_t now;
    int json;
} repo_args;

/* Parses the options both commands take (need_out: --out is required). Returns -1 to go on, or
 * the exit code: 0 after --help, 2 on a usage error. */
static int parse_args(int argc, char **argv, const char *prog, const char *usage, int need_out, repo_args *a)
{
    enum { O_STORE = 1, O_OUT, O_EXPIRES, O_KEY, O_NOW, O_JSON };
    static const struct option longopts[] = {
        {"store", required_argument, NULL, O_STORE}, {"out", required_argument, NULL, O_OUT},
        {"expires", required_argument, NULL, O_EXPIRES}, {"key", required_argument, NULL, O_KEY},
        {"now", required_argument, NULL, O_NOW}, {"json", no_argument, NULL, O_JSON},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof *a);
    a->prog = prog;
    a->ttl = 86400;
    int c;
    uint64_t v;
    base_opts op = {.prog = prog, .usage = usage, .shortopts = "o:h", .longopts = longopts};
    while ((c = base_opts_next(&op, argc, argv)) > 0) {
        switch (c) {
        case O_STORE: a->store = optarg; break;
        case 'o': case O_OUT: a->out = optarg; break;
        case O_KEY: a->key = optarg; break;
        case O_JSON: a->json = 1; break;
        case O_EXPIRES:
            if (base_parse_duration(optarg, &a->ttl) != 0 || a->ttl == 0 || a->ttl > 366u * 86400) {
                fprintf(stderr, "%s: --expires '%s' is not a duration from 1s to 366d (e.g. 12h, 1d)\n", prog, optarg);
                return 2;
            }
            break;
        case O_NOW:
            if (base_parse_u64(optarg, &v) != 0 || v == 0 || v > (uint64_t)INT32_MAX * 64) {
                fprintf(stderr, "%s: --now '%s' is not unix seconds\n", prog, optarg);
                return 2;
            }
            a->now = (int64_t)v;
            break;
        }
    }
    if (c < 0)
        return op.rc;
    if (base_opts_no_operands(&op, argc, argv, 1))
        return 2;
    if (!a->store) {
        fprintf(stderr, "%s: --store DIR is required (try --help)\n", prog);
        return 2;
    }
    if (need_out && !a->out) {
        fprintf(stderr, "%s: --out DIR is required (try --help)\n", prog);
        return 2;
    }
    if (!a->now)
        a->now = (int64_t)time(NULL);
    return -1;
}

/* Opens the store and signs a snapshot. Returns 0 or 2 after printing why. */
static int make_snapshot(const repo_args *a, kvs_store **st, kvs_snapshot *snap)
{
    const char *prog = a->prog;
    char err[1024];
    kvc_key *key = NULL;
    if (kvpubd_store_open(prog, a->store, st, err, sizeof err))
        return 2;
    kvs_status s = KVS_OK;
    if (a->key) {
        if (kvc_key_load_private(a->key, &key, err, sizeof err) != KVC_OK)
            s = KVS_ERR_IO;
    } else {
        s = kvs_store_key_active(*st, &key, err, sizeof err);
    }
    if (s == KVS_OK)
        s = kvs_store_snapshot(*st, key, a->now, (int64_t)a->ttl, snap, err, sizeof err);
    kvc_key_free(key);
    if (s != KVS_OK) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return 2;
    }
    return 0;
}

/* Writes len bytes to path through base_replace (a temporary file in its directory). */
static int write_file(const char *path, const void *data, size_t len, char *err, size_t errlen)
{
    base_replace r;
    int rc = base_replace_open(&r, path);
    if (rc == 0 && base_write_all(r.fd, data, len) != 0) {
        base_replace_abort(&r);
        rc = -1;
    }
    if (rc == 0)
        rc = base_replace_commit(&r);
    if (rc != 0)
        base_errf(err, errlen, "cannot write %s: %s", path, strerror(errno));
    return rc;
}

int kvpubd_snapshot_main(int argc, char **argv)
{
    repo_args a;
    int rc = parse_args(argc, argv, "kvpubd snapshot", snapshot_usage, 0, &a);
    if (rc >= 0)
        return rc;
    const char *prog = a.prog;
    if (a.json && !a.out) {
        fprintf(stderr, "%s: --json needs -o FILE (without it the snapshot itself goes to stdout)\n", prog);
        return 2;
    }
    kvs_store *st = NULL;
    kvs_snapshot snap;
    rc = make_snapshot(&a, &st, &snap);
    kvs_store_close(st);
    if (rc)
        return rc;
    char err[1024];
    if (a.out && write_file(a.out, snap.bytes, snap.len, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", prog, err);
        rc = 2;
    } else if (!a.out && (fwrite(snap.bytes, 1, snap.len, stdout) != snap.len || fflush(stdout) != 0)) {
        fprintf(stderr, "%s: cannot write the snapshot to stdout\n", prog);
        rc = 2;
    }
    if (!rc && a.json) {
        json_t *o = json_pack("{s:I, s:I, s:I, s:s}", "version", (json_int_t)snap.version, "listings",
                              (json_int_t)snap.n_blobs, "expires", (json_int_t)(a.now + (int64_t)a.ttl), "out", a.out);
        char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (!txt || printf("%s\n", txt) < 0 || fflush(stdout) != 0) {
            fprintf(stderr, "%s: cannot write the summary to stdout\n", prog);
            rc = 2;
        }
        free(txt);
        json_decref(o);
    } else if (!rc) {
        fprintf(stderr, "snapshot version %" PRIu64 ": %zu listings, expires in %" PRIu64 " s\n", snap.version,
                snap.n_blobs, a.ttl);
    }
    free(snap.bytes);
    free(snap.payload);
    return rc;
}

/* ---- export ---- */

typedef struct export_counts {
    size_t written, kept, removed, priced;
} export_counts;

static int mkdirs(const char *out, char *err, size_t errlen)
{
    static const char *const sub[] = {"", "/v1", "/v1/blobs", "/v1/manifests"};
    char p[PATH_MAX];
    for (size_t i = 0; i < 4; i++) {
        if ((size_t)snprintf(p, sizeof p, "%s%s", out, sub[i]) >= sizeof p)
            return base_errf(err, errlen, "output path too long: %s", out), -1;
        if (mkdir(p, 0755) != 0 && errno != EEXIST)
            return base_errf(err, errlen, "cannot create %s: %s", p, strerror(errno)), -1;
    }
    return 0;
}

/* Copies src to dst through base_replace (a temporary file next to dst, renamed into place). */
static int copy_file(const char *src, const char *dst, char *err, size_t errlen)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return base_errf(err, errlen, "cannot read %s: %s", src, strerror(errno)), -1;
    base_replace r;
    int rc = base_replace_open(&r, dst);
    if (rc == 0 && base_copy_fd(in, r.fd) != 0) {
        base_replace_abort(&r);
        rc = -1;
    }
    if (rc == 0)
        rc = base_replace_commit(&r);
    const int e = errno;
    close(in);
    if (rc != 0)
        base_errf(err, errlen, "cannot write %s: %s", dst, strerror(e));
    return rc;
}

/* Puts blob idhex (size bytes) and its manifest into OUT unless they are there already. */
static int export_blob(kvs_store *st, const char *out, const char *idhex, uint64_t size, export_counts *c, char *err,
                       size_t errlen)
{
    char dst[PATH_MAX], mdst[PATH_MAX], src[PATH_MAX], tmp[PATH_MAX + 32];
    uint8_t id[32];
    struct stat sb;
    if (kvc_unhex(idhex, id, 32) != KVC_OK)
        return base_errf(err, errlen, "snapshot lists a malformed id"), -1;
    snprintf(dst, sizeof dst, "%s/v1/blobs/%s", out, idhex);
    snprintf(mdst, sizeof mdst, "%s/v1/manifests/%s", out, idhex);
    int have = stat(dst, &sb) == 0 && S_ISREG(sb.st_mode) && (uint64_t)sb.st_size == size;
    if (have && stat(mdst, &sb) == 0) {
        c->kept++;
        return 0;
    }
    kvs_status ks = kvs_store_blob_path(st, id, src, sizeof src, err, errlen);
    if (ks != KVS_OK)
        return -1;
    if (!have) {
        /* a hard link costs no copy; a rename of it puts the whole file in place at once */
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dst, (long)getpid());
        unlink(tmp);
        if (link(src, tmp) == 0) {
            if (rename(tmp, dst) != 0) {
                unlink(tmp);
                return base_errf(err, errlen, "cannot write %s: %s", dst, strerror(errno)), -1;
            }
        } else if (copy_file(src, dst, err, errlen) != 0) {
            return -1;
        }
        c->written++;
    }
    /* the manifest exactly as the blob holds it, as GET /v1/blobs/{id}/manifest answers */
    FILE *f = fopen(src, "rb");
    uint8_t hdr[KVB_HEADER_LEN];
    kvb_status bs = KVB_ERR_IO;
    size_t prefix = f && fread(hdr, 1, sizeof hdr, f) == sizeof hdr ? kvb_prefix_len(hdr, sizeof hdr, &bs) : 0;
    size_t mlen = prefix > KVB_HEADER_LEN + KVC_SIG_LEN ? prefix - KVB_HEADER_LEN - KVC_SIG_LEN : 0;
    char *m = mlen ? malloc(mlen) : NULL;
    int rc = m && fread(m, 1, mlen, f) == mlen ? write_file(mdst, m, mlen, err, errlen)
                                               : (base_errf(err, errlen, "cannot read the manifest of %s (%s)", src,
                                                           kvb_status_str(bs)), -1);
    free(m);
    if (f)
        fclose(f);
    return rc;
}

/* Removes OUT/v1/{blobs,manifests}/ID files of ids the snapshot no longer lists. */
static void prune_unlisted(const char *out, json_t *listed, export_counts *c)
{
    static const char *const sub[] = {"blobs", "manifests"};
    for (size_t i = 0; i < 2; i++) {
        char dir[PATH_MAX], p[PATH_MAX + 256];
        snprintf(dir, sizeof dir, "%s/v1/%s", out, sub[i]);
        DIR *d = opendir(dir);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (de->d_name[0] == '.' || json_object_get(listed, de->d_name))
                continue;
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            if (unlink(p) == 0 && i == 0)
                c->removed++;
        }
        if (d)
            closedir(d);
    }
}

int kvpubd_export_main(int argc, char **argv)
{
    repo_args a;
    int rc = parse_args(argc, argv, "kvpubd export", export_usage, 1, &a);
    if (rc >= 0)
        return rc;
    char err[1024], path[PATH_MAX];
    const char *prog = a.prog;
    if (mkdirs(a.out, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return 2;
    }
    kvs_store *st = NULL;
    kvs_snapshot snap;
    if ((rc = make_snapshot(&a, &st, &snap)) != 0) {
        kvs_store_close(st);
        return rc;
    }
    json_t *payload = json_loads(snap.payload, 0, NULL), *listed = json_object();
    json_t *blobs = json_object_get(payload, "blobs"), *b;
    export_counts c = {0};
    size_t i;
    json_array_foreach(blobs, i, b) {
        const char *id = json_string_value(json_object_get(b, "id"));
        json_int_t price = json_integer_value(json_object_get(b, "price"));
        if (!id)
            continue;
        if (price > 0) {
            c.priced++;
            continue;
        }
        json_object_set_new(listed, id, json_true());
        if (export_blob(st, a.out, id, (uint64_t)json_integer_value(json_object_get(b, "bytes")), &c, err,
                        sizeof err) != 0) {
            rc = 2;
            break;
        }
    }
    char *keys = NULL;
    size_t klen = 0;
    if (!rc && kvs_store_keys_document(st, &keys, &klen, err, sizeof err) != KVS_OK)
        rc = 2;
    /* the snapshot goes last: a reader who sees it finds every file it lists */
    if (!rc && (snprintf(path, sizeof path, "%s/v1/keys", a.out), write_file(path, keys, klen, err, sizeof err)) != 0)
        rc = 2;
    if (!rc && (snprintf(path, sizeof path, "%s/v1/snapshot", a.out),
                write_file(path, snap.bytes, snap.len, err, sizeof err)) != 0)
        rc = 2;
    if (!rc) {
        base_fsync_parent_dir(path);
        prune_unlisted(a.out, listed, &c);
    }
    if (rc)
        fprintf(stderr, "%s: %s\n", prog, err);
    else if (a.json)
        printf("{\"version\":%" PRIu64 ",\"listings\":%zu,\"written\":%zu,\"kept\":%zu,\"removed\":%zu,"
               "\"priced_not_exported\":%zu}\n", snap.version, snap.n_blobs, c.written, c.kept, c.removed, c.priced);
    else
        printf("exported snapshot version %" PRIu64 ": %zu listings; blobs %zu written, %zu kept, %zu removed, "
               "%zu priced not exported\n", snap.version, snap.n_blobs, c.written, c.kept, c.removed, c.priced);
    free(keys);
    json_decref(listed);
    json_decref(payload);
    free(snap.bytes);
    free(snap.payload);
    kvs_store_close(st);
    return rc;
}
