#!/usr/bin/env bash
# serve_ratelimit.sh: POST /v1/purchases is rate-limited per client address: past the burst an
# address is answered 429 rate_limited with Retry-After (before its body is read, nothing
# recorded) while another address (127.0.0.2, also loopback) is still served, and once
# Retry-After has passed the first address may buy again.
source "$(dirname "$0")/lib_serve.bash"
build_mkblob
make_cert
new_publisher alice
mkblob --key "$T/alice.key" -o "$T/priced.kvb" --seed 1 --title priced
"$KVPUBD" serve --help | grep -q -- '--purchase-rate N' || fail "serve --help documents --purchase-rate"
# a burst of 3, then one every 3 s: slow enough that the test's own pace never refills a whole
# purchase between two requests that expect a 429
start_server "$T/store" --purchase-burst 3 --purchase-rate 20
expect 201 "PUT" "/v1/blobs?price=5" -H "Authorization: Bearer $CRED" --data-binary @"$T/priced.kvb"; P=$(json .id)

buy() {  # WANT [curl args...]
  local want=$1; shift
  expect "$want" POST /v1/purchases -H 'Content-Type: application/json' --data-binary "{\"blob\": \"$P\"}" "$@"
}
for _ in 1 2 3; do buy 201; done
buy 429
[ "$(json .error)" = rate_limited ] || fail "429 names rate_limited: $(cat "$T/body")"
RA=$(header Retry-After)
case "$RA" in [1-3]) ok "429 carries Retry-After: $RA";; *) fail "429 Retry-After '$RA'";; esac
[ "$(header Content-Type)" = application/json ] || fail "429 is a JSON error"
[ "$(sqlite3 "$T/store/index.db" "select count(*) from purchases")" = 3 ] || fail "a refused purchase is not recorded"
# another address is not held back by the first one's flood
buy 201 --interface 127.0.0.2
wait_log 'remote=127.0.0.2 method=POST .*status=201' || fail "the second purchase came from 127.0.0.2"
buy 429
sleep "$RA"
buy 201
buy 429
expect 200 GET /metrics
grep -q '^kvpubd_rate_limited_total 3$' "$T/body" || fail "metrics count the 429s: $(grep rate_limited "$T/body")"
grep -q 'endpoint="purchase",status="429"} 3' "$T/body" || fail "requests_total has purchase 429"
stop_server || fail "clean stop"

# 0 turns the limit off
start_server "$T/store" --purchase-burst 1 --purchase-rate 0
for _ in 1 2 3; do buy 201; done
stop_server || fail "clean stop"
done_tests
