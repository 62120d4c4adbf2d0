#!/usr/bin/env bash
# kvsynth.sh: CLI test of build/kvsynth: help and usage errors, every arch x type, determinism,
# both tokenizers, and from-llama2c against llama.cpp's own conversion of stories260K.
set -u
BUILD=${BUILD:-build}
SHARED=${KVPUB_SHARED:-/work/shared}
K="$BUILD/kvsynth"
T=$(mktemp -d /tmp/kvpub-cli-kvsynth.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# expect CODE CMD... : exit code and, for errors, exactly one line on stderr
expect() {
  local want=$1; shift
  "$@" >"$T/out" 2>"$T/err"; local rc=$?
  [ "$rc" -eq "$want" ] || { fail "exit $rc (want $want): $*"; cat "$T/err"; return 1; }
  if [ "$want" -ne 0 ] && [ "$(wc -l <"$T/err")" -ne 1 ]; then fail "stderr not one line: $*"; cat "$T/err"; fi
  return 0
}

[ -x "$K" ] || { echo "FAIL: $K not built"; exit 1; }

expect 0 "$K" --help && grep -q '^usage: kvsynth --arch' "$T/out" || fail "--help text"
expect 0 "$K" from-llama2c --help && grep -q 'usage: kvsynth from-llama2c' "$T/out" || fail "from-llama2c --help"
expect 0 "$K" dequant --help && grep -q 'usage: kvsynth dequant' "$T/out" || fail "dequant --help"
expect 2 "$K" dequant q9_9 "$T/none" "$T/none.f32"
grep -q "unknown type: q9_9" "$T/err" || fail "dequant unknown type message: $(cat "$T/err")"
printf 'abc' >"$T/3.bin"
expect 2 "$K" dequant q4_1 "$T/3.bin" "$T/3.f32"
grep -q "whole number of blocks" "$T/err" || fail "dequant partial block message: $(cat "$T/err")"
"$K" >/dev/null 2>&1; [ $? -eq 2 ] || fail "no arguments: want exit 2"
BASE=(--arch llama --layers 1 --dim 256 --heads 4 --kv-heads 2 --ffn 256 --vocab 300 --seed 1)
expect 2 "$K" "${BASE[@]}"                                   # no -o
grep -q 'missing required option -o' "$T/err" || fail "missing -o message"
expect 2 "$K" "${BASE[@]}" -o "$T/x.gguf" --bogus
grep -q "'--bogus'" "$T/err" || fail "unknown option message"
expect 2 "$K" "${BASE[@]}" -o "$T/x.gguf" --arch gemma2
grep -q "got 'gemma2'" "$T/err" || fail "bad arch message"
expect 2 "$K" "${BASE[@]}" -o "$T/x.gguf" --layers zero
expect 2 "$K" "${BASE[@]}" -o "$T/x.gguf" --type q8_1
expect 2 "$K" --arch llama --layers 1 --dim 64 --heads 4 --ffn 64 --vocab 300 --seed 1 --type q4_k -o "$T/x.gguf"
grep -q 'multiples of 256' "$T/err" || fail "q4_k block message: $(cat "$T/err")"
expect 2 "$K" "${BASE[@]}" --vocab 100 -o "$T/x.gguf"
grep -q 'too small' "$T/err" || fail "small vocab message"
# --user-token: an SPM vocabulary's last piece becomes a user-defined token (type 4); refused
# for BPE and for a text that is already a token
expect 0 "$K" "${BASE[@]}" --user-token "<tool>" -o "$T/ud.gguf"
printf 'a<tool>b' | "$BUILD/kvfetch" tokenize --model "$T/ud.gguf" --no-special --no-bos --json >"$T/ud.json" \
  || fail "tokenize with --user-token"
jq -e '[.tokens[] | select(.text == "<tool>")] | length == 1 and .[0].id == 299' "$T/ud.json" >/dev/null \
  || fail "--user-token: <tool> is not matched as the last token: $(cat "$T/ud.json")"
# each token's "piece" is llama_token_to_piece's: "▁" keeps its space, even first
jq -e '.tokens[0].text == "\u2581" and .tokens[0].piece == " " and .tokens[3].piece == " "' "$T/ud.json" >/dev/null \
  || fail "--json pieces: $(cat "$T/ud.json")"
# --detokenize: the ids' pieces back to back, as llama-server's /detokenize joins them: the
# first word keeps the space SentencePiece put before it (tests/cli/llamacpp_tokenize.sh holds
# every piece to libllama's)
ids=$(jq -r '.ids | map(tostring) | join(",")' "$T/ud.json")
[ "$("$BUILD/kvfetch" tokenize --model "$T/ud.gguf" --detokenize "$ids")" = " a<tool> b" ] \
  || fail "--detokenize $ids: $("$BUILD/kvfetch" tokenize --model "$T/ud.gguf" --detokenize "$ids")"
echo "$ids" | "$BUILD/kvfetch" tokenize --model "$T/ud.gguf" --detokenize - --json >"$T/o" || fail "--detokenize - --json"
jq -e --arg ids "$ids" '.text == " a<tool> b" and .text_utf8 and (.ids | map(tostring) | join(",")) == $ids' "$T/o" \
  >/dev/null || fail "--detokenize --json: $(cat "$T/o")"
for bad in "1,,2" "-1" "x" "1,99999"; do
  rc=0; "$BUILD/kvfetch" tokenize --model "$T/ud.gguf" --detokenize "$bad" >"$T/o" 2>"$T/e" || rc=$?
  [ "$rc" = 2 ] && [ "$(wc -l <"$T/e")" = 1 ] && [ ! -s "$T/o" ] || fail "--detokenize '$bad': rc=$rc, $(cat "$T/e")"
done
grep -q "token id 99999 is not in the vocabulary (300 tokens)" "$T/e" || fail "out-of-range id message: $(cat "$T/e")"
for extra in hello --no-bos --special --no-special --chat --text; do
  rc=0; "$BUILD/kvfetch" tokenize --model "$T/ud.gguf" --detokenize 5 "$extra" >"$T/o" 2>"$T/e" || rc=$?
  [ "$rc" = 2 ] && grep -q -- "--detokenize takes the ids alone" "$T/e" && [ ! -s "$T/o" ] ||
    fail "--detokenize with $extra: rc=$rc, $(cat "$T/e")"
done
rc=0; "$BUILD/kvfetch" tokenize --model "$T/ud.gguf" --json --text hello >"$T/o" 2>"$T/e" || rc=$?
[ "$rc" = 2 ] && grep -q -- "--text prints the text itself" "$T/e" && [ ! -s "$T/o" ] \
  || fail "tokenize --json --text: rc=$rc, $(cat "$T/e")"
rc=0; "$BUILD/kvfetch" tokenize --model "$T/ud.gguf" --system "Be brief." hello >"$T/o" 2>"$T/e" || rc=$?
[ "$rc" = 2 ] && grep -q -- "--system goes with --chat" "$T/e" && [ ! -s "$T/o" ] \
  || fail "tokenize --system without --chat: rc=$rc, $(cat "$T/o" "$T/e")"
expect 2 "$K" "${BASE[@]}" --tokenizer bpe --user-token "<tool>" -o "$T/x.gguf"
grep -q 'needs --tokenizer spm' "$T/err" || fail "--user-token with bpe message: $(cat "$T/err")"
expect 2 "$K" "${BASE[@]}" --user-token "<s>" -o "$T/x.gguf"
grep -q "'<s>' is already token 1" "$T/err" || fail "--user-token duplicate message: $(cat "$T/err")"
expect 2 "$K" "${BASE[@]}" --tokenizer bpe --vocab 259 -o "$T/x.gguf"
expect 2 "$K" "${BASE[@]}" --heads 3 -o "$T/x.gguf"
[ ! -e "$T/x.gguf" ] || fail "a failed run left x.gguf behind"
ls "$T" | grep -q tmp && fail "a failed run left a temp file"

for arch in llama qwen2 qwen3; do
  for type in f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q2_k q3_k q4_k q5_k q6_k; do
    f="$T/$arch-$type.gguf"
    expect 0 "$K" "${BASE[@]}" --arch "$arch" --type "$type" -o "$f" --json || continue
    [ "$(head -c 4 "$f")" = GGUF ] || fail "$arch/$type: bad magic"
    grep -q "\"type\": \"$type\"" "$T/out" || fail "$arch/$type: --json output: $(cat "$T/out")"
  done
done
# quantized files are smaller than f32 ones
[ "$(stat -c %s "$T/qwen3-q4_0.gguf")" -lt "$(stat -c %s "$T/qwen3-f16.gguf")" ] || fail "q4_0 not smaller than f16"

# determinism: same arguments => same bytes; another seed => other bytes
expect 0 "$K" "${BASE[@]}" --arch qwen2 --type q8_0 --tokenizer bpe -o "$T/d1.gguf"
expect 0 "$K" "${BASE[@]}" --arch qwen2 --type q8_0 --tokenizer bpe -o "$T/d2.gguf"
cmp -s "$T/d1.gguf" "$T/d2.gguf" || fail "same seed gave different files"
expect 0 "$K" --arch qwen2 --layers 1 --dim 256 --heads 4 --kv-heads 2 --ffn 256 --vocab 300 --seed 2 \
  --type q8_0 --tokenizer bpe -o "$T/d3.gguf"
cmp -s "$T/d1.gguf" "$T/d3.gguf" && fail "different seeds gave identical files"
grep -aq '<|im_start|>' "$T/d1.gguf" || fail "qwen2 bpe special tokens missing"
expect 0 "$K" "${BASE[@]}" --tokenizer bpe --pre llama-bpe -o "$T/l3.gguf"
grep -aq '<|begin_of_text|>' "$T/l3.gguf" || fail "llama-bpe special tokens missing"
grep -aq 'tokenizer.ggml.merges' "$T/l3.gguf" || fail "bpe merges missing"
expect 2 "$K" "${BASE[@]}" --tokenizer bpe --pre gpt4 -o "$T/x.gguf"

# from-llama2c: the tensor data section must equal llama.cpp's conversion byte for byte
# (same tensor order and offsets; 1040128 = 1054368 - 14240, read with python struct).
expect 0 "$K" from-llama2c "$SHARED/models/stories260K.bin" -o "$T/st.gguf"
cmp -s <(tail -c 1040128 "$T/st.gguf") <(tail -c 1040128 "$SHARED/models/stories260K.gguf") \
  || fail "from-llama2c tensor data differs from stories260K.gguf"
grep -aq 'stories260K' "$T/st.gguf" || fail "general.name not from the checkpoint file name"

# with a llama2.c tokenizer.bin: int32 max_len, then per token f32 score, int32 len, bytes
le32() { printf "\\x$(printf %02x $(($1 & 255)))\\x$(printf %02x $((($1 >> 8) & 255)))\\x00\\x00"; }
{
  le32 16
  tok() { printf '\x00\x00\x80\xbf'; le32 ${#1}; printf '%s' "$1"; }  # score -1.0
  tok '<unk>'; tok '<s>'; tok '</s>'
  for i in $(seq 0 255); do tok "$(printf '<0x%02X>' "$i")"; done
  tok ' the'
  for i in $(seq 260 511); do tok "w$i"; done
} >"$T/tok.bin"
expect 0 "$K" from-llama2c "$SHARED/models/stories260K.bin" "$T/tok.bin" -o "$T/st2.gguf" --name mine
grep -aq $'\xe2\x96\x81the' "$T/st2.gguf" || fail "space not mapped to U+2581"
grep -aq 'w511' "$T/st2.gguf" || fail "last token missing"
cmp -s <(tail -c 1040128 "$T/st2.gguf") <(tail -c 1040128 "$SHARED/models/stories260K.gguf") \
  || fail "from-llama2c (with tokenizer) tensor data differs"
head -c 3000 "$T/tok.bin" >"$T/short.bin"
expect 2 "$K" from-llama2c "$SHARED/models/stories260K.bin" "$T/short.bin" -o "$T/x.gguf"
grep -q 'truncated at token' "$T/err" || fail "truncated tokenizer message"
head -c 500000 "$SHARED/models/stories260K.bin" >"$T/short.ckpt"
expect 2 "$K" from-llama2c "$T/short.ckpt" -o "$T/x.gguf"
grep -q 'expected 1056540' "$T/err" || fail "truncated checkpoint message: $(cat "$T/err")"
expect 2 "$K" from-llama2c "$T/missing.bin" -o "$T/x.gguf"
[ ! -e "$T/x.gguf" ] || fail "failed conversion left x.gguf behind"

# kvsynth blob: a signed synthetic blob of the asked shape, deterministic KV per seed
KVPUBD="$BUILD/kvpubd"; KVFETCH="$BUILD/kvfetch"
"$KVPUBD" keygen -o "$T/bk" >/dev/null && mkdir -p "$T/trust" && cp "$T/bk.pub" "$T/trust/"
expect 0 "$K" blob --help && grep -q '^usage: kvsynth blob' "$T/out" || fail "blob --help"
expect 2 "$K" blob -o "$T/b.kvb"                                      # no --key
expect 2 "$K" blob --key "$T/bk.key" -o "$T/b.kvb" --kv-dim 12        # not a multiple of 8
expect 2 "$K" blob --key "$T/bk.key" -o "$T/b.kvb" --tokens 12x
expect 2 "$K" blob --key "$T/bk.key" -o "$T/b.kvb" --codec zip
grep -q "unknown codec 'zip'" "$T/err" || fail "blob bad codec message"
expect 2 "$K" blob --key "$T/missing.key" -o "$T/b.kvb"
[ ! -e "$T/b.kvb" ] || fail "a refused kvsynth blob left b.kvb behind"
expect 0 "$K" blob --key "$T/bk.key" -o "$T/b1.kvb" --tokens 70 --layers 3 --kv-dim 32 --chunk-tokens 32 \
  --codec q8 --title "t one" --seed 5
"$KVFETCH" verify "$T/b1.kvb" --trust "$T/trust" >/dev/null 2>&1 || fail "kvsynth blob does not verify"
"$KVFETCH" inspect "$T/b1.kvb" --json >"$T/b1.json" || fail "inspect kvsynth blob"
jq -e '.manifest.n_tokens == 70 and .manifest.model.n_layer == 3 and .manifest.codec == "q8"
       and .manifest.chunk_tokens == 32 and .manifest.document.title == "t one"' "$T/b1.json" >/dev/null \
  || fail "kvsynth blob manifest: $(cat "$T/b1.json")"
"$K" blob --key "$T/bk.key" -o "$T/b2.kvb" --tokens 70 --layers 3 --kv-dim 32 --chunk-tokens 32 --codec q8 \
  --title "t one" --seed 5
"$K" blob --key "$T/bk.key" -o "$T/b3.kvb" --tokens 70 --layers 3 --kv-dim 32 --chunk-tokens 32 --codec q8 \
  --title "t one" --seed 6
# chunks (the tail after header, manifest and signature) depend on the seed only
chunks() { jq -r '.manifest.chunks[] | .sha256' <("$KVFETCH" inspect "$1" --json); }
[ "$(chunks "$T/b1.kvb")" = "$(chunks "$T/b2.kvb")" ] || fail "same seed, different chunks"
[ "$(chunks "$T/b1.kvb")" != "$(chunks "$T/b3.kvb")" ] || fail "other seed, same chunks"

[ "$fails" -eq 0 ] && echo "kvsynth: all checks passed"
[ "$fails" -eq 0 ]
