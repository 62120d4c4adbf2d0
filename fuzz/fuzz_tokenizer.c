/* fuzz_tokenizer.c: libFuzzer target for engine/'s tokenizers. The first input byte picks a mode:
 * fuzzed text through tokenize -> detokenize (whole and streaming) on small fixed SPM and BPE
 * vocabularies, asserting the round trip where the tokenizer guarantees it, or a fuzzed
 * vocabulary description through eng_vocab_create and, when accepted, through the tokenizer. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/tok/tokenizer_internal.h" /* eng_utf8_decode */
#include "tests/unit/gpt2_bytes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define SPM_SPACE "\xE2\x96\x81" /* U+2581, SentencePiece's visible space */
#define SPM_USER "<|tool|>"      /* the fixed SPM vocabularies' user-defined token */

/* ---- fixed vocabularies, built once ---- */

enum { V_SPM, V_SPM_NOPREFIX, V_BPE_GPT2, V_BPE_LLAMA3, V_BPE_QWEN2, N_FIXED };
static struct eng_vocab *g_fixed[N_FIXED];

static char g_byte_names[256][8];   /* SPM "<0xAB>" */
static char g_byte_chars[256][4];   /* BPE: GPT-2's printable stand-in of each byte */

static void die(const char *what, const char *err)
{
    fprintf(stderr, "fuzz_tokenizer: %s: %s\n", what, err);
    abort();
}

/* One of the fixed vocabularies: they must be accepted, else the target cannot run. */
static struct eng_vocab *create_fixed(const eng_vocab_desc *d, const char *what)
{
    struct eng_vocab *v = NULL;
    char err[256] = "";
    if (eng_vocab_create(d, &v, err, sizeof err) != ENG_OK)
        die(what, err);
    return v;
}

static struct eng_vocab *make_spm(int add_space_prefix)
{
    static const char *tok[600];
    static float score[600];
    static int32_t type[600];
    size_t n = 0;
#define ADD(t, s, ty) (tok[n] = (t), score[n] = (s), type[n] = (ty), n++)
    ADD("<unk>", 0, ENG_TOKTYPE_UNKNOWN);
    ADD("<s>", 0, ENG_TOKTYPE_CONTROL);
    ADD("</s>", 0, ENG_TOKTYPE_CONTROL);
    ADD(SPM_USER, 0, ENG_TOKTYPE_USER_DEFINED);
    for (int i = 0; i < 256; i++) {
        snprintf(g_byte_names[i], sizeof g_byte_names[i], "<0x%02X>", i);
        ADD(g_byte_names[i], 0, ENG_TOKTYPE_BYTE);
    }
    /* single characters, then pieces whose scores decide the merge order */
    static const char *const pieces[] = {
        SPM_SPACE, "a", "e", "h", "i", "n", "o", "s", "t", "\xC3\xA9", "\xE6\x97\xA5",
        "th", "he", "an", "in", "on", "st", "es", SPM_SPACE "t", SPM_SPACE "a", SPM_SPACE "th",
        SPM_SPACE "the", "the", "ion", "tion", SPM_SPACE SPM_SPACE, "\xE6\x97\xA5\xE6\x97\xA5",
    };
    for (size_t i = 0; i < N_OF(pieces); i++)
        ADD(pieces[i], -(float)(i % 7) - 0.5f * (float)(i / 7), ENG_TOKTYPE_NORMAL);
#undef ADD
    const eng_vocab_desc d = {
        .kind = ENG_VOCAB_SPM, .n_tokens = n, .tokens = tok, .scores = score, .n_scores = n,
        .types = type, .n_types = n, .bos_id = 1, .eos_id = 2, .unk_id = 0, .eot_id = -1,
        .add_bos = 1, .add_space_prefix = add_space_prefix,
    };
    return create_fixed(&d, "fixed SPM vocabulary");
}

