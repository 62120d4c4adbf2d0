#!/usr/bin/env bash
# serve_limits.sh: the daemon's hygiene under hostile clients: the connection limit (with
# --max-conns idle TLS connections open, the next ones are answered 503 busy at once, past the
# spare slots they get no service, and the server recovers once they go), idle and
# partial-header (slowloris) connections, even ones trickling a header line at a time, closed
# at --timeout while others are served, a flood of headers, a 100 KB request line, absurd
# Content-Lengths (413 before any body byte is read), and log lines that cannot be forged from
# the request. Ends with the server still answering /healthz and stopping cleanly.
source "$(dirname "$0")/lib_serve.bash"
make_cert
command -v openssl >/dev/null || { echo "openssl CLI missing"; exit 1; }

"$KVPUBD" keygen -o "$T/pub1" >/dev/null
CRED=$("$KVPUBD" publisher add --store "$T/store" --key "$T/pub1.pub" --name alice 2>/dev/null)
TIMEOUT=3
start_server "$T/store" --max-conns 4 --timeout "$TIMEOUT"
expect 200 GET /healthz

# raw REQUEST-FILE [seconds]: sends the file's bytes over TLS, keeps reading until the server
# closes (s_client -quiet ignores stdin EOF); the response lands in $T/raw.out.
raw() {
  timeout "${2:-8}" openssl s_client -quiet -connect "127.0.0.1:$PORT" -servername localhost \
    <"$1" >"$T/raw.out" 2>/dev/null || true
}
status_of() { head -n1 "$T/raw.out" | tr -d '\r' | cut -d' ' -f2; }
healthy() {  # the daemon is alive and serving
  kill -0 "$SERVER_PID" 2>/dev/null || { fail "server died ($1)"; return; }
  req GET /healthz --max-time 5
  [ "$CODE" = 200 ] && ok "healthy after $1" || fail "not answering /healthz after $1 (got $CODE)"
}
refused_4xx() {  # REQUEST-FILE WHAT AFTER: WHAT is answered with a 4xx; healthy after AFTER
  raw "$1"
  local st
  st=$(status_of)
  case "$st" in 4[0-9][0-9]) ok "$2 refused ($st)";; *) fail "$2: status '$st'";; esac
  healthy "$3"
}

# ---- connection limit: 4 idle TLS connections fill the server; the next are told 503 busy at
# once (4 spare slots at --max-conns 4); once 4 more idle ones fill those, a request gets no service
mkfifo "$T/hold"
HOLD_PIDS=""
hold_conns() {  # FIRST LAST: idle TLS connections idleFIRST..idleLAST, reading the fifo
  for i in $(seq "$1" "$2"); do
    openssl s_client -brief -connect "127.0.0.1:$PORT" -servername localhost <"$T/hold" \
      >"$T/idle$i.out" 2>&1 &
    HOLD_PIDS="$HOLD_PIDS $!"
  done
  EXTRA_PIDS="$HOLD_PIDS"
  [ "$1" = 1 ] && exec 9>"$T/hold"   # releases the s_clients' blocked opens; they stay idle reading it
  for i in $(seq "$1" "$2"); do
    for _ in $(seq 100); do grep -q "CONNECTION ESTABLISHED" "$T/idle$i.out" && break; sleep 0.05; done
    grep -q "CONNECTION ESTABLISHED" "$T/idle$i.out" || fail "idle connection $i did not complete TLS"
  done
}
hold_conns 1 4
t0=$(date +%s%N)
req GET /healthz --max-time 5
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
if [ "$CODE" = 503 ] && grep -q '"error":"busy"' "$T/body" && grep -qi '^retry-after: 1' "$T/hdr" \
   && grep -qi '^connection: close' "$T/hdr" && [ "$ms" -lt 3000 ]; then
  ok "5th connection at --max-conns 4: 503 busy, Retry-After 1, closed, in $ms ms"
else
  fail "5th connection at --max-conns 4: got $CODE in $ms ms: $(head -c 200 "$T/body") $(tr -d '\r' <"$T/hdr" | tr '\n' ' ')"
fi
hold_conns 5 8
req GET /healthz --max-time 1.5
[ "$CODE" != 200 ] && [ "$CODE" != 503 ] && ok "past the spare slots a connection waits unserved ($CODE)" \
  || fail "connection past --max-conns 4 and its spare slots answered $CODE"
