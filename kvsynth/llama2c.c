/* kvsynth/llama2c.c: `kvsynth from-llama2c CKPT.bin [TOKENIZER.bin] -o OUT.gguf` converts a
 * llama2.c checkpoint (legacy version-0 header) into a llama GGUF, f32 weights copied verbatim:
 * llama2.c already stores q/k rows in Meta's adjacent-pair RoPE layout, which is GGUF llama's. */
#include "kvsynth/kvsynth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "kvsynth/synth_vocab.h"

static void usage(FILE *f)
{
    fputs("usage: kvsynth from-llama2c CKPT.bin [TOKENIZER.bin] -o OUT.gguf [--name NAME]\n"
          "Converts a llama2.c checkpoint (version-0 header: dim, hidden_dim, n_layers, n_heads,\n"
          "n_kv_heads, vocab_size (negative: separate classifier), seq_len) to a llama GGUF.\n"
          "TOKENIZER.bin is llama2.c's tokenizer export (int32 max_len; per token f32 score,\n"
          "int32 len, bytes); spaces become U+2581. Without it a synthetic byte-fallback\n"
          "SentencePiece vocabulary of vocab_size tokens is written.\n", f);
}

typedef struct mapped {
    const uint8_t *p;
    size_t n;
} mapped;

static int map_file(const char *path, mapped *m)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "kvsynth: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
        fprintf(stderr, "kvsynth: %s: not a non-empty regular file\n", path);
        close(fd);
        return -1;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        fprintf(stderr, "kvsynth: cannot map %s: %s\n", path, strerror(errno));
        return -1;
    }
    m->p = p;
    m->n = (size_t)st.st_size;
    return 0;
}