static struct eng_vocab *make_bpe(const char *pre)
{
    static const char *tok[400];
    static const char *merges[64];
    size_t n = 0, nm = 0;
    for (unsigned i = 0; i < 256; i++) {
        gpt2_byte_utf8(i, g_byte_chars[i]);
        tok[n++] = g_byte_chars[i];
    }
    /* merges in rank order; each result is a token (\xC4\xA0 = U+0120 stands for ' ') */
    static const char *const m[][2] = {
        {"t", "h"}, {"h", "e"}, {"th", "e"}, {"\xC4\xA0", "t"}, {"\xC4\xA0t", "he"}, {"i", "n"},
        {"in", "g"}, {"a", "n"}, {"n", "d"}, {"a", "nd"}, {"\xC4\xA0", "a"}, {"\xC4\xA0" "a", "nd"},
        {"e", "r"}, {"1", "2"}, {"12", "3"}, {"\xC4\x8A", "\xC4\x8A"}, {"\xC3\x83", "\xC2\xA9"},
        {"o", "n"}, {"\xC4\xA0", "\xC4\xA0"},
    };
    static char merged[N_OF(m)][16];
    static char mline[N_OF(m)][24];
    for (size_t i = 0; i < N_OF(m); i++) {
        snprintf(merged[i], sizeof merged[i], "%s%s", m[i][0], m[i][1]);
        snprintf(mline[i], sizeof mline[i], "%s %s", m[i][0], m[i][1]);
        tok[n++] = merged[i];
        merges[nm++] = mline[i];
    }
    size_t first_special = n;
    tok[n++] = "<|endoftext|>";
    tok[n++] = "<|im_start|>";
    tok[n++] = "<|im_end|>";
    tok[n++] = "<tool>";
    tok[n++] = "andthe"; /* reachable by no merge: llama3's whole-word lookup only */
    static int32_t type[400];
    for (size_t i = 0; i < n; i++)
        type[i] = ENG_TOKTYPE_NORMAL;
    type[first_special] = type[first_special + 1] = type[first_special + 2] = ENG_TOKTYPE_CONTROL;
    type[first_special + 3] = ENG_TOKTYPE_USER_DEFINED;
    const eng_vocab_desc d = {
        .kind = ENG_VOCAB_BPE, .pre = pre, .n_tokens = n, .tokens = tok, .types = type, .n_types = n,
        .merges = merges, .n_merges = nm, .bos_id = -1, .unk_id = -1,
        .eos_id = (int32_t)first_special, .eot_id = (int32_t)first_special + 2,
    };
    return create_fixed(&d, "fixed BPE vocabulary");
}

static void init_fixed(void)
{
    if (g_fixed[0])
        return;
    g_fixed[V_SPM] = make_spm(1);
    g_fixed[V_SPM_NOPREFIX] = make_spm(0);
    g_fixed[V_BPE_GPT2] = make_bpe("default");
    g_fixed[V_BPE_LLAMA3] = make_bpe("llama-bpe");
    g_fixed[V_BPE_QWEN2] = make_bpe("qwen2");
}

/* ---- one text through one vocabulary ---- */

static int contains(const char *s, size_t n, const char *needle, size_t nl)
{
    for (size_t i = 0; i + nl <= n; i++)
        if (memcmp(s + i, needle, nl) == 0)
            return 1;
    return 0;
}

/* Tokenizes, detokenizes whole and streaming, and checks what must hold for any vocabulary:
 * ids in range, streaming == whole. With exact set, also detok(tok(text)) == text. */
