#!/usr/bin/env bash
# serve_auth.sh: priced listings: purchases (POST /v1/purchases), bearer tokens on downloads
# (401 missing/unknown, 403 expired/exhausted/wrong blob), the download budget, and malformed
# purchase requests (content type, length, JSON, size).
source "$(dirname "$0")/lib_serve.bash"
build_mkblob
make_cert
"$KVPUBD" keygen -o "$T/pub1" >/dev/null
CRED=$("$KVPUBD" publisher add --store "$T/store" --key "$T/pub1.pub" --name alice 2>/dev/null)
mkblob --key "$T/pub1.key" -o "$T/priced.kvb" --seed 1 --title priced
mkblob --key "$T/pub1.key" -o "$T/other.kvb" --seed 2 --title other
mkblob --key "$T/pub1.key" -o "$T/free.kvb" --seed 3 --title free
start_server "$T/store" --token-downloads 2 --token-ttl 1h

expect 201 "PUT" "/v1/blobs?price=250" -H "Authorization: Bearer $CRED" --data-binary @"$T/priced.kvb"; P=$(json .id)
expect 201 "PUT" "/v1/blobs?price=10" -H "Authorization: Bearer $CRED" --data-binary @"$T/other.kvb"; O=$(json .id)
expect 201 "PUT" "/v1/blobs" -H "Authorization: Bearer $CRED" --data-binary @"$T/free.kvb"; F=$(json .id)
expect 200 GET "/v1/catalog?q=priced"
[ "$(json '.items[0].price')" = 250 ] || fail "catalog shows the price"

expect 200 GET "/v1/blobs/$F"                  # free listings are open
expect 200 GET "/v1/blobs/$P/manifest"         # manifests are open (needed to decide to buy)
expect 401 GET "/v1/blobs/$P"
[ "$(json .error)" = token_required ] || fail "401 names token_required"
expect 401 GET "/v1/blobs/$P" -H "Authorization: Bearer zzz"
expect 401 GET "/v1/blobs/$P" -H "Authorization: Bearer $(printf '0%.0s' $(seq 64))"
[ "$(json .error)" = invalid_token ] || fail "unknown token"
expect 401 GET "/v1/blobs/$P" -H "Authorization: Basic dXNlcjpwYXNz"
CODE=$(curl -sS --cacert "$T/cert.pem" -I -o /dev/null -w '%{http_code}' "$URL/v1/blobs/$P")
[ "$CODE" = 401 ] || fail "HEAD without a token: $CODE"
CODE=$(curl -sS --cacert "$T/cert.pem" -I -o /dev/null -w '%{http_code}' \
  -H "Authorization: Bearer $(printf '0%.0s' $(seq 64))" "$URL/v1/blobs/$P")
[ "$CODE" = 401 ] || fail "HEAD with an unknown token: $CODE"

