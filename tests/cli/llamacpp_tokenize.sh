#!/usr/bin/env bash
# llamacpp_tokenize.sh: tokenizer parity with the real llama.cpp. On every vocabulary-only GGUF
# llama.cpp ships for its own tokenizer tests (models/ggml-vocab-*.gguf, from the source bundle
# of the pinned prebuilt package), `kvfetch tokenize` must give exactly the ids that libllama's
# llama_tokenize gives (scripts/llamacpp/llama_tok.c), on llama.cpp's test texts (*.inp) and on
# ours (tests/cli/data/tokenize_cases.txt: added tokens, chat markers, numbers, contractions,
# Unicode 15.1 letters and digits, combining marks, punctuation, white space; and bytes that are
# not UTF-8), in both modes:
# documents (no special-token parsing, no BOS) and prompts (special tokens parsed, BOS as the
# vocabulary says). A vocabulary we do not implement must be refused with one clear line (exit
# 3), never tokenized differently. Also a kvsynth SentencePiece vocabulary with a user-defined
# token, which none of those has. Prints a parity table.
# The other way too: every token id of every supported vocabulary, through `kvfetch tokenize
# --detokenize`, must give the bytes libllama's llama_token_to_piece gives (special = false, no
# strip; what llama-server's /detokenize and its generated text join), and the text `kvfetch
# generate` prints must be the pieces of the ids it generated (the first keeping its leading
# space, as llama-server streams it). Skips with one line only when no npm registry is reachable.
set -eu
HARNESS=llama_tok WHAT="llama.cpp tokenizer parity"
. tests/cli/lib/llamacpp_env.sh
tok=$harness
SEP=$'\n__ggml_vocab_test__\n'
ours_cases=tests/cli/data/tokenize_cases.txt
# not UTF-8: Latin-1 and Windows-1252 bytes, stray continuation bytes, overlong forms, surrogates,
# a sequence cut at the end (llama.cpp reads them leniently and substitutes U+FFFD)
printf 'caf\xe9 na\xefve \x93quoted\x94%s\xff\xfe x \xc0\x80 y \xed\xa0\x80 z \xe2\x82%s\x80abc \xf0\x9f\x98' \
  "$SEP" "$SEP" >"$tmp/invalid"
