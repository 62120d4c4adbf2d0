#!/usr/bin/env bash
# publish_llama_state.sh: `kvpubd publish --from-llama-state` reads both layouts of a llama.cpp
# sequence state (V as rows, as llama.cpp saves it with flash attention on, its CPU default;
# V transposed, flash attention off) back into exactly the KV they hold. The states here are
# our own `kvfetch export --llama-state` of a published blob, so the blob republished from each
# must carry the same chunk digests as the blob it came from: every K and V value back in its
# cell. Documents whose token count is not a multiple of 16 (the reader turns V 16 cells at a
# time). Refused with exit 3 and one line, nothing published: a truncated state, a state with
# bytes after it, a state of another document. The weights, which nothing is computed with
# here, are mapped (publish --json's "weights") unless KVPUB_WEIGHTS says otherwise; so are
# export's, which computes one pass.
# tests/cli/llamacpp_state.sh holds llama.cpp's own states to the same path.
source "$(dirname "$0")/lib_serve.bash"
"$KVPUBD" keygen -o "$T/pub" >/dev/null
mkdir -p "$T/trust"
cp "$T/pub.pub" "$T/trust/"
head -c 700 /usr/share/common-licenses/GPL-3 | tail -c 500 >"$T/doc.txt"
printf 'Some other text entirely, of about the same length but not the same.\n' >"$T/other.txt"

# kv_dim 64 (4 query heads, 2 kv heads of 32) and kv_dim 128 (one kv head), weights f16 and q8_0
"$BUILD/kvsynth" --arch llama --layers 2 --dim 128 --heads 4 --kv-heads 2 --head-dim 32 --ffn 128 \
  --vocab 320 --ctx 512 --type f16 --seed 3 -o "$T/llama.gguf" >/dev/null
"$BUILD/kvsynth" --arch qwen3 --layers 3 --dim 128 --heads 2 --kv-heads 1 --head-dim 128 --ffn 128 \
  --vocab 320 --ctx 512 --type q8_0 --seed 4 -o "$T/qwen3.gguf" >/dev/null

digests() { "$BUILD/kvfetch" inspect --json "$1" | jq -c '[.manifest.chunks[].sha256]'; }
publish() {  # MODEL STORE FILE [options...]: the blob's path on stdout
  local m=$1 store=$2 file=$3; shift 3
  rm -rf "$store"
  "$KVPUBD" publish --store "$store" --model "$m" --key "$T/pub.key" --chunk-tokens 32 --json "$@" "$file" \
    >"$T/pub.json" || return 1
  find "$store/blobs" -type f
}

