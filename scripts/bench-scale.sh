#!/usr/bin/env bash
# bench-scale.sh: the measured figures of spec/scale.md. Requests/s of the signed catalog
# snapshot served as a static file by nginx (a `kvpubd export` tree) next to kvpubd's dynamic
# GET /v1/catalog (one SQLite query per request) and its own cached GET /v1/snapshot, side by
# side in one run over a store of NLIST+1 listings; then the download throughput of one 117 MB
# blob from two mirrors at once (nginx serving the export, kvpubd serving the store): two
# concurrent clients, one per mirror (kvfetch get, verifying while it downloads; and curl, not
# verifying), and one kvfetch get --parallel 2 fetching the two halves of the blob's chunks
# from both; then the same with each mirror limited to LIMIT bytes/s per connection (two
# locations of the one nginx with limit_rate: mirrors whose links, not the CPU, set the rate),
# one mirror against --parallel 2. Medians of RUNS interleaved runs. A benchmark, not a test:
# run by `make bench` (scripts/bench.sh).
set -euo pipefail
BUILD=${BUILD:-build}
THREADS=${THREADS:-2}      # server worker threads / nginx workers
RUNS=${RUNS:-3}            # medians of RUNS
DUR=${DUR:-5}              # seconds of wrk
NLIST=${NLIST:-100}        # small listings besides the big blob
LIMIT=${LIMIT:-10m}        # per-connection rate of the two limited mirrors (nginx limit_rate)
. "$(dirname "$0")/bench-serve.inc"
bs_init scale curl wrk || exit 0
bs_blob
bs_kvpubd
"$BUILD/kvpubd" key rotate --store "$W/store" >/dev/null
mkdir -p "$W/small" "$W/trust"
cp "$data/bench.pub" "$W/trust/"
for i in $(seq "$NLIST"); do
  "$BUILD/kvsynth" blob --key "$data/bench.key" -o "$W/small/$i.kvb" --tokens 16 --seed "$((1000 + i))" \
    --title "listing $i"
  KVPUB_CREDENTIAL=$CRED "$BUILD/kvpubd" upload "$W/small/$i.kvb" --server "https://127.0.0.1:$kport" \
    --cacert "$W/cert.pem" >/dev/null
done
"$BUILD/kvpubd" export --store "$W/store" --out "$W/www" >/dev/null
BS_NGINX_EXTRA="location /lim1/ { alias $W/www/; limit_rate $LIMIT; }
    location /lim2/ { alias $W/www/; limit_rate $LIMIT; }"
