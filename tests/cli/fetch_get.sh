#!/usr/bin/env bash
# fetch_get.sh: `kvfetch get` against an nginx static HTTPS mirror on loopback: verified
# download into the content-addressed cache, a second get with the server stopped, -o, --json,
# TLS verification, untrusted/revoked/expired signers, a chunk tampered on the mirror, a body
# longer than the manifest, 404, a truncated download that resumes with Range, the server killed
# mid-download and restarted, LRU eviction under --cache-max. Blobs: the spec/vectors ones.
set -eu
. tests/cli/lib/fetch_env.sh
fetch_env_init fetch-get

mkdir -p "$tmp/www" "$tmp/trust" "$tmp/untrusted" "$tmp/revoked" "$tmp/expired"
cp spec/vectors/test-key.pub "$tmp/trust/"
cp spec/vectors/test-key.pub "$tmp/revoked/"
echo "e5337331b87e3772  # test key, revoked" >"$tmp/revoked/revoked"
"$BUILD/kvpubd" keygen -o "$tmp/untrusted/other" >/dev/null
rm -f "$tmp/untrusted/other.key"

# the mirror serves blobs under their id (SHA-256 of the file)
declare -A ID
for v in f16 f16-zstd q8 q4; do
  id=$(sha256sum "spec/vectors/vec-$v.kvb" | cut -d' ' -f1)
  ID[$v]=$id
  cp "spec/vectors/vec-$v.kvb" "$tmp/www/$id"
done
export KVPUB_CACHE_DIR="$tmp/cache"
start_nginx "$tmp/www" 2k
base="https://127.0.0.1:$NGINX_PORT"
G=("$KVFETCH" get --trust "$tmp/trust" --cacert "$tmp/cert.pem" --retries 2)

note "--help and usage errors"
"$KVFETCH" get --help | grep -q "exit codes" || fail "get --help lacks exit codes"
expect_rc 2 "$KVFETCH" get --trust "$tmp/trust"
expect_err "give a blob URL"
expect_rc 2 "$KVFETCH" get "$base/${ID[f16]}"
expect_err "--trust DIR is required"
expect_rc 2 "$KVFETCH" get --bogus x
expect_err "bogus"

note "download: verified, cached under its SHA-256"
expect_rc 0 "${G[@]}" "$base/${ID[f16]}"
path=$(cat "$tmp/out")
[ "$path" = "$tmp/cache/${ID[f16]}" ] || fail "printed path $path, want the cache path"
[ "$(sha256sum "$path" | cut -d' ' -f1)" = "${ID[f16]}" ] || fail "cached file does not hash to its name"
cmp -s "$path" spec/vectors/vec-f16.kvb || fail "cached file differs from the mirror's"
expect_err "verified blob ${ID[f16]}.*downloaded"
[ -z "$(ls -A "$tmp/cache/tmp")" ] || fail "partial files left behind: $(ls "$tmp/cache/tmp")"
grep -c '" 200 .*kvfetch' "$tmp/nginx/access.log" | grep -qx 1 || fail "want one download: $(cat "$tmp/nginx/access.log")"

note "TLS: the self-signed certificate is refused without --cacert (exit 2)"
expect_rc 2 "$KVFETCH" get --trust "$tmp/trust" --retries 1 "$base/${ID[q8]}"
expect_err "(certificate|SSL)"
note "plain http:// is refused"
expect_rc 2 "${G[@]}" "http://127.0.0.1:$NGINX_PORT/${ID[q8]}"

note "untrusted signer (exit 1), nothing cached"
expect_rc 1 "$KVFETCH" get --trust "$tmp/untrusted" --cacert "$tmp/cert.pem" "$base/${ID[q8]}"
expect_err "verification failed .*(untrusted|trust)"
[ ! -e "$tmp/cache/${ID[q8]}" ] || fail "untrusted blob was cached"
[ -z "$(ls -A "$tmp/cache/tmp")" ] || fail "partial kept after a verification failure"

