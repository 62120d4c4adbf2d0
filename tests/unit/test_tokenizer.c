/* test_tokenizer.c: SentencePiece and byte-level BPE tokenizers on small in-memory vocabularies
 * whose segmentations are worked out by hand, the BPE pre-tokenizer splits, round trips,
 * streaming detokenization and malformed vocabulary descriptions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/tok/tokenizer_internal.h"
#include "tests/unit/gpt2_bytes.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

/* ---- vocabulary builder ---- */

struct vb {
    const char *tok[600];
    float score[600];
    int32_t type[600];
    size_t n;
    char bytes[256][8];
    const char *merges[64];
    size_t n_merges;
};

static int32_t vb_add(struct vb *b, const char *t, float score, int32_t type)
{
    assert_true(b->n < N_OF(b->tok));
    b->tok[b->n] = t;
    b->score[b->n] = score;
    b->type[b->n] = type;
    return (int32_t)b->n++;
}

static eng_vocab_desc vb_desc(struct vb *b, eng_vocab_kind kind)
{
    eng_vocab_desc d;
    memset(&d, 0, sizeof d);
    d.kind = kind;
    d.n_tokens = b->n;
    d.tokens = b->tok;
    d.scores = b->score;
    d.n_scores = b->n;
    d.types = b->type;
    d.n_types = b->n;
    d.merges = b->merges;
    d.n_merges = b->n_merges;
    d.bos_id = d.eos_id = d.unk_id = d.eot_id = -1;
    return d;
}

static struct eng_vocab *create_ok(const eng_vocab_desc *d)
{
    struct eng_vocab *v = NULL;
    char err[256] = "";
    eng_status st = eng_vocab_create(d, &v, err, sizeof err);
    if (st != ENG_OK)
        fail_msg("eng_vocab_create: %s", err);
    assert_non_null(v);
    return v;
}

/* SPM ids of the hand-worked vocabulary (see spm_vocab). */
enum {
    S_UNK = 0, S_BOS = 1, S_EOS = 2, S_BYTE0 = 3, /* <0x00>.. <0xFF> = 3..258 */
    S_SP = 259, S_H, S_E, S_L, S_O, S_W, S_R, S_D,
    S_SP_H = 267, S_HE, S_LL, S_LLO, S_SP_HELLO, S_SP_W, S_OR, S_LD, S_SP_WOR, S_SP_WORLD,
    S_TOOL, /* a user-defined token */
};

static struct vb g_spm; /* one builder is enough: the descriptions are borrowed */

static struct eng_vocab *spm_vocab(int add_space_prefix)
{
    struct vb *b = &g_spm;
    memset(b, 0, sizeof *b);
    vb_add(b, "<unk>", 0, ENG_TOKTYPE_UNKNOWN);
    vb_add(b, "<s>", 0, ENG_TOKTYPE_CONTROL);
    vb_add(b, "</s>", 0, ENG_TOKTYPE_CONTROL);
    for (int i = 0; i < 256; i++) {
        snprintf(b->bytes[i], sizeof b->bytes[i], "<0x%02X>", i);
        vb_add(b, b->bytes[i], 0, ENG_TOKTYPE_BYTE);
    }
    static const char *const chars[] = { "\xE2\x96\x81", "h", "e", "l", "o", "w", "r", "d" };
    for (size_t i = 0; i < N_OF(chars); i++)
        vb_add(b, chars[i], -10, ENG_TOKTYPE_NORMAL);
    /* Merged pieces with their scores: the highest-scoring available pair merges first. */
    static const struct { const char *t; float s; } pieces[] = {
        { "\xE2\x96\x81h", -1 }, { "he", -3 }, { "ll", -2 }, { "llo", -4 },
        { "\xE2\x96\x81hello", -5 }, { "\xE2\x96\x81w", -1.5f }, { "or", -2.5f }, { "ld", -6 },
        { "\xE2\x96\x81wor", -3.5f }, { "\xE2\x96\x81world", -7 },
    };
    for (size_t i = 0; i < N_OF(pieces); i++)
        vb_add(b, pieces[i].t, pieces[i].s, ENG_TOKTYPE_NORMAL);
    vb_add(b, "<tool>", 0, ENG_TOKTYPE_USER_DEFINED);
    assert_int_equal(b->n, S_TOOL + 1);
    eng_vocab_desc d = vb_desc(b, ENG_VOCAB_SPM);
    d.bos_id = S_BOS;
    d.eos_id = S_EOS;
    d.unk_id = S_UNK;
    d.add_bos = 1;
    d.add_space_prefix = add_space_prefix;
    return create_ok(&d);
}

static void expect_ids(const struct eng_vocab *v, const char *text, size_t len, int add_special,
                       int parse_special, const int32_t *exp, size_t n_exp)
{
    int32_t *ids = NULL;
    size_t n = 0;
    char err[256] = "";
    eng_status st = eng_vocab_tokenize(v, text, len, add_special, parse_special, &ids, &n, err, sizeof err);
    if (st != ENG_OK)
        fail_msg("tokenize failed: %s", err);
    int same = n == n_exp && (n == 0 || memcmp(ids, exp, n * sizeof *ids) == 0);
    if (!same) {
        char got[512] = "", want[512] = "";
        size_t o = 0;
        for (size_t i = 0; i < n && o < sizeof got - 16; i++)
            o += (size_t)snprintf(got + o, sizeof got - o, " %d", ids[i]);
        o = 0;
        for (size_t i = 0; i < n_exp && o < sizeof want - 16; i++)
            o += (size_t)snprintf(want + o, sizeof want - o, " %d", exp[i]);
        free(ids);
        fail_msg("tokens of \"%.*s\": got [%s ], want [%s ]", (int)len, text, got, want);
    }
    free(ids);
}

#define EXPECT_IDS(v, text, add_special, parse_special, ...)                                   \
    do {                                                                                       \
        static const int32_t exp_[] = { __VA_ARGS__ };                                         \
        expect_ids((v), (text), strlen(text), (add_special), (parse_special), exp_, N_OF(exp_)); \
    } while (0)

/* Whole-sequence detokenization as llama_detokenize gives it (strip_first). */
static void expect_detok(const struct eng_vocab *v, const int32_t *ids, size_t n, const char *want, size_t want_len)
{
    char *s = NULL;
    size_t len = 0;
    assert_int_equal(eng_vocab_detokenize(v, ids, n, 1, &s, &len), ENG_OK);
    assert_non_null(s);
    assert_int_equal(len, want_len);
    assert_memory_equal(s, want, want_len);
    assert_int_equal(s[len], 0);
    free(s);
}

/* ---- SentencePiece ---- */

