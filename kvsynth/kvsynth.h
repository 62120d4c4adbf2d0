/* kvsynth.h: the subcommands of build/kvsynth, a maker of deterministic synthetic test data
 * (GGUF models, llama2.c conversions, blob test vectors). Each returns a process exit code. */
#ifndef KVPUB_KVSYNTH_H
#define KVPUB_KVSYNTH_H

int kvsynth_model_main(int argc, char **argv);    /* default: write a synthetic GGUF */
int kvsynth_llama2c_main(int argc, char **argv);  /* from-llama2c CHECKPOINT TOKENIZER -o OUT */
int kvsynth_vectors_main(int argc, char **argv);  /* vectors -o DIR: spec/vectors blobs */

#endif