for m in "$T/llama.gguf" "$T/qwen3.gguf"; do
  name=$(basename "$m" .gguf)
  blob=$(publish "$m" "$T/s0" "$T/doc.txt") || { fail "$name: publish"; continue; }
  n=$(jq '.documents[0].tokens' "$T/pub.json")
  [ $((n % 16)) -ne 0 ] && [ "$n" -gt 32 ] || fail "$name: the document has $n tokens: want more than 32, not a multiple of 16"
  want=$(digests "$blob")
  for layout in rows v-trans; do
    opt=(); [ $layout = v-trans ] && opt=(--v-trans)
    "$BUILD/kvfetch" export --model "$m" --blob "$blob" --trust "$T/trust" --llama-state "$T/$layout.state" \
      --quiet --json "${opt[@]}" >"$T/export.json" || { fail "$name: export $layout"; continue; }
    # one pass (BOS) is computed: export maps the weights rather than copy them
    [ "$(jq -r .weights "$T/export.json")" = map ] || fail "$name: export held the weights as $(jq -r .weights "$T/export.json")"
    again=$(publish "$m" "$T/s1" "$T/doc.txt" --from-llama-state "$T/$layout.state") ||
      { fail "$name: publish --from-llama-state ($layout)"; continue; }
    [ "$(digests "$again")" = "$want" ] && ok "$name, V $layout: $n tokens back with the chunk digests they left with" ||
      fail "$name, V $layout: the republished blob's chunks differ from the original's"
    # nothing is computed with the weights: they are mapped, not copied, unless KVPUB_WEIGHTS says
    [ "$(jq -r .weights "$T/pub.json")" = map ] || fail "$name: weights held as $(jq -r .weights "$T/pub.json")"
  done
  KVPUB_WEIGHTS=copy publish "$m" "$T/s1" "$T/doc.txt" --from-llama-state "$T/rows.state" >/dev/null &&
    [ "$(jq -r .weights "$T/pub.json")" = copy ] && ok "$name: weights mapped, or copied when KVPUB_WEIGHTS=copy" ||
    fail "$name: KVPUB_WEIGHTS=copy gave $(jq -r .weights "$T/pub.json")"
  cmp -s "$T/rows.state" "$T/v-trans.state" && fail "$name: the two layouts wrote the same file"

  # refusals: exit 3, one line on stderr, no blob
  head -c -100 "$T/v-trans.state" >"$T/cut.state"
  { cat "$T/rows.state"; printf 'x'; } >"$T/long.state"
  for bad in cut long; do
    rm -rf "$T/s2"; rc=0
    "$KVPUBD" publish --store "$T/s2" --model "$m" --key "$T/pub.key" --from-llama-state "$T/$bad.state" \
      "$T/doc.txt" >/dev/null 2>"$T/err" || rc=$?
    [ $rc -eq 3 ] && [ "$(wc -l <"$T/err")" -eq 1 ] || fail "$name: $bad state: exit $rc: $(cat "$T/err")"
    [ -z "$(find "$T/s2/blobs" -type f 2>/dev/null)" ] || fail "$name: $bad state published a blob"
  done
  rm -rf "$T/s2"; rc=0
  "$KVPUBD" publish --store "$T/s2" --model "$m" --key "$T/pub.key" --from-llama-state "$T/rows.state" \
    "$T/other.txt" >/dev/null 2>"$T/err" || rc=$?
  [ $rc -eq 3 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && [ -z "$(find "$T/s2/blobs" -type f 2>/dev/null)" ] &&
    ok "$name: truncated, overlong and another document's states refused: $(cat "$T/err")" ||
    fail "$name: another document's state: exit $rc: $(cat "$T/err")"
done

# export generates nothing: a document that fills the model's context but for BOS exports (it
# was refused while export kept room for run's 64 generated tokens); generation options are
# refused
publish "$T/llama.gguf" "$T/s0" "$T/doc.txt" >/dev/null || fail "publish for the tight context"
n=$(jq '.documents[0].tokens' "$T/pub.json")
"$BUILD/kvsynth" --arch llama --layers 2 --dim 128 --heads 4 --kv-heads 2 --head-dim 32 --ffn 128 \
  --vocab 320 --ctx $((n + 1)) --type f16 --seed 3 -o "$T/tight.gguf" >/dev/null
blob=$(publish "$T/tight.gguf" "$T/s3" "$T/doc.txt") || fail "publish $n tokens with a context of $((n + 1))"
"$BUILD/kvfetch" export --model "$T/tight.gguf" --blob "$blob" --trust "$T/trust" --llama-state "$T/tight.state" \
  --quiet 2>"$T/err" && ok "export fills the context ($n tokens and BOS in $((n + 1)))" \
  || fail "export into a context it fills: $(cat "$T/err")"
for o in "-n 4" "--temp 0.5" "--seed 3" "--logits $T/l.f32"; do
  rc=0; "$BUILD/kvfetch" export --model "$T/tight.gguf" --blob "$blob" --trust "$T/trust" \
    --llama-state "$T/x.state" $o 2>"$T/err" || rc=$?
  [ $rc -eq 2 ] && grep -q "export generates nothing" "$T/err" && [ ! -e "$T/x.state" ] || fail "export $o: rc=$rc $(cat "$T/err")"
done
done_tests