static void test_spm_hello_world(void **state)
{
    (void)state;
    struct eng_vocab *v = spm_vocab(1);
    /* "▁hello▁world": ▁h(-1), ▁w(-1.5), ll(-2), or(-2.5) merge first; "he" is stale once ▁h
     * took the h; then ▁wor(-3.5), llo(-4), ld(-6), ▁world(-7). "▁hello" is never reachable
     * because neither "▁he" nor "ello" is a piece. */
    EXPECT_IDS(v, "hello world", 0, 0, S_SP_H, S_E, S_LLO, S_SP_WORLD);
    EXPECT_IDS(v, "hello world", 1, 0, S_BOS, S_SP_H, S_E, S_LLO, S_SP_WORLD);
    /* Equal scores: the leftmost pair wins. */
    EXPECT_IDS(v, "lll", 0, 0, S_SP, S_LL, S_L);
    /* A leading space becomes a second ▁; "▁▁" is no piece. */
    EXPECT_IDS(v, " hello", 0, 0, S_SP, S_SP_H, S_E, S_LLO);
    {
        int32_t *ids;
        size_t n;
        assert_int_equal(eng_vocab_tokenize(v, "", 0, 0, 0, &ids, &n, NULL, 0), ENG_OK);
        assert_int_equal(n, 0);
        free(ids);
        assert_int_equal(eng_vocab_tokenize(v, "", 0, 1, 0, &ids, &n, NULL, 0), ENG_OK);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], S_BOS);
        free(ids);
    }
    /* llama_detokenize strips the space prefix from tokens[0] only: after BOS (which prints
     * nothing) the first word keeps its space; without BOS it loses it. */
    static const int32_t hw[] = { S_BOS, S_SP_H, S_E, S_LLO, S_SP_WORLD, S_EOS };
    expect_detok(v, hw, N_OF(hw), " hello world", 12);
    expect_detok(v, hw + 1, N_OF(hw) - 1, "hello world", 11);
    static const int32_t sp[] = { S_SP, S_SP_H, S_E, S_LLO };
    expect_detok(v, sp, N_OF(sp), " hello", 6);
    eng_vocab_free(v);
}

/* The space-prefix rule needs a vocab of its own since the flag is per vocabulary. */
static void test_spm_no_space_prefix(void **state)
{
    (void)state;
    struct eng_vocab *v = spm_vocab(0);
    /* "hello": ll(-2) first, then he(-3), then "llo"(-4) from [ll][o]: [he][llo]. */
    EXPECT_IDS(v, "hello", 0, 0, S_HE, S_LLO);
    static const int32_t ids[] = { S_SP_H, S_E };
    expect_detok(v, ids, N_OF(ids), " he", 3);
    eng_vocab_free(v);
}

static void test_spm_byte_fallback(void **state)
{
    (void)state;
    struct eng_vocab *v = spm_vocab(1);
    EXPECT_IDS(v, "\xC3\xA9", 0, 0, S_SP, S_BYTE0 + 0xC3, S_BYTE0 + 0xA9); /* é */
    EXPECT_IDS(v, "\xF0\x9F\x98\x80", 0, 0, S_SP, S_BYTE0 + 0xF0, S_BYTE0 + 0x9F, S_BYTE0 + 0x98,
               S_BYTE0 + 0x80); /* 😀 */
    EXPECT_IDS(v, "h\xC3\xA9!", 0, 0, S_SP_H, S_BYTE0 + 0xC3, S_BYTE0 + 0xA9, S_BYTE0 + '!');
    /* A stray continuation byte and a truncated sequence still fall back byte by byte. */
    EXPECT_IDS(v, "\x80h\xE2\x82", 0, 0, S_SP, S_BYTE0 + 0x80, S_H, S_BYTE0 + 0xE2, S_BYTE0 + 0x82);
    /* As in llama.cpp, a character is as long as its lead byte says: the Latin-1 \xE9 takes the
     * next two bytes along (half of the escaped space), so no "\xE2\x96\x81h" merge follows. */
    EXPECT_IDS(v, "\xE9 h", 0, 0, S_SP, S_BYTE0 + 0xE9, S_BYTE0 + 0xE2, S_BYTE0 + 0x96, S_BYTE0 + 0x81, S_H);
    /* <unk> prints nothing, as llama_token_to_piece without special gives it */
    static const int32_t ids[] = { S_SP, S_BYTE0 + 0xC3, S_BYTE0 + 0xA9, S_UNK };
    expect_detok(v, ids, N_OF(ids), "\xC3\xA9", 2);
    eng_vocab_free(v);

    /* Without byte tokens, each byte of an unknown character becomes <unk>. */
    struct vb b;
    memset(&b, 0, sizeof b);
    vb_add(&b, "<unk>", 0, ENG_TOKTYPE_UNKNOWN);
    vb_add(&b, "\xE2\x96\x81", -1, ENG_TOKTYPE_NORMAL);
    vb_add(&b, "a", -1, ENG_TOKTYPE_NORMAL);
    eng_vocab_desc d = vb_desc(&b, ENG_VOCAB_SPM);
    d.unk_id = 0;
    d.add_space_prefix = 1;
    v = create_ok(&d);
    EXPECT_IDS(v, "a\xC3\xA9", 0, 0, 1, 2, 0, 0);
    eng_vocab_free(v);

    /* ... and with neither, tokenizing it is a clear error. */
    d.unk_id = -1;
    v = create_ok(&d);
    int32_t *out;
    size_t n;
    char err[256] = "";
    assert_int_equal(eng_vocab_tokenize(v, "\xC3\xA9", 2, 0, 0, &out, &n, err, sizeof err), ENG_ERR_RANGE);
    assert_non_null(strstr(err, "0xC3"));
    assert_null(out);
    eng_vocab_free(v);
}

static void test_spm_special(void **state)
{
    (void)state;
    struct eng_vocab *v = spm_vocab(1);
    /* parse_special: the control token splits the text, and like llama.cpp the text after it
     * gets its own space prefix. */
    EXPECT_IDS(v, "hello</s>world", 0, 1, S_SP_H, S_E, S_LLO, S_EOS, S_SP_WORLD);
    /* Without it the marker is plain text: "<", "/", "s", ">" are bytes here. */
    EXPECT_IDS(v, "</s>", 0, 0, S_SP, S_BYTE0 + '<', S_BYTE0 + '/', S_BYTE0 + 's', S_BYTE0 + '>');
    /* A user-defined token splits the text even without parse_special, and the text after it
     * gets a space prefix too, so it detokenizes with one space more than it had. llama.cpp
     * does the same: tests/cli/llamacpp_tokenize.sh holds our ids to libllama's on a kvsynth
     * vocabulary with a user-defined token, and its detokenizer drops only the first token's
     * leading space. */
    EXPECT_IDS(v, "hello<tool>world", 0, 0, S_SP_H, S_E, S_LLO, S_TOOL, S_SP_WORLD);
    static const int32_t tool_ids[] = {S_SP_H, S_E, S_LLO, S_TOOL, S_SP_WORLD};
    expect_detok(v, tool_ids, N_OF(tool_ids), "hello<tool> world", 17);
    EXPECT_IDS(v, "<tool>", 0, 0, S_TOOL);
    assert_true(eng_vocab_is_eog(v, S_EOS));
    assert_false(eng_vocab_is_eog(v, S_BOS));
    assert_false(eng_vocab_is_eog(v, -1));
    assert_false(eng_vocab_is_eog(v, 100000));
    eng_vocab_free(v);
}

