/* synth_vocab.h: small but valid tokenizer vocabularies for synthetic models, built
 * deterministically by a tiny BPE trainer over an embedded English text: SentencePiece-style
 * ('llama': byte fallback, U+2581 spaces, scored pieces) and GPT-2 byte-level BPE ('gpt2':
 * byte-to-unicode base tokens, ranked merges, control tokens). */
#ifndef KVPUB_KVSYNTH_SYNTH_VOCAB_H
#define KVPUB_KVSYNTH_SYNTH_VOCAB_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

typedef struct synth_vocab {
    char **tokens;     /* n NUL-terminated strings */
    float *scores;     /* n */
    int32_t *types;    /* n: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte */
    size_t n;
    char **merges;     /* n_merges "left right" strings (gpt2 only) */
    size_t n_merges;
    const char *model; /* "llama" or "gpt2" */
    const char *pre;   /* tokenizer.ggml.pre */
    int32_t bos, eos, unk; /* -1 when none */
    int add_bos;
} synth_vocab;

/* SentencePiece-style vocabulary of exactly n_vocab tokens (>= 259 + 1). 0 or -1 with err. */
int synth_vocab_spm(size_t n_vocab, synth_vocab *v, char *err, size_t errlen);
/* Byte-level BPE of exactly n_vocab tokens; pre is "llama-bpe" or "qwen2". 0 or -1 with err. */
int synth_vocab_bpe(size_t n_vocab, const char *pre, synth_vocab *v, char *err, size_t errlen);
/* Sets the SentencePiece ('llama') conventions that synth_vocab_spm's vocabularies and those
 * read from llama2.c's tokenizer.bin share: <unk> 0, <s> 1 (added as BOS), </s> 2,
 * pre-tokenizer "default". Leaves the tokens alone. */
void synth_vocab_spm_ids(synth_vocab *v);
/* Makes the last token text, a user-defined token (type 4, score 0), for tokenizer tests of
 * added tokens. SentencePiece vocabularies only: there the last token is a scored piece, while
 * a BPE vocabulary's may be a merge's result. 0, or -1 with err (not SPM, text empty or longer
 * than 64 bytes or already a token, out of memory). */
int synth_vocab_user_token(synth_vocab *v, const char *text, char *err, size_t errlen);
void synth_vocab_free(synth_vocab *v); /* NULL is a no-op */

/* Writes the tokenizer.ggml.* keys. 0 or -1 (out of memory). */
int synth_vocab_write(ggw *w, const synth_vocab *v);

#endif
