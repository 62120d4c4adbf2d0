#!/usr/bin/env bash
# Installs the Debian 12 packages that kvpub's build, tests, benchmarks and demo need.
# Idempotent: does nothing when everything is present. Needs root (or sudo) only to install.
set -eu
pkgs="build-essential pkg-config clang libclang-rt-14-dev
 libssl-dev openssl libcurl4-openssl-dev curl libsqlite3-dev sqlite3 libzstd-dev
 libmicrohttpd-dev libgnutls28-dev libjansson-dev libcmocka-dev
 jq nginx-light gnuplot-nox git time cmake"
# git + npm: the interop and parity tests install the pinned prebuilt llama.cpp from the npm
# registry (scripts/llamacpp/install.sh) and read headers and test vocabularies from its bundle;
# an npm already on the PATH (e.g. from nodejs.org) will do; cmake builds llama-server from that
# bundle for make test-llama-server (scripts/llama-server.sh)
command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm"
# multi-buffer SHA-256 for the blob chunk digests (x86-64 only; OpenSSL does it elsewhere)
if [ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ]; then
  pkgs="$pkgs libipsec-mb-dev"
fi
if [ "${1:-}" = "--bench" ]; then
  pkgs="$pkgs wrk hyperfine"
fi
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps.sh: installing:$missing" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing >&2
