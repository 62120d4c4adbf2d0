#!/usr/bin/env bash
# kvblob_cli.sh: kvfetch inspect/verify on the spec vectors and on damaged copies: exit codes,
# stdout and the one-line stderr message of each case (spec/kvblob.md "Exit codes").
set -u
BUILD=${BUILD:-build}
KVFETCH=${KVFETCH:-$BUILD/kvfetch}
KVSYNTH=${KVSYNTH:-$BUILD/kvsynth}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

# check NAME WANT_RC STREAM(out|err) SUBSTRING -- command...
check() {
  local name=$1 want=$2 stream=$3 substr=$4; shift 5
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  local text; text=$(cat "$tmp/$stream")
  if [ "$rc" != "$want" ] || [[ "$text" != *"$substr"* ]]; then
    echo "FAIL $name: rc=$rc (want $want), $stream: $(head -c 300 "$tmp/$stream") (want '$substr')"
    fails=$((fails+1))
  else
    echo "ok   $name"
  fi
  if [ "$stream" = err ] && [ "$want" != 0 ] && [ "$(wc -l <"$tmp/err")" != 1 ]; then
    echo "FAIL $name: stderr is not exactly one line"; fails=$((fails+1))
  fi
}
# flip FILE OFFSET: xor the byte at OFFSET with 0x01
flip() {
  local b; b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $((b ^ 1)))" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}

"$KVSYNTH" vectors -o "$tmp/v" >/dev/null || { echo "kvsynth vectors failed"; exit 1; }
mkdir "$tmp/trust" "$tmp/empty" "$tmp/revoked"
cp "$tmp/v/test-key.pub" "$tmp/trust/"
cp "$tmp/v/test-key.pub" "$tmp/revoked/"
printf '# revoked for the test\ne5337331b87e3772\n' >"$tmp/revoked/revoked"

check help 0 out "usage: kvfetch verify" -- "$KVFETCH" verify --help
check help_inspect 0 out "usage: kvfetch inspect" -- "$KVFETCH" inspect --help
for c in f16 f16-zstd q8 q4; do
  check "verify_$c" 0 out "OK $tmp/v/vec-$c.kvb: signed by trusted key id e5337331b87e3772; 40 tokens in 3 chunks ($c)" \
    -- "$KVFETCH" verify "$tmp/v/vec-$c.kvb" --trust "$tmp/trust"
done
check verify_hash_only 0 out "hash-checked;" -- "$KVFETCH" verify "$tmp/v/vec-q4.kvb" --trust "$tmp/trust" --hash-only --threads 1
check verify_stdin 0 out "OK -:" -- bash -c "\"$KVFETCH\" verify - --trust \"$tmp/trust\" <\"$tmp/v/vec-q8.kvb\""
check verify_json 0 out '"ok": true' -- "$KVFETCH" verify "$tmp/v/vec-f16.kvb" --trust "$tmp/trust" --json
# numbers are digits: strtol's leading blanks and '+' are refused
check verify_threads_plus 2 err "--threads wants 0..64, got '+2'" \
  -- "$KVFETCH" verify "$tmp/v/vec-f16.kvb" --trust "$tmp/trust" --threads +2
check verify_threads_blank 2 err "--threads wants 0..64, got ' 2'" \
  -- "$KVFETCH" verify "$tmp/v/vec-f16.kvb" --trust "$tmp/trust" --threads " 2"
check verify_threads_minus 2 err "--threads wants 0..64, got '-1'" \
  -- "$KVFETCH" verify "$tmp/v/vec-f16.kvb" --trust "$tmp/trust" --threads -1
# a trust directory refused before any reading: one line on stderr, and --json still its object
mkdir -p "$tmp/opentrust"; chmod 777 "$tmp/opentrust"
check verify_bad_trust 2 err "kvfetch verify: trust directory $tmp/opentrust is writable by every user" \
  -- "$KVFETCH" verify "$tmp/v/vec-f16.kvb" --trust "$tmp/opentrust"
check verify_bad_trust_json 2 out '"error": "trust directory' \
  -- "$KVFETCH" verify "$tmp/v/vec-f16.kvb" --trust "$tmp/opentrust" --json
check inspect 0 out "codec:      q8, 16 tokens per chunk, 3 chunks (container version 2: chunks hashed as SHA-256 lists of 32 KiB leaves)" \
  -- "$KVFETCH" inspect "$tmp/v/vec-q8.kvb"
check inspect_v1 0 out "3 chunks (container version 1: chunks hashed whole with SHA-256)" \
  -- "$KVFETCH" inspect "${KVPUB_ROOT:-.}/spec/vectors/v1-f16-zstd.kvb"
