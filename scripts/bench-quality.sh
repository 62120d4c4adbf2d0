#!/usr/bin/env bash
# bench-quality.sh (make bench, section quality; a benchmark, not a test): how close a loaded
# document cache comes to a full prefill when the document does not sit right after BOS, and
# what each remedy costs. For each model (stories260K: real trained weights; and a Qwen3-shaped
# kvsynth model with random weights), 24 documents of real text (license texts), each after
# prefixes of 16, 64 and 200 tokens of real text taken from another document, and 10 two-document
# compositions, through `kvfetch compare` (32 greedy positions teacher-forced with the full
# prefill's greedy tokens, the same for every variant of a placement; KL(full || loaded) in nats):
#   drop    the prefix left out entirely (loaded right after BOS)
#   norot   loaded after the prefix without re-rotating the keys
#   rerot   loaded after the prefix, keys re-rotated (the default path)
#   rcF     --recompute F: the first F of the document's tokens prefilled afresh (F = .05 .10 .15 .30)
#   blF     --recompute F --recompute-method blend: CacheBlend (layer 0 of every token recomputed,
#           then the F whose layer-1 K/V deviate most recomputed at every layer)
#   exact   published with the prefix as its declared context (single documents only)
# Documents 1-12 are the tuning half (the default --recompute was chosen on them), 13-24 are held
# out; the summary reports both halves. Output under $BUILD/quality/: raw rows (raw-MODEL.tsv),
# the table (quality.txt) and a plot (quality.png: mean KL against the recompute fraction, one
# line per prefix length and model, baselines as horizontal lines).
# Knobs: MODELS ("stories260K qwen3-synth"), POSITIONS (32), THREADS (2), PLOT_ONLY=1 (no
# measurement: the table and the plot again from the raw rows already under $BUILD/quality).
set -u
BUILD=${BUILD:-build}
SHARED=${KVPUB_SHARED:-../shared}
MODELS=${MODELS:-stories260K qwen3-synth}
N=${POSITIONS:-32}
THREADS=${THREADS:-2}
out="$BUILD/quality"; mkdir -p "$out"
tmp=$(mktemp -d /tmp/kvpub-bench-quality-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
die() { echo "bench-quality: $*" >&2; exit 1; }
KVFETCH="$BUILD/kvfetch"
"$BUILD/kvpubd" keygen -o "$tmp/pub" >/dev/null || die "keygen"
mkdir -p "$tmp/trust"; cp "$tmp/pub.pub" "$tmp/trust/"
export KVPUB_CACHE_DIR="$tmp/cache"
FRACS=".05 .10 .15 .30"

# 24 source windows of real text: (file, byte offset)
SRC="GPL-3:0 GPL-3:6000 GPL-3:12000 GPL-3:18000 GPL-3:24000 GPL-3:30000 Apache-2.0:0 Apache-2.0:3000
     Apache-2.0:6000 Apache-2.0:9000 MPL-2.0:1000 MPL-2.0:5000 MPL-2.0:9000 Artistic:1000 Artistic:4000
     BSD:200 GFDL-1.3:2000 GFDL-1.3:9000 GFDL-1.3:16000 LGPL-2.1:3000 LGPL-2.1:9000 LGPL-2.1:15000
     CC0-1.0:2000 GPL-2:4000"
# text_at FILE OFFSET LEN: LEN bytes of a license text from OFFSET (wrapped to fit the file)
text_at() {
  local f="/usr/share/common-licenses/$1" size room
  size=$(wc -c <"$f"); room=$(( size > $3 ? size - $3 : 1 ))
  tail -c +$(( $2 % room + 1 )) "$f" | head -c "$3" | tr -s ' \n\t' ' '
}
ntok() { "$KVFETCH" tokenize --model "$1" --special --no-bos - <"$2" | wc -w; }
# trim FILE to the longest prefix of at most WANT tokens under MODEL (by bytes)
trim_to() {
  local m=$1 f=$2 want=$3 lo=1 hi n mid
  hi=$(wc -c <"$f")
  while [ $lo -lt $hi ]; do
    mid=$(( (lo + hi + 1) / 2 ))
    head -c $mid "$f" >"$f.t"
    n=$(ntok "$m" "$f.t")
    if [ "$n" -le "$want" ]; then lo=$mid; else hi=$((mid - 1)); fi
  done
  head -c $lo "$f" >"$f.t" && mv "$f.t" "$f"
}

model_path() {
  case "$1" in
    stories260K) echo "$SHARED/models/stories260K.gguf" ;;
    qwen3-synth)
      local m="$BUILD/bench-data/qwen3-quality.gguf"
      mkdir -p "$BUILD/bench-data"
      [ -s "$m" ] || "$BUILD/kvsynth" --arch qwen3 --layers 4 --dim 256 --heads 8 --kv-heads 4 --head-dim 32 \
        --ffn 512 --vocab 2048 --ctx 1024 --tokenizer bpe --seed 11 -o "$m" >/dev/null || return 1
      echo "$m" ;;
    *) return 1 ;;
  esac
}