/* ---- byte-level BPE ---- */

enum {
    B_HE = 256, B_LL, B_GW, B_OR, B_HELL, B_HELLO, B_GWOR, B_LD, B_GWORLD, B_BC, B_AB,
    B_A_C3, B_A9_B, B_EOT_TEXT, B_IM_END, B_XYZ, B_USER, B_END, B_N_TOKENS
};

static struct vb g_bpe;

static struct eng_vocab *bpe_vocab(const char *pre)
{
    struct vb *b = &g_bpe;
    memset(b, 0, sizeof *b);
    for (unsigned i = 0; i < 256; i++) { /* id = byte value */
        gpt2_byte_utf8(i, b->bytes[i]);
        vb_add(b, b->bytes[i], 0, ENG_TOKTYPE_NORMAL);
    }
    /* Ġ = U+0120 stands for ' ', Ã = U+00C3 and © = U+00A9 for the bytes of é. */
    static const char *const merged[] = {
        "he", "ll", "\xC4\xA0w", "or", "hell", "hello", "\xC4\xA0wor", "ld", "\xC4\xA0world", "bc", "ab",
        "a\xC3\x83", "\xC2\xA9\x62",
    };
    static const char *const merges[] = {
        "h e", "l l", "\xC4\xA0 w", "o r", "he ll", "hell o", "\xC4\xA0w or", "l d", "\xC4\xA0wor ld",
        "b c", "a b", "a \xC3\x83", "\xC2\xA9 b",
    };
    for (size_t i = 0; i < N_OF(merged); i++)
        vb_add(b, merged[i], 0, ENG_TOKTYPE_NORMAL);
    for (size_t i = 0; i < N_OF(merges); i++)
        b->merges[b->n_merges++] = merges[i];
    vb_add(b, "<|endoftext|>", 0, ENG_TOKTYPE_CONTROL);
    vb_add(b, "<|im_end|>", 0, ENG_TOKTYPE_CONTROL);
    vb_add(b, "xyz", 0, ENG_TOKTYPE_NORMAL); /* reachable by no merge */
    vb_add(b, "<tool>", 0, ENG_TOKTYPE_USER_DEFINED);
    vb_add(b, "<|end|>", 0, ENG_TOKTYPE_NORMAL); /* typed wrong, as some conversions do */
    assert_int_equal(b->n, B_N_TOKENS);
    eng_vocab_desc d = vb_desc(b, ENG_VOCAB_BPE);
    d.pre = pre;
    d.eos_id = B_EOT_TEXT;
    d.scores = NULL;
    return create_ok(&d);
}

static void test_bpe_merges(void **state)
{
    (void)state;
    struct eng_vocab *v = bpe_vocab("default");
    /* "hello" -> he(0) -> ll(1) -> hell(4) -> hello(5); " world" (Ġworld) -> Ġw(2) -> or(3)
     * -> Ġwor(6) -> ld(7) -> Ġworld(8). */
    EXPECT_IDS(v, "hello world", 0, 0, B_HELLO, B_GWORLD);
    EXPECT_IDS(v, "hell", 0, 0, B_HELL);
    EXPECT_IDS(v, "lol", 0, 0, 'l', 'o', 'l');
    /* Rank decides, not position: "b c" (9) beats "a b" (10). */
    EXPECT_IDS(v, "abc", 0, 0, 'a', B_BC);
    EXPECT_IDS(v, "ab", 0, 0, B_AB);
    /* Pre-tokens "hello" " " " hello": merges never cross a boundary, and in "Ġhello" no merge
     * takes the Ġ, so it stays the byte token of ' ' (id 32). */
    EXPECT_IDS(v, "hello  hello", 0, 0, B_HELLO, ' ', ' ', B_HELLO);
    eng_vocab_free(v);
}

static void test_bpe_bytes_and_special(void **state)
{
    (void)state;
    struct eng_vocab *v = bpe_vocab("default");
    /* é is one letter, so "aéb" is one pre-token; a+Ã (11) and ©+b (12) merge. */
    EXPECT_IDS(v, "a\xC3\xA9\x62", 0, 0, B_A_C3, B_A9_B);
    /* NUL is a byte like any other; bytes that are not UTF-8 become U+FFFD (EF BF BD) and an
     * overlong form its shortest encoding, as llama.cpp's lenient decoder reads them. */
    {
        static const int32_t exp[] = { 0xEF, 0xBF, 0xBD, 0xEF, 0xBF, 0xBD, 0, 'a' };
        expect_ids(v, "\xFF\xFE\0a", 4, 0, 0, exp, N_OF(exp));
        static const int32_t exp2[] = { 0, 'a', 0xED, 0xA0, 0x80 }; /* C0 80 is U+0000; a surrogate stays */
        expect_ids(v, "\xC0\x80\x61\xED\xA0\x80", 6, 0, 0, exp2, N_OF(exp2));
        int32_t *out;
        size_t n;
        char err[256] = "";
        assert_int_equal(eng_vocab_tokenize(v, "a\xF4\x90\x80\x80", 5, 0, 0, &out, &n, err, sizeof err),
                         ENG_ERR_RANGE); /* U+110000: llama.cpp aborts on it */
        assert_non_null(strstr(err, "U+110000"));
    }
    EXPECT_IDS(v, "hi<|endoftext|>", 0, 1, 'h', 'i', B_EOT_TEXT);
    /* Without parse_special: "hi" "<|" "endoftext" "|>" as bytes (no merge applies). */
    EXPECT_IDS(v, "hi<|endoftext|>", 0, 0, 'h', 'i', '<', '|', 'e', 'n', 'd', 'o', 'f', 't', 'e', 'x',
               't', '|', '>');
    EXPECT_IDS(v, "<tool>hello<|im_end|>", 0, 1, B_USER, B_HELLO, B_IM_END);
    /* User-defined tokens match even without special-token parsing (llama.cpp); control ones not. */
    EXPECT_IDS(v, "<tool>hello<|im_end|>", 0, 0, B_USER, B_HELLO, '<', '|', 'i', 'm', '_', 'e', 'n', 'd', '|',
               '>');
    /* "<|end|>" ends generation in llama.cpp whatever its type says: a control token here too. */
    assert_int_equal(eng_vocab_token_type(v, B_END), ENG_TOKTYPE_CONTROL);
    assert_true(eng_vocab_is_eog(v, B_END));
    EXPECT_IDS(v, "x<|end|>", 0, 1, 'x', B_END);
    /* The whole-word shortcut belongs to llama3 only. */
    EXPECT_IDS(v, "xyz", 0, 0, 'x', 'y', 'z');
    assert_true(eng_vocab_is_eog(v, B_EOT_TEXT));
    assert_true(eng_vocab_is_eog(v, B_IM_END));
    assert_false(eng_vocab_is_eog(v, B_USER));
    /* Control tokens print nothing, user-defined ones their text. */
    static const int32_t ids[] = { B_USER, B_HELLO, B_GWORLD, B_IM_END, 0xFF };
    expect_detok(v, ids, N_OF(ids), "<tool>hello world\xFF", 18);
    eng_vocab_free(v);

    /* Phi-3: white space after a special token is dropped, except after <|endoftext|>. */
    eng_vocab_desc d = vb_desc(&g_bpe, ENG_VOCAB_BPE);
    d.pre = "default";
    d.scores = NULL;
    d.rstrip_special = 1;
    v = create_ok(&d);
    EXPECT_IDS(v, "<|im_end|> \n hello", 0, 1, B_IM_END, B_HELLO);
    EXPECT_IDS(v, "<|endoftext|> hello", 0, 1, B_EOT_TEXT, 0x20, B_HELLO);
    eng_vocab_free(v);

    v = bpe_vocab("llama-bpe");
    EXPECT_IDS(v, "xyz", 0, 0, B_XYZ);
    EXPECT_IDS(v, "hello world", 0, 0, B_HELLO, B_GWORLD);
    eng_vocab_free(v);
}