# the clients leave (stdin EOF ends s_client): the slots free up and service resumes by itself
exec 9>&-
for p in $HOLD_PIDS; do wait "$p" 2>/dev/null || true; done
EXTRA_PIDS=""
healthy "the connection limit"

# idle connections are closed by the server at --timeout, without the client's help
mkfifo "$T/hold2"
openssl s_client -brief -connect "127.0.0.1:$PORT" -servername localhost <"$T/hold2" >"$T/idle.out" 2>&1 &
IDLE=$!; EXTRA_PIDS="$IDLE"
exec 8>"$T/hold2"
t0=$(date +%s%N)
for _ in $(seq $((TIMEOUT * 20 + 60))); do kill -0 "$IDLE" 2>/dev/null || break; sleep 0.05; done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
if kill -0 "$IDLE" 2>/dev/null; then fail "idle TLS connection still open after ${ms}ms"; kill "$IDLE"
else ok "idle TLS connection closed by the server after ${ms}ms"; fi
exec 8>&-
wait "$IDLE" 2>/dev/null || true
EXTRA_PIDS=""

# ---- slowloris: partial headers, then silence; served requests go on meanwhile ----
printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1' >"$T/partial"
SLOW_PIDS=""
for i in 1 2; do
  (timeout $((TIMEOUT + 6)) openssl s_client -quiet -connect "127.0.0.1:$PORT" -servername localhost \
     <"$T/partial" >"$T/slow$i.out" 2>/dev/null; echo $? >"$T/slow$i.rc") &
  SLOW_PIDS="$SLOW_PIDS $!"
done
EXTRA_PIDS="$SLOW_PIDS"
sleep 0.5
for _ in 1 2 3; do
  req GET /healthz --max-time 3
  [ "$CODE" = 200 ] || fail "request beside slowloris connections: $CODE"
done
ok "served beside partial-header connections"
for p in $SLOW_PIDS; do wait "$p" 2>/dev/null || true; done
EXTRA_PIDS=""
for i in 1 2; do
  # s_client exits 0 when the server closes; 124 would mean our guard timeout fired
  [ "$(cat "$T/slow$i.rc")" != 124 ] && ok "partial-header connection $i closed by the server" \
    || fail "partial-header connection $i was never closed"
  grep -q "HTTP/1.1 200" "$T/slow$i.out" && fail "a partial request was answered 200"
done
# a trickle: one header line every 0.7 s resets an idle timer for ever; the header deadline
# (whole headers within --timeout of accept) cuts it anyway
t0=$(date +%s%N)
{ printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\n'
  for i in $(seq 12); do printf 'X-Trickle-%d: y\r\n' "$i"; sleep 0.7; done; printf '\r\n'; } |
  timeout 15 openssl s_client -quiet -connect "127.0.0.1:$PORT" -servername localhost >"$T/trickle.out" 2>/dev/null || true
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
if grep -q "HTTP/1.1 200" "$T/trickle.out"; then
  fail "trickled headers (8.4 s) were answered: no header deadline (${ms}ms)"
else
  ok "trickled headers cut by the header deadline"
fi
# a trickled body: one byte every 0.3 s resets the idle timer for ever; bodies must average
# 1 KiB/s after --timeout, so the server cuts it at about --timeout (guard: 20 s)
t0=$(date +%s%N)
{ printf 'POST /v1/purchases HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2000\r\n\r\n'
  for i in $(seq 60); do printf ' '; sleep 0.3; done; } |
  timeout 20 openssl s_client -quiet -connect "127.0.0.1:$PORT" -servername localhost >"$T/bodytrickle.out" 2>/dev/null \
  && rc=0 || rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$rc" != 124 ] && [ "$ms" -lt 15000 ] && ok "trickled body cut by the body deadline (${ms}ms)" \
  || fail "trickled body not cut (rc $rc, ${ms}ms)"
grep -q "HTTP/1.1 200" "$T/bodytrickle.out" && fail "a trickled body was answered 200"
wait_log "event=body_timeout" || fail "no body_timeout log line"
req GET /metrics --max-time 5
grep -Eq '^kvpubd_header_timeouts_total [1-9]' "$T/body" && ok "header timeouts counted" \
  || fail "kvpubd_header_timeouts_total not counted"
