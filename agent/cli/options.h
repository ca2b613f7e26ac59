// Command-line flags and their NETMON_... environment equivalents.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bpf/probe.h"
#include "common/log.h"
#include "common/result.h"

namespace netmon {

struct Options {
  bool show_help = false;
  bool show_version = false;
  log::Level log_level = log::Level::kInfo;
  ProbeOptions probe;
  size_t output_queue_bytes = 64u << 20;
  std::string proc_root = "/proc";
  size_t max_processes = 65536;
};

// Looks up an environment variable; injectable for tests.
using EnvLookup = std::function<std::optional<std::string>(const char* name)>;
EnvLookup process_environment();

// Parses flags over environment over defaults. Errors name the flag or variable and why.
Result<Options> parse_options(const std::vector<std::string>& args, const EnvLookup& env);

std::string usage_text();

}  // namespace netmon