fails=0
printf '%-16s %-9s %8s %8s\n' vocabulary mode texts matched
# compare NAME GGUF INPUT: our ids against libllama's for every text of INPUT, in both modes
compare() {
  local name=$1 v=$2 inp=$3 mode ours theirs total same
  for mode in document prompt; do
    if [ $mode = document ]; then ours=(--no-special --no-bos); theirs=(); else ours=(--special); theirs=(--special --add); fi
    "$tok" "$LLAMACPP_LIB" "$v" "$inp" --separator "$SEP" "${theirs[@]}" >"$tmp/want"
    "$KVFETCH" tokenize --model "$v" --separator "$SEP" "${ours[@]}" <"$inp" >"$tmp/got"
    total=$(wc -l <"$tmp/want")
    same=$(paste -d '\t' "$tmp/want" "$tmp/got" | awk -F '\t' '$1 == $2' | wc -l)
    printf '%-16s %-9s %8d %8d\n' "$name" "$mode" "$total" "$same"
    if [ "$same" -ne "$total" ] || [ "$(wc -l <"$tmp/got")" -ne "$total" ]; then
      fails=$((fails + 1))
      paste -d '\t' "$tmp/want" "$tmp/got" | awk -F '\t' '$1 != $2 { print "  text " NR ": llama.cpp [" $1 "]\n          kvfetch   [" $2 "]"; if (++k == 3) exit }'
    fi
  done
}
# pieces NAME GGUF: every id's piece, ours against libllama's, byte for byte
pieces() {
  local name=$1 v=$2 n
  n=$("$tok" "$LLAMACPP_LIB" "$v" - --n-vocab)
  seq -s, 0 $((n - 1)) >"$tmp/ids"
  "$tok" "$LLAMACPP_LIB" "$v" "$tmp/ids" --pieces >"$tmp/want"
  "$KVFETCH" tokenize --model "$v" --detokenize - <"$tmp/ids" >"$tmp/got"
  if cmp -s "$tmp/want" "$tmp/got"; then
    printf '%-16s %-9s %8d %8d\n' "$name" pieces "$n" "$n"
  else
    fails=$((fails + 1))
    printf '%-16s %-9s %8d differ: %s\n' "$name" pieces "$n" "$(cmp "$tmp/want" "$tmp/got" 2>&1 | head -1)"
  fi
}
for v in "$LLAMACPP_SRC"/models/ggml-vocab-*.gguf; do
  name=$(basename "$v" .gguf); name=${name#ggml-vocab-}
  inp="$tmp/$name.txt"
  { if [ -f "$v.inp" ]; then cat "$v.inp"; printf '%s' "$SEP"; fi; cat "$ours_cases"; printf '%s' "$SEP"
    cat "$tmp/invalid"; } >"$inp"
  "$KVFETCH" tokenize --model "$v" --separator "$SEP" <"$inp" >/dev/null 2>"$tmp/err" && rc=0 || rc=$?
  if [ "$rc" -ne 0 ]; then
    if [ "$rc" -eq 3 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "unsupported" "$tmp/err"; then
      printf '%-16s %-9s %s\n' "$name" refused "$(sed 's/.*: unsupported/unsupported/' "$tmp/err")"
    else
      echo "FAIL: $name: kvfetch tokenize exit $rc without one clear refusal line:"; cat "$tmp/err"; fails=$((fails + 1))
    fi
    continue
  fi
  compare "$name" "$v" "$inp"
  pieces "$name" "$v"
done
# None of those is SentencePiece with a user-defined token. Such a token splits the text even
# without special-token parsing, and the text after it gets its own space prefix: a kvsynth
# vocabulary with one, on texts around it and on ours.
ud="$tmp/spm-user.gguf"
"$BUILD/kvsynth" --arch llama --layers 1 --dim 64 --heads 2 --ffn 64 --vocab 600 --tokenizer spm \
  --user-token "<tool>" --seed 1 -o "$ud" >/dev/null || fail "kvsynth --user-token"
{ printf 'hello<tool>world%s<tool>the end%sa <tool> b%s<tool>%s  <tool>  \n<tool><tool>x%s' \
    "$SEP" "$SEP" "$SEP" "$SEP" "$SEP"
  cat "$ours_cases"; } >"$tmp/spm-user.txt"
compare spm-user "$ud" "$tmp/spm-user.txt"
pieces spm-user "$ud"
# Generated text (SentencePiece: its first word's space is not a space prefix to drop): the
# text `kvfetch generate` prints is the pieces of the ids it generated, for sampled runs that
# start with such a word, with <unk> and with byte tokens. Not vacuous: some run must start
# with a space.
spaced=0 same=0
for seed in 1 2 3 4 5 6 7 8 9 10 11 12; do
  gen=(generate --model "$ud" --prompt "hello" -n 24 --temp 1 --seed "$seed")
  "$KVFETCH" "${gen[@]}" --tokens 2>/dev/null | tr ' ' , >"$tmp/gen.ids"
  "$tok" "$LLAMACPP_LIB" "$ud" "$tmp/gen.ids" --pieces >"$tmp/want"
  echo >>"$tmp/want" # generate ends its text with a newline
  "$KVFETCH" "${gen[@]}" >"$tmp/got" 2>/dev/null
  if cmp -s "$tmp/want" "$tmp/got"; then same=$((same + 1)); else
    fails=$((fails + 1)); echo "  generate --seed $seed: text differs from llama.cpp's pieces of its ids"; fi
  [ "$(head -c 1 "$tmp/got")" != " " ] || spaced=$((spaced + 1))
done
printf '%-16s %-9s %8d %8d\n' spm-user generate 12 "$same"
[ "$spaced" -gt 0 ] || fail "no generated text started with a space: the check would not see a dropped one"
[ "$fails" -eq 0 ] || { echo "FAIL: $fails vocabulary/mode pairs differ from llama.cpp"; exit 1; }
echo "ok: every supported vocabulary tokenizes as llama.cpp does; the others are refused"