/* ---- pre-tokenizers ---- */

static void expect_split(eng_pretok kind, const char *text, const char *const *exp)
{
    size_t len = strlen(text);
    size_t ends[256];
    assert_true(len <= N_OF(ends));
    size_t n = eng_pretok_split(kind, text, len, ends, N_OF(ends));
    size_t n_exp = 0;
    while (exp[n_exp])
        n_exp++;
    char msg[1024] = "";
    size_t o = 0;
    for (size_t i = 0, p = 0; i < n && o < sizeof msg - 64; p = ends[i++])
        o += (size_t)snprintf(msg + o, sizeof msg - o, "[%.*s]", (int)(ends[i] - p), text + p);
    if (n != n_exp)
        fail_msg("split(%d) of \"%s\": got %zu pieces %s, want %zu", (int)kind, text, n, msg, n_exp);
    for (size_t i = 0, p = 0; i < n; p = ends[i++]) {
        if (ends[i] - p != strlen(exp[i]) || memcmp(text + p, exp[i], ends[i] - p) != 0)
            fail_msg("split(%d) of \"%s\": piece %zu: got %s, want [%s]", (int)kind, text, i, msg, exp[i]);
    }
}

#define SPLIT(kind, text, ...) expect_split((kind), (text), (const char *const[]){ __VA_ARGS__, NULL })

static void test_pretok_llama3_qwen2(void **state)
{
    (void)state;
    const eng_pretok L = ENG_PRETOK_LLAMA3, Q = ENG_PRETOK_QWEN2, G = ENG_PRETOK_GPT2;
    SPLIT(L, "12345", "123", "45");
    SPLIT(Q, "12345", "1", "2", "3", "4", "5");
    SPLIT(G, "12345", "12345");
    SPLIT(L, "x1234567", "x", "123", "456", "7");
    SPLIT(L, "abc123def", "abc", "123", "def");
    SPLIT(Q, "abc123def", "abc", "1", "2", "3", "def");
    SPLIT(G, "abc123def", "abc", "123", "def");
    SPLIT(L, "I'll don't", "I", "'ll", " don", "'t");
    SPLIT(Q, "I'll don't", "I", "'ll", " don", "'t");
    SPLIT(G, "I'll don't", "I", "'ll", " don", "'t");
    /* Contractions are case-insensitive in llama3/qwen2 only. */
    SPLIT(L, "I'LL WE'RE", "I", "'LL", " WE", "'RE");
    SPLIT(G, "I'LL", "I", "'", "LL");
    SPLIT(L, "hello!!! ...", "hello", "!!!", " ...");
    SPLIT(G, "hello!!! ...", "hello", "!!!", " ...");
    /* A space run gives its last space to the next word; newlines end their own piece. */
    SPLIT(L, "a   b\n\n c", "a", "  ", " b", "\n\n", " c");
    SPLIT(Q, "a   b\n\n c", "a", "  ", " b", "\n\n", " c");
    SPLIT(G, "a   b\n\n c", "a", "  ", " b", "\n\n", " c");
    /* Punctuation keeps the newlines after it in llama3; GPT-2 splits the run. */
    SPLIT(L, "!\n\nfoo", "!\n\n", "foo");
    SPLIT(G, "!\n\nfoo", "!", "\n", "\n", "foo");
    SPLIT(L, "\n\nfoo", "\n\n", "foo");
    SPLIT(L, "  \tfoo", "  ", "\tfoo");
    SPLIT(L, "x \n y", "x", " \n", " y");
    SPLIT(L, "end  ", "end", "  ");
    SPLIT(L, "a\r\nb", "a", "\r\n", "b");
    SPLIT(L, "(x)", "(x", ")");
    SPLIT(G, "(x)", "(", "x", ")");
    SPLIT(L, "naïve café 日本語 Привет мир", "naïve", " café", " 日本語", " Привет", " мир");
    SPLIT(G, "naïve café 日本語 Привет мир", "naïve", " café", " 日本語", " Привет", " мир");
    SPLIT(L, "مرحبا بالعالم", "مرحبا", " بالعالم");
    SPLIT(L, "한국어 Ελληνικά", "한국어", " Ελληνικά");
    /* Marks are not letters: a combining acute starts a new piece before the next letter. */
    SPLIT(L, "e\xCC\x81x", "e", "\xCC\x81x");
    SPLIT(L, "नमस्ते", "नमस", "्त", "े");
    /* Arabic-Indic digits are \p{N}. */
    SPLIT(L, "٣٤٥٦", "٣٤٥", "٦");
    SPLIT(Q, "٣٤٥", "٣", "٤", "٥");
    /* NO-BREAK SPACE is white space and, like ' ', prefixes a word. */
    SPLIT(L, "a\xC2\xA0\x62", "a", "\xC2\xA0\x62");
    SPLIT(L, "😀😀 ok", "😀😀", " ok");
    /* Invalid bytes count as punctuation-like characters. */
    SPLIT(L, "a\xFF\xFE\x62", "a", "\xFF\xFE", "b");
    SPLIT(L, "\xFF\x61\x62\x63", "\xFF\x61\x62\x63");
}

/* The splitters llama.cpp runs as lists of regexes; expected pieces worked out by hand from
 * llama-vocab.cpp's regex lists (each regex splits the pieces the one before left). */
