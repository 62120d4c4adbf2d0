#!/usr/bin/env bash
# run_refusals.sh: `kvfetch run`/`compare` on local blob files: an exact load after BOS, two
# documents in order, and every refusal with its documented exit code and a message naming both
# sides: other weights, other tokenizer, other RoPE base, untrusted, revoked, expired, tampered,
# truncated; and a blob given as a pipe. Models: tiny deterministic kvsynth models that differ
# in one thing each.
set -eu
. tests/cli/lib/fetch_env.sh
fetch_env_init run-refusals
export KVPUB_CACHE_DIR="$tmp/cache"

synth() {  # OUT extra-args...: a 2-layer llama with a byte-level BPE tokenizer
  local out=$1; shift
  "$BUILD/kvsynth" --arch llama --layers 2 --dim 64 --heads 4 --kv-heads 2 --ffn 128 --vocab 1024 \
    --ctx 1024 --tokenizer bpe --seed 3 "$@" -o "$tmp/$out.gguf" >/dev/null || fail "kvsynth $out"
}
synth base
synth tok --pre qwen2
synth rope --rope-base 500000
synth weights --seed 4
synth shape --layers 3

mkdir -p "$tmp/trust" "$tmp/revoked" "$tmp/other"
"$BUILD/kvpubd" keygen -o "$tmp/pub" >/dev/null
"$BUILD/kvpubd" keygen -o "$tmp/other/o" >/dev/null; rm "$tmp/other/o.key"
cp "$tmp/pub.pub" "$tmp/trust/"; cp "$tmp/pub.pub" "$tmp/revoked/"
pubid=$(openssl pkey -pubin -in "$tmp/pub.pub" -outform DER | tail -c 32 | sha256sum | cut -c1-16)
echo "$pubid" >"$tmp/revoked/revoked"

head -c 300 /usr/share/common-licenses/Apache-2.0 >"$tmp/doc1.txt"
head -c 200 /usr/share/common-licenses/MPL-2.0 >"$tmp/doc2.txt"
publish() {  # STORE-NAME args...
  local s=$1; shift
  "$BUILD/kvpubd" publish --store "$tmp/$s" --model "$tmp/base.gguf" --key "$tmp/pub.key" --threads 2 --json "$@" \
    >"$tmp/pub.json" || fail "publish failed"
}
publish st "$tmp/doc1.txt"
b1=$(find "$tmp/st/blobs" -type f)
publish st2 "$tmp/doc2.txt"
b2=$(find "$tmp/st2/blobs" -type f)
R=("$KVFETCH" run --trust "$tmp/trust" --prompt " and so on" -n 8 --threads 2)
C=("$KVFETCH" compare --trust "$tmp/trust" --prompt " and so on" -n 8 --threads 2)

note "--help and usage"
"$KVFETCH" run --help | grep -q "exit codes" || fail "run --help"
"$KVFETCH" compare --help | grep -q "bit-identical" || fail "compare --help"
expect_rc 2 "$KVFETCH" run --model "$tmp/base.gguf" --trust "$tmp/trust" --prompt x
expect_err "required"
expect_rc 2 "${R[@]}" --model "$tmp/base.gguf" --blob "$tmp/nonexistent.kvb"
# compare's --follow chooses between two paths; run has one
expect_rc 2 "${R[@]}" --model "$tmp/base.gguf" --blob "$b1" --follow full
expect_err "--follow belongs to kvfetch compare"

note "exact load right after BOS: logits bit-identical to a full prefill"
expect_rc 0 "${C[@]}" --model "$tmp/base.gguf" --blob "$b1"
grep -qx "logits bit-identical to full prefill" "$tmp/out" || fail "not bit-identical: $(cat "$tmp/out")"
grep -q "greedy outputs agree (8/8" "$tmp/out" || fail "greedy disagreement: $(cat "$tmp/out")"
note "run prints the same greedy text as compare"
want=$(sed -n 's/^generated (greedy, [0-9]* tokens): //p' "$tmp/out")
expect_rc 0 "${R[@]}" --model "$tmp/base.gguf" --blob "$b1"
[ "$(cat "$tmp/out")" = "$want" ] || fail "run printed '$(cat "$tmp/out")', compare '$want'"
expect_err "time to first token"
note "a blob read from a pipe (process substitution) loads as the file does"
expect_rc 0 "${R[@]}" --model "$tmp/base.gguf" --blob <(cat "$b1")
[ "$(cat "$tmp/out")" = "$want" ] || fail "from a pipe run printed '$(cat "$tmp/out")', want '$want'"

note "two documents in order after a prefix (re-rotated), --json"
expect_rc 0 "${C[@]}" --model "$tmp/base.gguf" --blob "$b1" --blob "$b2" --prefix "System: be brief." --json
grep -q '"delta": 0' "$tmp/out" && fail "documents after a prefix were not re-rotated: $(cat "$tmp/out")"
n1=$(grep -m1 '"tokens":' "$tmp/out" | tr -dc 0-9)
pfx=$(grep '"prefix_tokens":' "$tmp/out" | tr -dc 0-9)
grep -q "\"position\": $((1 + pfx + n1))," "$tmp/out" || fail "second document not placed after the first: $(cat "$tmp/out")"
grep -q '"bit_identical": false' "$tmp/out" || fail "a re-rotated load cannot be bit-identical"

