#!/usr/bin/env bash
# Fails when a C, C++ or BPF source the project wrote is not formatted by clang-format.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -co --exclude-standard -- '*.c' '*.h' '*.cpp' '*.hpp')
if ((${#files[@]} == 0)); then
  echo "check-format: no sources found" >&2
  exit 1
fi
if clang-format --dry-run --Werror "${files[@]}"; then
  echo "check-format: ${#files[@]} files formatted"
else
  echo "check-format: run 'clang-format -i' on the files above" >&2
  exit 1
fi
