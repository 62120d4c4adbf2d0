/* tokenizer_internal.h: the vocabulary inside engine/: SentencePiece-style (SPM) and GPT-2
 * byte-level BPE tokenizers, detokenizers, the hand-written BPE pre-tokenizers and the
 * UTF-8 / Unicode category helpers they use. engine.h's eng_tokenize etc. wrap these. */
#ifndef KVPUB_TOKENIZER_INTERNAL_H
#define KVPUB_TOKENIZER_INTERNAL_H

#include "engine/engine.h"
#include "engine/gguf.h"

#include <stddef.h>
#include <stdint.h>

struct eng_vocab; /* opaque; defined in engine/tok/tokenizer.c */

/* Token types as GGUF's tokenizer.ggml.token_type stores them (llama.cpp values). */
enum {
    ENG_TOKTYPE_UNDEFINED = 0,
    ENG_TOKTYPE_NORMAL = 1,
    ENG_TOKTYPE_UNKNOWN = 2,
    ENG_TOKTYPE_CONTROL = 3,
    ENG_TOKTYPE_USER_DEFINED = 4,
    ENG_TOKTYPE_UNUSED = 5,
    ENG_TOKTYPE_BYTE = 6,
};

typedef enum eng_vocab_kind {
    ENG_VOCAB_SPM = 1, /* tokenizer.ggml.model = "llama" */
    ENG_VOCAB_BPE = 2, /* tokenizer.ggml.model = "gpt2" (byte-level BPE) */
} eng_vocab_kind;

/* Hard limits on untrusted vocabularies, checked before allocating. */
enum {
    ENG_VOCAB_MAX_TOKENS = 1 << 22,
    ENG_VOCAB_MAX_MERGES = 1 << 22,
    ENG_VOCAB_MAX_TOKEN_BYTES = 1 << 16, /* one token's text */
};

/* In-memory description of a vocabulary; everything is borrowed and copied by
 * eng_vocab_create. Strings are UTF-8; a NULL length array means NUL-terminated strings. */
typedef struct eng_vocab_desc {
    eng_vocab_kind kind;
    const char *pre;            /* BPE pre-tokenizer: "llama-bpe", "qwen2", "default"/"gpt2";
                                 * NULL = "default". Ignored for SPM. */
    size_t n_tokens;
    const char *const *tokens;  /* n_tokens texts (BPE: in byte-to-unicode mapped form) */
    const size_t *token_lens;   /* n_tokens lengths, or NULL */
    const float *scores;        /* n_scores SPM merge scores, or NULL (all 0) */
    size_t n_scores;            /* must equal n_tokens when scores != NULL */
    const int32_t *types;       /* n_types ENG_TOKTYPE_* values, or NULL (all NORMAL) */
    size_t n_types;             /* must equal n_tokens when types != NULL */
    const char *const *merges;  /* BPE: n_merges "left right" strings, rank = index */
    const size_t *merge_lens;   /* n_merges lengths, or NULL */
    size_t n_merges;
    int32_t bos_id, eos_id, unk_id, eot_id; /* -1 = none */
    int add_bos, add_eos;       /* policy applied when tokenizing with add_special */
    int add_space_prefix;       /* SPM: prefix '▁' to the text (and after special tokens) */
} eng_vocab_desc;

/* Builds a vocabulary from d, validating it: counts match, ids in range, every merge names
 * two known tokens, known pre-tokenizer (else ENG_ERR_UNSUPPORTED naming it). On failure *out
 * is NULL and err holds one line. */
eng_status eng_vocab_create(const eng_vocab_desc *d, struct eng_vocab **out,
                            char *err, size_t errlen) ENG_WUR;

/* Builds the vocabulary of a GGUF file from its tokenizer.ggml.* metadata. info may be NULL;
 * when info->n_vocab > 0 the token count may not exceed it (ids must index the embeddings).
 * Errors: ENG_ERR_FORMAT (missing/ill-typed keys, bad ids), ENG_ERR_UNSUPPORTED (model kind or
 * pre-tokenizer we do not implement), ENG_ERR_NOMEM. */
eng_status eng_vocab_from_gguf(const gguf_file *g, const eng_info *info, struct eng_vocab **out,
                               char *err, size_t errlen) ENG_WUR;