note "other weights: refused, exit 1, both fingerprints named"
expect_rc 1 "${R[@]}" --model "$tmp/weights.gguf" --blob "$b1"
expect_err "model mismatch: blob wants sha256:[0-9a-f]{16}\.\.\. \(llama, 2 layers\), you loaded sha256:[0-9a-f]{16}\.\.\. \(llama, 2 layers\)"
[ ! -s "$tmp/out" ] || fail "refused run printed text"
note "other shape"
expect_rc 1 "${R[@]}" --model "$tmp/shape.gguf" --blob "$b1"
expect_err "model mismatch.*you loaded .*3 layers"
note "other tokenizer"
expect_rc 1 "${R[@]}" --model "$tmp/tok.gguf" --blob "$b1"
expect_err "tokenizer mismatch: blob wants sha256:[0-9a-f]{16}\.\.\., your model's tokenizer is sha256:"
note "other RoPE base"
expect_rc 1 "${C[@]}" --model "$tmp/rope.gguf" --blob "$b1"
expect_err "RoPE freq_base: blob 10000, model 500000"

note "untrusted and revoked signers (exit 1)"
expect_rc 1 "$KVFETCH" run --trust "$tmp/other" --model "$tmp/base.gguf" --blob "$b1" --prompt x
expect_err "verification failed .*untrusted"
expect_rc 1 "$KVFETCH" run --trust "$tmp/revoked" --model "$tmp/base.gguf" --blob "$b1" --prompt x
expect_err "revoked"

note "expired blob (exit 1); fine before expiry"
publish st3 --expires 1h "$tmp/doc2.txt"
b3=$(find "$tmp/st3/blobs" -type f)
expect_rc 0 "${R[@]}" --model "$tmp/base.gguf" --blob "$b3"
expect_rc 1 "${R[@]}" --model "$tmp/base.gguf" --blob "$b3" --now $(( $(date +%s) + 7200 ))
expect_err "expired"

note "a tampered chunk (exit 1) and a truncated file (exit 3)"
cp "$b1" "$tmp/tampered.kvb"
size=$(stat -c %s "$tmp/tampered.kvb")
printf '\x5a' | dd of="$tmp/tampered.kvb" bs=1 seek=$((size - 10)) conv=notrunc status=none
expect_rc 1 "${R[@]}" --model "$tmp/base.gguf" --blob "$tmp/tampered.kvb"
expect_err "chunk .*sha256"
head -c $((size / 2)) "$b1" >"$tmp/trunc.kvb"
expect_rc 3 "${R[@]}" --model "$tmp/base.gguf" --blob "$tmp/trunc.kvb"
expect_err "(truncat|ended)"
note "a blob extended to 10 GiB (sparse) is refused at once, before the excess is mapped (exit 3)"
cp "$b1" "$tmp/long.kvb"
truncate -s 10G "$tmp/long.kvb"
t0=$(date +%s%N)
/usr/bin/env time -f %M -o "$tmp/rss" "${R[@]}" --model "$tmp/base.gguf" --blob "$tmp/long.kvb" >"$tmp/out" 2>"$tmp/err" \
  && rc=0 || rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$rc" -eq 3 ] || fail "10 GiB blob: exit $rc, want 3: $(cat "$tmp/err")"
expect_err "trailing data: the blob ends at byte [0-9]+ but the file is 10737418240 bytes"
rss=$(tail -1 "$tmp/rss")
[ "$rss" -lt 1000000 ] || fail "10 GiB blob: peak RSS $rss KiB (the excess was read)"
echo "  refused in $ms ms, peak RSS $rss KiB"
note "... and by an untrusted signer: the signer is judged first (exit 1, not 3), as by verify"
expect_rc 1 "$KVFETCH" run --trust "$tmp/other" --model "$tmp/base.gguf" --blob "$tmp/long.kvb" --prompt x
expect_err "untrusted|not in the trust store"
rm -f "$tmp/long.kvb"
cp "$b1" "$tmp/extra.kvb" && printf 'x' >>"$tmp/extra.kvb"
expect_rc 1 "$KVFETCH" run --trust "$tmp/other" --model "$tmp/base.gguf" --blob "$tmp/extra.kvb" --prompt x
expect_err "untrusted|not in the trust store"
expect_rc 1 "$KVFETCH" verify "$tmp/extra.kvb" --trust "$tmp/other"
expect_rc 3 "${R[@]}" --model "$tmp/base.gguf" --blob "$tmp/extra.kvb"
expect_err "trailing data"

note "a blob longer than the model's context is refused (exit 1), as publish refuses it"
synth small --ctx 64
expect_rc 1 "${R[@]}" --model "$tmp/small.gguf" --blob "$b1"
expect_err "the sequence is [0-9]+ tokens .*but the model's context is 64 tokens"
note "a generation that would run past the context is refused with the room left (exit 2)"
expect_rc 2 "$KVFETCH" run --trust "$tmp/trust" --prompt " and so on" --threads 2 -n 1000 \
  --model "$tmp/base.gguf" --blob "$b1"
expect_err "plus --n-gen 1000 exceed the model's context of 1024 tokens: ask for at most [0-9]+"
echo PASS