note "revoked signer (exit 1), also for a blob already in the cache"
expect_rc 1 "$KVFETCH" get --trust "$tmp/revoked" --cacert "$tmp/cert.pem" "$base/${ID[q4]}"
expect_err "revoked"
expect_rc 1 "$KVFETCH" get --trust "$tmp/revoked" --cacert "$tmp/cert.pem" "$base/${ID[f16]}"
expect_err "revoked"

note "expired blob (exit 1)"
"$BUILD/kvsynth" vectors -o "$tmp/expired" --created 1600000000 --expires 1600003600 >/dev/null
eid=$(sha256sum "$tmp/expired/vec-f16.kvb" | cut -d' ' -f1)
cp "$tmp/expired/vec-f16.kvb" "$tmp/www/$eid"
expect_rc 1 "${G[@]}" "$base/$eid"
expect_err "expired"
note "... and accepted when judged at a time before expiry (--now)"
expect_rc 0 "${G[@]}" --now 1600000100 "$base/$eid"

note "a chunk tampered on the mirror (exit 1, no cache entry, no partial kept)"
tid=${ID[f16-zstd]}
cp spec/vectors/vec-f16-zstd.kvb "$tmp/www/$tid"
size=$(stat -c %s "$tmp/www/$tid")
printf '\xff' | dd of="$tmp/www/$tid" bs=1 seek=$((size - 100)) conv=notrunc status=none
expect_rc 1 "${G[@]}" "$base/$tid"
expect_err "chunk.*(sha256|hash)"
[ ! -e "$tmp/cache/$tid" ] || fail "tampered blob cached"
[ -z "$(ls -A "$tmp/cache/tmp")" ] || fail "tampered partial kept"
cp spec/vectors/vec-f16-zstd.kvb "$tmp/www/$tid"

note "a body longer than the manifest declares (exit 1)"
cat spec/vectors/vec-q8.kvb spec/vectors/vec-q8.kvb >"$tmp/www/long-q8.kvb"
expect_rc 1 "${G[@]}" "$base/long-q8.kvb"
expect_err "larger than the blob"

note "a mirror serving another blob under the id (exit 1)"
cp spec/vectors/vec-q4.kvb "$tmp/www/${ID[q8]}.kvb"
expect_rc 1 "${G[@]}" "$base/${ID[q8]}.kvb"
expect_err "blob id mismatch"

note "404 (exit 2)"
expect_rc 2 "${G[@]}" "$base/0000000000000000000000000000000000000000000000000000000000000000"
expect_err "HTTP 404"
[ -z "$(ls -A "$tmp/cache/tmp")" ] || fail "an empty partial file was left after a 404: $(ls "$tmp/cache/tmp")"

note "-o and --json"
expect_rc 0 "${G[@]}" -o "$tmp/copy.kvb" --json "$base/${ID[f16]}"
cmp -s "$tmp/copy.kvb" spec/vectors/vec-f16.kvb || fail "-o copy differs"
grep -q "\"id\": \"${ID[f16]}\"" "$tmp/out" || fail "--json lacks the id: $(cat "$tmp/out")"
grep -q '"from_cache": true' "$tmp/out" || fail "--json: second get not from cache"

