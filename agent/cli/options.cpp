#include "cli/options.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstdlib>
#include <type_traits>

#include "common/text.h"
#include "config/config.h"
#include "k8s/cidr.h"
#include "k8s/kube_api.h"
#include "metrics/http_server.h"
#include "metrics/metrics.h"

namespace netmon {
namespace {

// How a setting is written on the command line and which type its value has in the file.
enum class Type {
  kSwitch,  // a command (--help): no value, no variable, no key
  kBool,    // --flag means true, --flag=false; variable: true/false, 1/0, yes/no
  kNumber,
  kString,
  kList,  // comma separated; a YAML list in the file
  // NAME=ITEM,ITEM;NAME=ITEM; an ordered YAML mapping of names to lists in the file
  kMapOfLists,
};

// One setting: the single source of truth for its flag, variable, key, help, default (show() of
// a default Options), validation and printing.
struct Setting {
  const char* flag;  // without the leading "--"; nullptr: only a variable, not in the help
  const char* env;   // nullptr: no environment variable
  const char* key;   // dotted key in the configuration file; nullptr: not in the file
  Type type;
  const char* value_name;  // shown in the help; nullptr for switches and booleans
  const char* help;        // the default is added from show(Options{}) when that is not empty
  std::function<Result<void>(Options&, std::string_view)> apply;
  std::function<std::string(const Options&)> show;  // the value as apply() takes it
  // Optional, for a list in the file: checks one item there, so that the error names its line
  // and column (apply() checks them again, from every source).
  Result<void> (*check_item)(std::string_view item) = nullptr;
};

Result<uint64_t> parse_size(std::string_view text, uint64_t min, uint64_t max) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return fail(quoted(text) + " is not a non-negative integer");
  }
  if (value < min || value > max) {
    return fail(std::to_string(value) + " is out of range [" + std::to_string(min) + ", " +
                std::to_string(max) + "]");
  }
  return value;
}

Result<bool> parse_bool(std::string_view text) {
  if (text == "true" || text == "1" || text == "yes") return true;
  if (text == "false" || text == "0" || text == "no") return false;
  return fail(quoted(text) + " is not true or false");
}

std::string_view level_name(log::Level level) {
  switch (level) {
    case log::Level::kDebug:
      return "debug";
    case log::Level::kInfo:
      return "info";
    case log::Level::kWarn:
      return "warn";
    case log::Level::kError:
      break;
  }
  return "error";
}

// The host part of a listen address: empty (every address), an IPv4 address, a bracketed IPv6
// address, or a host name.
Result<void> check_listen_host(std::string_view text, const ListenAddress& address) {
  const std::string& host = address.host;
  if (!text.empty() && text.front() == '[') {
    in6_addr v6{};
    if (inet_pton(AF_INET6, host.c_str(), &v6) != 1) {
      return fail(quoted(host) + " is not an IPv6 address");
    }
    return {};
  }
  if (host.find(':') != std::string::npos) {
    return fail(quoted(text) + ": an IPv6 address needs brackets, e.g. [::]:9477");
  }
  if (host.find_first_not_of("0123456789.") == std::string::npos) {
    in_addr v4{};
    if (inet_pton(AF_INET, host.c_str(), &v4) != 1) {
      return fail(quoted(host) + " is not an IPv4 address");
    }
    return {};
  }
  const bool name_chars =
      host.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") ==
      std::string::npos;
  if (!name_chars || host.front() == '.' || host.front() == '-' || host.size() > 253) {
    return fail(quoted(host) + " is not an address or a host name");
  }
  return {};
}

// A number setting stored in the field `field(options)` refers to.
template <typename Field>
Setting number(const char* flag, const char* env, const char* key, const char* value_name,
               const char* help, uint64_t min, uint64_t max, Field field) {
  return {flag,
          env,
          key,
          Type::kNumber,
          value_name,
          help,
          [min, max, field](Options& o, std::string_view v) -> Result<void> {
            auto n = parse_size(v, min, max);
            if (!n) return fail(n.error().message);
            auto& target = field(o);
            target = static_cast<std::remove_reference_t<decltype(target)>>(*n);
            return {};
          },
          [field](const Options& o) { return std::to_string(field(o)); }};
}

template <typename Field>
Setting boolean(const char* flag, const char* env, const char* key, const char* help, Field field) {
  return {flag,
          env,
          key,
          Type::kBool,
          nullptr,
          help,
          [field](Options& o, std::string_view v) -> Result<void> {
            auto b = parse_bool(v);
            if (!b) return fail(b.error().message);
            field(o) = *b;
            return {};
          },
          [field](const Options& o) -> std::string { return field(o) ? "true" : "false"; }};
}