# compare ARGS... -> one TSV row: kl_mean kl_max argmax positions greedy_len cost rcost
measure() {
  "$KVFETCH" compare --model "$M" --trust "$tmp/trust" --threads "$THREADS" -n "$N" --json --quiet --follow full \
    --prompt " And so it ends." "$@" >"$tmp/c.json" 2>"$tmp/c.err" || { echo "- - - - - - -"; return; }
  jq -r --argjson n "$N" '[.kl_mean, .kl_max, .argmax_agree, .positions,
      (if .first_disagreement < 0 then .positions else .first_disagreement end),
      (if .speedup > 0 then 1 / .speedup else 0 end),
      (if .timings.full_prefill_s > 0 then ([.blobs[].recompute_s] | add) / .timings.full_prefill_s else 0 end)]
      | @tsv' "$tmp/c.json"
}

for name in $MODELS; do
  [ -n "${PLOT_ONLY:-}" ] && break
  M=$(model_path "$name") && [ -f "$M" ] || { echo "bench-quality: no model $name, skipped"; continue; }
  raw="$out/raw-$name.tsv"
  printf 'model\tdoc\tset\tprefix\tvariant\tkl_mean\tkl_max\targmax\tpositions\tgreedy_len\tcost\trcost\n' >"$raw"
  # documents: ~120 tokens each (room for a 200-token prefix, two documents and the generation)
  d=0
  for s in $SRC; do
    d=$((d + 1))
    text_at "${s%%:*}" "${s##*:}" 2000 >"$tmp/doc$d.txt"
    trim_to "$M" "$tmp/doc$d.txt" 120
  done
  "$BUILD/kvpubd" publish --store "$tmp/st-$name" --model "$M" --key "$tmp/pub.key" --threads "$THREADS" --json \
    "$tmp"/doc{1..24}.txt >"$tmp/pub.json" || die "publish on $name"
  blob() { find "$tmp/st-$name/blobs" -name "$(jq -r ".documents[$(($1 - 1))].id" "$tmp/pub.json")"; }
  echo "bench-quality: $name: 24 documents published; measuring (this takes a few minutes)..."
  for d in $(seq 24); do
    set_name=$([ "$d" -le 12 ] && echo tune || echo held)
    b=$(blob "$d")
    for P in 16 64 200; do
      # the prefix: real text from another document's source, cut to P tokens
      s=$(echo $SRC | tr ' ' '\n' | sed -n "$(( (d + 6) % 24 + 1 ))p")
      text_at "${s%%:*}" "$(( ${s##*:} + 2500 ))" 1500 >"$tmp/pfx.txt"
      trim_to "$M" "$tmp/pfx.txt" "$P"
      pfx=$(cat "$tmp/pfx.txt")
      [ -n "$pfx" ] || die "empty prefix for document $d"
      row() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$d" "$set_name" "$P" "$1" "$(measure --blob "$b" --prefix "$pfx" "${@:2}")" >>"$raw"; }
      row drop --drop-prefix
      row norot --no-rerotate
      row rerot
      for f in $FRACS; do row "rc$f" --recompute "$f"; done
      for f in $FRACS; do row "bl$f" --recompute "$f" --recompute-method blend; done
      "$BUILD/kvpubd" publish --store "$tmp/ctx-$name" --model "$M" --key "$tmp/pub.key" --threads "$THREADS" --json \
        --context "$pfx" "$tmp/doc$d.txt" >"$tmp/cpub.json" || die "publish --context"
      cb=$(find "$tmp/ctx-$name/blobs" -name "$(jq -r '.documents[0].id' "$tmp/cpub.json")")
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$d" "$set_name" "$P" exact "$(measure --blob "$cb" --prefix "$pfx")" >>"$raw"
    done
  done
  # two documents in a row after a prefix: document B must also see document A
  for d in $(seq 10); do
    set_name=$([ "$d" -le 5 ] && echo tune2 || echo held2)
    a=$(blob "$d"); b=$(blob $((d + 12)))
    for P in 16 64; do
      s=$(echo $SRC | tr ' ' '\n' | sed -n "$(( (d + 3) % 24 + 1 ))p")
      text_at "${s%%:*}" "$(( ${s##*:} + 4000 ))" 1500 >"$tmp/pfx.txt"
      trim_to "$M" "$tmp/pfx.txt" "$P"
      pfx=$(cat "$tmp/pfx.txt")
      for v in drop norot rerot $FRACS $(for f in $FRACS; do echo "b$f"; done); do
        case $v in
          drop) args=(--drop-prefix); vn=drop ;;
          norot) args=(--no-rerotate); vn=norot ;;
          rerot) args=(); vn=rerot ;;
          b*) args=(--recompute "${v#b}" --recompute-method blend); vn="bl${v#b}" ;;
          *) args=(--recompute "$v"); vn="rc$v" ;;
        esac
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$d" "$set_name" "$P" "$vn" \
          "$(measure --blob "$a" --blob "$b" --prefix "$pfx" "${args[@]}")" >>"$raw"
      done
    done
  done