# purchase
pj() { expect "$1" POST /v1/purchases -H 'Content-Type: application/json' --data-binary "$2"; }
pj 201 "{\"blob\": \"$P\", \"buyer\": \"carol\"}"
TOK=$(json .token)
[ ${#TOK} = 64 ] && [ "$(json .downloads)" = 2 ] && [ "$(json .blob)" = "$P" ] || fail "purchase body: $(cat "$T/body")"
[ "$(sqlite3 "$T/store/index.db" "select count(*) from purchases")" = 1 ] || fail "purchase recorded"
sqlite3 "$T/store/index.db" .dump | grep -qi "$TOK" && fail "token stored in clear" || ok "token not stored in clear"
expect 403 GET "/v1/blobs/$O" -H "Authorization: Bearer $TOK"
[ "$(json .error)" = token_wrong_blob ] || fail "wrong blob: $(json .error)"
expect 304 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK" -H "If-None-Match: \"$P\""  # spends nothing
CODE=$(curl -sS --cacert "$T/cert.pem" -I -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOK" "$URL/v1/blobs/$P")
[ "$CODE" = 200 ] || fail "HEAD with the token: $CODE"
[ "$(sqlite3 "$T/store/index.db" "select bytes_left from access_tokens")" = $((2 * $(wc -c < "$T/priced.kvb"))) ] \
  || fail "HEAD and 304 spent nothing"
expect 200 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK"
cmp -s "$T/body" "$T/priced.kvb" || fail "paid download bytes"
[ "$(header Cache-Control)" = "private, max-age=31536000, immutable" ] || fail "priced blobs are private"
# the budget is bytes (2 downloads = 2 x size): a range spends its length, so the first 100
# bytes plus the rest make the second download, and then nothing more can be read
psize=$(wc -c < "$T/priced.kvb")
expect 206 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK" -H "Range: bytes=0-99"
expect 403 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK"
[ "$(json .error)" = token_exhausted ] || fail "exhausted: $(json .error)"
expect 206 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK" -H "Range: bytes=100-"
tail -c +101 "$T/priced.kvb" | cmp -s - "$T/body" || fail "resumed bytes"
[ "$(sqlite3 "$T/store/index.db" "select bytes_left from access_tokens")" = 0 ] \
  || fail "budget after 2 x $psize bytes: $(sqlite3 "$T/store/index.db" "select bytes_left from access_tokens")"
# used up: no byte more, not even a range after byte 0 (no re-reading piece by piece)
expect 403 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK" -H "Range: bytes=100-199"
[ "$(json .error)" = token_exhausted ] || fail "exhausted range: $(json .error)"
expect 403 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK" -H "Range: bytes=-1"
n=$(sqlite3 "$T/store/index.db" "select count(*) from download_log where purchase_id is not null and purchase_id > 0")
[ "$n" = 3 ] || fail "paid downloads (1 whole + 2 ranges) logged with their purchase: $n"

pj 201 "{\"blob\": \"$P\"}"
TOK2=$(json .token)
ttl=$(( $(json .expires_unix) - $(date +%s) ))
[ "$ttl" -ge 3590 ] && [ "$ttl" -le 3601 ] || fail "--token-ttl 1h: token lives ${ttl}s"
# age the token in the index rather than sleeping through a short TTL (which made the steps
# above race the clock on a loaded machine)
sqlite3 "$T/store/index.db" ".timeout 5000" \
  "update access_tokens set expires = $(( $(date +%s) - 1 )) where purchase_id = (select max(id) from purchases)"
expect 403 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK2"
[ "$(json .error)" = token_expired ] || fail "expired: $(json .error)"
expect 403 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK2" -H "Range: bytes=100-"
[ "$(json .error)" = token_expired ] || fail "expired resumption: $(json .error)"

# an interrupted download gives back what the server did not hand to TLS, so resuming it
# costs only the rest; the budget always equals 2 x size minus the bytes handed out
mkblob --key "$T/pub1.key" -o "$T/big.kvb" --seed 4 --tokens 1024 --layers 8 --kv-dim 512 --codec f16 --title big
bsize=$(wc -c < "$T/big.kvb")
expect 201 "PUT" "/v1/blobs?price=5" -H "Authorization: Bearer $CRED" --data-binary @"$T/big.kvb"; B=$(json .id)
pj 201 "{\"blob\": \"$B\"}"
TOK3=$(json .token)
db() { sqlite3 "$T/store/index.db" ".timeout 5000" "$1"; }
curl -sS --cacert "$T/cert.pem" -H "Authorization: Bearer $TOK3" --limit-rate 1M --max-time 3 -o "$T/part" \
  "$URL/v1/blobs/$B" 2>/dev/null || true
got=$(wc -c < "$T/part")
[ "$got" -gt 0 ] && [ "$got" -lt "$bsize" ] || fail "interrupted download got $got of $bsize bytes"
for _ in $(seq 100); do [ "$(db "select count(*) from download_log where blob_id = '$B'")" = 1 ] && break; sleep 0.05; done
handed=$(db "select bytes from download_log where blob_id = '$B'")
[ "$handed" -ge "$got" ] && [ "$handed" -lt "$bsize" ] || fail "handed $handed bytes for $got received of $bsize"
[ "$(db "select bytes_left from access_tokens t join purchases p on p.id = t.purchase_id where p.blob_id = '$B'")" \
  = $((2 * bsize - handed)) ] || fail "undelivered bytes given back"
expect 206 GET "/v1/blobs/$B" -H "Authorization: Bearer $TOK3" -H "Range: bytes=$got-"
cat "$T/part" "$T/body" | cmp -s - "$T/big.kvb" && ok "interrupted download resumed" || fail "resumed download bytes"
[ "$(db "select bytes_left from access_tokens t join purchases p on p.id = t.purchase_id where p.blob_id = '$B'")" \
  = $((2 * bsize - handed - (bsize - got))) ] || fail "the resumption spent the rest only"

# malformed purchases
pj 400 '{"blob": "nope"}'
pj 400 '{"blob": 5}'
pj 400 'not json'
pj 400 "{\"blob\": \"$P\", \"blob\": \"$P\"}"
pj 404 "{\"blob\": \"$(printf '1%.0s' $(seq 64))\"}"
expect 415 POST /v1/purchases -H 'Content-Type: text/plain' --data-binary "{\"blob\": \"$P\"}"
expect 411 POST /v1/purchases -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' --data-binary "{\"blob\": \"$P\"}"
head -c 5000 /dev/zero | tr '\0' ' ' > "$T/bigbody"
expect 413 POST /v1/purchases -H 'Content-Type: application/json' --data-binary @"$T/bigbody"
stop_server || fail "clean stop"
done_tests
