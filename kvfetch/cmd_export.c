/* cmd_export.c: `kvfetch export`: a verified blob placed after BOS (and an optional prefix or
 * chat header, prefilled here) written as a llama.cpp sequence-state file, so llama.cpp (or
 * llama-server's slot restore) continues from it without prefilling the document. */
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"
#include "kvfetch/kvfetch.h"
#include "kvfetch/run_common.h"
#include "kvpub/kvpub.h"

static const char usage_export[] =
    "usage: kvfetch export --model M.gguf --blob FILE|URL [--blob ...] --llama-state OUT\n"
    "                      [--prefix TEXT | --chat [--system TEXT]] [--v-trans] --trust DIR [options]\n"
    "\n"
    "Verifies each blob as run does (signature, hashes, and that it was made by exactly this\n"
    "model, tokenizer and RoPE), builds [BOS, prefix, document 1, ...] in the engine (prefix\n"
    "prefilled, documents loaded with their keys re-rotated to where they sit) and writes it as a\n"
    "llama.cpp sequence-state file: what llama_state_seq_save_file writes and\n"
    "llama_state_seq_load_file / llama-server's POST /slots/N?action=restore read, for the pinned\n"
    "llama.cpp (spec/llama-state.md). The llama.cpp context must use f16 K and V (its default).\n"
    "  --llama-state OUT    the file to write (atomically)\n"
    "  --v-trans            V transposed, for a llama.cpp context with flash attention off\n"
    "                       (default: flash attention on, llama.cpp's CPU default)\n"
    "  --chat, --system     prefix = the chat template's system turn and user header; the user\n"
    "                       then sends \"\\n\\n\" + question + the end of the turn\n"
    KVFETCH_EXPORT_HELP
    KVF_SHARED_HELP
    "\n"
    "exit codes: 0 ok; 1 refused: verification failed, or the blob was made for another model,\n"
    "tokenizer or RoPE; 2 usage, I/O, network, engine error; 3 malformed or truncated blob;\n"
    "4 access denied by the server.\n";

int kvfetch_export_main(int argc, char **argv)
{
    kvfetch_session *s;
    int32_t *seq = NULL;
    size_t n = 0;
    int done, rc = kvfetch_session_start("kvfetch export", argc, argv, usage_export, KVFETCH_CMD_EXPORT, &s, &done);
    if (done || (rc = kvfetch_session_sequence(s, &seq, &n)) != 0)
        goto out;
    double t = base_now_s();
    if (kvp_llama_state_write(s->ctx, s->model, seq, n, s->a.v_trans, s->a.llama_state, s->err, sizeof s->err) !=
        KVP_OK) {
        fprintf(stderr, "%s: %s\n", s->prog, s->err);
        rc = 2;
        goto out;
    }
    double write_s = base_now_s() - t;
    if (s->a.json) {
        json_t *o = json_object();
        json_object_set_new(o, "llama_state", json_string(s->a.llama_state));
        json_object_set_new(o, "tokens", json_integer((json_int_t)n));
        json_object_set_new(o, "v_trans", json_boolean(s->a.v_trans));
        kvfetch_stats_json(o, s, s->pr.ttft_s);
        json_object_set_new(json_object_get(o, "timings"), "write_s", json_real(write_s));
        kvfetch_print_json(o);
    } else if (!s->a.co.quiet) {
        fprintf(stderr, "%s: wrote %s: %zu tokens (BOS, %zu prefix, documents), f16 K/V%s, in %.3f s\n", s->prog,
                s->a.llama_state, n, s->n_prefix, s->a.v_trans ? ", V transposed" : "", write_s);
    }
out:
    free(seq);
    kvfetch_session_free(s);
    return rc;
}