done

# the table: per model, set, prefix and variant
sum="$out/quality.txt"
{
  echo "# kvfetch compare, $N teacher-forced positions, KL(full || loaded) in nats; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load:$(uptime | sed 's/.*load average://')"
  echo "# kl = mean over documents of the per-document mean KL; worst = the largest per-document mean;"
  echo "# max = the largest KL at any position; top1 = argmax agreement; greedy = mean length of the"
  echo "# agreeing greedy prefix; g16 = documents whose greedy outputs agree for 16 tokens;"
  echo "# cost = loaded time to first token / full prefill's (tiny models: dominated by fixed costs);"
  echo "# rcost = the recompute's own time / the full prefill's"
  printf '%-12s %-6s %6s %-7s %9s %9s %9s %6s %7s %6s %6s %6s\n' model set prefix variant kl worst max top1 greedy g16 cost rcost
  for f in "$out"/raw-*.tsv; do
    [ -f "$f" ] || continue
    awk -F'\t' 'NR > 1 && $6 != "-" {
        k = $1 "\t" $3 "\t" $4 "\t" $5; n[k]++; kl[k] += $6; if ($6 > w[k]) w[k] = $6; if ($7 > mx[k]) mx[k] = $7
        a[k] += $8; p[k] += $9; g[k] += $10; g16[k] += ($10 >= 16); c[k] += $11; rc[k] += $12 }
      END { for (k in n) { split(k, f, "\t")
        printf "%-12s %-6s %6s %-7s %9.4f %9.4f %9.3f %5.1f%% %7.1f %3d/%-2d %6.2f %6.3f\n", f[1], f[2], f[3], f[4],
          kl[k]/n[k], w[k], mx[k], 100*a[k]/p[k], g[k]/n[k], g16[k], n[k], c[k]/n[k], rc[k]/n[k] } }' "$f" |
      sort -k1,1 -k2,2 -k3,3n -k4,4
  done
} >"$sum"
cat "$sum"

