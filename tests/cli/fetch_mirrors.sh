#!/usr/bin/env bash
# fetch_mirrors.sh: kvfetch with several repositories (spec/repository.md section 7), real
# components on loopback: nginx serving a `kvpubd export` tree over HTTPS as mirror 1 and
# `kvpubd serve` as mirror 2. Mirror 1 down from the start, stopped mid-download, too slow,
# serving a tampered chunk (abandoned; the verified bytes kept and the rest from mirror 2), a
# rolled-back and an expired snapshot (that mirror refused, the next one used; all refused: exit
# 5 / 6); both mirrors at once (--parallel 2), also with one tampered; --mirror-order speed;
# mirrors files; a purchase token never sent to a mirror; run fetching through a mirror.
set -eu
. tests/cli/lib/fetch_env.sh
fetch_env_init fetch-mirrors
export XDG_CONFIG_HOME="$tmp/config" # mirrors files (and tokens): never the user's own
K="$BUILD/kvpubd" S="$tmp/store"
mkdir -p "$tmp/trust" "$tmp/www"

note "a store: a 1 MiB blob of 32 chunks, a small one, a priced one; exported; kvpubd serves it"
"$K" keygen -o "$tmp/alice" >/dev/null
CRED=$("$K" publisher add --store "$S" --key "$tmp/alice.pub" --name alice 2>/dev/null)
SK=$("$K" key rotate --store "$S")
cp "$tmp/alice.pub" "$S/signing/$SK.pub" "$tmp/trust/"
mkb() { "$BUILD/kvsynth" blob --key "$tmp/alice.key" --codec f16 "$@"; }
mkb -o "$tmp/big.kvb" --tokens 2048 --layers 2 --kv-dim 64 --chunk-tokens 64 --seed 1 --title Big
mkb -o "$tmp/small.kvb" --seed 2 --title Small
mkb -o "$tmp/priced.kvb" --seed 3 --title Priced
mkb -o "$tmp/late.kvb" --seed 4 --title Late
BIG=$(sha256sum "$tmp/big.kvb" | cut -d' ' -f1)
SMALL=$(sha256sum "$tmp/small.kvb" | cut -d' ' -f1)
PRICED=$(sha256sum "$tmp/priced.kvb" | cut -d' ' -f1)
DOCBIG=$("$KVFETCH" inspect --json "$tmp/big.kvb" | jq -r .manifest.document.sha256)
FP=$(printf 'ab%.0s' $(seq 32))
start_kvpubd "$S"
api="https://127.0.0.1:$KVPUBD_PORT"
C=(curl -sS --cacert "$tmp/cert.pem")
up() { "${C[@]}" -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $CRED" --data-binary @"$1" "$api/v1/blobs$2"; }
[ "$(up "$tmp/big.kvb" "")" = 201 ] && [ "$(up "$tmp/small.kvb" "")" = 201 ] && [ "$(up "$tmp/priced.kvb" "?price=5")" = 201 ] \
  || fail "uploads"
"$K" export --store "$S" --out "$tmp/www" >/dev/null
cp "$tmp/www/v1/snapshot" "$tmp/old.snap"
# the exported blob is a hard link to the store's file: tamper with copies only
cp "$tmp/big.kvb" "$tmp/www/v1/blobs/$BIG.tmp" && mv "$tmp/www/v1/blobs/$BIG.tmp" "$tmp/www/v1/blobs/$BIG"
start_nginx "$tmp/www" 64k
web="https://127.0.0.1:$NGINX_PORT"
down="https://127.0.0.1:1"
nlog="$tmp/nginx/access.log"
klog="$tmp/kvpubd.log"
n=0
# G: a get into a fresh cache each time
G() { n=$((n + 1)); KVPUB_CACHE_DIR="$tmp/cache$n" "$KVFETCH" get --trust "$tmp/trust" --cacert "$tmp/cert.pem" \
  --quiet "$@"; }
src() { jq -r ".sources[$1].$2" "$tmp/out"; }
same() { cmp -s "$(jq -r .path "$tmp/out")" "$1" || fail "the blob fetched differs from $1"; }

note "usage: --mirror needs a repository URL and a blob id; bad --mirror-order / --parallel"
expect_rc 2 G --mirror "ftp://x" --blob "$BIG"
expect_err "not a repository base URL"
expect_rc 2 G --mirror "$web" "$web/v1/blobs/latest.kvb"
expect_err "needs the blob's id"
expect_rc 2 G --mirror "$web" --mirror-order fast --blob "$BIG"
expect_err "mirror-order"
expect_rc 2 G --mirror "$web" --parallel 3 --blob "$BIG"
"$KVFETCH" get --help | grep -q -- "--mirror URL" || fail "get --help lacks --mirror"
for c in run export; do
  "$KVFETCH" $c --help | grep -q -- "--mirror URL" || fail "$c --help lacks --mirror"
done

note "mirror 1 down from the start: abandoned in one line, mirror 2 serves the blob"
expect_rc 0 G --json --mirror "$down" --mirror "$api" "$BIG"
same "$tmp/big.kvb"
expect_err "mirror $down/v1/blobs/$BIG abandoned: "
[ "$(grep -c abandoned "$tmp/err")" = 1 ] || fail "want one line per abandoned mirror: $(cat "$tmp/err")"
[ "$(src 0 result) $(src 1 result) $(src 1 from)" = "abandoned ok 0" ] || fail "sources: $(cat "$tmp/out")"

note "mirror 1 answers 200 with an empty body, or with the blob's first 20 bytes: abandoned, mirror 2 serves"
mkdir -p "$tmp/www/empty/v1/blobs" "$tmp/www/short/v1/blobs"
: >"$tmp/www/empty/v1/blobs/$BIG"
head -c 20 "$tmp/big.kvb" >"$tmp/www/short/v1/blobs/$BIG"
for m in empty:0 short:20; do  # (mirror 2 goes on after the bytes mirror 1 sent, as after a cut)
  expect_rc 0 G --json --mirror "$web/${m%:*}" --mirror "$api" "$BIG"
  same "$tmp/big.kvb"
  expect_err "mirror $web/${m%:*}/v1/blobs/$BIG abandoned: .*truncated"
  [ "$(src 0 result) $(src 1 result) $(src 1 from)" = "abandoned ok ${m#*:}" ] || fail "$m: sources: $(cat "$tmp/out")"
done
note "... that mirror alone: exit 3 (truncated), nothing kept"
expect_rc 3 G --mirror "$web/short" "$BIG"
expect_err "input ends at byte 20 inside the header"
[ -z "$(ls -A "$tmp/cache$n/tmp")" ] || fail "a partial download was kept after a truncated body"

note "mirror 1 serves a tampered chunk: abandoned; the verified bytes kept, the rest from mirror 2"
size=$(stat -c %s "$tmp/big.kvb")
cp "$tmp/big.kvb" "$tmp/bad.kvb"
printf '\xff\x00\xff' | dd of="$tmp/bad.kvb" bs=1 seek=$((size * 3 / 4)) conv=notrunc status=none
cp "$tmp/bad.kvb" "$tmp/www/v1/blobs/$BIG"
: >"$nlog"
expect_rc 0 G --json --mirror "$web" --mirror "$api" "$BIG"
same "$tmp/big.kvb"
expect_err "mirror $web/v1/blobs/$BIG abandoned: .*chunk 2[0-9] of 32: sha256 mismatch"
kept=$(src 0 bytes)
[ "$(src 0 result)" = abandoned ] && [ "$kept" -gt $((size / 2)) ] && [ "$kept" -le $((size * 3 / 4)) ] \
  || fail "mirror 1's verified bytes were not kept: $(cat "$tmp/out")"
[ "$(src 1 from)" = "$kept" ] && [ "$(src 1 result)" = ok ] \
  || fail "mirror 2 did not go on from the verified bytes: $(cat "$tmp/out")"
[ "$(( $(src 1 bytes) + kept ))" = "$size" ] || fail "bytes do not add up: $(cat "$tmp/out")"
grep -q "path=\"/v1/blobs/$BIG\" .*status=206" "$klog" || fail "kvpubd did not serve a range: $(grep blobs "$klog")"
note "... and with the tampered mirror alone: exit 1, nothing kept"
expect_rc 1 G --mirror "$web" "$BIG"
expect_err "sha256 mismatch"
[ -z "$(ls -A "$tmp/cache$n/tmp")" ] || fail "a partial download was kept after a verification failure"

note "mirror 1 stopped mid-download (64 KiB/s): the download goes on from mirror 2"
cp "$tmp/big.kvb" "$tmp/www/v1/blobs/$BIG.tmp" && mv "$tmp/www/v1/blobs/$BIG.tmp" "$tmp/www/v1/blobs/$BIG"
n=$((n + 1))
KVPUB_CACHE_DIR="$tmp/cache$n" "$KVFETCH" get --trust "$tmp/trust" --cacert "$tmp/cert.pem" --quiet --json \
  --mirror "$web/slow" --mirror "$api" "$BIG" >"$tmp/out" 2>"$tmp/err" &
getpid=$!
part="$tmp/cache$n/tmp/$BIG.part"
for i in $(seq 200); do
  [ -f "$part" ] && [ "$(stat -c %s "$part")" -ge 200000 ] && break
  sleep 0.05
done
[ "$(stat -c %s "$part")" -ge 200000 ] || fail "the slow download did not start"
stop_nginx
rc=0; wait "$getpid" || rc=$?
[ "$rc" = 0 ] || fail "get exit $rc: $(cat "$tmp/err")"
same "$tmp/big.kvb"
[ "$(src 0 result)" = abandoned ] && [ "$(src 0 bytes)" -ge 131072 ] && [ "$(src 1 from)" = "$(src 0 bytes)" ] \
  || fail "sources after the stop: $(cat "$tmp/out")"
grep -q "mirror $web/slow/v1/blobs/$BIG abandoned" "$tmp/err" || fail "no line for the stopped mirror: $(cat "$tmp/err")"
start_nginx "$tmp/www" 2k

note "mirror 1 too slow (2 KiB/s, --stall-timeout 1): abandoned after its retries"
t0=$(date +%s)
expect_rc 0 G --json --stall-timeout 1 --mirror "$web/slow" --mirror "$api" "$SMALL"
same "$tmp/small.kvb"
expect_err "abandoned: too slow"
[ $(( $(date +%s) - t0 )) -lt 30 ] || fail "the slow mirror held the download for $(( $(date +%s) - t0 )) s"

note "--mirror-order speed: the slow mirror's probe loses, kvpubd serves; given order kept otherwise"
: >"$nlog"
expect_rc 0 G --json --connect-timeout 2 --mirror-order speed --mirror "$web/slow" --mirror "$api" "$BIG"
[ "$(src 0 url)" = "$api/v1/blobs/$BIG" ] && [ "$(src 0 result)" = ok ] && [ "$(src 1 result)" = unused ] \
  || fail "speed order: $(cat "$tmp/out")"
[ "$(jq '.sources[0].probe_ms > 0' "$tmp/out")" = true ] || fail "no probe time: $(cat "$tmp/out")"
[ "$(grep -c "/slow/v1/blobs/$BIG" "$nlog")" = 1 ] || fail "the slow mirror got more than the probe: $(cat "$nlog")"
expect_rc 0 G --json --mirror "$web" --mirror "$api" "$SMALL"
[ "$(src 0 url) $(src 0 result) $(src 1 result)" = "$web/v1/blobs/$SMALL ok unused" ] || fail "given order: $(cat "$tmp/out")"

note "both mirrors at once (--parallel 2): each serves a half, the file is whole"
: >"$nlog"
expect_rc 0 G --json --parallel 2 --mirror "$web" --mirror "$api" "$BIG"
same "$tmp/big.kvb"
[ "$(jq -r .parallel "$tmp/out") $(src 0 result) $(src 1 result)" = "true ok ok" ] || fail "parallel: $(cat "$tmp/out")"
b0=$(src 0 bytes); b1=$(src 1 bytes)
[ "$b0" -gt $((size / 4)) ] && [ "$b1" -gt $((size / 4)) ] || fail "halves: $b0 and $b1 bytes"
grep -q "GET /v1/blobs/$BIG HTTP/1.1\" 206" "$nlog" || fail "nginx served no range: $(cat "$nlog")"
[ "$(grep -c "path=\"/v1/blobs/$BIG\" .*status=206" "$klog")" -ge 2 ] || fail "kvpubd served no second range"
note "... with mirror 1 tampered: its half fails, mirror 2 takes the rest of it"
cp "$tmp/big.kvb" "$tmp/www/v1/blobs/$BIG"
printf '\xff\x00\xff' | dd of="$tmp/www/v1/blobs/$BIG" bs=1 seek=$((size / 4)) conv=notrunc status=none
expect_rc 0 G --json --parallel 2 --mirror "$web" --mirror "$api" "$BIG"
same "$tmp/big.kvb"
[ "$(src 0 result) $(src 1 result)" = "abandoned ok" ] || fail "parallel failover: $(cat "$tmp/out")"
[ "$(( $(src 0 bytes) + $(src 1 bytes) ))" = "$size" ] && [ "$(src 0 from)" = 0 ] || fail "parallel bytes: $(cat "$tmp/out")"
[ "$(jq .http_bytes "$tmp/out")" -ge $((size / 2)) ] || fail "parallel http_bytes: $(cat "$tmp/out")"
expect_err "mirror $web/v1/blobs/$BIG abandoned: chunk [0-9]+ of 32: sha256 mismatch"
note "... with mirror 1 tampered and mirror 2 down: exit 1 (the bytes' failure, not the network's)"
expect_rc 1 G --parallel 2 --mirror "$web" --mirror "$down" "$BIG"
expect_err "verification failed .*sha256 mismatch"
cp "$tmp/big.kvb" "$tmp/www/v1/blobs/$BIG.tmp" && mv "$tmp/www/v1/blobs/$BIG.tmp" "$tmp/www/v1/blobs/$BIG"

note "mirrors files: --mirrors FILE and the default one; a bad line is named"
printf '# mirrors\n\n  %s   # down\n%s/\n' "$down" "$api" >"$tmp/mirrors"
expect_rc 0 G --json --mirrors "$tmp/mirrors" "$SMALL"
[ "$(src 0 url) $(src 1 result)" = "$down/v1/blobs/$SMALL ok" ] || fail "mirrors file: $(cat "$tmp/out")"
mkdir -p "$XDG_CONFIG_HOME/kvpub"
cp "$tmp/mirrors" "$XDG_CONFIG_HOME/kvpub/mirrors"
expect_rc 0 G --json "$SMALL"
[ "$(src 1 url)" = "$api/v1/blobs/$SMALL" ] || fail "default mirrors file not read: $(cat "$tmp/out")"
expect_rc 0 G --json --mirrors /dev/null --server "$api" "$SMALL"
[ "$(jq '.sources | length' "$tmp/out")" = 1 ] || fail "--mirrors /dev/null: $(cat "$tmp/out")"
rm "$XDG_CONFIG_HOME/kvpub/mirrors"
printf '%s\nnot a url\n' "$api" >"$tmp/mirrors.bad"
expect_rc 2 G --mirrors "$tmp/mirrors.bad" "$SMALL"
expect_err "line 2: "

note "a purchase token goes to its origin only: never to a mirror, nor in a probe"
TOK=$("${C[@]}" -H 'Content-Type: application/json' -d "{\"blob\": \"$PRICED\"}" "$api/v1/purchases" | jq -r .token)
[ ${#TOK} = 64 ] || fail "purchase: $TOK"
: >"$nlog"
expect_rc 0 G --json --token "$TOK" --token-origin "$api" --mirror-order speed --mirror "$web" --mirror "$api" "$PRICED"
same "$tmp/priced.kvb"
[ "$(src 0 result)" = abandoned ] || [ "$(src 0 url)" = "$api/v1/blobs/$PRICED" ] || fail "priced: $(cat "$tmp/out")"
grep -q "/v1/blobs/$PRICED" "$nlog" || fail "the mirror was never asked: $(cat "$nlog")"
! grep -q "auth=\"Bearer" "$nlog" || fail "a token reached the mirror: $(grep Bearer "$nlog")"
note "... and the mirror serving a priced blob it has a copy of still sees no token"
cp "$tmp/priced.kvb" "$tmp/www/v1/blobs/$PRICED"
: >"$nlog"
expect_rc 0 G --json --token "$TOK" --server "$api" --mirror "$web" --mirror-order speed --blob "$PRICED"
! grep -q "auth=\"Bearer" "$nlog" || fail "a token reached the mirror: $(grep Bearer "$nlog")"
rm "$tmp/www/v1/blobs/$PRICED"

note "snapshots: a rolled-back mirror is refused and the next one used"
"${C[@]}" -o /dev/null -X PUT -H "Authorization: Bearer $CRED" --data-binary @"$tmp/late.kvb" "$api/v1/blobs"
sleep 1.1 # the server looks at the catalog at most once a second
"$K" export --store "$S" --out "$tmp/www" >/dev/null
cp "$tmp/big.kvb" "$tmp/www/v1/blobs/$BIG.tmp" && mv "$tmp/www/v1/blobs/$BIG.tmp" "$tmp/www/v1/blobs/$BIG"
cp "$tmp/www/v1/snapshot" "$tmp/new.snap"
SN=(--trust "$tmp/trust" --cacert "$tmp/cert.pem")
export KVPUB_CACHE_DIR="$tmp/cache-snap"
expect_rc 0 "$KVFETCH" search --snapshot "$api" "${SN[@]}" # remembers the new version
cp "$tmp/old.snap" "$tmp/www/v1/snapshot"
: >"$nlog"
expect_rc 0 "$KVFETCH" get --json --snapshot "$web" --mirror "$api" --document "$DOCBIG" --model-fp "$FP" "${SN[@]}"
expect_err "$web: .*older than version .* seen before"
same "$tmp/big.kvb"
! grep -q "/v1/blobs/" "$nlog" || fail "a blob was fetched from the rolled-back mirror: $(cat "$nlog")"
[ "$(src 0 url)" = "$api/v1/blobs/$BIG" ] || fail "blob not from the next mirror: $(cat "$tmp/out")"
expect_rc 0 "$KVFETCH" search --snapshot "$web" --mirror "$api" "${SN[@]}"
expect_err "older than version"
note "... a snapshot file with only mirrors for the blobs"
expect_rc 0 "$KVFETCH" get --json --snapshot "$tmp/new.snap" --mirror "$down" --mirror "$api" --blob "$SMALL" "${SN[@]}"
[ "$(src 0 url) $(src 1 result)" = "$down/v1/blobs/$SMALL ok" ] || fail "snapshot file + mirrors: $(cat "$tmp/out")"
note "... every mirror rolled back: exit 5"
expect_rc 5 "$KVFETCH" get --snapshot "$web" --mirror "$web/slow" --blob "$BIG" "${SN[@]}"
[ "$(grep -c "older than version" "$tmp/err")" = 2 ] || fail "want one line per refused mirror: $(cat "$tmp/err")"

note "snapshots: an expired mirror is refused and the next one used; all expired: exit 6"
"$K" snapshot --store "$S" --now $(( $(date +%s) - 7200 )) --expires 1h -o "$tmp/www/v1/snapshot" 2>/dev/null
expect_rc 0 "$KVFETCH" get --snapshot "$web" --mirror "$api" --blob "$SMALL" "${SN[@]}"
expect_err "$web: .*expired at"
expect_rc 6 "$KVFETCH" get --snapshot "$web" --mirror "$web/slow" --blob "$SMALL" "${SN[@]}"
cp "$tmp/new.snap" "$tmp/www/v1/snapshot"
unset KVPUB_CACHE_DIR

note "kvfetch run fetches a blob id through the mirrors"
"$BUILD/kvsynth" --arch llama --layers 2 --dim 64 --heads 4 --kv-heads 2 --ffn 128 --vocab 512 --ctx 96 \
  --seed 1 -o "$tmp/m.gguf" >/dev/null
n=$((n + 1))
set +e
KVPUB_CACHE_DIR="$tmp/cache$n" "$KVFETCH" run --model "$tmp/m.gguf" --blob "$SMALL" --mirror "$down" --mirror "$api" \
  --trust "$tmp/trust" --cacert "$tmp/cert.pem" --prompt hi -n 1 >"$tmp/out" 2>"$tmp/err"
set -e
[ -f "$tmp/cache$n/$SMALL" ] || fail "run did not fetch the blob through the mirrors: $(cat "$tmp/err")"
expect_err "mirror $down/v1/blobs/$SMALL abandoned"
echo "all checks passed"
