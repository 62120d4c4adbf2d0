#!/usr/bin/env bash
# serve_auth.sh: priced listings: purchases (POST /v1/purchases), bearer tokens on downloads
# (401 missing/unknown, 403 expired/exhausted/wrong blob), the download budget, and malformed
# purchase requests (content type, length, JSON, size).
source "$(dirname "$0")/lib_serve.bash"
build_mkblob
make_cert
"$KVPUBD" keygen -o "$T/pub1" >/dev/null
CRED=$("$KVPUBD" publisher add --store "$T/store" --key "$T/pub1.pub" --name alice 2>/dev/null)
"$MKBLOB" --key "$T/pub1.key" -o "$T/priced.kvb" --seed 1 --title priced
"$MKBLOB" --key "$T/pub1.key" -o "$T/other.kvb" --seed 2 --title other
"$MKBLOB" --key "$T/pub1.key" -o "$T/free.kvb" --seed 3 --title free
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
expect 200 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK"
cmp -s "$T/body" "$T/priced.kvb" || fail "paid download bytes"
[ "$(header Cache-Control)" = "private, max-age=31536000, immutable" ] || fail "priced blobs are private"
expect 206 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK" -H "Range: bytes=0-99"
expect 403 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK"
[ "$(json .error)" = token_exhausted ] || fail "exhausted: $(json .error)"
expect 403 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK" -H "Range: bytes=0-9"
# a resumption (range after byte 0) spends nothing and works with the budget used up
expect 206 GET "/v1/blobs/$P" -H "Authorization: Bearer $TOK" -H "Range: bytes=100-"
tail -c +101 "$T/priced.kvb" | cmp -s - "$T/body" || fail "resumed bytes"
left=$(sqlite3 "$T/store/index.db" "select downloads_left from access_tokens")
[ "$left" = 0 ] || fail "resumption spent nothing: downloads_left=$left"
n=$(sqlite3 "$T/store/index.db" "select count(*) from download_log where purchase_id is not null and purchase_id > 0")
[ "$n" = 3 ] || fail "paid downloads (2 spent + 1 resumption) logged with their purchase: $n"

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
