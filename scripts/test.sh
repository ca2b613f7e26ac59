#!/usr/bin/env bash
# Installs what the tests need, builds once, and runs every test: unit tests (plain and under
# ASan/UBSan), the formatting check, and the privileged integration tests that load the real BPF
# programs. Run as root for the privileged tests; under CI=true a skipped privileged test fails.
# On a failure the last lines name what failed (pytest's FAILED/ERROR lines and their assertion
# lines from ctest's log), so that the tail of a long log is enough to start from.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh all
cmake -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNETMON_BUILD_TESTS=ON -DNETMON_WERROR=ON
cmake --build build -j"$(nproc)"
status=0
ctest --test-dir build --output-on-failure "$@" || status=$?
if [[ $status -ne 0 ]]; then
  log=build/Testing/Temporary/LastTest.log
  echo "==== what failed (from $log) ===="
  grep -E '^(FAILED|ERROR) |^E  |^tests/.*(Error|error)|^\[  FAILED  \]' "$log" | tail -n 40 || true
fi
exit "$status"
