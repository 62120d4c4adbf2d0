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
. "$(dirname "$0")/bench-serve.inc"
bs_init serve curl wrk || exit 0
bs_blob
bs_kvpubd
curl -sS --cacert "$W/cert.pem" -o "$W/catalog.json" "https://127.0.0.1:$kport/v1/catalog"
# nginx: the same bytes at the same paths, the catalog as a static file
mkdir -p "$W/www/v1/blobs"
ln -s "$(cd "$(dirname "$blob")" && pwd)/$(basename "$blob")" "$W/www/v1/blobs/$id"
cp "$W/catalog.json" "$W/www/v1/catalog"
bs_nginx "$W/www"

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
echo "blob $id: $size bytes; $THREADS server threads/workers; $(nproc) cores shared with the clients"
k1=$(one "$kport"); n1=$(one "$nport")
k8=$(eight "$kport"); n8=$(eight "$nport")
kr=$(bs_rate "$kport" /v1/catalog); nr=$(bs_rate "$nport" /v1/catalog)
printf '%-34s %12s %12s %8s\n' "" kvpubd nginx ratio
printf '%-34s %12s %12s %8s\n' "1 download (MB/s, best of $REPS)" "$k1" "$n1" "$(bs_ratio "$k1" "$n1")"
printf '%-34s %12s %12s %8s\n' "8 concurrent downloads (MB/s)" "$k8" "$n8" "$(bs_ratio "$k8" "$n8")"
printf '%-34s %12s %12s %8s\n' "catalog GET, wrk -c32 (req/s)" "$kr" "$nr" "$(bs_ratio "$kr" "$nr")"
echo "(nginx serves the catalog as a static file; kvpubd queries SQLite per request)"
