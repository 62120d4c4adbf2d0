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
for f in vec-f16.kvb vec-f16-zstd.kvb vec-q8.kvb vec-q4.kvb SHA256SUMS test-key.pub test-key.key; do
  if cmp -s "$tmp/$f" "$ROOT/spec/vectors/$f"; then echo "ok   $f"; else echo "FAIL $f differs from spec/vectors"; fails=$((fails+1)); fi
done
[ "$(stat -c %a "$tmp/test-key.key")" = 600 ] || { echo "FAIL test-key.key is not 0600"; fails=$((fails+1)); }
"$KVSYNTH" vectors --help | grep -q "usage: kvsynth vectors" || { echo "FAIL --help"; fails=$((fails+1)); }
"$KVSYNTH" vectors 2>/dev/null; [ $? = 2 ] || { echo "FAIL missing -o must exit 2"; fails=$((fails+1)); }
[ "$fails" -eq 0 ] && echo "all passed" || exit 1
