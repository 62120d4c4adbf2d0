#!/usr/bin/env bash
# publish_context.sh: declared contexts. `kvpubd publish --context/--context-file/--context-ids/
# --chat` prefills the document after a context named in the signed manifest; `kvfetch compare`
# with exactly that context before the document is bit-identical to a full prefill and says so;
# another prefix is told how it differs and falls back to re-rotation; the three spellings of one
# context are one listing, another context is another listing; GET /v1/catalog filters by
# context hash; bad context arguments are usage errors (exit 2). Also: run --json keeps text
# that is not valid UTF-8, and run --blob ID uses the cache or --server. Models: tiny kvsynth.
set -eu
. tests/cli/lib/fetch_env.sh
fetch_env_init publish-context
export KVPUB_CACHE_DIR="$tmp/cache"

"$BUILD/kvsynth" --arch llama --layers 2 --dim 64 --heads 4 --kv-heads 2 --ffn 128 --vocab 1024 --ctx 512 \
  --tokenizer bpe --seed 3 -o "$tmp/m.gguf" >/dev/null || fail "kvsynth"
printf '%s' "{% for m in messages %}<|im_start|>{{ m.role }}..." >"$tmp/chatml.jinja"
"$BUILD/kvsynth" --arch qwen3 --layers 2 --dim 64 --heads 4 --kv-heads 2 --ffn 128 --vocab 1024 --ctx 512 \
  --tokenizer bpe --seed 5 --chat-template "$tmp/chatml.jinja" -o "$tmp/chat.gguf" >/dev/null || fail "kvsynth chat"
"$BUILD/kvpubd" keygen -o "$tmp/pub" >/dev/null
mkdir -p "$tmp/trust"; cp "$tmp/pub.pub" "$tmp/trust/"
head -c 300 /usr/share/common-licenses/Apache-2.0 >"$tmp/doc.txt"
ctx="Read this carefully. "
P=("$BUILD/kvpubd" publish --store "$tmp/st" --key "$tmp/pub.key" --threads 2 --json)
C=("$KVFETCH" compare --trust "$tmp/trust" --threads 2 -n 8)

note "publish after a declared context: its ids and hash are in the signed manifest"
expect_rc 0 "${P[@]}" --model "$tmp/m.gguf" --context "$ctx" "$tmp/doc.txt"
ids=$("$KVFETCH" tokenize --model "$tmp/m.gguf" --special --no-bos "$ctx")
n=$(echo "$ids" | wc -w)
[ "$(jq -r '.documents[0].context_tokens' "$tmp/out")" = "$n" ] || fail "context_tokens: $(cat "$tmp/out")"
hash=$(jq -r '.documents[0].context_sha256' "$tmp/out")
id=$(jq -r '.documents[0].id' "$tmp/out")
blob=$(find "$tmp/st/blobs" -name "$id")
expect_rc 0 "$KVFETCH" inspect --json "$blob"
[ "$(jq -c '.manifest.context.ids' "$tmp/out")" = "[$(echo "$ids" | tr ' ' ',')]" ] || fail "manifest ids: $(jq -c .manifest.context "$tmp/out")"
[ "$(jq -r '.manifest.context.sha256' "$tmp/out")" = "$hash" ] || fail "manifest hash differs from publish's"
[ "$(jq -r '.manifest.rope.pos0' "$tmp/out")" = "$((n + 1))" ] || fail "pos0 is not BOS + the context"
expect_rc 0 "$KVFETCH" inspect "$blob"
grep -q "context:    $n tokens declared before the document" "$tmp/out" || fail "inspect: $(cat "$tmp/out")"

note "the same context as a file or as ids is the same listing; another context is another"
printf '%s' "$ctx" >"$tmp/ctx.txt"
expect_rc 0 "${P[@]}" --model "$tmp/m.gguf" --context-file "$tmp/ctx.txt" "$tmp/doc.txt"
[ "$(jq -r '.documents[0].status' "$tmp/out")" = skipped ] && [ "$(jq -r '.documents[0].id' "$tmp/out")" = "$id" ] \
  || fail "--context-file: $(cat "$tmp/out")"
