#!/usr/bin/env bash
# clang_clean.sh: the build is warning-free under clang as well as gcc (make test builds with
# gcc): every module, tool, test and benchmark source is checked by clang with the Makefile's
# flags (-Werror included), without code generation.
set -u
ROOT=${KVPUB_ROOT:-.}
command -v clang >/dev/null || { echo "clang is not installed (scripts/deps.sh installs it)"; exit 1; }
out=$(make -s -C "$ROOT" check-clang 2>&1)
rc=$?
if [ $rc -ne 0 ] || [ -n "$out" ]; then
  printf '%s\n' "$out" | head -40
  echo "FAIL clang reports warnings or errors (make check-clang)"
  exit 1
fi
echo "ok   clang -fsyntax-only with the project's warnings: clean"
echo "all passed"
