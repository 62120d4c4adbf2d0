/* test_kvpub_chat.c: the chat formats (kvpub/chat.c). Detection by llama.cpp's bare names and
 * by the marks its detector reads; a few renderings written out by hand from llama-chat.cpp
 * (tests/cli/llamacpp_chat.sh holds every rendering to the real libllama); and kvp_chat_wrap,
 * whose two halves around the documents must give the rendering of the whole conversation in
 * every format, also when the texts hold the bytes wrap marks the documents' place with. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvpub/kvpub.h"

static void test_detect(void **state)
{
    (void)state;
    const char *other;
    for (int f = KVP_CHAT_NONE + 1; f < KVP_CHAT_COUNT; f++) {
        const char *name = kvp_chat_format_name((kvp_chat_format)f);
        assert_string_not_equal(name, "none");
        assert_int_equal(kvp_chat_detect(name, &other), f); /* a bare name is that format */
    }
    static const struct {
        const char *tmpl;
        kvp_chat_format f;
    } marks[] = {
        {"{{ bos_token }}[INST] {{ m }} [/INST]", KVP_CHAT_LLAMA2},
        {"[INST] <<SYS>>", KVP_CHAT_LLAMA2_SYS},
        {"{{ bos_token + '[INST] ' }}<<SYS>>", KVP_CHAT_LLAMA2_SYS_BOS},
        {"[INST] {{ m.content.strip() }}", KVP_CHAT_LLAMA2_SYS_STRIP},
        {"{{ ' [INST] ' + system_message }}", KVP_CHAT_MISTRAL_V1},
        {"[AVAILABLE_TOOLS][INST]", KVP_CHAT_MISTRAL_V3},
        {"[AVAILABLE_TOOLS]{{ \"[INST]\" }}", KVP_CHAT_MISTRAL_V3_TEKKEN},
        {"[SYSTEM_PROMPT][INST]", KVP_CHAT_MISTRAL_V7},
        {"mistral", KVP_CHAT_LLAMA2}, /* the prefix alone: no variant's marks */
        {"<|im_start|>{{ m }}", KVP_CHAT_CHATML},
    };
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++)
        assert_int_equal(kvp_chat_detect(marks[i].tmpl, &other), marks[i].f);
    assert_int_equal(kvp_chat_detect("{{ bos_token }}<start_of_turn>user", &other), KVP_CHAT_NONE);
    assert_string_equal(other, "Gemma");
    kvp_chat_format f;
    char err[256];
    assert_int_equal(kvp_chat_pick("<start_of_turn>", &f, err, sizeof err), KVP_ERR_USAGE);
    assert_non_null(strstr(err, "is Gemma, which kvpub does not render"));
    assert_int_equal(kvp_chat_pick(NULL, &f, err, sizeof err), KVP_ERR_USAGE);
    assert_non_null(strstr(err, "no chat template"));
}

static void expect_render(kvp_chat_format f, const char *system, const char *user, const char *want)
{
    kvp_chat_msg m[2] = {{"system", system}, {"user", user}};
    char *out = NULL;
    assert_int_equal(kvp_chat_render(f, system ? m : m + 1, system ? 2 : 1, 1, &out), KVP_OK);
    if (strcmp(out, want) != 0)
        fail_msg("%s: rendered \"%s\", want \"%s\"", kvp_chat_format_name(f), out, want);
    free(out);
}

