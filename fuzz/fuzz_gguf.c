/* fuzz_gguf.c: libFuzzer target for the GGUF reader and the hyper-parameter mapping: any input
 * must open or be refused cleanly; opened files are walked through every lookup. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "engine/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    gguf_file *g = NULL;
    if (gguf_open_mem(data, size, &g, err, sizeof err) != ENG_OK)
        return 0;
    volatile uint64_t sink = 0;
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const char *k = gguf_kv_key(g, i);
        int64_t v;
        double d;
        gguf_str s;
        gguf_vtype et;
        uint64_t n;
        const void *p;
        if (gguf_get_int(g, k, &v) == 1)
            sink += (uint64_t)v;
        if (gguf_get_float(g, k, &d) == 1)
            sink += (uint64_t)(d != 0);
        if (gguf_get_str(g, k, &s) == 1 && s.n)
            sink += (uint8_t)s.p[s.n - 1];
        if (gguf_get_arr(g, k, &et, &n, &p) == 1 && n) {
            if (gguf_get_arr_str(g, k, n - 1, &s) == 1 && s.n)
                sink += (uint8_t)s.p[0];
        }
    }
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (t->nbytes)
            sink += ((const uint8_t *)t->data)[t->nbytes - 1];
        if (gguf_find_tensor(g, t->name) != t)
            __builtin_trap();
    }
    eng_info info;
    if (eng_hparams_from_gguf(g, &info, err, sizeof err) == ENG_OK) {
        uint8_t fp[32];
        eng_fingerprint_model_compute(g, &info, fp);
        eng_fingerprint_tokenizer_compute(g, &info, fp);
        sink += fp[0];
    }
    (void)sink;
    gguf_close(g);
    return 0;
}
