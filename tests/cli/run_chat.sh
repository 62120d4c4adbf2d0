#!/usr/bin/env bash
# run_chat.sh: `kvfetch run --chat` builds the conversation with the model's chat template: the
# system turn and the user header before the documents, a blank line, the question, the end of
# the turn and the assistant's header after them (ChatML and Mistral v7 here, written out by hand
# below); a model whose template kvpub does not render is refused with one line; --chat with
# --prefix is a usage error. The rendering itself is held against llama.cpp in llamacpp_chat.sh.
set -eu
BUILD=${BUILD:-build}
KVFETCH=${KVFETCH:-$BUILD/kvfetch}
tmp=$(mktemp -d /tmp/kvpub-run-chat-XXXXXX)
. tests/cli/lib/fetch_env.sh
trap fetch_env_cleanup EXIT
export KVPUB_CACHE_DIR="$tmp/cache"
printf '%s' "{% for m in messages %}<|im_start|>{{ m.role }}..." >"$tmp/chatml.jinja"
printf '%s' "{{ bos_token }}[SYSTEM_PROMPT]{{ s }}[/SYSTEM_PROMPT][INST]{{ m.content }}[/INST]" >"$tmp/v7.jinja"
printf '%s' "{{ bos_token }}<start_of_turn>{{ m.role }}" >"$tmp/gemma.jinja"
for t in chatml v7 gemma; do
  "$BUILD/kvsynth" --arch qwen3 --layers 2 --dim 64 --heads 4 --kv-heads 2 --ffn 128 --vocab 1024 --ctx 1024 \
    --tokenizer bpe --seed 3 --chat-template "$tmp/$t.jinja" -o "$tmp/$t.gguf" >/dev/null || fail "kvsynth $t"
done
"$BUILD/kvpubd" keygen -o "$tmp/pub" >/dev/null
mkdir -p "$tmp/trust"; cp "$tmp/pub.pub" "$tmp/trust/"
head -c 300 /usr/share/common-licenses/Apache-2.0 >"$tmp/doc.txt"
# wraps NAME FORMAT BEFORE AFTER: publish the document for NAME.gguf, then `run --chat` must put
# exactly the tokens of BEFORE and AFTER (the conversation written out by hand) around it
wraps() {
  local m="$tmp/$1.gguf" before after
  "$BUILD/kvpubd" publish --store "$tmp/st-$1" --model "$m" --key "$tmp/pub.key" --threads 2 --json \
    "$tmp/doc.txt" >/dev/null || fail "publish $1"
  "$KVFETCH" run --model "$m" --blob "$(find "$tmp/st-$1/blobs" -type f)" --trust "$tmp/trust" --chat \
    --system "Be brief." --prompt "What license is this?" -n 2 --json --quiet >"$tmp/run.json" || fail "run --chat ($1)"
  want_before=$("$KVFETCH" tokenize --model "$m" --special --no-bos "$3" | wc -w)
  want_after=$("$KVFETCH" tokenize --model "$m" --special --no-bos "$4" | wc -w)
  before=$(jq -r .prefix_tokens "$tmp/run.json")
  after=$(jq -r .prompt_tokens "$tmp/run.json")
  [ "$before" = "$want_before" ] && [ "$after" = "$want_after" ] ||
    fail "--chat ($2) put $before/$after tokens around the document, want $want_before/$want_after"
  echo "ok: run --chat wraps the document in the $2 conversation ($before + doc + $after tokens)"
}
wraps chatml ChatML $'<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n' \
  $'\n\nWhat license is this?<|im_end|>\n<|im_start|>assistant\n'
# Mistral v7: the system prompt in its own brackets, no assistant header (llama.cpp adds none)
wraps v7 "Mistral v7" '[SYSTEM_PROMPT] Be brief.[/SYSTEM_PROMPT][INST] ' $'\n\nWhat license is this?[/INST]'
blob=$(find "$tmp/st-chatml/blobs" -type f)

rc=0
"$KVFETCH" run --model "$tmp/gemma.gguf" --blob "$blob" --trust "$tmp/trust" --chat --prompt Q --quiet \
  >/dev/null 2>"$tmp/err" || rc=$?
[ "$rc" -eq 2 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "is Gemma, which kvpub does not render" "$tmp/err" ||
  fail "a Gemma template was not refused clearly (rc $rc): $(cat "$tmp/err")"
rc=0
"$KVFETCH" run --model "$tmp/chatml.gguf" --blob "$blob" --trust "$tmp/trust" --chat --prefix x --prompt Q \
  >/dev/null 2>"$tmp/err" || rc=$?
[ "$rc" -eq 2 ] && grep -q "give --system, not --prefix" "$tmp/err" || fail "--chat with --prefix accepted (rc $rc)"
echo "ok: unknown templates and --chat with --prefix are refused"
