#!/usr/bin/env bash
# bench-busy.sh (make bench; a benchmark, not a test): engine speed on a shared machine. Runs
# our engine (bench_engine) and llama.cpp (scripts/llamacpp/llama_bench.c, flash attention on,
# its default) on the same Qwen3-0.6B-shaped model, first on an otherwise idle machine, then
# with BUSY CPU-bound neighbours beside them (bench_burn processes, started here, bounded in
# time and stopped here), and prints both side by side: each figure idle and busy, busy as a
# share of idle, and ours against llama.cpp's under the same load. Figures: prefill of 2048
# tokens and decode at 2048 context (tok/s, medians of RUNS runs).
#
# Knobs: TYPES ("f16"; the weight types to measure), THREADS (2), RUNS (3), DECODE (16 tokens
#        per decode figure), BUSY (2 neighbours), BURN_MEM (MiB each neighbour streams over;
#        empty: spin in registers).
set -u
BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
RUNS=${RUNS:-3}
DECODE=${DECODE:-16}
BUSY=${BUSY:-2}
TYPES=${TYPES:-f16}
here=$(cd "$(dirname "$0")" && pwd)
data="$BUILD/bench-data"; mkdir -p "$data"
. "$here/bench-model.inc"
for b in bench_engine bench_burn; do
  [ -x "$BUILD/bench/$b" ] || { echo "bench-busy: skipped: no $BUILD/bench/$b (make bench builds it)"; exit 0; }
done

llama=
if command -v "${CC:-cc}" >/dev/null 2>&1; then
  . "$here/llamacpp/install.sh"
  if llamacpp_install "$BUILD/llamacpp" && exe=$(llamacpp_build llama_bench); then
    llama="$exe"
  else
    echo "bench-busy: llama.cpp not available (${LLAMACPP_WHY:-cannot build llama_bench}); ours only"
  fi
fi

burners=
stop_burners() { [ -n "$burners" ] && kill $burners 2>/dev/null; wait $burners 2>/dev/null; burners=; }
trap stop_burners EXIT
start_burners() {
  for _ in $(seq "$BUSY"); do
    "$BUILD/bench/bench_burn" 900 ${BURN_MEM:+--mem "$BURN_MEM"} & burners="$burners $!"
  done
  sleep 1 # let them reach their time slices
}
num() { sed -n "s/^$1: \([0-9.]*\) .*/\1/p" "$2" | head -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2fx", a / b }'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

for t in $TYPES; do
  m=$(qwen3_model "$t") || { echo "bench-busy: no $t model"; continue; }
  for cond in idle busy; do
    [ "$cond" = busy ] && start_burners
    echo "# $t, $cond ($([ "$cond" = busy ] && echo "$BUSY CPU-bound neighbours${BURN_MEM:+ streaming $BURN_MEM MiB each}" || echo "no neighbours")), threads $THREADS"
    echo "#   ours: load $(load)"
    "$BUILD/bench/bench_engine" "$m" --threads "$THREADS" --runs "$RUNS" --decode "$DECODE" --brief 1 > "$data/busy-ours-$t-$cond.txt" ||
      echo "bench-busy: bench_engine failed"
    if [ -n "$llama" ]; then
      echo "#   llama.cpp: load $(load)"
      "$llama" "$LLAMACPP_LIB" "$m" --threads "$THREADS" --runs "$RUNS" --decode "$DECODE" --brief 1 --fa on > "$data/busy-llama-$t-$cond.txt" ||
        echo "bench-busy: llama_bench failed"
    fi
    stop_burners
  done
  echo "# side by side, $t, $THREADS threads, $BUSY neighbours (tok/s; share = busy / idle; vs llama = ours / llama.cpp, busy)"
  printf '%-24s %9s %9s %7s %11s %11s %7s %9s\n' figure ours-idle ours-busy share llama-idle llama-busy share "vs llama"
  for f in "prefill 2048 tokens" "decode at 2048 context"; do
    oi=$(num "$f" "$data/busy-ours-$t-idle.txt"); ob=$(num "$f" "$data/busy-ours-$t-busy.txt")
    li=; lb=
    [ -n "$llama" ] && { li=$(num "$f" "$data/busy-llama-$t-idle.txt"); lb=$(num "$f" "$data/busy-llama-$t-busy.txt"); }
    printf '%-24s %9s %9s %7s %11s %11s %7s %9s\n' "$f" "${oi:--}" "${ob:--}" "$(ratio "$ob" "$oi")" \
      "${li:--}" "${lb:--}" "$(ratio "$lb" "$li")" "$(ratio "$ob" "$lb")"
  done
done
