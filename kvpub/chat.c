/* chat.c: the chat formats a GGUF's tokenizer.chat_template names, rendered as llama.cpp's
 * llama_chat_apply_template renders them (its built-in formats, not a Jinja engine), so that
 * `kvfetch run --chat` builds the conversation a llama.cpp user's prompt holds: system turn,
 * user turn with the documents, then the assistant's header. ChatML/Qwen, Llama 3, Phi-3 and
 * the [INST] family (Mistral v1, v3, v3-tekken, v7, v7-tekken; Llama 2 and its three variants);
 * a template llama.cpp reads as any other format is refused by name. */
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

/* llama.cpp's format names, which it accepts in place of a template (llama-chat.cpp) */
static const struct { const char *name; kvp_chat_format f; } k_names[] = {
    {"chatml", KVP_CHAT_CHATML},
    {"llama3", KVP_CHAT_LLAMA3},
    {"phi3", KVP_CHAT_PHI3},
    {"mistral-v1", KVP_CHAT_MISTRAL_V1},
    {"mistral-v3", KVP_CHAT_MISTRAL_V3},
    {"mistral-v3-tekken", KVP_CHAT_MISTRAL_V3_TEKKEN},
    {"mistral-v7", KVP_CHAT_MISTRAL_V7},
    {"mistral-v7-tekken", KVP_CHAT_MISTRAL_V7_TEKKEN},
    {"llama2", KVP_CHAT_LLAMA2},
    {"llama2-sys", KVP_CHAT_LLAMA2_SYS},
    {"llama2-sys-bos", KVP_CHAT_LLAMA2_SYS_BOS},
    {"llama2-sys-strip", KVP_CHAT_LLAMA2_SYS_STRIP},
};

/* A template that starts with "mistral" or holds "[INST]": which of the family, by the marks
 * llama.cpp's detector looks for, in its order. */
static kvp_chat_format inst_format(const char *t)
{
    if (has(t, "[SYSTEM_PROMPT]"))
        return KVP_CHAT_MISTRAL_V7;
    if (has(t, "' [INST] ' + system_message") || has(t, "[AVAILABLE_TOOLS]"))
        return has(t, " [INST]") ? KVP_CHAT_MISTRAL_V1
               : has(t, "\"[INST]\"") ? KVP_CHAT_MISTRAL_V3_TEKKEN : KVP_CHAT_MISTRAL_V3;
    return has(t, "content.strip()") ? KVP_CHAT_LLAMA2_SYS_STRIP
           : has(t, "bos_token + '[INST]") ? KVP_CHAT_LLAMA2_SYS_BOS
           : has(t, "<<SYS>>") ? KVP_CHAT_LLAMA2_SYS : KVP_CHAT_LLAMA2;
}

kvp_chat_format kvp_chat_detect(const char *tmpl, const char **other)
{
    static const char *const none = "no chat template";
    *other = none;
    if (!tmpl || !*tmpl)
        return KVP_CHAT_NONE;
    *other = NULL;
    for (size_t i = 0; i < sizeof k_names / sizeof k_names[0]; i++)
        if (strcmp(tmpl, k_names[i].name) == 0)
            return k_names[i].f;
    if (has(tmpl, "<|im_start|>")) {
        *other = has(tmpl, "<|im_sep|>") ? "Phi-4" : has(tmpl, "<end_of_utterance>") ? "SmolVLM" : NULL;
        return *other ? KVP_CHAT_NONE : KVP_CHAT_CHATML;
    }
    if (strncmp(tmpl, "mistral", 7) == 0 || has(tmpl, "[INST]"))
        return inst_format(tmpl);
    if (has(tmpl, "<|assistant|>") && has(tmpl, "<|end|>"))
        return KVP_CHAT_PHI3;
    if ((*other = earlier_format(tmpl)))
        return KVP_CHAT_NONE;
    if (has(tmpl, "<|start_header_id|>") && has(tmpl, "<|end_header_id|>"))
        return KVP_CHAT_LLAMA3;
    *other = "a format other than ChatML, Llama 3, Phi-3, Mistral and Llama 2";
    return KVP_CHAT_NONE;
}

