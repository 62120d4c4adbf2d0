/* types.c: the ggml tensor-type table (block size and bytes per block) that the reader, the
 * writer and the kernels size rows with. */
#include "engine/gguf.h"

#include <stddef.h>
#include <stdint.h>

typedef struct type_trait {
    uint32_t type;
    uint32_t blck;
    uint32_t bytes;
    const char *name;
} type_trait;

/* Block geometry of the ggml types, as ggml defines them (QK_K = 256). */
static const type_trait k_types[] = {
    {GGML_T_F32, 1, 4, "f32"},          {GGML_T_F16, 1, 2, "f16"},
    {GGML_T_Q4_0, 32, 18, "q4_0"},      {GGML_T_Q4_1, 32, 20, "q4_1"},
    {GGML_T_Q5_0, 32, 22, "q5_0"},      {GGML_T_Q5_1, 32, 24, "q5_1"},
    {GGML_T_Q8_0, 32, 34, "q8_0"},      {GGML_T_Q8_1, 32, 36, "q8_1"},
    {GGML_T_Q2_K, 256, 84, "q2_k"},     {GGML_T_Q3_K, 256, 110, "q3_k"},
    {GGML_T_Q4_K, 256, 144, "q4_k"},    {GGML_T_Q5_K, 256, 176, "q5_k"},
    {GGML_T_Q6_K, 256, 210, "q6_k"},    {GGML_T_Q8_K, 256, 292, "q8_k"},
    {GGML_T_BF16, 1, 2, "bf16"},
    /* no kernel reads these, but a file holding one is refused naming the type */
    {GGML_T_I8, 1, 1, "i8"},            {GGML_T_I16, 1, 2, "i16"},
    {GGML_T_I32, 1, 4, "i32"},          {GGML_T_I64, 1, 8, "i64"},
    {GGML_T_F64, 1, 8, "f64"},
};

int ggml_type_traits(uint32_t type, uint32_t *blck, uint32_t *bytes, const char **name)
{
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++) {
        if (k_types[i].type != type)
            continue;
        if (blck)
            *blck = k_types[i].blck;
        if (bytes)
            *bytes = k_types[i].bytes;
        if (name)
            *name = k_types[i].name;
        return 1;
    }
    if (blck)
        *blck = 0;
    if (bytes)
        *bytes = 0;
    if (name)
        *name = NULL;
    return 0;
}

size_t ggml_row_bytes(uint32_t type, uint64_t n)
{
    uint32_t blck, bytes;
    if (!ggml_type_traits(type, &blck, &bytes, NULL) || n % blck != 0)
        return 0;
    uint64_t nb = n / blck;
    if (nb > SIZE_MAX / bytes)
        return 0;
    return (size_t)(nb * bytes);
}