static int32_t ld_i32(const uint8_t *p)
{
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

/* One tensor to write: its GGUF name and shape, and where its f32 data lies in the checkpoint. */
typedef struct src_tensor {
    char name[64];
    uint32_t n_dims;
    uint64_t ne[2];
    const float *p;
} src_tensor;

static void src_set(src_tensor *t, const char *name, uint32_t n_dims, int64_t ne0, int64_t ne1, const float *p)
{
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->ne[0] = (uint64_t)ne0;
    t->ne[1] = (uint64_t)ne1;
    t->p = p;
}

/* Reads llama2.c's tokenizer.bin into v (llama/SPM conventions). 0, or -1 after a message. */
static int load_tokenizer(const char *path, size_t n_vocab, synth_vocab *v)
{
    mapped m;
    memset(v, 0, sizeof *v);
    if (map_file(path, &m) != 0)
        return -1;
    int rc = -1;
    size_t off = 4;
    v->tokens = calloc(n_vocab, sizeof *v->tokens);
    v->scores = calloc(n_vocab, sizeof *v->scores);
    v->types = calloc(n_vocab, sizeof *v->types);
    if (!v->tokens || !v->scores || !v->types) {
        fputs("kvsynth: out of memory\n", stderr);
        goto out;
    }
    if (m.n < 4) {
        fprintf(stderr, "kvsynth: %s: truncated header (expected int32 max_token_length)\n", path);
        goto out;
    }
    for (size_t i = 0; i < n_vocab; i++) {
        if (m.n - off < 8) {
            fprintf(stderr, "kvsynth: %s: truncated at token %zu of %zu\n", path, i, n_vocab);
            goto out;
        }
        float score;
        memcpy(&score, m.p + off, 4);
        int32_t len = ld_i32(m.p + off + 4);
        off += 8;
        if (len < 0 || len > GGUF_MAX_NAME * 64 || (size_t)len > m.n - off) {
            fprintf(stderr, "kvsynth: %s: token %zu has length %d but %zu bytes remain\n", path, i, len,
                    m.n - off);
            goto out;
        }
        /* ' ' -> U+2581 (3 bytes), so the piece can grow up to 3x */
        char *s = malloc((size_t)len * 3 + 1);
        if (!s) {
            fputs("kvsynth: out of memory\n", stderr);
            goto out;
        }
        size_t o = 0;
        for (int32_t j = 0; j < len; j++) {
            if (m.p[off + (size_t)j] == ' ') {
                memcpy(s + o, "\xE2\x96\x81", 3);
                o += 3;
            } else {
                s[o++] = (char)m.p[off + (size_t)j];
            }
        }
        s[o] = 0;
        off += (size_t)len;
        v->tokens[i] = s;
        v->n = i + 1;
        v->scores[i] = score;
        unsigned hex;
        char tail;
        v->types[i] = i == 0 ? 2 : (i == 1 || i == 2) ? 3
                    : (o == 6 && sscanf(s, "<0x%2X%c", &hex, &tail) == 2 && tail == '>') ? 6 : 1;
    }
    synth_vocab_spm_ids(v);
    rc = 0;
out:
    munmap((void *)m.p, m.n);
    if (rc != 0)
        synth_vocab_free(v);
    return rc;
}

int kvsynth_llama2c_main(int argc, char **argv)
{
    const char *ckpt = NULL, *tok = NULL, *out = NULL, *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if ((strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--name") == 0) && i + 1 < argc) {
            *(argv[i][1] == 'o' ? &out : &name) = argv[i + 1];
            i++;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "kvsynth from-llama2c: unknown option or missing value '%s' (see --help)\n", argv[i]);
            return 2;
        } else if (!ckpt) {
            ckpt = argv[i];
        } else if (!tok) {
            tok = argv[i];
        } else {
            fprintf(stderr, "kvsynth from-llama2c: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!ckpt || !out) {
        fputs("kvsynth from-llama2c: need CKPT.bin and -o OUT.gguf (see --help)\n", stderr);
        return 2;
    }
    mapped m;
    if (map_file(ckpt, &m) != 0)
        return 2;
    int rc = 2;
    ggw *w = NULL;
    synth_vocab v;
    memset(&v, 0, sizeof v);
    char err[512];
    if (m.n < 28) {
        fprintf(stderr, "kvsynth: %s: too small for a llama2.c header (28 bytes)\n", ckpt);
        goto out;
    }
    int32_t h[7];
    for (int i = 0; i < 7; i++)
        h[i] = ld_i32(m.p + 4 * i);
    int shared = h[5] > 0;
    int64_t dim = h[0], hid = h[1], nl = h[2], nh = h[3], nkv = h[4], voc = shared ? h[5] : -(int64_t)h[5],
            seq = h[6];
    if (dim <= 0 || hid <= 0 || nl <= 0 || nh <= 0 || nkv <= 0 || voc <= 0 || seq <= 0 || dim % nh ||
        nh % nkv || dim > 1 << 16 || hid > 1 << 20 || nl > 1024 || voc > 1 << 20 || seq > 1 << 24) {
        fprintf(stderr, "kvsynth: %s: implausible llama2.c header (dim %d, hidden %d, layers %d, heads %d, "
                "kv heads %d, vocab %d, seq_len %d); only the legacy version-0 format is supported\n",
                ckpt, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
        goto out;
    }
    int64_t hs = dim / nh, kvd = nkv * hs;
    /* Element counts in file order (all fit easily in int64 given the bounds above). */
    int64_t n_emb = voc * dim, n_rms = nl * dim, n_q = nl * dim * dim, n_k = nl * dim * kvd,
            n_ffn = nl * dim * hid, n_freq = seq * hs; /* freq_cis_real + imag, skipped */
    int64_t n_total = n_emb + n_rms + n_q + 2 * n_k + n_q + n_rms + 3 * n_ffn + dim + n_freq + (shared ? 0 : n_emb);
    if ((uint64_t)n_total * 4 + 28 != m.n) {
        fprintf(stderr, "kvsynth: %s: size %zu bytes, expected %lld for this header\n", ckpt, m.n,
                (long long)(n_total * 4 + 28));
        goto out;
    }
    const float *base = (const float *)(m.p + 28);
    const float *emb = base, *rms_att = emb + n_emb, *wq = rms_att + n_rms, *wk = wq + n_q, *wv = wk + n_k,
                *wo = wv + n_k, *rms_ffn = wo + n_q, *w1 = rms_ffn + n_rms, *w2 = w1 + n_ffn, *w3 = w2 + n_ffn,
                *rms_fin = w3 + n_ffn, *wcls = shared ? emb : rms_fin + dim + n_freq;

    if (tok ? load_tokenizer(tok, (size_t)voc, &v) != 0
            : synth_vocab_spm((size_t)voc, &v, err, sizeof err) != 0) {
        if (!tok)
            fprintf(stderr, "kvsynth: %s\n", err);
        goto out;
    }
    w = ggw_create(32);
    char nm[128];
    if (!name) {
        const char *b = strrchr(ckpt, '/');
        b = b ? b + 1 : ckpt;
        size_t l = strlen(b);
        if (l > 4 && strcmp(b + l - 4, ".bin") == 0)
            l -= 4;
        snprintf(nm, sizeof nm, "%.*s", (int)(l < 100 ? l : 100), b);
        name = nm;
    }
    int r = !w;
    if (w) {
        r |= ggw_kv_str(w, "general.architecture", "llama");
        r |= ggw_kv_str(w, "general.name", name);
        r |= ggw_kv_u32(w, "general.alignment", 32);
        r |= ggw_kv_u32(w, "general.file_type", 0);
        r |= ggw_kv_u32(w, "llama.context_length", (uint32_t)seq);
        r |= ggw_kv_u32(w, "llama.embedding_length", (uint32_t)dim);
        r |= ggw_kv_u32(w, "llama.block_count", (uint32_t)nl);
        r |= ggw_kv_u32(w, "llama.feed_forward_length", (uint32_t)hid);
        r |= ggw_kv_u32(w, "llama.attention.head_count", (uint32_t)nh);
        r |= ggw_kv_u32(w, "llama.attention.head_count_kv", (uint32_t)nkv);
        r |= ggw_kv_u32(w, "llama.rope.dimension_count", (uint32_t)hs);
        r |= ggw_kv_f32(w, "llama.rope.freq_base", 10000.0f);
        r |= ggw_kv_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
        r |= ggw_kv_u32(w, "llama.vocab_size", (uint32_t)voc);
        r |= synth_vocab_write(w, &v);
    }
    if (r) {
        fputs("kvsynth: out of memory\n", stderr);
        goto out;
    }
    /* Tensor order as llama.cpp's converter writes it. llama2.c stores each per-layer weight
     * as one array of nl (ne0 x ne1) matrices. */
    const struct {
        const char *sfx;
        uint32_t n_dims;
        int64_t ne0, ne1;
        const float *base;
    } per_layer[] = {
        {"attn_norm.weight", 1, dim, 1, rms_att},  {"attn_q.weight", 2, dim, dim, wq},
        {"attn_k.weight", 2, dim, kvd, wk},        {"attn_v.weight", 2, dim, kvd, wv},
        {"attn_output.weight", 2, dim, dim, wo},   {"ffn_norm.weight", 1, dim, 1, rms_ffn},
        {"ffn_gate.weight", 2, dim, hid, w1},      {"ffn_down.weight", 2, hid, dim, w2},
        {"ffn_up.weight", 2, dim, hid, w3},
    };
    enum { N_PER_LAYER = sizeof per_layer / sizeof per_layer[0] };
    src_tensor *src = calloc((size_t)nl * N_PER_LAYER + 3, sizeof *src);
    if (!src) {
        fputs("kvsynth: out of memory\n", stderr);
        goto out;
    }
    size_t ns = 0;
    src_set(&src[ns++], "token_embd.weight", 2, dim, voc, emb);
    for (int64_t l = 0; l < nl; l++) {
        for (size_t k = 0; k < N_PER_LAYER; k++) {
            char tn[64];
            snprintf(tn, sizeof tn, "blk.%lld.%s", (long long)l, per_layer[k].sfx);
            src_set(&src[ns++], tn, per_layer[k].n_dims, per_layer[k].ne0, per_layer[k].ne1,
                    per_layer[k].base + l * per_layer[k].ne0 * per_layer[k].ne1);
        }
    }
    src_set(&src[ns++], "output_norm.weight", 1, dim, 1, rms_fin);
    if (!shared)
        src_set(&src[ns++], "output.weight", 2, dim, voc, wcls);
    for (size_t i = 0; i < ns; i++)
        ggw_tensor(w, src[i].name, GGML_T_F32, src[i].n_dims, src[i].ne);
    int ok = ggw_begin(w, out, err, sizeof err) == 0;
    for (size_t i = 0; ok && i < ns; i++)
        ok = ggw_write(w, src[i].p, (size_t)(src[i].ne[0] * src[i].ne[1] * 4), err, sizeof err) == 0;
    ok = ok && ggw_finish(w, err, sizeof err) == 0;
    free(src);
    if (!ok) {
        fprintf(stderr, "kvsynth: %s\n", err);
        goto out;
    }
    rc = 0;
out:
    ggw_free(w);
    synth_vocab_free(&v);
    munmap((void *)m.p, m.n);
    return rc;
}