check inspect_rope 0 out "rope:       neox, n_rot 8, freq_base 10000, freq_scale 1, scaling none, n_ctx_orig 4096, pos0 1" \
  -- "$KVFETCH" inspect "$tmp/v/vec-f16.kvb"
check inspect_size 0 out "raw KV 5120 bytes, stored 5120 bytes, ratio 1.000x" -- "$KVFETCH" inspect "$tmp/v/vec-f16.kvb"
check inspect_json 0 out '"key_id": "e5337331b87e3772"' -- "$KVFETCH" inspect "$tmp/v/vec-q4.kvb" --json
check inspect_trust 0 out "signature good (trusted)" -- "$KVFETCH" inspect "$tmp/v/vec-q4.kvb" --trust "$tmp/trust"

# damaged copies (vec-f16: manifest at 32, data section at 1408, chunks at +192, +2240, +4288)
f=$tmp/v/vec-f16.kvb
cp "$f" "$tmp/chunk.kvb"; flip "$tmp/chunk.kvb" $((1408 + 4288 + 5))
check chunk_flip 1 err "chunk 2 of 3: sha256 mismatch" -- "$KVFETCH" verify "$tmp/chunk.kvb" --trust "$tmp/trust"
cp "$f" "$tmp/tok.kvb"; flip "$tmp/tok.kvb" $((1408 + 1))
check tokens_flip 1 err "token ids: sha256 mismatch" -- "$KVFETCH" verify "$tmp/tok.kvb" --trust "$tmp/trust"
cp "$f" "$tmp/man.kvb"; flip "$tmp/man.kvb" 100
check manifest_flip 1 err "signature does not verify" -- "$KVFETCH" verify "$tmp/man.kvb" --trust "$tmp/trust"
cp "$f" "$tmp/magic.kvb"; flip "$tmp/magic.kvb" 1
check magic_flip 3 err "not a kvblob: bad magic" -- "$KVFETCH" verify "$tmp/magic.kvb" --trust "$tmp/trust"
check magic_inspect 3 err "not a kvblob" -- "$KVFETCH" inspect "$tmp/magic.kvb"
cp "$f" "$tmp/ver.kvb"; flip "$tmp/ver.kvb" 9
check version 3 err "unsupported container version 258" -- "$KVFETCH" verify "$tmp/ver.kvb" --trust "$tmp/trust"
head -c 3000 "$f" >"$tmp/trunc.kvb"
check truncated 3 err "truncated: input ends at byte 3000 inside chunk 0 of 3; the blob is 6720 bytes" \
  -- "$KVFETCH" verify "$tmp/trunc.kvb" --trust "$tmp/trust"
head -c 500 "$f" >"$tmp/trunc2.kvb"
check truncated_inspect 3 err "truncated" -- "$KVFETCH" inspect "$tmp/trunc2.kvb"
check untrusted 1 err "signer key id e5337331b87e3772 is not in the trust store" \
  -- "$KVFETCH" verify "$f" --trust "$tmp/empty"
check revoked 1 err "signer key id e5337331b87e3772 is revoked" -- "$KVFETCH" verify "$f" --trust "$tmp/revoked"
"$KVSYNTH" vectors -o "$tmp/old" --created 1000 --expires 2000 >/dev/null
check expired 1 err "blob expired at 1970-01-01T00:33:20Z" -- "$KVFETCH" verify "$tmp/old/vec-q8.kvb" --trust "$tmp/trust"
check expired_inspect 0 out "(EXPIRED)" -- "$KVFETCH" inspect "$tmp/old/vec-q8.kvb"
check missing_file 2 err "No such file" -- "$KVFETCH" verify "$tmp/nope.kvb" --trust "$tmp/trust"
# the file is named once in the line (the peek's own messages do not repeat it)
check missing_inspect 2 err "kvfetch inspect: $tmp/nope.kvb: No such file or directory" \
  -- "$KVFETCH" inspect "$tmp/nope.kvb"
check dir_inspect 2 err "kvfetch inspect: $tmp/empty: Is a directory" -- "$KVFETCH" inspect "$tmp/empty"
# a pipe cannot pread: the peek reads it in order
check inspect_pipe 0 out "codec:      q8, 16 tokens per chunk, 3 chunks" \
  -- bash -c "cat \"$tmp/v/vec-q8.kvb\" | \"$KVFETCH\" inspect /dev/stdin"
check missing_trust 2 err "--trust DIR are required" -- "$KVFETCH" verify "$f"
check bad_option 2 err "unexpected argument '--frobnicate'" -- "$KVFETCH" verify "$f" --trust "$tmp/trust" --frobnicate
check json_failure 1 out '"status": "chunk hash mismatch"' -- "$KVFETCH" verify "$tmp/chunk.kvb" --trust "$tmp/trust" --json

[ "$fails" -eq 0 ] && echo "all passed" || { echo "$fails failed"; exit 1; }
