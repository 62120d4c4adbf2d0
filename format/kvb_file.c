/* kvb_file.c: blobs as whole files: kvb_read_file reads a file through the verifying reader
 * (a regular file with kvb_reader_feed_fd, stdin with read(2) straight into its buffers), and
 * the manifest-only peek checks the header and the signature over header+manifest (before
 * parsing the manifest) from a blob's first bytes, without touching its chunks. */
#include "format/kvb_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

kvb_status kvb_read_file(const char *path, const kvb_read_opts *opts, kvb_manifest **mout, kvb_header *hout,
                         char *err, size_t errlen)
{
    if (mout)
        *mout = NULL;
    int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kvb_fail(err, errlen, KVB_ERR_IO, "%s: %s", path, strerror(errno));
    kvb_reader *r = kvb_reader_create(opts);
    kvb_status st = KVB_OK;
    struct stat sb;
    if (!r) {
        st = kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory");
    } else {
        if (fd != STDIN_FILENO && fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode))
            st = kvb_reader_feed_fd(r, fd, err, errlen);
        else /* read(2) straight into the reader's buffers: the kernel's copy is the only one */
            for (;;) {
                void *buf;
                size_t cap;
                if ((st = kvb_reader_buffer(r, &buf, &cap, err, errlen)) != KVB_OK)
                    break;
                ssize_t n = read(fd, buf, cap < (1u << 30) ? cap : (1u << 30));
                if (n < 0 && errno == EINTR)
                    continue;
                if (n < 0) {
                    st = kvb_fail(err, errlen, KVB_ERR_IO, "%s: read error: %s", path, strerror(errno));
                    break;
                }
                if (n == 0)
                    break;
                if ((st = kvb_reader_commit(r, (size_t)n, err, errlen)) != KVB_OK)
                    break;
            }
        if (!st)
            st = kvb_reader_finish(r, err, errlen);
        if (kvb_reader_header(r) && hout)
            *hout = *kvb_reader_header(r);
        if (mout)
            *mout = kvb_reader_take_manifest(r); /* handed over, not parsed a second time */
    }
    kvb_reader_free(r);
    if (fd != STDIN_FILENO)
        close(fd);
    return st;
}

size_t kvb_prefix_len(const void *data, size_t len, kvb_status *st)
{
    kvb_header h;
    *st = KVB_OK;
    if (len < KVB_HEADER_LEN)
        return 0;
    *st = kvb_header_parse(data, &h, NULL, 0);
    return *st ? 0 : KVB_HEADER_LEN + (size_t)h.manifest_len + KVC_SIG_LEN;
}

kvb_status kvb_peek(const void *data, size_t len, const kvc_key *key, kvb_header *hdr, kvb_manifest **out,
                    char *err, size_t errlen)
{
    const uint8_t *p = data;
    kvb_header h;
    *out = NULL;
    if (len < KVB_HEADER_LEN)
        return kvb_fail(err, errlen, KVB_ERR_TRUNCATED, "truncated: %zu bytes, a kvblob header is %d", len,
                        KVB_HEADER_LEN);
    kvb_status st = kvb_header_parse(p, &h, err, errlen);
    if (st)
        return st;
    size_t signed_len = KVB_HEADER_LEN + (size_t)h.manifest_len;
    if (len < signed_len + KVC_SIG_LEN)
        return kvb_fail(err, errlen, KVB_ERR_TRUNCATED,
                        "truncated: %zu bytes, the header, manifest and signature need %zu", len,
                        signed_len + KVC_SIG_LEN);
    char kid[2 * KVC_KEYID_LEN + 1], wkid[2 * KVC_KEYID_LEN + 1];
    kvc_hex(h.key_id, KVC_KEYID_LEN, kid);
    if (key) {
        uint8_t want[KVC_KEYID_LEN];
        kvc_key_id(key, want);
        if (memcmp(want, h.key_id, KVC_KEYID_LEN) != 0)
            return kvb_fail(err, errlen, KVB_ERR_WRONG_KEY, "signed by key id %s, expected key id %s", kid,
                            kvc_hex(want, KVC_KEYID_LEN, wkid));
        if (kvc_verify(key, p, signed_len, p + signed_len) != KVC_OK)
            return kvb_fail(err, errlen, KVB_ERR_BAD_SIG,
                            "signature does not verify over header+manifest (signer key id %s)", kid);
    }
    st = kvb_manifest_parse(p + KVB_HEADER_LEN, h.manifest_len, out, err, errlen);
    if (st)
        return st;
    const kvb_section *last = &(*out)->chunks[(*out)->n_chunks - 1];
    h.file_size = h.data_offset + last->offset + last->length;
    if (hdr)
        *hdr = h;
    return KVB_OK;
}

