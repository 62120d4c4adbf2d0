#!/usr/bin/env bash
# serve_api.sh: kvpubd serve over TLS on loopback, driven with curl: healthz, metrics, catalog
# filters and paging, manifests, downloads with Range / ETag / If-None-Match / If-Range / HEAD,
# keys, and malformed requests (bad ids, path traversal, wrong methods, bodies on GET).
source "$(dirname "$0")/lib_serve.bash"
build_mkblob
make_cert
"$KVPUBD" keygen -o "$T/pub1" >/dev/null
CRED=$("$KVPUBD" publisher add --store "$T/store" --key "$T/pub1.pub" --name alice 2>/dev/null)
for i in 1 2 3; do mkblob --key "$T/pub1.key" -o "$T/b$i.kvb" --seed $i --title "Doc number $i"; done
mkblob --key "$T/pub1.key" -o "$T/big.kvb" --seed 9 --tokens 300 --layers 4 --kv-dim 256 --codec f16 --title "Big one"
start_server "$T/store"

expect 200 GET /healthz
[ "$(json .status)" = ok ] || fail "healthz status"
expect 200 GET /v1/catalog
[ "$(json .total)" = 0 ] && [ "$(json '.items | length')" = 0 ] || fail "empty catalog"

ids=()
for f in b1 b2 b3 big; do
  expect 201 PUT /v1/blobs -H "Authorization: Bearer $CRED" --data-binary @"$T/$f.kvb"
  ids+=("$(json .id)")
  [ "$(json .id)" = "$(sha256sum "$T/$f.kvb" | cut -d' ' -f1)" ] || fail "blob id is the file's sha256"
done
ID=${ids[0]}; BIG=${ids[3]}

# catalog: filters, text search, paging
expect 200 GET /v1/catalog
[ "$(json .total)" = 4 ] || fail "catalog total 4, got $(json .total)"
expect 200 GET "/v1/catalog?q=number%202"
[ "$(json .total)" = 1 ] && [ "$(json '.items[0].document.title')" = "Doc number 2" ] || fail "q filter"
expect 200 GET "/v1/catalog?q=DOC"
[ "$(json .total)" = 3 ] || fail "q is case-insensitive"
DOC1=$(jq -r '.items[] | select(.id=="'"$ID"'") | .document.sha256' < <(curl -sS --cacert "$T/cert.pem" "$URL/v1/catalog"))
expect 200 GET "/v1/catalog?doc=$DOC1"
[ "$(json .total)" = 1 ] && [ "$(json '.items[0].id')" = "$ID" ] || fail "doc filter"
expect 200 GET "/v1/catalog?model=$(printf 'ab%.0s' $(seq 32))"
[ "$(json .total)" = 4 ] || fail "model filter"
expect 200 GET "/v1/catalog?model=$(printf '00%.0s' $(seq 32))"
[ "$(json .total)" = 0 ] || fail "model filter: no match"
expect 200 GET "/v1/catalog?limit=3"
[ "$(json '.items | length')" = 3 ] && [ "$(json .next)" = 3 ] || fail "paging: first page"
expect 200 GET "/v1/catalog?limit=3&offset=3"
[ "$(json '.items | length')" = 1 ] && [ "$(json .next)" = null ] || fail "paging: last page"
expect 400 GET "/v1/catalog?model=xyz"
[ "$(json .error)" = bad_request ] || fail "error body has error field"
expect 400 GET "/v1/catalog?doc=$(printf 'AB%.0s' $(seq 32))"
expect 400 GET "/v1/catalog?limit=0"
expect 400 GET "/v1/catalog?limit=5000"
expect 400 GET "/v1/catalog?offset=-1"
expect 400 GET "/v1/catalog?q=$(head -c 300 /dev/zero | tr '\0' a)"

# manifest: the signed JSON as the blob holds it
expect 200 GET "/v1/blobs/$ID/manifest"
[ "$(json .document.title 2>/dev/null || json .doc.title)" != "" ] || true
jq -e . "$T/body" >/dev/null || fail "manifest is JSON"
mlen=$(wc -c < "$T/body")
cmp -s "$T/body" <(tail -c +33 "$T/b1.kvb" | head -c "$mlen") || fail "manifest bytes are the blob's"

