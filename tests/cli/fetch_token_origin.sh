#!/usr/bin/env bash
# fetch_token_origin.sh: a priced-blob token goes only to the origin that sold it. Two nginx
# origins on loopback that log the Authorization header each request carried: the token reaches
# the --server origin (or the URL it was given with), never a mirror named by a URL, never the
# target of a redirect to another port, and a $KVPUB_TOKEN only --server / $KVPUB_TOKEN_ORIGIN.
set -eu
. tests/cli/lib/fetch_env.sh
fetch_env_init fetch-token

mkdir -p "$tmp/shop/v1/blobs" "$tmp/mirror" "$tmp/trust"
cp spec/vectors/test-key.pub "$tmp/trust/"
declare -A ID
for c in f16 q8 q4; do
  ID[$c]=$(sha256sum "spec/vectors/vec-$c.kvb" | cut -d' ' -f1)
done
cp spec/vectors/vec-f16.kvb "$tmp/shop/v1/blobs/${ID[f16]}"
cp spec/vectors/vec-q8.kvb "$tmp/mirror/${ID[q8]}"
cp spec/vectors/vec-q4.kvb "$tmp/mirror/${ID[q4]}"
# the "shop" (the origin that sells tokens) redirects one blob to the mirror, on another port
mirror_port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
NGINX_LOCATIONS="location = /v1/blobs/${ID[q4]} { return 302 https://127.0.0.1:$mirror_port/${ID[q4]}; }"
NGINX_SERVERS="server { listen 127.0.0.1:$mirror_port ssl; ssl_certificate $tmp/cert.pem;
  ssl_certificate_key $tmp/key.pem; root $tmp/mirror; }"
mk_cert "$tmp"
start_nginx "$tmp/shop"
shop="https://127.0.0.1:$NGINX_PORT"
mirror="https://127.0.0.1:$mirror_port"
TOK=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
log="$tmp/nginx/access.log"
G=("$KVFETCH" get --trust "$tmp/trust" --cacert "$tmp/cert.pem" --retries 1)
# auth_of PORT PATH: the Authorization value logged for the last request of PATH on PORT
auth_of() { grep "GET $2 " "$log" | grep "port=$1 " | tail -1 | sed 's/.*auth="\([^"]*\)".*/\1/'; }

note "--token with --server: sent to the shop"
expect_rc 0 "${G[@]}" --cache-dir "$tmp/c1" --server "$shop" --blob "${ID[f16]}" --token "$TOK"
[ "$(auth_of "$NGINX_PORT" "/v1/blobs/${ID[f16]}")" = "Bearer $TOK" ] || fail "shop did not get the token: $(cat "$log")"

note "--token with --server, redirected to another port: the mirror never sees it"
expect_rc 0 "${G[@]}" --cache-dir "$tmp/c2" --server "$shop" --blob "${ID[q4]}" --token "$TOK"
[ "$(auth_of "$NGINX_PORT" "/v1/blobs/${ID[q4]}")" = "Bearer $TOK" ] || fail "redirect: shop request lacks the token"
[ "$(auth_of "$mirror_port" "/${ID[q4]}")" = "-" ] || fail "redirect leaked the token to the mirror: $(cat "$log")"

note "\$KVPUB_TOKEN and a mirror URL: not sent"
KVPUB_TOKEN=$TOK expect_rc 0 "${G[@]}" --cache-dir "$tmp/c3" "$mirror/${ID[q8]}"
[ "$(auth_of "$mirror_port" "/${ID[q8]}")" = "-" ] || fail "KVPUB_TOKEN sent to a mirror: $(cat "$log")"
note "\$KVPUB_TOKEN bound to the shop by \$KVPUB_TOKEN_ORIGIN, mirror URL: not sent"
KVPUB_TOKEN=$TOK KVPUB_TOKEN_ORIGIN="$shop/" expect_rc 0 "${G[@]}" --cache-dir "$tmp/c4" "$mirror/${ID[q8]}"
[ "$(auth_of "$mirror_port" "/${ID[q8]}")" = "-" ] || fail "KVPUB_TOKEN_ORIGIN ignored: $(cat "$log")"
note "\$KVPUB_TOKEN with --server: sent to the shop"
KVPUB_TOKEN=$TOK expect_rc 0 "${G[@]}" --cache-dir "$tmp/c5" --server "$shop" --blob "${ID[f16]}"
[ "$(auth_of "$NGINX_PORT" "/v1/blobs/${ID[f16]}")" = "Bearer $TOK" ] || fail "KVPUB_TOKEN with --server not sent"
note "--token-origin names the shop, URL on the mirror: not sent"
expect_rc 0 "${G[@]}" --cache-dir "$tmp/c6" --token "$TOK" --token-origin "$shop" "$mirror/${ID[q8]}"
[ "$(auth_of "$mirror_port" "/${ID[q8]}")" = "-" ] || fail "--token-origin ignored: $(cat "$log")"
note "--token given with the URL itself: that URL's origin gets it"
expect_rc 0 "${G[@]}" --cache-dir "$tmp/c7" --token "$TOK" "$mirror/${ID[q8]}"
[ "$(auth_of "$mirror_port" "/${ID[q8]}")" = "Bearer $TOK" ] || fail "--token with its URL not sent: $(cat "$log")"
note "a bad --token-origin is a usage error"
expect_rc 2 "${G[@]}" --token "$TOK" --token-origin "ftp://x" "$mirror/${ID[q8]}"
expect_err "token-origin"
echo "fetch_token_origin: all checks passed"
