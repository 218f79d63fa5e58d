#!/usr/bin/env bash
# Installs what the benchmarks need beyond scripts/setup.sh: nginx (the HTTP ceiling), wrk,
# Redis (durable SET, the peer of durable writes), Node.js and the Express baseline's npm packages (pinned by its package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v taskset >/dev/null || need+=(util-linux)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
(cd bench/baselines/express-counter && npm ci --no-audit --no-fund --silent)