grep -Eq '^kvpubd_body_timeouts_total 1$' "$T/body" && ok "body timeouts counted" \
  || fail "kvpubd_body_timeouts_total not 1"
grep -Eq '^kvpubd_busy_total [1-9]' "$T/body" && ok "busy answers counted" || fail "kvpubd_busy_total not counted"
healthy "slowloris"

# ---- a flood of headers: past the per-connection memory, refused with a 4xx ----
{
  printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\n'
  for i in $(seq 6000); do printf 'X-H%d: v\r\n' "$i"; done
  printf '\r\n'
} >"$T/many"
refused_4xx "$T/many" "6000 headers" "a header flood"

# ---- a 100 KB request line ----
{
  printf 'GET /v1/catalog?q='
  head -c 102400 /dev/zero | tr '\0' 'a'
  printf ' HTTP/1.1\r\nHost: localhost\r\n\r\n'
} >"$T/longurl"
refused_4xx "$T/longurl" "100 KB URL" "a 100 KB URL"

# ---- absurd Content-Length: 413 at once, the body is never waited for ----
t0=$(date +%s%N)
printf 'PUT /v1/blobs HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\nContent-Length: 9000000000000000000\r\n\r\n' \
  "$CRED" >"$T/bigput"
raw "$T/bigput" 6
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
st=$(status_of)
[ "$st" = 413 ] && ok "absurd upload Content-Length -> 413" || fail "absurd upload Content-Length: '$st'"
[ "$ms" -lt $((TIMEOUT * 1000)) ] && ok "413 without waiting for the body (${ms}ms)" \
  || fail "413 took ${ms}ms (waited for the body?)"
# over 2^64: not a number at all
printf 'PUT /v1/blobs HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\nContent-Length: 99999999999999999999999\r\n\r\n' \
  "$CRED" >"$T/hugeput"
raw "$T/hugeput" 6
st=$(status_of)
case "$st" in 400|413) ok "Content-Length over 2^64 -> $st";; *) fail "Content-Length over 2^64: '$st'";; esac
printf 'POST /v1/purchases HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n' \
  >"$T/bigpost"
raw "$T/bigpost" 6
st=$(status_of)
[ "$st" = 413 ] && ok "absurd purchase Content-Length -> 413" || fail "absurd purchase Content-Length: '$st'"
# a declared body that never comes: closed at the timeout
printf 'PUT /v1/blobs HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\nContent-Length: 100000\r\n\r\nKVB' \
  "$CRED" >"$T/shortput"
t0=$(date +%s%N)
raw "$T/shortput" $((TIMEOUT + 6))
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$ms" -lt $(( (TIMEOUT + 5) * 1000 )) ] && ok "stalled upload body closed after ${ms}ms" \
  || fail "stalled upload body kept open"
healthy "absurd Content-Lengths"

# ---- log injection: what the client sends cannot start a new log line or close a field ----
req GET '/v1/nope%0d%0aevent=access%20status=200%22x%5c' --max-time 5
[ "$CODE" = 404 ] || fail "injection probe: $CODE"
wait_log 'event=access.*path="/v1/nope' || fail "probe not logged"
if grep -q '^event=access status=200' "$T/server.log" || grep -a 'path="/v1/nope' "$T/server.log" | grep -q '[^\\]"x'; then
  fail "a request forged a log line or field"
else
  ok "untrusted path escaped in the log"
fi
# a method token with a quote and a non-ASCII byte (answered 405 or refused by MHD, never
# copied raw into the log)
printf 'G"E\xc3T\xff /v1/catalog HTTP/1.1\r\nHost: localhost\r\n\r\n' >"$T/method"
raw "$T/method" 5
st=$(status_of)
case "$st" in 4[0-9][0-9]|"") ok "odd method refused (${st:-closed})";; *) fail "odd method: '$st'";; esac
if grep -a 'event=access' "$T/server.log" | grep -aq 'method=G"'; then
  fail "raw method bytes in the log"
else
  ok "method escaped in the log"
fi
bad=$(grep -avc '^ts=' "$T/server.log" || true)
[ "$bad" = 0 ] && ok "every log line is a structured line" || fail "$bad log lines not starting with ts="

healthy "everything"
stop_server || fail "graceful stop at the end"
done_tests
