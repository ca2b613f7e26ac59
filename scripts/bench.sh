#!/usr/bin/env bash
# Loopback connection-storm benchmark: builds netmon-agent and netmon-storm, then interleaves
# rounds of baseline (nothing attached) / netmon / tcplife (when libbpf-tools is installed) and
# prints a Markdown table (docs/performance.md explains it). Needs root. Loopback traffic only.
#
#   scripts/bench.sh                      # 3 rounds x 50000 connections (10 s cap each)
#   scripts/bench.sh --quick --check      # what ctest's storm-quick runs
#   scripts/bench.sh --rounds 5 --connections 100000 --exchange --ipv6
#
# BUILD_DIR (default build) selects the build tree; every other argument goes to
# tests/bench/storm_runner.py (--help lists them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"

cmake --build "$BUILD_DIR" --target netmon-agent netmon-storm -- -j"$(nproc)" >&2
exec /usr/bin/python3 "$ROOT/tests/bench/storm_runner.py" \
  --storm "$BUILD_DIR/tests/bench/netmon-storm" --agent "$BUILD_DIR/netmon-agent" "$@"
