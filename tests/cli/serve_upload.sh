#!/usr/bin/env bash
# serve_upload.sh: PUT /v1/blobs: a good upload is verified and indexed; tampered, truncated,
# expired, foreign-key, revoked, unauthenticated, chunked and oversize uploads are refused with
# 4xx and leave nothing in the index (checked with the sqlite3 CLI) or in the blob directory.
# Listings belong to publishers (a squatter cannot take another's document), and revocation
# withdraws a key's listings, refuses their sale and download (410), and refunds purchases.
source "$(dirname "$0")/lib_serve.bash"
build_mkblob
make_cert
"$KVPUBD" keygen -o "$T/pub1" >/dev/null
"$KVPUBD" keygen -o "$T/pub2" >/dev/null
"$KVPUBD" keygen -o "$T/stranger" >/dev/null
CRED1=$("$KVPUBD" publisher add --store "$T/store" --key "$T/pub1.pub" --name alice 2>/dev/null)
CRED2=$("$KVPUBD" publisher add --store "$T/store" --key "$T/pub2.pub" --name bob 2>/dev/null)
"$KVPUBD" publisher add --store "$T/store" --key "$T/pub1.pub" --name again >/dev/null 2>&1 && fail "re-adding a key" \
  || ok "a registered key cannot be added twice"
# a private key never reaches STORE/keys (served at /v1/keys): the key file itself, or a
# public key with a private one after it, is refused and nothing is registered
"$KVPUBD" keygen -o "$T/careless" >/dev/null
cat "$T/careless.pub" "$T/careless.key" >"$T/both.pem"
for k in careless.key both.pem; do
  rc=0; "$KVPUBD" publisher add --store "$T/store" --key "$T/$k" --name careless >"$T/o" 2>"$T/e" || rc=$?
  [ "$rc" = 2 ] && grep -q "not a public key" "$T/e" && [ ! -s "$T/o" ] && ok "publisher add refuses $k" \
    || fail "publisher add $k: rc=$rc $(cat "$T/e")"
done
! grep -rl PRIVATE "$T/store/keys" >/dev/null || fail "a private key in STORE/keys"
[ "$(ls "$T/store/keys" | wc -l)" = 2 ] || fail "keys/ holds $(ls "$T/store/keys")"
cmp -s "$T/store/keys/$(cut -d. -f1 <<<"$CRED1").pub" "$T/pub1.pub" || fail "the registered key is not the public PEM"
mkblob --key "$T/pub1.key" -o "$T/good.kvb" --tokens 100 --seed 1
mkblob --key "$T/pub2.key" -o "$T/bob.kvb" --tokens 100 --seed 2
# bob knows the hash of alice's next document (the text is not needed, only its SHA-256)
mkblob --key "$T/pub2.key" -o "$T/squat.kvb" --tokens 50 --seed 8 --doc "alice's paper" --title "Free copy!"
mkblob --key "$T/pub1.key" -o "$T/paper.kvb" --tokens 50 --seed 9 --doc "alice's paper" --title "Alice's paper"
mkblob --key "$T/stranger.key" -o "$T/stranger.kvb" --seed 3
mkblob --key "$T/pub1.key" -o "$T/expired.kvb" --seed 4 --expires 1000
mkblob --key "$T/pub1.key" -o "$T/large.kvb" --seed 5 --tokens 200 --layers 4 --kv-dim 128 --codec f16
size=$(wc -c < "$T/good.kvb")
cp "$T/good.kvb" "$T/chunk-tampered.kvb"
printf '\x55' | dd of="$T/chunk-tampered.kvb" bs=1 seek=$((size - 100)) conv=notrunc status=none
cp "$T/good.kvb" "$T/manifest-tampered.kvb"
printf '}' | dd of="$T/manifest-tampered.kvb" bs=1 seek=40 conv=notrunc status=none
head -c $((size - 300)) "$T/good.kvb" > "$T/truncated.kvb"
{ cat "$T/good.kvb"; printf 'trailing'; } > "$T/trailing.kvb"
head -c 5000 /dev/urandom > "$T/noise.kvb"

start_server "$T/store" --max-upload 64K
rows() { sqlite3 "$T/store/index.db" "select count(*) from blobs"; }
files() { find "$T/store/blobs" -type f | wc -l; }

