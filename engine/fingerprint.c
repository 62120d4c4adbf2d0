/* fingerprint.c: model and tokenizer fingerprints (SHA-256 over the canonical serializations
 * of spec/fingerprints.md) and the (dev, ino, size, mtime)-keyed cache of model fingerprints. */
#include "engine/engine_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Canonical serialization (all integers little-endian; see spec/fingerprints.md):
 *
 * model:     "kvpub-model-fp-v1\0"
 *            str arch                          (u32 length + bytes)
 *            u32 n_layer, n_embd, n_head, n_head_kv, head_dim
 *            u32 bits(f32 norm_eps)
 *            u32 rope.type, rope.n_rot, bits(freq_base), bits(freq_scale), rope.scaling,
 *                rope.n_ctx_orig, bits(ext_factor), bits(attn_factor), bits(beta_fast),
 *                bits(beta_slow)
 *            u64 n_tensors
 *            per tensor in strcmp order of names:
 *                str name, u32 type, u32 n_dims, u64 ne[0..n_dims), u64 nbytes, data bytes
 *
 * tokenizer: "kvpub-tokenizer-fp-v1\0"
 *            opt-str tokenizer.ggml.model, opt-str tokenizer.ggml.pre
 *            opt-strarr tokens, opt-arr scores (as f32 bits), opt-arr token_type (as i32),
 *            opt-strarr merges
 *            i64 bos, eos, unk, pad ids (-1 when absent)
 *            u8 add_bos (as resolved into eng_info), i8 add_eos, i8 add_space_prefix (-1 absent)
 *   where opt-X is a u8 presence flag (0 absent, 1 present) followed by X when present,
 *   strarr is u64 count + str each (u64 length + bytes) and a numeric arr is u64 count +
 *   the elements each converted to the stated type. */

typedef struct hasher {
    EVP_MD_CTX *md;
    int ok;
} hasher;

static void h_bytes(hasher *h, const void *p, size_t n)
{
    if (h->ok && n && EVP_DigestUpdate(h->md, p, n) != 1)
        h->ok = 0;
}

static void h_u8(hasher *h, uint8_t v) { h_bytes(h, &v, 1); }

static void h_u32(hasher *h, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    h_bytes(h, b, 4);
}

static void h_u64(hasher *h, uint64_t v)
{
    h_u32(h, (uint32_t)v);
    h_u32(h, (uint32_t)(v >> 32));
}

static void h_f32(hasher *h, float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    h_u32(h, b);
}

static void h_str32(hasher *h, const char *s, size_t n)
{
    h_u32(h, (uint32_t)n);
    h_bytes(h, s, n);
}

static void h_str64(hasher *h, const gguf_str *s)
{
    h_u64(h, s->n);
    h_bytes(h, s->p, (size_t)s->n);
}

/* Starts a digest with its tag (and the tag's NUL). A failed start leaves h->ok 0: every h_*
 * call is then a no-op and h_end gives zeros. */
static void h_begin(hasher *h, const char *tag)
{
    h->md = EVP_MD_CTX_new();
    h->ok = h->md && EVP_DigestInit_ex(h->md, EVP_sha256(), NULL) == 1;
    h_bytes(h, tag, strlen(tag) + 1);
}

static void h_end(hasher *h, uint8_t out[32])
{
    unsigned int n = 0;
    if (!h->ok || EVP_DigestFinal_ex(h->md, out, &n) != 1 || n != 32)
        memset(out, 0, 32); /* only on allocation failure inside OpenSSL */
    EVP_MD_CTX_free(h->md);
}