kvp_status kvp_chat_pick(const char *tmpl, kvp_chat_format *f, char *err, size_t errlen)
{
    const char *other;
    *f = kvp_chat_detect(tmpl, &other);
    if (*f != KVP_CHAT_NONE)
        return KVP_OK;
    return kvp_fail(err, errlen, KVP_ERR_USAGE, "the model's chat template is %s, which kvpub does not render "
                    "(supported: ChatML/Qwen, Llama 3, Phi-3, Mistral [INST] v1/v3/v7, Llama 2)", other);
}

const char *kvp_chat_format_name(kvp_chat_format f)
{
    for (size_t i = 0; i < sizeof k_names / sizeof k_names[0]; i++)
        if (k_names[i].f == f)
            return k_names[i].name;
    return "none";
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

/* s, trimmed at the ends left and right say as llama.cpp's trim() does (isspace in the C
 * locale: ASCII white space). */
static void put_trimmed(sbuf *b, const char *s, int left, int right)
{
    size_t n = strlen(s);
    while (left && n && strchr(" \t\n\r\v\f", s[0]))
        s++, n--;
    while (right && n && strchr(" \t\n\r\v\f", s[n - 1]))
        n--;
    put(b, s, n);
}

/* One message's opening and closing, for ChatML, Llama 3 and Phi-3. */
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

/* Mistral v7 (tekken: without the spaces) as llama.cpp renders it: no assistant header. */
static void render_mistral_v7(sbuf *b, kvp_chat_format f, const kvp_chat_msg *msgs, size_t n)
{
    const char *sp = f == KVP_CHAT_MISTRAL_V7 ? " " : "";
    for (size_t i = 0; i < n; i++) {
        const int sys = strcmp(msgs[i].role, "system") == 0, user = strcmp(msgs[i].role, "user") == 0;
        puts_(b, sys ? "[SYSTEM_PROMPT]" : user ? "[INST]" : "");
        puts_(b, sp);
        puts_(b, msgs[i].content);
        puts_(b, sys ? "[/SYSTEM_PROMPT]" : user ? "[/INST]" : "</s>");
    }
}

/* Mistral v1, v3 and v3-tekken: the system message goes inside the next [INST]; v3 trims the
 * assistant's messages. */
static void render_mistral(sbuf *b, kvp_chat_format f, const kvp_chat_msg *msgs, size_t n)
{
    const char *lead = f == KVP_CHAT_MISTRAL_V1 ? " " : "", *trail = f == KVP_CHAT_MISTRAL_V3_TEKKEN ? "" : " ";
    int inside = 0;
    for (size_t i = 0; i < n; i++) {
        if (!inside) {
            puts_(b, lead);
            puts_(b, "[INST]");
            puts_(b, trail);
            inside = 1;
        }
        if (strcmp(msgs[i].role, "system") == 0) {
            puts_(b, msgs[i].content);
            puts_(b, "\n\n");
        } else if (strcmp(msgs[i].role, "user") == 0) {
            puts_(b, msgs[i].content);
            puts_(b, lead);
            puts_(b, "[/INST]");
        } else {
            puts_(b, trail);
            put_trimmed(b, msgs[i].content, f == KVP_CHAT_MISTRAL_V3, f == KVP_CHAT_MISTRAL_V3);
            puts_(b, "</s>");
            inside = 0;
        }
    }
}

/* Llama 2 and its variants: <<SYS>> (but plain "llama2" puts the system text first in the
 * turn), BOS text inside the history (sys-bos), every message trimmed (sys-strip). */
static void render_llama2(sbuf *b, kvp_chat_format f, const kvp_chat_msg *msgs, size_t n)
{
    const int strip = f == KVP_CHAT_LLAMA2_SYS_STRIP;
    int inside = 1;
    puts_(b, "[INST] ");
    for (size_t i = 0; i < n; i++) {
        if (!inside) {
            inside = 1;
            puts_(b, f == KVP_CHAT_LLAMA2_SYS_BOS ? "<s>[INST] " : "[INST] ");
        }
        if (strcmp(msgs[i].role, "system") == 0) {
            puts_(b, f == KVP_CHAT_LLAMA2 ? "" : "<<SYS>>\n");
            put_trimmed(b, msgs[i].content, strip, strip);
            puts_(b, f == KVP_CHAT_LLAMA2 ? "\n" : "\n<</SYS>>\n\n");
        } else if (strcmp(msgs[i].role, "user") == 0) {
            put_trimmed(b, msgs[i].content, strip, strip);
            puts_(b, " [/INST]");
        } else {
            put_trimmed(b, msgs[i].content, strip, strip);
            puts_(b, "</s>");
            inside = 0;
        }
    }
}

kvp_status kvp_chat_render(kvp_chat_format f, const kvp_chat_msg *msgs, size_t n, int add_assistant, char **out)
{
    *out = NULL;
    if (f <= KVP_CHAT_NONE || f >= KVP_CHAT_COUNT)
        return KVP_ERR_USAGE;
    sbuf b = {0};
    puts_(&b, "");
    if (f == KVP_CHAT_MISTRAL_V7 || f == KVP_CHAT_MISTRAL_V7_TEKKEN) {
        render_mistral_v7(&b, f, msgs, n);
    } else if (f == KVP_CHAT_MISTRAL_V1 || f == KVP_CHAT_MISTRAL_V3 || f == KVP_CHAT_MISTRAL_V3_TEKKEN) {
        render_mistral(&b, f, msgs, n);
    } else if (f >= KVP_CHAT_LLAMA2) {
        render_llama2(&b, f, msgs, n);
    } else {
        for (size_t i = 0; i < n; i++) {
            open_turn(&b, f, msgs[i].role);
            put_trimmed(&b, msgs[i].content, f == KVP_CHAT_LLAMA3, f == KVP_CHAT_LLAMA3);
            close_turn(&b, f);
        }
        if (add_assistant)
            open_turn(&b, f, "assistant");
    }
    if (b.oom) {
        free(b.p);
        return KVP_ERR_NOMEM;
    }
    *out = b.p;
    return KVP_OK;
}

/* The longest run of c in s. */
static size_t longest_run(const char *s, char c)
{
    size_t best = 0, run = 0;
    for (; *s; s++) {
        run = *s == c ? run + 1 : 0;
        best = run > best ? run : best;
    }
    return best;
}

kvp_status kvp_chat_wrap(kvp_chat_format f, const char *system, const char *question, char **before,
                         char **after)
{
    *before = *after = NULL;
    if (f <= KVP_CHAT_NONE || f >= KVP_CHAT_COUNT)
        return KVP_ERR_USAGE;
    /* The conversation rendered with a mark where the documents go, cut at the mark: whatever
     * the format does around the user's content, the two halves are what it does. The mark is
     * \x01 and a run of \x02 longer than any in the texts (the formats' own text has neither),
     * so it appears once. */
    const size_t k = 1 + (system ? longest_run(system, '\x02') : 0) + longest_run(question, '\x02');
    sbuf u = {0};
    puts_(&u, "\x01");
    for (size_t i = 0; i < k; i++)
        puts_(&u, "\x02");
    const size_t ml = u.n;
    puts_(&u, "\n\n");
    puts_(&u, question);
    kvp_chat_msg m[2] = {{"system", system ? system : ""}, {"user", u.p}};
    const int with_sys = system && *system;
    char *all = NULL;
    kvp_status st = u.oom ? KVP_ERR_NOMEM : kvp_chat_render(f, with_sys ? m : m + 1, with_sys ? 2 : 1, 1, &all);
    const char *cut = st == KVP_OK ? memmem(all, strlen(all), u.p, ml) : NULL;
    free(u.p);
    if (st != KVP_OK)
        return st;
    *before = cut ? strndup(all, (size_t)(cut - all)) : NULL;
    *after = cut ? strdup(cut + ml) : NULL;
    free(all);
    if (!*before || !*after) {
        free(*before);
        free(*after);
        *before = *after = NULL;
        return KVP_ERR_NOMEM;
    }
    return KVP_OK;
}