static void test_pretok_regex_lists(void **state)
{
    (void)state;
    const eng_pretok D = ENG_PRETOK_DEFAULT, F = ENG_PRETOK_FALCON, S = ENG_PRETOK_STARCODER;
    /* punctuation first (contractions break), then GPT-2, then numbers, then groups of three */
    SPLIT(D, "don't stop 12345 now!!", "don", "'", "t", " stop", " ", "123", "45", " now", "!!");
    SPLIT(D, "x $5", "x", " ", "$", "5");
    SPLIT(D, "a `b", "a", " `", "b");      /* the backtick is not in the default's set */
    SPLIT(F, "a `b", "a", " ", "`", "b");  /* but is in falcon's */
    SPLIT(F, "1234567", "123", "456", "7"); /* falcon has no \p{N}+ step */
    SPLIT(D, "\xE3\x80\x81\xE3\x80\x81x", "\xE3\x80\x81\xE3\x80\x81", "x"); /* U+3001 is \p{P} */
    SPLIT(S, "ab12 c3", "ab", "1", "2", " c", "3"); /* every digit alone, then GPT-2 */
    SPLIT(D, " \xF0\x9F\x98\x80 \xF0\x9F\x98\x80", " \xF0\x9F\x98\x80", " \xF0\x9F\x98\x80"); /* U+1F600 is \p{S} */
    SPLIT(D, "", NULL);
}

static void test_pretok_names(void **state)
{
    (void)state;
    eng_pretok k;
    assert_true(eng_pretok_from_name("llama-bpe", 9, &k));
    assert_int_equal(k, ENG_PRETOK_LLAMA3);
    assert_true(eng_pretok_from_name("qwen2", 5, &k));
    assert_int_equal(k, ENG_PRETOK_QWEN2);
    assert_true(eng_pretok_from_name("default", 7, &k));
    assert_int_equal(k, ENG_PRETOK_DEFAULT); /* llama.cpp's own splitter, not GPT-2's */
    assert_true(eng_pretok_from_name("gpt-2", 5, &k));
    assert_int_equal(k, ENG_PRETOK_GPT2);
    assert_true(eng_pretok_from_name("mpt", 3, &k));
    assert_int_equal(k, ENG_PRETOK_GPT2);
    assert_true(eng_pretok_from_name("falcon", 6, &k));
    assert_int_equal(k, ENG_PRETOK_FALCON);
    assert_true(eng_pretok_from_name("command-r", 9, &k));
    assert_int_equal(k, ENG_PRETOK_STARCODER);
    assert_true(eng_pretok_from_name("falcon3", 7, &k));
    assert_int_equal(k, ENG_PRETOK_LLAMA3);
    assert_true(eng_pretok_adds_bos(ENG_PRETOK_LLAMA3));
    assert_false(eng_pretok_adds_bos(ENG_PRETOK_QWEN2));
    assert_false(eng_pretok_adds_bos(ENG_PRETOK_DEFAULT));
    assert_false(eng_pretok_from_name("qwen", 4, &k));
    assert_false(eng_pretok_from_name("deepseek-llm", 12, &k));
}

static void test_unicode(void **state)
{
    (void)state;
    uint32_t cp = 0;
    assert_int_equal(eng_utf8_decode((const unsigned char *)"\xC3\xA9", 2, &cp), 2);
    assert_int_equal(cp, 0xE9);
    assert_int_equal(eng_utf8_decode((const unsigned char *)"\xF0\x9F\x98\x80", 4, &cp), 4);
    assert_int_equal(cp, 0x1F600);
    assert_int_equal(eng_utf8_decode((const unsigned char *)"\xC0\x80", 2, &cp), 0);      /* overlong */
    assert_int_equal(eng_utf8_decode((const unsigned char *)"\xE0\x80\x80", 3, &cp), 0);  /* overlong */
    assert_int_equal(eng_utf8_decode((const unsigned char *)"\xED\xA0\x80", 3, &cp), 0);  /* surrogate */
    assert_int_equal(eng_utf8_decode((const unsigned char *)"\xF4\x90\x80\x80", 4, &cp), 0); /* > 10FFFF */
    assert_int_equal(eng_utf8_decode((const unsigned char *)"\xE2\x82", 2, &cp), 0);      /* truncated */
    assert_int_equal(eng_utf8_decode((const unsigned char *)"\x80", 1, &cp), 0);
    char buf[4];
    assert_int_equal(eng_utf8_encode(0x20AC, buf), 3);
    assert_memory_equal(buf, "\xE2\x82\xAC", 3);
    static const struct { uint32_t cp; int cat; } cats[] = {
        { 'a', ENG_UCAT_LETTER }, { 'Z', ENG_UCAT_LETTER }, { '7', ENG_UCAT_NUMBER },
        { '_', ENG_UCAT_PUNCT }, { '\'', ENG_UCAT_PUNCT }, { '$', ENG_UCAT_OTHER }, { '`', ENG_UCAT_OTHER },
        { 0x3001, ENG_UCAT_PUNCT },  /* 、 (Po) */
        { 0x2014, ENG_UCAT_PUNCT },  /* em dash (Pd) */
        { 0x2EBF0, ENG_UCAT_LETTER }, /* CJK extension I: new in Unicode 15.1 */
        { 0x11F50, ENG_UCAT_NUMBER }, /* Kawi digit zero: new in Unicode 15.0 */
        { 0x1E4F0, ENG_UCAT_NUMBER }, /* Nag Mundari digit zero: new in Unicode 15.0 */
        { 0xE9, ENG_UCAT_LETTER },   /* é */
        { 0x3B1, ENG_UCAT_LETTER },  /* α */
        { 0x416, ENG_UCAT_LETTER },  /* Ж */
        { 0x5D0, ENG_UCAT_LETTER },  /* א */
        { 0x628, ENG_UCAT_LETTER },  /* ب */
        { 0x915, ENG_UCAT_LETTER },  /* क */
        { 0x93F, ENG_UCAT_MARK },    /* ि (spacing mark) */
        { 0x4E2D, ENG_UCAT_LETTER }, /* 中 */
        { 0xD55C, ENG_UCAT_LETTER }, /* 한 */
        { 0x3042, ENG_UCAT_LETTER }, /* あ */
        { 0x20000, ENG_UCAT_LETTER }, /* CJK extension B */
        { 0x663, ENG_UCAT_NUMBER },  /* ٣ */
        { 0x967, ENG_UCAT_NUMBER },  /* १ */
        { 0xFF11, ENG_UCAT_NUMBER }, /* fullwidth 1 */
        { 0x216B, ENG_UCAT_NUMBER }, /* Roman numeral twelve (Nl) */
        { 0xBD, ENG_UCAT_NUMBER },   /* ½ (No) */
        { 0x301, ENG_UCAT_MARK },    /* combining acute */
        { 0x1F600, ENG_UCAT_OTHER }, /* 😀 */
        { 0x3000, ENG_UCAT_OTHER },
        { 0x10FFFF, ENG_UCAT_OTHER },
    };
    for (size_t i = 0; i < N_OF(cats); i++)
        if (eng_unicode_category(cats[i].cp) != cats[i].cat)
            fail_msg("category of U+%04X: got %d, want %d", cats[i].cp, eng_unicode_category(cats[i].cp),
                     cats[i].cat);
    assert_true(eng_unicode_is_space(' '));
    assert_true(eng_unicode_is_space('\t'));
    assert_true(eng_unicode_is_space(0xA0));
    assert_true(eng_unicode_is_space(0x3000));
    assert_true(eng_unicode_is_space(0x2009));
    assert_false(eng_unicode_is_space(0x200B)); /* zero width space is not White_Space */
    assert_false(eng_unicode_is_space('x'));
}

