#!/usr/bin/env bash
# Runs every unit test binary in $BUILD/tests and every CLI/integration script in tests/cli,
# each under a time limit, and closes with "N passed, N failed".
# TESTS=pattern runs only the tests whose name contains pattern.
set -u
BUILD=${BUILD:-build}
export BUILD
export KVPUB_ROOT=$(pwd)
export KVPUB_SHARED=${KVPUB_SHARED:-$(cd .. && pwd)/shared}
pass=0; fail=0; failed=""
logdir="$BUILD/test-logs"; mkdir -p "$logdir"
run_one() {  # name, command...
  local name=$1; shift
  case "$name" in *"${TESTS:-}"*) ;; *) return;; esac
  local t0=$(date +%s%N)
  if timeout 900 "$@" >"$logdir/$name.log" 2>&1; then
    pass=$((pass+1)); printf 'PASS  %-40s %6dms\n' "$name" $(( ($(date +%s%N) - t0) / 1000000 ))
  else
    fail=$((fail+1)); failed="$failed $name"
    printf 'FAIL  %-40s (log: %s)\n' "$name" "$logdir/$name.log"
    tail -n 30 "$logdir/$name.log" | sed 's/^/      /'
  fi
}
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  run_one "$(basename "$t")" "$t"
done
for s in tests/cli/*.sh; do
  [ -f "$s" ] || continue
  run_one "cli_$(basename "$s" .sh)" bash "$s"
done
[ -n "$failed" ] && echo "failed:$failed"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
