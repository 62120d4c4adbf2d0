#!/usr/bin/env bash
# fetch_edges.sh: the loader's edges. A URL without a blob id in it (a mirror's "latest.kvb") is
# revalidated with the validators it came with (304: the cached blob; a new file: downloaded),
# used stale with a warning when the mirror cannot be asked, while an id URL stays immutable (no
# network). A download cannot hold the caller for ever: a mirror that drips bytes is dropped by
# the mean-rate floor, a silent one by the overall deadline. Partial downloads count against
# --cache-max, and one that ran out of room is removed. Blobs: the spec/vectors ones, via nginx.
set -eu
. tests/cli/lib/fetch_env.sh
fetch_env_init fetch-edges

mkdir -p "$tmp/www" "$tmp/trust"
cp spec/vectors/test-key.pub "$tmp/trust/"
f16=$(sha256sum spec/vectors/vec-f16.kvb | cut -d' ' -f1)
q8=$(sha256sum spec/vectors/vec-q8.kvb | cut -d' ' -f1)
cp spec/vectors/vec-f16.kvb "$tmp/www/latest.kvb"
leaves=$(sha256sum spec/vectors/vec-f16-leaves.kvb | cut -d' ' -f1)
cp spec/vectors/vec-q8.kvb "$tmp/www/$q8"
cp spec/vectors/vec-f16-leaves.kvb "$tmp/www/$leaves"
export KVPUB_CACHE_DIR="$tmp/cache"
start_nginx "$tmp/www" 2k
base="https://127.0.0.1:$NGINX_PORT"
log="$tmp/nginx/access.log"
G=("$KVFETCH" get --trust "$tmp/trust" --cacert "$tmp/cert.pem" --retries 1 --json)
field() { jq -r ".$1" "$tmp/out"; }

note "first get of latest.kvb: downloaded"
expect_rc 0 "${G[@]}" "$base/latest.kvb"
[ "$(field id)" = "$f16" ] && [ "$(field from_cache)" = false ] || fail "first get: $(cat "$tmp/out")"
grep -q '"GET /latest.kvb HTTP/1.1" 200' "$log" || fail "no 200 for the first get: $(cat "$log")"

note "second get: revalidated with the server (304), answered from the cache"
: >"$log"
expect_rc 0 "${G[@]}" "$base/latest.kvb"
[ "$(field id)" = "$f16" ] && [ "$(field from_cache)" = true ] && [ "$(field revalidated)" = true ] \
  || fail "second get: $(cat "$tmp/out")"
grep -q '"GET /latest.kvb HTTP/1.1" 304 0' "$log" || fail "no 304 revalidation: $(cat "$log")"
"$KVFETCH" get --trust "$tmp/trust" --cacert "$tmp/cert.pem" "$base/latest.kvb" >/dev/null 2>"$tmp/err"
grep -q "the server says it is unchanged" "$tmp/err" || fail "summary does not say revalidated: $(cat "$tmp/err")"

note "the mirror publishes a new blob under the same name: the next get downloads it"
cp spec/vectors/vec-q8.kvb "$tmp/www/latest.kvb.new"
touch -d '+2 minutes' "$tmp/www/latest.kvb.new"
mv "$tmp/www/latest.kvb.new" "$tmp/www/latest.kvb"
: >"$log"
expect_rc 0 "${G[@]}" "$base/latest.kvb"
[ "$(field id)" = "$q8" ] && [ "$(field from_cache)" = false ] || fail "after the change: $(cat "$tmp/out")"
grep -q '"GET /latest.kvb HTTP/1.1" 200' "$log" || fail "changed file not downloaded: $(cat "$log")"
expect_rc 0 "${G[@]}" "$base/latest.kvb"
[ "$(field id)" = "$q8" ] && [ "$(field revalidated)" = true ] || fail "new blob not revalidated: $(cat "$tmp/out")"