/* ---- round trips and streaming ---- */

static const struct { const char *s; size_t n; } corpus[] = {
#define C(x) { x, sizeof(x) - 1 }
    C("The quick brown fox jumps over the lazy dog. It's 3:45pm, isn't it?"),
    C(" leading space and trailing   "),
    C("  two leading spaces"),
    C("int main(void)\n{\n\tint  x =  42;\t// tabs\tand  spaces\n\treturn x;\n}\n"),
    C("日本語のテキストと中文文本，还有한국어."),
    C("emoji 😀👍🏽 and flags 🇫🇷 and ZWJ 👩‍💻"),
    C("مرحبا بالعالم — עברית — नमस्ते दुनिया"),
    C("combining: e\xCC\x81 a\xCC\x8A n\xCC\x83 and precomposed é å ñ"),
    C("Привет, мир! Ελληνικά. 1234567890 ٣٤٥"),
    C("\n\n\r\n \t \n"),
    C("hello world"),
    C("lll hello!!! ..."),
    C("nul\0inside"),
    C("x"),
};

/* Text that is not UTF-8, and what it comes back as, as in llama.cpp: SentencePiece takes a
 * character's length from its lead byte, so \xFE swallows the first bytes of the escaped space
 * after it; byte-level BPE decodes leniently (U+FFFD per rejected byte, overlong forms
 * shortened, surrogates kept). */
static const struct { const char *s, *spm, *bpe; size_t n, spm_n, bpe_n; } invalid_utf8[] = {
#define C3(a, b, c) { a, b, c, sizeof a - 1, sizeof b - 1, sizeof c - 1 }
    C3("\xFF\xFE bad bytes \x80 here", "\xFF\xFE\xE2\x96\x81" "bad bytes \x80 here",
       "\xEF\xBF\xBD\xEF\xBF\xBD bad bytes \xEF\xBF\xBD here"),
    C3("truncated \xE2\x82", "truncated \xE2\x82", "truncated \xEF\xBF\xBD\xEF\xBF\xBD"),
    C3("\xC0\x80 overlong and \xED\xA0\x80 surrogate", "\xC0\x80 overlong and \xED\xA0\x80 surrogate",
       "\0 overlong and \xED\xA0\x80 surrogate"),
#undef C3
#undef C
};

/* Tokenizes s and detokenizes the ids, whole and streaming: the result must be want. */
static void round_trip_to(const struct eng_vocab *v, const char *s, size_t n, const char *want, size_t want_n)
{
    int32_t *ids = NULL;
    size_t nt = 0;
    char err[256] = "";
    if (eng_vocab_tokenize(v, s, n, 0, 0, &ids, &nt, err, sizeof err) != ENG_OK)
        fail_msg("tokenize: %s", err);
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(eng_vocab_detokenize(v, ids, nt, 1, &out, &len), ENG_OK);
    if (len != want_n || memcmp(out, want, want_n) != 0)
        fail_msg("round trip (%s) of \"%.*s\" gave \"%s\"", eng_vocab_get_kind(v) == ENG_VOCAB_SPM ? "spm" : "bpe", (int)n, s, out);

    /* Streaming: every push is complete UTF-8 (unless the input itself is not), and the
     * concatenation equals the whole-sequence result. */
    eng_detok *d = eng_vocab_detok_create(v, 1);
    assert_non_null(d);
    char *cat = malloc(want_n + 1);
    size_t o = 0;
    for (size_t i = 0; i < nt; i++) {
        size_t l;
        const char *p = eng_detok_push(d, ids[i], &l);
        assert_true(o + l <= want_n);
        memcpy(cat + o, p, l);
        o += l;
    }
    size_t l;
    const char *p = eng_detok_flush(d, &l);
    assert_true(o + l <= want_n);
    memcpy(cat + o, p, l);
    o += l;
    assert_int_equal(o, want_n);
    assert_memory_equal(cat, want, want_n);
    free(cat);
    eng_detok_free(d);
    free(out);
    free(ids);
}

static void round_trip(const struct eng_vocab *v, const char *s, size_t n)
{
    round_trip_to(v, s, n, s, n);
}

static void test_round_trip(void **state)
{
    (void)state;
    struct eng_vocab *spm = spm_vocab(1);
    struct eng_vocab *spm0 = spm_vocab(0);
    struct eng_vocab *bpe[3] = { bpe_vocab("default"), bpe_vocab("llama-bpe"), bpe_vocab("qwen2") };
    for (size_t i = 0; i < N_OF(corpus); i++) {
        round_trip(spm, corpus[i].s, corpus[i].n);
        round_trip(spm0, corpus[i].s, corpus[i].n);
        for (int k = 0; k < 3; k++)
            round_trip(bpe[k], corpus[i].s, corpus[i].n);
    }
    for (size_t i = 0; i < N_OF(invalid_utf8); i++) {
        round_trip_to(spm, invalid_utf8[i].s, invalid_utf8[i].n, invalid_utf8[i].spm, invalid_utf8[i].spm_n);
        for (int k = 0; k < 3; k++)
            round_trip_to(bpe[k], invalid_utf8[i].s, invalid_utf8[i].n, invalid_utf8[i].bpe, invalid_utf8[i].bpe_n);
    }
    eng_vocab_free(spm);
    eng_vocab_free(spm0);
    for (int k = 0; k < 3; k++)
        eng_vocab_free(bpe[k]);
}

static void push_expect(eng_detok *d, int32_t id, const char *want)
{
    size_t l;
    const char *p = eng_detok_push(d, id, &l);
    if (l != strlen(want) || memcmp(p, want, l) != 0)
        fail_msg("push %d: got \"%.*s\" (%zu bytes), want \"%s\"", id, (int)l, p, l, want);
}

/* Generated text continues a prompt: each token prints its piece as llama_token_to_piece gives
 * it (what llama-server streams), so the first one keeps its leading space; strip_first is for
 * a whole text, from its first token, as llama_detokenize takes it. */
