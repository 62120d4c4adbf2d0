#!/usr/bin/env bash
# market_cli.sh: the marketplace without curl, through real processes on loopback: a publisher
# uploads with `kvpubd upload` (good credential: listed in the catalog; bad credential, foreign
# key, tampered and oversize blobs: documented exit codes); a buyer runs `kvfetch buy` (token kept
# 0600 in a 0700 config directory, never printed) and `kvfetch get ID --server` without --token;
# the stored token never reaches another origin (an nginx mirror logs the Authorization header);
# expired, unknown and missing tokens and a token file others may read give clear errors.
set -eu
. tests/cli/lib/fetch_env.sh
fetch_env_init market
export XDG_CONFIG_HOME="$tmp/cfg"
unset KVPUB_TOKEN KVPUB_TOKEN_ORIGIN KVPUB_CREDENTIAL
KVPUBD="$BUILD/kvpubd"

"$KVPUBD" keygen -o "$tmp/alice" >/dev/null
"$KVPUBD" keygen -o "$tmp/eve" >/dev/null
mkdir -p "$tmp/trust"; cp "$tmp/alice.pub" "$tmp/trust/"
"$KVPUBD" publisher add --store "$tmp/store" --key "$tmp/alice.pub" --name alice 2>/dev/null >"$tmp/cred"
chmod 600 "$tmp/cred"
"$BUILD/kvsynth" blob --key "$tmp/alice.key" -o "$tmp/priced.kvb" --tokens 64 --seed 1 --title "priced doc"
"$BUILD/kvsynth" blob --key "$tmp/alice.key" -o "$tmp/free.kvb" --tokens 64 --seed 2 --title "free doc"
"$BUILD/kvsynth" blob --key "$tmp/alice.key" -o "$tmp/big.kvb" --tokens 400 --layers 4 --kv-dim 128 --codec f16 --seed 3
"$BUILD/kvsynth" blob --key "$tmp/eve.key" -o "$tmp/eve.kvb" --seed 4
cp "$tmp/free.kvb" "$tmp/tampered.kvb"
size=$(stat -c %s "$tmp/tampered.kvb")
printf '\x55' | dd of="$tmp/tampered.kvb" bs=1 seek=$((size - 50)) conv=notrunc status=none
priced=$(sha256sum "$tmp/priced.kvb" | cut -d' ' -f1)
free=$(sha256sum "$tmp/free.kvb" | cut -d' ' -f1)

start_kvpubd "$tmp/store" --max-upload 200K
shop="https://127.0.0.1:$KVPUBD_PORT"
U=("$KVPUBD" upload --server "$shop" --cacert "$tmp/cert.pem")

note "upload with a good credential (file): published, then listed in the catalog"
expect_rc 0 "${U[@]}" --credential-file "$tmp/cred" --price 100 "$tmp/priced.kvb"
grep -qx "$priced published" "$tmp/out" || fail "upload output: $(cat "$tmp/out")"
grep -q "$(cut -d. -f2 "$tmp/cred")" "$tmp/out" "$tmp/err" && fail "the credential was echoed"
KVPUB_CREDENTIAL=$(cat "$tmp/cred") expect_rc 0 "${U[@]}" --json "$tmp/free.kvb"
[ "$(jq -r .status "$tmp/out")" = published ] && [ "$(jq -r .id "$tmp/out")" = "$free" ] || fail "json: $(cat "$tmp/out")"
note "the same blob again: exit 0, already listed"
expect_rc 0 "${U[@]}" --credential-file "$tmp/cred" "$tmp/free.kvb"
grep -qx "$free exists" "$tmp/out" || fail "re-upload output: $(cat "$tmp/out")"
curl -sf --cacert "$tmp/cert.pem" "$shop/v1/catalog" >"$tmp/catalog.json"
[ "$(jq -r --arg id "$priced" '.items[] | select(.id == $id) | .price' "$tmp/catalog.json")" = 100 ] ||
  fail "priced blob not listed at price 100: $(cat "$tmp/catalog.json")"
jq -e --arg id "$free" '.items[] | select(.id == $id)' "$tmp/catalog.json" >/dev/null || fail "free blob not listed"

note "upload refusals: documented exit codes, one line each"
expect_rc 4 "${U[@]}" --credential "$(cut -d. -f1 "$tmp/cred").$(printf '0%.0s' $(seq 64))" "$tmp/free.kvb"
expect_err "HTTP 401 bad_credential"
[ "$(wc -l <"$tmp/err")" = 1 ] || fail "not one line: $(cat "$tmp/err")"
expect_rc 2 "${U[@]}" "$tmp/free.kvb"
expect_err "no upload credential"
expect_rc 1 "${U[@]}" --credential-file "$tmp/cred" "$tmp/eve.kvb"
expect_err "HTTP 403 foreign_key"
expect_rc 1 "${U[@]}" --credential-file "$tmp/cred" "$tmp/tampered.kvb"
expect_err "HTTP 422 invalid_blob"
expect_rc 3 "${U[@]}" --credential-file "$tmp/cred" "$tmp/big.kvb"
expect_err "HTTP 413 payload_too_large"
expect_rc 2 "${U[@]}" --credential-file "$tmp/cred" "$tmp/no-such.kvb"

