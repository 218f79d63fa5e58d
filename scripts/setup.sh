#!/usr/bin/env bash
# Installs what edgestate needs from Debian 12's packages (as root, only what is missing) and
# builds it into ./build. Usage: scripts/setup.sh [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake pkg-config git ca-certificates
  libboost-dev libboost-system-dev librocksdb-dev libssl-dev protobuf-compiler libprotobuf-dev
  nlohmann-json3-dev libfmt-dev libspdlog-dev libcli11-dev libtomlplusplus-dev
  libgtest-dev libgmock-dev libbenchmark-dev libjemalloc-dev
  libsnappy-dev zlib1g-dev libbz2-dev liblz4-dev libzstd-dev libc-ares-dev nettle-dev
  podman buildah runc mmdebstrap uidmap
  python3 python3-pytest python3-yaml curl wrk procps util-linux openssl dnsmasq-base
)

SUDO_CMD=""
[ "$(id -u)" -ne 0 ] && SUDO_CMD="sudo"
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO_CMD apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO_CMD apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Node.js runs the article's two designs (bench/baselines); their npm packages are pinned by
# package-lock.json files and installed from the npm registry.
command -v node >/dev/null || { $SUDO_CMD apt-get update -qq; DEBIAN_FRONTEND=noninteractive $SUDO_CMD apt-get install -y -qq --no-install-recommends nodejs; }
command -v npm >/dev/null || { DEBIAN_FRONTEND=noninteractive $SUDO_CMD apt-get install -y -qq --no-install-recommends npm; }
for dir in bench/baselines/express-counter bench/baselines/isolate-counter; do
  if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    echo "setup: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done

BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} "$@" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
