#!/usr/bin/env bash
# run_chat.sh: `kvfetch run --chat` builds the conversation with the model's chat template: the
# system turn and the user header before the documents, a blank line, the question, the end of
# the turn and the assistant's header after them (ChatML here, written out by hand below); a
# model whose template kvpub does not render is refused with one line; --chat with --prefix is a
# usage error. The rendering itself is held against llama.cpp in llamacpp_chat.sh.
set -eu
BUILD=${BUILD:-build}
KVFETCH=${KVFETCH:-$BUILD/kvfetch}
tmp=$(mktemp -d /tmp/kvpub-run-chat-XXXXXX)
. tests/cli/lib/fetch_env.sh
trap fetch_env_cleanup EXIT
export KVPUB_CACHE_DIR="$tmp/cache"
printf '%s' "{% for m in messages %}<|im_start|>{{ m.role }}..." >"$tmp/chatml.jinja"
printf '%s' "{{ bos_token }}[INST] {{ m.content }} [/INST]" >"$tmp/inst.jinja"
for t in chatml inst; do
  "$BUILD/kvsynth" --arch qwen3 --layers 2 --dim 64 --heads 4 --kv-heads 2 --ffn 128 --vocab 1024 --ctx 1024 \
    --tokenizer bpe --seed 3 --chat-template "$tmp/$t.jinja" -o "$tmp/$t.gguf" >/dev/null || fail "kvsynth $t"
done
"$BUILD/kvpubd" keygen -o "$tmp/pub" >/dev/null
mkdir -p "$tmp/trust"; cp "$tmp/pub.pub" "$tmp/trust/"
head -c 300 /usr/share/common-licenses/Apache-2.0 >"$tmp/doc.txt"
"$BUILD/kvpubd" publish --store "$tmp/st" --model "$tmp/chatml.gguf" --key "$tmp/pub.key" --threads 2 --json \
  "$tmp/doc.txt" >/dev/null || fail "publish"
blob=$(find "$tmp/st/blobs" -type f)

"$KVFETCH" run --model "$tmp/chatml.gguf" --blob "$blob" --trust "$tmp/trust" --chat --system "Be brief." \
  --prompt "What license is this?" -n 2 --json --quiet >"$tmp/run.json" || fail "run --chat"
tok() { "$KVFETCH" tokenize --model "$tmp/chatml.gguf" --special --no-bos "$1" | wc -w; }
want_before=$(tok $'<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n')
want_after=$(tok $'\n\nWhat license is this?<|im_end|>\n<|im_start|>assistant\n')
got_before=$(jq -r .prefix_tokens "$tmp/run.json")
got_after=$(jq -r .prompt_tokens "$tmp/run.json")
[ "$got_before" = "$want_before" ] && [ "$got_after" = "$want_after" ] ||
  fail "--chat put $got_before/$got_after tokens around the document, want $want_before/$want_after"
echo "ok: run --chat wraps the document in the ChatML conversation ($got_before + doc + $got_after tokens)"

rc=0
"$KVFETCH" run --model "$tmp/inst.gguf" --blob "$blob" --trust "$tmp/trust" --chat --prompt Q --quiet \
  >/dev/null 2>"$tmp/err" || rc=$?
[ "$rc" -eq 2 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "Mistral/Llama 2 (\[INST\]), which kvpub does not render" "$tmp/err" ||
  fail "an [INST] template was not refused clearly (rc $rc): $(cat "$tmp/err")"
rc=0
"$KVFETCH" run --model "$tmp/chatml.gguf" --blob "$blob" --trust "$tmp/trust" --chat --prefix x --prompt Q \
  >/dev/null 2>"$tmp/err" || rc=$?
[ "$rc" -eq 2 ] && grep -q "give --system, not --prefix" "$tmp/err" || fail "--chat with --prefix accepted (rc $rc)"
echo "ok: unknown templates and --chat with --prefix are refused"
