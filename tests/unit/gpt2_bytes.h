/* gpt2_bytes.h: GPT-2's byte -> printable character map, the alphabet of every byte-level BPE
 * vocabulary, written out independently of the engine's (engine/tok/) so that the tokenizer
 * tests and fuzz/fuzz_tokenizer.c do not check it against itself. Header-only, libc only. */
#ifndef KVPUB_TEST_GPT2_BYTES_H
#define KVPUB_TEST_GPT2_BYTES_H

#include <stddef.h>
#include <stdint.h>

/* The code point standing for byte b: printable bytes stand for themselves, the others take
 * U+0100 onwards in byte order. */
static inline uint32_t gpt2_byte_char(unsigned b)
{
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)
        return b;
    unsigned k = 0;
    for (unsigned x = 0; x < b; x++)
        if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE))
            k++;
    return 256 + k;
}

/* Writes the UTF-8 of byte b's stand-in, NUL-terminated, to out (all are below U+0800: one or
 * two bytes). Returns its length. */
static inline size_t gpt2_byte_utf8(unsigned b, char out[3])
{
    uint32_t c = gpt2_byte_char(b);
    if (c < 0x80) {
        out[0] = (char)c;
        out[1] = 0;
        return 1;
    }
    out[0] = (char)(0xC0 | (c >> 6));
    out[1] = (char)(0x80 | (c & 0x3F));
    out[2] = 0;
    return 2;
}

#endif
