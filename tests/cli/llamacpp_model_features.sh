#!/usr/bin/env bash
# llamacpp_model_features.sh: GGUF model features checked against the real llama.cpp (the pinned
# prebuilt libllama, scripts/llamacpp/llama_logits.c), on kvsynth models made here:
#   - llama3 RoPE frequency factors (rope_freqs.weight, as Llama 3.1/3.2 GGUFs carry them): our
#     logits after a 48-token prompt equal llama.cpp's within 1e-4 (f32 weights and KV cache),
#     while the same model without the tensor gives llama.cpp logits far from them (so the check
#     can fail); the factors reach the blob's signed RoPE metadata (kvfetch inspect);
#   - stablelm (LayerNorm with biases, q/k/v biases) with partial rotary (rope.dimension_count <
#     head dim, the first dims of each head turned), also with an odd number of turned pairs,
#     grouped-query attention, per-head Q/K LayerNorm and the parallel residual: our logits
#     equal llama.cpp's within 1e-4, while the same weights with another rotary width give
#     llama.cpp logits far from them; the blob's signed RoPE metadata states the width;
#   - partial rotary on llama and qwen3: llama.cpp's graphs refuse it, and so do we, with one
#     clear line;
#   - a tensor no forward pass reads: refused, naming it.
# Skips with one line only when no npm registry is reachable.
set -eu
KVSYNTH=${BUILD:-build}/kvsynth
HARNESS=llama_logits WHAT="llama.cpp model features"
. tests/cli/lib/llamacpp_env.sh
logits=$harness
S="--layers 2 --dim 64 --heads 4 --head-dim 16 --ffn 128 --vocab 512 --ctx 64 --type f32 --seed 7"
IDS=$(seq 1 48 | awk '{ printf "%s%d", (NR > 1 ? "," : ""), 1 + ($1 * 37) % 500 }')
ours() {
  "$KVFETCH" generate --model "$1" --prompt-ids "$IDS" -n 0 --kv-f32 --threads 2 --logits "$2" >/dev/null 2>"$tmp/gen.err" ||
    fail "kvfetch generate on $1: $(cat "$tmp/gen.err")"
}

# rope_freqs: the original context 64 puts most pairs past the factor-8 wavelength
"$KVSYNTH" --arch llama $S --rope-freqs -o "$tmp/freqs.gguf" >/dev/null
"$KVSYNTH" --arch llama $S -o "$tmp/plain.gguf" >/dev/null
ours "$tmp/freqs.gguf" "$tmp/freqs.ours"
"$logits" "$LLAMACPP_LIB" "$tmp/freqs.gguf" "$IDS" "$tmp/freqs.llama" --compare "$tmp/freqs.ours" --tol 1e-4 ||
  fail "rope_freqs: our logits differ from llama.cpp's"
rc=0
"$logits" "$LLAMACPP_LIB" "$tmp/plain.gguf" "$IDS" "$tmp/plain.llama" --compare "$tmp/freqs.llama" --tol 1e-2 || rc=$?
[ "$rc" -eq 2 ] || fail "control: the model without rope_freqs should give other logits in llama.cpp (rc $rc)"
echo "ok: rope_freqs logits match llama.cpp; without the factors they would not"

# the factors are in the signed manifest
"$BUILD/kvpubd" keygen -o "$tmp/pub" >/dev/null
printf 'A document about rotary embeddings and their frequency factors. ' >"$tmp/doc.txt"
"$BUILD/kvpubd" publish --store "$tmp/store" --model "$tmp/freqs.gguf" --key "$tmp/pub.key" --threads 2 \
  --json "$tmp/doc.txt" >"$tmp/pub.json"
blob=$(find "$tmp/store/blobs" -type f | head -1)
[ -n "$blob" ] || fail "publish wrote no blob"
"$KVFETCH" inspect "$blob" | grep -q "^rope freqs: 8 llama3 frequency factors" || fail "inspect shows no frequency factors"
echo "ok: the frequency factors are in the blob's RoPE metadata"

# stablelm with partial rotary (StableLM 2 turns a quarter of each head)
for v in "--n-rot 4" "--n-rot 6 --kv-heads 2" "--n-rot 8 --qk-norm --parallel" "--n-rot 16"; do
  "$KVSYNTH" --arch stablelm $S $v -o "$tmp/st.gguf" >/dev/null
  ours "$tmp/st.gguf" "$tmp/st.ours"
  "$logits" "$LLAMACPP_LIB" "$tmp/st.gguf" "$IDS" "$tmp/st.llama" --compare "$tmp/st.ours" --tol 1e-4 ||
    fail "stablelm $v: our logits differ from llama.cpp's"
done
"$KVSYNTH" --arch stablelm $S --n-rot 4 -o "$tmp/st4.gguf" >/dev/null
"$KVSYNTH" --arch stablelm $S --n-rot 8 -o "$tmp/st8.gguf" >/dev/null
ours "$tmp/st4.gguf" "$tmp/st4.ours"
rc=0
"$logits" "$LLAMACPP_LIB" "$tmp/st8.gguf" "$IDS" "$tmp/st8.llama" --compare "$tmp/st4.ours" --tol 1e-2 || rc=$?
[ "$rc" -eq 2 ] || fail "control: another rotary width should give other logits in llama.cpp (rc $rc)"
echo "ok: stablelm logits match llama.cpp with partial rotary; another rotary width would not"
rm -rf "$tmp/store"
"$BUILD/kvpubd" publish --store "$tmp/store" --model "$tmp/st4.gguf" --key "$tmp/pub.key" --threads 2 \
  --json "$tmp/doc.txt" >/dev/null
blob=$(find "$tmp/store/blobs" -type f | head -1)
"$KVFETCH" inspect "$blob" | grep -q "^rope: *neox, n_rot 4," || fail "inspect does not show the rotary width"
echo "ok: the rotary width is in the blob's RoPE metadata"

# partial rotary elsewhere: refused by llama.cpp's graphs, and by us
for arch in llama qwen3; do
  "$KVSYNTH" --arch $arch $S --n-rot 8 -o "$tmp/partial-$arch.gguf" >/dev/null
  rc=0
  "$KVFETCH" generate --model "$tmp/partial-$arch.gguf" --prompt-ids 1,2 -n 1 >/dev/null 2>"$tmp/err" || rc=$?
  [ "$rc" -eq 3 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "partial rotary" "$tmp/err" ||
    fail "partial rotary ($arch) not refused clearly (rc $rc): $(cat "$tmp/err")"
  rc=0
  # it aborts: an inner shell keeps bash's "Aborted" line off the log
  { "$logits" "$LLAMACPP_LIB" "$tmp/partial-$arch.gguf" 1,2 "$tmp/x" >/dev/null 2>&1; } 2>/dev/null || rc=$?
  [ "$rc" -ne 0 ] || fail "llama.cpp ran partial rotary on $arch: kvpub should support it then"
done
echo "ok: partial rotary refused, as llama.cpp's llama and qwen3 graphs refuse it"

# a tensor no forward pass reads
"$KVSYNTH" --arch qwen2 $S --extra-tensor blk.0.attn_sinks -o "$tmp/extra.gguf" >/dev/null
rc=0
"$KVFETCH" generate --model "$tmp/extra.gguf" --prompt-ids 1,2 -n 1 >/dev/null 2>"$tmp/err" || rc=$?
[ "$rc" -eq 3 ] && grep -q "tensor 'blk.0.attn_sinks' is not used" "$tmp/err" || fail "unused tensor not refused (rc $rc)"
echo "ok: a tensor the forward pass does not read is refused by name"
