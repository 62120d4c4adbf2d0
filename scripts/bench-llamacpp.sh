#!/usr/bin/env bash
# bench-llamacpp.sh (make bench; a benchmark, not a test): llama.cpp's own CPU prefill/decode speed
# on the same Qwen3-0.6B-shaped kvsynth models (F16 and Q8_0) that bench_engine measures, so that
# our engine can be compared with it on this machine, same file, same thread count.
#
# llama.cpp comes from npm: node-llama-cpp 3.22.1 and its prebuilt @node-llama-cpp/linux-x64
# package (libllama / libggml*.so, with per-CPU ggml backends), installed into $BUILD/llamacpp by
# scripts/llamacpp/install.sh (install scripts off). The harness scripts/llamacpp/llama_bench.c
# is compiled against llama.h taken from the package's own source bundle (llama/gitRelease.bundle)
# and drives libllama through its C API; it prints the same lines as bench_engine, per flash-attention
# setting, plus the time to save/restore a 2048-token sequence state. Skips with one line when npm,
# the package, git or a C compiler is missing.
#
# Knobs: THREADS (2), RUNS (3), FA (both | on | off), TYPES ("f16 q8_0"),
#        COMPARE=1 also runs bench_engine right after on each file and prints a side-by-side table,
#        ISA=avx2 measures both as an AVX2-only machine would run them: llama.cpp loads its CPU
#        backend from a copy of the library folder without the AVX-512 / AVX-VNNI variants
#        (so it picks haswell), and our engine runs with KVPUB_CPU=avx2.
set -u
BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
RUNS=${RUNS:-3}
FA=${FA:-both}
TYPES=${TYPES:-f16 q8_0}
here=$(cd "$(dirname "$0")" && pwd)
dir="$BUILD/llamacpp"
skip() { echo "bench-llamacpp: skipped: $*"; exit 0; }

command -v "${CC:-cc}" >/dev/null 2>&1 || skip "no C compiler (${CC:-cc})"
. "$here/llamacpp/install.sh"
llamacpp_install "$dir" || skip "$LLAMACPP_WHY"
lib=$LLAMACPP_LIB
VERSION=$LLAMACPP_VERSION
if [ "${ISA:-}" = avx2 ]; then
  narrow="$BUILD/llamacpp-avx2"; rm -rf "$narrow"; mkdir -p "$narrow"
  for f in "$lib"/*; do
    case "$(basename "$f")" in
      libggml-cpu-*) case "$(basename "$f")" in *haswell*|*sse42*|*x64*|*sandybridge*|*ivybridge*|*piledriver*) ;; *) continue ;; esac ;;
    esac
    ln -s "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$narrow/"
  done
  lib=$narrow
  export KVPUB_CPU=avx2
fi

exe=$(llamacpp_build llama_bench) || skip "cannot compile scripts/llamacpp/llama_bench.c"

data="$BUILD/bench-data"; mkdir -p "$data"
. "$here/bench-model.inc"  # qwen3_model: the model bench_engine measures
num() { sed -n "s/^$1: \([0-9.]*\) .*/\1/p" "$2" | head -1; }  # figure "LABEL: X ..." -> X
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2fx", a / b }'; }

for t in $TYPES; do
  m=$(qwen3_model "$t") || { echo "bench-llamacpp: no $t model"; continue; }
  out="$data/llamacpp-$t.txt"
  echo "# llama.cpp (node-llama-cpp $VERSION), $t, threads $THREADS, load:$(uptime | sed 's/.*load average://')"
  "$exe" "$lib" "$m" --threads "$THREADS" --runs "$RUNS" --fa "$FA" | tee "$out" || { echo "bench-llamacpp: llama_bench failed on $m"; continue; }
  [ "${COMPARE:-0}" = 1 ] || continue
  if [ ! -x "$BUILD/bench/bench_engine" ]; then echo "bench-llamacpp: no $BUILD/bench/bench_engine to compare"; continue; fi
  ours="$data/engine-$t.txt"
  echo "# kvpub engine, $t, threads $THREADS, load:$(uptime | sed 's/.*load average://')"
  "$BUILD/bench/bench_engine" "$m" --threads "$THREADS" --runs "$RUNS" | tee "$ours" || continue
  # llama.cpp figures for flash attention on (its default) come first in $out, off second
  fa_on=$(sed -n '/^-- flash attention on/,/^-- flash attention off/p' "$out")
  fa_off=$(sed -n '/^-- flash attention off/,$p' "$out")
  echo "# side by side, $t, $THREADS threads (ratio = ours / llama.cpp; > 1 means we are faster)"
  printf '%-28s %12s %12s %12s %10s %10s\n' figure ours llama-fa-on llama-fa-off "vs fa-on" "vs fa-off"
  for f in "prefill 512 tokens" "prefill 2048 tokens" "decode at 2048 context"; do
    a=$(num "$f" "$ours"); b=$(num "$f" <(echo "$fa_on")); c=$(num "$f" <(echo "$fa_off"))
    printf '%-28s %12s %12s %12s %10s %10s\n' "$f tok/s" "${a:--}" "${b:--}" "${c:--}" "$(ratio "$a" "$b")" "$(ratio "$a" "$c")"
  done
done
