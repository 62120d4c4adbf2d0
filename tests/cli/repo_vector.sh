#!/usr/bin/env bash
# repo_vector.sh: the snapshot test vector of spec/repository.md: kvpubd re-creates
# spec/vectors/snapshot-v1.json byte for byte, openssl verifies its signature over the decoded
# payload, and kvfetch accepts it while current, refuses it expired (6) and tampered (1).
set -eu
. tests/cli/lib/fetch_env.sh
fetch_env_init repo-vector
V=spec/vectors/snapshot-v1.json
mkdir -p "$tmp/trust"
cp spec/vectors/test-key.pub "$tmp/trust/"
install -m 600 spec/vectors/test-key.key "$tmp/k.key"
export KVPUB_CACHE_DIR="$tmp/cache"

note "kvpubd snapshot re-creates the vector"
expect_rc 0 "$BUILD/kvpubd" snapshot --store "$tmp/s" --key "$tmp/k.key" --now 1700000000 --expires 1d -o "$tmp/v.json"
cmp -s "$tmp/v.json" "$V" || fail "snapshot differs from $V: $(cat "$tmp/v.json")"

note "openssl verifies the signature over the decoded payload"
jq -r .payload "$V" | base64 -d >"$tmp/payload"
jq -r '.signatures[0].sig' "$V" | xxd -r -p >"$tmp/sig"
openssl pkeyutl -verify -pubin -inkey spec/vectors/test-key.pub -rawin -in "$tmp/payload" -sigfile "$tmp/sig" \
  >/dev/null || fail "openssl does not verify the vector"

note "kvfetch: current ok, expired 6, tampered 1"
expect_rc 0 "$KVFETCH" search --snapshot "$V" --trust "$tmp/trust" --now 1700000001
expect_rc 6 "$KVFETCH" search --snapshot "$V" --trust "$tmp/trust" --now 1700086400
expect_err "expired at 2023-11-15T22:13:20Z"
sed 's/"version":1}/"version":9}/' "$tmp/payload" | base64 -w0 >"$tmp/p64"
jq --rawfile p "$tmp/p64" '.payload = $p' "$V" >"$tmp/tampered.json"
expect_rc 1 "$KVFETCH" search --snapshot "$tmp/tampered.json" --trust "$tmp/trust" --now 1700000001
expect_err "bad signature"
echo "all checks passed"
