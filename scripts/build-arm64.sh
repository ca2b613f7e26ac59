#!/usr/bin/env bash
# Cross-builds the agent and its BPF objects for arm64 (aarch64) on this x86_64 Debian 12 machine
# and checks the binary: an aarch64 ELF (file), --version and --help under qemu-user
# (qemu-aarch64-static, its libraries from the arm64 sysroot), and the dynamic loader's list of
# the libraries it loads with none missing (ld-linux-aarch64.so.1 --list: ldd for arm64).
#
#   scripts/build-arm64.sh [OUT]        default OUT: build-arm64; the agent is OUT/netmon-agent
#
# Needs crossbuild-essential-arm64, qemu-user-static, clang and bpftool (scripts/install-deps.sh
# arm64); the arm64 libraries come from scripts/arm64-sysroot.sh (cached). CMAKE_BUILD_TYPE
# (default RelWithDebInfo) and CMAKE_*_COMPILER_LAUNCHER (e.g. ccache) from the environment are
# passed on. Exit status 0 when the build and every check passed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build-arm64}

for tool in aarch64-linux-gnu-g++ qemu-aarch64-static file; do
  command -v "$tool" >/dev/null || {
    echo "build-arm64: $tool not found (scripts/install-deps.sh arm64 installs it)" >&2
    exit 1
  }
done

start=$(date +%s)
sysroot=$(scripts/arm64-sysroot.sh)
echo "build-arm64: sysroot $sysroot ($(wc -l <"$sysroot/.packages") packages) after $(($(date +%s) - start)) s"
launchers=()
[[ -n "${CMAKE_C_COMPILER_LAUNCHER:-}" ]] &&
  launchers+=(-DCMAKE_C_COMPILER_LAUNCHER="$CMAKE_C_COMPILER_LAUNCHER")
[[ -n "${CMAKE_CXX_COMPILER_LAUNCHER:-}" ]] &&
  launchers+=(-DCMAKE_CXX_COMPILER_LAUNCHER="$CMAKE_CXX_COMPILER_LAUNCHER")
cmake -S . -B "$out" -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" \
  -DNETMON_ARM64_SYSROOT="$sysroot" -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-RelWithDebInfo}" \
  -DNETMON_WERROR=ON -DNETMON_BUILD_TESTS=OFF -DNETMON_SANITIZERS=OFF "${launchers[@]}" >/dev/null
cmake --build "$out" --target netmon-agent -j"$(nproc)"
agent="$out/netmon-agent"
echo "build-arm64: built in $(($(date +%s) - start)) s"

status=0
fail() {
  echo "build-arm64: FAILED: $*" >&2
  status=1
}
qemu() { timeout 60 qemu-aarch64-static -L "$sysroot" "$@"; }

kind=$(file -b "$agent")
echo "build-arm64: $agent: $kind"
[[ "$kind" == *"ELF 64-bit LSB"*"ARM aarch64"* ]] || fail "not an aarch64 ELF: $kind"
# The BPF objects: the same CO-RE objects (their BTF relocations resolve against the running
# kernel's BTF), compiled with __TARGET_ARCH_arm64.
grep -rqs -- '-D__TARGET_ARCH_arm64' "$out/bpf/CMakeFiles" ||
  fail "the BPF objects were not compiled with -D__TARGET_ARCH_arm64"

version=$(qemu "$agent" --version) || fail "--version under qemu-user exited with $?"
echo "build-arm64: --version: $version"
[[ "$version" =~ ^netmon-agent\ [0-9] ]] || fail "--version printed '$version'"
help=$(qemu "$agent" --help) || fail "--help under qemu-user exited with $?"
[[ "$help" == Usage:\ netmon-agent* ]] || fail "--help printed: ${help:0:200}"

# Every library found: the loader exits non-zero on a missing one ("not found" otherwise).
libs=$(qemu "$sysroot/lib/ld-linux-aarch64.so.1" --list "$agent" 2>&1) ||
  fail "the loader could not load every library: $libs"
echo "$libs" | sed 's/^/build-arm64:   /'
! grep -q 'not found' <<<"$libs" || fail "missing libraries: $(grep 'not found' <<<"$libs")"
for lib in libbpf.so.1 libelf.so.1 libstdc++.so.6 libc.so.6; do
  grep -q "$lib => " <<<"$libs" || fail "$lib is not among the loaded libraries"
done

echo "build-arm64: $([[ $status == 0 ]] && echo passed || echo FAILED) in $(($(date +%s) - start)) s"
exit "$status"