expect_rc 0 "${P[@]}" --model "$tmp/m.gguf" --context-ids "$(echo "$ids" | tr ' ' ',')" "$tmp/doc.txt"
[ "$(jq -r '.documents[0].status' "$tmp/out")" = skipped ] || fail "--context-ids: $(cat "$tmp/out")"
expect_rc 0 "${P[@]}" --model "$tmp/m.gguf" --context "Skim this. " "$tmp/doc.txt"
[ "$(jq -r '.documents[0].status' "$tmp/out")" = published ] || fail "another context: $(cat "$tmp/out")"
expect_rc 0 "${P[@]}" --model "$tmp/m.gguf" "$tmp/doc.txt"
[ "$(jq -r '.documents[0].status' "$tmp/out")" = published ] && [ "$(jq -r '.documents[0].context_tokens' "$tmp/out")" = 0 ] \
  || fail "no context: $(cat "$tmp/out")"
[ "$(sqlite3 "$tmp/st/index.db" 'SELECT count(*) FROM blobs')" = 3 ] || fail "want 3 listings of one document"

note "exactly that context before the document: bit-identical to a full prefill"
expect_rc 0 "${C[@]}" --model "$tmp/m.gguf" --blob "$blob" --prefix "$ctx" --prompt " What is it?"
grep -q "logits bit-identical to full prefill" "$tmp/out" || fail "not bit-identical: $(cat "$tmp/out")"
expect_err "its declared context \($n tokens\) matched: loaded exactly"
expect_rc 0 "$KVFETCH" run --trust "$tmp/trust" --threads 2 -n 2 --json --model "$tmp/m.gguf" --blob "$blob" \
  --prefix "$ctx" --prompt " What is it?"
[ "$(jq -r '.blobs[0].context' "$tmp/out")" = exact ] && [ "$(jq -r '.blobs[0].delta' "$tmp/out")" = 0 ] \
  || fail "run --json: $(jq -c .blobs "$tmp/out")"
note "run --json keeps a blob's figures when its file name is not UTF-8"
cp "$blob" "$tmp/"$'\xff'"blob.kvb"
expect_rc 0 "$KVFETCH" run --trust "$tmp/trust" --threads 2 -n 2 --json --model "$tmp/m.gguf" \
  --blob "$tmp/"$'\xff'"blob.kvb" --prefix "$ctx" --prompt " What is it?"
[ "$(jq -r '.blobs[0].context' "$tmp/out")" = exact ] && [ "$(jq -r '.blobs[0].tokens' "$tmp/out")" -gt 0 ] \
  || fail "run --json with a non-UTF-8 blob path: $(jq -c .blobs "$tmp/out")"

note "run --json keeps the generated text when its bytes are not valid UTF-8"
# (this prompt's greedy continuation on this model holds bytes that are not UTF-8; checked below)
R=("$KVFETCH" run --trust "$tmp/trust" --threads 2 -n 64 --quiet --model "$tmp/m.gguf" --blob "$blob" --prefix "$ctx"
   --prompt " Why?")
expect_rc 0 "${R[@]}"
cp "$tmp/out" "$tmp/raw.txt"
iconv -f UTF-8 -t UTF-8 "$tmp/raw.txt" >/dev/null 2>&1 && fail "this model's greedy text is valid UTF-8: the case is not exercised"
expect_rc 0 "${R[@]}" --json
[ "$(jq -r '.text | type' "$tmp/out")" = string ] && [ "$(jq -r .text_utf8 "$tmp/out")" = false ] \
  || fail "run --json text: $(head -c 300 "$tmp/out")"
{ jq -r .text_hex "$tmp/out" | xxd -r -p; echo; } | cmp -s - "$tmp/raw.txt" || fail "text_hex is not the generated bytes"
jq -j .text "$tmp/out" | grep -q $'\xef\xbf\xbd' || fail "no U+FFFD where the invalid bytes were"
expect_rc 0 "${C[@]}" -n 64 --json --model "$tmp/m.gguf" --blob "$blob" --prefix "$ctx" --prompt " Why?"
[ "$(jq -r '.text | type' "$tmp/out")" = string ] && [ "$(jq -r .text_utf8 "$tmp/out")" = false ] \
  || fail "compare --json dropped the text: $(head -c 300 "$tmp/out")"

