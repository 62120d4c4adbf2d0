#!/usr/bin/env bash
# bench-llamastate.sh (make bench; a benchmark, not a test): what a llama.cpp user gains from a
# kvpub cache. On the Qwen3-0.6B-shaped F16 kvsynth model that the engine section measures, a
# document of NTOK tokens is published once; then, side by side in one run:
#   - `kvfetch export --llama-state` (verify, load, write the state file): wall time, and
#     seconds per GB of raw f16 KV;
#   - llama.cpp restoring that file (llama_state_seq_load_file) and decoding a short prompt;
#   - llama.cpp prefilling [BOS, document, prompt] itself (the time to first token without kvpub).
# Then the other way: `kvpubd publish --from-llama-state` of that state and of its V-transposed
# twin (what a llama.cpp user with a saved state runs instead of our prefill): whole command.
# llama.cpp is the pinned prebuilt libllama from npm (scripts/llamacpp/install.sh), driven by
# scripts/llamacpp/llama_ttft.c, flash attention on (its CPU default) and f16 K/V.
# Skips with one line when npm, the package or a C compiler is missing.
# Knobs: THREADS (2), RUNS (3), NTOK (2048).
set -u
BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
RUNS=${RUNS:-3}
NTOK=${NTOK:-2048}
here=$(cd "$(dirname "$0")" && pwd)
skip() { echo "bench-llamastate: skipped: $*"; exit 0; }
die() { echo "bench-llamastate: $*" >&2; exit 1; }
median_s() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {printf "%.4f", (NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2) / 1e6}'; }  # us -> median s

command -v "${CC:-cc}" >/dev/null 2>&1 || skip "no C compiler (${CC:-cc})"
. "$here/llamacpp/install.sh"
llamacpp_install "$BUILD/llamacpp" || skip "$LLAMACPP_WHY"
exe=$(llamacpp_build llama_ttft) || skip "cannot compile scripts/llamacpp/llama_ttft.c"

data="$BUILD/bench-data"; mkdir -p "$data"
. "$here/bench-model.inc"
m=$(qwen3_model f16) || die "kvsynth failed"
# raw f16 KV per token of that shape: layers x (K + V) x kv-heads x head-dim x 2 bytes
kv_per_token=$(( 28 * 2 * 8 * 128 * 2 ))

w="$data/llamastate"; mkdir -p "$w/trust"
doc="$w/doc-$NTOK.txt"
if [ ! -s "$doc" ]; then
  # license texts, cut to NTOK tokens (BOS included) under this model's tokenizer
  cat /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/Apache-2.0 >"$w/src.txt"
  bytes=$(( NTOK * 4 ))
  for _ in 1 2 3 4 5 6 7 8; do
    head -c "$bytes" "$w/src.txt" >"$doc"
    n=$("$BUILD/kvfetch" tokenize --model "$m" --no-special - <"$doc" | wc -w)
    [ "$n" -eq "$NTOK" ] && break
    bytes=$(( bytes * NTOK / n ))
  done
fi
if [ ! -s "$w/blob.path" ]; then
  [ -s "$w/pub.key" ] || "$BUILD/kvpubd" keygen -o "$w/pub" >/dev/null || die "keygen failed"
  cp "$w/pub.pub" "$w/trust/"
  rm -rf "$w/store"
  echo "bench-llamastate: publishing the ${NTOK}-token document once (our prefill)..."
  "$BUILD/kvpubd" publish --store "$w/store" --model "$m" --key "$w/pub.key" --threads "$THREADS" "$doc" \
    >/dev/null || die "publish failed"
  find "$w/store/blobs" -type f >"$w/blob.path"
fi
blob=$(cat "$w/blob.path")
prompt=$("$BUILD/kvfetch" tokenize --model "$m" --no-bos " What does this license say about patents?" | tr ' ' ',')

echo "# kvfetch export vs llama.cpp prefill, Qwen3-0.6B shape f16, threads $THREADS, runs $RUNS,"
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load:$(uptime | sed 's/.*load average://')"
times=()
for r in $(seq "$RUNS"); do
  t0=$(date +%s%N)
  "$BUILD/kvfetch" export --model "$m" --blob "$blob" --trust "$w/trust" --threads "$THREADS" \
    --llama-state "$w/doc.state" --json --quiet >"$w/export.json" || die "export failed"
  times+=($(( ($(date +%s%N) - t0) / 1000 )))
done
ex_s=$(median_s "${times[@]}")
ntok=$(jq -r .tokens "$w/export.json")
raw=$(( ntok * kv_per_token ))
awk -v s="$ex_s" -v b="$raw" -v n="$ntok" -v f="$(stat -c %s "$w/doc.state")" 'BEGIN {
  printf "export %d-token blob to a llama.cpp state: %.4f s (median, whole command), raw KV %.1f MB, state file %.1f MB\n", n, s, b / 1e6, f / 1e6
  printf "export rate: %.2f GB/s of raw KV, %.3f s per GB\n", b / 1e9 / s, s / (b / 1e9) }'
jq -r '.timings | to_entries | map("\(.key) \(.value)") | "  (last run: " + join(", ") + ")"' "$w/export.json" 2>/dev/null
"$exe" "$LLAMACPP_LIB" "$m" "$w/doc.state" "$prompt" --fa on --threads "$THREADS" --runs "$RUNS" >"$w/ttft.txt" ||
  die "llama_ttft failed"
cat "$w/ttft.txt"
num() { sed -n "s/^$1[^:]*: \([0-9.]*\) s.*/\1/p" "$w/ttft.txt" | head -1; }
awk -v e="$ex_s" -v r="$(num restore)" -v t="$(num 'ttft with')" -v f="$(num 'full prefill')" 'BEGIN {
  printf "time to first token in llama.cpp: full prefill %.3f s; restore + prompt %.3f s (%.1fx faster);\n", f, t, f / t
  printf "  kvfetch export + restore + prompt %.3f s (%.1fx faster); restore alone %.3f s\n", e + t, f / (e + t), r }'
# the other way: a llama.cpp user publishing the state it already has (both V layouts), instead
# of a prefill: the whole `kvpubd publish --from-llama-state` command (model load, read, encode,
# hash, sign, store), median of RUNS
"$BUILD/kvfetch" export --model "$m" --blob "$blob" --trust "$w/trust" --threads "$THREADS" \
  --llama-state "$w/doc-vt.state" --v-trans --quiet || die "export --v-trans failed"
for st in doc doc-vt; do
  times=()
  for r in $(seq "$RUNS"); do
    rm -rf "$w/restore"
    t0=$(date +%s%N)
    "$BUILD/kvpubd" publish --store "$w/restore" --model "$m" --key "$w/pub.key" --threads "$THREADS" \
      --from-llama-state "$w/$st.state" "$doc" >/dev/null || die "publish --from-llama-state failed"
    times+=($(( ($(date +%s%N) - t0) / 1000 )))
  done
  s=$(median_s "${times[@]}")
  awk -v s="$s" -v b="$raw" -v n="$ntok" -v l="$([ $st = doc ] && echo "V as rows" || echo "V transposed")" 'BEGIN {
    printf "publish a %d-token llama.cpp state (%s): %.4f s (median, whole command), %.2f GB/s of raw KV\n", n, l, s, b / 1e9 / s }'
done
rm -rf "$w/restore" "$w/doc-vt.state"
