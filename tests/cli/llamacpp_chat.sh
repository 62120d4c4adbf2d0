#!/usr/bin/env bash
# llamacpp_chat.sh: `kvfetch tokenize --chat` builds the conversation llama.cpp builds. For every
# chat template llama.cpp ships (models/templates/*.jinja of the pinned package's source bundle:
# Qwen, Llama 3.x, Phi-3.5, Mistral, Gemma, DeepSeek, ...) stored in a kvsynth model's
# tokenizer.chat_template, the text kvfetch renders for [system, user] plus the assistant's header
# must equal what libllama's llama_chat_apply_template renders (scripts/llamacpp/llama_chat.c), or
# kvfetch must refuse the template with one clear line (exit 3). Beside them: llama.cpp's bare
# format names for the formats kvpub renders, and templates that carry only the marks llama.cpp's
# detector tells the [INST] family apart by (it reads marks, never runs the Jinja), so that each
# of Llama 2's and Mistral's variants is met. Every format kvpub renders (ChatML/Qwen, Llama 3,
# Phi-3, Mistral v1/v3/v3-tekken/v7/v7-tekken, Llama 2 plain/sys/sys-bos/sys-strip) must be met
# at least once. Skips with one line only when no npm registry is reachable.
set -eu
HARNESS=llama_chat WHAT="llama.cpp chat templates"
. tests/cli/lib/llamacpp_env.sh
chat=$harness
SYSTEM="You answer from the documents only."
USER="  What does the second document say about RoPE?  "   # Llama 3 trims, the others do not
for name in chatml llama3 phi3 mistral-v1 mistral-v3 mistral-v3-tekken mistral-v7 mistral-v7-tekken \
  llama2 llama2-sys llama2-sys-bos llama2-sys-strip mistral; do
  printf '%s' "$name" >"$tmp/bare-$name.jinja"
done
# the marks of each variant (llama-chat.cpp's llm_chat_detect_template)
printf '%s' "{{ bos_token }}[INST] {{ m.content }} [/INST]" >"$tmp/marks-llama2.jinja"
printf '%s' "[INST] <<SYS>>{{ s }}<</SYS>> {{ m.content }} [/INST]" >"$tmp/marks-llama2-sys.jinja"
printf '%s' "{{ bos_token + '[INST] ' }}<<SYS>>" >"$tmp/marks-llama2-sys-bos.jinja"
printf '%s' "[INST] <<SYS>>{{ m.content.strip() }}" >"$tmp/marks-llama2-sys-strip.jinja"
printf '%s' "{{ bos_token + ' [INST] ' + system_message }}" >"$tmp/marks-mistral-v1.jinja"
printf '%s' "[AVAILABLE_TOOLS]{{ t }}[/AVAILABLE_TOOLS][INST]{{ m }}[/INST]" >"$tmp/marks-mistral-v3.jinja"
printf '%s' "[AVAILABLE_TOOLS]{{ \"[INST]\" + m }}" >"$tmp/marks-mistral-v3-tekken.jinja"
printf '%s' "[SYSTEM_PROMPT]{{ s }}[/SYSTEM_PROMPT][INST]{{ m }}[/INST]" >"$tmp/marks-mistral-v7.jinja"
fails=0 same=0 refused=0
declare -A seen rendered
for t in "$LLAMACPP_SRC"/models/templates/*.jinja "$tmp"/bare-*.jinja "$tmp"/marks-*.jinja; do
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
        same=$((same + 1)); seen[$(head -c 14 "$tmp/ours")]=1; rendered[$name]=1
      fi
    elif [ "$rc" -eq 3 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "does not render" "$tmp/err"; then
      refused=$((refused + 1))
    else
      echo "FAIL: $name: kvfetch exit $rc without one clear refusal: $(cat "$tmp/err")"; fails=$((fails + 1))
    fi
  done
done
# every format met: by its bare name and, for the [INST] family, by its marks (a misread variant
# renders otherwise than llama.cpp, with the system message and USER's spaces; only -bos equals
# -sys without an earlier turn)
for t in "$tmp"/bare-*.jinja "$tmp"/marks-*.jinja; do
  name=$(basename "$t" .jinja)
  [ -n "${rendered[$name]:-}" ] || { echo "FAIL: $name was not rendered as llama.cpp renders it"; fails=$((fails + 1)); }
done
# and the shipped templates of ChatML, Llama 3 and Phi-3, by their openings
for open in '<|im_start|>sy' '<|start_header' '<|system|>' ; do
  found=0
  for k in "${!seen[@]}"; do case "$k" in "$open"*) found=1;; esac; done
  [ $found -eq 1 ] || { echo "FAIL: no template rendered in the format that starts '$open'"; fails=$((fails + 1)); }
done
echo "chat templates: $same renderings equal to llama.cpp's, $refused refused"
[ "$fails" -eq 0 ] || { echo "FAIL: $fails chat template checks"; exit 1; }