# whole download, ETag, conditional
expect 200 GET "/v1/blobs/$BIG"
cmp -s "$T/body" "$T/big.kvb" || fail "downloaded bytes differ"
[ "$(header ETag)" = "\"$BIG\"" ] || fail "ETag is the quoted sha256: $(header ETag)"
[ "$(header Accept-Ranges)" = bytes ] || fail "Accept-Ranges"
expect 304 GET "/v1/blobs/$BIG" -H "If-None-Match: \"$BIG\""
[ ! -s "$T/body" ] || fail "304 has no body"
expect 304 GET "/v1/blobs/$BIG" -H "If-None-Match: \"x\", W/\"$BIG\""
expect 200 GET "/v1/blobs/$BIG" -H "If-None-Match: \"$ID\""
size=$(wc -c < "$T/big.kvb")
# bodies of 1 MiB or more go out corked (spec/http-api.md): two on one keep-alive connection,
# then a catalog request on it, all complete and intact
[ "$size" -ge 1048576 ] || fail "big.kvb must be at least 1 MiB to test corked bodies ($size)"
curl -sS --cacert "$T/cert.pem" -o "$T/k1" "$URL/v1/blobs/$BIG" -o "$T/k2" "$URL/v1/blobs/$BIG" \
  -o "$T/k3" "$URL/v1/catalog" -w '%{num_connects}\n' >"$T/nconn" || fail "keep-alive downloads"
cmp -s "$T/k1" "$T/big.kvb" && cmp -s "$T/k2" "$T/big.kvb" || fail "keep-alive download bytes differ"
jq -e .items "$T/k3" >/dev/null || fail "catalog after corked downloads on the same connection"
[ "$(sed -n 2p "$T/nconn")" = 0 ] && [ "$(sed -n 3p "$T/nconn")" = 0 ] || fail "connection not reused: $(tr '\n' ' ' < "$T/nconn")"
# ranges
expect 206 GET "/v1/blobs/$BIG" -H "Range: bytes=100-199"
[ "$(wc -c < "$T/body")" = 100 ] && cmp -s "$T/body" <(tail -c +101 "$T/big.kvb" | head -c 100) || fail "range a-b bytes"
[ "$(header Content-Range)" = "bytes 100-199/$size" ] || fail "Content-Range a-b: $(header Content-Range)"
expect 206 GET "/v1/blobs/$BIG" -H "Range: bytes=$((size - 10))-"
cmp -s "$T/body" <(tail -c 10 "$T/big.kvb") || fail "range a-"
expect 206 GET "/v1/blobs/$BIG" -H "Range: bytes=-7"
cmp -s "$T/body" <(tail -c 7 "$T/big.kvb") || fail "range -n"
[ "$(header Content-Range)" = "bytes $((size - 7))-$((size - 1))/$size" ] || fail "Content-Range -n"
expect 206 GET "/v1/blobs/$BIG" -H "Range: bytes=0-99999999999"
cmp -s "$T/body" "$T/big.kvb" || fail "range past the end is clipped"
expect 416 GET "/v1/blobs/$BIG" -H "Range: bytes=$size-"
[ "$(header Content-Range)" = "bytes */$size" ] || fail "416 Content-Range"
expect 416 GET "/v1/blobs/$BIG" -H "Range: bytes=5-2"
expect 416 GET "/v1/blobs/$BIG" -H "Range: bytes=0-1,5-6"
expect 416 GET "/v1/blobs/$BIG" -H "Range: bytes=abc"
expect 200 GET "/v1/blobs/$BIG" -H "Range: items=0-1"
expect 206 GET "/v1/blobs/$BIG" -H "Range: bytes=0-9" -H "If-Range: \"$BIG\""
expect 200 GET "/v1/blobs/$BIG" -H "Range: bytes=0-9" -H "If-Range: \"other\""
CODE=$(curl -sS --cacert "$T/cert.pem" -I -o "$T/hdr" -w '%{http_code}' "$URL/v1/blobs/$BIG")
[ "$CODE" = 200 ] && [ "$(header Content-Length)" = "$size" ] || fail "HEAD: $CODE, length $(header Content-Length)"
# resuming an interrupted download with curl -C
head -c 5000 "$T/big.kvb" > "$T/partial"
curl -sS --cacert "$T/cert.pem" -C - -o "$T/partial" "$URL/v1/blobs/$BIG" && cmp -s "$T/partial" "$T/big.kvb" \
  && ok "curl -C - resumes" || fail "resume with curl -C -"

