/* cmd_compare.c: `kvfetch compare`: kvfetch run's loaded path, then a full prefill of the
 * identical tokens (kvp_compare): TTFT of both and the speedup, KL divergence and greedy
 * agreement per position, bit-exactness. */
#include <stdio.h>
#include <stdlib.h>

#include "engine/engine.h"
#include "kvfetch/kvfetch.h"
#include "kvfetch/run_common.h"
#include "kvpub/kvpub.h"

static const char usage_compare[] =
    "usage: kvfetch compare (same options as kvfetch run)\n"
    "\n"
    "Runs kvfetch run's loaded path, then a full prefill of the identical token sequence\n"
    "(BOS, prefix, the documents' own token ids from the blobs, prompt) in a fresh context, and\n"
    "reports both times to first token and the speedup. The loaded path decodes greedily; its\n"
    "tokens are teacher-forced into the full path (--follow full: the other way round), and at\n"
    "each of the N positions it reports KL(full || loaded) of the next-token distributions and\n"
    "whether both argmaxes agree. When all argmaxes agree both paths' greedy outputs are the\n"
    "same text. When every logit matches bit for bit it says 'logits bit-identical to full\n"
    "prefill' (expected with an empty prefix and a lossless codec). --temp is ignored: compare\n"
    "is greedy.\n"
    "\n"
    "exit codes as kvfetch run.\n";

int kvfetch_compare_main(int argc, char **argv)
{
    char *text = NULL;
    int32_t *seq = NULL;
    kvp_compare_result r = {0};
    kvfetch_session *s;
    int done, rc = kvfetch_session_start("kvfetch compare", argc, argv, usage_compare, KVFETCH_CMD_COMPARE, &s, &done);
    if (done)
        goto out;
    size_t total = 0;
    if ((rc = kvfetch_session_sequence(s, &seq, &total)) != 0 || (rc = kvfetch_session_ctx(s, &s->ctx_full)) != 0)
        goto out;
    kvp_compare_opts co = {.model = s->model, .loaded = s->ctx, .full = s->ctx_full, .seq = seq, .n_seq = total,
                           .n_gen = s->a.n_gen, .follow_full = s->a.follow_full};
    if (kvp_compare(&co, s->logits, &r, s->err, sizeof s->err) != KVP_OK) {
        fprintf(stderr, "%s: %s\n", s->prog, s->err);
        rc = 2;
        goto out;
    }
    int n_done = r.positions;
    size_t n_text = 0;
    /* the text run prints: generated pieces, the first keeping its leading space */
    if (eng_detokenize(s->model, r.tokens, (size_t)n_done - (n_done && eng_token_is_eog(s->model, r.tokens[n_done - 1])),
                       0, &text, &n_text) != ENG_OK)
        text = NULL;
    double ttft = s->pr.ttft_s + r.sample_s;
    double speedup = ttft > 0 ? r.full_ttft_s / ttft : 0;
    double tps = r.decode_s > 0 && n_done > 1 ? (n_done - 1) / r.decode_s : 0;
    if (s->a.json) {
        json_t *o = json_object();
        kvfetch_json_text(o, text, n_text);
        json_object_set_new(o, "generated_tokens", json_integer(n_done));
        kvfetch_stats_json(o, s, ttft);
        json_t *t = json_object_get(o, "timings");
        json_object_set_new(t, "decode_tok_per_s", json_real(tps));
        json_object_set_new(t, "full_prefill_s", json_real(r.full_prefill_s));
        json_object_set_new(t, "full_ttft_s", json_real(r.full_ttft_s));
        json_object_set_new(o, "sequence_tokens", json_integer((json_int_t)total));
        json_object_set_new(o, "speedup", json_real(speedup));
        json_object_set_new(o, "method", json_string(s->a.follow_full ? "teacher-forced with the full path's greedy tokens"
                                                                 : "teacher-forced with the loaded path's greedy tokens"));
        json_object_set_new(o, "kl_mean", json_real(r.kl_mean));
        json_object_set_new(o, "kl_max", json_real(r.kl_max));
        json_t *ka = json_array();
        for (int i = 0; i < n_done; i++)
            json_array_append_new(ka, json_real(r.kl[i]));
        json_object_set_new(o, "kl", ka);
        json_object_set_new(o, "positions", json_integer(n_done));
        json_object_set_new(o, "argmax_agree", json_integer(r.argmax_agree));
        json_object_set_new(o, "first_disagreement", json_integer(r.first_disagreement));
        json_object_set_new(o, "greedy_outputs_agree", json_boolean(r.argmax_agree == n_done));
        json_object_set_new(o, "bit_identical", json_boolean(r.bit_identical));
        kvfetch_print_json(o);
    } else {
        if (!s->a.co.quiet)
            kvfetch_stats_text(s, ttft);
        printf("generated (greedy, %d tokens): %s\n", n_done, text ? text : "");
        printf("loaded path: time to first token %.2f ms (prefix prefill %.2f, blob load %.2f, suffix prefill %.2f%s)\n",
               ttft * 1e3, s->pr.prefix_s * 1e3, s->pr.load_s * 1e3, s->pr.suffix_s * 1e3,
               s->pr.head_with_prompt ? " with the prefix" : "");
        printf("full prefill: time to first token %.2f ms (%zu tokens)\n", r.full_ttft_s * 1e3, total);
        printf("speedup: %.1fx\n", speedup);
        double rs = 0;
        uint32_t rn = 0;
        for (int b = 0; b < s->a.n_blobs; b++) {
            rs += s->ls[b].recompute_s;
            rn += s->ls[b].n_recomputed;
        }
        if (rn)
            printf("recomputed: %u document tokens in %.2f ms (%.1f%% of the full prefill's time)\n", rn, rs * 1e3,
                   r.full_ttft_s > 0 ? 100 * rs / r.full_ttft_s : 0);
        printf("KL(full || loaded) over %d positions, teacher-forced with the %s path's greedy tokens: "
               "mean %.3g, max %.3g\n", n_done, s->a.follow_full ? "full" : "loaded", r.kl_mean, r.kl_max);
        if (r.argmax_agree == n_done)
            printf("greedy outputs agree (%d/%d positions)\n", r.argmax_agree, n_done);
        else
            printf("greedy outputs differ: argmax agrees at %d/%d positions, first difference at position %d\n",
                   r.argmax_agree, n_done, r.first_disagreement);
        if (r.bit_identical)
            printf("logits bit-identical to full prefill\n");
        else
            printf("logits differ from full prefill\n");
        printf("decode: %.1f tok/s\n", tps);
    }
out:
    free(text);
    free(seq);
    kvp_compare_result_clear(&r);
    kvfetch_session_free(s);
    return rc;
}