// A string setting where "" means the default that is worked out at start-up.
template <typename Field>
Setting text(const char* flag, const char* env, const char* key, const char* value_name,
             const char* help, Field field) {
  return {flag,
          env,
          key,
          Type::kString,
          value_name,
          help,
          [field](Options& o, std::string_view v) -> Result<void> {
            field(o) = std::string(v);
            return {};
          },
          [field](const Options& o) { return field(o); }};
}

// A list setting's value as a flag takes it: the items comma separated, each as `text` writes it.
template <typename List, typename Text>
std::string comma_joined(const List& list, Text text) {
  std::string out;
  for (const auto& item : list) {
    if (!out.empty()) out += ',';
    out += text(item);
  }
  return out;
}

// The caps on kubernetes.external_networks: a configuration mistake stays small. (An external
// peer's lookup, CidrClasses::classify, costs one binary search per distinct prefix length.)
constexpr size_t kMaxExternalNetworkClasses = 64;
constexpr size_t kMaxExternalNetworkCidrs = 4096;  // in all classes together
constexpr size_t kMaxExternalNetworkNameBytes = 63;

// A class name as events and rules show it (peer.network, peer_network): 1 to 63 letters,
// digits, '_', '-' and '.'.
bool external_network_name(std::string_view name) {
  return !name.empty() && name.size() <= kMaxExternalNetworkNameBytes &&
         name.find_first_not_of(
             "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.") ==
             std::string_view::npos;
}

// "80, 443,8080" -> the ports; "" -> none. Fails naming the item that is not a port.
Result<std::vector<uint16_t>> parse_ports(std::string_view csv) {
  std::vector<uint16_t> out;
  for (const std::string_view item : split_list(csv)) {
    auto port = parse_size(item, 1, 65535);
    if (!port) return fail(quoted(item) + " is not a TCP port (1 to 65535)");
    if (out.size() >= 1024) return fail("more than 1024 ports");
    out.push_back(static_cast<uint16_t>(*port));
  }
  return out;
}

// One CIDR of kubernetes.external_networks, as CidrClasses::parse takes it.
Result<void> check_cidr(std::string_view text) {
  if (auto cidr = Cidr::parse(text); !cidr) {
    return fail(quoted(text) + " is not a CIDR: " + cidr.error().message);
  }
  return {};
}

// NAME=CIDR,CIDR;NAME=CIDR (the YAML mapping arrives in this form too): the classes within the
// caps, each name valid, each CIDR one CidrClasses::parse takes.
Result<config::NamedLists> parse_external_networks(std::string_view text) {
  auto classes = config::parse_map_of_lists_text(text);
  if (!classes) return classes;
  if (classes->size() > kMaxExternalNetworkClasses) {
    return fail(std::to_string(classes->size()) + " classes; at most " +
                std::to_string(kMaxExternalNetworkClasses) + " are allowed");
  }
  size_t cidrs = 0;
  for (const auto& [name, list] : *classes) {
    if (!external_network_name(name)) {
      return fail("the class name " + quoted(name) +
                  " is not 1 to 63 letters, digits, '_', '-' or '.'");
    }
    cidrs += list.size();
  }
  if (cidrs > kMaxExternalNetworkCidrs) {
    return fail(std::to_string(cidrs) + " CIDRs; at most " +
                std::to_string(kMaxExternalNetworkCidrs) + " are allowed in all classes");
  }
  if (auto checked = CidrClasses::parse(*classes); !checked) return fail(checked.error().message);
  return classes;
}

Setting command(const char* flag, const char* help, bool Options::*member) {
  return {flag,
          nullptr,
          nullptr,
          Type::kSwitch,
          nullptr,
          help,
          [member](Options& o, std::string_view) -> Result<void> {
            o.*member = true;
            return {};
          },
          [](const Options&) { return std::string(); }};
}

