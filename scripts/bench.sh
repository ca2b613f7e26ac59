#!/usr/bin/env bash
# Loopback connection-storm benchmark: builds netmon-agent, netmon-storm and netmon-log-shipper,
# then interleaves rounds of baseline (nothing attached) / netmon / tcplife (when libbpf-tools is
# installed) and prints a Markdown table per scenario (docs/performance.md explains it). Needs
# root. Loopback traffic only. On a shared machine run it under the integration lock:
#   flock /tmp/netmon-integration.lock scripts/bench.sh
#
#   scripts/bench.sh                      # 3 rounds of both default scenarios, interleaved:
#                                         #  burst: 50000 connections (10 s cap), container
#                                         #   credentials, stdout to a file on /dev/shm;
#                                         #  sustained: 200000 connections (20 s cap), root's
#                                         #   credentials, stdout to a file on the disk and to a
#                                         #   pipe read by netmon-log-shipper (CRI log file)
#   scripts/bench.sh --quick --check      # what ctest's storm-quick runs
#   scripts/bench.sh --rounds 5 --connections 100000 --exchange --ipv6   # one custom scenario
#
# BUILD_DIR (default build) selects the build tree; every other argument goes to
# tests/bench/storm_runner.py (--help lists them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"

cmake --build "$BUILD_DIR" --target netmon-agent netmon-storm netmon-log-shipper -- -j"$(nproc)" >&2
exec /usr/bin/python3 "$ROOT/tests/bench/storm_runner.py" \
  --storm "$BUILD_DIR/tests/bench/netmon-storm" --agent "$BUILD_DIR/netmon-agent" "$@"
