#include "cli/options.h"

#include <charconv>
#include <cstdlib>

#include "metrics/http_server.h"
#include "metrics/metrics.h"

namespace netmon {
namespace {

// One setting: its flag, its environment variable, and how a text value is applied.
struct Setting {
  const char* flag;  // without the leading "--"
  const char* env;
  const char* value_name;  // nullptr: a switch without a value
  const char* help;
  std::function<Result<void>(Options&, std::string_view)> apply;
};

Result<uint64_t> parse_size(std::string_view text, uint64_t min, uint64_t max) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return fail("'" + std::string(text) + "' is not a non-negative integer");
  }
  if (value < min || value > max) {
    return fail(std::to_string(value) + " is out of range [" + std::to_string(min) + ", " +
                std::to_string(max) + "]");
  }
  return value;
}

// Switches take no value on the command line ("" means on); their environment variables take
// true/false, 1/0, yes/no.
Result<bool> parse_bool(std::string_view text) {
  if (text.empty() || text == "true" || text == "1" || text == "yes") return true;
  if (text == "false" || text == "0" || text == "no") return false;
  return fail("'" + std::string(text) + "' is not true or false");
}

const std::vector<Setting>& settings() {
  static const std::vector<Setting> kSettings = {
      {"log-level", "NETMON_LOG_LEVEL", "LEVEL", "debug, info, warn or error (default info)",
       [](Options& o, std::string_view v) -> Result<void> {
         auto level = log::parse_level(v);
         if (!level) return fail("'" + std::string(v) + "' is not one of debug, info, warn, error");
         o.log_level = *level;
         return {};
       }},
      {"hook-variant", "NETMON_HOOK_VARIANT", "VARIANT",
       "how the TCP state hook attaches: auto, tp_btf or tracepoint (default auto)",
       [](Options& o, std::string_view v) -> Result<void> {
         auto variant = parse_hook_variant(v);
         if (!variant)
           return fail("'" + std::string(v) + "' is not one of auto, tp_btf, tracepoint");
         o.probe.variant = *variant;
         return {};
       }},
      {"ring-buffer-bytes", "NETMON_RING_BUFFER_BYTES", "BYTES",
       "kernel ring buffer size, a power of two (default 8388608)",
       [](Options& o, std::string_view v) -> Result<void> {
         auto n = parse_size(v, 4096, 1u << 30);
         if (!n) return fail(n.error().message);
         if ((*n & (*n - 1)) != 0) return fail(std::to_string(*n) + " is not a power of two");
         o.probe.ring_buffer_bytes = static_cast<uint32_t>(*n);
         return {};
       }},
      {"max-connections", "NETMON_MAX_CONNECTIONS", "N",
       "live connections tracked at once (default 262144)",
       [](Options& o, std::string_view v) -> Result<void> {
         auto n = parse_size(v, 1024, 1u << 24);
         if (!n) return fail(n.error().message);
         o.probe.max_connections = static_cast<uint32_t>(*n);
         return {};
       }},
      {"output-queue-bytes", "NETMON_OUTPUT_QUEUE_BYTES", "BYTES",
       "events buffered for a slow stdout before they are dropped and counted (default 67108864)",
       [](Options& o, std::string_view v) -> Result<void> {
         auto n = parse_size(v, 65536, 1ull << 32);
         if (!n) return fail(n.error().message);
         o.output_queue_bytes = *n;
         return {};
       }},
      {"proc-root", "NETMON_PROC_ROOT", "DIR",
       "where the host's proc filesystem is mounted (default /proc; /host/proc in a container)",
       [](Options& o, std::string_view v) -> Result<void> {
         if (v.empty() || v.front() != '/')
           return fail("'" + std::string(v) + "' is not an absolute path");
         o.proc_root = std::string(v);
         while (o.proc_root.size() > 1 && o.proc_root.back() == '/') o.proc_root.pop_back();
         return {};
       }},
      {"max-processes", "NETMON_MAX_PROCESSES", "N",
       "processes kept in the process table, live and recently exited (default 65536)",
       [](Options& o, std::string_view v) -> Result<void> {
         auto n = parse_size(v, 1024, 1u << 22);
         if (!n) return fail(n.error().message);
         o.max_processes = *n;
         return {};
       }},
      {"kubelet-url", "NETMON_KUBELET_URL", "URL",
       "the kubelet's pods endpoint, e.g. https://10.0.0.5:10250/pods (default in a cluster: "
       "https://$NODE_IP:10250/pods; none: no pod metadata)",
       [](Options& o, std::string_view v) -> Result<void> {
         if (v.substr(0, 8) != "https://" && v.substr(0, 7) != "http://") {
           return fail("'" + std::string(v) + "' is not an http(s) URL");
         }
         o.kubelet_url = std::string(v);
         return {};
       }},
      {"kubelet-token-file", "NETMON_KUBELET_TOKEN_FILE", "FILE",
       "bearer token for the kubelet, re-read when it changes (default in a cluster: the "
       "service-account token)",
       [](Options& o, std::string_view v) -> Result<void> {
         o.kubelet_token_file = std::string(v);
         return {};
       }},
      {"kubelet-ca-file", "NETMON_KUBELET_CA_FILE", "FILE",
       "CA bundle that signed the kubelet's serving certificate (default in a cluster: the "
       "service-account CA)",
       [](Options& o, std::string_view v) -> Result<void> {
         o.kubelet_ca_file = std::string(v);
         return {};
       }},
      {"kubelet-insecure-skip-verify", "NETMON_KUBELET_INSECURE_SKIP_VERIFY", nullptr,
       "do not verify the kubelet's certificate (for kubeadm's self-signed serving certificates)",
       [](Options& o, std::string_view v) -> Result<void> {
         auto b = parse_bool(v);
         if (!b) return fail(b.error().message);
         o.kubelet_insecure_skip_verify = *b;
         return {};
       }},
      {"kubelet-poll-interval", "NETMON_KUBELET_POLL_INTERVAL", "SECONDS",
       "how often the kubelet's pods are polled (default 10)",
       [](Options& o, std::string_view v) -> Result<void> {
         auto n = parse_size(v, 1, 3600);
         if (!n) return fail(n.error().message);
         o.kubelet_poll_interval_s = static_cast<uint32_t>(*n);
         return {};
       }},
      {"pod-grace-period", "NETMON_POD_GRACE_PERIOD", "SECONDS",
       "how long a deleted pod stays resolvable for late events (default 60)",
       [](Options& o, std::string_view v) -> Result<void> {
         auto n = parse_size(v, 0, 86400);
         if (!n) return fail(n.error().message);
         o.pod_grace_period_s = static_cast<uint32_t>(*n);
         return {};
       }},
      {"node-name", "NETMON_NODE_NAME", "NAME",
       "this node's name, written as node_name (default $NODE_NAME, else the host name)",
       [](Options& o, std::string_view v) -> Result<void> {
         o.node_name = std::string(v);
         return {};
       }},
      {"cgroup-root", "NETMON_CGROUP_ROOT", "DIR",
       "where the host's cgroup v2 hierarchy is mounted (default: found in /proc/self/mountinfo)",
       [](Options& o, std::string_view v) -> Result<void> {
         if (v.empty() || v.front() != '/') {
           return fail("'" + std::string(v) + "' is not an absolute path");
         }
         o.cgroup_root = std::string(v);
         return {};
       }},
      {"metrics-address", "NETMON_METRICS_ADDRESS", "HOST:PORT",
       "where /metrics, /healthz and /readyz are served (default 0.0.0.0:9477; port 0 picks a "
       "free port; \"off\" disables)",
       [](Options& o, std::string_view v) -> Result<void> {
         if (v == "off" || v.empty()) {
           o.metrics_address.clear();
           return {};
         }
         if (auto a = parse_listen_address(v); !a) return fail(a.error().message);
         o.metrics_address = std::string(v);
         return {};
       }},
      {"metrics-drop-labels", "NETMON_METRICS_DROP_LABELS", "LABELS",
       "connection-metric labels to drop, comma separated: direction, namespace, pod, container, "
       "workload (default none)",
       [](Options& o, std::string_view v) -> Result<void> {
         auto labels = parse_dropped_labels(v);
         if (!labels) return fail(labels.error().message);
         o.metrics_drop_labels = std::move(*labels);
         return {};
       }},
      {"help", nullptr, nullptr, "print this help and exit",
       [](Options& o, std::string_view) -> Result<void> {
         o.show_help = true;
         return {};
       }},
      {"version", nullptr, nullptr, "print the version and exit",
       [](Options& o, std::string_view) -> Result<void> {
         o.show_version = true;
         return {};
       }},
  };
  return kSettings;
}

}  // namespace

