#!/usr/bin/env bash
# serve_strict_http.sh: requests framed or encoded so that kvpubd and a proxy in front of it could
# read them differently are refused (RFC 9112, spec/http-api.md): two Content-Length headers (a
# smuggling vector), HTTP/1.1 without Host, an encoded NUL or slash in the path (404: it names
# no blob), an encoded NUL in the query (400), and an upload price past int64 (400, not 409). A
# purchase without a "buyer" field is recorded under the client's address.
source "$(dirname "$0")/lib_serve.bash"
build_mkblob
make_cert
command -v openssl >/dev/null || { echo "openssl CLI missing"; exit 1; }
"$KVPUBD" keygen -o "$T/pub1" >/dev/null
CRED=$("$KVPUBD" publisher add --store "$T/store" --key "$T/pub1.pub" --name alice 2>/dev/null)
mkblob --key "$T/pub1.key" -o "$T/b.kvb" --seed 1 --title strict
mkblob --key "$T/pub1.key" -o "$T/p.kvb" --seed 2 --title priced
start_server "$T/store"
expect 201 PUT "/v1/blobs" -H "Authorization: Bearer $CRED" --data-binary @"$T/b.kvb"; ID=$(json .id)

raw_status() {  # REQUEST-BYTES: the status line's code of the server's answer
  printf "$1" >"$T/raw.req"
  timeout 8 openssl s_client -quiet -connect "127.0.0.1:$PORT" -servername localhost <"$T/raw.req" \
    2>/dev/null | head -n1 | tr -d '\r' | cut -d' ' -f2
}
st=$(raw_status 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')
[ "$st" = 200 ] && ok "a well-framed raw request is served" || fail "baseline raw request: '$st'"
st=$(raw_status 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nContent-Length: 7\r\nConnection: close\r\n\r\n')
[ "$st" = 400 ] && ok "two Content-Length headers: 400" || fail "two Content-Length headers: '$st'"
st=$(raw_status 'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n')
[ "$st" = 400 ] && ok "HTTP/1.1 without Host: 400" || fail "HTTP/1.1 without Host: '$st'"
st=$(raw_status 'GET /healthz HTTP/1.0\r\n\r\n')
[ "$st" = 200 ] && ok "HTTP/1.0 without Host is fine" || fail "HTTP/1.0 without Host: '$st'"
# header fields a proxy could frame differently: MHD files "Content-Length : 38" under another
# name and, without the check, served the 38 body bytes as a second request (200, then 404)
smuggle='GET /v1/none HTTP/1.1\r\nHost: x\r\n\r\n'
for case in "Content-Length : 38|whitespace before a header's colon" \
            "Transfer-Encoding : chunked|whitespace before Transfer-Encoding's colon" \
            "X-A: a\rContent-Length: 38|a bare CR inside a header value" \
            "Host: other|a second Host header"; do
  st=$(raw_status "GET /healthz HTTP/1.1\r\nHost: localhost\r\n${case%%|*}\r\nConnection: close\r\n\r\n$smuggle")
  [ "$st" = 400 ] && ok "${case#*|}: 400" || fail "${case#*|}: '$st'"
done
st=$(raw_status 'GET /healthz HTTP/1.2\r\nConnection: close\r\n\r\n')
[ "$st" = 400 ] || [ "$st" = 505 ] && ok "HTTP/1.2 without Host: $st" || fail "HTTP/1.2 without Host: '$st'"

expect 404 GET "/v1/blobs/$ID%00.kvb"
expect 404 GET "/v1/blobs/$ID%2fmanifest"
expect 404 GET "/v1/blobs/$ID%2Fmanifest"
expect 200 GET "/v1/blobs/$ID/manifest"
expect 400 GET "/v1/catalog?q=%00zzz"
expect 200 GET "/v1/catalog?q=strict"
expect 400 PUT "/v1/blobs?price=9223372036854775808" -H "Authorization: Bearer $CRED" --data-binary @"$T/p.kvb"
# refused before the body: with Expect: 100-continue the server never asks for it
expect 400 PUT "/v1/blobs?price=x" -H "Authorization: Bearer $CRED" -H "Expect: 100-continue" --data-binary @"$T/p.kvb"
! grep -qi '^HTTP/[0-9.]* 100' "$T/hdr" || fail "a bad price was answered only after the body: $(cat "$T/hdr")"
expect 201 PUT "/v1/blobs?price=9223372036854775807" -H "Authorization: Bearer $CRED" --data-binary @"$T/p.kvb"
P=$(json .id)

expect 201 POST /v1/purchases -H 'Content-Type: application/json' --data-binary "{\"blob\": \"$P\"}"
buyer=$(sqlite3 "$T/store/index.db" "select buyer from purchases")
[ "$buyer" = 127.0.0.1 ] && ok "a purchase without a buyer is recorded under the client's address" ||
  fail "purchase buyer: '$buyer'"
expect 200 GET /healthz
stop_server && ok "clean exit" || fail "server exit status"

# one address cannot hold every slot by default: 20 idle TLS connections from 127.0.0.1 against
# --max-conns 16 (+4 busy slots) keep only 8 (a quarter, at least 8), and 127.0.0.2 is served
hold_and_probe() {  # SERVE-ARGS...: $T/probe gets the status 127.0.0.2 gets while .1 holds 20 connections
  start_server "$T/store" --max-conns 16 "$@"
  local pids="" i
  for i in $(seq 20); do  # each holds its connection open while its stdin (a sleep) lasts
    (sleep 12 | openssl s_client -quiet -connect "127.0.0.1:$PORT" -servername localhost >/dev/null 2>&1) &
    pids="$pids $!"
  done
  sleep 3
  curl -sS --interface 127.0.0.2 --max-time 4 --cacert "$T/cert.pem" -o /dev/null -w '%{http_code}' \
    "$URL/healthz" >"$T/probe" 2>/dev/null || true
  kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  wait $pids 2>/dev/null || true
}
hold_and_probe
st=$(cat "$T/probe")
[ "$st" = 200 ] && ok "another address is served while one holds its 8 connections" || fail "per-address default: '$st'"
hold_and_probe --max-conns-per-ip 0
st=$(cat "$T/probe")
[ "$st" != 200 ] && ok "with the limit off, the same 20 connections starve it ('$st')" ||
  fail "control: with --max-conns-per-ip 0 the probe was still served"
done_tests