# Expect: 100-continue, as spec/http-api.md asks of uploaders: early refusals arrive before the body.
put() { expect "$1" PUT "/v1/blobs${QUERY:-}" -H "Authorization: Bearer $2" -H "Expect: 100-continue" \
  --data-binary @"$T/$3" "${@:4}"; }
put 401 "" good.kvb
[ "$(json .error)" = credential_required ] || fail "401 error name"
grep -qi '^WWW-Authenticate: Bearer' "$T/hdr" || fail "401 carries WWW-Authenticate"
put 401 "nonsense" good.kvb
put 401 "$(cut -d. -f1 <<<"$CRED1").$(printf '0%.0s' $(seq 64))" good.kvb
[ "$(json .error)" = bad_credential ] || fail "wrong secret"
put 403 "$CRED1" stranger.kvb
[ "$(json .error)" = foreign_key ] || fail "foreign key error name: $(json .error)"
put 403 "$CRED1" bob.kvb       # another registered publisher's blob is still foreign to alice
put 422 "$CRED1" chunk-tampered.kvb
[ "$(json .error)" = invalid_blob ] && grep -q hash "$T/body" || fail "tampered chunk: $(cat "$T/body")"
put 422 "$CRED1" manifest-tampered.kvb
grep -qi signature "$T/body" || fail "tampered manifest names the signature: $(cat "$T/body")"
put 422 "$CRED1" truncated.kvb
put 422 "$CRED1" trailing.kvb
put 422 "$CRED1" noise.kvb
put 422 "$CRED1" expired.kvb
put 413 "$CRED1" large.kvb -H "Expect: 100-continue"  # refused before the body is sent
[ "$(json .error)" = payload_too_large ] || fail "413 error name"
put 411 "$CRED1" good.kvb -H "Transfer-Encoding: chunked"
expect 400 PUT /v1/blobs -H "Authorization: Bearer $CRED1" --data-binary 'short'
[ "$(rows)" = 0 ] && [ "$(files)" = 0 ] && ok "nothing indexed after refused uploads" \
  || fail "refused uploads left rows=$(rows) files=$(files)"
[ -z "$(ls -A "$T/store/tmp" 2>/dev/null)" ] || fail "temp files left: $(ls "$T/store/tmp")"

QUERY="?price=0" put 201 "$CRED1" good.kvb
ID=$(json .id)
[ "$(json .status)" = published ] || fail "status published"
put 200 "$CRED1" good.kvb
[ "$(json .status)" = exists ] && [ "$(json .id)" = "$ID" ] || fail "second upload reports exists"
put 201 "$CRED2" bob.kvb
[ "$(rows)" = 2 ] || fail "two blobs indexed, got $(rows)"
# an idle server holds no verification buffers: the last upload to end gives them back (the
# request ends just after its response, so wait for it to leave)
for _ in $(seq 50); do
  expect 200 GET /metrics
  grep -q '^kvpubd_active_uploads 0$' "$T/body" && break
  sleep 0.1
done
grep -q '^kvpubd_active_uploads 0$' "$T/body" && grep -q '^kvpubd_kept_buffer_bytes 0$' "$T/body" \
  && ok "an idle server keeps no upload buffers" || fail "idle server: $(grep -E '^kvpubd_(active_uploads|kept_buffer)' "$T/body")"
[ "$(sqlite3 "$T/store/index.db" "select count(*) from blobs where id='$ID'")" = 1 ] || fail "row for $ID"
expect 200 GET "/v1/blobs/$ID"
cmp -s "$T/body" "$T/good.kvb" || fail "uploaded blob served back byte-exact"

