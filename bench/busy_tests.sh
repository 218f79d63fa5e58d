#!/usr/bin/env bash
# The test suite on a busy machine (issue 9): keeps both cores busy with stress-ng while the
# tests of scripts/test.sh run RUNS times on the optimized build (build/) and once on the ASan
# build (build-asan/). Both builds must exist (scripts/test.sh makes them). Prints one line per
# run; exits non-zero if any run failed. Logs go to $LOG_DIR (default: a fresh temp dir).
#
# Usage: bench/busy_tests.sh [RUNS]    (default 5)
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
LOG_DIR=${LOG_DIR:-$(mktemp -d -t edgestate-busy-XXXXXX)}
mkdir -p "$LOG_DIR"
command -v stress-ng >/dev/null || { echo "busy_tests: install stress-ng (apt-get install stress-ng)"; exit 2; }
for b in build build-asan; do
  [ -d "$b" ] || { echo "busy_tests: $b/ missing; run scripts/test.sh first"; exit 2; }
done

# Bounded by its own timeout as well as by the trap.
stress-ng --cpu 2 --timeout 4h --quiet &
STRESS=$!
trap 'kill $STRESS 2>/dev/null; wait $STRESS 2>/dev/null' EXIT

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
failed=0
run() {  # run NAME DIR
  local start=$SECONDS log="$LOG_DIR/$1.log" rc
  (cd "$2" && ctest --output-on-failure -j2 -LE integration && ctest --output-on-failure -L integration) >"$log" 2>&1
  rc=$?
  local summary
  summary=$(grep -E "tests passed|tests failed" "$log" | tr '\n' ';')
  printf '%-10s %s  %4ds  %s  (%s)\n' "$1" "$([ $rc -eq 0 ] && echo PASS || echo FAIL)" \
    $((SECONDS - start)) "$summary" "$log"
  [ $rc -eq 0 ] || failed=1
}
echo "busy_tests: stress-ng --cpu 2 (pid $STRESS) beside the tests; $(nproc) cores; logs in $LOG_DIR"
for i in $(seq 1 "$RUNS"); do run "release-$i" build; done
run asan build-asan
exit $failed