const std::vector<Setting>& settings() {
  static const std::vector<Setting> kSettings = {
      {"config", "NETMON_CONFIG", nullptr, Type::kString, "FILE",
       "YAML configuration file holding any of the keys below and the rules (egress, ingress, "
       "lists, macros); flags and variables override its values",
       [](Options& o, std::string_view v) -> Result<void> {
         if (v.empty()) return fail("the file name is empty");
         o.config_file = std::string(v);
         return {};
       },
       [](const Options& o) { return o.config_file; }},
      {"log-level", "NETMON_LOG_LEVEL", "log_level", Type::kString, "LEVEL",
       "debug, info, warn or error",
       [](Options& o, std::string_view v) -> Result<void> {
         auto level = log::parse_level(v);
         if (!level) return fail(quoted(v) + " is not one of debug, info, warn, error");
         o.log_level = *level;
         return {};
       },
       [](const Options& o) { return std::string(level_name(o.log_level)); }},
      {"hook-variant", "NETMON_HOOK_VARIANT", "hook_variant", Type::kString, "VARIANT",
       "how kernel hooks attach: auto (probe the kernel), or HOOK=VARIANT,... with "
       "state=tp_btf|tracepoint, accept=fexit|tracepoint|tp_btf, process=tp_btf|raw_tp; a bare "
       "tp_btf or tracepoint sets the state hook",
       [](Options& o, std::string_view v) -> Result<void> {
         auto variants = parse_hook_variants(v);
         if (!variants) return fail(variants.error().message);
         o.probe.variants = *variants;
         return {};
       },
       [](const Options& o) { return hook_variants_text(o.probe.variants); }},
      {"ring-buffer-bytes", "NETMON_RING_BUFFER_BYTES", "ring_buffer_bytes", Type::kNumber, "BYTES",
       "kernel ring buffer size, a power of two from 4096 to 1073741824",
       [](Options& o, std::string_view v) -> Result<void> {
         auto n = parse_size(v, 4096, 1u << 30);
         if (!n) return fail(n.error().message);
         if ((*n & (*n - 1)) != 0) return fail(std::to_string(*n) + " is not a power of two");
         o.probe.ring_buffer_bytes = static_cast<uint32_t>(*n);
         return {};
       },
       [](const Options& o) { return std::to_string(o.probe.ring_buffer_bytes); }},
      number(
          "max-connections", "NETMON_MAX_CONNECTIONS", "max_connections", "N",
          "live connections tracked at once, 1024 to 16777216", 1024, 1u << 24,
          [](auto& o) -> auto& { return o.probe.max_connections; }),
      boolean(
          "preallocate-connections", "NETMON_PREALLOCATE_CONNECTIONS", "preallocate_connections",
          "take the kernel memory for all max_connections at start (about 184 bytes each: "
          "46 MiB for 262144), which makes tracking a connection cheaper; false: allocate it "
          "per connection",
          [](auto& o) -> auto& { return o.probe.preallocate_connections; }),
      number(
          "output-queue-bytes", "NETMON_OUTPUT_QUEUE_BYTES", "output.queue_bytes", "BYTES",
          "events buffered for a slow stdout before they are dropped and counted, 65536 to "
          "4294967296",
          65536, 1ull << 32, [](auto& o) -> auto& { return o.output_queue_bytes; }),
      number(
          "output-max-pause-ms", "NETMON_OUTPUT_MAX_PAUSE_MS", "output.max_pause_ms", "MS",
          "when the output queue is full, how long the kernel reader may pause, leaving records "
          "in the ring buffer, before it drops events and counts them; it never waits once the "
          "ring buffer is half full. 0 to 60000; 0: drop at once",
          0, 60000, [](auto& o) -> auto& { return o.output_max_pause_ms; }),
      {"proc-root", "NETMON_PROC_ROOT", "process_table.proc_root", Type::kString, "DIR",
       "where the host's proc filesystem is mounted (/host/proc in a container)",
       [](Options& o, std::string_view v) -> Result<void> {
         if (v.empty() || v.front() != '/') return fail(quoted(v) + " is not an absolute path");
         o.proc_root = std::string(v);
         while (o.proc_root.size() > 1 && o.proc_root.back() == '/') o.proc_root.pop_back();
         return {};
       },
       [](const Options& o) { return o.proc_root; }},
      number(
          "max-processes", "NETMON_MAX_PROCESSES", "process_table.max_processes", "N",
          "processes kept in the process table, live and recently exited, 1024 to 4194304", 1024,
          1u << 22, [](auto& o) -> auto& { return o.max_processes; }),
      {"kubelet-url", "NETMON_KUBELET_URL", "kubernetes.kubelet_url", Type::kString, "URL",
       "the kubelet's pods endpoint, e.g. https://10.0.0.5:10250/pods; empty (the default): "
       "https://$NODE_IP:10250/pods in a cluster, else no pod metadata",
       [](Options& o, std::string_view v) -> Result<void> {
         std::string_view rest = v;
         if (rest.starts_with("https://")) {
           rest.remove_prefix(8);
         } else if (rest.starts_with("http://")) {
           rest.remove_prefix(7);
         } else if (!v.empty()) {
           return fail(quoted(v) + " is not an http(s) URL");
         }
         if (!v.empty() && (rest.empty() || rest.front() == '/')) {
           return fail(quoted(v) + " has no host");
         }
         o.kubelet_url = std::string(v);
         return {};
       },
       [](const Options& o) { return o.kubelet_url; }},
      text(
          "kubelet-token-file", "NETMON_KUBELET_TOKEN_FILE", "kubernetes.token_file", "FILE",
          "bearer token for the kubelet, re-read when it changes; empty (the default): the "
          "service-account token in a cluster",
          [](auto& o) -> auto& { return o.kubelet_token_file; }),
      text(
          "kubelet-ca-file", "NETMON_KUBELET_CA_FILE", "kubernetes.ca_file", "FILE",
          "CA bundle that signed the kubelet's serving certificate; empty (the default): the "
          "service-account CA in a cluster",
          [](auto& o) -> auto& { return o.kubelet_ca_file; }),
      boolean(
          "kubelet-insecure-skip-verify", "NETMON_KUBELET_INSECURE_SKIP_VERIFY",
          "kubernetes.insecure_skip_verify",
          "do not verify the kubelet's certificate (for kubeadm's self-signed serving "
          "certificates)",
          [](auto& o) -> auto& { return o.kubelet_insecure_skip_verify; }),
      boolean(
          "kubelet-allow-http-token", "NETMON_KUBELET_ALLOW_HTTP_TOKEN",
          "kubernetes.kubelet_allow_http_token",
          "send the bearer token to an http:// kubelet URL, in cleartext (without it, a token "
          "with such a URL is a configuration error)",
          [](auto& o) -> auto& { return o.kubelet_allow_http_token; }),
      number(
          "kubelet-poll-interval", "NETMON_KUBELET_POLL_INTERVAL",
          "kubernetes.poll_interval_seconds", "SECONDS",
          "how often the kubelet's pods are polled, 1 to 3600", 1, 3600,
          [](auto& o) -> auto& { return o.kubelet_poll_interval_s; }),
      number(
          "pod-grace-period", "NETMON_POD_GRACE_PERIOD", "kubernetes.pod_grace_period_seconds",
          "SECONDS", "how long a deleted pod stays resolvable for late events, 0 to 86400", 0,
          86400, [](auto& o) -> auto& { return o.pod_grace_period_s; }),
      boolean(
          "pod-labels", "NETMON_POD_LABELS", "kubernetes.labels",
          "write the pod's labels into events (pod.labels)",
          [](auto& o) -> auto& { return o.pod_labels; }),
      text(
          "node-name", "NETMON_NODE_NAME", "kubernetes.node_name", "NAME",
          "this node's name, written as node_name; empty (the default): $NODE_NAME, else the "
          "host name",
          [](auto& o) -> auto& { return o.node_name; }),
      {"cgroup-root", "NETMON_CGROUP_ROOT", "kubernetes.cgroup_root", Type::kString, "DIR",
       "where the host's cgroup v2 hierarchy is mounted; empty (the default): found in "
       "/proc/self/mountinfo",
       [](Options& o, std::string_view v) -> Result<void> {
         if (!v.empty() && v.front() != '/') {
           return fail(quoted(v) + " is not an absolute path");
         }
         o.cgroup_root = std::string(v);
         return {};
       },
       [](const Options& o) { return o.cgroup_root; }},
      {"kube-api-url", "NETMON_KUBE_API_URL", "kubernetes.api_url", Type::kString, "URL",
       "the Kubernetes API server, https://HOST:PORT without a path, watched for the peers' "
       "names (services, endpoint slices, nodes, optionally pods); empty (the default): in a "
       "cluster https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT with the "
       "service-account token and CA, else none (peers are named from this node's pods, its "
       "own addresses and the external networks)",
       [](Options& o, std::string_view v) -> Result<void> {
         if (!v.empty()) {
           if (auto url = parse_kube_api_url(v); !url) return fail(url.error().message);
         }
         o.kube_api_url = std::string(v);
         return {};
       },
       [](const Options& o) { return o.kube_api_url; }},
      text(
          "kube-api-token-file", "NETMON_KUBE_API_TOKEN_FILE", "kubernetes.api_token_file", "FILE",
          "bearer token for the API server, re-read when it changes; empty (the default): the "
          "service-account token in a cluster",
          [](auto& o) -> auto& { return o.kube_api_token_file; }),
      text(
          "kube-api-ca-file", "NETMON_KUBE_API_CA_FILE", "kubernetes.api_ca_file", "FILE",
          "CA bundle that signed the API server's certificate; empty (the default): the "
          "service-account CA in a cluster",
          [](auto& o) -> auto& { return o.kube_api_ca_file; }),
      boolean(
          "kube-api-insecure-skip-verify", "NETMON_KUBE_API_INSECURE_SKIP_VERIFY",
          "kubernetes.api_insecure_skip_verify", "do not verify the API server's certificate",
          [](auto& o) -> auto& { return o.kube_api_insecure_skip_verify; }),
      boolean(
          "kube-api-allow-http-token", "NETMON_KUBE_API_ALLOW_HTTP_TOKEN",
          "kubernetes.api_allow_http_token",
          "send the bearer token to an http:// API server URL, in cleartext (without it, a "
          "token with such a URL is a configuration error)",
          [](auto& o) -> auto& { return o.kube_api_allow_http_token; }),
      boolean(
          "watch-services", "NETMON_WATCH_SERVICES", "kubernetes.watch_services",
          "watch the cluster's Services and EndpointSlices to name service and pod peers, as "
          "kube-proxy does on every node (default true)",
          [](auto& o) -> auto& { return o.watch_services; }),
      boolean(
          "watch-nodes", "NETMON_WATCH_NODES", "kubernetes.watch_nodes",
          "watch the cluster's Nodes to name node peers (default true; its API server cost grows "
          "with the square of the node count: docs/kubernetes.md)",
          [](auto& o) -> auto& { return o.watch_nodes; }),
      boolean(
          "watch-pods", "NETMON_WATCH_PODS", "kubernetes.watch_pods",
          "also watch every pod of the cluster, to name pods that no service selects (an API "
          "server watch of all pods from each node)",
          [](auto& o) -> auto& { return o.watch_pods; }),
      boolean(
          "peer-labels", "NETMON_PEER_LABELS", "kubernetes.peer_labels",
          "write a pod peer's labels into events (peer.labels)",
          [](auto& o) -> auto& { return o.peer_labels; }),
      {"external-networks", "NETMON_EXTERNAL_NETWORKS", "kubernetes.external_networks",
       Type::kMapOfLists, "CLASSES",
       "named classes of CIDRs for peers outside the cluster, "
       "NAME=CIDR,CIDR;NAME=CIDR (in the file a mapping of names to lists, in order): "
       "peer.network is the first class with a CIDR containing the address, else internet; "
       "at most 64 classes and 4096 CIDRs; default none",
       [](Options& o, std::string_view v) -> Result<void> {
         auto classes = parse_external_networks(v);
         if (!classes) return fail(classes.error().message);
         o.external_networks = std::move(*classes);
         return {};
       },
       [](const Options& o) { return config::map_of_lists_text(o.external_networks); }, check_cidr},
      boolean(
          "conntrack", "NETMON_CONNTRACK", "nat.conntrack",
          "read the node's connection tracking for the backend a translated connection reached "
          "and the client before translation (peer.backend, peer.original; default true)",
          [](auto& o) -> auto& { return o.conntrack; }),
      number(
          "conntrack-max-entries", "NETMON_CONNTRACK_MAX_ENTRIES", "nat.max_entries", "N",
          "translated connections held from conntrack at once, 1024 to 4194304 (default 65536)",
          1024, 1u << 22, [](auto& o) -> auto& { return o.conntrack_max_entries; }),
      {"conntrack-netns", "NETMON_CONNTRACK_NETNS", "nat.netns", Type::kString, "PATH",
       "the network namespace whose conntrack is read, e.g. /host/proc/1/ns/net (the node's, "
       "for an agent without host networking; entering it needs CAP_SYS_ADMIN); empty (the "
       "default): the agent's own",
       [](Options& o, std::string_view v) -> Result<void> {
         if (!v.empty() && v.front() != '/') return fail(quoted(v) + " is not an absolute path");
         o.conntrack_netns = std::string(v);
         return {};
       },
       [](const Options& o) { return o.conntrack_netns; }},
      {"metrics-address", "NETMON_METRICS_ADDRESS", "metrics.address", Type::kString, "HOST:PORT",
       "where /metrics, /healthz and /readyz are served: IPV4:PORT, [IPV6]:PORT, NAME:PORT or "
       ":PORT; port 0 picks a free port; \"off\" disables",
       [](Options& o, std::string_view v) -> Result<void> {
         if (v == "off" || v.empty()) {
           o.metrics_address.clear();
           return {};
         }
         auto a = parse_listen_address(v);
         if (!a) return fail(a.error().message);
         if (auto h = check_listen_host(v, *a); !h) return fail(h.error().message);
         o.metrics_address = std::string(v);
         return {};
       },
       [](const Options& o) {
         return o.metrics_address.empty() ? std::string("off") : o.metrics_address;
       }},
      {"metrics-drop-labels", "NETMON_METRICS_DROP_LABELS", "metrics.drop_labels", Type::kList,
       "LABELS",
       "connection-metric labels to drop, comma separated (a list in the file): direction, "
       "namespace, pod, container, workload; default none",
       [](Options& o, std::string_view v) -> Result<void> {
         auto labels = parse_dropped_labels(v);
         if (!labels) return fail(labels.error().message);
         o.metrics_drop_labels = std::move(*labels);
         return {};
       },
       [](const Options& o) {
         return comma_joined(o.metrics_drop_labels, [](const std::string& label) { return label; });
       }},
      boolean(
          "metrics-edges", "NETMON_METRICS_EDGES", "metrics.edges",
          "export the service map's edge metrics: connections, failures, bytes, retransmits, RTT "
          "and duration per (workload, direction, peer) edge (netmon_edge_*)",
          [](auto& o) -> auto& { return o.edges.enabled; }),
      number(
          "metrics-max-edges", "NETMON_METRICS_MAX_EDGES", "metrics.max_edges", "N",
          "edges exported at most, 1 to 100000; past it new edges are counted in "
          "one overflow series per direction",
          1, 100000, [](auto& o) -> auto& { return o.edges.max_edges; }),
      number(
          "metrics-edge-idle-seconds", "NETMON_METRICS_EDGE_IDLE_SECONDS",
          "metrics.edge_idle_seconds", "SECONDS",
          "an edge without events for this long and without open connections is removed, 1 to "
          "86400",
          1, 86400, [](auto& o) -> auto& { return o.edges.idle_seconds; }),
      {"metrics-edge-ports", "NETMON_METRICS_EDGE_PORTS", "metrics.edge_ports", Type::kList,
       "PORTS",
       "server ports written in the edges' port label, comma separated (a list in the file); "
       "others are written empty",
       [](Options& o, std::string_view v) -> Result<void> {
         auto ports = parse_ports(v);
         if (!ports) return fail(ports.error().message);
         o.edges.ports = std::move(*ports);
         return {};
       },
       [](const Options& o) {
         return comma_joined(o.edges.ports, [](uint16_t port) { return std::to_string(port); });
       }},
      boolean(
          "metrics-edge-host-workload", "NETMON_METRICS_EDGE_HOST_WORKLOAD",
          "metrics.edge_host_workload",
          "name a host process's edges after its binary (the workload label)",
          [](auto& o) -> auto& { return o.edges.host_workload; }),
      boolean(
          "events-establish", "NETMON_EVENTS_ESTABLISH", "events.establish",
          "report outbound connections that were established (TcpConnectionEstablish)",
          [](auto& o) -> auto& { return o.events.establish; }),
      boolean(
          "events-accept", "NETMON_EVENTS_ACCEPT", "events.accept",
          "report inbound connections that were accepted (TcpConnectionAccept)",
          [](auto& o) -> auto& { return o.events.accept; }),
      boolean(
          "events-close", "NETMON_EVENTS_CLOSE", "events.close",
          "report connections that were closed (TcpConnectionClose)",
          [](auto& o) -> auto& { return o.events.close; }),
      boolean(
          "events-failed", "NETMON_EVENTS_FAILED", "events.failed",
          "report outbound connections that failed (TcpConnectionFailed)",
          [](auto& o) -> auto& { return o.events.failed; }),
      boolean(
          "events-preexisting", "NETMON_EVENTS_PREEXISTING", "events.preexisting",
          "at start, report the connections that are older than the agent (an Establish or "
          "Accept with preexisting: true; default true)",
          [](auto& o) -> auto& { return o.preexisting; }),
      // Fault injection for the integration tests: only a variable, not in the help or the file.
      {nullptr, "NETMON_FAULT_SKIP_STATE", nullptr, Type::kString, "CLASSES",
       "the state tracepoint programs ignore these classes of changes (open, end; comma "
       "separated); for tests only",
       [](Options& o, std::string_view v) -> Result<void> {
         auto bits = parse_fault_skip_state(v);
         if (!bits) return fail(bits.error().message);
         o.probe.fault_skip_state = *bits;
         o.fault_skip_state = std::string(v);
         return {};
       },
       [](const Options& o) { return o.fault_skip_state; }},
      {nullptr, "NETMON_FAULT_SNAPSHOT", nullptr, Type::kString, "MECHANISM",
       "\"netlink\": the start-up snapshot takes its fallback (sock_diag and a /proc scan) even "
       "where the task/file iterator loads; for tests only",
       [](Options& o, std::string_view v) -> Result<void> {
         if (v != "" && v != "netlink") return fail(quoted(v) + " is not \"netlink\" or empty");
         o.probe.snapshot_netlink = v == "netlink";
         return {};
       },
       [](const Options& o) { return std::string(o.probe.snapshot_netlink ? "netlink" : ""); }},
      {nullptr, "NETMON_FAULT_CONNTRACK_BUFFER", nullptr, Type::kNumber, "BYTES",
       "the conntrack event socket's receive buffer, 0 (the default 8 MiB) or 1 to 67108864 "
       "bytes, so that a test can overflow it; for tests only",
       [](Options& o, std::string_view v) -> Result<void> {
         uint64_t n = 0;
         auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
         if (ec != std::errc() || end != v.data() + v.size() || n > (64u << 20)) {
           return fail(quoted(v) + " is not a number of bytes from 0 to 67108864");
         }
         o.fault_conntrack_buffer = static_cast<int>(n);
         return {};
       },
       [](const Options& o) { return std::to_string(o.fault_conntrack_buffer); }},
      command("print-config",
              "validate the configuration as a start does (exit 2 when it is invalid), print "
              "it as YAML (loadable with --config) and exit",
              &Options::print_config),
      command("check-config",
              "validate the configuration as a start does (values, rules compiled) without "
              "loading BPF, and exit: 0 when valid, 2 when not (for CI and Helm hooks)",
              &Options::check_config),
      command("help", "print this help and exit", &Options::show_help),
      command("version", "print the version and exit", &Options::show_version),
  };
  return kSettings;
}

