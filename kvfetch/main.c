/* kvfetch: the loader CLI. Thin dispatcher over the kvfetch/cmd_ files. */
#include "base/base.h"
#include "engine/engine.h"
#include "kvfetch/kvfetch.h"

static const base_cmd cmds[] = {
    /* entries are added as commands land */
    {"get", kvfetch_get_main, "fetch a blob over HTTPS, verify it and keep it in the local cache"},
    {"run", kvfetch_run_main, "load blobs after a prefix into a model and generate"},
    {"compare", kvfetch_compare_main, "run, plus a full prefill: TTFT speedup, KL, bit-exactness"},
    {"inspect", kvfetch_inspect_main, "summarise a blob: document, model, codec, sizes, signer"},
    {"verify", kvfetch_verify_main, "check a blob: signature, trust, expiry, every chunk hash"},
    {"generate", kvfetch_generate_main, "generate text with a local GGUF model (no blobs)"},
    {"export", kvfetch_export_main, "write a verified, placed blob as a llama.cpp sequence-state file"},
    {"search", kvfetch_search_main, "list a kvpubd catalog or a signed snapshot, filtered (model, document, ...)"},
    {"buy", kvfetch_buy_main, "buy a blob from a kvpubd marketplace; the token is kept for get"},
    {"trust", kvfetch_trust_main, "add a publisher's key to a trust directory, by its fingerprint"},
    {"tokenize", kvfetch_tokenize_main, "print the token ids a model's tokenizer gives a text"},
    {NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
    eng_exit_on_sigbus("kvfetch"); /* a mapped model or blob truncated under us: error, not core */
    return base_cmd_dispatch("kvfetch", cmds, argc, argv);
}