note "kvfetch buy: token kept 0600 in a 0700 directory, not printed"
expect_rc 0 "$KVFETCH" buy "$priced" --server "$shop" --cacert "$tmp/cert.pem" --buyer "test buyer"
grep -q "bought blob $priced from $shop" "$tmp/out" || fail "buy output: $(cat "$tmp/out")"
tf="$tmp/cfg/kvpub/tokens.json"
[ "$(stat -c %a "$tf")" = 600 ] || fail "token file mode $(stat -c %a "$tf")"
[ "$(stat -c %a "$tmp/cfg/kvpub")" = 700 ] || fail "config dir mode $(stat -c %a "$tmp/cfg/kvpub")"
tok=$(jq -r --arg id "$priced" '.tokens[] | select(.blob == $id) | .token' "$tf")
[ ${#tok} = 64 ] || fail "no token stored: $(cat "$tf")"
grep -q "$tok" "$tmp/out" "$tmp/err" && fail "buy printed the token"
[ "$(jq -r '.tokens[0].origin' "$tf")" = "$shop" ] || fail "origin not stored: $(cat "$tf")"
sqlite3 "$tmp/store/index.db" "select buyer from purchases" | grep -qx "test buyer" || fail "buyer not recorded"
expect_rc 0 "$KVFETCH" buy "$free" --server "$shop/" --cacert "$tmp/cert.pem" --json
[ "$(jq -r .blob "$tmp/out")" = "$free" ] && [ "$(jq -r .token "$tmp/out")" = null ] &&
  [ "$(jq -r .downloads "$tmp/out")" -ge 1 ] || fail "buy --json: $(cat "$tmp/out")"
[ "$(jq '.tokens | length' "$tf")" = 2 ] || fail "second purchase replaced the first: $(cat "$tf")"
[ "$(jq -r .token_file "$tmp/out")" = "$tf" ] || fail "buy --json token_file: $(cat "$tmp/out")"
note "buy --json with a token file whose path is not UTF-8 still prints its figures"
XDG_CONFIG_HOME="$tmp/"$'\xff'"cfg" expect_rc 0 "$KVFETCH" buy "$free" --server "$shop" --cacert "$tmp/cert.pem" --json
[ "$(jq -r .blob "$tmp/out")" = "$free" ] || fail "buy --json, non-UTF-8 token path: $(cat "$tmp/out")"
expect_rc 1 "$KVFETCH" buy "$(printf 'ab%.0s' $(seq 32))" --server "$shop" --cacert "$tmp/cert.pem"
expect_err "HTTP 404 not_found"
expect_rc 2 "$KVFETCH" buy nothex --server "$shop"

G=("$KVFETCH" get --trust "$tmp/trust" --cacert "$tmp/cert.pem" --retries 1 --quiet)
note "kvfetch get ID --server, no --token: the stored token is used"
expect_rc 0 "${G[@]}" --cache-dir "$tmp/c1" "$priced" --server "$shop"
[ "$(sha256sum "$(cat "$tmp/out")" | cut -d' ' -f1)" = "$priced" ] || fail "fetched file is not the blob"
grep -q "path=\"/v1/blobs/$priced\" endpoint=blob status=200" "$tmp/kvpubd.log" || fail "no paid download logged"

note "the stored token never goes to another origin"
mkdir -p "$tmp/www/v1/blobs"
cp "$tmp/priced.kvb" "$tmp/www/v1/blobs/$priced"
start_nginx "$tmp/www"
mirror="https://127.0.0.1:$NGINX_PORT"
expect_rc 0 "${G[@]}" --cache-dir "$tmp/c2" "$mirror/v1/blobs/$priced"
expect_rc 0 "${G[@]}" --cache-dir "$tmp/c3" "$priced" --server "$mirror"
n=$(grep -c "GET /v1/blobs/$priced " "$tmp/nginx/access.log")
[ "$n" = 2 ] || fail "mirror saw $n requests: $(cat "$tmp/nginx/access.log")"
grep "GET /v1/blobs/$priced " "$tmp/nginx/access.log" | grep -qv 'auth="-"' &&
  fail "the stored token reached the mirror: $(cat "$tmp/nginx/access.log")"
grep -q "$tok" "$tmp/nginx/access.log" && fail "token in the mirror's log"
note "the shop's own URL given directly: the stored token goes there"
expect_rc 0 "${G[@]}" --cache-dir "$tmp/c4" "$shop/v1/blobs/$priced"

note "an unknown (refused) stored token: exit 4 and how to buy"
jq --arg id "$priced" '(.tokens[] | select(.blob == $id) | .token) = ("0" * 64)' "$tf" >"$tf.new"
chmod 600 "$tf.new"; mv "$tf.new" "$tf"
expect_rc 4 "${G[@]}" --cache-dir "$tmp/c5" "$priced" --server "$shop"
expect_err "HTTP 401"
expect_err "refused the stored token.*kvfetch buy $priced --server $shop"
note "no stored token for a priced blob: exit 4 and how to buy"
jq '.tokens = []' "$tf" >"$tf.new"; chmod 600 "$tf.new"; mv "$tf.new" "$tf"
expect_rc 4 "${G[@]}" --cache-dir "$tmp/c5" "$priced" --server "$shop"
expect_err "no stored token.*kvfetch buy $priced --server $shop"

note "a token file others may read is refused, by get and by buy"
chmod 644 "$tf"
expect_rc 2 "${G[@]}" --cache-dir "$tmp/c5" "$priced" --server "$shop"
expect_err "readable by others.*chmod 600"
expect_rc 2 "$KVFETCH" buy "$priced" --server "$shop" --cacert "$tmp/cert.pem"
expect_err "readable by others"
chmod 600 "$tf"

note "an expired stored token: exit 4, says it expired and how to buy"
stop_kvpubd
start_kvpubd "$tmp/store" --token-ttl 1s
expect_rc 0 "$KVFETCH" buy "$priced" --server "$shop" --cacert "$tmp/cert.pem"
sleep 2.1
expect_rc 4 "${G[@]}" --cache-dir "$tmp/c6" "$priced" --server "$shop"
expect_err "HTTP 403"
expect_err "stored token \(purchase [0-9]+\) expired .*kvfetch buy $priced --server $shop"
echo "market_cli: all checks passed"
