#!/usr/bin/env bash
# keygen.sh: `kvpubd keygen` end to end: exit codes, file modes, files readable by the openssl
# CLI, key id equal to the one the openssl CLI computes, refusal to overwrite, --help.
set -eu
BUILD=${BUILD:-build}
KVPUBD="$BUILD/kvpubd"
tmp=$(mktemp -d /tmp/kvpub-cli-keygen-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
mode_of() { stat -c %a "$1"; }

# --help: usage on stdout, exit 0
out=$("$KVPUBD" keygen --help)
case "$out" in *"usage: kvpubd keygen"*) ;; *) fail "--help did not print usage: $out";; esac
"$KVPUBD" --help | grep -q keygen || fail "kvpubd --help does not list keygen"

# usage errors: exit 2, one line on stderr, nothing on stdout
set +e
"$KVPUBD" keygen >"$tmp/o" 2>"$tmp/e"; rc=$?
set -e
[ "$rc" -eq 2 ] || fail "no -o: exit $rc, want 2"
[ ! -s "$tmp/o" ] || fail "no -o: wrote to stdout"
[ "$(wc -l <"$tmp/e")" -eq 1 ] || fail "no -o: stderr is not one line: $(cat "$tmp/e")"
set +e
"$KVPUBD" keygen --bogus -o "$tmp/x" >/dev/null 2>"$tmp/e"; rc=$?
set -e
[ "$rc" -eq 2 ] || fail "unknown option: exit $rc, want 2"
grep -q -- "--bogus" "$tmp/e" || fail "unknown option not named: $(cat "$tmp/e")"
[ ! -e "$tmp/x.key" ] || fail "usage error still wrote a key"

# a key pair
id=$("$KVPUBD" keygen -o "$tmp/pub1")
[[ "$id" =~ ^[0-9a-f]{16}$ ]] || fail "key id is not 16 hex digits: '$id'"
[ "$(mode_of "$tmp/pub1.key")" = 600 ] || fail "private key mode $(mode_of "$tmp/pub1.key"), want 600"
[ "$(mode_of "$tmp/pub1.pub")" = 644 ] || fail "public key mode $(mode_of "$tmp/pub1.pub"), want 644"

# openssl reads both, and agrees they are the same Ed25519 key
openssl pkey -in "$tmp/pub1.key" -noout || fail "openssl pkey rejects the private key"
openssl pkey -pubin -in "$tmp/pub1.pub" -noout || fail "openssl pkey rejects the public key"
openssl pkey -in "$tmp/pub1.key" -text -noout | grep -q "ED25519 Private-Key" || fail "not an Ed25519 key"
cmp <(openssl pkey -in "$tmp/pub1.key" -pubout) "$tmp/pub1.pub" || fail ".pub is not the public half of .key"

# key id = first 16 hex of sha256(raw 32-byte public key), computed by the openssl CLI
want=$(openssl pkey -pubin -in "$tmp/pub1.pub" -outform DER | tail -c 32 | sha256sum | cut -c1-16)
[ "$id" = "$want" ] || fail "key id $id, openssl computes $want"

# a signature made with the key verifies with openssl
printf 'kvpub' >"$tmp/msg"
openssl pkeyutl -sign -rawin -inkey "$tmp/pub1.key" -in "$tmp/msg" -out "$tmp/sig"
openssl pkeyutl -verify -rawin -pubin -inkey "$tmp/pub1.pub" -in "$tmp/msg" -sigfile "$tmp/sig" >/dev/null \
  || fail "openssl signature does not verify"

# refusing to overwrite: exit 1, files unchanged
before=$(sha256sum "$tmp/pub1.key" "$tmp/pub1.pub")
set +e
"$KVPUBD" keygen -o "$tmp/pub1" >"$tmp/o" 2>"$tmp/e"; rc=$?
set -e
[ "$rc" -eq 1 ] || fail "overwrite: exit $rc, want 1"
[ ! -s "$tmp/o" ] || fail "overwrite: wrote to stdout"
grep -q "already exists" "$tmp/e" || fail "overwrite: unclear error: $(cat "$tmp/e")"
[ "$(sha256sum "$tmp/pub1.key" "$tmp/pub1.pub")" = "$before" ] || fail "overwrite changed the files"

# --json
json=$("$KVPUBD" keygen -o "$tmp/pub2" --json)
id2=$(openssl pkey -pubin -in "$tmp/pub2.pub" -outform DER | tail -c 32 | sha256sum | cut -c1-16)
want_json="{\"key_id\":\"$id2\",\"private\":\"$tmp/pub2.key\",\"public\":\"$tmp/pub2.pub\"}"
[ "$json" = "$want_json" ] || fail "--json printed $json, want $want_json"
[ "$id2" != "$id" ] || fail "two keygens gave the same key"

# I/O error: directory does not exist -> exit 2
set +e
"$KVPUBD" keygen -o "$tmp/no/such/dir/k" >/dev/null 2>"$tmp/e"; rc=$?
set -e
[ "$rc" -eq 2 ] || fail "missing directory: exit $rc, want 2"
grep -q "no/such/dir" "$tmp/e" || fail "missing directory not named: $(cat "$tmp/e")"

echo "keygen: ok"
