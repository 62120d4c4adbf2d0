# lib_serve.bash: helpers sourced by tests/cli/serve_*.sh and publish_*.sh (not a test itself):
# temp dir + trap cleanup, a self-signed certificate, the mkblob helper, starting kvpubd serve
# on a free loopback port, and curl wrappers that assert status codes.
set -euo pipefail
BUILD=${BUILD:-build}
KVPUBD="$BUILD/kvpubd"
T=$(mktemp -d "${TMPDIR:-/tmp}/kvpub-test.XXXXXX")
SERVER_PID=""
fails=0

cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  for p in ${EXTRA_PIDS:-}; do kill -KILL "$p" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ] && [ -f "$T/server.log" ]; then
    echo "--- server log (last 30 lines) ---"; tail -n 30 "$T/server.log"
  fi
  rm -rf "$T"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }
done_tests() {
  if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed" >&2; exit 1; fi
  echo "all checks passed"
}

# synthetic signed blobs of any shape: `kvsynth blob`, built by `make test` with the rest
mkblob() { "$BUILD/kvsynth" blob "$@"; }
build_mkblob() {
  [ -x "$BUILD/kvsynth" ] || { echo "$BUILD/kvsynth is missing: run the tests through make test" >&2; exit 1; }
}

# new_publisher NAME: a key pair $T/NAME.key/.pub registered in $T/store as NAME; its upload
# credential in $CRED
new_publisher() {
  "$KVPUBD" keygen -o "$T/$1" >/dev/null
  CRED=$("$KVPUBD" publisher add --store "$T/store" --key "$T/$1.pub" --name "$1" 2>/dev/null)
}

make_cert() {  # -> $T/cert.pem $T/certkey.pem for 127.0.0.1 / ::1 / localhost
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" \
    -keyout "$T/certkey.pem" -out "$T/cert.pem" 2>/dev/null
}

# start_server STORE [extra serve options...]: sets PORT and SERVER_PID.
start_server() {
  local store=$1; shift
  rm -f "$T/port"
  "$KVPUBD" serve --store "$store" --listen 127.0.0.1:0 --tls-cert "$T/cert.pem" --tls-key "$T/certkey.pem" \
    --port-file "$T/port" --log "$T/server.log" "$@" >"$T/server.out" 2>"$T/server.err" &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    [ -s "$T/port" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$T/server.err" >&2; return 1; }
    sleep 0.05
  done
  PORT=$(cat "$T/port")
  URL="https://127.0.0.1:$PORT"
}

stop_server() {  # graceful, asserts exit 0
  kill -TERM "$SERVER_PID"
  local rc=0
  wait "$SERVER_PID" || rc=$?
  SERVER_PID=""
  return $rc
}

# req METHOD PATH [curl args...]: body in $T/body, headers in $T/hdr, status in $CODE.
req() {
  local m=$1 p=$2; shift 2
  rm -f "$T/body" "$T/hdr"; : > "$T/body"
  CODE=$(curl -sS --cacert "$T/cert.pem" -X "$m" -o "$T/body" -D "$T/hdr" -w '%{http_code}' "$@" "$URL$p") || CODE="curl-error"
}
# expect CODE METHOD PATH [curl args...]
expect() {
  local want=$1; shift
  req "$@"
  if [ "$CODE" = "$want" ]; then ok "$1 $2 -> $want"; else fail "$1 $2: got $CODE, want $want: $(head -c 300 "$T/body")"; fi
}
# wait_log PATTERN [FILE]: access lines are written when MHD completes a request, which can be
# just after the client has its response; give the server up to 2 s.
wait_log() {
  for _ in $(seq 40); do grep -q -- "$1" "${2:-$T/server.log}" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}
json() { jq -r "$1" "$T/body"; }   # field of the last response body
header() { grep -i "^$1:" "$T/hdr" | head -n1 | cut -d' ' -f2- | tr -d '\r'; }
