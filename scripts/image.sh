#!/usr/bin/env bash
# Builds the edgestate container image from deploy/Containerfile with podman.
#
#   scripts/image.sh [--prebuilt] [TAG]     (default TAG localhost/edgestate:0.1.0)
#
# Default: the multi-stage build compiles edgestate inside Debian 12 (about 8 minutes on two
# cores). --prebuilt: the image takes build/edgestate (scripts/setup.sh) instead; the tests use
# it. Container registries cannot be reached from these machines, so the Debian 12 base is made
# here from Debian's packages (mmdebstrap) and imported as localhost/debian:bookworm-slim, once.
# Elsewhere: BASE=debian:bookworm-slim scripts/image.sh uses the public image.
# Podman runs as root with the settings ../shared/NOTES.md gives for these machines (vfs
# storage, runc, cgroupfs, no default ulimits); PODMAN_ARGS overrides them.
set -euo pipefail
cd "$(dirname "$0")/.."

target=runtime
if [ "${1:-}" = "--prebuilt" ]; then
  target=prebuilt
  shift
fi
tag=${1:-localhost/edgestate:0.1.0}
base=${BASE:-localhost/debian:bookworm-slim}

if [ -z "${CONTAINERS_CONF:-}" ]; then
  export CONTAINERS_CONF="$PWD/scripts/podman-containers.conf"
fi
read -r -a podman_args <<< "${PODMAN_ARGS:---storage-driver vfs --runtime runc --cgroup-manager cgroupfs}"
podman=(podman "${podman_args[@]}")

command -v podman >/dev/null || { echo "image: podman is not installed (scripts/setup.sh installs it)" >&2; exit 1; }

if [ "$base" = "localhost/debian:bookworm-slim" ] && ! "${podman[@]}" image exists "$base"; then
  command -v mmdebstrap >/dev/null || { echo "image: mmdebstrap is not installed" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "image: making $base from Debian's packages (mmdebstrap, about a minute)"
  mmdebstrap --quiet --variant=minbase bookworm "$tmp/rootfs.tar"
  "${podman[@]}" import "$tmp/rootfs.tar" "$base" >/dev/null
fi

if [ "$target" = prebuilt ] && [ ! -x build/edgestate ]; then
  echo "image: build/edgestate is missing (run scripts/setup.sh first)" >&2
  exit 1
fi
# Only what the Containerfile copies goes into the context (build/ only for --prebuilt).
ignore=$(mktemp)
trap 'rm -f "$ignore"; [ -n "${tmp:-}" ] && rm -rf "$tmp"' EXIT
if [ "$target" = prebuilt ]; then
  printf '%s\n' '*' '!build/edgestate' > "$ignore"
else
  printf '%s\n' '*' '!CMakeLists.txt' '!cmd' '!src' '!tools' '!tests' '!fuzz' > "$ignore"
fi
echo "image: building $tag (target $target, base $base)"
"${podman[@]}" build --format docker --network host --ignorefile "$ignore" --build-arg "BASE=$base" \
  --target "$target" -f deploy/Containerfile -t "$tag" .
echo "image: $tag"