note "decoded copies (spec/kvblob.md 4.2): f16-zstd gets one beside the blob, f16 none"
grep -q '"decoded_path": null' "$tmp/out" || fail "--json: an f16 blob got a decoded copy: $(cat "$tmp/out")"
[ ! -e "$tmp/cache/${ID[f16]}.decoded" ] || fail "an f16 blob got a decoded copy"
zid=${ID[f16-zstd]}
expect_rc 0 "${G[@]}" --no-decoded-copy --json "$base/$zid"
grep -q '"decoded_path": null' "$tmp/out" || fail "--no-decoded-copy still wrote one: $(cat "$tmp/out")"
[ ! -e "$tmp/cache/$zid.decoded" ] || fail "--no-decoded-copy still wrote one"
note "... the next get (from the cache) writes it, verified against the signed raw digests"
expect_rc 0 "${G[@]}" --json "$base/$zid"
grep -q "\"decoded_path\": \"$tmp/cache/$zid.decoded\"" "$tmp/out" || fail "no decoded_path: $(cat "$tmp/out")"
# the signed prefix and the token ids as they are; then 3 chunks of 2 layers x 2 x 16 tokens x 16 f16
ml=$(od -An -tu4 -j16 -N4 "$tmp/cache/$zid" | tr -d ' ')
head_len=$(( (32 + ml + 64 + 63) / 64 * 64 + 160 ))
cmp -s -n "$head_len" "$tmp/cache/$zid" "$tmp/cache/$zid.decoded" || fail "the copy's prefix differs from the blob's"
[ "$(stat -c %s "$tmp/cache/$zid.decoded")" = $(( head_len + 32 + 2048 + 2048 + 1024 )) ] ||
  fail "decoded copy is $(stat -c %s "$tmp/cache/$zid.decoded") bytes"
note "... and its decoded bytes are the f16 vector's chunks"
fml=$(od -An -tu4 -j16 -N4 spec/vectors/vec-f16.kvb | tr -d ' ')
fd=$(( (32 + fml + 64 + 63) / 64 * 64 ))
cmp -s <(tail -c +$((fd + 193)) spec/vectors/vec-f16.kvb) <(tail -c +$((head_len + 33)) "$tmp/cache/$zid.decoded") ||
  fail "decoded chunks differ from vec-f16.kvb's"
note "a signed decoded digest that is wrong fails the blob (exit 1): nothing cached, no partial"
cp spec/vectors/test-key.key "$tmp/tk.key"; chmod 600 "$tmp/tk.key"
"$BUILD/kvsynth" blob --key "$tmp/tk.key" --wrong-raw-digest 1 -o "$tmp/www/badraw.kvb"
bid=$(sha256sum "$tmp/www/badraw.kvb" | cut -d' ' -f1)
mv "$tmp/www/badraw.kvb" "$tmp/www/$bid"
expect_rc 1 "$KVFETCH" verify "$tmp/www/$bid" --trust "$tmp/trust"
expect_err "chunk 1 of 3: its decoded bytes differ from the signed raw_sha256"
expect_rc 0 "$KVFETCH" verify "$tmp/www/$bid" --trust "$tmp/trust" --hash-only
expect_rc 1 "${G[@]}" "$base/$bid"
expect_err "verification failed \(chunk hash mismatch\): decoded copy: chunk 1 of 3: sha256 mismatch \(the decoded bytes differ from the signed raw_sha256\)"
[ ! -e "$tmp/cache/$bid" ] && [ ! -e "$tmp/cache/$bid.decoded" ] || fail "a blob with a wrong decoded digest was kept"
[ -z "$(ls -A "$tmp/cache/tmp")" ] || fail "partial kept: $(ls "$tmp/cache/tmp")"
[ -z "$(ls "$tmp/cache" | grep tmp.)" ] || fail "temporary copy left: $(ls "$tmp/cache")"
note "... the same blob with --no-decoded-copy is fetched (its stored chunks verify)"
expect_rc 0 "${G[@]}" --no-decoded-copy "$base/$bid"
rm -f "$tmp/cache/$bid" "$tmp/www/$bid"