EnvLookup process_environment() {
  return [](const char* name) -> std::optional<std::string> {
    if (const char* v = std::getenv(name)) return std::string(v);
    return std::nullopt;
  };
}

Result<Options> parse_options(const std::vector<std::string>& args, const EnvLookup& env) {
  // Flags first, so that a flag overrides (and so hides) a bad environment value.
  std::vector<std::pair<const Setting*, std::string>> given;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (arg.substr(0, 2) != "--") {
      return fail("unexpected argument '" + std::string(arg) + "' (see --help)");
    }
    arg.remove_prefix(2);
    std::optional<std::string> inline_value;
    if (auto eq = arg.find('='); eq != std::string_view::npos) {
      inline_value = std::string(arg.substr(eq + 1));
      arg = arg.substr(0, eq);
    }
    const Setting* setting = nullptr;
    for (const Setting& s : settings()) {
      if (arg == s.flag) setting = &s;
    }
    if (!setting) return fail("unknown flag --" + std::string(arg) + " (see --help)");
    std::string value;
    if (setting->value_name) {
      if (inline_value) {
        value = *inline_value;
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return fail("--" + std::string(arg) + " needs a value (" + setting->value_name + ")");
      }
    } else if (inline_value) {
      return fail("--" + std::string(arg) + " takes no value");
    }
    given.emplace_back(setting, std::move(value));
  }

  Options options;
  for (const Setting& s : settings()) {
    if (!s.env) continue;
    bool overridden = false;
    for (const auto& [setting, value] : given) overridden = overridden || setting == &s;
    if (overridden) continue;
    if (auto value = env(s.env)) {
      if (auto r = s.apply(options, *value); !r) {
        return fail(std::string("invalid ") + s.env + ": " + r.error().message);
      }
    }
  }
  for (const auto& [setting, value] : given) {
    if (auto r = setting->apply(options, value); !r) {
      return fail(std::string("invalid --") + setting->flag + ": " + r.error().message);
    }
  }
  return options;
}

std::string usage_text() {
  std::string out =
      "Usage: netmon-agent [FLAGS]\n"
      "\n"
      "Reports every TCP connection on this host (established, accepted, failed, closed) as one\n"
      "JSON object per line on stdout. Logs go to stderr. Needs root (or CAP_BPF, CAP_PERFMON,\n"
      "CAP_SYS_RESOURCE) and a kernel with BTF.\n"
      "\n"
      "Flags (each also settable as the environment variable shown):\n";
  for (const Setting& s : settings()) {
    std::string left = std::string("  --") + s.flag;
    if (s.value_name) left += std::string(" ") + s.value_name;
    out += left;
    out += std::string(left.size() < 32 ? 32 - left.size() : 1, ' ');
    out += s.help;
    if (s.env) out += std::string(" [") + s.env + "]";
    out += '\n';
  }
  out +=
      "\nExit status: 0 after SIGTERM or SIGINT, 2 for a configuration error, 1 for any other\n"
      "start-up failure.\n";
  return out;
}

}  // namespace netmon
