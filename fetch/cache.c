/* cache.c: the local content-addressed blob cache: DIR/<id hex> blobs (and DIR/<id hex>.decoded,
 * their decoded copies), DIR/tmp/<key>.part
 * partial downloads, DIR/urls/<sha256(url) hex> holding the id and validators a URL served.
 * The size cap counts blobs and partial downloads alike. */
#include "fetch/fetch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crypto/kvcrypto.h"

#define MAX_ENTRIES 100000 /* blobs considered by one eviction scan */

struct kvf_cache {
    char dir[PATH_MAX - 128]; /* room for the "/urls/<64 hex>" suffixes in PATH_MAX buffers */
    uint64_t max;
};

/* mkdir -p with mode 0700 for the directories we create. */
static int mkdirs(const char *path)
{
    char tmp[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof tmp)
        return -1;
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == 0) {
            char c = tmp[i];
            tmp[i] = 0;
            if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
                return -1;
            tmp[i] = c;
        }
    }
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode) ? 0 : -1;
}

kvf_status kvf_cache_open(const char *dir, uint64_t max_bytes, kvf_cache **out, char *err, size_t errlen)
{
    *out = NULL;
    kvf_cache *c = calloc(1, sizeof *c);
    if (!c)
        return kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
    const char *env;
    int n = -1;
    if (dir && *dir)
        n = snprintf(c->dir, sizeof c->dir, "%s", dir);
    else if (base_cache_dir("blobs", c->dir, sizeof c->dir))
        n = 0;
    else if (errno == ENOENT) {
        free(c);
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "no cache directory: set KVPUB_CACHE_DIR or HOME");
    }
    if (n < 0 || (size_t)n >= sizeof c->dir) {
        free(c);
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "cache directory path too long");
    }
    c->max = max_bytes;
    if (!c->max) {
        if ((env = getenv("KVPUB_CACHE_MAX")) && *env) {
            if (base_parse_size(env, &c->max) != 0 || c->max == 0) {
                free(c);
                return kvf_fail(err, errlen, KVF_ERR_USAGE,
                            "KVPUB_CACHE_MAX='%s' is not a size (e.g. 512M, 10G)", env);
            }
        } else {
            c->max = KVF_CACHE_DEFAULT_MAX;
        }
    }
    char sub[PATH_MAX];
    const char *subs[] = {"", "/tmp", "/urls"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(sub, sizeof sub, "%s%s", c->dir, subs[i]);
        if (mkdirs(sub) != 0) {
            kvf_status st = kvf_fail(err, errlen, KVF_ERR_IO, "cannot create cache directory %s: %s",
                                 sub, strerror(errno));
            free(c);
            return st;
        }
    }
    *out = c;
    return KVF_OK;
}

void kvf_cache_free(kvf_cache *c) { free(c); }
const char *kvf_cache_dir(const kvf_cache *c) { return c->dir; }
uint64_t kvf_cache_max(const kvf_cache *c) { return c->max; }

static void blob_path(const kvf_cache *c, const uint8_t id[32], char *path, size_t pathlen)
{
    char hex[65];
    snprintf(path, pathlen, "%s/%s", c->dir, kvc_hex(id, 32, hex));
}

