#!/usr/bin/env bash
# Installs what the tests need, builds once, and runs every test: unit tests (plain and under
# ASan/UBSan), the formatting check, and the privileged integration tests that load the real BPF
# programs. Run as root for the privileged tests; under CI=true a skipped privileged test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh all
cmake -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNETMON_BUILD_TESTS=ON -DNETMON_WERROR=ON
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure "$@"
