#!/usr/bin/env bash
# publish_cli.sh: kvpubd publish on a tiny synthetic model: --json summary, idempotence
# (skipped), a too-long document refused with exit 2 before the store is touched, usage
# errors, and the published blob served and verified again by an upload to a second store.
source "$(dirname "$0")/lib_serve.bash"
make_cert
"$BUILD/kvsynth" --arch llama --layers 2 --dim 64 --heads 4 --kv-heads 2 --ffn 128 --vocab 512 --ctx 96 \
  --seed 1 -o "$T/m.gguf" >/dev/null
"$KVPUBD" keygen -o "$T/pub" >/dev/null
printf 'A small document about precomputed caches.\nIt has two lines.\n' > "$T/doc1.txt"
printf 'Another document, different text.\n' > "$T/doc2.md"
head -c 2000 "$KVPUB_ROOT/docs/design.md" > "$T/long.txt"

pub() { "$KVPUBD" publish --store "$T/store" --model "$T/m.gguf" --key "$T/pub.key" "$@"; }

# too long: exit 2, a message naming both lengths, and no store created
rc=0; pub "$T/doc1.txt" "$T/long.txt" 2>"$T/err" >/dev/null || rc=$?
[ $rc = 2 ] || fail "too-long document exit status $rc"
grep -Eq "long.txt: document is [0-9]+ tokens, but the model's context is 96 tokens \(95 after BOS\)" "$T/err" \
  && ok "too-long message: $(cat "$T/err")" || fail "too-long message: $(cat "$T/err")"
[ ! -e "$T/store" ] && ok "store untouched" || fail "the store was created by a refused run"

rc=0; pub 2>/dev/null || rc=$?; [ $rc = 2 ] || fail "no FILE: exit 2"
rc=0; pub --codec zip "$T/doc1.txt" 2>/dev/null || rc=$?; [ $rc = 2 ] || fail "bad codec: exit 2"
rc=0; pub --expires soon "$T/doc1.txt" 2>/dev/null || rc=$?; [ $rc = 2 ] || fail "bad --expires: exit 2"
# an expiry that would wrap around (and sign a blob expired at birth) or a price past int64
rc=0; pub --expires 18446744073709550616 "$T/doc1.txt" 2>/dev/null || rc=$?; [ $rc = 2 ] || fail "huge --expires: $rc"
rc=0; pub --expires 40000d "$T/doc1.txt" 2>/dev/null || rc=$?; [ $rc = 2 ] || fail "--expires past 100 years: $rc"
rc=0; pub --price 9223372036854775808 "$T/doc1.txt" 2>/dev/null || rc=$?; [ $rc = 2 ] || fail "--price past int64: $rc"
[ ! -e "$T/store" ] || fail "a refused option created the store"
rc=0; pub --title T "$T/doc1.txt" "$T/doc2.md" 2>/dev/null || rc=$?; [ $rc = 2 ] || fail "--title with 2 files"
rc=0; pub --source-uri https://x/ "$T/doc1.txt" "$T/doc2.md" 2>/dev/null || rc=$?; [ $rc = 2 ] || fail "--source-uri with 2 files"
"$KVPUBD" publish --store "$T/store-uri" --model "$T/m.gguf" --key "$T/pub.key" --json \
  --source-uri https://example.org/doc1 --media-type text/html --title "Doc one" "$T/doc1.txt" >"$T/uri.json" \
  || fail "publish --source-uri"
