#!/usr/bin/env bash
# Runs every libFuzzer target in build-fuzz/fuzz once over its committed seed corpus
# (fuzz/corpus/<target>/), plus spec/vectors for the blob reader and two freshly generated
# kvsynth models for the GGUF reader: a regression replay, not a fuzzing campaign.
# Closes with "N passed, N failed" (one per target).
set -u
FUZZ=${FUZZ:-build-fuzz/fuzz}
KVSYNTH=${KVSYNTH:-build/kvsynth}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# libFuzzer takes directories (or only files): the generated models get one of their own
mkdir -p "$tmp/gguf"
"$KVSYNTH" --arch llama --layers 1 --dim 32 --heads 2 --kv-heads 1 --ffn 32 --vocab 300 \
  --seed 1 -o "$tmp/gguf/llama.gguf" >/dev/null &&
"$KVSYNTH" --arch qwen3 --layers 1 --dim 32 --heads 2 --kv-heads 1 --ffn 32 --vocab 300 \
  --tokenizer bpe --type q8_0 --seed 2 -o "$tmp/gguf/qwen3.gguf" >/dev/null ||
  { echo "fuzz-replay: $KVSYNTH could not make the GGUF seeds"; exit 1; }
pass=0; fail=0
for bin in "$FUZZ"/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  inputs=()
  [ -d "fuzz/corpus/$name" ] && inputs+=("fuzz/corpus/$name")
  case $name in
    fuzz_kvblob) inputs+=(spec/vectors) ;;
    fuzz_gguf) inputs+=("$tmp/gguf") ;;
  esac
  if [ ${#inputs[@]} -eq 0 ]; then
    echo "FAIL  $name: no seed corpus (fuzz/corpus/$name)"; fail=$((fail+1)); continue
  fi
  # -runs=0: execute each input once, no mutation; any crash, leak or UB report fails it
  if timeout 600 "$bin" -runs=0 "${inputs[@]}" >"$tmp/$name.log" 2>&1; then
    n=$(grep -o 'INITED.*' "$tmp/$name.log" | head -1)
    echo "PASS  $name  (${n:-ran})"; pass=$((pass+1))
  else
    echo "FAIL  $name"; tail -n 30 "$tmp/$name.log" | sed 's/^/      /'; fail=$((fail+1))
  fi
done
echo "fuzz-replay: $pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