bs_nginx "$W/www"
K="https://127.0.0.1:$kport" N="https://127.0.0.1:$nport"
C=(curl -sS --cacert "$W/cert.pem")
snap_bytes=$("${C[@]}" -o /dev/null -w '%{size_download}' "$N/v1/snapshot")
cat_bytes=$("${C[@]}" -o /dev/null -w '%{size_download}' "$K/v1/catalog")
ksnap_bytes=$("${C[@]}" -o /dev/null -w '%{size_download}' "$K/v1/snapshot")

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print 0 }'; }
# mbs SECONDS_NS BYTES -> MB/s
mbs() { awk -v ns="$1" -v b="$2" 'BEGIN { printf "%.0f", b / (ns / 1e9) / 1e6 }'; }
# kvget URL -> a verified download into a fresh cache (the download alone: an f16-zstd blob's
# decoded copy, spec/kvblob.md 4.2, would be work after it; this blob is f16 and has none)
kvget() {
  local c; c=$(mktemp -d "$W/cache.XXXXXX")
  "$BUILD/kvfetch" get --quiet --trust "$W/trust" --cacert "$W/cert.pem" --cache-dir "$c" --no-decoded-copy "$1" \
    >/dev/null
  rm -rf "$c"
}
cget() { "${C[@]}" -o /dev/null "$1"; }
# kvpar ID [MIRROR...] -> one verified download of the blob, its chunks in two halves from two
# mirrors (default: nginx and kvpubd)
kvpar() {
  local c id=$1 m=(); shift
  for u in "${@:-$N}" ; do m+=(--mirror "$u"); done
  [ $# -gt 0 ] || m+=(--mirror "$K")
  c=$(mktemp -d "$W/cache.XXXXXX")
  "$BUILD/kvfetch" get --quiet --trust "$W/trust" --cacert "$W/cert.pem" --cache-dir "$c" --no-decoded-copy --parallel 2 \
    "${m[@]}" "$id" >/dev/null
  rm -rf "$c"
}
kvpar_lim() { kvpar "$1" "$N/lim1" "$N/lim2"; }
# timed CLIENT URL... -> MB/s of one client per URL, all at once (aggregate)
timed() {
  local client=$1 t0 t1 u pids=(); shift
  t0=$(date +%s%N)
  for u in "$@"; do "$client" "$u" & pids+=($!); done
  wait "${pids[@]}"
  t1=$(date +%s%N)
  mbs $((t1 - t0)) $((size * $#))
}

load0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); $(nproc) cores shared with the clients;" \
  "$THREADS server threads/workers; load average before: $load0"
page=$((NLIST + 1 < 100 ? NLIST + 1 : 100))
echo "snapshot $snap_bytes bytes ($((NLIST + 1)) listings); catalog page $cat_bytes bytes ($page listings);" \
  "blob $id: $size bytes"
for r in $(seq "$RUNS"); do
  bs_rate "$nport" /v1/snapshot >>"$W/r.nsnap"; echo >>"$W/r.nsnap"
  bs_rate "$kport" /v1/catalog >>"$W/r.kcat"; echo >>"$W/r.kcat"
  bs_rate "$kport" /v1/snapshot >>"$W/r.ksnap"; echo >>"$W/r.ksnap"
  for cl in kvget cget; do
    timed "$cl" "$N/v1/blobs/$id" >>"$W/d.$cl.n"; echo >>"$W/d.$cl.n"
    timed "$cl" "$K/v1/blobs/$id" >>"$W/d.$cl.k"; echo >>"$W/d.$cl.k"
    timed "$cl" "$N/v1/blobs/$id" "$K/v1/blobs/$id" >>"$W/d.$cl.nk"; echo >>"$W/d.$cl.nk"
  done
  timed kvpar "$id" >>"$W/d.kvpar"; echo >>"$W/d.kvpar"
  timed kvget "$N/lim1/v1/blobs/$id" >>"$W/d.lim1"; echo >>"$W/d.lim1"
  timed kvpar_lim "$id" >>"$W/d.lim2"; echo >>"$W/d.lim2"
done
m() { median <"$W/$1"; }
nsnap=$(m r.nsnap) kcat=$(m r.kcat) ksnap=$(m r.ksnap)
printf '%-52s %10s %8s\n' "requests/s, wrk -t2 -c32, ${DUR} s, median of $RUNS" "req/s" "x nginx"
printf '%-52s %10s %8s\n' "nginx: static /v1/snapshot ($snap_bytes B)" "$nsnap" 1.00
printf '%-52s %10s %8s\n' "kvpubd: dynamic /v1/catalog ($cat_bytes B)" "$kcat" "$(bs_ratio "$kcat" "$nsnap")"
printf '%-52s %10s %8s\n' "kvpubd: cached /v1/snapshot ($ksnap_bytes B)" "$ksnap" "$(bs_ratio "$ksnap" "$nsnap")"
printf '%-52s %10s %10s\n' "download of the blob, MB/s, median of $RUNS" "kvfetch" "curl"
printf '%-52s %10s %10s\n' "1 client, nginx" "$(m d.kvget.n)" "$(m d.cget.n)"
printf '%-52s %10s %10s\n' "1 client, kvpubd" "$(m d.kvget.k)" "$(m d.cget.k)"
printf '%-52s %10s %10s\n' "2 clients at once, one per mirror (aggregate)" "$(m d.kvget.nk)" "$(m d.cget.nk)"
printf '%-52s %10s %10s\n' "1 client, --parallel 2: half the chunks from each" "$(m d.kvpar)" "-"
printf '%-52s %10s %10s\n' "mirrors limited to $LIMIT/s a connection: 1 mirror" "$(m d.lim1)" "-"
printf '%-52s %10s %10s\n' "... 1 client, --parallel 2 over two such mirrors" "$(m d.lim2)" "-"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg) (kvfetch verifies every chunk while it downloads," \
  "and a --parallel download once more as a whole before it keeps it)"
