# fetch_env.sh: helpers the kvfetch integration tests (tests/cli/fetch_*.sh, run_*.sh) source:
# a throwaway TLS certificate for 127.0.0.1, an nginx static mirror on a free loopback port,
# and assertions. The caller starts with fetch_env_init, which makes $tmp and the cleanup trap.

# fetch_env_init NAME: $BUILD and $KVFETCH (overridable), a fresh $tmp named after the test
# (/tmp/kvpub-NAME-XXXXXX), and a trap that stops the servers and removes $tmp on exit.
fetch_env_init() {
  BUILD=${BUILD:-build}
  KVFETCH=${KVFETCH:-$BUILD/kvfetch}
  tmp=$(mktemp -d "/tmp/kvpub-$1-XXXXXX")
  trap fetch_env_cleanup EXIT
}

fail() { echo "FAIL: $*" >&2; exit 1; }
note() { echo "--- $*"; }

# mk_cert DIR: DIR/cert.pem + DIR/key.pem, self-signed for CN=127.0.0.1 with IP SAN.
mk_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$1/key.pem" -out "$1/cert.pem" >/dev/null 2>&1 || fail "openssl could not make a certificate"
}

NGINX_PID=""
NGINX_PORT=""
# start_nginx WWW_DIR [RATE]: serves WWW_DIR over TLS on 127.0.0.1 (cert from $tmp), /slow/ at
# RATE bytes/s (default 2k). Sets NGINX_PORT; the access log is $tmp/nginx/access.log, one line
# per request with the Authorization header it carried (auth="-" when none).
# $NGINX_LOCATIONS goes into that server block, $NGINX_SERVERS into the http block (more servers).
start_nginx() {
  local www=$1 rate=${2:-2k} try
  mkdir -p "$tmp/nginx"
  [ -f "$tmp/cert.pem" ] || mk_cert "$tmp"
  for try in 1 2 3 4 5 6 7 8; do
    local port=${NGINX_PORT:-$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))}
    cat >"$tmp/nginx/nginx.conf" <<CONF
daemon off;
worker_processes 1;
user root;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
events { worker_connections 64; }
http {
  log_format kv '\$remote_addr [\$time_local] "\$request" \$status \$body_bytes_sent "\$http_user_agent" '
                'port=\$server_port auth="\$http_authorization"';
  access_log $tmp/nginx/access.log kv;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate $tmp/cert.pem;
    ssl_certificate_key $tmp/key.pem;
    root $www;
    location /slow/ { alias $www/; limit_rate $rate; }
    ${NGINX_LOCATIONS:-}
  }
  ${NGINX_SERVERS:-}
}
CONF
    nginx -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" >"$tmp/nginx/stdout" 2>&1 &
    NGINX_PID=$!
    local i
    for i in $(seq 50); do
      if curl -s -o /dev/null --cacert "$tmp/cert.pem" "https://127.0.0.1:$port/"; then
        NGINX_PORT=$port; return 0
      fi
      kill -0 "$NGINX_PID" 2>/dev/null || break
      sleep 0.1
    done
    stop_nginx
    [ -n "${NGINX_PORT:-}" ] && fail "nginx did not restart on port $NGINX_PORT: $(cat "$tmp/nginx/error.log")"
  done
  fail "nginx did not start: $(cat "$tmp/nginx/error.log" "$tmp/nginx/stdout" 2>/dev/null)"
}

stop_nginx() {
  if [ -n "$NGINX_PID" ]; then
    kill "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true  # an nginx that exited (its port taken) is retried, not a failure
    NGINX_PID=""
  fi
}

KVPUBD_PID=""
KVPUBD_PORT=""
# start_kvpubd STORE [extra serve args...]: kvpubd serve on 127.0.0.1 port 0 (or $KVPUBD_PORT
# again after a restart). Sets KVPUBD_PORT.
start_kvpubd() {
  local store=$1; shift
  [ -f "$tmp/cert.pem" ] || mk_cert "$tmp"
  rm -f "$tmp/kvpubd.port"
  "$BUILD/kvpubd" serve --store "$store" --listen "127.0.0.1:${KVPUBD_PORT:-0}" \
    --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem" --port-file "$tmp/kvpubd.port" \
    --grace 0 --log "$tmp/kvpubd.log" "$@" &
  KVPUBD_PID=$!
  local i
  for i in $(seq 100); do
    if [ -s "$tmp/kvpubd.port" ]; then KVPUBD_PORT=$(cat "$tmp/kvpubd.port"); return 0; fi
    kill -0 "$KVPUBD_PID" 2>/dev/null || break
    sleep 0.1
  done
  fail "kvpubd serve did not start: $(tail -5 "$tmp/kvpubd.log" 2>/dev/null)"
}

stop_kvpubd() {  # [signal]
  if [ -n "$KVPUBD_PID" ]; then
    kill "-${1:-TERM}" "$KVPUBD_PID" 2>/dev/null || true
    wait "$KVPUBD_PID" 2>/dev/null || true  # a killed server's status is not a test failure
    KVPUBD_PID=""
  fi
}

fetch_env_cleanup() {
  stop_nginx
  stop_kvpubd KILL
  [ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"
}

# expect_rc WANT CMD...: runs CMD with stdout to $tmp/out and stderr to $tmp/err.
expect_rc() {
  local want=$1 rc; shift
  set +e
  "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?
  set -e
  [ "$rc" -eq "$want" ] || fail "exit $rc, want $want: $*
stdout: $(head -c 2000 "$tmp/out")
stderr: $(head -c 2000 "$tmp/err")"
}

expect_err() {  # PATTERN: stderr of the last expect_rc matches (grep -E)
  grep -Eq -- "$1" "$tmp/err" || fail "stderr does not match '$1': $(cat "$tmp/err")"
}
