#!/usr/bin/env bash
# bench-fairness.sh: do small requests wait behind large downloads? A kvpubd with its default
# options serves a store of a few 29 MB blobs on loopback while bench/bench_fairness keeps
# CLIENTS (64) clients downloading them and probes catalog, manifest and HEAD latencies; RUNS
# (3) runs of SECS (10) s each, then the median of the runs' percentiles. Target (issue 16):
# probe p99 <= 50 ms. KVPUBD=path compares another build, SERVE_OPTS=... other options.
# A benchmark, not a test: run by `make bench` (scripts/bench.sh).
set -euo pipefail
BUILD=${BUILD:-build}
KVPUBD=${KVPUBD:-$BUILD/kvpubd}
CLIENTS=${CLIENTS:-64}
RUNS=${RUNS:-3}
SECS=${SECS:-10}
data="$BUILD/bench-data"
mkdir -p "$data"
W=$(mktemp -d "${TMPDIR:-/tmp}/kvpub-bench-fair.XXXXXX")
SRV=""
cleanup() {
  [ -n "$SRV" ] && kill -TERM "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
[ -x "$BUILD/bench/bench_fairness" ] || { echo "bench-fairness: $BUILD/bench/bench_fairness missing"; exit 0; }

[ -f "$data/bench.key" ] || "$BUILD/kvpubd" keygen -o "$data/bench" >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -addext "subjectAltName=IP:127.0.0.1" -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
cred=$("$BUILD/kvpubd" publisher add --store "$W/store" --key "$data/bench.pub" --name bench 2>/dev/null)
"$KVPUBD" serve --store "$W/store" --listen 127.0.0.1:0 --port-file "$W/port" \
  --tls-cert "$W/cert.pem" --tls-key "$W/key.pem" --log "$W/kvpubd.log" ${SERVE_OPTS:-} >/dev/null &
SRV=$!
for _ in $(seq 100); do [ -s "$W/port" ] && break; sleep 0.05; done
base="https://127.0.0.1:$(cat "$W/port")"
ids=()
for seed in 1 2 3; do  # 256 tokens x 28 layers x 2 x 1024 f16 = 29 MB each
  blob="$data/fair-29MB-$seed.kvb"
  [ -s "$blob" ] || "$BUILD/kvsynth" blob --key "$data/bench.key" -o "$blob" --tokens 256 --layers 28 \
    --kv-dim 1024 --codec f16 --chunk-tokens 256 --seed "$seed" --title "fairness $seed"
  curl -sS --cacert "$W/cert.pem" -X PUT -H "Authorization: Bearer $cred" --data-binary @"$blob" \
    -o /dev/null "$base/v1/blobs"
  ids+=(--blob "$(sha256sum "$blob" | cut -d' ' -f1)")
done

echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), shared with the" \
  "clients; server: defaults ${SERVE_OPTS:-}"
for i in $(seq "$RUNS"); do
  echo "-- run $i, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  "$BUILD/bench/bench_fairness" --base "$base" --cacert "$W/cert.pem" "${ids[@]}" --clients "$CLIENTS" \
    --seconds "$SECS" | tee "$W/run$i"
done
echo "-- median of $RUNS runs (p50 / p90 / p99 ms):"
for what in "probe (catalog" "probe, new" "all requests" "whole downloads"; do
  grep -h "^$what" "$W"/run* | awk -v w="$what" '
    { for (i = 1; i <= NF; i++) { if ($i == "p50") a[NR] = $(i+1); if ($i == "p90") b[NR] = $(i+1); if ($i == "p99") c[NR] = $(i+1) } }
    function med(v, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
                                   return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }
    END { printf "%-32s %8.1f %8.1f %8.1f\n", w, med(a, NR), med(b, NR), med(c, NR) }'
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
