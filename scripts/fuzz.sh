#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) with clang and runs each for a bounded time.
#   scripts/fuzz.sh [SECONDS] [BUILD_DIR]     defaults: 20 seconds each, build/
# Needs a completed CMake build in BUILD_DIR (the config target links its static libraries).
# Any crash, leak, timeout or sanitizer report fails the run; the input is kept in
# BUILD_DIR/fuzz/ for reproduction.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
build=${2:-build}
out="$build/fuzz"
mkdir -p "$out"
cxx=$(command -v clang++-14 || command -v clang++)
flags=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
       -Iagent -Ibpf)

"$cxx" "${flags[@]}" tests/fuzz/rules_fuzz.cpp agent/rules/rules.cpp agent/common/text.cpp \
  -o "$out/rules_fuzz"
"$cxx" "${flags[@]}" tests/fuzz/pods_fuzz.cpp agent/k8s/pods.cpp agent/k8s/kube_objects.cpp \
  agent/k8s/cidr.cpp agent/common/text.cpp -o "$out/pods_fuzz"
"$cxx" "${flags[@]}" tests/fuzz/http_request_fuzz.cpp agent/metrics/http_request.cpp \
  -o "$out/http_request_fuzz"
"$cxx" "${flags[@]}" tests/fuzz/conntrack_fuzz.cpp agent/nat/conntrack_message.cpp \
  agent/nat/nat_table.cpp -o "$out/conntrack_fuzz"
"$cxx" "${flags[@]}" tests/fuzz/config_fuzz.cpp agent/config/config.cpp agent/cli/options.cpp \
  "$build/agent/libnetmon_metrics.a" "$build/agent/libnetmon_k8s.a" "$build/agent/libnetmon_nat.a" \
  "$build/agent/libnetmon_bpf.a" "$build/agent/libnetmon_process.a" \
  "$build/agent/libnetmon_events.a" \
  "$build/agent/libnetmon_common.a" \
  -lyaml-cpp -lprometheus-cpp-core -lcpp-httplib -lbpf -lpthread -o "$out/config_fuzz"

for target in rules_fuzz config_fuzz http_request_fuzz pods_fuzz conntrack_fuzz; do
  corpus="$out/corpus-$target"
  mkdir -p "$corpus"
  echo "fuzz: $target for ${seconds}s"
  (cd "$out" && "./$target" -max_total_time="$seconds" -max_len=16384 -timeout=10 \
     -rss_limit_mb=2048 -print_final_stats=1 "corpus-$target")
done
echo "fuzz: no crash in ${seconds}s per target"
