#!/usr/bin/env bash
# Renders charts/netmon with its default values into manifests/netmon.yaml, for clusters without
# Helm (kubectl apply -f manifests/; manifests/namespace.yaml creates the namespace first).
# tests/integration/test_chart.py fails when the file differs from the chart's output.
#
#   scripts/render-manifests.sh            # writes manifests/netmon.yaml
#   scripts/render-manifests.sh --stdout   # prints it instead
#
# HELM names the helm binary; default: the one scripts/helm-tools.sh fetches.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
helm="${HELM:-$("$root/scripts/helm-tools.sh")}"
out="$root/manifests/netmon.yaml"

render() { "$helm" template netmon "$root/charts/netmon" --namespace netmon; }

if [[ "${1:-}" == "--stdout" ]]; then
  render
  exit 0
fi
tmp="$(mktemp "$out.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
render >"$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "wrote $out"
