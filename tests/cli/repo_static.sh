#!/usr/bin/env bash
# repo_static.sh: signed catalog snapshots and static repositories (spec/repository.md) with
# real components on loopback: kvpubd serve signs /v1/snapshot and lists its signing key at
# /v1/keys; `kvfetch trust add` takes that key only with the right fingerprint; `kvpubd export`
# writes a tree that nginx serves over HTTPS, against which `kvfetch search --snapshot`,
# `kvfetch get --snapshot` and `kvfetch verify` work as against kvpubd; a second export writes
# only the new blob; a rolled-back snapshot (exit 5) and an expired one (exit 6) are refused; a
# listing change makes a new version; a rotated key's old snapshots, a retired key signing
# after its cut-off (snapshots and blobs), and revoked publishers' and signing keys' listings are
# refused or gone; kvpubd publish signs with the store's active key.
set -eu
. tests/cli/lib/fetch_env.sh
fetch_env_init repo-static

K="$BUILD/kvpubd"
S="$tmp/store"
mkdir -p "$tmp/trust" "$tmp/www"
export KVPUB_CACHE_DIR="$tmp/cache"

note "a store with a signing key, three listings (one priced)"
"$K" keygen -o "$tmp/alice" >/dev/null
CRED=$("$K" publisher add --store "$S" --key "$tmp/alice.pub" --name alice 2>/dev/null)
expect_rc 2 "$K" snapshot --store "$S"
expect_err "no active signing key"
expect_rc 0 "$K" key rotate --store "$S"
SK1=$(cat "$tmp/out")
[ ${#SK1} = 16 ] || fail "key rotate printed '$SK1', want a key id"
cp "$tmp/alice.pub" "$tmp/trust/"
for i in 1 2 3 4; do "$BUILD/kvsynth" blob --key "$tmp/alice.key" -o "$tmp/b$i.kvb" --seed $i --title "Doc $i"; done
start_kvpubd "$S"
api="https://127.0.0.1:$KVPUBD_PORT"
C=(curl -sS --cacert "$tmp/cert.pem")
for i in 1 2 3; do
  q=""; [ $i = 3 ] && q="?price=7"
  "${C[@]}" -o /dev/null -w '%{http_code}' -X PUT -H "Authorization: Bearer $CRED" --data-binary @"$tmp/b$i.kvb" \
    "$api/v1/blobs$q" | grep -qx 201 || fail "upload b$i"
done
ID1=$(sha256sum "$tmp/b1.kvb" | cut -d' ' -f1)
ID4=$(sha256sum "$tmp/b4.kvb" | cut -d' ' -f1)
DOC1=$("$KVFETCH" inspect --json "$tmp/b1.kvb" | jq -r .manifest.document.sha256)
FP=$(printf 'ab%.0s' $(seq 32))

note "kvpubd serves the snapshot, the manifests under both names, and its signing key"
"${C[@]}" "$api/v1/snapshot" >"$tmp/api.snap"
jq -r .payload "$tmp/api.snap" | base64 -d >"$tmp/api.payload"
[ "$(jq -r '.blobs | length' "$tmp/api.payload")" = 3 ] || fail "snapshot lists $(jq '.blobs|length' "$tmp/api.payload") blobs, want 3"
[ "$(jq -r .key_id "$tmp/api.payload")" = "$SK1" ] || fail "snapshot not signed by the store's key"
[ "$(jq -r .signatures[0].key_id "$tmp/api.snap")" = "$SK1" ] || fail "envelope signature key id"
"${C[@]}" "$api/v1/manifests/$ID1" | cmp -s - <("${C[@]}" "$api/v1/blobs/$ID1/manifest") \
  || fail "/v1/manifests/ID differs from /v1/blobs/ID/manifest"
"${C[@]}" "$api/v1/keys" >"$tmp/keys.json"
[ "$(jq -r '.signing[0].key_id + " " + .signing[0].state' "$tmp/keys.json")" = "$SK1 active" ] \
  || fail "/v1/keys does not list the signing key: $(cat "$tmp/keys.json")"

note "trust add: only the key with the fingerprint given"
expect_rc 1 "$KVFETCH" trust add "$api/v1/keys" --fingerprint 0123456789abcdef --trust "$tmp/trust" --cacert "$tmp/cert.pem"
expect_err "no key with fingerprint 0123456789abcdef"
[ ! -e "$tmp/trust/0123456789abcdef.pub" ] || fail "a key was added for a wrong fingerprint"
expect_rc 0 "$KVFETCH" trust add "$api/v1/keys" --fingerprint "$SK1" --trust "$tmp/trust" --cacert "$tmp/cert.pem"
cmp -s "$tmp/trust/$SK1.pub" "$S/signing/$SK1.pub" || fail "trusted key differs from the store's"

note "search --snapshot against kvpubd"
F=(--trust "$tmp/trust" --cacert "$tmp/cert.pem")
expect_rc 0 "$KVFETCH" search --snapshot "$api" "${F[@]}" --json
[ "$(jq -r .total "$tmp/out")" = 3 ] || fail "search --snapshot total $(jq .total "$tmp/out")"

note "export: a static tree; priced blobs stay out"
expect_rc 0 "$K" export --store "$S" --out "$tmp/www" --json
[ "$(jq -c '[.written, .kept, .priced_not_exported]' "$tmp/out")" = "[2,0,1]" ] || fail "first export: $(cat "$tmp/out")"
cmp -s "$tmp/www/v1/blobs/$ID1" "$tmp/b1.kvb" || fail "exported blob differs"
cmp -s "$tmp/www/v1/manifests/$ID1" <("${C[@]}" "$api/v1/manifests/$ID1") || fail "exported manifest differs"
cp "$tmp/www/v1/snapshot" "$tmp/old.snap"
# the server and the export sign the same catalog under the same version: neither looks like a
# rollback of the other to a client that reads both
"${C[@]}" "$api/v1/snapshot" | jq -r .payload | base64 -d >"$tmp/api3.payload"
[ "$(jq .version "$tmp/api3.payload")" = "$(jq -r .payload "$tmp/old.snap" | base64 -d | jq .version)" ] \
  || fail "kvpubd and the export disagree on the version of one catalog"
start_nginx "$tmp/www"
web="https://127.0.0.1:$NGINX_PORT"

note "the client reads nginx as it reads kvpubd"
expect_rc 0 "$KVFETCH" search --snapshot "$web" "${F[@]}"
grep -q "Doc 1" "$tmp/out" && grep -q "3 of 3 listings" "$tmp/out" || fail "search table: $(cat "$tmp/out")"
expect_rc 0 "$KVFETCH" get --snapshot "$web" --document "$DOC1" --model-fp "$FP" "${F[@]}"
[ "$(sha256sum "$(cat "$tmp/out")" | cut -d' ' -f1)" = "$ID1" ] || fail "get --snapshot fetched another blob"
expect_rc 0 "$KVFETCH" verify "$(cat "$tmp/out")" --trust "$tmp/trust"
expect_rc 1 "$KVFETCH" get --snapshot "$web" --blob "$ID4" "${F[@]}"
expect_err "does not list blob $ID4"
expect_rc 1 "$KVFETCH" get --snapshot "$web" --document "$DOC1" --model-fp "$(printf '00%.0s' $(seq 32))" "${F[@]}"
expect_err "lists no current blob of document"

note "one more publish: the second export writes only the new blob"
v_before=$("${C[@]}" "$api/v1/snapshot" | jq -r .payload | base64 -d | jq .version)
[ "$("${C[@]}" "$api/v1/snapshot" | jq -r .payload | base64 -d | jq .version)" = "$v_before" ] \
  || fail "kvpubd signed a new snapshot though nothing changed"
"${C[@]}" -o /dev/null -X PUT -H "Authorization: Bearer $CRED" --data-binary @"$tmp/b4.kvb" "$api/v1/blobs"
sleep 1.1 # the server looks at the catalog at most once a second
"${C[@]}" "$api/v1/snapshot" | jq -r .payload | base64 -d >"$tmp/api2.payload"
[ "$(jq .version "$tmp/api2.payload")" -gt "$v_before" ] && [ "$(jq '.blobs | length' "$tmp/api2.payload")" = 4 ] \
  || fail "kvpubd did not sign a new snapshot after a publish: $(head -c 300 "$tmp/api2.payload")"
expect_rc 0 "$K" export --store "$S" --out "$tmp/www" --json
[ "$(jq -c '[.written, .kept]' "$tmp/out")" = "[1,2]" ] || fail "second export: $(cat "$tmp/out")"
expect_rc 0 "$KVFETCH" get --snapshot "$web" --blob "$ID4" "${F[@]}"

note "rollback and freeze are refused"
cp "$tmp/www/v1/snapshot" "$tmp/new.snap"
cp "$tmp/old.snap" "$tmp/www/v1/snapshot"
expect_rc 5 "$KVFETCH" search --snapshot "$web" "${F[@]}"
expect_err "older than version .* seen before"
cp "$tmp/new.snap" "$tmp/www/v1/snapshot"
expect_rc 6 "$KVFETCH" search --snapshot "$web" "${F[@]}" --now $(( $(date +%s) + 2 * 86400 ))
expect_err "expired at"
expect_rc 0 "$KVFETCH" search --snapshot "$web" "${F[@]}"

note "a listing change is a new snapshot version"
expect_rc 0 "$K" listing set --store "$S" "$ID1" --price 9 --title "Doc one, revised"
expect_rc 0 "$K" snapshot --store "$S" -o "$tmp/s.snap" --json --now 1800000000 --expires 2h
jq -r .payload "$tmp/s.snap" | base64 -d >"$tmp/s.payload"
[ "$(jq -r .out "$tmp/out")" = "$tmp/s.snap" ] && [ "$(jq -r .expires "$tmp/out")" = 1800007200 ] \
  && [ "$(jq -r .listings "$tmp/out")" = "$(jq '.blobs | length' "$tmp/s.payload")" ] \
  && [ "$(jq -r .version "$tmp/out")" = "$(jq .version "$tmp/s.payload")" ] && [ ! -s "$tmp/err" ] \
  || fail "snapshot --json: $(cat "$tmp/out" "$tmp/err")"
expect_rc 2 "$K" snapshot --store "$S" --json
expect_err "needs -o FILE"
expect_rc 0 "$K" snapshot --store "$S" -o "$tmp/s.snap"
expect_rc 0 "$KVFETCH" search --snapshot "$tmp/s.snap" "${F[@]}" --json --q revised
[ "$(jq -r '.items[0].price' "$tmp/out")" = 9 ] || fail "new price not in the snapshot: $(cat "$tmp/out")"
expect_rc 1 "$K" listing set --store "$S" "$(printf '00%.0s' $(seq 32))" --price 1
expect_err "no blob"

note "a listing's expiry: search and get judge it at their --now, within the snapshot's lifetime"
expect_rc 0 "$K" listing set --store "$S" "$ID1" --expires 1h
expect_rc 0 "$K" snapshot --store "$S" -o "$tmp/exp.snap"
later=$(( $(date +%s) + 7200 ))  # the listing has expired then; the snapshot (a day) has not
expect_rc 0 "$KVFETCH" search --snapshot "$tmp/exp.snap" "${F[@]}" --json
jq -e --arg id "$ID1" '[.items[].id] | index($id) != null' "$tmp/out" >/dev/null || fail "listing missing before its expiry"
expect_rc 0 "$KVFETCH" search --snapshot "$tmp/exp.snap" "${F[@]}" --json --now "$later"
jq -e --arg id "$ID1" '[.items[].id] | index($id) == null' "$tmp/out" >/dev/null \
  || fail "an expired listing still searched: $(cat "$tmp/out")"
expect_rc 1 "$KVFETCH" get --snapshot "$tmp/exp.snap" --server "$api" --blob "$ID1" "${F[@]}" --now "$later"
expect_err "lists blob $ID1 only until"
expect_rc 0 "$K" listing set --store "$S" "$ID1" --expires never

note "key rotation: new snapshots by the new key; the retired key's late signatures refused"
expect_rc 0 "$K" key rotate --store "$S"
SK2=$(cat "$tmp/out")
expect_rc 0 "$K" snapshot --store "$S" -o "$tmp/k2.snap"
expect_rc 1 "$KVFETCH" search --snapshot "$tmp/k2.snap" "${F[@]}"
expect_err "not in the trust directory $SK2"
expect_rc 0 "$KVFETCH" trust add "$api/v1/keys" --fingerprint "$SK2" --trust "$tmp/trust" --cacert "$tmp/cert.pem"
expect_rc 0 "$KVFETCH" search --snapshot "$tmp/k2.snap" "${F[@]}"
expect_rc 0 "$K" snapshot --store "$S" --key "$S/signing/$SK1.key" --now $(( $(date +%s) + 5 )) -o "$tmp/late.snap"
expect_rc 1 "$KVFETCH" search --snapshot "$tmp/late.snap" "${F[@]}" --now $(( $(date +%s) + 10 ))
expect_err "retired at"

note "publish signs with the active store key; a blob the retired key signed after its cut-off is refused"
"$BUILD/kvsynth" --arch llama --layers 2 --dim 64 --heads 4 --kv-heads 2 --ffn 128 --vocab 512 --ctx 96 \
  --seed 1 -o "$tmp/m.gguf" >/dev/null
printf 'A document the store signs itself.\n' >"$tmp/d1.txt"
printf 'A document signed late by the retired key.\n' >"$tmp/d2.txt"
expect_rc 0 "$K" publish --store "$S" --model "$tmp/m.gguf" --json "$tmp/d1.txt"
P1=$(jq -r '.documents[0].id' "$tmp/out")
[ "$("$KVFETCH" inspect --json "$S/blobs/${P1:0:2}/$P1" | jq -r .key_id)" = "$SK2" ] || fail "publish did not sign with $SK2"
install -m 600 "$S/signing/$SK1.key" "$tmp/sk1.key"
expect_rc 0 "$K" publish --store "$S" --model "$tmp/m.gguf" --key "$tmp/sk1.key" --json "$tmp/d2.txt"
P2=$(jq -r '.documents[0].id' "$tmp/out")
expect_rc 0 "$K" snapshot --store "$S" -o "$tmp/k3.snap"
expect_rc 0 "$KVFETCH" get --snapshot "$tmp/k3.snap" --server "$api" --blob "$P1" "${F[@]}"
expect_rc 1 "$KVFETCH" get --snapshot "$tmp/k3.snap" --server "$api" --blob "$P2" "${F[@]}"
expect_err "$SK1 was retired at .* dated after that is refused"

note "a revoked publisher's listings leave the snapshot"
"$K" publisher revoke --store "$S" --key-id "$(basename "$(ls "$S"/keys/*.pub)" .pub)" >/dev/null 2>&1
expect_rc 0 "$K" snapshot --store "$S" -o "$tmp/r.snap"
expect_rc 0 "$KVFETCH" search --snapshot "$tmp/r.snap" "${F[@]}" --json
[ "$(jq -r '[.items[].publisher_key_id] | sort | join(" ")' "$tmp/out")" = "$(printf '%s\n' "$SK1" "$SK2" | sort | paste -sd' ')" ] \
  || fail "revoked listings still in the snapshot: $(cat "$tmp/out")"
expect_rc 0 "$K" key revoke --store "$S" --key-id "$SK1"
expect_rc 0 "$K" snapshot --store "$S" -o "$tmp/r2.snap"
expect_rc 0 "$KVFETCH" search --snapshot "$tmp/r2.snap" "${F[@]}" --json
[ "$(jq -r '[.items[].publisher_key_id] | join(" ")' "$tmp/out")" = "$SK2" ] || fail "a revoked signing key's listing stayed"
expect_rc 1 "$K" key revoke --store "$S" --key-id 0123456789abcdef
expect_err "not one of the store's signing keys"
echo "all checks passed"