void eng_fingerprint_model_compute(const gguf_file *g, const eng_info *info, uint8_t out[32])
{
    hasher h;
    h_begin(&h, "kvpub-model-fp-v1");
    h_str32(&h, info->arch, strnlen(info->arch, sizeof info->arch));
    h_u32(&h, (uint32_t)info->n_layer);
    h_u32(&h, (uint32_t)info->n_embd);
    h_u32(&h, (uint32_t)info->n_head);
    h_u32(&h, (uint32_t)info->n_head_kv);
    h_u32(&h, (uint32_t)info->head_dim);
    h_f32(&h, info->norm_eps);
    const eng_rope *r = &info->rope;
    h_u32(&h, (uint32_t)r->type);
    h_u32(&h, (uint32_t)r->n_rot);
    h_f32(&h, r->freq_base);
    h_f32(&h, r->freq_scale);
    h_u32(&h, (uint32_t)r->scaling);
    h_u32(&h, (uint32_t)r->n_ctx_orig);
    h_f32(&h, r->yarn_ext_factor);
    h_f32(&h, r->yarn_attn_factor);
    h_f32(&h, r->yarn_beta_fast);
    h_f32(&h, r->yarn_beta_slow);
    size_t n = gguf_n_tensors(g);
    h_u64(&h, n);
    for (size_t i = 0; i < n; i++) {
        const gguf_tensor *t = gguf_tensor_sorted(g, i);
        h_str32(&h, t->name, strlen(t->name));
        h_u32(&h, t->type);
        h_u32(&h, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            h_u64(&h, t->ne[d]);
        h_u64(&h, t->nbytes);
        h_bytes(&h, t->data, (size_t)t->nbytes);
    }
    h_end(&h, out);
}

static void h_opt_str(hasher *h, const gguf_file *g, const char *key)
{
    gguf_str s;
    if (gguf_get_str(g, key, &s) == 1) {
        h_u8(h, 1);
        h_str64(h, &s);
    } else {
        h_u8(h, 0);
    }
}

static void h_opt_strarr(hasher *h, const gguf_file *g, const char *key)
{
    gguf_vtype et;
    uint64_t n;
    const void *d;
    if (gguf_get_arr(g, key, &et, &n, &d) != 1 || et != GGUF_VT_STRING) {
        h_u8(h, 0);
        return;
    }
    h_u8(h, 1);
    h_u64(h, n);
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s;
        if (gguf_get_arr_str(g, key, i, &s) == 1)
            h_str64(h, &s);
    }
}

static double arr_elem(gguf_vtype et, const uint8_t *p, int *ok)
{
    *ok = 1;
    switch (et) {
    case GGUF_VT_UINT8: return p[0];
    case GGUF_VT_INT8: return (int8_t)p[0];
    case GGUF_VT_UINT16: return (uint16_t)(p[0] | p[1] << 8);
    case GGUF_VT_INT16: return (int16_t)(uint16_t)(p[0] | p[1] << 8);
    case GGUF_VT_UINT32: return (uint32_t)(p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24);
    case GGUF_VT_INT32: return (int32_t)(uint32_t)(p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24);
    case GGUF_VT_FLOAT32: {
        uint32_t u = (uint32_t)(p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24);
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    case GGUF_VT_FLOAT64: {
        uint64_t u = 0;
        for (int i = 7; i >= 0; i--)
            u = u << 8 | p[i];
        double d;
        memcpy(&d, &u, 8);
        return d;
    }
    default:
        *ok = 0;
        return 0;
    }
}

/* Numeric array hashed as f32 bits (as_float) or i32 values, whatever its stored type. */
static void h_opt_numarr(hasher *h, const gguf_file *g, const char *key, int as_float)
{
    gguf_vtype et;
    uint64_t n;
    const void *d;
    size_t es;
    if (gguf_get_arr(g, key, &et, &n, &d) != 1 || (es = gguf_vtype_size(et)) == 0 || et == GGUF_VT_BOOL) {
        h_u8(h, 0);
        return;
    }
    h_u8(h, 1);
    h_u64(h, n);
    const uint8_t *p = d;
    for (uint64_t i = 0; i < n; i++) {
        int ok;
        double v = arr_elem(et, p + i * es, &ok);
        if (as_float)
            h_f32(h, (float)v);
        else
            h_u32(h, (uint32_t)(int32_t)v);
    }
}

static void h_opt_int(hasher *h, const gguf_file *g, const char *key, int bits64)
{
    int64_t v = -1;
    int r = gguf_get_int(g, key, &v);
    if (bits64) {
        h_u64(h, (uint64_t)(r == 1 ? v : -1));
    } else {
        h_u8(h, (uint8_t)(r == 1 ? (v != 0) : -1));
    }
}

void eng_fingerprint_tokenizer_compute(const gguf_file *g, const eng_info *info, uint8_t out[32])
{
    hasher h;
    h_begin(&h, "kvpub-tokenizer-fp-v1");
    h_opt_str(&h, g, "tokenizer.ggml.model");
    h_opt_str(&h, g, "tokenizer.ggml.pre");
    h_opt_strarr(&h, g, "tokenizer.ggml.tokens");
    h_opt_numarr(&h, g, "tokenizer.ggml.scores", 1);
    h_opt_numarr(&h, g, "tokenizer.ggml.token_type", 0);
    h_opt_strarr(&h, g, "tokenizer.ggml.merges");
    h_opt_int(&h, g, "tokenizer.ggml.bos_token_id", 1);
    h_opt_int(&h, g, "tokenizer.ggml.eos_token_id", 1);
    h_opt_int(&h, g, "tokenizer.ggml.unknown_token_id", 1);
    h_opt_int(&h, g, "tokenizer.ggml.padding_token_id", 1);
    h_u8(&h, (uint8_t)(info->add_bos != 0));
    h_opt_int(&h, g, "tokenizer.ggml.add_eos_token", 0);
    h_opt_int(&h, g, "tokenizer.ggml.add_space_prefix", 0);
    h_end(&h, out);
}

/* ---- cache ---- */

/* mkdir -p, best effort. */
static void make_dirs(const char *dir)
{
    char tmp[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof tmp)
        return;
    memcpy(tmp, dir, n + 1);
    for (size_t i = 1; i < n; i++) {
        if (tmp[i] == '/') {
            tmp[i] = 0;
            (void)mkdir(tmp, 0700);
            tmp[i] = '/';
        }
    }
    (void)mkdir(tmp, 0700);
}

static void to_hex(const uint8_t *b, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[b[i] >> 4];
        out[2 * i + 1] = hx[b[i] & 15];
    }
    out[2 * n] = 0;
}

