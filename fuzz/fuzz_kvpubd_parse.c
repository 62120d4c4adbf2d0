/* fuzz_kvpubd_parse.c: libFuzzer target for kvpubd's hand-written parsers: the daemon's request
 * fields (Range, If-None-Match, bearer credentials; kvpubd/reqparse.c), the log escaper, and the
 * count/size/duration grammar of the arguments and request numbers (base/parse.c), each checked
 * against its contract. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* kvpubd is a tool, not a module: the Makefile links this target with the objects of its
 * parser files (build-fuzz/libkvpubd_parse.a). */
#include "kvpubd/reqparse.h"
#include "base/base.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_kvpubd_parse: contract broken: %s\n", what);
        abort();
    }
}

/* Independent reference: whole-string decimal, compared as text against UINT64_MAX. */
static int ref_u64(const char *s, uint64_t *out)
{
    if (!*s || strspn(s, "0123456789") != strlen(s))
        return -1;
    const char *t = s + strspn(s, "0");
    size_t n = strlen(t);
    if (n > 20 || (n == 20 && strcmp(t, "18446744073709551615") > 0))
        return -1;
    *out = (uint64_t)strtoull(s, NULL, 10);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    /* first 8 bytes: a file size (small ones are common so ranges hit the edges) */
    uint64_t fsize = 0;
    if (size >= 8) {
        memcpy(&fsize, data, 8);
        if (data[0] & 1)
            fsize = (fsize >> 8) % 1000;
        data += 8;
        size -= 8;
    }
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = 0;

    uint64_t a = 0, b = 0;
    int ra = base_parse_u64(s, &a), rb = ref_u64(s, &b);
    check(ra == rb && (ra != 0 || a == b), "base_parse_u64 vs reference");

    uint64_t start = 0, len = 0;
    int r = kvsrv_parse_range(s, fsize, &start, &len);
    check(r >= -1 && r <= 1, "parse_range result");
    if (r == 1)
        check(len >= 1 && start < fsize && len <= fsize - start, "parse_range bounds");
    if (r == 0)
        check(strncasecmp(s, "bytes=", 6) != 0, "parse_range ignored a bytes range");

    (void)kvsrv_etag_matches(s, "\"0123abcd\"");
    (void)kvsrv_etag_matches(s, "");
    (void)kvsrv_etag_matches("\"x\", W/\"y\"", s);
    (void)kvsrv_is_id(s);

    const char *tok = kvsrv_bearer_token(s);
    check(!tok || (tok >= s && tok < s + size && *tok && *tok != ' '), "bearer token inside the header");
    uint8_t key_id[8];
    if (kvsrv_parse_credential(s, key_id) == 0)
        check(strlen(s) == 81 && s[16] == '.', "credential shape");

    /* the escaper at several output sizes: never a quote, backslash-free except escapes,
     * never a control or non-ASCII byte, always terminated inside the buffer */
    static const size_t outs[] = {1, 2, 4, 5, 17, 300};
    for (size_t k = 0; k < sizeof outs / sizeof outs[0]; k++) {
        char out[300];
        memset(out, 'Z', sizeof out);
        char *e = kvsrv_log_escape(s, out, outs[k]);
        check(e == out, "log_escape returns out");
        size_t el = strnlen(out, outs[k]);
        check(el < outs[k], "log_escape terminates inside outlen");
        for (size_t i = 0; i < el; i++) {
            unsigned char ch = (unsigned char)out[i];
            check(ch >= 0x20 && ch < 0x7f && ch != '"', "log_escape output printable, quote-free");
            if (ch == '\\') {
                check(i + 3 < el, "log_escape escape complete");
                check(out[i + 1] == 'x', "log_escape escape form");
                i += 3;
            }
        }
    }
    (void)kvsrv_log_escape(NULL, (char[4]){0}, 4);

    uint64_t sz, du;
    int rs = base_parse_size(s, &sz), rd = base_parse_duration(s, &du);
    if (ra == 0)
        check(rs == 0 && sz == a && rd == 0 && du == a, "plain numbers are sizes and seconds");
    if (rs == 0 && ra != 0)
        check(sz % 1024 == 0, "suffixed sizes are multiples of 1024");
    (void)rd;
    free(s);
    return 0;
}
