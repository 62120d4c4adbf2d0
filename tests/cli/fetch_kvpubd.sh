#!/usr/bin/env bash
# fetch_kvpubd.sh: the whole loop through real processes on loopback: kvpubd publish (one free,
# one priced blob) -> kvpubd serve (HTTPS) -> kvfetch get --server/--blob -> POST /v1/purchases
# -> get with the Bearer token -> kvfetch run/compare on the fetched blob by URL; refusals: no
# token, a bad token, an expired token (exit 4), the server down (exit 2, then served from cache).
set -eu
. tests/cli/lib/fetch_env.sh
fetch_env_init fetch-kvpubd
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
[ "$(grep -c '"decoded_copy": true' "$tmp/out")" = 2 ] || fail "run did not read both decoded copies: $(cat "$tmp/out")"
[ -e "$tmp/cache/$free.decoded" ] && [ -e "$tmp/cache/$priced.decoded" ] || fail "no decoded copies: $(ls "$tmp/cache")"
cp "$tmp/out" "$tmp/run1.json"
R=("$KVFETCH" run --trust "$tmp/trust" --cacert "$tmp/cert.pem" --model "$tmp/m.gguf" --blob "$base/v1/blobs/$free"
   --prompt " Thus" -n 6 --threads 2 --json)
gen() { jq -c '.token_ids' "$1"; }
note "a damaged decoded copy: run warns, loads the blob itself (the same tokens), and removes it"
cpy="$tmp/cache/$free.decoded"
chmod u+w "$cpy"
printf '\xa5\x5a' | dd of="$cpy" bs=1 seek=$(( $(stat -c %s "$cpy") - 10 )) conv=notrunc status=none
expect_rc 0 "${R[@]}"
expect_err "warning: decoded copy refused and removed: chunk [0-9]+ of [0-9]+: sha256 mismatch; loaded the blob itself"
grep -q '"decoded_copy": false' "$tmp/out" || fail "damaged copy used: $(cat "$tmp/out")"
[ ! -e "$cpy" ] || fail "damaged copy kept"
cp "$tmp/out" "$tmp/run-blob.json"
note "... the next run writes it again and reads it: the same tokens"
expect_rc 0 "${R[@]}"
grep -q '"decoded_copy": true' "$tmp/out" || fail "copy not written again: $(cat "$tmp/out")"
[ -n "$(gen "$tmp/out")" ] && [ "$(gen "$tmp/out")" = "$(gen "$tmp/run-blob.json")" ] ||
  fail "tokens from the copy $(gen "$tmp/out") differ from the blob's $(gen "$tmp/run-blob.json")"
note "... --no-decoded-copy reads the blob, without a word"
expect_rc 0 "${R[@]}" --no-decoded-copy
grep -q '"decoded_copy": false' "$tmp/out" || fail "--no-decoded-copy used the copy: $(cat "$tmp/out")"
[ ! -s "$tmp/err" ] || grep -vq warning "$tmp/err" || fail "--no-decoded-copy warned: $(cat "$tmp/err")"

note "kvpubd killed (SIGKILL) mid-download and restarted: get retries, resumes with Range, verifies"
# A blob big enough (~24 MB, raw f16) that loopback socket buffers cannot hold it, fetched at a
# capped rate so the kill lands mid-transfer.
"$BUILD/kvsynth" --arch llama --layers 8 --dim 256 --heads 4 --kv-heads 4 --ffn 256 --vocab 1024 \
  --ctx 4096 --tokenizer bpe --seed 9 -o "$tmp/big.gguf" >/dev/null
for f in GPL-3 Apache-2.0 Artistic; do cat /usr/share/common-licenses/$f; done | head -c 5200 >"$tmp/big.txt"
big=$("${P[@]}" --model "$tmp/big.gguf" --codec f16 "$tmp/big.txt" | grep -o '"id": *"[0-9a-f]*"' | grep -o '[0-9a-f]\{64\}')
size=$(stat -c %s "$(ls "$tmp/store"/blobs/*/"$big")")
[ "$size" -gt 16000000 ] || fail "big blob is only $size bytes"
"$KVFETCH" get --trust "$tmp/trust" --cacert "$tmp/cert.pem" --retries 8 --limit-rate 4M --quiet \
  --server "$base" --blob "$big" >"$tmp/kill.out" 2>"$tmp/kill.err" &
getpid=$!
sleep 1.5
stop_kvpubd KILL
kill -0 "$getpid" 2>/dev/null || fail "get finished before the server was killed: $(cat "$tmp/kill.err")"
sleep 1
start_kvpubd "$tmp/store"
wait "$getpid" || fail "get did not recover after the restart: $(cat "$tmp/kill.err")"
[ "$(sha256sum "$(cat "$tmp/kill.out")" | cut -d' ' -f1)" = "$big" ] || fail "resumed blob differs"
grep -q "path=\"/v1/blobs/$big\" endpoint=blob status=206" "$tmp/kvpubd.log" ||
  fail "no ranged (206) resumption in the restarted server's log: $(grep blob "$tmp/kvpubd.log" | tail -3)"

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
