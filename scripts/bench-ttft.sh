#!/usr/bin/env bash
# bench-ttft.sh (make bench; a benchmark, not a test): time to first token with a fetched,
# locally cached KV blob vs a full prefill, for documents of 512, 2048 and 4096 tokens on the
# Qwen3-0.6B-shaped kvsynth model (F16), with the load pipeline broken down by stage and its
# throughput on one core. Writes $BUILD/ttft.txt and the plot $BUILD/ttft.png (gnuplot).
# TOKENS="512 2048" limits the lengths. Targets: >= 50x at 4096 tokens; >= 1 GB/s raw KV/core.
set -euo pipefail
BUILD=${BUILD:-build}
TOKENS=${TOKENS:-512 2048 4096}
data="$BUILD/bench-data"; work="$data/ttft"
mkdir -p "$data"; rm -rf "$work"; mkdir -p "$work/trust" "$work/docs"
SERVER_PID=""
trap '[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null; true' EXIT
export KVPUB_CACHE_DIR="$work/cache"

model="$data/qwen3-0.6b-shape-f16.gguf"
shape=(--arch qwen3 --heads 16 --kv-heads 8 --head-dim 128 --vocab 32000 --ctx 8192 --seed 1)
[ -s "$model" ] || "$BUILD/kvsynth" "${shape[@]}" --layers 28 --dim 1024 --ffn 3072 --type f16 -o "$model" >/dev/null
# a 1-layer twin with the same tokenizer, to size the documents to an exact token count cheaply
twin="$work/twin.gguf"
"$BUILD/kvsynth" "${shape[@]}" --layers 1 --dim 1024 --ffn 64 --type f32 -o "$twin" >/dev/null
"$BUILD/kvpubd" keygen -o "$work/pub" >/dev/null; cp "$work/pub.pub" "$work/trust/"
corpus="$work/corpus.txt"
cat /usr/share/common-licenses/{GPL-3,Apache-2.0,GFDL-1.3,LGPL-2.1,MPL-2.0,Artistic} >"$corpus"

jnum() { sed -n "s/^ *\"$1\": \([^,]*\),\{0,1\}\$/\1/p" "$2" | head -1; }
twin_tokens() {  # BYTES -> token count of the corpus prefix under the twin's tokenizer
  head -c "$1" "$corpus" >"$work/probe.txt"
  rm -rf "$work/twinstore"
  "$BUILD/kvpubd" publish --store "$work/twinstore" --model "$twin" --key "$work/pub.key" --json "$work/probe.txt" 2>/dev/null \
    | grep -o '"tokens": *[0-9]*' | grep -o '[0-9]*$'
}
size_doc() {  # N -> smallest corpus prefix (bytes) with >= N tokens, by bisection
  local lo=1 hi=$(( $1 * 8 )) mid t
  while [ $lo -lt $hi ]; do
    mid=$(( (lo + hi) / 2 )); t=$(twin_tokens $mid || echo 999999)
    if [ "$t" -ge "$1" ]; then hi=$mid; else lo=$((mid + 1)); fi
  done
  echo $lo
}

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$work/tls.key" -out "$work/tls.pem" 2>/dev/null

out="$BUILD/ttft.txt"
printf '# TTFT, Qwen3-0.6B-shaped kvsynth model, F16, %s cores; loaded = cached blob (f16-zstd) right after BOS\n' "$(nproc)" >"$out"
printf '# %6s %10s %10s %8s %9s %9s %9s %9s %9s %9s %10s\n' tokens full_s loaded_s speedup load_ms read_ms vfy+dec_ms rerot_ms import_ms suffix_ms GB/s/core >>"$out"
for n in $TOKENS; do
  bytes=$(size_doc "$n")
  head -c "$bytes" "$corpus" >"$work/docs/doc$n.txt"
  echo "document of $n tokens: first $bytes bytes of the license corpus; publishing (one prefill)..." >&2
  "$BUILD/kvpubd" publish --store "$work/store" --model "$model" --key "$work/pub.key" --json "$work/docs/doc$n.txt" >"$work/pub$n.json"
  id=$(grep -o '"id": *"[0-9a-f]*"' "$work/pub$n.json" | grep -o '[0-9a-f]\{64\}')
  got=$(grep -o '"tokens": *[0-9]*' "$work/pub$n.json" | grep -o '[0-9]*$')
  [ "$got" = "$n" ] || echo "note: document has $got tokens (wanted $n)" >&2
  # fetch it over HTTPS once: later loads come from the local cache
  rm -f "$work/port"
  "$BUILD/kvpubd" serve --store "$work/store" --listen 127.0.0.1:0 --tls-cert "$work/tls.pem" --tls-key "$work/tls.key" \
    --port-file "$work/port" --log "$work/server.log" &
  SERVER_PID=$!
  for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
  url="https://127.0.0.1:$(cat "$work/port")/v1/blobs/$id"
  "$BUILD/kvfetch" get --trust "$work/trust" --cacert "$work/tls.pem" --quiet "$url" >/dev/null
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  "$BUILD/kvfetch" compare --model "$model" --blob "$url" --trust "$work/trust" --prompt " Summary:" -n 4 --json >"$work/cmp$n.json"
  # one decode thread: the load pipeline's throughput per core
  "$BUILD/kvfetch" run --model "$model" --blob "$url" --trust "$work/trust" --prompt " Summary:" -n 1 --threads 1 --json >"$work/one$n.json"
  f=$work/cmp$n.json
  gbs=$(awk -v b="$(jnum raw_kv_bytes "$work/one$n.json")" -v s="$(jnum load_s "$work/one$n.json")" 'BEGIN { printf "%.2f", b / s / 1e9 }')
  awk -v n="$got" -v full="$(jnum full_ttft_s "$f")" -v ld="$(jnum ttft_s "$f")" -v load="$(jnum load_s "$f")" \
      -v rd="$(jnum read_s "$f")" -v vd="$(jnum verify_decode_s "$f")" -v rr="$(jnum rerotate_s "$f")" \
      -v im="$(jnum import_s "$f")" -v sf="$(jnum suffix_prefill_s "$f")" -v g="$gbs" \
      'BEGIN { printf "  %6d %10.3f %10.4f %8.1f %9.2f %9.2f %10.2f %9.2f %9.2f %9.2f %10s\n",
               n, full, ld, full / ld, load * 1e3, rd * 1e3, vd * 1e3, rr * 1e3, im * 1e3, sf * 1e3, g }' >>"$out"
  grep -q '"bit_identical": true' "$f" || echo "warning: loaded path not bit-identical for $n tokens" >&2
done
cat "$out"
if command -v gnuplot >/dev/null; then
  gnuplot <<PLOT
set terminal png size 800,500
set output "$BUILD/ttft.png"
set title "Time to first token: fetched KV cache vs full prefill (Qwen3-0.6B shape, F16)"
set xlabel "document tokens"; set ylabel "seconds"; set logscale y; set grid; set key top left
plot "$out" using 1:2 with linespoints title "full prefill", "$out" using 1:3 with linespoints title "cached blob (load + suffix)"
PLOT
  echo "plot: $BUILD/ttft.png"
fi
