#!/usr/bin/env bash
# fetch_kvpubd.sh: the whole loop through real processes on loopback: kvpubd publish (one free,
# one priced blob) -> kvpubd serve (HTTPS) -> kvfetch get --server/--blob -> POST /v1/purchases
# -> get with the Bearer token -> kvfetch run/compare on the fetched blob by URL; refusals: no
# token, a bad token, an expired token (exit 4), the server down (exit 2, then served from cache).
set -eu
BUILD=${BUILD:-build}
KVFETCH=${KVFETCH:-$BUILD/kvfetch}
tmp=$(mktemp -d /tmp/kvpub-fetch-kvpubd-XXXXXX)
. tests/cli/lib/fetch_env.sh
trap fetch_env_cleanup EXIT
export KVPUB_CACHE_DIR="$tmp/cache"

"$BUILD/kvsynth" --arch qwen3 --layers 2 --dim 64 --heads 4 --kv-heads 2 --head-dim 16 --ffn 128 \
  --vocab 1024 --ctx 1024 --tokenizer bpe --seed 5 -o "$tmp/m.gguf" >/dev/null
"$BUILD/kvpubd" keygen -o "$tmp/pub" >/dev/null
mkdir -p "$tmp/trust"; cp "$tmp/pub.pub" "$tmp/trust/"
head -c 400 /usr/share/common-licenses/GPL-3 >"$tmp/free.txt"
head -c 400 /usr/share/common-licenses/Apache-2.0 >"$tmp/priced.txt"
P=("$BUILD/kvpubd" publish --store "$tmp/store" --model "$tmp/m.gguf" --key "$tmp/pub.key" --threads 2 --json)
free=$("${P[@]}" "$tmp/free.txt" | grep -o '"id": *"[0-9a-f]*"' | grep -o '[0-9a-f]\{64\}')
priced=$("${P[@]}" --price 100 "$tmp/priced.txt" | grep -o '"id": *"[0-9a-f]*"' | grep -o '[0-9a-f]\{64\}')
[ -n "$free" ] && [ -n "$priced" ] || fail "publish printed no ids"

start_kvpubd "$tmp/store"
base="https://127.0.0.1:$KVPUBD_PORT"
G=("$KVFETCH" get --trust "$tmp/trust" --cacert "$tmp/cert.pem" --retries 1 --server "$base")

note "free blob through the API"
expect_rc 0 "${G[@]}" --blob "$free"
[ "$(sha256sum "$(cat "$tmp/out")" | cut -d' ' -f1)" = "$free" ] || fail "fetched file is not the blob id"

note "priced blob: no token -> exit 4 (access denied), nothing cached"
expect_rc 4 "${G[@]}" --blob "$priced"
expect_err "HTTP 401"
[ ! -e "$tmp/cache/$priced" ] || fail "cached without a token"
note "a malformed token -> exit 4"
expect_rc 4 "${G[@]}" --blob "$priced" --token nonsense
note "buy a token (POST /v1/purchases), then get"
tok=$(curl -sf --cacert "$tmp/cert.pem" -H 'Content-Type: application/json' \
  -d "{\"blob\": \"$priced\"}" "$base/v1/purchases" | grep -o '"token": *"[0-9a-f]*"' | grep -o '[0-9a-f]\{64\}')
[ -n "$tok" ] || fail "purchase returned no token"
expect_rc 0 "${G[@]}" --blob "$priced" --token "$tok" --json
grep -q '"from_cache": false' "$tmp/out" || fail "not downloaded: $(cat "$tmp/out")"

note "run and compare on the priced blob by URL (from the cache, verified while loading)"
url="$base/v1/blobs/$priced"
expect_rc 0 "$KVFETCH" compare --trust "$tmp/trust" --cacert "$tmp/cert.pem" --model "$tmp/m.gguf" \
  --blob "$url" --prompt " Thus" -n 6 --threads 2
grep -qx "logits bit-identical to full prefill" "$tmp/out" || fail "not exact: $(cat "$tmp/out")"
expect_rc 0 "$KVFETCH" run --trust "$tmp/trust" --cacert "$tmp/cert.pem" --model "$tmp/m.gguf" \
  --blob "$url" --blob "$base/v1/blobs/$free" --prefix "Read:" --prompt " Thus" -n 6 --threads 2 --json
grep -q '"generated_tokens": 6' "$tmp/out" || fail "run --json: $(cat "$tmp/out")"

note "an expired token -> exit 4"
stop_kvpubd
start_kvpubd "$tmp/store" --token-ttl 1s
rm -f "$tmp/cache/$priced"
tok2=$(curl -sf --cacert "$tmp/cert.pem" -H 'Content-Type: application/json' \
  -d "{\"blob\": \"$priced\"}" "$base/v1/purchases" | grep -o '"token": *"[0-9a-f]*"' | grep -o '[0-9a-f]\{64\}')
sleep 2.1
expect_rc 4 "${G[@]}" --blob "$priced" --token "$tok2"
expect_err "HTTP (401|403)"

note "server down: a cached blob is still served (no network), an uncached one fails with exit 2"
stop_kvpubd
expect_rc 0 "${G[@]}" --blob "$free"
expect_err "no network"
expect_rc 2 "${G[@]}" --blob "$priced" --token "$tok"
echo PASS
