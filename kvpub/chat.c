/* chat.c: the chat formats a GGUF's tokenizer.chat_template names, rendered as llama.cpp's
 * llama_chat_apply_template renders them (its built-in formats, not a Jinja engine), so that
 * `kvfetch run --chat` builds the conversation a llama.cpp user's prompt holds: system turn,
 * user turn with the documents, then the assistant's header. Three formats (ChatML/Qwen,
 * Llama 3, Phi-3); a template llama.cpp reads as any other format is refused by name. */
#include "base/base.h"
#include "kvpub/kvpub_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int has(const char *t, const char *s) { return strstr(t, s) != NULL; }

/* The formats llama.cpp's detector tries after Phi-3 and before Llama 3 (llama-chat.cpp), by
 * the marks it looks for (both must be there; NULL: one is enough): a template with them is that
 * other format there, so not Llama 3 here. */
static const struct { const char *a, *b, *name; } k_earlier[] = {
    {"[gMASK]<sop>", NULL, "ChatGLM 4"},
    {"<|assistant|>", "<|user|>", "Falcon 3/GLM-Edge/EXAONE"},
    {"<|{{ item['role'] }}|>", "<|begin_of_image|>", "GLM-Edge"},
    {"<|user|>", "<|endoftext|>", "Zephyr"},
    {"bos_token + message['role']", NULL, "Monarch"},
    {"<start_of_turn>", NULL, "Gemma"},
    {"'\\n\\nAssistant: ' + eos_token", NULL, "Orion"},
    {"GPT4 Correct ", NULL, "OpenChat"},
    {"USER: ", "ASSISTANT: ", "Vicuna"},
    {"### Instruction:", "<|EOT|>", "DeepSeek Coder"},
    {"<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "Command-R"},
};

static const char *earlier_format(const char *t)
{
    for (size_t i = 0; i < sizeof k_earlier / sizeof k_earlier[0]; i++)
        if (has(t, k_earlier[i].a) && (!k_earlier[i].b || has(t, k_earlier[i].b)))
            return k_earlier[i].name;
    return NULL;
}

kvp_chat_format kvp_chat_detect(const char *tmpl, const char **other)
{
    static const char *const none = "no chat template";
    *other = none;
    if (!tmpl || !*tmpl)
        return KVP_CHAT_NONE;
    /* llama.cpp accepts a bare format name in place of a template */
    if (strcmp(tmpl, "chatml") == 0)
        return KVP_CHAT_CHATML;
    if (strcmp(tmpl, "llama3") == 0)
        return KVP_CHAT_LLAMA3;
    if (strcmp(tmpl, "phi3") == 0)
        return KVP_CHAT_PHI3;
    if (has(tmpl, "<|im_start|>")) {
        *other = has(tmpl, "<|im_sep|>") ? "Phi-4" : has(tmpl, "<end_of_utterance>") ? "SmolVLM" : NULL;
        return *other ? KVP_CHAT_NONE : KVP_CHAT_CHATML;
    }
    if (strncmp(tmpl, "mistral", 7) == 0 || has(tmpl, "[INST]")) {
        *other = "Mistral/Llama 2 ([INST])";
        return KVP_CHAT_NONE;
    }
    if (has(tmpl, "<|assistant|>") && has(tmpl, "<|end|>")) {
        *other = NULL;
        return KVP_CHAT_PHI3;
    }
    if ((*other = earlier_format(tmpl)))
        return KVP_CHAT_NONE;
    if (has(tmpl, "<|start_header_id|>") && has(tmpl, "<|end_header_id|>"))
        return KVP_CHAT_LLAMA3;
    *other = "a format other than ChatML, Llama 3 and Phi-3";
    return KVP_CHAT_NONE;
}

kvp_status kvp_chat_pick(const char *tmpl, kvp_chat_format *f, char *err, size_t errlen)
{
    const char *other;
    *f = kvp_chat_detect(tmpl, &other);
    if (*f != KVP_CHAT_NONE)
        return KVP_OK;
    return kvp_fail(err, errlen, KVP_ERR_USAGE, "the model's chat template is %s, which kvpub does not render "
                    "(supported: ChatML/Qwen, Llama 3, Phi-3)", other);
}

const char *kvp_chat_format_name(kvp_chat_format f)
{
    return f == KVP_CHAT_CHATML ? "chatml" : f == KVP_CHAT_LLAMA3 ? "llama3" : f == KVP_CHAT_PHI3 ? "phi3" : "none";
}

/* A growable string. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n)
{
    while (!b->oom && b->cap < b->n + n + 1) { /* + 1: the NUL */
        if (!base_grow(&b->p, &b->cap, b->cap, 1, 256)) {
            b->oom = 1;
            return;
        }
    }
    if (b->oom)
        return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