/* Sets the access time explicitly: relatime/noatime mounts would not keep LRU order. */
static void touch_atime(const char *path)
{
    struct timespec ts[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
    (void)utimensat(AT_FDCWD, path, ts, 0);
}

int kvf_cache_lookup(kvf_cache *c, const uint8_t id[32], char *path, size_t pathlen)
{
    char p[PATH_MAX];
    struct stat sb;
    blob_path(c, id, p, sizeof p);
    if (stat(p, &sb) != 0 || !S_ISREG(sb.st_mode))
        return 0;
    touch_atime(p);
    if (path)
        snprintf(path, pathlen, "%s", p);
    return 1;
}

int kvf_cache_part_path(const kvf_cache *c, const char *key, char *path, size_t pathlen)
{
    int n = snprintf(path, pathlen, "%s/tmp/%s.part", c->dir, key);
    return n < 0 || (size_t)n >= pathlen ? -1 : 0;
}

kvf_status kvf_cache_insert(kvf_cache *c, const char *src, const uint8_t id[32], char *path,
                            size_t pathlen, char *err, size_t errlen)
{
    char dst[PATH_MAX];
    blob_path(c, id, dst, sizeof dst);
    int fd = open(src, O_RDONLY);
    if (fd < 0)
        return kvf_fail(err, errlen, KVF_ERR_IO, "cannot open %s: %s", src, strerror(errno));
    int rc = fsync(fd);
    close(fd);
    if (rc != 0)
        return kvf_fail(err, errlen, KVF_ERR_IO, "fsync %s: %s", src, strerror(errno));
    (void)chmod(src, 0644);
    if (rename(src, dst) != 0)
        return kvf_fail(err, errlen, KVF_ERR_IO, "cannot move %s to %s: %s", src, dst, strerror(errno));
    base_fsync_dir(c->dir);
    touch_atime(dst);
    kvf_cache_evict(c, id);
    if (path)
        snprintf(path, pathlen, "%s", dst);
    return KVF_OK;
}

void kvf_cache_remove(kvf_cache *c, const uint8_t id[32])
{
    char p[PATH_MAX];
    blob_path(c, id, p, sizeof p);
    (void)unlink(p);
    strcat(p, KVB_DECODED_SUFFIX); /* the directory's length left room for it */
    (void)unlink(p);
}

static void url_path(const kvf_cache *c, const char *url, char *path, size_t pathlen)
{
    uint8_t h[32];
    char hex[65];
    kvc_sha256(url, strlen(url), h);
    snprintf(path, pathlen, "%s/urls/%s", c->dir, kvc_hex(h, 32, hex));
}

/* A validator is kept only if it is one line of printable ASCII (it goes back into a header). */
static int validator_ok(const char *v)
{
    for (; *v; v++)
        if ((unsigned char)*v < 0x20 || (unsigned char)*v > 0x7e)
            return 0;
    return 1;
}

void kvf_cache_url_put(kvf_cache *c, const char *url, const kvf_url_rec *rec)
{
    char p[PATH_MAX], line[64 + 2 * KVF_VALIDATOR_MAX + 4], hex[65];
    url_path(c, url, p, sizeof p);
    const char *etag = validator_ok(rec->etag) ? rec->etag : "";
    const char *lm = validator_ok(rec->last_modified) ? rec->last_modified : "";
    const int n = snprintf(line, sizeof line, "%s\n%s\n%s\n", kvc_hex(rec->id, 32, hex), etag, lm);
    base_replace r;
    if (n < 0 || (size_t)n >= sizeof line || base_replace_open(&r, p) != 0)
        return; /* only a shortcut: losing it costs one download */
    if (base_write_all(r.fd, line, (size_t)n) != 0)
        base_replace_abort(&r);
    else
        (void)base_replace_commit(&r);
}

/* Reads one line of f into out (len bytes: at most len - 1 characters) without its newline;
 * "" at end of file or if it is longer. The line is read with room for its newline, so one of
 * exactly len - 1 characters is kept and the next read starts on the next line. */
static void read_line(FILE *f, char *out, size_t len)
{
    char buf[KVF_VALIDATOR_MAX + 2];
    out[0] = 0;
    if (len + 1 > sizeof buf || !fgets(buf, (int)(len + 1), f))
        return;
    size_t n = strcspn(buf, "\n");
    if (buf[n] != '\n' && !feof(f))
        return; /* longer than a validator may be */
    memcpy(out, buf, n);
    out[n] = 0;
}

int kvf_cache_url_get(kvf_cache *c, const char *url, kvf_url_rec *rec)
{
    char p[PATH_MAX], line[80];
    memset(rec, 0, sizeof *rec);
    url_path(c, url, p, sizeof p);
    FILE *f = fopen(p, "r");
    if (!f)
        return 0;
    read_line(f, line, sizeof line);
    read_line(f, rec->etag, sizeof rec->etag);
    read_line(f, rec->last_modified, sizeof rec->last_modified);
    fclose(f);
    if (strlen(line) != 64 || kvc_unhex(line, rec->id, 32) != KVC_OK)
        return 0;
    if (!validator_ok(rec->etag))
        rec->etag[0] = 0;
    if (!validator_ok(rec->last_modified))
        rec->last_modified[0] = 0;
    return 1;
}

typedef struct entry {
    char name[80];       /* a blob id (with its decoded copy), a decoded copy without its blob, or
                            "tmp/<key>.part" */
    uint64_t size;
    struct timespec atime;
} entry;

static int by_atime(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->atime.tv_sec != y->atime.tv_sec)
        return x->atime.tv_sec < y->atime.tv_sec ? -1 : 1;
    if (x->atime.tv_nsec != y->atime.tv_nsec)
        return x->atime.tv_nsec < y->atime.tv_nsec ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int is_id_name(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return 0;
    return n == 64;
}

/* The name of the decoded copy of the blob named id (64 hex digits), in out. */
static const char *copy_of(const char *id, char out[80])
{
    memcpy(out, id, 64);
    memcpy(out + 64, KVB_DECODED_SUFFIX, sizeof KVB_DECODED_SUFFIX);
    return out;
}

/* 1 when s is a blob id (64 hex digits) followed by tail (exact: nothing after it; else
 * something), the id then in id. */
static int id_then(const char *s, const char *tail, int exact, char id[65])
{
    const size_t t = strlen(tail), n = strlen(s);
    if (n < 64 + t || (exact && n != 64 + t) || (!exact && n == 64 + t) || strncmp(s + 64, tail, t) != 0)
        return 0;
    memcpy(id, s, 64);
    id[64] = 0;
    return is_id_name(id);
}

/* "<id>.decoded": 1 when its blob is gone (the copy is an entry of its own), 2 when the blob
 * is there (the copy counts with it); 0 for other names. */
static int decoded_name(int dfd, const char *s)
{
    char id[65];
    struct stat sb;
    return !id_then(s, KVB_DECODED_SUFFIX, 1, id) ? 0 : fstatat(dfd, id, &sb, 0) == 0 ? 2 : 1;
}

/* "<id>.decoded.tmp.XXXXXX": a decoded copy being written, or left by a killed kvfetch. One
 * untouched for ten minutes is removed (writing a copy takes seconds). Returns 1 for such names. */
static int copy_tmp_name(int dfd, const char *s)
{
    char id[65];
    if (!id_then(s, KVB_DECODED_SUFFIX ".tmp.", 0, id))
        return 0;
    struct stat sb;
    if (fstatat(dfd, s, &sb, AT_SYMLINK_NOFOLLOW) == 0 && sb.st_mtime < time(NULL) - 600)
        (void)unlinkat(dfd, s, 0);
    return 1;
}

static int is_part_name(const char *s)
{
    size_t n = strlen(s);
    return n == 69 && strcmp(s + 64, ".part") == 0;
}

/* Removes a partial download unless a kvfetch holds its lock (it is being written). */
static int remove_part(int dfd, const char *name)
{
    int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = -1;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0)
        rc = unlinkat(dfd, name, 0);
    close(fd);
    return rc;
}