const Setting* find_flag(std::string_view flag) {
  for (const Setting& s : settings()) {
    if (s.flag && flag == s.flag) return &s;
  }
  return nullptr;
}

config::Kind kind_of(Type type) {
  switch (type) {
    case Type::kBool:
      return config::Kind::kBool;
    case Type::kNumber:
      return config::Kind::kNumber;
    case Type::kList:
      return config::Kind::kList;
    case Type::kMapOfLists:
      return config::Kind::kMapOfLists;
    case Type::kString:
    case Type::kSwitch:
      break;
  }
  return config::Kind::kString;
}

const std::vector<config::Key>& config_keys() {
  static const std::vector<config::Key> kKeys = [] {
    std::vector<config::Key> keys;
    for (const Setting& s : settings()) {
      if (s.key) keys.push_back({s.key, kind_of(s.type), s.check_item});
    }
    return keys;
  }();
  return kKeys;
}

Result<void> apply_document(Options& options, const config::Document& document,
                            std::string_view source) {
  for (const config::Value& value : document.values) {
    for (const Setting& s : settings()) {
      if (!s.key || value.key != s.key) continue;
      if (auto r = s.apply(options, value.text); !r) {
        return fail(std::string(source) + ":" + std::to_string(value.line) + ":" +
                    std::to_string(value.column) + ": " + value.key + ": " + r.error().message);
      }
    }
  }
  options.rules = document.rules;
  return {};
}