note "a truncated download resumes with Range from the bytes on disk"
rid=${ID[q8]}
head -c 2500 spec/vectors/vec-q8.kvb >"$tmp/cache/tmp/$rid.part"
: >"$tmp/nginx/access.log"
expect_rc 0 "${G[@]}" --json "$base/$rid"
cmp -s "$tmp/cache/$rid" spec/vectors/vec-q8.kvb || fail "resumed blob differs"
grep -q '"resumed_bytes": 2500' "$tmp/out" || fail "did not reuse the 2500 bytes: $(cat "$tmp/out")"
grep -q "GET /$rid HTTP/1.1\" 206 $(( $(stat -c %s spec/vectors/vec-q8.kvb) - 2500 ))" "$tmp/nginx/access.log" \
  || fail "no 206 for the remaining bytes: $(cat "$tmp/nginx/access.log")"
note "a corrupted partial file is discarded and the blob fetched whole"
rm "$tmp/cache/$rid"
head -c 3000 spec/vectors/vec-q8.kvb >"$tmp/cache/tmp/$rid.part"
printf 'XXXX' | dd of="$tmp/cache/tmp/$rid.part" bs=1 seek=2990 conv=notrunc status=none
expect_rc 0 "${G[@]}" "$base/$rid"
cmp -s "$tmp/cache/$rid" spec/vectors/vec-q8.kvb || fail "refetched blob differs"

note "the server killed mid-download and restarted: get retries and resumes"
kid=${ID[f16-zstd]}
rm -f "$tmp/cache/$kid"
: >"$tmp/nginx/access.log"
"${G[@]}" --retries 6 --json "$base/slow/$kid" >"$tmp/kill.out" 2>"$tmp/kill.err" &
getpid=$!
for i in $(seq 100); do
  [ -s "$tmp/cache/tmp/$kid.part" ] && break
  sleep 0.05
done
[ -s "$tmp/cache/tmp/$kid.part" ] || fail "download did not start"
stop_nginx
sleep 0.5
kill -0 "$getpid" 2>/dev/null || fail "get ended while the server was down: $(cat "$tmp/kill.err")"
start_nginx "$tmp/www" 2k
set +e; wait "$getpid"; rc=$?; set -e
[ "$rc" -eq 0 ] || fail "get after restart: exit $rc: $(cat "$tmp/kill.err")"
cmp -s "$tmp/cache/$kid" spec/vectors/vec-f16-zstd.kvb || fail "blob after restart differs"
grep -q " 206 " "$tmp/nginx/access.log" || fail "no Range request after the restart: $(cat "$tmp/nginx/access.log")"
grep -q '"http_attempts": 1,' "$tmp/kill.out" && fail "only one attempt was made"

note "the second get needs no network: stop the server"
stop_nginx
expect_rc 0 "${G[@]}" "$base/${ID[f16]}"
expect_err "from the local cache \(no network\)"
expect_rc 0 "${G[@]}" "$base/slow/$kid"

note "a cached blob corrupted on disk is not served (re-fetch fails: server down, exit 2)"
chmod u+w "$tmp/cache/${ID[q8]}"
printf '\xa5\x5a' | dd of="$tmp/cache/${ID[q8]}" bs=1 seek=4000 conv=notrunc status=none
expect_rc 2 "${G[@]}" --retries 1 "$base/${ID[q8]}"
[ ! -e "$tmp/cache/${ID[q8]}" ] || fail "corrupted cache entry kept"

note "LRU eviction under --cache-max"
ls "$tmp/cache" | grep -Ec '^[0-9a-f]{64}$' | grep -qx 3 || fail "want 3 cached blobs: $(ls "$tmp/cache")"
start_nginx "$tmp/www" 2k
touch -a -d '2001-01-01' "$tmp/cache/$eid"
expect_rc 0 "${G[@]}" --cache-max 20K "$base/${ID[q4]}"
[ ! -e "$tmp/cache/$eid" ] || fail "least recently used blob not evicted"
[ -e "$tmp/cache/${ID[q4]}" ] || fail "the new blob was evicted"
total=$(cat "$tmp/cache"/[0-9a-f]* | wc -c)
[ "$total" -le 20480 ] || fail "cache holds $total bytes, cap 20480"
echo "PASS"