static int from_hex(const char *s, uint8_t *b, size_t n)
{
    for (size_t i = 0; i < 2 * n; i++) {
        char c = s[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0)
            return 0;
        if (i % 2 == 0)
            b[i / 2] = (uint8_t)(v << 4);
        else
            b[i / 2] |= (uint8_t)v;
    }
    return s[2 * n] == 0 || s[2 * n] == '\n';
}

/* One line: "kvpub-model-fp-v1 <dev> <ino> <size> <mtime_s> <mtime_ns> <hex>\n". */
static int format_entry(const struct stat *st, const uint8_t fp[32], char *out, size_t n)
{
    char hex[65];
    to_hex(fp, 32, hex);
    int w = snprintf(out, n, "kvpub-model-fp-v1 %llu %llu %lld %lld %ld %s\n",
                     (unsigned long long)st->st_dev, (unsigned long long)st->st_ino,
                     (long long)st->st_size, (long long)st->st_mtim.tv_sec,
                     (long)st->st_mtim.tv_nsec, hex);
    return w > 0 && (size_t)w < n;
}

static int cache_lookup(const char *file, const struct stat *st, uint8_t out[32])
{
    char buf[256];
    FILE *f = fopen(file, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* The key fields must match byte for byte; compare the line up to the hash. */
    char want[256];
    static const uint8_t zero[32];
    if (!format_entry(st, zero, want, sizeof want))
        return 0;
    size_t key_len = strlen(want) - 65; /* up to and including the space before the hex */
    if (n < key_len + 64 || memcmp(buf, want, key_len) != 0)
        return 0;
    return from_hex(buf + key_len, out, 32);
}

static void cache_store(const char *dir, const char *file, const struct stat *st, const uint8_t fp[32])
{
    char line[256], tmp[4200];
    if (!format_entry(st, fp, line, sizeof line))
        return;
    make_dirs(dir);
    int w = snprintf(tmp, sizeof tmp, "%s.tmpXXXXXX", file);
    if (w <= 0 || (size_t)w >= sizeof tmp)
        return;
    int fd = mkstemp(tmp);
    if (fd < 0)
        return;
    size_t len = strlen(line);
    int ok = write(fd, line, len) == (ssize_t)len;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, file) != 0)
        unlink(tmp);
}

eng_status eng_fingerprint_model_cached(const char *path, const gguf_file *g, const eng_info *info,
                                        const char *cache_dir, uint8_t out[32], char *err, size_t errlen)
{
    struct stat stbuf;
    const struct stat *st = gguf_file_stat(g);
    if (!st) {
        if (!path || stat(path, &stbuf) != 0) {
            /* No file identity to key on: compute without the cache. */
            eng_fingerprint_model_compute(g, info, out);
            return ENG_OK;
        }
        st = &stbuf;
    }
    char file[4200];
    int have_dir = cache_dir && *cache_dir;
    if (have_dir) {
        int w = snprintf(file, sizeof file, "%s/model-%llx-%llx.fp", cache_dir,
                         (unsigned long long)st->st_dev, (unsigned long long)st->st_ino);
        have_dir = w > 0 && (size_t)w < sizeof file;
    }
    if (have_dir && cache_lookup(file, st, out))
        return ENG_OK;
    /* Tell the kernel we read the weights once, front to back. */
    if (gguf_file_stat(g))
        (void)madvise((void *)((uintptr_t)gguf_file_data(g) & ~(uintptr_t)4095),
                  gguf_file_size(g) + ((uintptr_t)gguf_file_data(g) & 4095), MADV_SEQUENTIAL);
    eng_fingerprint_model_compute(g, info, out);
    static const uint8_t zero[32];
    if (memcmp(out, zero, 32) == 0) {
        if (err && errlen)
            snprintf(err, errlen, "SHA-256 unavailable in OpenSSL while fingerprinting the model");
        return ENG_ERR_INTERNAL;
    }
    if (have_dir)
        cache_store(cache_dir, file, st, out);
    return ENG_OK;
}
