// libFuzzer target for the configuration loader: the input is a YAML configuration document,
// loaded as --config would load it (agent/config parses it, agent/cli applies every value).
// Besides "no crash, no sanitizer report", it checks the --print-config contract: a document that
// loads prints as one that loads back to the same configuration.
//
// Not built by CMake. From the repository root, after the CMake build (the uninstrumented static
// libraries supply what options.cpp calls: log levels, hook variants, listen addresses, labels),
// as one command line:
//
//   clang++-14 -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined
//     -fno-sanitize-recover=undefined -Iagent tests/fuzz/config_fuzz.cpp
//     agent/config/config.cpp agent/cli/options.cpp build/agent/libnetmon_metrics.a
//     build/agent/libnetmon_k8s.a build/agent/libnetmon_bpf.a build/agent/libnetmon_events.a
//     build/agent/libnetmon_common.a -lyaml-cpp -lprometheus-cpp-core -lcpp-httplib -lbpf
//     -lpthread -o build/config-fuzz
//   build/config-fuzz -max_total_time=60 -max_len=4096 -timeout=5 CORPUS_DIR
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "cli/options.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  netmon::Options options;
  if (!netmon::apply_config(options, text, "fuzz")) return 0;

  const std::string printed = netmon::render_config(options);
  netmon::Options reloaded;
  if (auto r = netmon::apply_config(reloaded, printed, "printed"); !r) {
    std::fprintf(stderr, "printed configuration does not load: %s\n%s", r.error().message.c_str(),
                 printed.c_str());
    std::abort();
  }
  if (const std::string again = netmon::render_config(reloaded); again != printed) {
    std::fprintf(stderr, "round trip changed the configuration:\n%s---\n%s", printed.c_str(),
                 again.c_str());
    std::abort();
  }
  return 0;
}
