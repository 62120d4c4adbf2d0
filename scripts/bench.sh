#!/usr/bin/env bash
# Runs kvpub's benchmarks (not tests): blob codecs, quant kernels, engine prefill/decode on a
# Qwen3-0.6B-shaped synthetic model, load pipeline/TTFT, HTTPS serving vs nginx and the
# snapshot/mirror figures of spec/scale.md (scripts/bench-*.sh), as far as each exists. Models and outputs go under $BUILD/bench-data. BENCH=name runs only matching ones.
set -u
BUILD=${BUILD:-build}
export BUILD
data="$BUILD/bench-data"; mkdir -p "$data"
want() { case "$1" in *"${BENCH:-}"*) return 0;; *) return 1;; esac; }
section() { printf '\n== %s ==\n' "$*"; }

. "$(dirname "$0")/bench-model.inc"

# The machine, for reading the figures: CPU, load, and whether the kernel ages pages (DAMON's
# sampling clears accessed bits, which makes the first pass over mapped weights after a pause
# slower: see bench_engine's "after a pause" line).
printf '# %s, %s cores, load %s\n' "$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)" "$(nproc)" \
  "$(cut -d' ' -f1-3 /proc/loadavg)"
damon=off
for st in /sys/kernel/mm/damon/admin/kdamonds/*/state; do
  [ "$(cat "$st" 2>/dev/null)" = on ] && damon=on
done
printf '# DAMON page monitoring: %s\n' "$damon"

if want kvblob && [ -x "$BUILD/bench/bench_kvblob" ]; then
  section "blob codecs (Qwen3-0.6B-shaped KV, 4096 tokens)"
  "$BUILD/bench/bench_kvblob" --tokens 4096
  echo "the default codec again, its chunk digest forced onto OpenSSL (one leaf at a time):"
  KVPUB_LEAF_HASH=openssl "$BUILD/bench/bench_kvblob" --tokens 4096 --codec f16-zstd | tail -1
fi
if want quant && [ -x "$BUILD/bench/bench_quant" ]; then
  section "matvec kernels"
  "$BUILD/bench/bench_quant"
fi
if want engine && [ -x "$BUILD/bench/bench_engine" ]; then
  for t in f16 q8_0; do
    section "engine prefill/decode, Qwen3-0.6B shape, $t"
    m=$(qwen3_model "$t") && "$BUILD/bench/bench_engine" "$m"
  done
fi
# The engine and loader comparisons first, the serving storms (fairness, scale, serve) last:
# right after fairness's 64 clients, our F16 prefill in the llamacpp section ran 18-33% below
# its own figures minutes before and after (two runs; llama.cpp's within 5%), so the
# side-by-side ratios measured the aftermath, not the engines. Any other bench-*.sh follows.
order="busy llamacpp llamastate ttft quality fairness scale serve"
for s in $(for n in $order; do echo "scripts/bench-$n.sh"; done) \
         $(ls scripts/bench-*.sh | grep -vE "/bench-($(echo $order | tr ' ' '|'))\.sh$"); do
  [ -f "$s" ] || continue
  n=$(basename "$s" .sh); n=${n#bench-}
  want "$n" || continue
  section "$n"
  if [ "$n" = llamacpp ]; then
    # side by side with our engine; on an AVX-512 machine again as an AVX2-only one would run
    COMPARE=1 bash "$s"
    if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
      section "llamacpp, both capped at AVX2 (ISA=avx2)"
      ISA=avx2 COMPARE=1 bash "$s"
    fi
  else
    bash "$s"
  fi
done