static void test_detok_pieces(void **state)
{
    (void)state;
    struct eng_vocab *v = spm_vocab(1);
    eng_detok *d = eng_vocab_detok_create(v, 0);
    push_expect(d, S_SP_WORLD, " world");
    push_expect(d, S_SP_H, " h");
    eng_detok_free(d);
    d = eng_vocab_detok_create(v, 1);
    push_expect(d, S_SP_WORLD, "world");
    push_expect(d, S_SP_H, " h");
    eng_detok_free(d);
    char *s = NULL;
    size_t len = 0;
    static const int32_t hello[] = { S_SP_H, S_E, S_LLO };
    assert_int_equal(eng_vocab_detokenize(v, hello, N_OF(hello), 0, &s, &len), ENG_OK);
    assert_int_equal(len, 6);
    assert_memory_equal(s, " hello", 6);
    free(s);
    size_t l = 99;
    const char *p = eng_vocab_piece(v, S_SP_WORLD, &l);
    assert_int_equal(l, 6);
    assert_memory_equal(p, " world", 6);
    assert_non_null(eng_vocab_piece(v, S_UNK, &l)); /* control and unknown: no bytes */
    assert_int_equal(l, 0);
    assert_non_null(eng_vocab_piece(v, S_BOS, &l));
    assert_int_equal(l, 0);
    assert_null(eng_vocab_piece(v, -1, &l));
    assert_null(eng_vocab_piece(v, 100000, &l));
    assert_int_equal(l, 0);
    eng_vocab_free(v);
}

/* A byte-level BPE character outside the GPT-2 byte map prints as llama.cpp's
 * llama_decode_text prints it: "[UNK_BYTE_0x" + its UTF-8 in hex + the whole token text + "]",
 * so a piece can be much longer than its text; pieces past the arena's bound are refused. */
static void test_detok_unmapped(void **state)
{
    (void)state;
    static const char *const toks[] = { "a", "\xE4\xB8\xAD", "a\xE4\xB8\xAD" }; /* U+4E2D */
    eng_vocab_desc d;
    memset(&d, 0, sizeof d);
    d.kind = ENG_VOCAB_BPE;
    d.n_tokens = 3;
    d.tokens = toks;
    d.bos_id = d.eos_id = d.unk_id = d.eot_id = -1;
    struct eng_vocab *v = create_ok(&d);
    size_t l;
    const char *p = eng_vocab_piece(v, 1, &l);
    assert_int_equal(l, strlen("[UNK_BYTE_0xe4b8ad\xE4\xB8\xAD]"));
    assert_memory_equal(p, "[UNK_BYTE_0xe4b8ad\xE4\xB8\xAD]", l);
    p = eng_vocab_piece(v, 2, &l);
    assert_int_equal(l, strlen("a[UNK_BYTE_0xe4b8ada\xE4\xB8\xAD]"));
    assert_memory_equal(p, "a[UNK_BYTE_0xe4b8ada\xE4\xB8\xAD]", l);
    eng_vocab_free(v);

    /* one 65535-byte token of 21845 such characters: 21845 pieces of its whole text, 1.4 GB */
    enum { N_CH = ENG_VOCAB_MAX_TOKEN_BYTES / 3 };
    char *big = malloc(3 * N_CH + 1);
    for (int i = 0; i < N_CH; i++)
        memcpy(big + 3 * i, "\xE4\xB8\xAD", 3);
    big[3 * N_CH] = 0;
    const char *btoks[] = { "a", big };
    d.n_tokens = 2;
    d.tokens = btoks;
    char err[256] = "";
    v = NULL;
    assert_int_equal(eng_vocab_create(&d, &v, err, sizeof err), ENG_ERR_FORMAT);
    assert_null(v);
    assert_non_null(strstr(err, "token pieces exceed"));
    free(big);
}

static void test_detok_stream(void **state)
{
    (void)state;
    struct eng_vocab *v = spm_vocab(1);
    eng_detok *d = eng_vocab_detok_create(v, 1);
    assert_non_null(d);
    push_expect(d, S_BOS, "");
    push_expect(d, S_SP, " "); /* after BOS the space prefix stays, as in llama_detokenize */
    push_expect(d, S_BYTE0 + 0xC3, "");
    push_expect(d, S_BYTE0 + 0xA9, "\xC3\xA9");
    push_expect(d, S_BYTE0 + 0xF0, "");
    push_expect(d, S_BYTE0 + 0x9F, "");
    push_expect(d, S_BYTE0 + 0x98, "");
    push_expect(d, S_BYTE0 + 0x80, "\xF0\x9F\x98\x80");
    push_expect(d, S_SP_WORLD, " world");
    push_expect(d, S_BYTE0 + 0xE2, "");
    push_expect(d, S_SP_H, "\xE2 h"); /* not a continuation: the held byte goes out as is */
    push_expect(d, S_BYTE0 + 0xFF, "\xFF");
    push_expect(d, 99999, "");        /* out of range: ignored */
    push_expect(d, S_BYTE0 + 0xE2, "");
    push_expect(d, S_BYTE0 + 0x82, "");
    size_t l;
    const char *p = eng_detok_flush(d, &l);
    assert_int_equal(l, 2);
    assert_memory_equal(p, "\xE2\x82", 2);
    eng_detok_flush(d, &l);
    assert_int_equal(l, 0);
    eng_detok_free(d);
    eng_detok_free(NULL);
    eng_vocab_free(v);

    /* BPE pieces that end and start inside one character. */
    v = bpe_vocab("default");
    d = eng_vocab_detok_create(v, 0);
    push_expect(d, B_A_C3, "a");
    push_expect(d, B_A9_B, "\xC3\xA9\x62");
    push_expect(d, B_HELLO, "hello");
    eng_detok_free(d);
    eng_vocab_free(v);
}

/* ---- add_bos / add_eos, accessors ---- */

