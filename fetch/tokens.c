/* tokens.c: the buyer's token store: purchase tokens kept in one JSON file in the user's config
 * directory, keyed by the origin that sold them and the blob id, written atomically (temporary
 * file + rename, mode 0600) and refused when anyone but its owner could read it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "fetch/fetch.h"

#define TOKENS_FILE_MAX ((size_t)1 << 20) /* far above KVF_TOKENS_MAX entries of ~250 bytes */

kvf_status kvf_tokens_default_path(char *path, size_t cap, char *err, size_t errlen)
{
    const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    int n;
    if (xdg && *xdg == '/')
        n = snprintf(path, cap, "%s/kvpub/tokens.json", xdg);
    else if (home && *home)
        n = snprintf(path, cap, "%s/.config/kvpub/tokens.json", home);
    else
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "neither $XDG_CONFIG_HOME nor $HOME is set: no place for tokens");
    if (n < 0 || (size_t)n >= cap)
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "token file path too long");
    return KVF_OK;
}

/* The directory part of path into dir. */
static int dir_of(const char *path, char *dir, size_t cap)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 1;
    if (n >= cap)
        return -1;
    memcpy(dir, slash ? path : ".", n);
    dir[n] = 0;
    if (!n)
        snprintf(dir, cap, "/");
    return 0;
}

/* mkdir -p of dir, each new level 0700 (the config directory holds secrets). */
static int mkdirs(const char *dir)
{
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
        return -1;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            return -1;
        *s = '/';
    }
    return mkdir(p, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

/* A token file anyone else could read, or that someone else owns, holds secrets we must not
 * use (or add to): refuse it and say how to fix it. */
static kvf_status check_private(int fd, const char *path, char *err, size_t errlen)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return kvf_fail(err, errlen, KVF_ERR_IO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return kvf_fail(err, errlen, KVF_ERR_IO, "%s is not a regular file", path);
    if (sb.st_uid != geteuid())
        return kvf_fail(err, errlen, KVF_ERR_IO, "token file %s belongs to uid %u, not to you: refusing it", path,
                        (unsigned)sb.st_uid);
    if (sb.st_mode & 077)
        return kvf_fail(err, errlen, KVF_ERR_IO,
                        "token file %s is readable by others (mode %04o): refusing it; run chmod 600 %s", path,
                        (unsigned)(sb.st_mode & 07777), path);
    return KVF_OK;
}

/* Reads the file's entries into *arr (a new JSON array; empty when there is no file). */
static kvf_status load(const char *path, json_t **arr, char *err, size_t errlen)
{
    *arr = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) {
        *arr = json_array();
        return *arr ? KVF_OK : kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
    }
    if (fd < 0)
        return kvf_fail(err, errlen, KVF_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    kvf_status st = check_private(fd, path, err, errlen);
    FILE *f = st == KVF_OK ? fdopen(fd, "rb") : NULL;
    if (st != KVF_OK || !f) {
        close(fd);
        return st != KVF_OK ? st : kvf_fail(err, errlen, KVF_ERR_IO, "%s: %s", path, strerror(errno));
    }
    size_t len;
    char *text = base_read_stream(f, TOKENS_FILE_MAX, &len);
    fclose(f);
    if (!text)
        return kvf_fail(err, errlen, KVF_ERR_IO, "cannot read %s: %s", path, strerror(errno));
    json_error_t je;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    kvc_wipe(text, len);
    free(text);
    json_t *tokens = json_object_get(doc, "tokens");
    if (!json_is_object(doc) || json_integer_value(json_object_get(doc, "version")) != 1 || !json_is_array(tokens)) {
        json_decref(doc);
        return kvf_fail(err, errlen, KVF_ERR_IO, "%s is not a kvpub token file (version 1): %s", path,
                        doc ? "fields missing" : je.text);
    }
    *arr = json_incref(tokens);
    json_decref(doc);
    return KVF_OK;
}

/* Fills rec from entry e; -1 when a field is missing or malformed. */
static int entry_rec(json_t *e, kvf_token_rec *rec)
{
    const char *origin = json_string_value(json_object_get(e, "origin"));
    const char *blob = json_string_value(json_object_get(e, "blob"));
    const char *token = json_string_value(json_object_get(e, "token"));
    json_t *exp = json_object_get(e, "expires_unix"), *pur = json_object_get(e, "purchase");
    if (!origin || !blob || !token || !json_is_integer(exp) || strlen(origin) >= sizeof rec->origin ||
        strlen(token) >= sizeof rec->token || strlen(blob) != 64 || kvc_unhex(blob, rec->blob, 32) != KVC_OK)
        return -1;
    snprintf(rec->origin, sizeof rec->origin, "%s", origin);
    snprintf(rec->token, sizeof rec->token, "%s", token);
    rec->expires = json_integer_value(exp);
    rec->purchase = json_is_integer(pur) ? json_integer_value(pur) : 0;
    return 0;
}

kvf_status kvf_tokens_find(const char *path, const char *url, const uint8_t blob[32], kvf_token_rec *out,
                           int *found, char *err, size_t errlen)
{
    char origin[sizeof out->origin];
    *found = 0;
    if (kvf_url_origin(url, origin, sizeof origin) != 0)
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "'%s' is not an https://host[:port] URL", url);
    json_t *arr;
    kvf_status st = load(path, &arr, err, errlen);
    if (st != KVF_OK)
        return st;
    size_t i;
    json_t *e;
    kvf_token_rec rec;
    json_array_foreach(arr, i, e) {
        /* the newest purchase last: keep the last match */
        if (entry_rec(e, &rec) == 0 && strcmp(rec.origin, origin) == 0 && memcmp(rec.blob, blob, 32) == 0) {
            *out = rec;
            *found = 1;
        }
    }
    kvc_wipe(&rec, sizeof rec);
    json_decref(arr);
    return KVF_OK;
}

