/* files.c: the file helpers every kvpub writer shares (keys in crypto/, blobs in format/ and
 * store/, downloads in kvfetch/): write everything, unnamed temporary files, fsync a directory
 * after a rename, read a whole stream. */
#include "base/base.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* write(2) (off < 0) or pwrite(2) at off until all n bytes are written. */
static int write_at(int fd, const void *data, size_t n, int64_t off)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = off < 0 ? write(fd, p, n) : pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO; /* no progress, no error: do not spin */
            return -1;
        }
        p += w;
        n -= (size_t)w;
        if (off >= 0)
            off += w;
    }
    return 0;
}

int base_write_all(int fd, const void *data, size_t n) { return write_at(fd, data, n, -1); }

int base_pwrite_all(int fd, const void *data, size_t n, uint64_t off)
{
    if (off > (uint64_t)INT64_MAX) {
        errno = EINVAL;
        return -1;
    }
    return write_at(fd, data, n, (int64_t)off);
}

int base_copy_fd(int in, int out)
{
    enum { BUF = 1 << 20 };
    char *buf = malloc(BUF);
    if (!buf)
        return -1;
    int rc = 0;
    for (ssize_t n; rc == 0 && (n = read(in, buf, BUF)) != 0;) {
        if (n < 0)
            rc = errno == EINTR ? 0 : -1;
        else
            rc = base_write_all(out, buf, (size_t)n);
    }
    const int e = errno;
    free(buf);
    errno = e;
    return rc;
}

int base_tmpfd(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/.tmp.XXXXXX", dir) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = mkostemp(path, O_CLOEXEC);
    if (fd >= 0)
        unlink(path);
    return fd;
}

void base_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd); /* best effort: some filesystems refuse fsync on directories */
        close(fd);
    }
}

void base_fsync_parent_dir(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else
        return;
    base_fsync_dir(dir);
}

char *base_read_stream(FILE *f, size_t max, size_t *len)
{
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (!base_grow(&buf, &cap, n + 1, 1, 1 << 16)) { /* + 1: room for the NUL */
            free(buf);
            errno = ENOMEM;
            return NULL;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (n > max) {
            free(buf);
            errno = EFBIG;
            return NULL;
        }
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

int base_replace_open(base_replace *r, const char *path)
{
    r->fd = -1;
    r->tmp[0] = 0;
    if (snprintf(r->path, sizeof r->path, "%s", path) >= (int)sizeof r->path ||
        snprintf(r->tmp, sizeof r->tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof r->tmp) {
        r->tmp[0] = 0;
        errno = ENAMETOOLONG;
        return -1;
    }
    if ((r->fd = mkostemp(r->tmp, O_CLOEXEC)) < 0) {
        r->tmp[0] = 0;
        return -1;
    }
    return 0;
}

void base_replace_abort(base_replace *r)
{
    int e = errno;
    if (r->fd >= 0)
        close(r->fd);
    if (r->tmp[0])
        unlink(r->tmp);
    r->fd = -1;
    r->tmp[0] = 0;
    errno = e;
}

int base_replace_commit(base_replace *r)
{
    int fd = r->fd;
    r->fd = -1;
    if (fd < 0 || !r->tmp[0]) {
        base_replace_abort(r);
        errno = EBADF;
        return -1;
    }
    int ok = fchmod(fd, 0644) == 0 && fsync(fd) == 0;
    int e = errno;
    if (close(fd) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    if (ok && rename(r->tmp, r->path) != 0) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        base_replace_abort(r);
        errno = e;
        return -1;
    }
    r->tmp[0] = 0;
    base_fsync_parent_dir(r->path); /* makes the rename durable */
    return 0;
}

int base_write_f32_le(const char *path, const float *x, size_t n)
{
    base_replace r;
    if (base_replace_open(&r, path) != 0)
        return -1;
    unsigned char b[4096];
    size_t k = 0;
    int ok = 1;
    for (size_t i = 0; i < n && ok; i++) { /* little-endian whatever the host */
        uint32_t u;
        memcpy(&u, &x[i], 4);
        b[k++] = (unsigned char)u, b[k++] = (unsigned char)(u >> 8);
        b[k++] = (unsigned char)(u >> 16), b[k++] = (unsigned char)(u >> 24);
        if (k == sizeof b || i + 1 == n) {
            ok = base_write_all(r.fd, b, k) == 0;
            k = 0;
        }
    }
    if (!ok) {
        base_replace_abort(&r);
        return -1;
    }
    return base_replace_commit(&r);
}

int base_lock_file(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}
