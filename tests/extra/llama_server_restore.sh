#!/usr/bin/env bash
# llama_server_restore.sh (make test-llama-server; not part of make test, as it builds llama-server
# first): the README's "Using a kvpub cache with llama.cpp" steps against the pinned llama.cpp's own
# llama-server (scripts/llama-server.sh). For stories260K and a synthetic qwen3 (f16), with flash
# attention as the server defaults it (the README's command) and off (export --v-trans):
#   - kvpubd publishes a document, kvfetch export --llama-state writes it into --slot-save-path,
#     POST /slots/0?action=restore restores exactly its tokens (n_restored = [BOS, document]);
#   - a completion after the restore evaluates only the new tokens (timings.cache_n = the
#     restored count, prompt_n = the query's), both for the README's text prompt and for the
#     same token ids; its greedy tokens equal a full prefill's on a fresh slot (cache_prompt
#     false) up to the first near-tie (top-2 log-probabilities closer than $TIE), and kvfetch
#     run's on the same blob likewise;
#   - the text: the server's own greedy tokens, through `kvfetch tokenize --detokenize`, give
#     exactly its "content", and kvfetch run prints that content where its tokens are the same;
#   - a tampered blob never reaches the server: export refuses it (exit 1), writes nothing, and a
#     restore of that name is an error.
# The server always runs on 127.0.0.1 on a port it picks, one slot, and is killed on exit.
set -eu
SHARED=${KVPUB_SHARED:-../shared}
BUILD=${BUILD:-build}
KVFETCH=${KVFETCH:-$BUILD/kvfetch}
TIE=${TIE:-0.05}
QUERY=" What does this say?"

# LLAMA_SERVER=path runs that server instead (it must be the pinned release: the state layout)
server=${LLAMA_SERVER:-$(BUILD=$BUILD scripts/llama-server.sh)} || { echo "FAIL: building llama-server"; exit 1; }
case $server in SKIP:*) echo "$server"; exit 0 ;; esac

tmp=$(mktemp -d /tmp/kvpub-llama-server-XXXXXX)
srv_pid=""
stop_llama() {
  [ -z "$srv_pid" ] && return 0
  kill -KILL "$srv_pid" 2>/dev/null || true
  wait "$srv_pid" 2>/dev/null || true
  srv_pid=""
}
cleanup() {
  local rc=$?
  stop_llama
  [ "$rc" -ne 0 ] && [ -f "$tmp/srv.log" ] && { echo "--- llama-server log (last 20 lines) ---"; tail -n 20 "$tmp/srv.log"; }
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "FAIL: $*"; exit 1; }

