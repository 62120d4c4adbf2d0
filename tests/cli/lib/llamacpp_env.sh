# llamacpp_env.sh (sourced by tests/cli/llamacpp_*.sh): installs the pinned llama.cpp (or skips the
# test with one line when no npm registry is reachable), builds the harness named by $HARNESS
# into $harness, and makes $tmp (removed on exit) and fail().
#   HARNESS=llama_tok WHAT="llama.cpp parity"; . tests/cli/lib/llamacpp_env.sh
BUILD=${BUILD:-build}
KVFETCH=${KVFETCH:-$BUILD/kvfetch}
. scripts/llamacpp/install.sh
llamacpp_install "$BUILD/llamacpp" || { echo "SKIP: $WHAT: $LLAMACPP_WHY"; exit 0; }
harness=$(llamacpp_build "$HARNESS")
tmp=$(mktemp -d "/tmp/kvpub-$HARNESS-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