note "another prefix: told how it differs, loaded re-rotated (approximate)"
expect_rc 0 "${C[@]}" --model "$tmp/m.gguf" --blob "$blob" --prefix "Read that carefully. " --prompt " What is it?"
expect_err "your [0-9]+ tokens before it differ from its declared $n-token context \(sha256:${hash:0:16}\) at token [0-9]+; loaded re-rotated"
grep -q "logits differ from full prefill" "$tmp/out" || fail "a mismatched context claims exactness: $(cat "$tmp/out")"
expect_rc 0 "${C[@]}" --model "$tmp/m.gguf" --blob "$blob" --prompt " What is it?"
expect_err "its declared context \(sha256:${hash:0:16}\) is $n tokens; you have 0 before it.*re-rotated by -$n positions"
expect_rc 0 "$KVFETCH" run --trust "$tmp/trust" --threads 2 -n 2 --json --quiet --model "$tmp/m.gguf" --blob "$blob" \
  --prompt " What is it?"
[ "$(jq -r '.blobs[0].context' "$tmp/out")" = differs ] || fail "run --json: $(jq -c .blobs "$tmp/out")"

note "--chat --system: the chat header is the context, matched by run --chat with the same system"
expect_rc 0 "${P[@]}" --model "$tmp/chat.gguf" --chat --system "Be brief." "$tmp/doc.txt"
cid=$(jq -r '.documents[0].id' "$tmp/out")
cblob=$(find "$tmp/st/blobs" -name "$cid")
expect_rc 0 "${C[@]}" --model "$tmp/chat.gguf" --blob "$cblob" --chat --system "Be brief." --prompt "What is it?"
grep -q "logits bit-identical to full prefill" "$tmp/out" || fail "--chat not bit-identical: $(cat "$tmp/out")"
expect_rc 0 "${C[@]}" --model "$tmp/chat.gguf" --blob "$cblob" --chat --system "Be long." --prompt "What is it?"
expect_err "differ from its declared"

note "GET /v1/catalog?context=HASH | none"
start_kvpubd "$tmp/st"
cat_q() { curl -sS --cacert "$tmp/cert.pem" -o "$tmp/out" -w '%{http_code}' "https://127.0.0.1:$KVPUBD_PORT/v1/catalog?$1"; }
[ "$(cat_q "context=$hash")" = 200 ] || fail "catalog: $(cat "$tmp/out")"
[ "$(jq -r '.items | length' "$tmp/out")" = 1 ] && [ "$(jq -r '.items[0].id' "$tmp/out")" = "$id" ] &&
  [ "$(jq -r '.items[0].context.tokens' "$tmp/out")" = "$n" ] || fail "context filter: $(cat "$tmp/out")"
[ "$(cat_q "context=none")" = 200 ] || fail "catalog none: $(cat "$tmp/out")"
[ "$(jq -r '.items | length' "$tmp/out")" = 1 ] && [ "$(jq -r '.items[0].context' "$tmp/out")" = null ] \
  || fail "context=none: $(cat "$tmp/out")"
[ "$(cat_q "")" = 200 ] && [ "$(jq -r '.items | length' "$tmp/out")" = 4 ] || fail "unfiltered: $(cat "$tmp/out")"
[ "$(cat_q "context=xyz")" = 400 ] || fail "a bad context hash was not a 400: $(cat "$tmp/out")"

