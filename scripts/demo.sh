#!/usr/bin/env bash
# demo.sh: kvpub end to end on loopback (make demo): a synthetic model (or MODEL=path.gguf), a
# throwaway TLS certificate and publisher key, three license texts published (one priced),
# kvpubd serve, a purchase, kvfetch get, kvfetch compare after a system prompt: the generated
# text and the time-to-first-token speedup over a full prefill. Leaves nothing running.
set -euo pipefail
BUILD=${BUILD:-build}
demo="$BUILD/demo"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'echo "demo: failed (logs under $demo)" >&2' ERR
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

for t in kvpubd kvfetch kvsynth; do [ -x "$BUILD/$t" ] || { echo "demo: $BUILD/$t missing: run make all" >&2; exit 2; }; done
for c in openssl curl; do command -v $c >/dev/null || { echo "demo: needs $c (scripts/deps.sh)" >&2; exit 2; }; done
rm -rf "$demo"; mkdir -p "$demo/trust" "$demo/docs"
export KVPUB_CACHE_DIR="$demo/cache"   # the demo's own blob cache, not yours

say "1. a model"
if [ -n "${MODEL:-}" ]; then
  model=$MODEL; echo "using MODEL=$model"
else
  model="$demo/model.gguf"
  echo "synthetic qwen3-style model: 4 layers, dim 512, 8 heads (4 KV), vocab 8192, BPE, context 4096, f16"
  echo "(random weights: the text it writes is nonsense; timings and exactness are what to look at)"
  "$BUILD/kvsynth" --arch qwen3 --layers 4 --dim 512 --heads 8 --kv-heads 4 --head-dim 64 --ffn 1536 \
    --vocab 8192 --ctx 4096 --tokenizer bpe --type f16 --seed 7 -o "$model" >/dev/null
fi

say "2. a throwaway TLS certificate for 127.0.0.1 and a publisher key"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$demo/tls.key" -out "$demo/tls.pem" 2>/dev/null
keyid=$("$BUILD/kvpubd" keygen -o "$demo/publisher")
cp "$demo/publisher.pub" "$demo/trust/"
echo "publisher key id $keyid; the loader trusts it: $demo/trust/publisher.pub"

say "3. publish three documents (prefill once, sign, index)"
lic=/usr/share/common-licenses
# The model's context is 4096 tokens and this synthetic tokenizer makes ~1.5 bytes a token:
# the documents are the first bytes of each license, truncated to fit.
head -c 4000 "$lic/GPL-3" >"$demo/docs/GPL-3.txt"
head -c 1500 "$lic/Apache-2.0" >"$demo/docs/Apache-2.0.txt"
head -c 1500 "$lic/BSD" >"$demo/docs/BSD.txt"
echo "GPL-3 (first 4000 bytes) priced at 100; Apache-2.0 and BSD (first 1500 bytes) free"
pub=("$BUILD/kvpubd" publish --store "$demo/store" --model "$model" --key "$demo/publisher.key" --json)
gpl=$("${pub[@]}" --price 100 --title "GNU GPL v3 (excerpt)" "$demo/docs/GPL-3.txt" | grep -o '"id": *"[0-9a-f]*"' | grep -o '[0-9a-f]\{64\}')
"${pub[@]}" "$demo/docs/Apache-2.0.txt" "$demo/docs/BSD.txt" >/dev/null
echo "published; the GPL-3 blob id (SHA-256 of the blob file) is $gpl"

say "4. serve the store over HTTPS on loopback"
"$BUILD/kvpubd" serve --store "$demo/store" --listen 127.0.0.1:0 --tls-cert "$demo/tls.pem" \
  --tls-key "$demo/tls.key" --port-file "$demo/port" --log "$demo/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do [ -s "$demo/port" ] && break; sleep 0.1; done
[ -s "$demo/port" ] || { echo "demo: kvpubd serve did not start: $(tail -3 "$demo/server.log")" >&2; exit 2; }
base="https://127.0.0.1:$(cat "$demo/port")"
echo "kvpubd serve is listening at $base (pid $SERVER_PID); the catalog:"
curl -s --cacert "$demo/tls.pem" "$base/v1/catalog" | head -c 600; echo

say "5. fetching the priced blob without paying is refused"
"$BUILD/kvfetch" get --trust "$demo/trust" --cacert "$demo/tls.pem" --server "$base" --blob "$gpl" --quiet \
  && { echo "demo: expected a refusal" >&2; exit 1; } || echo "(exit $? as documented: access denied)"

say "6. buy it (kvfetch buy: the token is kept, 0600, for this server only) and fetch it"
export XDG_CONFIG_HOME="$demo/config"   # the demo's token file, not yours
"$BUILD/kvfetch" buy "$gpl" --server "$base" --cacert "$demo/tls.pem"
"$BUILD/kvfetch" get "$gpl" --server "$base" --trust "$demo/trust" --cacert "$demo/tls.pem"

say "7. stop the server: the blob is in the local cache now"
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
"$BUILD/kvfetch" get --trust "$demo/trust" --cacert "$demo/tls.pem" --server "$base" --blob "$gpl" >/dev/null

system="You are a careful assistant. Answer questions about the license below in plain words."
say "8. load it after a system prompt and answer; compare with a full prefill of the same tokens"
echo "system prompt: \"$system\""
echo "prompt: \" Question: may I sell copies? Answer:\""
"$BUILD/kvfetch" compare --trust "$demo/trust" --model "$model" --blob "$KVPUB_CACHE_DIR/$gpl" \
  --prefix "$system" --prompt " Question: may I sell copies? Answer:" -n 24 | tee "$demo/compare.txt"

say "9. placed right after BOS (no system prompt) the load is exact"
"$BUILD/kvfetch" compare --trust "$demo/trust" --model "$model" --blob "$KVPUB_CACHE_DIR/$gpl" --quiet \
  --prompt " Question: may I sell copies? Answer:" -n 8 | grep -E "speedup|bit-identical|differ"

say "done"
echo "time to first token: $(grep '^speedup' "$demo/compare.txt" | cut -d' ' -f2) faster with the fetched cache than a full prefill"
echo "everything the demo made is under $demo; nothing is left running"
