#!/usr/bin/env bash
# llamacpp_quant.sh: the ggml tensor types against the real ggml/llama.cpp (the pinned prebuilt
# libggml-base and libllama):
#   - bit-exact dequantization: for each type, random blocks with finite f16 scales go through
#     ggml's own type traits (to_float, scripts/llamacpp/ggml_dequant.c) and through ours
#     (`kvsynth dequant`, portable and AVX2 code); the floats must be identical byte for byte;
#   - end to end: a kvsynth model (llama and qwen3) in each type gives last-position logits
#     after a 48-token prompt within TOL of llama.cpp's (scripts/llamacpp/llama_logits.c, f32 KV
#     cache, flash attention off). The types we supported before (q8_0, q4_0, q4_k, q6_k) run
#     too, under the same tolerance. Both sides round the activations to ggml's Q8 blocks, so
#     most cases agree to 1e-6; the others differ in a last bit somewhere (an f16 block sum,
#     a summation order), which these random models amplify to a few hundredths (spec/engine.md
#     section 3: up to 0.03 for the old q4_0 and 0.05 for q4_k here). TOL is about twice the
#     worst we measured; a wrong block layout gives differences of order 1.
# Skips with one line only when no npm registry is reachable.
set -eu
KVSYNTH=${BUILD:-build}/kvsynth
HARNESS=ggml_dequant WHAT="ggml tensor types"
. tests/cli/lib/llamacpp_env.sh
dequant=$harness
logits=$(llamacpp_build llama_logits)
TYPES="q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k q5_k q6_k"
TOL=0.15

for t in $TYPES f16 bf16; do
  "$dequant" "$t" 4096 "$RANDOM" "$tmp/$t.bin" "$tmp/$t.ggml" || fail "$t: ggml_dequant"
  for mode in "" --scalar; do
    "$KVSYNTH" dequant $mode "$t" "$tmp/$t.bin" "$tmp/$t.ours" || fail "$t: kvsynth dequant $mode"
    cmp -s "$tmp/$t.ggml" "$tmp/$t.ours" || fail "$t${mode:+ ($mode)}: our dequantized floats differ from ggml's"
  done
done
echo "ok: dequantization bit-exact with ggml's to_float for $TYPES f16 bf16"

S="--layers 2 --dim 256 --heads 4 --head-dim 64 --ffn 512 --vocab 512 --ctx 64 --seed 7"
IDS=$(seq 1 48 | awk '{ printf "%s%d", (NR > 1 ? "," : ""), 1 + ($1 * 37) % 500 }')
for arch in llama qwen3; do
  line="$arch:"
  for t in $TYPES; do
    m="$tmp/$arch-$t.gguf"
    "$KVSYNTH" --arch $arch $S --type "$t" -o "$m" >/dev/null || fail "kvsynth --type $t"
    "$KVFETCH" generate --model "$m" --prompt-ids "$IDS" -n 0 --kv-f32 --threads 2 --logits "$tmp/ours" \
      >/dev/null 2>"$tmp/err" || fail "$arch/$t: kvfetch generate: $(cat "$tmp/err")"
    out=$("$logits" "$LLAMACPP_LIB" "$m" "$IDS" "$tmp/llama" --compare "$tmp/ours" --tol $TOL) ||
      fail "$arch/$t: our logits are not within $TOL of llama.cpp's: $out"
    line="$line $t $(echo "$out" | awk '{ print $6 }')"
  done
  echo "max |logit - llama.cpp's| $line"
done
echo "ok: logits of every type within $TOL of llama.cpp's"