# start_llama MODEL [options]: llama-server on a free loopback port (it binds port 0 and logs the
# address once the model is loaded); sets $url
start_llama() {
  local m=$1; shift
  "$server" -m "$m" --host 127.0.0.1 --port 0 --slot-save-path "$tmp/slots" -np 1 -c 1024 -t 2 "$@" \
    >"$tmp/srv.log" 2>&1 &
  srv_pid=$!
  local port="" _
  for _ in $(seq 1 300); do
    port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$tmp/srv.log" | head -1)
    [ -n "$port" ] && break
    kill -0 "$srv_pid" 2>/dev/null || fail "llama-server exited: $(tail -n 5 "$tmp/srv.log")"
    sleep 0.1
  done
  [ -n "$port" ] || fail "llama-server did not listen within 30 s"
  url="http://127.0.0.1:$port"
}
# post PATH JSON OUT: the README's curl calls, bounded; fails on an HTTP error
post() { curl -sS --fail-with-body --max-time 120 -X POST "$url$1" -d "$2" >"$3" || fail "POST $1: $(cat "$3")"; }
restore() {
  post "/slots/0?action=restore" '{"filename": "doc.state"}' "$tmp/restore.json"
  local n; n=$(jq .n_restored "$tmp/restore.json")
  [ "$n" = "$ntok" ] || fail "$what: restored $n tokens, exported $ntok"
}
# completion OUT JSON-FIELDS: greedy, 8 tokens, their ids and top-2 log-probabilities
completion() {
  post /completion "{\"id_slot\": 0, \"n_predict\": 8, \"temperature\": 0, \"n_probs\": 2, \"return_tokens\": true, $2}" "$1"
}
# expect_eval OUT CACHED EVALUATED: what the server reused and what it computed for the prompt
expect_eval() {
  local got; got=$(jq -r '"\(.timings.cache_n) \(.timings.prompt_n)"' "$1")
  [ "$got" = "$2 $3" ] || fail "$what: $1: cache_n prompt_n = $got, want $2 $3"
}
# same_greedy TOKENS REFERENCE.json: the tokens equal the reference's up to its first near-tie
same_greedy() {
  local r
  r=$(jq -rn --argjson a "$1" --slurpfile f "$2" --argjson tie "$TIE" '
    $f[0].tokens as $b | $f[0].completion_probabilities as $p |
    ([range(0; $b | length) | select($a[.] != $b[.])] | first) as $i |
    if ($a | length) != ($b | length) and $i == null then "differ: lengths \($a | length), \($b | length)"
    elif $i == null then "equal"
    else ($p[$i].top_logprobs[0].logprob - $p[$i].top_logprobs[1].logprob) as $gap |
      if $gap < $tie then "equal up to a near-tie at \($i) (log-prob gap \($gap))"
      else "differ at \($i) (log-prob gap \($gap))" end end')
  case $r in differ*) echo "FAIL: $what: $1 vs $(jq -c .tokens "$2"): $r" >&2; return 1 ;; esac
  echo "$r"
}

mkdir -p "$tmp/trust" "$tmp/slots"
"$BUILD/kvpubd" keygen -o "$tmp/pub" >/dev/null
cp "$tmp/pub.pub" "$tmp/trust/"
head -c 400 /usr/share/common-licenses/Apache-2.0 | tail -c 300 >"$tmp/doc.txt"