note "an interrupted get of the old latest.kvb, then the mirror publishes a new one: started afresh"
key=$(printf %s "$base/other.kvb" | sha256sum | cut -d' ' -f1)
cp spec/vectors/vec-f16.kvb "$tmp/www/other.kvb"
head -c 3000 spec/vectors/vec-q8.kvb >"$tmp/cache/tmp/$key.part"  # what the earlier run got
: >"$log"
expect_rc 0 "${G[@]}" "$base/other.kvb"
[ "$(field id)" = "$f16" ] && [ "$(field resumed_bytes)" = 0 ] || fail "changed under a partial: $(cat "$tmp/out")"
grep -q '"GET /other.kvb HTTP/1.1" 206' "$log" && grep -q '"GET /other.kvb HTTP/1.1" 200' "$log" \
  || fail "not resumed, then fetched again from byte 0: $(cat "$log")"
[ ! -e "$tmp/cache/tmp/$key.part" ] || fail "the old partial stayed"

note "the mirror is down: the last blob is used, verified, with a warning"
stop_nginx
expect_rc 0 "${G[@]}" --connect-timeout 2 "$base/latest.kvb"
[ "$(field id)" = "$q8" ] && [ "$(field stale)" = true ] && [ "$(field revalidated)" = false ] \
  || fail "stale get: $(cat "$tmp/out")"
expect_err "warning: could not ask whether .*latest.kvb changed"

note "an id URL is immutable: no network, no warning"
expect_rc 0 "${G[@]}" --connect-timeout 2 "$base/$q8"
[ "$(field from_cache)" = true ] && [ "$(field stale)" = false ] || fail "id URL: $(cat "$tmp/out")"
[ ! -s "$tmp/err" ] || fail "id URL from the cache printed: $(cat "$tmp/err")"

note "a mirror that drips bytes (2 KiB/s) is dropped by --min-rate after the stall window"
start_nginx "$tmp/www" 2k
rm -rf "$tmp/cache"
t0=$(date +%s)
expect_rc 2 "$KVFETCH" get --trust "$tmp/trust" --cacert "$tmp/cert.pem" --stall-timeout 2 --retries 1 \
  --min-rate 16K "https://127.0.0.1:$NGINX_PORT/slow/$leaves"
expect_err "too slow: [0-9]+ bytes/s on average over [0-9]+ s, the minimum is 16384 \(--min-rate\)"
expect_err "partial download kept"
[ $(( $(date +%s) - t0 )) -le 10 ] || fail "the slow mirror held the get for $(( $(date +%s) - t0 )) s"
expect_rc 2 "$KVFETCH" get --trust "$tmp/trust" --cacert "$tmp/cert.pem" --min-rate 1x "$base/$q8"
expect_err "--min-rate '1x' is not a rate"
stop_nginx

note "a server that accepts and never answers: --timeout ends the retries"
port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
# openssl s_server completes the TLS handshake, then sends nothing: its stdin is a fifo that
# nobody writes to (opened read-write here, so it never reaches end of file)
mkfifo "$tmp/never"
exec 7<>"$tmp/never"
openssl s_server -quiet -accept "127.0.0.1:$port" -cert "$tmp/cert.pem" -key "$tmp/key.pem" \
  <&7 >/dev/null 2>&1 &
silent=$!
exec 7>&-
for i in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
t0=$(date +%s)
expect_rc 2 "$KVFETCH" get --trust "$tmp/trust" --cacert "$tmp/cert.pem" --stall-timeout 2 \
  --retries 50 --timeout 4 "https://127.0.0.1:$port/$q8"
el=$(( $(date +%s) - t0 ))
kill "$silent" 2>/dev/null || true
wait "$silent" 2>/dev/null || true
expect_err "deadline"
[ "$el" -le 9 ] || fail "--timeout 4 let the silent server hold the get for $el s"

