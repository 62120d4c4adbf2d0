/* kvsynth.h: the subcommands of build/kvsynth, a maker of deterministic synthetic test data
 * (GGUF models, llama2.c conversions, blobs, blob test vectors) and of our side of the
 * interop tests (dequantized blocks). Each returns a process exit
 * code. */
#ifndef KVPUB_KVSYNTH_H
#define KVPUB_KVSYNTH_H

#include <stdint.h>

#include "format/kvblob.h"

int kvsynth_model_main(int argc, char **argv);    /* default: write a synthetic GGUF */
int kvsynth_llama2c_main(int argc, char **argv);  /* from-llama2c CHECKPOINT TOKENIZER -o OUT */
int kvsynth_vectors_main(int argc, char **argv);  /* vectors -o DIR: spec/vectors blobs */
int kvsynth_blob_main(int argc, char **argv);     /* blob --key K -o OUT: a synthetic blob */
int kvsynth_dequant_main(int argc, char **argv);  /* dequant TYPE IN OUT: blocks to f32 */

/* Zeroes *m and fills the shape (head_dim-wide heads, n_rot = head_dim) and the defaults every
 * synthetic blob shares: normal RoPE, base 10000, scale 1, no scaling, YaRN attn 1, beta 32/1,
 * pos0 1. Callers set the document, fingerprints, n_embd, n_head, tokens, codec and times. */
void kvsynth_manifest_init(kvb_manifest *m, const char *arch, uint32_t n_layer, uint32_t n_head_kv,
                           uint32_t head_dim);

#endif
