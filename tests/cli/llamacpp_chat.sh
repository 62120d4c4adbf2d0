#!/usr/bin/env bash
# llamacpp_chat.sh: `kvfetch tokenize --chat` builds the conversation llama.cpp builds. For every
# chat template llama.cpp ships (models/templates/*.jinja of the pinned package's source bundle:
# Qwen, Llama 3.x, Phi-3.5, Mistral, Gemma, DeepSeek, ...) stored in a kvsynth model's
# tokenizer.chat_template, the text kvfetch renders for [system, user] plus the assistant's header
# must equal what libllama's llama_chat_apply_template renders (scripts/llamacpp/llama_chat.c), or
# kvfetch must refuse the template with one clear line (exit 3). The three formats kvpub renders
# (ChatML/Qwen, Llama 3, Phi-3) must each be met at least once, and a bare "chatml" too. Skips
# with one line only when no npm registry is reachable.
set -eu
HARNESS=llama_chat WHAT="llama.cpp chat templates"
. tests/cli/lib/llamacpp_env.sh
chat=$harness
SYSTEM="You answer from the documents only."
USER="  What does the second document say about RoPE?  "   # Llama 3 trims, the others do not
printf 'chatml' >"$tmp/bare-chatml.jinja"
fails=0 same=0 refused=0
declare -A seen
for t in "$LLAMACPP_SRC"/models/templates/*.jinja "$tmp/bare-chatml.jinja"; do
  name=$(basename "$t" .jinja)
  "$BUILD/kvsynth" --arch qwen2 --layers 1 --dim 32 --heads 2 --ffn 64 --vocab 600 --tokenizer bpe --seed 1 \
    --chat-template "$t" -o "$tmp/m.gguf" >/dev/null
  for sys in "" "$SYSTEM"; do
    rc=0
    "$KVFETCH" tokenize --model "$tmp/m.gguf" --chat --system "$sys" --text "$USER" >"$tmp/ours" 2>"$tmp/err" || rc=$?
    lrc=0
    "$chat" "$t" "$sys" "$USER" >"$tmp/theirs" 2>/dev/null || lrc=$?
    if [ "$rc" -eq 0 ]; then
      if [ "$lrc" -ne 0 ] || ! cmp -s "$tmp/ours" "$tmp/theirs"; then
        echo "FAIL: $name (system '${sys:0:8}'): kvfetch renders otherwise than llama.cpp (llama_chat rc $lrc)"
        diff "$tmp/theirs" "$tmp/ours" | head -6; fails=$((fails + 1))
      else
        same=$((same + 1)); seen[$(head -c 14 "$tmp/ours")]=1
      fi
    elif [ "$rc" -eq 3 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "does not render" "$tmp/err"; then
      refused=$((refused + 1))
    else
      echo "FAIL: $name: kvfetch exit $rc without one clear refusal: $(cat "$tmp/err")"; fails=$((fails + 1))
    fi
  done
done
# each format met: ChatML, Llama 3, Phi-3 openings
for open in '<|im_start|>sy' '<|start_header' '<|system|>' ; do
  found=0
  for k in "${!seen[@]}"; do case "$k" in "$open"*) found=1;; esac; done
  [ $found -eq 1 ] || { echo "FAIL: no template rendered in the format that starts '$open'"; fails=$((fails + 1)); }
done
echo "chat templates: $same renderings equal to llama.cpp's, $refused refused"
[ "$fails" -eq 0 ] || { echo "FAIL: $fails chat template checks"; exit 1; }
