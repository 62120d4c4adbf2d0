#!/usr/bin/env bash
# serve_shutdown.sh: SIGTERM while a download is running: the listener closes at once, the
# download completes byte-exact, the daemon exits 0; past --grace it stops anyway. SIGHUP
# reopens the log (logrotate). Also: the connection limit and --help/usage exit codes.
source "$(dirname "$0")/lib_serve.bash"
build_mkblob
make_cert
"$KVPUBD" serve --help | grep -q -- "--tls-cert" || fail "serve --help"
rc=0; "$KVPUBD" serve --store "$T/store" 2>/dev/null || rc=$?
[ $rc = 2 ] || fail "missing options exit 2"
rc=0; "$KVPUBD" serve --store "$T/store" --listen 127.0.0.1:99999 --tls-cert "$T/cert.pem" --tls-key "$T/certkey.pem" \
  2>"$T/err" || rc=$?
[ $rc = 2 ] && grep -q "port must be" "$T/err" || fail "bad port refused"
rc=0; "$KVPUBD" serve --store "$T/store" --listen 127.0.0.1:0 --tls-cert "$T/nope.pem" --tls-key "$T/certkey.pem" \
  2>"$T/err" || rc=$?
[ $rc = 2 ] && grep -q "nope.pem" "$T/err" || fail "missing certificate named"

"$KVPUBD" keygen -o "$T/pub1" >/dev/null
CRED=$("$KVPUBD" publisher add --store "$T/store" --key "$T/pub1.pub" --name alice 2>/dev/null)
mkblob --key "$T/pub1.key" -o "$T/big.kvb" --tokens 512 --layers 8 --kv-dim 1024 --codec f16 --chunk-tokens 256
start_server "$T/store" --max-conns 4
expect 201 PUT /v1/blobs -H "Authorization: Bearer $CRED" --data-binary @"$T/big.kvb"
ID=$(json .id)

# SIGHUP: the log moved away is reopened at its path
mv "$T/server.log" "$T/server.log.1"
kill -HUP "$SERVER_PID"
for _ in $(seq 50); do [ -s "$T/server.log" ] && break; sleep 0.05; done
expect 200 GET /healthz
wait_log 'event=access.*/healthz' && ok "log reopened on SIGHUP" || fail "SIGHUP reopen"

# SIGTERM in the middle of a rate-limited download (16 MiB at 8 MB/s: about 2 s)
curl -sS --cacert "$T/cert.pem" --limit-rate 8M -o "$T/dl" "$URL/v1/blobs/$ID" & DL=$!
EXTRA_PIDS="$DL"
sleep 0.6
kill -TERM "$SERVER_PID"
sleep 0.2
curl -sS --cacert "$T/cert.pem" --max-time 2 -o /dev/null "$URL/healthz" 2>/dev/null \
  && fail "new connections are refused while stopping" || ok "listener closed on SIGTERM"
wait "$DL" && ok "download finished during shutdown" || fail "download cut by SIGTERM"
cmp -s "$T/dl" "$T/big.kvb" || fail "download bytes after SIGTERM"
rc=0; wait "$SERVER_PID" || rc=$?; SERVER_PID=""
[ "$rc" = 0 ] || fail "exit status after SIGTERM: $rc"
grep -q "event=stopped cut_requests=0" "$T/server.log" || fail "clean stop logged"

# past --grace the daemon stops anyway and says how many requests it cut
start_server "$T/store" --grace 1
curl -sS --cacert "$T/cert.pem" --limit-rate 1M -o "$T/dl2" "$URL/v1/blobs/$ID" 2>/dev/null & DL=$!
EXTRA_PIDS="$DL"
sleep 0.5
t0=$(date +%s%N)
kill -TERM "$SERVER_PID"; rc=0; wait "$SERVER_PID" || rc=$?; SERVER_PID=""
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
wait "$DL" 2>/dev/null && fail "slow download should have been cut" || ok "slow download cut at the deadline"
[ "$rc" = 0 ] && [ "$ms" -lt 4000 ] || fail "stop after grace: rc=$rc in ${ms}ms"
grep -q "event=stopped cut_requests=1" "$T/server.log" || fail "cut request counted"

# a client that sent only a request line has no request in flight: it holds no grace
start_server "$T/store" --grace 5
(printf 'GET /healthz HTTP/1.1\r\n'; sleep 8) | timeout 10 openssl s_client -quiet -connect "127.0.0.1:$PORT" \
  -servername localhost >/dev/null 2>&1 & HALF=$!
EXTRA_PIDS="$HALF"
sleep 0.7
t0=$(date +%s%N)
kill -TERM "$SERVER_PID"; rc=0; wait "$SERVER_PID" || rc=$?; SERVER_PID=""
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
kill "$HALF" 2>/dev/null || true
[ "$rc" = 0 ] && [ "$ms" -lt 3000 ] && ok "a half-sent request did not hold the stop (${ms} ms)" \
  || fail "a half-sent request held the stop: rc=$rc in ${ms}ms"
grep -q "event=stopped cut_requests=0" "$T/server.log" || fail "a half-sent request counted as cut"
done_tests