/* Writes doc to path through a 0600 temporary file in the same directory and a rename. */
static kvf_status write_atomic(const char *path, const char *dir, json_t *doc, char *err, size_t errlen)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp)
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "token file path too long");
    char *text = json_dumps(doc, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    if (!text)
        return kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
    size_t len = strlen(text);
    int fd = mkstemp(tmp); /* mode 0600 */
    int ok = fd >= 0 && base_write_all(fd, text, len) == 0 && base_write_all(fd, "\n", 1) == 0 && fsync(fd) == 0;
    int saved = errno;
    if (fd >= 0 && close(fd) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    kvc_wipe(text, len);
    free(text);
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        saved = errno;
    }
    if (!ok) {
        if (fd >= 0)
            unlink(tmp);
        return kvf_fail(err, errlen, KVF_ERR_IO, "cannot write %s: %s", path, strerror(saved));
    }
    base_fsync_dir(dir);
    return KVF_OK;
}

kvf_status kvf_tokens_put(const char *path, const kvf_token_rec *rec, int64_t now, char *err, size_t errlen)
{
    char dir[PATH_MAX], lockpath[PATH_MAX], hex[65];
    if (dir_of(path, dir, sizeof dir) != 0 ||
        snprintf(lockpath, sizeof lockpath, "%s.lock", path) >= (int)sizeof lockpath)
        return kvf_fail(err, errlen, KVF_ERR_USAGE, "token file path too long");
    if (mkdirs(dir) != 0)
        return kvf_fail(err, errlen, KVF_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
    /* two buys at once must not lose one of the tokens: read-modify-write under a lock */
    int lk = base_lock_file(lockpath);
    if (lk < 0)
        return kvf_fail(err, errlen, KVF_ERR_IO, "cannot lock %s: %s", lockpath, strerror(errno));
    json_t *arr, *keep = NULL, *doc = NULL;
    kvf_status st = load(path, &arr, err, errlen);
    if (st == KVF_OK && !(keep = json_array()))
        st = kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
    size_t i;
    json_t *e;
    kvf_token_rec old;
    if (st == KVF_OK) {
        /* drop the entry this purchase replaces, expired ones, and the oldest past the cap */
        json_array_foreach(arr, i, e) {
            if (entry_rec(e, &old) != 0 || old.expires <= now ||
                (strcmp(old.origin, rec->origin) == 0 && memcmp(old.blob, rec->blob, 32) == 0))
                continue;
            json_array_append(keep, e);
        }
        while (json_array_size(keep) >= KVF_TOKENS_MAX)
            json_array_remove(keep, 0);
        json_t *n = json_pack("{s:s, s:s, s:s, s:I, s:I}", "origin", rec->origin, "blob", kvc_hex(rec->blob, 32, hex),
                              "token", rec->token, "expires_unix", (json_int_t)rec->expires, "purchase",
                              (json_int_t)rec->purchase);
        doc = n ? json_pack("{s:i, s:O}", "version", 1, "tokens", keep) : NULL;
        if (!doc)
            json_decref(n); /* (NULL is a no-op) */
        if (!n || !doc || json_array_append_new(keep, n) != 0) /* append_new takes n either way */
            st = kvf_fail(err, errlen, KVF_ERR_NOMEM, "out of memory");
    }
    if (st == KVF_OK)
        st = write_atomic(path, dir, doc, err, errlen);
    kvc_wipe(&old, sizeof old);
    json_decref(doc);
    json_decref(keep);
    json_decref(arr);
    close(lk);
    return st;
}
