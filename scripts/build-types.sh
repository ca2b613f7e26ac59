#!/usr/bin/env bash
# Builds the agent alone (no tests) in each standard CMake build type with warnings as errors, so
# that a packager's Release or Debug build cannot break unnoticed (the test build is
# RelWithDebInfo). Each type gets its own build directory under OUT.
#   scripts/build-types.sh [OUT]        default OUT: build/build-types
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/build-types}
mkdir -p "$out"
status=0
for type in Release Debug MinSizeRel; do
  dir="$out/$type"
  start=$(date +%s)
  if cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" -DNETMON_WERROR=ON -DNETMON_BUILD_TESTS=OFF \
       >"$out/$type.log" 2>&1 &&
     cmake --build "$dir" --target netmon-agent -j"$(nproc)" >>"$out/$type.log" 2>&1 &&
     "$dir/netmon-agent" --version >>"$out/$type.log" 2>&1; then
    echo "build-types: $type built in $(( $(date +%s) - start )) s"
  else
    echo "build-types: $type FAILED; the last lines of $out/$type.log:"
    tail -n 40 "$out/$type.log"
    status=1
  fi
done
exit "$status"
