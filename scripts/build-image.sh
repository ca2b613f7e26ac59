#!/usr/bin/env bash
# Builds the netmon-agent image for linux/amd64 and linux/arm64 with podman and the image index
# (manifest list) of both under one name, which the Helm chart's image reference names on every
# node: the container runtime pulls the entry of the node's architecture.
#
#   scripts/build-image.sh NAME [--amd64-image IMAGE] [--arm64-agent PATH] [--oci-archive FILE]
#
#   NAME           the index, e.g. localhost/netmon-agent:0.1.0 (the images are NAME-amd64 and
#                  NAME-arm64); push it with `podman manifest push --all NAME docker://...`
#   --amd64-image  an amd64 image already built from the Dockerfile (else built here: podman build
#                  --platform linux/amd64, the agent compiled in its build stage)
#   --arm64-agent  the cross-built agent (else built here: scripts/build-arm64.sh build-arm64)
#   --oci-archive  also write the index and both images to FILE (an OCI archive)
#
# The arm64 image is image/Dockerfile.arm64: the cross-built agent, stripped, copied into an arm64
# Debian 12 base (scripts/arm64-sysroot.sh image, imported once as
# localhost/netmon-base:bookworm-arm64 with podman import --arch arm64). Nothing arm64 runs here.
# VERSION, REVISION and SOURCE label both images (default: git describe, rev-parse, the origin).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}
name="" amd64_image="" arm64_agent="" oci_archive=""
while (($#)); do
  case "$1" in
    --amd64-image) amd64_image="${2:?}"; shift 2 ;;
    --arm64-agent) arm64_agent="${2:?}"; shift 2 ;;
    --oci-archive) oci_archive="${2:?}"; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "build-image: unknown option $1" >&2; usage ;;
    *) [[ -z "$name" ]] || usage; name="$1"; shift ;;
  esac
done
[[ -n "$name" ]] || usage
log() { echo "build-image: $*" >&2; }

version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)}
revision=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
source=${SOURCE:-$(git remote get-url origin 2>/dev/null || true)}
args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "SOURCE=$source")

start=$(date +%s)
if [[ -z "$amd64_image" ]]; then
  amd64_image="$name-amd64"
  podman build --platform linux/amd64 --network host "${args[@]}" -t "$amd64_image" -f Dockerfile .
  log "amd64 image built in $(($(date +%s) - start)) s"
fi
if [[ -z "$arm64_agent" ]]; then
  scripts/build-arm64.sh build-arm64
  arm64_agent=build-arm64/netmon-agent
fi

# The arm64 base, imported once per root (its name is in a label).
root=$(scripts/arm64-sysroot.sh image)
base=localhost/netmon-base:bookworm-arm64
if [[ $(podman image inspect --format '{{index .Labels "netmon.base.root"}}' "$base" 2>/dev/null) != "$root" ]]; then
  log "importing $root as $base"
  tar --numeric-owner -C "$root" --exclude=./.packages --exclude=./.complete -cf - . |
    podman import --arch arm64 --os linux --change "LABEL netmon.base.root=$root" \
      --change 'CMD ["bash"]' - "$base" >/dev/null
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
aarch64-linux-gnu-strip -o "$context/netmon-agent" "$arm64_agent"
cp image/config.yaml "$context/config.yaml"
podman build --platform linux/arm64 --pull=never --network none "${args[@]}" \
  --build-arg "BASE=$base" -t "$name-arm64" -f image/Dockerfile.arm64 "$context"
log "arm64 image built after $(($(date +%s) - start)) s"

podman manifest rm "$name" >/dev/null 2>&1 || true
podman manifest create "$name" >/dev/null
podman manifest add "$name" "containers-storage:$(podman image inspect --format '{{.Id}}' "$amd64_image")" >/dev/null
podman manifest add "$name" "containers-storage:$(podman image inspect --format '{{.Id}}' "$name-arm64")" >/dev/null
if [[ -n "$oci_archive" ]]; then
  podman manifest push --all --format oci "$name" "oci-archive:$oci_archive"
fi
log "index $name (linux/amd64, linux/arm64) after $(($(date +%s) - start)) s"
podman manifest inspect "$name"
