/* tokenizer_api.c: engine.h's tokenizer functions on a loaded model, thin wrappers over the
 * model's vocabulary (tokenizer_internal.h). Separate from vocab.c so that vocabulary tests
 * link without the model code. */
#include "engine/model_internal.h"
#include "engine/tok/tokenizer_internal.h"

#include <stdlib.h>

eng_status eng_vocab_load(const char *path, eng_vocab **out, char *err, size_t errlen)
{
    if (!out)
        return ENG_ERR_ARG;
    *out = NULL;
    gguf_file *g = NULL;
    eng_status st = gguf_open(path, &g, err, errlen);
    if (st != ENG_OK)
        return st;
    st = eng_vocab_from_gguf(g, NULL, out, err, errlen);
    gguf_close(g);
    return st;
}

eng_status eng_tokenize(const eng_model *m, const char *text, size_t len, int add_bos,
                        int parse_special, int32_t **ids, size_t *n)
{
    if (!ids || !n)
        return ENG_ERR_ARG;
    *ids = NULL;
    *n = 0;
    if (!m || !eng_model_vocab(m))
        return ENG_ERR_ARG;
    return eng_vocab_tokenize(eng_model_vocab(m), text, len, add_bos, parse_special, ids, n, NULL, 0);
}

const char *eng_model_chat_template(const eng_model *m)
{
    return m && eng_model_vocab(m) ? eng_vocab_chat_template(eng_model_vocab(m)) : NULL;
}

eng_detok *eng_detok_create(const eng_model *m, int strip_first)
{
    return m ? eng_vocab_detok_create(eng_model_vocab(m), strip_first) : NULL;
}

eng_status eng_detokenize(const eng_model *m, const int32_t *ids, size_t n, int strip_first, char **out,
                          size_t *len)
{
    if (!m || !eng_model_vocab(m)) {
        if (out)
            *out = NULL;
        return ENG_ERR_ARG;
    }
    return eng_vocab_detokenize(eng_model_vocab(m), ids, n, strip_first, out, len);
}

int eng_token_is_eog(const eng_model *m, int32_t id)
{
    return m ? eng_vocab_is_eog(eng_model_vocab(m), id) : 0;
}
