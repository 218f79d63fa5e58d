#!/usr/bin/env bash
# Sets everything up and runs every test twice: an optimized build with -Werror, then an
# AddressSanitizer + UndefinedBehaviorSanitizer build; then every libFuzzer target for a short
# bounded run. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== build (RelWithDebInfo, -Werror)"
BUILD_DIR=build scripts/setup.sh -DEDGESTATE_WERROR=ON -DEDGESTATE_SANITIZE=OFF -DEDGESTATE_FAULT_INJECTION=ON
echo "== tests"
(cd build && ctest --output-on-failure -j2 -LE integration && ctest --output-on-failure -L integration)

echo "== build (ASan + UBSan, -Werror)"
BUILD_DIR=build-asan BUILD_TYPE=Debug scripts/setup.sh -DEDGESTATE_WERROR=ON -DEDGESTATE_SANITIZE=ON -DEDGESTATE_FAULT_INJECTION=ON
echo "== tests under ASan + UBSan"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-asan && ctest --output-on-failure -j2 -LE integration && ctest --output-on-failure -L integration)
echo "== fuzz targets, 10 s each (scripts/fuzz.sh; docs/fuzzing.md)"
scripts/fuzz.sh 10
echo "== all tests passed"
