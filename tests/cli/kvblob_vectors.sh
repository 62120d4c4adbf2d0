#!/usr/bin/env bash
# kvblob_vectors.sh: `kvsynth vectors` regenerates spec/vectors byte for byte, and SHA256SUMS holds.
set -u
BUILD=${BUILD:-build}
KVSYNTH=${KVSYNTH:-$BUILD/kvsynth}
ROOT=${KVPUB_ROOT:-.}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$KVSYNTH" vectors -o "$tmp" >/dev/null || { echo "kvsynth vectors failed"; exit 1; }
(cd "$ROOT/spec/vectors" && sha256sum -c --quiet SHA256SUMS) || { echo "spec/vectors do not match SHA256SUMS"; exit 1; }
fails=0
for f in vec-f16.kvb vec-f16-zstd.kvb vec-q8.kvb vec-q4.kvb vec-f16-leaves.kvb SHA256SUMS test-key.pub test-key.key; do
  if cmp -s "$tmp/$f" "$ROOT/spec/vectors/$f"; then echo "ok   $f"; else echo "FAIL $f differs from spec/vectors"; fails=$((fails+1)); fi
done
# The chunk digest, computed from the spec's words with coreutils and the openssl tool only:
# SHA-256 of the concatenated binary SHA-256s of the chunk's 32 KiB pieces.
v=$ROOT/spec/vectors/vec-f16-leaves.kvb
ml=$(od -An -tu4 -j16 -N4 "$v" | tr -d ' ')
data=$(( (32 + ml + 64 + 63) / 64 * 64 ))
KVFETCH=${KVFETCH:-$BUILD/kvfetch}
"$KVFETCH" inspect "$v" --json >"$tmp/insp.json" || { echo "FAIL inspect"; fails=$((fails+1)); }
for c in 0 1; do
  off=$(jq -r ".manifest.chunks[$c].offset" "$tmp/insp.json")
  len=$(jq -r ".manifest.chunks[$c].length" "$tmp/insp.json")
  want=$(jq -r ".manifest.chunks[$c].sha256" "$tmp/insp.json")
  rm -f "$tmp"/leaf.*
  tail -c +$((data + off + 1)) "$v" | head -c "$len" | split -b 32768 -a 3 - "$tmp/leaf."
  got=$(for f in "$tmp"/leaf.*; do openssl dgst -sha256 -binary "$f"; done | sha256sum | cut -d' ' -f1)
  n=$(ls "$tmp"/leaf.* | wc -l)
  if [ "$got" = "$want" ]; then echo "ok   chunk $c ($len bytes, $n leaves): digest as the spec defines it"
  else echo "FAIL chunk $c: shell digest $got, manifest $want"; fails=$((fails+1)); fi
done
# every vector verifies, with the leaves hashed side by side (each manager forced; one the CPU
# lacks falls back to OpenSSL) and one by one (OpenSSL)
cp "$ROOT/spec/vectors/test-key.pub" "$tmp/trust.pub" && mkdir "$tmp/trust" && mv "$tmp/trust.pub" "$tmp/trust/"
for f in vec-f16.kvb vec-f16-zstd.kvb vec-q8.kvb vec-q4.kvb vec-f16-leaves.kvb v1-f16-zstd.kvb; do
  for eng in auto openssl sse avx512 avx2; do
    if KVPUB_LEAF_HASH=$eng "$KVFETCH" verify "$ROOT/spec/vectors/$f" --trust "$tmp/trust" >/dev/null 2>"$tmp/err"; then
      echo "ok   verify $f ($eng)"
    else echo "FAIL verify $f ($eng): $(cat "$tmp/err")"; fails=$((fails+1)); fi
  done
done
[ "$(stat -c %a "$tmp/test-key.key")" = 600 ] || { echo "FAIL test-key.key is not 0600"; fails=$((fails+1)); }
"$KVSYNTH" vectors --help | grep -q "usage: kvsynth vectors" || { echo "FAIL --help"; fails=$((fails+1)); }
"$KVSYNTH" vectors 2>/dev/null; [ $? = 2 ] || { echo "FAIL missing -o must exit 2"; fails=$((fails+1)); }
[ "$fails" -eq 0 ] && echo "all passed" || exit 1
