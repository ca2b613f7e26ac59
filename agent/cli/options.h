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
  // Kubernetes. An empty kubelet_url is resolved at start: in a cluster (service-account token
  // present and NODE_IP or NODE_NAME set) https://<NODE_IP or NODE_NAME>:10250/pods, else off.
  std::string kubelet_url;
  std::string kubelet_token_file;  // default in a cluster: the service-account token
  std::string kubelet_ca_file;     // default in a cluster: the service-account CA
  bool kubelet_insecure_skip_verify = false;
  uint32_t kubelet_poll_interval_s = 10;
  uint32_t pod_grace_period_s = 60;
  std::string node_name;    // default: $NODE_NAME, else the host name
  std::string cgroup_root;  // default: the cgroup2 mount from /proc/self/mountinfo
  std::string metrics_address = "0.0.0.0:9477";  // "" disables the HTTP endpoint
  std::vector<std::string> metrics_drop_labels;
};

// Looks up an environment variable; injectable for tests.
using EnvLookup = std::function<std::optional<std::string>(const char* name)>;
EnvLookup process_environment();

// Parses flags over environment over defaults. Errors name the flag or variable and why.
Result<Options> parse_options(const std::vector<std::string>& args, const EnvLookup& env);

std::string usage_text();

}  // namespace netmon