struct GivenFlag {
  const Setting* setting;
  std::string value;
};

Result<void> apply_flag(Options& options, const GivenFlag& given) {
  if (auto r = given.setting->apply(options, given.value); !r) {
    return fail(std::string("invalid --") + given.setting->flag + ": " + r.error().message);
  }
  return {};
}

Result<void> apply_env(Options& options, const Setting& s, const EnvLookup& env,
                       const std::vector<GivenFlag>& given) {
  if (!s.env) return {};
  for (const GivenFlag& g : given) {
    if (g.setting == &s) return {};  // the flag wins, and hides a bad variable
  }
  if (auto value = env(s.env)) {
    if (auto r = s.apply(options, *value); !r) {
      const std::string& why = r.error().message;
      if (why.starts_with(std::string(s.env) + ": ")) return fail(why);  // it names the variable
      return fail(std::string("invalid ") + s.env + ": " + why);
    }
  }
  return {};
}

// Word-wraps `text` to `width` columns, continuation lines indented by `indent`.
std::string wrap(std::string_view text, size_t indent, size_t width) {
  std::string out;
  size_t column = indent;
  while (!text.empty()) {
    const size_t space = text.find(' ');
    const std::string_view word = text.substr(0, space);
    if (column > indent && column + 1 + word.size() > width) {
      out += '\n' + std::string(indent, ' ');
      column = indent;
    } else if (column > indent) {
      out += ' ';
      ++column;
    }
    out += word;
    column += word.size();
    text = space == std::string_view::npos ? std::string_view() : text.substr(space + 1);
  }
  return out;
}

}  // namespace