void eng_vocab_free(struct eng_vocab *v); /* NULL is a no-op */

eng_vocab_kind eng_vocab_get_kind(const struct eng_vocab *v);
size_t eng_vocab_n_tokens(const struct eng_vocab *v);
/* Token text as stored (not NUL-terminated); NULL when id is out of range. */
const char *eng_vocab_token_text(const struct eng_vocab *v, int32_t id, size_t *len);
int eng_vocab_token_type(const struct eng_vocab *v, int32_t id); /* -1 when out of range */
int32_t eng_vocab_bos(const struct eng_vocab *v);
int32_t eng_vocab_eos(const struct eng_vocab *v);
int eng_vocab_add_bos(const struct eng_vocab *v);
int eng_vocab_add_eos(const struct eng_vocab *v);

/* Tokenizes len bytes. add_special: prepend BOS / append EOS as the vocab's add_bos/add_eos
 * policy says. parse_special: match control, user-defined and unknown token texts in the
 * input (longest first). On success *ids is malloc'd (caller frees; non-NULL even when
 * *n == 0). Errors: ENG_ERR_ARG, ENG_ERR_RANGE (input over 1 GiB, or a byte with neither a
 * token nor unk), ENG_ERR_NOMEM. */
eng_status eng_vocab_tokenize(const struct eng_vocab *v, const char *text, size_t len,
                              int add_special, int parse_special, int32_t **ids, size_t *n,
                              char *err, size_t errlen) ENG_WUR;

/* Whole-sequence detokenization into a malloc'd NUL-terminated string. Ids out of range are
 * ENG_ERR_RANGE. */
eng_status eng_vocab_detokenize(const struct eng_vocab *v, const int32_t *ids, size_t n,
                                char **out, size_t *len) ENG_WUR;

/* Streaming detokenizer on a vocabulary (eng_detok_create wraps it); the vocab is borrowed. */
eng_detok *eng_vocab_detok_create(const struct eng_vocab *v);

/* End of generation: EOS, EOT, and the chat end markers "<|im_end|>", "<|eot_id|>",
 * "<|endoftext|>", "<|end_of_text|>", "<|eom_id|>" when the vocabulary has them. */
int eng_vocab_is_eog(const struct eng_vocab *v, int32_t id);

/* ---- BPE pre-tokenizers (exposed for tests) ---- */

typedef enum eng_pretok {
    ENG_PRETOK_GPT2 = 0,  /* "default", "gpt2" */
    ENG_PRETOK_LLAMA3 = 1, /* "llama-bpe" (also "llama3", "llama-v3") */
    ENG_PRETOK_QWEN2 = 2, /* "qwen2" */
} eng_pretok;

/* Maps a tokenizer.ggml.pre name to a splitter; 0 if unknown. */
int eng_pretok_from_name(const char *name, size_t len, eng_pretok *out);

/* Splits text into pre-tokens as the named regex would, working on code points; invalid UTF-8
 * bytes count as one non-letter, non-number, non-space character each so that every input
 * byte lands in exactly one piece. Writes piece end offsets to ends and returns their count,
 * stopping after cap pieces (len always suffices for all); the splitters never look behind
 * their start, so a caller may resume at the last end. */
size_t eng_pretok_split(eng_pretok kind, const char *text, size_t len, size_t *ends, size_t cap);

/* ---- UTF-8 and Unicode categories (engine/tok/unicode.c) ---- */

enum { ENG_UCAT_OTHER = 0, ENG_UCAT_LETTER = 1, ENG_UCAT_NUMBER = 2 };

/* Strict UTF-8 decode of one code point at s (n > 0 bytes available): returns the length in
 * bytes (1..4) and the code point, or 0 for an invalid or truncated sequence (overlong,
 * surrogate, > U+10FFFF). */
size_t eng_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
/* Encodes cp (<= U+10FFFF) into out (4 bytes); returns the length. */
size_t eng_utf8_encode(uint32_t cp, char out[4]);
int eng_unicode_category(uint32_t cp); /* ENG_UCAT_*: general category L*, N*, or other */
int eng_unicode_is_space(uint32_t cp); /* Unicode White_Space */

#endif
