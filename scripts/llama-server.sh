#!/usr/bin/env bash
# llama-server.sh: builds the pinned llama.cpp's llama-server (for make test-llama-server) and
# prints its path on stdout; or prints one "SKIP: llama-server: WHY" line and exits 0.
#
# The npm package the interop tests use (scripts/llamacpp/install.sh) ships libllama, libggml and
# libllama-common but no server. Its source bundle (node-llama-cpp/llama/gitRelease.bundle) is
# cloned into $BUILD/llamacpp/server/src and scripts/llamacpp/server/CMakeLists.txt compiles
# only tools/server and tools/mtmd (68 files) against the prebuilt libraries, so the server runs
# the very library the interop tests check: offline (no web UI, no download, no TLS), the
# llama-server target only, -O1 (it drives tiny models): about 4 minutes on 2 busy cores (-O3:
# 4.5). The binary sits in $BUILD/llamacpp/server/bin next to links to the package's per-CPU
# ggml backends, which ggml looks for in the executable's folder (its run path names the
# libraries' real folder, not a symlink to it). A second run prints the path at once.
set -u
BUILD=${BUILD:-build}
here=$(cd "$(dirname "$0")" && pwd)
skip() { echo "SKIP: llama-server: $*"; exit 0; }

. "$here/llamacpp/install.sh"
llamacpp_install "$BUILD/llamacpp" >&2 || skip "$LLAMACPP_WHY"
for t in cmake c++ make; do
  command -v "$t" >/dev/null 2>&1 || skip "$t not found (scripts/deps.sh installs it)"
done
top="$LLAMACPP_DIR/server"
bundle="$LLAMACPP_DIR/node_modules/node-llama-cpp/llama/gitRelease.bundle"
lists="$here/llamacpp/server/CMakeLists.txt"
exe="$top/bin/llama-server"
# what the binary was built from: the CMakeLists' content (worktrees and clones check it out at
# different times) and the bundle npm installed; and it must still find its libraries
key="$(sha256sum <"$lists" | cut -c1-16) $(stat -c %s-%Y "$bundle")"
if [ "$(cat "$top/built-from" 2>/dev/null)" = "$key" ] && "$exe" --version >/dev/null 2>&1; then
  echo "$exe"; exit 0
fi

log="$top/build.log"
rm -rf "$top"; mkdir -p "$top/bin"
t0=$(date +%s)
{
  git clone -q "$bundle" "$top/src" &&
  cmake -S "$here/llamacpp/server" -B "$top/cmake" -DLLAMA_SRC="$top/src" -DLLAMA_LIB="$(cd "$LLAMACPP_LIB" && pwd -P)" \
    -DCMAKE_BUILD_TYPE= -DCMAKE_C_FLAGS=-O1 -DCMAKE_CXX_FLAGS=-O1 &&
  cmake --build "$top/cmake" --target llama-server -j "$(nproc)"
} >"$log" 2>&1 || {
  echo "llama-server.sh: build failed (log: $log):" >&2; tail -n 20 "$log" >&2; exit 1
}
for so in "$LLAMACPP_LIB"/libggml-cpu-*.so; do ln -s "$so" "$top/bin/"; done
cp "$top/cmake/server/llama-server" "$exe.tmp" && mv "$exe.tmp" "$exe" && echo "$key" >"$top/built-from" || exit 1
echo "llama-server.sh: built $exe in $(( $(date +%s) - t0 )) s" >&2
echo "$exe"