EnvLookup process_environment() {
  return [](const char* name) -> std::optional<std::string> {
    if (const char* v = std::getenv(name)) return std::string(v);
    return std::nullopt;
  };
}

Result<Options> parse_options(const std::vector<std::string>& args, const EnvLookup& env) {
  std::vector<GivenFlag> given;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (arg.substr(0, 2) != "--") {
      return fail("unexpected argument " + quoted(arg) + " (see --help)");
    }
    arg.remove_prefix(2);
    std::optional<std::string> inline_value;
    if (auto eq = arg.find('='); eq != std::string_view::npos) {
      inline_value = std::string(arg.substr(eq + 1));
      arg = arg.substr(0, eq);
    }
    const Setting* setting = find_flag(arg);
    if (!setting)
      return fail("unknown flag " + quoted(args[i].substr(0, 2 + arg.size())) + " (see --help)");
    std::string value;
    switch (setting->type) {
      case Type::kSwitch:
        if (inline_value) return fail("--" + std::string(arg) + " takes no value");
        break;
      case Type::kBool:  // --flag or --flag=false; a following argument is never its value
        value = inline_value ? *inline_value : "true";
        break;
      case Type::kNumber:
      case Type::kString:
      case Type::kList:
      case Type::kMapOfLists:
        if (inline_value) {
          value = *inline_value;
        } else if (i + 1 < args.size()) {
          value = args[++i];
        } else {
          return fail("--" + std::string(arg) + " needs a value (" + setting->value_name + ")");
        }
        break;
    }
    given.push_back({setting, std::move(value)});
  }

  // The configuration file's name first (variable, then flags), then the file, the variables
  // and the flags, each over the one before.
  Options options;
  const Setting* config_setting = find_flag("config");
  if (auto r = apply_env(options, *config_setting, env, given); !r)
    return tl::unexpected(r.error());
  for (const GivenFlag& g : given) {
    if (g.setting != config_setting) continue;
    if (auto r = apply_flag(options, g); !r) return tl::unexpected(r.error());
  }
  if (!options.config_file.empty()) {
    auto document = config::load_file(options.config_file, config_keys());
    if (!document) return tl::unexpected(document.error());
    if (auto r = apply_document(options, *document, options.config_file); !r) {
      return tl::unexpected(r.error());
    }
  }
  for (const Setting& s : settings()) {
    if (&s == config_setting) continue;
    if (auto r = apply_env(options, s, env, given); !r) return tl::unexpected(r.error());
  }
  for (const GivenFlag& g : given) {
    if (g.setting == config_setting) continue;
    if (auto r = apply_flag(options, g); !r) return tl::unexpected(r.error());
  }
  return options;
}

