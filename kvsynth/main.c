/* kvsynth: makes deterministic synthetic test data. Thin dispatcher over the kvsynth/ commands. */
#include "engine/engine.h"
#include "kvsynth/kvsynth.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
    fputs("usage: kvsynth [model options] -o OUT.gguf      write a synthetic GGUF model\n"
          "       kvsynth from-llama2c CKPT.bin [TOK.bin] -o OUT.gguf\n"
          "       kvsynth vectors -o DIR                  write the spec/vectors blobs\n"
          "       kvsynth blob --key K.key -o OUT.kvb     write a synthetic signed blob\n"
          "       kvsynth dequant TYPE IN.bin OUT.f32     dequantize raw ggml blocks\n"
          "Run 'kvsynth --help', 'kvsynth from-llama2c --help', ... for each command's options.\n", f);
}

int main(int argc, char **argv)
{
    eng_exit_on_sigbus("kvsynth"); /* a mapped model or blob truncated under us: error, not core */
    if (argc >= 2 && strcmp(argv[1], "from-llama2c") == 0)
        return kvsynth_llama2c_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "vectors") == 0)
        return kvsynth_vectors_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "blob") == 0)
        return kvsynth_blob_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "dequant") == 0)
        return kvsynth_dequant_main(argc - 1, argv + 1);
    if (argc < 2) {
        fputs("kvsynth: missing arguments (try kvsynth --help)\n", stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return kvsynth_model_main(argc, argv);
    }
    return kvsynth_model_main(argc, argv);
}