kvb_status kvb_peek_fd(int fd, const kvc_key *key, kvb_header *hdr, kvb_manifest **out, char *err,
                       size_t errlen)
{
    *out = NULL;
    uint8_t h[KVB_HEADER_LEN];
    ssize_t got = kvb_pread_full(fd, h, sizeof h, 0, 1);
    if (got < 0)
        return kvb_fail(err, errlen, KVB_ERR_IO, "%s", strerror(errno));
    size_t n = (size_t)got;
    kvb_status st = KVB_OK;
    size_t need = kvb_prefix_len(h, n, &st);
    uint8_t *buf = NULL;
    if (!st && need) {
        if (!(buf = malloc(need)))
            return kvb_fail(err, errlen, KVB_ERR_NOMEM, "out of memory");
        memcpy(buf, h, n);
        if ((got = kvb_pread_full(fd, buf + n, need - n, n, 1)) < 0) {
            free(buf);
            return kvb_fail(err, errlen, KVB_ERR_IO, "%s", strerror(errno));
        }
        n += (size_t)got;
    }
    st = kvb_peek(buf ? buf : h, n, key, hdr, out, err, errlen);
    free(buf);
    return st;
}

kvb_status kvb_trust_signer(const kvc_trust *trust, const uint8_t key_id[KVC_KEYID_LEN], const kvc_key **signer,
                            char *err, size_t errlen)
{
    char kid[2 * KVC_KEYID_LEN + 1];
    kvc_hex(key_id, KVC_KEYID_LEN, kid);
    kvc_status ks = kvc_trust_lookup(trust, key_id, signer);
    if (ks == KVC_ERR_REVOKED)
        return kvb_fail(err, errlen, KVB_ERR_REVOKED, "signer key id %s is revoked", kid);
    if (ks != KVC_OK)
        return kvb_fail(err, errlen, KVB_ERR_UNTRUSTED, "signer key id %s is not in the trust store", kid);
    return KVB_OK;
}

kvb_status kvb_peek_fd_trusted(int fd, const kvc_trust *trust, kvb_header *hdr, kvb_manifest **out, char *err,
                               size_t errlen)
{
    *out = NULL;
    uint8_t h[KVB_HEADER_LEN];
    kvb_header hd;
    ssize_t got = kvb_pread_full(fd, h, sizeof h, 0, 1);
    if (got < 0)
        return kvb_fail(err, errlen, KVB_ERR_IO, "%s", strerror(errno));
    if ((size_t)got < sizeof h)
        return kvb_fail(err, errlen, KVB_ERR_TRUNCATED, "truncated: %zd bytes, a kvblob header is %d", got,
                        KVB_HEADER_LEN);
    kvb_status st = kvb_header_parse(h, &hd, err, errlen);
    const kvc_key *signer = NULL;
    if (st == KVB_OK)
        st = kvb_trust_signer(trust, hd.key_id, &signer, err, errlen);
    return st == KVB_OK ? kvb_peek_fd(fd, signer, hdr, out, err, errlen) : st;
}

kvb_status kvb_peek_file(const char *path, const kvc_key *key, kvb_header *hdr, kvb_manifest **out,
                         char *err, size_t errlen)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kvb_fail(err, errlen, KVB_ERR_IO, "%s", strerror(errno));
    kvb_status st = kvb_peek_fd(fd, key, hdr, out, err, errlen);
    close(fd);
    return st;
}