Result<void> apply_config(Options& options, std::string_view yaml, std::string_view source) {
  auto document = config::parse(yaml, source, config_keys());
  if (!document) return tl::unexpected(document.error());
  return apply_document(options, *document, source);
}

std::string render_config(const Options& options) {
  std::vector<std::pair<config::Key, std::string>> values;
  for (const Setting& s : settings()) {
    if (s.key) values.emplace_back(config::Key{s.key, kind_of(s.type)}, s.show(options));
  }
  return config::render(values, options.rules,
                        "netmon-agent configuration: every key with its effective value "
                        "(netmon-agent --print-config)");
}

std::string usage_text() {
  constexpr size_t kIndent = 34;
  constexpr size_t kWidth = 100;
  const Options defaults;
  std::string out =
      "Usage: netmon-agent [--config FILE] [FLAGS]\n"
      "\n"
      "Reports every TCP connection on this host (established, accepted, failed, closed) as one\n"
      "JSON object per line on stdout. Logs go to stderr. Needs root (or CAP_BPF, CAP_PERFMON,\n"
      "CAP_SYS_RESOURCE) and a kernel with BTF.\n"
      "\n"
      "Every setting is a flag, an environment variable and a key in the YAML configuration file\n"
      "(dotted keys are nested mappings: kubernetes.kubelet_url is kubelet_url under kubernetes).\n"
      "Flags override variables, which override the file, which overrides the defaults. Boolean\n"
      "flags are --flag (true) or --flag=false; variables take true/false, 1/0 or yes/no; the\n"
      "file takes true or false, unquoted. The rules (egress, ingress, lists, macros) are only\n"
      "in the file. --print-config shows the result.\n"
      "\n"
      "Flags:\n";
  for (const Setting& s : settings()) {
    if (!s.flag) continue;  // a variable for tests only
    std::string left = std::string("  --") + s.flag;
    if (s.type == Type::kBool) left += "[=BOOL]";
    if (s.value_name) left += std::string(" ") + s.value_name;
    out += left;
    out += left.size() < kIndent ? std::string(kIndent - left.size(), ' ')
                                 : "\n" + std::string(kIndent, ' ');
    std::string help = s.help;
    if (s.type != Type::kSwitch && s.flag != std::string_view("config")) {
      if (const std::string d = s.show(defaults); !d.empty()) {
        help += " (default ";
        for (const char c : d) {
          help += c;
          if (c == ',' && s.type == Type::kList) help += ' ';  // "a, b" wraps; "a,b" is one word
        }
        help += ")";
      }
    }
    if (s.env || s.key) {
      help += " [";
      if (s.env) help += s.env;
      if (s.env && s.key) help += ", ";
      if (s.key) help += std::string("key ") + s.key;
      help += "]";
    }
    out += wrap(help, kIndent, kWidth);
    out += '\n';
  }
  out +=
      "\nExit status: 0 after SIGTERM, SIGINT or SIGHUP (SIGUSR1 logs a status line), 2 for a\n"
      "configuration error, 3 when stdout failed (e.g. EPIPE: its reader is gone), 1 for any\n"
      "other start-up failure.\n";
  return out;
}

}  // namespace netmon