static void run_text(const struct eng_vocab *v, const char *text, size_t len, int add_special,
                     int parse_special, int exact)
{
    int32_t *ids = NULL;
    size_t n = 0;
    char err[256];
    eng_status st = eng_vocab_tokenize(v, text, len, add_special, parse_special, &ids, &n, err, sizeof err);
    if (st != ENG_OK) {
        if (ids)
            die("tokenize", "failed but left *ids set");
        if (exact)
            die("tokenize failed on a vocabulary with full byte coverage", err);
        return;
    }
    size_t nv = eng_vocab_n_tokens(v);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= nv)
            die("tokenize", "id out of range");
    /* the text's own tokens: a BOS the policy added would keep the space prefix on (as
     * llama_detokenize strips only a first token's space) */
    const size_t skip = add_special && n > 0 && ids[0] == eng_vocab_bos(v);
    char *out = NULL;
    size_t olen = 0;
    if (eng_vocab_detokenize(v, ids + skip, n - skip, 1, &out, &olen) != ENG_OK)
        die("detokenize", "refused ids the tokenizer produced");
    if (out[olen] != 0)
        die("detokenize", "result not NUL-terminated");
    if (exact && (olen != len || memcmp(out, text, len) != 0)) {
        fprintf(stderr, "round trip: %zu bytes in, %zu out\n", len, olen);
        die("round trip", "detokenize(tokenize(text)) != text");
    }
    eng_detok *d = eng_vocab_detok_create(v, 1);
    if (!d)
        die("detok_create", "NULL");
    char *cat = malloc(olen + 1);
    size_t o = 0;
    for (size_t i = skip; i <= n; i++) {
        size_t l;
        const char *p = i < n ? eng_detok_push(d, ids[i], &l) : eng_detok_flush(d, &l);
        if (o + l > olen)
            die("streaming detokenizer", "produced more bytes than the whole-sequence one");
        memcpy(cat + o, p, l);
        o += l;
    }
    if (o != olen || memcmp(cat, out, olen) != 0)
        die("streaming detokenizer", "differs from the whole-sequence result");
    free(cat);
    eng_detok_free(d);
    free(out);
    free(ids);
}

/* ---- fuzzed vocabulary descriptions ---- */

/* Layout after the mode byte: 6 header bytes (kind, flags, bos, eos, unk, eot), then lines
 * split at '\n': "type-byte text" token lines, a line "==" switching to merge lines, and a
 * line "--" after which the rest of the input is the text to tokenize. */