# keys
expect 200 GET /v1/keys
[ "$(json '.keys[0].key_id')" = "$(cut -d. -f1 <<<"$CRED")" ] || fail "keys: key id"
[ "$(json '.keys[0].name')" = alice ] || fail "keys: name"
json '.keys[0].pem' > "$T/served.pub"
cmp -s <(openssl pkey -pubin -in "$T/served.pub" -outform DER) <(openssl pkey -pubin -in "$T/pub1.pub" -outform DER) \
  || fail "keys: PEM is the publisher's public key"
[ "$(json '.revoked | length')" = 0 ] || fail "keys: no revocations yet"

# malformed requests
expect 404 GET /v1/blobs/0123
expect 404 GET "/v1/blobs/$(tr a-f A-F <<<"$ID")"
expect 404 GET "/v1/blobs/$(printf '0%.0s' $(seq 64))"
[ "$(json .error)" = not_found ] || fail "unknown blob error body"
expect 404 GET "/v1/blobs/../../index.db"
expect 404 GET "/v1/blobs/../../../../etc/passwd" --path-as-is
expect 404 GET "/v1/blobs/%2e%2e%2f%2e%2e%2findex.db" --path-as-is
expect 404 GET "/v1/blobs/$ID/../../keys" --path-as-is
expect 404 GET "/v1/blobs/..%2f..%2findex.db%00$(printf '0%.0s' $(seq 40))" --path-as-is
expect 404 GET "/v1/blobs/$ID/manifest/x"
expect 404 GET /index.db
expect 404 GET /
expect 405 DELETE "/v1/blobs/$ID"
[ "$(header Allow)" = "GET, HEAD" ] || fail "405 Allow header"
expect 405 POST /v1/catalog -H 'Content-Type: application/json' --data '{}'
expect 405 GET /v1/purchases
expect 405 GET /v1/blobs
expect 400 GET /v1/catalog --data-binary 'x' -X GET
big_header=$(head -c 70000 /dev/zero | tr '\0' a)
req GET /v1/catalog -H "X-Big: $big_header"
case "$CODE" in 431|413|400) ok "oversized header refused ($CODE)";; *) fail "oversized header: $CODE";; esac
expect 200 GET /healthz   # still alive after all that

# metrics reflect the traffic
expect 200 GET /metrics
grep -q '^kvpubd_requests_total{endpoint="blob",status="206"} [1-9]' "$T/body" || fail "metrics: blob 206"
grep -q '^kvpubd_requests_total{endpoint="blob",status="416"} 4' "$T/body" || fail "metrics: 416 count"
grep -q '^kvpubd_response_bytes_total [1-9]' "$T/body" || fail "metrics: bytes"
grep -q '^kvpubd_active_connections ' "$T/body" || fail "metrics: connections"
# the access log has one structured line per request
wait_log "event=access remote=127.0.0.1 method=GET path=\"/v1/blobs/$BIG\" endpoint=blob status=206" \
  || fail "access log line"
# downloads are recorded in the store's download log
n=$(sqlite3 "$T/store/index.db" "select count(*) from download_log")
[ "$n" -ge 10 ] && ok "download log rows: $n" || fail "download log rows: $n"

stop_server && ok "SIGTERM: clean exit" || fail "server exit status"
grep -q "event=stopped cut_requests=0" "$T/server.log" || fail "stop logged"
done_tests