/* Llama 3 trims each message's content as llama.cpp's trim() does (ASCII white space); left
 * and right say which ends of s are ends of the content. */
static void put_trimmed(sbuf *b, const char *s, int left, int right)
{
    size_t n = strlen(s);
    while (left && n && strchr(" \t\n\r\v\f", s[0]))
        s++, n--;
    while (right && n && strchr(" \t\n\r\v\f", s[n - 1]))
        n--;
    put(b, s, n);
}

/* One message's opening and closing, by format. */
static void open_turn(sbuf *b, kvp_chat_format f, const char *role)
{
    if (f == KVP_CHAT_CHATML) {
        puts_(b, "<|im_start|>");
        puts_(b, role);
        puts_(b, "\n");
    } else if (f == KVP_CHAT_LLAMA3) {
        puts_(b, "<|start_header_id|>");
        puts_(b, role);
        puts_(b, "<|end_header_id|>\n\n");
    } else {
        puts_(b, "<|");
        puts_(b, role);
        puts_(b, "|>\n");
    }
}

static void close_turn(sbuf *b, kvp_chat_format f)
{
    puts_(b, f == KVP_CHAT_CHATML ? "<|im_end|>\n" : f == KVP_CHAT_LLAMA3 ? "<|eot_id|>" : "<|end|>\n");
}

kvp_status kvp_chat_render(kvp_chat_format f, const kvp_chat_msg *msgs, size_t n, int add_assistant, char **out)
{
    *out = NULL;
    if (f != KVP_CHAT_CHATML && f != KVP_CHAT_LLAMA3 && f != KVP_CHAT_PHI3)
        return KVP_ERR_USAGE;
    sbuf b = {0};
    puts_(&b, "");
    for (size_t i = 0; i < n; i++) {
        open_turn(&b, f, msgs[i].role);
        put_trimmed(&b, msgs[i].content, f == KVP_CHAT_LLAMA3, f == KVP_CHAT_LLAMA3);
        close_turn(&b, f);
    }
    if (add_assistant)
        open_turn(&b, f, "assistant");
    if (b.oom) {
        free(b.p);
        return KVP_ERR_NOMEM;
    }
    *out = b.p;
    return KVP_OK;
}

kvp_status kvp_chat_wrap(kvp_chat_format f, const char *system, const char *question, char **before,
                         char **after)
{
    *before = *after = NULL;
    if (f != KVP_CHAT_CHATML && f != KVP_CHAT_LLAMA3 && f != KVP_CHAT_PHI3)
        return KVP_ERR_USAGE;
    sbuf a = {0}, z = {0};
    puts_(&a, "");
    if (system && *system) {
        kvp_chat_msg m = {"system", system};
        char *s = NULL;
        if (kvp_chat_render(f, &m, 1, 0, &s) != KVP_OK) {
            free(a.p);
            return KVP_ERR_NOMEM;
        }
        puts_(&a, s);
        free(s);
    }
    open_turn(&a, f, "user");
    /* the documents come here, as they were published; then the question */
    puts_(&z, "\n\n");
    put_trimmed(&z, question, 0, f == KVP_CHAT_LLAMA3);
    close_turn(&z, f);
    open_turn(&z, f, "assistant");
    if (a.oom || z.oom) {
        free(a.p);
        free(z.p);
        return KVP_ERR_NOMEM;
    }
    *before = a.p;
    *after = z.p;
    return KVP_OK;
}