note "kvfetch search: the same filters from the command line"
S=("$KVFETCH" search --server "https://127.0.0.1:$KVPUBD_PORT" --cacert "$tmp/cert.pem")
expect_rc 0 "${S[@]}" --json --context "$hash"
[ "$(jq -r '.items[0].id' "$tmp/out")" = "$id" ] && [ "$(jq -r '.items | length' "$tmp/out")" = 1 ] || fail "search --context"
expect_rc 0 "${S[@]}" --model "$tmp/m.gguf"
[ "$(grep -c "doc.txt" "$tmp/out")" = 3 ] && grep -q "^3 of 3 listings" "$tmp/out" || fail "search --model: $(cat "$tmp/out")"
grep -q "$n tok .*doc.txt" "$tmp/out" || fail "search shows no context column: $(cat "$tmp/out")"
expect_rc 0 "${S[@]}" --model "$tmp/chat.gguf" --context none
grep -q "^0 of 0 listings" "$tmp/out" || fail "search --context none on the chat model: $(cat "$tmp/out")"
expect_rc 0 "${S[@]}" --q "doc" --limit 2 --json
[ "$(jq -r '.items | length' "$tmp/out")" = 2 ] && [ "$(jq -r .next "$tmp/out")" = 2 ] || fail "search --limit: $(cat "$tmp/out")"
expect_rc 2 "${S[@]}" --context xyz
expect_err "HTTP 400 .*context must be"
expect_rc 2 "$KVFETCH" search --model "$tmp/m.gguf"
expect_err "give --server URL"
# what only a signed snapshot uses is refused with a server, not ignored
for o in "--trust $tmp" "--now 1800000000" "--cache-dir $tmp" "--mirror https://127.0.0.1:1"; do
  expect_rc 2 "${S[@]}" $o
  expect_err "^kvfetch search: ${o%% *} applies to --snapshot only"
done

note "run --blob ID: from the local cache, else from --server"
export KVPUB_CACHE_DIR="$tmp/cache2"
RI=("$KVFETCH" run --trust "$tmp/trust" --cacert "$tmp/cert.pem" --threads 2 -n 2 --quiet --model "$tmp/m.gguf"
    --prefix "$ctx" --prompt " What is it?" --blob "$id")
expect_rc 2 "${RI[@]}"
expect_err "blob $id is not in the local cache .*give --server URL"
expect_rc 0 "${RI[@]}" --server "https://127.0.0.1:$KVPUBD_PORT"
stop_kvpubd
expect_rc 0 "${RI[@]}"
export KVPUB_CACHE_DIR="$tmp/cache"

note "bad context arguments (exit 2), nothing published"
expect_rc 2 "${P[@]}" --model "$tmp/m.gguf" --context a --context-ids 1 "$tmp/doc.txt"
expect_err "give one of --context"
expect_rc 2 "${P[@]}" --model "$tmp/m.gguf" --system "x" "$tmp/doc.txt"
expect_err "--system goes with --chat"
expect_rc 2 "${P[@]}" --model "$tmp/m.gguf" --context-ids 1,99999 "$tmp/doc.txt"
expect_err "not a comma-separated list of token ids below 1024"
expect_rc 2 "${P[@]}" --model "$tmp/m.gguf" --context-ids "" "$tmp/doc.txt"
expect_err "not a comma-separated list"
expect_rc 2 "${P[@]}" --model "$tmp/m.gguf" --context-file "$tmp/nope.txt" "$tmp/doc.txt"
expect_err "cannot read it"
expect_rc 2 "${P[@]}" --model "$tmp/m.gguf" --chat "$tmp/doc.txt"
expect_err "--chat: the model's chat template is"
head -c 3000 /usr/share/common-licenses/GPL-3 >"$tmp/long.txt"
expect_rc 2 "${P[@]}" --model "$tmp/m.gguf" --context-file "$tmp/long.txt" "$tmp/doc.txt"
expect_err "do not fit the model's context of 512 tokens"
[ "$(sqlite3 "$tmp/st/index.db" 'SELECT count(*) FROM blobs')" = 4 ] || fail "a refused publish was indexed"
echo PASS