UID1=$(jq -r '.documents[0].id' "$T/uri.json")
"${BUILD:-build}/kvfetch" inspect --json "$(find "$T/store-uri/blobs" -name "$UID1")" >"$T/uri.inspect" || fail "inspect"
[ "$(jq -r .manifest.document.source_uri "$T/uri.inspect")" = https://example.org/doc1 ] &&
  [ "$(jq -r .manifest.document.media_type "$T/uri.inspect")" = text/html ] &&
  [ "$(jq -r .manifest.document.title "$T/uri.inspect")" = "Doc one" ] \
  || fail "--source-uri/--media-type: $(jq -c .manifest.document "$T/uri.inspect")"
# titles are manifest strings (UTF-8, at most 4096 bytes): one of 600 bytes of "é" is kept
# whole (it was cut at 511 bytes, inside a character); 4097 bytes, or a file name that is not
# UTF-8 without --title, are refused before the prefill; with --title, --json names such a
# file null
long=$(printf 'é%.0s' $(seq 300))
"$KVPUBD" publish --store "$T/store-uri" --model "$T/m.gguf" --key "$T/pub.key" --json --codec q8 \
  --title "$long" "$T/doc1.txt" >"$T/long.json" || fail "publish a 600-byte title"
LID=$(jq -r '.documents[0].id' "$T/long.json")
"${BUILD:-build}/kvfetch" inspect --json "$(find "$T/store-uri/blobs" -name "$LID")" >"$T/long.inspect" || fail "inspect"
[ "$(jq -r .manifest.document.title "$T/long.inspect")" = "$long" ] || fail "the 600-byte title was not kept whole"
rc=0; "$KVPUBD" publish --store "$T/store-uri" --model "$T/m.gguf" --key "$T/pub.key" --codec q4 \
  --title "$(printf 'a%.0s' $(seq 4097))" "$T/doc1.txt" 2>"$T/err" >/dev/null || rc=$?
[ $rc = 2 ] && grep -q "title is too long" "$T/err" || fail "a 4097-byte title: rc=$rc $(cat "$T/err")"
cp "$T/doc1.txt" "$T/d$(printf '\xff').txt"
rc=0; "$KVPUBD" publish --store "$T/store-uri" --model "$T/m.gguf" --key "$T/pub.key" --codec q4 \
  "$T/d$(printf '\xff').txt" 2>"$T/err" >/dev/null || rc=$?
[ $rc = 2 ] && grep -q "is not UTF-8" "$T/err" || fail "a non-UTF-8 file name as title: rc=$rc $(cat "$T/err")"
"$KVPUBD" publish --store "$T/store-uri" --model "$T/m.gguf" --key "$T/pub.key" --codec q4 --json --title T \
  "$T/d$(printf '\xff').txt" >"$T/ff.json" || fail "publish a non-UTF-8 file name with --title"
[ "$(jq -c '[.documents[0].file, .documents[0].status]' "$T/ff.json")" = '[null,"published"]' ] \
  || fail "--json row of a non-UTF-8 file name: $(cat "$T/ff.json")"

pub --json --expires 30d --price 7 "$T/doc1.txt" "$T/doc2.md" > "$T/out.json"
jq -e '.documents | length == 2' "$T/out.json" >/dev/null || fail "--json: two documents: $(cat "$T/out.json")"
jq -e '[.documents[].status] == ["published","published"]' "$T/out.json" >/dev/null || fail "--json statuses"
[ "$(jq -r '.documents[0].sha256' "$T/out.json")" = "$(sha256sum "$T/doc1.txt" | cut -d' ' -f1)" ] || fail "sha256"
jq -e '.documents[0].tokens > 5 and .documents[0].bytes > 100 and .documents[0].seconds >= 0' "$T/out.json" >/dev/null \
  || fail "--json tokens/bytes/seconds"
ID1=$(jq -r '.documents[0].id' "$T/out.json")
[ "$(sqlite3 "$T/store/index.db" 'select count(*) from blobs')" = 2 ] || fail "two rows"
# the encoded chunks waited in unnamed temporary files under the store's tmp/: nothing stays
[ -z "$(ls -A "$T/store/tmp")" ] && ok "store tmp/ empty after publishing" || fail "left in tmp/: $(ls -A "$T/store/tmp")"

pub --json "$T/doc1.txt" > "$T/again.json"
[ "$(jq -r '.documents[0].status' "$T/again.json")" = skipped ] && [ "$(jq -r '.documents[0].id' "$T/again.json")" = "$ID1" ] \
  && ok "republish skipped" || fail "republish: $(cat "$T/again.json")"
pub --codec q8 "$T/doc1.txt" | grep -q '^published ' || fail "another codec is another blob"
[ "$(sqlite3 "$T/store/index.db" 'select count(*) from blobs')" = 3 ] || fail "three rows"
# an expired listing is no reason to skip: publishing it again replaces it (file and row)
pub --json --codec q4 --expires 1s "$T/doc2.md" >"$T/q4.json"
OLDQ4=$(jq -r '.documents[0].id' "$T/q4.json")
sleep 2
pub --json --codec q4 --expires 1d "$T/doc2.md" >"$T/q4b.json"
NEWQ4=$(jq -r '.documents[0].id' "$T/q4b.json")
[ "$(jq -r '.documents[0].status' "$T/q4b.json")" = published ] && [ "$NEWQ4" != "$OLDQ4" ] \
  && ok "an expired listing is published again" || fail "republish after expiry: $(cat "$T/q4b.json")"
[ "$(sqlite3 "$T/store/index.db" "select count(*) from blobs where codec = 'q4'")" = 1 ] || fail "the expired q4 row stayed"
[ ! -e "$T/store/blobs/${OLDQ4:0:2}/$OLDQ4" ] || fail "the expired q4 file stayed"

# served: catalog fields from the manifest, and the blob passes the upload verification
start_server "$T/store"
expect 200 GET "/v1/catalog?doc=$(sha256sum "$T/doc1.txt" | cut -d' ' -f1)&limit=10"
[ "$(json .total)" = 2 ] || fail "two codecs of doc1"
expect 200 GET "/v1/blobs/$ID1/manifest"
jq -e '.' "$T/body" >/dev/null || fail "manifest JSON"
grep -q '"pos0":1' "$T/body" || fail "pos0 = 1 after BOS"
grep -q 'doc1.txt' "$T/body" || fail "title"
# the publisher's local path is never published unless a URI is given
! grep -q "file://\|$T" "$T/body" || fail "the manifest carries a local path: $(cat "$T/body")"
[ "$(jq -r .document.source_uri "$T/body")" = "" ] || fail "source_uri without --source-uri"
expect 401 GET "/v1/blobs/$ID1"      # --price 7
stop_server || fail "clean stop"
cp "$T/store/blobs/${ID1:0:2}/$ID1" "$T/pub1.kvb" 2>/dev/null || find "$T/store/blobs" -name "$ID1*" -exec cp {} "$T/pub1.kvb" \;
CRED=$("$KVPUBD" publisher add --store "$T/store2" --key "$T/pub.pub" --name me 2>/dev/null)
start_server "$T/store2"
expect 201 PUT /v1/blobs -H "Authorization: Bearer $CRED" --data-binary @"$T/pub1.kvb"
[ "$(json .id)" = "$ID1" ] || fail "same id in the second store"
stop_server || fail "clean stop"

# listings belong to publishers: another key's doc1 is a listing of its own, not "skipped";
# once that key is revoked it cannot publish into the store any more
KB=$("$KVPUBD" keygen -o "$T/pubB" 2>/dev/null)
pubB() { "$KVPUBD" publish --store "$T/store" --model "$T/m.gguf" --key "$T/pubB.key" "$@"; }
pubB --json "$T/doc1.txt" > "$T/b.json"
[ "$(jq -r '.documents[0].status' "$T/b.json")" = published ] && [ "$(jq -r '.documents[0].id' "$T/b.json")" != "$ID1" ] \
  && ok "second publisher's doc1 published as its own listing" || fail "second publisher: $(cat "$T/b.json")"
"$KVPUBD" publisher revoke --store "$T/store" --key-id "$KB" 2>/dev/null || fail "revoke exit status"
rc=0; pubB "$T/doc2.md" >/dev/null 2>"$T/err" || rc=$?
[ $rc = 2 ] && grep -q "revoked" "$T/err" && ok "revoked key cannot publish: $(cat "$T/err")" \
  || fail "revoked key publish: exit $rc: $(cat "$T/err")"

# default chunk size: the largest power of two (16..4096 tokens) whose decoded chunk fits
# 16 MiB, worked out here from the model's shape: this tiny model's 256-byte tokens reach the
# 4096 cap; one with 4 layers and kv_dim 2048 (32 KiB a token) gets 512; --chunk-tokens wins
chunks_of() {  # STORE ID -> "chunk_tokens n_chunks"
  "${BUILD:-build}/kvfetch" inspect --json "$(find "$1/blobs" -name "$2")" | jq -r '"\(.manifest.chunk_tokens) \(.manifest.chunks | length)"'
}
[ "$(chunks_of "$T/store" "$ID1")" = "4096 1" ] && ok "small KV per token: 4096-token chunks" \
  || fail "default chunks, tiny model: $(chunks_of "$T/store" "$ID1")"
"$BUILD/kvsynth" --arch llama --layers 4 --dim 64 --heads 4 --kv-heads 4 --head-dim 512 --ffn 128 --vocab 512 \
  --ctx 1024 --seed 1 -o "$T/wide.gguf" >/dev/null
head -c 1000 "$KVPUB_ROOT/docs/design.md" > "$T/wide.txt"
per=$((4 * 2 * 4 * 512 * 2)); want=4096
while [ $want -gt 16 ] && [ $((want * per)) -gt $((16 << 20)) ]; do want=$((want / 2)); done
[ $want = 512 ] || fail "test arithmetic: $want"
"$KVPUBD" publish --store "$T/wide" --model "$T/wide.gguf" --key "$T/pub.key" --json "$T/wide.txt" >"$T/wide.json" \
  || fail "publish on the wide model"
n=$(jq -r '.documents[0].tokens' "$T/wide.json")
[ "$n" -gt 512 ] || fail "the document should span two chunks: $n tokens"
[ "$(chunks_of "$T/wide" "$(jq -r '.documents[0].id' "$T/wide.json")")" = "512 $(( (n + 511) / 512 ))" ] \
  && ok "32 KiB per token: 512-token chunks ($n tokens)" \
  || fail "default chunks, wide model: $(chunks_of "$T/wide" "$(jq -r '.documents[0].id' "$T/wide.json")")"
"$KVPUBD" publish --store "$T/wide" --model "$T/wide.gguf" --key "$T/pub.key" --chunk-tokens 100 --codec f16 --json \
  "$T/wide.txt" >"$T/wide100.json" || fail "publish --chunk-tokens 100"
[ "$(chunks_of "$T/wide" "$(jq -r '.documents[0].id' "$T/wide100.json")")" = "100 $(( (n + 99) / 100 ))" ] \
  && ok "--chunk-tokens overrides the default" || fail "--chunk-tokens 100"
done_tests
