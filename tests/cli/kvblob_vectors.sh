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
KVFETCH=${KVFETCH:-$BUILD/kvfetch}
# shell_digest BLOB INSPECT_JSON C: the digest of chunk C's stored bytes; leaves counted in $n
shell_digest() {
  local ml data off len
  ml=$(od -An -tu4 -j16 -N4 "$1" | tr -d ' ')
  data=$(( (32 + ml + 64 + 63) / 64 * 64 ))
  off=$(jq -r ".manifest.chunks[$3].offset" "$2")
  len=$(jq -r ".manifest.chunks[$3].length" "$2")
  rm -f "$tmp"/leaf.*
  tail -c +$((data + off + 1)) "$1" | head -c "$len" | split -b 32768 -a 3 - "$tmp/leaf."
  for f in "$tmp"/leaf.*; do openssl dgst -sha256 -binary "$f"; done | sha256sum | cut -d' ' -f1
}
v=$ROOT/spec/vectors/vec-f16-leaves.kvb
"$KVFETCH" inspect "$v" --json >"$tmp/insp.json" || { echo "FAIL inspect"; fails=$((fails+1)); }
for c in 0 1; do
  want=$(jq -r ".manifest.chunks[$c].sha256" "$tmp/insp.json")
  got=$(shell_digest "$v" "$tmp/insp.json" $c)
  n=$(ls "$tmp"/leaf.* | wc -l)
  if [ "$got" = "$want" ]; then echo "ok   chunk $c ($n leaves): digest as the spec defines it"
  else echo "FAIL chunk $c: shell digest $got, manifest $want"; fails=$((fails+1)); fi
done
# The f16-zstd vector's decoded digests (spec 4.2), the same way from the f16 vector, whose
# chunks are the same values stored as they are
"$KVFETCH" inspect "$ROOT/spec/vectors/vec-f16.kvb" --json >"$tmp/f16.json" &&
  "$KVFETCH" inspect "$ROOT/spec/vectors/vec-f16-zstd.kvb" --json >"$tmp/zstd.json" ||
  { echo "FAIL inspect"; fails=$((fails+1)); }
for c in 0 1 2; do
  want=$(jq -r ".manifest.chunks[$c].raw_sha256" "$tmp/zstd.json")
  got=$(shell_digest "$ROOT/spec/vectors/vec-f16.kvb" "$tmp/f16.json" $c)
  if [ "$got" = "$want" ]; then echo "ok   f16-zstd chunk $c: raw_sha256 is the digest of its decoded bytes"
  else echo "FAIL f16-zstd chunk $c: shell digest $got, raw_sha256 $want"; fails=$((fails+1)); fi
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
