// The agent's settings: command-line flags, their NETMON_... environment variables and their keys
// in the YAML configuration file (--config), all from one table in options.cpp. Precedence: flags
// over environment over file over defaults. The rules (egress, ingress, lists, macros) come from
// the file only.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bpf/probe.h"
#include "common/log.h"
#include "common/result.h"
#include "metrics/edges.h"
#include "rules/rules.h"
#include "rules/verdicts.h"

namespace netmon {

struct Options {
  bool show_help = false;
  bool show_version = false;
  bool print_config = false;  // --print-config: print render_config() on stdout and exit 0
  bool check_config = false;  // --check-config: validate (rules compiled), exit 0 or 2
  std::string config_file;    // the YAML file the settings were read from; "" when none
  log::Level log_level = log::Level::kInfo;
  ProbeOptions probe;
  size_t output_queue_bytes = 8u << 20;
  uint32_t output_max_pause_ms = 1000;  // the kernel reader's longest wait for a slow stdout
  std::string proc_root = "/proc";
  size_t max_processes = 65536;
  // Kubernetes. An empty kubelet_url is resolved at start: in a cluster (service-account token
  // present and NODE_IP or NODE_NAME set) https://<NODE_IP or NODE_NAME>:10250/pods, else off.
  std::string kubelet_url;
  std::string kubelet_token_file;  // default in a cluster: the service-account token
  std::string kubelet_ca_file;     // default in a cluster: the service-account CA
  bool kubelet_insecure_skip_verify = false;
  bool kubelet_allow_http_token = false;  // send the token to an http:// kubelet (cleartext)
  uint32_t kubelet_poll_interval_s = 10;
  uint32_t pod_grace_period_s = 60;
  bool pod_labels = true;   // kubernetes.labels: write the pod's labels into events
  std::string node_name;    // default: $NODE_NAME, else the host name
  std::string cgroup_root;  // default: the cgroup2 mount from /proc/self/mountinfo
  // The Kubernetes API server, for the peers' names (issue #19). An empty kube_api_url is
  // resolved at start: in a cluster (KUBERNETES_SERVICE_HOST/PORT set) the in-cluster URL with
  // the service-account token and CA, else off (peers are named from this node's kubelet, its
  // own addresses and external_networks only).
  std::string kube_api_url;         // kubernetes.api_url, --kube-api-url
  std::string kube_api_token_file;  // kubernetes.api_token_file; default in a cluster: the SA token
  std::string kube_api_ca_file;     // kubernetes.api_ca_file; default in a cluster: the SA CA
  bool kube_api_insecure_skip_verify = false;  // kubernetes.api_insecure_skip_verify
  bool kube_api_allow_http_token = false;      // kubernetes.api_allow_http_token
  // What is watched on the API server (each false: that resource is not watched; all three
  // false: no API server at all, even in a cluster).
  bool watch_services = true;  // kubernetes.watch_services: Services and EndpointSlices
  bool watch_nodes = true;     // kubernetes.watch_nodes: Nodes
  bool watch_pods = false;     // kubernetes.watch_pods: also watch this cluster's Pods
  bool peer_labels = false;    // kubernetes.peer_labels: write a pod peer's labels into events
  // kubernetes.external_networks: ordered (class name, CIDRs) pairs naming external peers
  // (CidrClasses::parse checks them); empty: every external peer is "internet".
  std::vector<std::pair<std::string, std::vector<std::string>>> external_networks;
  // The node's connection tracking (issue #20): peer.backend and peer.original of translated
  // connections, read from conntrack in the agent's network namespace.
  bool conntrack = true;                 // nat.conntrack, --conntrack
  size_t conntrack_max_entries = 65536;  // nat.max_entries, --conntrack-max-entries
  // nat.netns, --conntrack-netns: the network namespace whose conntrack is read (a path such as
  // /host/proc/1/ns/net); "": the agent's own.
  std::string conntrack_netns;
  std::string metrics_address = "0.0.0.0:9477";  // "" disables the HTTP endpoint
  std::vector<std::string> metrics_drop_labels;
  EdgeSettings edges;  // metrics.edges, metrics.max_edges, ...: the service map (issue #22)
  // NETMON_FAULT_SKIP_STATE as given (fault injection for tests; its bits are in
  // probe.fault_skip_state); "" when unset.
  std::string fault_skip_state;
  // NETMON_FAULT_CONNTRACK_BUFFER: the conntrack event socket's receive buffer in bytes (tests
  // overflow it); 0: the default.
  int fault_conntrack_buffer = 0;
  EventSwitches events;  // which connection events are reported (events.establish, ...)
  // events.preexisting: report the connections older than the agent at start (issue #21).
  bool preexisting = true;
  RulesSpec rules;  // from the configuration file only; compiled by agent/rules
};

// Looks up an environment variable; injectable for tests.
using EnvLookup = std::function<std::optional<std::string>(const char* name)>;
EnvLookup process_environment();

// Parses flags over environment over the configuration file (--config FILE, else $NETMON_CONFIG)
// over defaults. Errors name the flag, the variable, or the file, line, column and key, and why.
// Every value in the file is checked, also one that a flag or variable overrides.
Result<Options> parse_options(const std::vector<std::string>& args, const EnvLookup& env);

// Applies a YAML configuration document over `options` as parse_options() applies the file;
// `source` names it in errors. The document's rules replace options.rules.
Result<void> apply_config(Options& options, std::string_view yaml, std::string_view source);

// The effective configuration as a YAML document: every key with its value, and the rules. Loaded
// with --config it gives the same options (the command-only switches and config_file aside).
std::string render_config(const Options& options);

std::string usage_text();

}  // namespace netmon
