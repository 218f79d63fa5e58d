#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang 14 with ASan + UBSan) into ./build-fuzz and runs
# each for SECONDS (default 60) on its seed corpus (fuzz/corpus/TARGET, read only; new inputs go
# to a scratch directory, or to FUZZ_CORPUS_DIR/TARGET when set). Prints each target's coverage
# and executions; exits non-zero when a target crashes, leaks or hangs (its reproducer is kept
# under FUZZ_ARTIFACTS, default build-fuzz/artifacts). Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-60}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(http_fuzz frame_fuzz strong_fuzz session_token_fuzz config_fuzz parsers_fuzz)

SUDO_CMD=""
[ "$(id -u)" -ne 0 ] && SUDO_CMD="sudo"
missing=()
for p in clang-14 libfuzzer-14-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO_CMD apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO_CMD apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
BUILD_DIR=build-fuzz BUILD_TYPE=RelWithDebInfo CC=clang-14 CXX=clang++-14 \
  scripts/setup.sh -DEDGESTATE_FUZZ=ON -DEDGESTATE_WERROR=ON

ARTIFACTS="${FUZZ_ARTIFACTS:-$PWD/build-fuzz/artifacts}"
mkdir -p "$ARTIFACTS"
SCRATCH="$(mktemp -d /tmp/edgestate-fuzz.XXXXXX)"
trap 'rm -rf "$SCRATCH"' EXIT
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
status=0
for t in "${TARGETS[@]}"; do
  seeds="fuzz/corpus/${t%_fuzz}"
  out="${FUZZ_CORPUS_DIR:+$FUZZ_CORPUS_DIR/$t}"
  out="${out:-$SCRATCH/$t}"
  mkdir -p "$out"
  log="$SCRATCH/$t.log"
  if build-fuzz/fuzz/"$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
      -max_len=65536 -print_final_stats=1 -artifact_prefix="$ARTIFACTS/$t-" \
      "$out" "$seeds" >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    status=1
    tail -40 "$log"
  fi
  cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
  execs=$(grep -Eo 'stat::number_of_executed_units: [0-9]+' "$log" | grep -Eo '[0-9]+$' || echo '?')
  echo "$t: $result, ${SECONDS_EACH}s, $execs executions, ${cov:-no coverage line}, corpus $(ls "$out" | wc -l)"
done
exit $status