static void run_desc(const uint8_t *data, size_t size)
{
    if (size < 6)
        return;
    enum { MAX_TOK = 2048, MAX_MERGE = 1024 };
    static const char *tok[MAX_TOK];
    static size_t tok_len[MAX_TOK];
    static int32_t type[MAX_TOK];
    static float score[MAX_TOK];
    static const char *merge[MAX_MERGE];
    static size_t merge_len[MAX_MERGE];
    static const char *const pres[] = {"default", "llama-bpe", "qwen2", "gpt2", "deepseek-llm", ""};
    uint8_t kind = data[0], flags = data[1];
    const uint8_t *p = data + 6, *end = data + size;
    size_t nt = 0, nm = 0;
    int in_merges = 0;
    const char *text = "";
    size_t text_len = 0;
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (l == 2 && p[0] == '-' && p[1] == '-') {
            text = nl ? (const char *)nl + 1 : "";
            text_len = nl ? (size_t)(end - nl - 1) : 0;
            break;
        }
        if (l == 2 && p[0] == '=' && p[1] == '=')
            in_merges = 1;
        else if (in_merges && nm < MAX_MERGE) {
            merge[nm] = (const char *)p;
            merge_len[nm++] = l;
        } else if (!in_merges && nt < MAX_TOK) {
            /* the first byte is the type; (flags & 8) lets out-of-range types through */
            int32_t t = l ? p[0] : ENG_TOKTYPE_NORMAL;
            type[nt] = (flags & 8) ? t - 1 : t % 7;
            score[nt] = (float)(l ? (int)p[l - 1] - 128 : 0) / 8.0f;
            tok[nt] = l ? (const char *)p + 1 : (const char *)p;
            tok_len[nt++] = l ? l - 1 : 0;
        }
        p = nl ? nl + 1 : end;
    }
    /* merges are NUL-free strings in the API: copy them out */
    char *mbuf[MAX_MERGE];
    for (size_t i = 0; i < nm; i++) {
        mbuf[i] = malloc(merge_len[i] + 1);
        memcpy(mbuf[i], merge[i], merge_len[i]);
        mbuf[i][merge_len[i]] = 0;
    }
    eng_vocab_desc d;
    memset(&d, 0, sizeof d);
    d.kind = (eng_vocab_kind)(kind % 4); /* 0 and 3 are invalid kinds */
    d.pre = pres[(kind >> 2) % N_OF(pres)];
    d.n_tokens = nt;
    d.tokens = tok;
    d.token_lens = tok_len;
    d.scores = (flags & 1) ? score : NULL;
    d.n_scores = (flags & 16) ? nt + 1 : nt;
    d.types = (flags & 2) ? type : NULL;
    d.n_types = nt;
    d.merges = (const char *const *)mbuf;
    d.merge_lens = (flags & 32) ? merge_len : NULL;
    d.n_merges = nm;
    int32_t sid[4];
    for (int i = 0; i < 4; i++)
        sid[i] = data[2 + i] == 0xFF ? -1 : data[2 + i] == 0xFE ? (int32_t)nt : (int32_t)data[2 + i];
    d.bos_id = sid[0];
    d.eos_id = sid[1];
    d.unk_id = sid[2];
    d.eot_id = sid[3];
    d.add_bos = flags & 4;
    d.add_eos = flags & 64;
    d.add_space_prefix = flags & 128;
    struct eng_vocab *v = NULL;
    char err[256] = "";
    eng_status st = eng_vocab_create(&d, &v, err, sizeof err);
    if (st == ENG_OK) {
        if (!v)
            die("eng_vocab_create", "OK without a vocabulary");
        run_text(v, text, text_len, flags & 4, 0, 0);
        run_text(v, text, text_len, 1, 1, 0);
        /* every id, including specials and out-of-range ones, through the detokenizers */
        int32_t ids[8];
        for (int i = 0; i < 8; i++)
            ids[i] = (int32_t)(i * 37) % (int32_t)(nt + 2) - 1;
        char *out = NULL;
        size_t olen;
        if (eng_vocab_detokenize(v, ids, 8, 0, &out, &olen) == ENG_OK)
            free(out);
        eng_detok *dt = eng_vocab_detok_create(v, 0);
        for (int i = 0; i < 8; i++) {
            size_t l;
            (void)eng_detok_push(dt, ids[i], &l);
        }
        eng_detok_free(dt);
        (void)eng_vocab_is_eog(v, ids[0]);
        eng_vocab_free(v);
    } else {
        if (v)
            die("eng_vocab_create", "failed but left *out set");
        if (!err[0])
            die("eng_vocab_create", "failed without a message");
    }
    for (size_t i = 0; i < nm; i++)
        free(mbuf[i]);
}

static int valid_utf8(const char *s, size_t n)
{
    for (size_t p = 0; p < n;) {
        uint32_t cp;
        size_t l = eng_utf8_decode((const unsigned char *)s + p, n - p, &cp);
        if (l == 0)
            return 0;
        p += l;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 1 << 16)
        return 0;
    init_fixed();
    uint8_t mode = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    if ((mode & 7) < N_FIXED) {
        const struct eng_vocab *v = g_fixed[mode & 7];
        int parse_special = (mode >> 3) & 1, add_special = (mode >> 4) & 1;
        /* Both kinds have a token for every byte, so without special-token parsing the round
         * trip is exact for UTF-8 text; SPM turns a literal U+2581 in the text into a space, like
         * SentencePiece itself, and text that is not UTF-8 is read as llama.cpp reads it (BPE:
         * U+FFFD), so such texts are only checked for safety. A user-defined token is matched
         * even without special-token parsing, and SPM with a space prefix starts the text after
         * it with a space, as llama.cpp does ("a<|tool|>b" comes back as "a<|tool|> b"). */
        int exact = !parse_special && valid_utf8(text, len) &&
                    (eng_vocab_get_kind(v) != ENG_VOCAB_SPM || !contains(text, len, SPM_SPACE, 3)) &&
                    ((mode & 7) != V_SPM || !contains(text, len, SPM_USER, strlen(SPM_USER)));
        run_text(v, text, len, add_special, parse_special, exact);
    } else {
        run_desc(data + 1, size - 1);
    }
    return 0;
}
