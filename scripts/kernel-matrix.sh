#!/usr/bin/env bash
# Runs the kernel-matrix subset of the privileged integration tests (pytest -m kernel_matrix) in
# a virtual machine on a Debian kernel (scripts/vm-run.sh), after printing the hook variants the
# agent chooses there. The console goes to stdout and to LOG_DIR/<kernel>.log, from which
# scripts/kernel-table.py prints the support table of docs/kernels.md. The log names the kernel
# that ran: the Debian package, its version and the .deb's sha256 (vm-run's "kernel package"
# line), and the guest's own uname -r and uname -v (Debian's uname -v ends with the package
# version, so the two can be compared).
#
#   scripts/kernel-matrix.sh <5.10|6.1|6.12> [--timeout SECONDS]
#   scripts/kernel-matrix.sh <6.1|6.12> --arch arm64 [--timeout SECONDS]
#
# With --arch arm64 the VM is an arm64 one (qemu-system-aarch64 under TCG, an arm64 guest root:
# scripts/vm-run.sh) and the tests the reduced arm64_matrix subset (pytest -m arm64_matrix); the
# agent must be an arm64 build (NETMON_AGENT, default build/arm64/netmon-agent, as
# scripts/build-arm64.sh makes it), and the log is LOG_DIR/arm64-<kernel>.log.
#
# NETMON_AGENT names the agent (default build/netmon-agent); NETMON_KERNEL_MATRIX_DIR the log
# directory (default build/kernel-matrix). Exit status: pytest's in the guest, or vm-run's.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == --in-guest ]]; then
  marker=${2:-kernel_matrix}
  # Inside the guest: which variants the agent chooses here, then the tests.
  agent="$NETMON_AGENT"
  log=$(mktemp)
  "$agent" --metrics-address 127.0.0.1:0 >/dev/null 2>"$log" &
  pid=$!
  for _ in $(seq 600); do  # 60 s at most
    grep -q "netmon is running" "$log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || true
  echo "kernel-matrix: release $(uname -r)"
  echo "kernel-matrix: machine $(uname -m)"
  echo "kernel-matrix: build $(uname -v)"
  sed -n 's/.*netmon info: hook variant: \(.*\)$/kernel-matrix: variant \1/p' "$log"
  sed -n 's/.*netmon info: attached cgroup\/sock_ops (\(.*\)) as sock_ops$/kernel-matrix: sock_ops \1 attached/p' "$log"
  grep -q "netmon is running" "$log" || { cat "$log"; echo "kernel-matrix: the agent did not start"; }
  set +e
  /usr/bin/python3 -m pytest -v -rs -p no:cacheprovider -m "$marker" --durations=10 \
    tests/integration
  rc=$?
  echo "kernel-matrix: pytest exit $rc"
  exit "$rc"
fi

kernel="${1:?usage: $0 <5.10|6.1|6.12> [--arch arm64] [--timeout SECONDS]}"
shift
arch=amd64
if [[ "${1:-}" == --arch ]]; then
  arch="${2:?}"
  shift 2
fi
case "$arch" in
  amd64) marker=kernel_matrix log_name=$kernel default_agent=build/netmon-agent ;;
  arm64) marker=arm64_matrix log_name=arm64-$kernel default_agent=build/arm64/netmon-agent ;;
  *) echo "kernel-matrix: unknown architecture $arch (amd64 or arm64)" >&2; exit 2 ;;
esac
export NETMON_AGENT="${NETMON_AGENT:-$PWD/$default_agent}"
if [[ $arch == arm64 && "$(realpath "$NETMON_AGENT")" != "$PWD"/* ]]; then
  # The arm64 guest sees only the checkout of this machine's files.
  echo "kernel-matrix: the arm64 agent must be inside $PWD (NETMON_AGENT=$NETMON_AGENT)" >&2
  exit 2
fi
export CI="${CI:-true}"
dir="${NETMON_KERNEL_MATRIX_DIR:-$PWD/build/kernel-matrix}"
mkdir -p "$dir"
set +e
scripts/vm-run.sh "$kernel" --arch "$arch" "$@" -- bash scripts/kernel-matrix.sh --in-guest "$marker" 2>&1 |
  tee "$dir/$log_name.log"
exit "${PIPESTATUS[0]}"