note "a server that sends the blob in short, whole bodies (1500 bytes at 500 B/s): one --timeout for all"
# each answer ends cleanly, so the get resumes from where it stopped; the deadline must not
# start again with each resumed body (it did: five bodies of 3 s against --timeout 4)
cat >"$tmp/short.py" <<'PY'
import http.server, re, ssl, sys, time
blob = open(sys.argv[1], 'rb').read()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a): pass
    def do_GET(self):
        r = self.headers.get('Range'); start = int(re.match(r'bytes=(\d+)-', r).group(1)) if r else 0
        part = blob[start:start + 1500]
        self.send_response(206 if r else 200)
        if r: self.send_header('Content-Range', 'bytes %d-%d/%d' % (start, start + len(part) - 1, len(blob)))
        self.send_header('Content-Length', str(len(part))); self.end_headers()
        for i in range(0, len(part), 10):
            self.wfile.write(part[i:i + 10]); self.wfile.flush(); time.sleep(0.02)
s = http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[2])), H)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(sys.argv[3], sys.argv[4])
s.socket = c.wrap_socket(s.socket, server_side=True)
s.serve_forever()
PY
port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
python3 "$tmp/short.py" spec/vectors/vec-f16-leaves.kvb "$port" "$tmp/cert.pem" "$tmp/key.pem" 2>/dev/null &
shortsrv=$!
for i in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
rm -rf "$tmp/cache"
t0=$(date +%s)
expect_rc 2 "$KVFETCH" get --trust "$tmp/trust" --cacert "$tmp/cert.pem" --retries 1 --timeout 4 \
  "https://127.0.0.1:$port/short.kvb"
el=$(( $(date +%s) - t0 ))
kill "$shortsrv" 2>/dev/null || true
wait "$shortsrv" 2>/dev/null || true
expect_err "deadline"
[ "$el" -le 9 ] || fail "--timeout 4 let short bodies hold the get for $el s"
expect_rc 2 "$KVFETCH" get --trust "$tmp/trust" --timeout -3 "$base/$q8"
expect_err "--timeout '-3' is not a number of seconds"

note "a download that runs out of room removes its partial file (exit 2)"
start_nginx "$tmp/www" 2k
base="https://127.0.0.1:$NGINX_PORT"
rm -rf "$tmp/cache"
# a 4 KiB file size limit stands in for a full disk: the write fails the same way (EFBIG, not
# ENOSPC) and takes the same path; SIGXFSZ is ignored so the write returns the error
set +e
(trap '' XFSZ; ulimit -f 4; exec "$KVFETCH" get --trust "$tmp/trust" --cacert "$tmp/cert.pem" \
  "$base/$leaves") >"$tmp/out" 2>"$tmp/err"
rc=$?
set -e
[ "$rc" -eq 2 ] || fail "out of room: exit $rc, want 2: $(cat "$tmp/err")"
expect_err "writing the partial download: File too large \(the partial download was removed\)"
[ -z "$(ls -A "$tmp/cache/tmp")" ] || fail "partial file left after running out of room: $(ls -l "$tmp/cache/tmp")"

note "--cache-max counts partial downloads: an abandoned one is evicted, one being written is not"
mkdir -p "$tmp/cache/tmp"
old=$(printf 'a%.0s' $(seq 64)).part busy=$(printf 'b%.0s' $(seq 64)).part
head -c 300000 /dev/zero >"$tmp/cache/tmp/$old"
head -c 300000 /dev/zero >"$tmp/cache/tmp/$busy"
touch -d '-2 days' "$tmp/cache/tmp/$old" "$tmp/cache/tmp/$busy"
exec 8>>"$tmp/cache/tmp/$busy"   # this shell holds the lock a downloading kvfetch would
flock 8
expect_rc 0 "$KVFETCH" get --trust "$tmp/trust" --cacert "$tmp/cert.pem" --cache-max 200K "$base/$leaves"
[ ! -e "$tmp/cache/tmp/$old" ] || fail "an abandoned partial download over the cap was kept"
[ -e "$tmp/cache/tmp/$busy" ] || fail "a partial download being written was evicted"
[ -e "$tmp/cache/$leaves" ] || fail "the blob just fetched was evicted"
exec 8>&-
echo "fetch_edges: ok"