static void test_policy(void **state)
{
    (void)state;
    struct vb *b = &g_bpe;
    struct eng_vocab *v = bpe_vocab("qwen2");
    eng_vocab_free(v);
    eng_vocab_desc d = vb_desc(b, ENG_VOCAB_BPE);
    d.pre = "qwen2";
    d.bos_id = B_IM_END;
    d.eos_id = B_EOT_TEXT;
    d.eot_id = B_XYZ;
    d.add_bos = 1;
    d.add_eos = 1;
    v = create_ok(&d);
    EXPECT_IDS(v, "hello", 1, 0, B_IM_END, B_HELLO, B_EOT_TEXT);
    EXPECT_IDS(v, "hello", 0, 0, B_HELLO);
    assert_true(eng_vocab_is_eog(v, B_XYZ));
    assert_int_equal(eng_vocab_bos(v), B_IM_END);
    assert_int_equal(eng_vocab_eos(v), B_EOT_TEXT);
    assert_int_equal(eng_vocab_n_tokens(v), B_N_TOKENS);
    assert_int_equal(eng_vocab_get_kind(v), ENG_VOCAB_BPE);
    size_t len;
    const char *t = eng_vocab_token_text(v, B_HE, &len);
    assert_int_equal(len, 2);
    assert_memory_equal(t, "he", 2);
    assert_null(eng_vocab_token_text(v, B_N_TOKENS, &len));
    assert_int_equal(eng_vocab_token_type(v, B_IM_END), ENG_TOKTYPE_CONTROL);
    assert_int_equal(eng_vocab_token_type(v, -1), -1);
    char *s = NULL;
    static const int32_t bad[] = { B_HE, B_N_TOKENS };
    assert_int_equal(eng_vocab_detokenize(v, bad, 2, 0, &s, NULL), ENG_ERR_RANGE);
    assert_null(s);
    eng_vocab_free(v);
    eng_vocab_free(NULL);
}

/* ---- malformed descriptions ---- */

static void expect_create_fails(const eng_vocab_desc *d, eng_status want, const char *needle)
{
    struct eng_vocab *v = (struct eng_vocab *)1;
    char err[256] = "";
    eng_status st = eng_vocab_create(d, &v, err, sizeof err);
    if (st != want)
        fail_msg("eng_vocab_create: got status %d (%s), want %d", st, err, want);
    assert_null(v);
    if (!strstr(err, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", err, needle);
}

static void test_malformed(void **state)
{
    (void)state;
    struct vb *b = &g_bpe;
    eng_vocab_free(bpe_vocab("default")); /* fills g_bpe */
    eng_vocab_desc good = vb_desc(b, ENG_VOCAB_BPE);
    good.scores = NULL;

    eng_vocab_desc d = good;
    const char *merges[] = { "h e", "h zz" };
    d.merges = merges;
    d.n_merges = 2;
    expect_create_fails(&d, ENG_ERR_FORMAT, "merge 1 'h zz' names unknown token 'zz'");
    const char *nospace[] = { "hello" };
    d.merges = nospace;
    d.n_merges = 1;
    expect_create_fails(&d, ENG_ERR_FORMAT, "not two tokens separated by a space");
    const char *trailing[] = { "h " };
    d.merges = trailing;
    expect_create_fails(&d, ENG_ERR_FORMAT, "not two tokens");

    d = good;
    d.scores = b->score;
    d.n_scores = b->n - 1;
    expect_create_fails(&d, ENG_ERR_FORMAT, "mismatch");
    d = good;
    d.n_types = b->n + 1;
    expect_create_fails(&d, ENG_ERR_FORMAT, "mismatch");

    d = good;
    d.bos_id = -7;
    expect_create_fails(&d, ENG_ERR_FORMAT, "bos id -7 is negative");
    d = good;
    d.eos_id = (int32_t)b->n;
    expect_create_fails(&d, ENG_ERR_FORMAT, "eos id 274 out of range");
    d = good;
    d.unk_id = 1 << 30;
    expect_create_fails(&d, ENG_ERR_FORMAT, "unk id");

    d = good;
    d.pre = "deepseek-llm";
    expect_create_fails(&d, ENG_ERR_UNSUPPORTED, "'deepseek-llm'");

    /* two tokens of one text: llama.cpp asserts against such a vocabulary; refused by name */
    d = good;
    const char *dup[B_N_TOKENS];
    memcpy(dup, b->tok, sizeof dup);
    dup[7] = dup[6];
    d.tokens = dup;
    char want[64];
    snprintf(want, sizeof want, "tokens 6 and 7 have the same text (%zu bytes)", strlen(dup[6]));
    expect_create_fails(&d, ENG_ERR_FORMAT, want);

    d = good;
    int32_t types[B_N_TOKENS];
    memcpy(types, b->type, sizeof types);
    types[5] = 9;
    d.types = types;
    expect_create_fails(&d, ENG_ERR_FORMAT, "token 5 has type 9");

    d = good;
    d.n_tokens = 0;
    expect_create_fails(&d, ENG_ERR_FORMAT, "0 tokens");

    d = good;
    const char *toks[] = { "a", NULL };
    d.tokens = toks;
    d.n_tokens = d.n_scores = d.n_types = 2;
    d.types = NULL;
    d.n_merges = 0;
    d.bos_id = d.eos_id = -1;
    expect_create_fails(&d, ENG_ERR_ARG, "token 1 is NULL");

    d = good;
    d.kind = (eng_vocab_kind)7;
    expect_create_fails(&d, ENG_ERR_ARG, "kind");
    expect_create_fails(NULL, ENG_ERR_ARG, "NULL");

    /* Duplicate token texts are refused (llama.cpp asserts against them: its text-to-id map
     * would be smaller than its id-to-text one); a merge listed twice keeps its first rank. */
    const char *dup_toks[] = { "a", "b", "ab", "ab" };
    const char *dup_merges[] = { "a b", "a b" };
    eng_vocab_desc dd;
    memset(&dd, 0, sizeof dd);
    dd.kind = ENG_VOCAB_BPE;
    dd.tokens = dup_toks;
    dd.n_tokens = 4;
    dd.merges = dup_merges;
    dd.n_merges = 2;
    dd.bos_id = dd.eos_id = dd.unk_id = dd.eot_id = -1;
    expect_create_fails(&dd, ENG_ERR_FORMAT, "tokens 2 and 3 have the same text (2 bytes)");
    dd.n_tokens = 3;
    struct eng_vocab *v = create_ok(&dd);
    EXPECT_IDS(v, "abab", 0, 0, 2, 2);
    int32_t *ids;
    size_t n;
    char err[128] = "";
    /* 'c' has no token and there is no unk. */
    assert_int_equal(eng_vocab_tokenize(v, "c", 1, 0, 0, &ids, &n, err, sizeof err), ENG_ERR_RANGE);
    assert_non_null(strstr(err, "0x63"));
    assert_int_equal(eng_vocab_tokenize(v, NULL, 1, 0, 0, &ids, &n, err, sizeof err), ENG_ERR_ARG);
    eng_vocab_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm_hello_world),
        cmocka_unit_test(test_spm_no_space_prefix),
        cmocka_unit_test(test_spm_byte_fallback),
        cmocka_unit_test(test_spm_special),
        cmocka_unit_test(test_bpe_merges),
        cmocka_unit_test(test_bpe_bytes_and_special),
        cmocka_unit_test(test_pretok_llama3_qwen2),
        cmocka_unit_test(test_pretok_regex_lists), cmocka_unit_test(test_pretok_names),
        cmocka_unit_test(test_unicode),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_detok_stream),
        cmocka_unit_test(test_detok_pieces),
        cmocka_unit_test(test_detok_unmapped),
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
