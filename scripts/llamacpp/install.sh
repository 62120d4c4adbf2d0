# install.sh (sourced, not run): installs the pinned prebuilt llama.cpp from npm once, for the
# benchmark (scripts/bench-llamacpp.sh) and the interop tests (tests/cli/llamacpp_*.sh).
#
#   . scripts/llamacpp/install.sh
#   llamacpp_install DIR || skip "$LLAMACPP_WHY"
#
# node-llama-cpp 3.22.1 and its prebuilt @node-llama-cpp/linux-x64 package (libllama, libggml*,
# per-CPU ggml backends) go into DIR with install scripts off: no binary download, no source
# build. From the package's own source bundle (llama/gitRelease.bundle) it extracts llama.h, the
# ggml headers and models/ (llama.cpp's vocabulary-only GGUFs with their test texts, and its
# chat templates), so that what the harnesses compile against is exactly what the library is.
# On success it sets LLAMACPP_LIB (the .so folder), LLAMACPP_INC (-I flags), LLAMACPP_LDFLAGS,
# LLAMACPP_SRC (headers and models/), LLAMACPP_DIR and LLAMACPP_VERSION; on failure it returns 1 with one line
# in LLAMACPP_WHY (no npm registry, no git, not linux-x86_64).

LLAMACPP_VERSION=3.22.1

llamacpp_install() {
  local dir=$1 here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  LLAMACPP_WHY=
  if [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
    LLAMACPP_WHY="needs linux x86_64 (prebuilt @node-llama-cpp/linux-x64)"; return 1
  fi
  local t
  for t in npm git tar; do
    command -v "$t" >/dev/null 2>&1 || { LLAMACPP_WHY="$t not found"; return 1; }
  done
  mkdir -p "$dir" || { LLAMACPP_WHY="cannot create $dir"; return 1; }
  dir=$(cd "$dir" && pwd)
  local lib="$dir/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
  local bundle="$dir/node_modules/node-llama-cpp/llama/gitRelease.bundle"
  if [ ! -s "$lib/libllama.v0.5.0.so" ] || [ ! -s "$bundle" ] ||
     ! grep -q "\"version\": \"$LLAMACPP_VERSION\"" "$dir/node_modules/node-llama-cpp/package.json" 2>/dev/null; then
    cp "$here/package.json" "$dir/package.json"
    # --ignore-scripts: node-llama-cpp's postinstall would fetch or build binaries; the prebuilt
    # linux-x64 package is a plain npm dependency. --omit=optional: no CUDA/Vulkan/other-OS builds.
    # The timeout bounds a registry that accepts connections and then stalls.
    NODE_LLAMA_CPP_SKIP_DOWNLOAD=true timeout 300 npm install --prefix "$dir" --ignore-scripts \
      --omit=optional --no-audit --no-fund --loglevel=error >"$dir/npm-install.log" 2>&1 || {
      LLAMACPP_WHY="npm install node-llama-cpp@$LLAMACPP_VERSION failed (no npm registry reachable? see $dir/npm-install.log)"
      return 1
    }
    [ -s "$lib/libllama.v0.5.0.so" ] || { LLAMACPP_WHY="prebuilt libllama not found in @node-llama-cpp/linux-x64"; return 1; }
    rm -rf "$dir/hdr"
  fi
  if [ ! -s "$dir/hdr/include/llama.h" ] || [ ! -d "$dir/hdr/models" ]; then
    rm -rf "$dir/src" "$dir/hdr.tmp"; mkdir -p "$dir/hdr.tmp"
    { git clone -q --no-checkout "$bundle" "$dir/src" &&
      git -C "$dir/src" archive HEAD include/llama.h ggml/include models | tar -x -C "$dir/hdr.tmp"; } >/dev/null 2>&1 || {
      rm -rf "$dir/src" "$dir/hdr.tmp"; LLAMACPP_WHY="cannot read llama.h from $bundle"; return 1
    }
    rm -rf "$dir/src"; mv "$dir/hdr.tmp" "$dir/hdr"
  fi
  LLAMACPP_LIB=$lib
  LLAMACPP_SRC="$dir/hdr"
  LLAMACPP_INC="-I$dir/hdr/include -I$dir/hdr/ggml/include"
  LLAMACPP_LDFLAGS="-L$lib -l:libllama.v0.5.0.so -l:libggml.v0.5.0.so -l:libggml-base.so -Wl,-rpath,$lib"
  LLAMACPP_DIR=$dir
  return 0
}

# llamacpp_build NAME: compiles scripts/llamacpp/NAME.c against the installed library into
# $LLAMACPP_DIR/NAME when missing or older than the source; prints the executable's path.
llamacpp_build() {
  local src exe
  src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$1.c"
  exe="$LLAMACPP_DIR/$1"
  if [ ! -x "$exe" ] || [ "$src" -nt "$exe" ]; then
    # shellcheck disable=SC2086 # the flags are word lists
    "${CC:-cc}" -std=c11 -O2 -Wall -Wextra $LLAMACPP_INC "$src" -o "$exe" $LLAMACPP_LDFLAGS -lm >&2 || return 1
  fi
  echo "$exe"
}
