#!/usr/bin/env bash
# bench-serve.sh: HTTPS serving throughput of kvpubd serve next to nginx (nginx-light) on the
# same machine, certificate and file: one and 8 concurrent downloads of a 100 MB+ blob with
# curl, and the small-request rate (catalog) with wrk. Prints MB/s, req/s and kvpubd/nginx.
# A benchmark, not a test: run by `make bench` (scripts/bench.sh) with BUILD set.
set -euo pipefail
BUILD=${BUILD:-build}
THREADS=${THREADS:-2}      # server worker threads / nginx workers
REPS=${REPS:-3}            # best of REPS for the downloads
DUR=${DUR:-5}              # seconds of wrk
data="$BUILD/bench-data"
mkdir -p "$data" "$BUILD/tests"
W=$(mktemp -d "${TMPDIR:-/tmp}/kvpub-bench-serve.XXXXXX")
SRV=""; NGX=""
cleanup() {
  [ -n "$SRV" ] && kill -TERM "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null || true
  [ -n "$NGX" ] && kill -QUIT "$NGX" 2>/dev/null && wait "$NGX" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

for tool in curl wrk openssl; do
  command -v "$tool" >/dev/null || { echo "bench-serve: $tool not installed (make deps --bench)"; exit 0; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "bench-serve: nginx not installed (nginx-light)"; exit 0; }

# the blob: 1024 tokens x 28 layers x 2 x 1024 f16 (Qwen3-0.6B-shaped KV, raw f16) = 117 MB
[ -f "$data/bench.key" ] || "$BUILD/kvpubd" keygen -o "$data/bench" >/dev/null
blob="$data/serve-117MB-v2.kvb"  # v2: made by the container version 2 writer
[ -s "$blob" ] || "$BUILD/kvsynth" blob --key "$data/bench.key" -o "$blob" --tokens 1024 --layers 28 --kv-dim 1024 --codec f16 \
  --chunk-tokens 256 --title "bench blob"
size=$(stat -c %s "$blob")
id=$(sha256sum "$blob" | cut -d' ' -f1)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -addext "subjectAltName=IP:127.0.0.1" -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null

# kvpubd: a fresh store holding the blob, uploaded through the API like any publisher would
cred=$("$BUILD/kvpubd" publisher add --store "$W/store" --key "$data/bench.pub" --name bench 2>/dev/null)
"$BUILD/kvpubd" serve --store "$W/store" --listen 127.0.0.1:0 --port-file "$W/port" --threads "$THREADS" \
  --tls-cert "$W/cert.pem" --tls-key "$W/key.pem" --log "$W/kvpubd.log" >/dev/null &
SRV=$!
for _ in $(seq 100); do [ -s "$W/port" ] && break; sleep 0.05; done
kport=$(cat "$W/port")
curl -sS --cacert "$W/cert.pem" -X PUT -H "Authorization: Bearer $cred" --data-binary @"$blob" \
  -o /dev/null "https://127.0.0.1:$kport/v1/blobs"
curl -sS --cacert "$W/cert.pem" -o "$W/catalog.json" "https://127.0.0.1:$kport/v1/catalog"

# nginx: unprivileged port, its own prefix, same certificate, same bytes at the same path
mkdir -p "$W/ngx/v1/blobs" "$W/ngx/tmp"
ln -s "$(cd "$(dirname "$blob")" && pwd)/$(basename "$blob")" "$W/ngx/v1/blobs/$id"
cp "$W/catalog.json" "$W/ngx/v1/catalog"
nport=$((20000 + RANDOM % 20000))
chmod 755 "$W"
# as root nginx would drop its workers to 'nobody'; keep them as the user who owns the files
userline=""; [ "$(id -u)" = 0 ] && userline="user $(id -un);"
cat > "$W/ngx/nginx.conf" <<EOF
$userline
worker_processes $THREADS;
daemon off;
pid $W/ngx/nginx.pid;
error_log $W/ngx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path $W/ngx/tmp/body; proxy_temp_path $W/ngx/tmp/proxy;
  fastcgi_temp_path $W/ngx/tmp/fcgi; uwsgi_temp_path $W/ngx/tmp/uwsgi; scgi_temp_path $W/ngx/tmp/scgi;
  types { application/json catalog; }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$nport ssl;
    ssl_certificate $W/cert.pem;
    ssl_certificate_key $W/key.pem;
    root $W/ngx;
    location = /v1/catalog { default_type application/json; }
  }
}
EOF
"$NGINX" -p "$W/ngx" -c "$W/ngx/nginx.conf" -e "$W/ngx/error.log" 2>"$W/ngx/start.err" &
NGX=$!
for _ in $(seq 100); do curl -s --cacert "$W/cert.pem" -o /dev/null "https://127.0.0.1:$nport/v1/catalog" && break; sleep 0.05; done

one() {  # port -> best MB/s of REPS single downloads
  local best=0 r
  for _ in $(seq "$REPS"); do
    r=$(curl -sS --cacert "$W/cert.pem" -o /dev/null -w '%{speed_download}' "https://127.0.0.1:$1/v1/blobs/$id")
    best=$(awk -v a="$best" -v b="$r" 'BEGIN { print (b > a) ? b : a }')
  done
  awk -v b="$best" 'BEGIN { printf "%.0f", b / 1e6 }'
}
eight() {  # port -> best aggregate MB/s of REPS rounds of 8 parallel downloads
  local best=0 t0 t1 r
  for _ in $(seq "$REPS"); do
    t0=$(date +%s%N)
    for _ in $(seq 8); do
      curl -sS --cacert "$W/cert.pem" -o /dev/null "https://127.0.0.1:$1/v1/blobs/$id" &
    done
    wait $(jobs -p | grep -v -e "^$SRV\$" -e "^$NGX\$") 2>/dev/null || true
    t1=$(date +%s%N)
    r=$(awk -v s="$size" -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", 8 * s / (ns / 1e9) / 1e6 }')
    [ "$r" -gt "$best" ] && best=$r
  done
  echo "$best"
}
rate() {  # port -> catalog requests/s with wrk (32 keep-alive connections)
  wrk -t2 -c32 -d"${DUR}s" "https://127.0.0.1:$1/v1/catalog" 2>/dev/null | awk '/Requests\/sec/ { printf "%.0f", $2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

echo "blob $id: $size bytes; $THREADS server threads/workers; $(nproc) cores shared with the clients"
k1=$(one "$kport"); n1=$(one "$nport")
k8=$(eight "$kport"); n8=$(eight "$nport")
kr=$(rate "$kport"); nr=$(rate "$nport")
printf '%-34s %12s %12s %8s\n' "" kvpubd nginx ratio
printf '%-34s %12s %12s %8s\n' "1 download (MB/s, best of $REPS)" "$k1" "$n1" "$(ratio "$k1" "$n1")"
printf '%-34s %12s %12s %8s\n' "8 concurrent downloads (MB/s)" "$k8" "$n8" "$(ratio "$k8" "$n8")"
printf '%-34s %12s %12s %8s\n' "catalog GET, wrk -c32 (req/s)" "$kr" "$nr" "$(ratio "$kr" "$nr")"
echo "(nginx serves the catalog as a static file; kvpubd queries SQLite per request)"