# squatting: bob lists alice's document first; alice's own upload is still hers
BOBID=$(sha256sum "$T/bob.kvb" | cut -d" " -f1)
QUERY="?price=5" put 201 "$CRED2" squat.kvb
SQUAT=$(json .id)
put 201 "$CRED1" paper.kvb
PAPER=$(json .id)
[ "$(json .status)" = published ] && [ "$PAPER" != "$SQUAT" ] || fail "alice's upload answered with bob's listing"
DOC=$(printf "%s" "alice's paper" | sha256sum | cut -d' ' -f1)
expect 200 GET "/v1/catalog?doc=$DOC"
[ "$(json '.total')" = 2 ] || fail "two listings of one document: $(cat "$T/body")"
[ "$(json ".items[] | select(.id == \"$PAPER\") | .document.title")" = "Alice's paper" ] &&
  [ "$(json ".items[] | select(.id == \"$SQUAT\") | .document.title")" = "Free copy!" ] \
  && ok "each listing shows its own signed title" || fail "titles: $(cat "$T/body")"
expect 200 GET "/v1/catalog?publisher=$(cut -d. -f1 <<<"$CRED1")"
[ "$(json '[.items[].id] | sort | join(",")')" = "$(printf '%s\n' "$ID" "$PAPER" | sort | paste -sd,)" ] \
  || fail "publisher filter: $(cat "$T/body")"
expect 400 GET "/v1/catalog?publisher=XYZ"
expect 201 POST /v1/purchases -H "Content-Type: application/json" --data "{\"blob\":\"$SQUAT\"}"
SQUAT_TOKEN=$(json .token)

# revoking bob: /v1/keys lists it, and his uploads stop
"$KVPUBD" publisher revoke --store "$T/store" --key-id "$(cut -d. -f1 <<<"$CRED2")" --reason "squatter" \
  2>"$T/revoke.err" || fail "revoke exit status"
grep -q "2 listing(s) withdrawn, 1 purchase(s) refunded" "$T/revoke.err" || fail "revoke summary: $(cat "$T/revoke.err")"
[ "$(sqlite3 "$T/store/index.db" "select amount || ' ' || reason from refunds")" = "5 squatter" ] \
  || fail "refund row: $(sqlite3 "$T/store/index.db" 'select * from refunds')"
expect 200 GET "/v1/catalog?doc=$DOC"
[ "$(json '.items[0].id')" = "$PAPER" ] && [ "$(json '.total')" = 1 ] || fail "revoked listing still in the catalog"
expect 200 GET /v1/catalog
json '.items[].id' | grep -q "$BOBID" && fail "bob's other blob still listed"
expect 410 GET "/v1/blobs/$SQUAT" -H "Authorization: Bearer $SQUAT_TOKEN"
[ "$(json .error)" = revoked ] || fail "revoked blob download: $(cat "$T/body")"
expect 410 GET "/v1/blobs/$BOBID"
expect 410 GET "/v1/blobs/$BOBID/manifest"
expect 410 POST /v1/purchases -H "Content-Type: application/json" --data "{\"blob\":\"$BOBID\"}"
[ "$(json .error)" = revoked ] || fail "revoked blob purchase: $(cat "$T/body")"
expect 200 GET "/v1/blobs/$PAPER"
expect 200 GET /v1/keys
[ "$(json '.revoked[0]')" = "$(cut -d. -f1 <<<"$CRED2")" ] || fail "revocation listed"
mkblob --key "$T/pub2.key" -o "$T/bob2.kvb" --seed 7
put 403 "$CRED2" bob2.kvb
[ "$(json .error)" = key_revoked ] || fail "revoked publisher: $(json .error)"
# a keys directory that does not read says nothing about revocation: uploads are refused (500)
# until it reads again, not let past it
cp "$T/store/keys/revoked" "$T/revoked.good"
echo "not a key id" >>"$T/store/keys/revoked"
mkblob --key "$T/pub1.key" -o "$T/alice9.kvb" --seed 9
put 500 "$CRED1" alice9.kvb
[ "$(json .error)" = internal ] && grep -q "keys directory does not read" "$T/body" || fail "unreadable keys: $(cat "$T/body")"
cp "$T/revoked.good" "$T/store/keys/revoked"
put 201 "$CRED1" alice9.kvb
"$KVPUBD" publisher list --store "$T/store" > "$T/list" || fail "publisher list exit status"
grep -q "revoked" "$T/list" && grep -q alice "$T/list" || fail "publisher list: $(cat "$T/list")"

expect 200 GET /metrics
grep -q '^kvpubd_uploads_rejected_total 1[0-9]' "$T/body" || fail "rejections counted: $(grep rejected "$T/body")"
stop_server || fail "clean stop"
done_tests
