#!/usr/bin/env bash
# generate.sh: `kvfetch generate` end to end: greedy ids equal llama.cpp's golden continuation
# (stories260K, len-7 prompt), text mode, --help, exit codes / messages for bad input, and
# --logits written whole or not at all.
set -eu
BUILD=${BUILD:-build}
SHARED=${KVPUB_SHARED:-../shared}
KVFETCH="$BUILD/kvfetch"
MODEL="$SHARED/models/stories260K.gguf"
tmp=$(mktemp -d /tmp/kvpub-cli-generate-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

out=$("$KVFETCH" generate --help)
case "$out" in *"usage: kvfetch generate"*) ;; *) fail "--help did not print usage";; esac
"$KVFETCH" --help | grep -q generate || fail "kvfetch --help does not list generate"

# greedy ids vs the golden f16kv continuation (the first 8 steps have margins >= 0.05)
want=$(python3 -c "
import json,sys
d=json.load(open('$SHARED/golden/models/stories260K.json'))
c=[c for c in d['cases'] if c['config']=='f16kv' and c['n_tokens']==7][0]
print(' '.join(map(str,c['greedy32'][:8])))")
got=$("$KVFETCH" generate --model "$MODEL" --prompt-ids 1,505,448,165,7,181,230 -n 8 --tokens --threads 2 2>"$tmp/e")
[ "$got" = "$want" ] || fail "greedy ids: got '$got', want '$want'"
grep -q "prefill: 7 tokens" "$tmp/e" || fail "no speed line on stderr: $(cat "$tmp/e")"

# text mode produces some output and exit 0
"$KVFETCH" generate --model "$SHARED/models/synth/synth-qwen3-tiny-f32.gguf" --prompt "hello" -n 5 \
  >"$tmp/o" 2>"$tmp/e" || fail "text mode failed: $(cat "$tmp/e")"
[ -s "$tmp/o" ] || fail "text mode printed nothing"

expect_fail() {  # rc, needle, args...
  local rc=$1 needle=$2; shift 2
  set +e; "$KVFETCH" generate "$@" >"$tmp/o" 2>"$tmp/e"; local got=$?; set -e
  [ "$got" -eq "$rc" ] || fail "$*: exit $got, want $rc ($(cat "$tmp/e"))"
  grep -q -- "$needle" "$tmp/e" || fail "$*: stderr lacks '$needle': $(cat "$tmp/e")"
  [ ! -s "$tmp/o" ] || fail "$*: wrote to stdout"
}
expect_fail 2 "exactly one of" --model "$MODEL"
expect_fail 2 "bad --prompt-ids" --model "$MODEL" --prompt-ids 1,x,3
expect_fail 2 "out of range" --model "$MODEL" --prompt-ids 1,99999
expect_fail 2 "bad value" --model "$MODEL" --prompt-ids 1 -n abc
expect_fail 2 "cannot open" --model "$tmp/nope.gguf" --prompt-ids 1
expect_fail 2 "exceeds --ctx" --model "$MODEL" --prompt-ids 1,2,3 -n 10 --ctx 5
for t in nan -1 inf 101; do  # --temp and --top-p take 0..100, as kvfetch run's do
  expect_fail 2 "bad value" --model "$MODEL" --prompt-ids 1 -n 1 --temp "$t"
  expect_fail 2 "bad value" --model "$MODEL" --prompt-ids 1 -n 1 --top-p "$t"
done

# --logits: n_vocab (512) little-endian floats; where the disk runs out half way (a 1 KiB file
# size limit stands in for it, as in fetch_edges.sh), exit 2 and the file there before is
# left whole, with no temporary file beside it
"$KVFETCH" generate --model "$MODEL" --prompt-ids 1,505,448 -n 0 --threads 2 --logits "$tmp/logits" \
  >/dev/null 2>"$tmp/e" || fail "--logits: $(cat "$tmp/e")"
[ "$(stat -c %s "$tmp/logits")" -eq 2048 ] || fail "--logits wrote $(stat -c %s "$tmp/logits") bytes, want 2048"
echo old >"$tmp/logits"
set +e
(trap '' XFSZ; ulimit -f 1; exec "$KVFETCH" generate --model "$MODEL" --prompt-ids 1,505,448 -n 0 --threads 2 \
  --logits "$tmp/logits") >"$tmp/o" 2>"$tmp/e"
rc=$?
set -e
[ "$rc" -eq 2 ] || fail "--logits out of room: exit $rc, want 2 ($(cat "$tmp/e"))"
grep -q "cannot write $tmp/logits: File too large" "$tmp/e" || fail "--logits out of room: $(cat "$tmp/e")"
[ "$(cat "$tmp/logits")" = old ] || fail "a failed --logits write changed the file there before"
[ -z "$(find "$tmp" -name 'logits.tmp.*')" ] || fail "a failed --logits write left $(find "$tmp" -name 'logits.tmp.*')"
echo ok