for m in "$SHARED/models/stories260K.gguf" "$SHARED/models/synth/synth-qwen3-tiny-f16.gguf"; do
  [ -f "$m" ] || fail "$m missing (set KVPUB_SHARED)"
  rm -rf "$tmp/store"
  "$BUILD/kvpubd" publish --store "$tmp/store" --model "$m" --key "$tmp/pub.key" --threads 2 "$tmp/doc.txt" \
    >/dev/null || fail "$m: publish"
  blob=$(find "$tmp/store/blobs" -type f)
  doc=$("$KVFETCH" tokenize --model "$m" --no-special <"$tmp/doc.txt" | tr ' ' ,)   # with BOS
  query=$("$KVFETCH" tokenize --model "$m" --no-bos "$QUERY" | tr ' ' ,)
  ntok=$(echo "$doc" | tr , '\n' | wc -l); nq=$(echo "$query" | tr , '\n' | wc -l)
  text=$(jq -Rs --arg q "$QUERY" '. + $q' "$tmp/doc.txt")   # the README's "<document text> question"
  "$KVFETCH" run --model "$m" --blob "$blob" --trust "$tmp/trust" --threads 2 --prompt "$QUERY" -n 8 --json \
    --quiet >"$tmp/run.json" || fail "$m: kvfetch run"
  for fa in default off; do
    what="$(basename "$m" .gguf), flash attention $fa"
    vt=(); fa_opt=()
    [ "$fa" = off ] && { vt=(--v-trans); fa_opt=(-fa off); }
    rm -f "$tmp/slots/doc.state"
    "$KVFETCH" export --model "$m" --blob "$blob" --trust "$tmp/trust" --threads 2 --quiet \
      --llama-state "$tmp/slots/doc.state" "${vt[@]}" || fail "$what: export"
    start_llama "$m" "${fa_opt[@]}"

    # the README's text prompt (its query may tokenize otherwise after the document than alone),
    # then the same token ids kvfetch tokenized; each after a restore, then on a fresh slot
    restore
    completion "$tmp/text.json" "\"cache_prompt\": true, \"prompt\": $text"
    ntext=$(jq .tokens_evaluated "$tmp/text.json")
    expect_eval "$tmp/text.json" "$ntok" $((ntext - ntok))
    completion "$tmp/text-fresh.json" "\"cache_prompt\": false, \"prompt\": $text"
    expect_eval "$tmp/text-fresh.json" 0 "$ntext"
    restore
    completion "$tmp/ids.json" "\"cache_prompt\": true, \"prompt\": [$doc,$query]"
    expect_eval "$tmp/ids.json" "$ntok" "$nq"
    completion "$tmp/fresh.json" "\"cache_prompt\": false, \"prompt\": [$doc,$query]"
    expect_eval "$tmp/fresh.json" 0 $((ntok + nq))
    stop_llama

    text_tokens=$(jq -c .tokens "$tmp/text.json"); ids=$(jq -c .tokens "$tmp/ids.json")
    vs_text=$(same_greedy "$text_tokens" "$tmp/text-fresh.json")
    vs_ids=$(same_greedy "$ids" "$tmp/fresh.json")
    vs_run=$(same_greedy "$(jq -c .token_ids "$tmp/run.json")" "$tmp/fresh.json")
    jq -j .content "$tmp/fresh.json" >"$tmp/content"
    "$KVFETCH" tokenize --model "$m" --detokenize "$(jq -r '.tokens | map(tostring) | join(",")' "$tmp/fresh.json")" \
      >"$tmp/detok" || fail "$what: detokenize the server's tokens"
    cmp -s "$tmp/content" "$tmp/detok" ||
      fail "$what: the server's tokens detokenize to [$(cat "$tmp/detok")], its content is [$(cat "$tmp/content")]"
    if [ "$vs_run" = equal ]; then
      jq -j .text "$tmp/run.json" >"$tmp/run.text"
      cmp -s "$tmp/content" "$tmp/run.text" ||
        fail "$what: kvfetch run printed [$(cat "$tmp/run.text")], the server [$(cat "$tmp/content")]"
    fi
    echo "ok: $what: restored $ntok tokens, then evaluated only the new ones ($((ntext - ntok)) text, $nq ids)"
    echo "    text prompt $text_tokens vs a full prefill: $vs_text"
    echo "    token ids $ids vs a full prefill: $vs_ids; kvfetch run's tokens: $vs_run"
    echo "    text: the server's content $(jq -c .content "$tmp/fresh.json") detokenizes alike$([ "$vs_run" = equal ] &&
      echo ", and kvfetch run prints it")"
  done
done

# a tampered blob: refused by export with kvfetch run's exit code, so no file for the server
m="$SHARED/models/synth/synth-qwen3-tiny-f16.gguf"
what="tampered blob"
size=$(stat -c %s "$blob")
cp "$blob" "$tmp/tampered.kvb"
printf '\x55' | dd of="$tmp/tampered.kvb" bs=1 seek=$((size - 100)) conv=notrunc status=none
rm -f "$tmp/slots/doc.state"
rc=0
"$KVFETCH" export --model "$m" --blob "$tmp/tampered.kvb" --trust "$tmp/trust" --quiet \
  --llama-state "$tmp/slots/doc.state" 2>"$tmp/err" || rc=$?
[ "$rc" -eq 1 ] || fail "export of a tampered blob: exit $rc, want 1: $(cat "$tmp/err")"
[ -z "$(ls -A "$tmp/slots")" ] || fail "a refused export left $(ls "$tmp/slots") in the slot directory"
start_llama "$m"
code=$(curl -sS --max-time 60 -o "$tmp/restore.json" -w '%{http_code}' -X POST \
  "$url/slots/0?action=restore" -d '{"filename": "doc.state"}')
[ "$code" = 400 ] || fail "restore with no exported file: HTTP $code: $(cat "$tmp/restore.json")"
echo "ok: a tampered blob is refused by export (exit 1), nothing reaches llama-server (restore: HTTP $code)"