/* Adds the blobs (or, with parts, the partial downloads) of one directory to v. Partial
 * downloads are ranked by their last write: an abandoned one ages like an unused blob. */
static uint64_t scan(int dfd, int parts, entry **v, size_t *n, size_t *cap)
{
    const int fd = dup(dfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    uint64_t total = 0;
    struct dirent *de;
    while ((de = readdir(d)) && *n < MAX_ENTRIES) {
        if (!parts && copy_tmp_name(dfd, de->d_name))
            continue;
        if (parts ? !is_part_name(de->d_name) : !is_id_name(de->d_name) && decoded_name(dfd, de->d_name) != 1)
            continue;
        struct stat sb;
        if (fstatat(dfd, de->d_name, &sb, 0) != 0 || !S_ISREG(sb.st_mode))
            continue;
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 64;
            entry *nv = realloc(*v, nc * sizeof **v);
            if (!nv)
                break;
            *v = nv;
            *cap = nc;
        }
        entry *e = &(*v)[(*n)++];
        char *w = e->name; /* the name was checked: at most 72 bytes */
        if (parts) {
            memcpy(w, "tmp/", 4);
            w += 4;
        }
        memcpy(w, de->d_name, strlen(de->d_name) + 1);
        e->size = (uint64_t)sb.st_size;
        e->atime = parts ? sb.st_mtim : sb.st_atim;
        char copy[80];
        struct stat cb;
        if (!parts && is_id_name(de->d_name) && fstatat(dfd, copy_of(de->d_name, copy), &cb, 0) == 0 &&
            S_ISREG(cb.st_mode)) {
            e->size += (uint64_t)cb.st_size; /* loads read the copy: its use counts too */
            if (cb.st_atim.tv_sec > e->atime.tv_sec ||
                (cb.st_atim.tv_sec == e->atime.tv_sec && cb.st_atim.tv_nsec > e->atime.tv_nsec))
                e->atime = cb.st_atim;
        }
        total += e->size;
    }
    closedir(d);
    return total;
}

int kvf_cache_evict(kvf_cache *c, const uint8_t *keep)
{
    int dfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return 0;
    char keephex[65] = "";
    if (keep)
        kvc_hex(keep, 32, keephex);
    entry *v = NULL;
    size_t n = 0, cap = 0;
    uint64_t total = scan(dfd, 0, &v, &n, &cap);
    int tfd = openat(dfd, "tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (tfd >= 0)
        total += scan(tfd, 1, &v, &n, &cap);
    int removed = 0;
    if (total > c->max) {
        qsort(v, n, sizeof *v, by_atime);
        for (size_t i = 0; i < n && total > c->max; i++) {
            if (strncmp(v[i].name, keephex, 64) == 0 && keep)
                continue;
            int part = strncmp(v[i].name, "tmp/", 4) == 0;
            int rc = part ? (tfd >= 0 ? remove_part(tfd, v[i].name + 4) : -1) : unlinkat(dfd, v[i].name, 0);
            if (rc == 0 && is_id_name(v[i].name)) {
                char copy[80];
                (void)unlinkat(dfd, copy_of(v[i].name, copy), 0);
            }
            if (rc == 0) {
                total -= v[i].size;
                removed++;
            }
        }
    }
    if (tfd >= 0)
        close(tfd);
    close(dfd);
    free(v);
    return removed;
}