# the plot: mean KL (all single-document rows) against the recompute fraction
if command -v gnuplot >/dev/null 2>&1; then
  for f in "$out"/raw-*.tsv; do
    [ -f "$f" ] || continue
    nm=$(basename "$f" .tsv); nm=${nm#raw-}
    for P in 16 64 200; do
      for meth in rc bl; do
        awk -F'\t' -v P="$P" -v meth="$meth" 'NR > 1 && $6 != "-" && $4 == P && ($3 == "tune" || $3 == "held") {
            v = $5; x = v == "rerot" ? 0 : substr(v, 1, 2) == meth ? substr(v, 3) + 0 : -1
            if (x >= 0) { s[x] += $6; n[x]++ } else if (v !~ /^(rc|bl)/) { b[v] += $6; m[v]++ } }
          END { for (x in s) printf "%s %g\n", x, s[x]/n[x] > "/dev/stdout"
                for (v in b) printf "%s %g\n", v, b[v]/m[v] > "/dev/stderr" }' "$f" \
          2>"$tmp/base-$nm-$P.txt" | sort -n >"$tmp/curve-$nm-$P-$meth.txt"
      done
    done
  done
  # one panel per model; a colour per prefix length; head solid, blend dashed; the baselines
  # (drop, norot) as dotted horizontal lines in the prefix's colour
  models=$(for f in "$out"/raw-*.tsv; do [ -f "$f" ] && basename "$f" .tsv | sed 's/^raw-//'; done)
  nmod=$(echo "$models" | wc -w)
  {
    echo "set terminal pngcairo size $((560 * nmod)),760 noenhanced"
    echo "set output '$out/quality.png'"
    echo "set multiplot layout 1,$nmod title 'Loaded KV after a prefix: mean KL(full || loaded) against --recompute (32 positions, 24 documents)'"
    echo "set xlabel 'fraction of the document recomputed (0 = re-rotation only)'"
    echo "set ylabel 'mean KL, nats'"
    echo "set key below maxrows 4 font ',9'"
    echo "set logscale y"
    echo "set xrange [0:0.3]"
    for nm in $models; do
      echo "set title '$nm'"
      printf 'plot '
      sep=""
      for P in 16 64 200; do
        col=$(case $P in 16) echo '#1f77b4' ;; 64) echo '#d62728' ;; *) echo '#2ca02c' ;; esac)
        printf "%s'%s' using 1:2 with linespoints lw 2 pt 7 lc rgb '%s' title 'head, prefix %s'" \
          "$sep" "$tmp/curve-$nm-$P-rc.txt" "$col" "$P"; sep=", "
        printf "%s'%s' using 1:2 with linespoints lw 2 dt 2 pt 4 lc rgb '%s' title 'blend, prefix %s'" \
          "$sep" "$tmp/curve-$nm-$P-bl.txt" "$col" "$P"
        for v in drop norot; do
          y=$(awk -v v="$v" '$1 == v { print $2 }' "$tmp/base-$nm-$P.txt")
          [ -n "$y" ] && printf "%s%s with lines dt %s lc rgb '%s' title '%s, prefix %s'" "$sep" "$y" \
            "$([ "$v" = drop ] && echo 3 || echo 4)" "$col" "$v" "$P"
        done
      done
      echo
    done
    echo "unset multiplot"
  } >"$tmp/plot.gp"
  gnuplot "$tmp/plot.gp" 2>"$tmp/gp.err" && echo "plot: $out/quality.png" || echo "bench-quality: gnuplot failed: $(head -3 "$tmp/gp.err")"
fi