/* llama-chat.cpp's branches for the [INST] family, by hand; no assistant header in any */
static void test_render_inst(void **state)
{
    (void)state;
    expect_render(KVP_CHAT_MISTRAL_V1, "S", " Q ", " [INST] S\n\n Q  [/INST]");
    expect_render(KVP_CHAT_MISTRAL_V3, "S", " Q ", "[INST] S\n\n Q [/INST]");
    expect_render(KVP_CHAT_MISTRAL_V3_TEKKEN, "S", " Q ", "[INST]S\n\n Q [/INST]");
    expect_render(KVP_CHAT_MISTRAL_V7, "S", " Q ", "[SYSTEM_PROMPT] S[/SYSTEM_PROMPT][INST]  Q [/INST]");
    expect_render(KVP_CHAT_MISTRAL_V7_TEKKEN, "S", " Q ", "[SYSTEM_PROMPT]S[/SYSTEM_PROMPT][INST] Q [/INST]");
    expect_render(KVP_CHAT_LLAMA2, "S", " Q ", "[INST] S\n Q  [/INST]");
    expect_render(KVP_CHAT_LLAMA2_SYS, "S", " Q ", "[INST] <<SYS>>\nS\n<</SYS>>\n\n Q  [/INST]");
    expect_render(KVP_CHAT_LLAMA2_SYS_BOS, "S", " Q ", "[INST] <<SYS>>\nS\n<</SYS>>\n\n Q  [/INST]");
    expect_render(KVP_CHAT_LLAMA2_SYS_STRIP, " S ", " Q ", "[INST] <<SYS>>\nS\n<</SYS>>\n\nQ [/INST]");
    expect_render(KVP_CHAT_LLAMA2_SYS, NULL, "Q", "[INST] Q [/INST]");
    /* an earlier answer: v3 trims it, -sys-bos opens the next turn with BOS's text */
    kvp_chat_msg conv[3] = {{"user", "A"}, {"assistant", " B "}, {"user", "C"}};
    char *out = NULL;
    assert_int_equal(kvp_chat_render(KVP_CHAT_MISTRAL_V3, conv, 3, 1, &out), KVP_OK);
    assert_string_equal(out, "[INST] A[/INST] B</s>[INST] C[/INST]");
    free(out);
    assert_int_equal(kvp_chat_render(KVP_CHAT_LLAMA2_SYS_BOS, conv, 3, 1, &out), KVP_OK);
    assert_string_equal(out, "[INST] A [/INST] B </s><s>[INST] C [/INST]");
    free(out);
    assert_int_equal(kvp_chat_render(KVP_CHAT_NONE, conv, 3, 1, &out), KVP_ERR_USAGE);
    assert_null(out);
}

/* before + documents + after == render(system, documents + "\n\n" + question) */
static void expect_wrap(kvp_chat_format f, const char *system, const char *question)
{
    static const char docs[] = "Doc one.\n\nDoc two.";
    char *before = NULL, *after = NULL, *whole = NULL;
    assert_int_equal(kvp_chat_wrap(f, system, question, &before, &after), KVP_OK);
    size_t ul = strlen(docs) + 2 + strlen(question) + 1;
    char *user = malloc(ul);
    snprintf(user, ul, "%s\n\n%s", docs, question);
    kvp_chat_msg m[2] = {{"system", system ? system : ""}, {"user", user}};
    const int with_sys = system && *system;
    assert_int_equal(kvp_chat_render(f, with_sys ? m : m + 1, with_sys ? 2 : 1, 1, &whole), KVP_OK);
    size_t bl = strlen(before), dl = strlen(docs);
    if (strncmp(whole, before, bl) != 0 || strncmp(whole + bl, docs, dl) != 0 || strcmp(whole + bl + dl, after) != 0)
        fail_msg("%s: wrap gave \"%s\" + docs + \"%s\", the conversation is \"%s\"", kvp_chat_format_name(f), before,
                 after, whole);
    free(user);
    free(whole);
    free(before);
    free(after);
}

static void test_wrap(void **state)
{
    (void)state;
    for (int f = KVP_CHAT_NONE + 1; f < KVP_CHAT_COUNT; f++) {
        expect_wrap((kvp_chat_format)f, "Answer from the documents.", "What do they say?");
        expect_wrap((kvp_chat_format)f, NULL, "What do they say?");
        expect_wrap((kvp_chat_format)f, "", "  spaced question  ");
        expect_wrap((kvp_chat_format)f, "sys \x01\x02 mark", "q \x01\x02\x02 mark");
    }
    char *b = NULL, *a = NULL;
    assert_int_equal(kvp_chat_wrap(KVP_CHAT_NONE, NULL, "q", &b, &a), KVP_ERR_USAGE);
    assert_null(b);
    assert_null(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_render_inst),
        cmocka_unit_test(test_wrap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
