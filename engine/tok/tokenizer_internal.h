/* tokenizer_internal.h: what engine/tok/ shares beyond engine.h's vocabulary API (SPM and
 * GPT-2 byte-level BPE tokenizers, detokenizers): loading a vocabulary from GGUF metadata,
 * the hand-written BPE pre-tokenizers and the UTF-8 / Unicode category helpers. */
#ifndef KVPUB_TOKENIZER_INTERNAL_H
#define KVPUB_TOKENIZER_INTERNAL_H

#include "engine/engine.h"
#include "engine/engine_internal.h"

#include <stddef.h>
#include <stdint.h>

/* Builds the vocabulary of a GGUF file from its tokenizer.ggml.* metadata. info may be NULL;
 * when info->n_vocab > 0 the token count may not exceed it (ids must index the embeddings).
 * Errors: ENG_ERR_FORMAT (missing/ill-typed keys, bad ids), ENG_ERR_UNSUPPORTED (model kind or
 * pre-tokenizer we do not implement), ENG_ERR_NOMEM. */
eng_status eng_vocab_from_gguf(const gguf_file *g, const eng_info *info, struct eng_vocab **out,
                               char *err, size_t errlen) ENG_WUR;

/* Whether a tokenizer adds BOS when tokenizer.ggml.add_bos_token is absent, as llama.cpp decides
 * it: SentencePiece vocabularies do, byte-level BPE ones only for the llama3 family of
 * pre-tokenizers. One answer for the vocabulary and the model's eng_info. */
int eng_vocab_default_add_bos(const gguf_file *g);
/* The special-token ids llama.cpp assumes when a key is absent, by tokenizer model: SentencePiece
 * ("llama") BOS 1, EOS 2, UNK 0; GPT-2 BPE ("gpt2") BOS = EOS = 11 (no BOS for the glm4 and
 * chatglm-bpe pre-tokenizers), no UNK; none (-1) otherwise. An id the vocabulary of n_vocab
 * tokens does not hold is none, as llama.cpp disables it. */
void eng_vocab_default_specials(const gguf_file *g, int n_vocab, int32_t *bos, int32_t *eos, int32_t *unk);
/* The special-token id under key, as llama.cpp reads it, for the vocabulary and the model's
 * eng_info alike: a value naming a token of the n_vocab becomes *id (1); an absent key, or a
 * value naming no token (0xffffffff included: llama.cpp warns "bad special token ... using
 * default id"), leaves *id as the caller set it, the default (0); a negative value (a signed
 * key) is none, -1 (1). -1 when the key is not an integer. */
int eng_vocab_special_id(const gguf_file *g, const char *key, size_t n_vocab, int32_t *id);

/* ---- BPE pre-tokenizers (exposed for tests) ---- */

#define ENG_PRETOK_SUPPORTED                                                                    \
    "supported: default, gpt-2, llama-bpe (llama3), qwen2, qwen35, falcon, starcoder, refact, " \
    "command-r, mpt and their aliases"


typedef enum eng_pretok {
    ENG_PRETOK_GPT2 = 0,      /* "gpt-2", "gpt2", "mpt", ... */
    ENG_PRETOK_LLAMA3 = 1,    /* "llama-bpe" (also "llama3", "llama-v3", ...) */
    ENG_PRETOK_QWEN2 = 2,     /* "qwen2" */
    ENG_PRETOK_DEFAULT = 3,   /* "default", or no tokenizer.ggml.pre: llama.cpp's own splitter */
    ENG_PRETOK_FALCON = 4,    /* "falcon" */
    ENG_PRETOK_STARCODER = 5, /* "starcoder", "refact", "command-r", "smollm" */
    ENG_PRETOK_QWEN35 = 6,    /* "qwen35": qwen2's, with combining marks inside words */
} eng_pretok;

/* Maps a tokenizer.ggml.pre name to a splitter; 0 if unknown. */
int eng_pretok_from_name(const char *name, size_t len, eng_pretok *out);
/* 1 if llama.cpp adds BOS for this splitter's vocabularies when the GGUF does not say
 * (tokenizer.ggml.add_bos_token absent): the llama3 family. */
int eng_pretok_adds_bos(eng_pretok kind);

/* Splits text into pre-tokens as the named regex would, working on code points; invalid UTF-8
 * bytes count as one non-letter, non-number, non-space character each so that every input
 * byte lands in exactly one piece. Writes piece end offsets to ends and returns their count,
 * stopping after cap pieces (len always suffices for all); the splitters never look behind
 * their start, so a caller may resume at the last end. */
size_t eng_pretok_split(eng_pretok kind, const char *text, size_t len, size_t *ends, size_t cap);

/* ---- UTF-8 and Unicode categories (engine/tok/unicode.c) ---- */

enum { ENG_UCAT_OTHER = 0, ENG_UCAT_LETTER = 1, ENG_UCAT_NUMBER = 2, ENG_UCAT_PUNCT = 3, ENG_UCAT_MARK = 4 };

/* Strict UTF-8 decode of one code point at s (n > 0 bytes available): returns the length in
 * bytes (1..4) and the code point, or 0 for an invalid or truncated sequence (overlong,
 * surrogate, > U+10FFFF). */
size_t eng_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
/* Encodes cp (<= U+10FFFF) into out (4 bytes); returns the length. */
size_t eng_utf8_encode(uint32_t cp, char out[4]);
int eng_unicode_category(uint32_t cp); /* ENG_UCAT_*: general category L*, N*, P*, M* or other */
int eng_unicode_is_space(uint32_t cp); /* Unicode White_Space */

#endif
