#include "app/agent.h"

#include <malloc.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "app/output_flow.h"
#include "app/pipeline.h"
#include "app/signals.h"
#include "bpf/probe.h"
#include "common/files.h"
#include "common/log.h"
#include "events/counters.h"
#include "k8s/attribution.h"
#include "k8s/in_cluster.h"
#include "k8s/kube_api.h"
#include "k8s/peer_snapshots.h"
#include "k8s/peer_watch.h"
#include "metrics/http_server.h"
#include "metrics/metrics.h"
#include "nat/conntrack_tracker.h"
#include "output/json.h"
#include "output/line_writer.h"
#include "process/table.h"
#include "rules/rules.h"
#include "rules/verdicts.h"

namespace netmon {
namespace {

// How long a stop may take to write what was read from the kernel before it.
constexpr std::chrono::seconds kStopDrain{5};
// While the output queue is full, how long the reader waits for room before it looks again at
// the ring buffer's fill level and the pause's time bound (OutputFlow).
constexpr std::chrono::milliseconds kPauseStep{10};
// A stdout pipe's buffer: four of the output's 256 KiB batches (the kernel's default pipe-max-size
// is 1 MiB), instead of the default 64 KiB that a batch fills 4 times over.
constexpr size_t kStdoutPipeBytes = 1u << 20;
// Allocations from this size on are mmapped (glibc's default, made fixed: run_agent()).
constexpr int kMmapThresholdBytes = 128 * 1024;

// The --proc-root directory is a proc filesystem: a wrong path would leave every event without
// its process (and the process table empty) instead of failing.
Result<void> check_proc_root(const std::string& root) {
  struct stat st {};
  if (::stat(root.c_str(), &st) != 0) {
    return fail("--proc-root " + root + ": " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) return fail("--proc-root " + root + ": not a directory");
  constexpr unsigned long kProcSuperMagic = 0x9fa0;  // PROC_SUPER_MAGIC, linux/magic.h
  struct statfs fs {};
  if (::statfs(root.c_str(), &fs) != 0 ||
      static_cast<unsigned long>(fs.f_type) != kProcSuperMagic) {
    return fail("--proc-root " + root +
                ": not a proc filesystem (in a container, mount the host's /proc there)");
  }
  return {};
}

// Events lost, by stage (events/counters.h): the kernel's and the probe's from `k`, the
// agent's from the decoder and the output.
LossCounts losses(const KernelCounters& k, const PipelineStats& s, const OutputStats& out) {
  LossCounts lost = k.lost;
  lost[loss_index(LossStage::kDecode)] = s.decode_errors;
  lost[loss_index(LossStage::kOutputQueue)] = out.lines_dropped_queue_full;
  lost[loss_index(LossStage::kOutputError)] = out.lines_dropped_write_error;
  return lost;
}

// "establish 1, accept 2, close 3, failed 4"
std::string by_kind_text(const EventCounts& n) {
  std::string text;
  for (size_t k = 0; k < n.size(); ++k) {
    text += (k ? ", " : "") + std::string(kEventKindNames[k]) + " " + std::to_string(n[k]);
  }
  return text;
}

// "ring_buffer 0, sockets_map 0, ..., output_error 0"
std::string by_stage_text(const LossCounts& n) {
  std::string text;
  for (const LossStageInfo& stage : kLossStages) {
    text += (text.empty() ? "" : ", ") + std::string(stage.name) + " " +
            std::to_string(n[loss_index(stage.stage)]);
  }
  return text;
}

// The figures of the "stopped:" line (and of SIGUSR1's "status:" line): the events made by type
// (written or lost at the output), the lines written, the losses by stage, the lines written by
// type (netmon_events_total{type}), the reader's waits, the process table.
std::string summary(const Pipeline& pipeline, const OutputStats& out, const KernelCounters& k,
                    const ProcessTableStats& p, const OutputFlow& pause) {
  const PipelineStats& s = pipeline.stats();
  return "records " + std::to_string(s.records) + ", " + by_kind_text(s.events_by_kind) +
         ", written " + std::to_string(out.lines_written) +
         "; lost: " + by_stage_text(losses(k, s, out)) +
         "; written by type: " + by_kind_text(out.lines_written_by_kind) + "; without process " +
         std::to_string(s.events_without_process) + "; state runs made up " +
         std::to_string(k.state_runs_made_up) + "; output waits " +
         std::to_string(pause.episodes()) + " (" +
         std::to_string(
             std::chrono::duration_cast<std::chrono::milliseconds>(pause.waited()).count()) +
         " ms), sheds " + std::to_string(pause.sheds()) +
         "; process table: " + std::to_string(p.live) + " live, " + std::to_string(p.exited) +
         " exited, misses " + std::to_string(p.misses) + ", read from /proc " +
         std::to_string(p.resolved_from_proc) + ", evictions " + std::to_string(p.evictions);
}

// The kubelet settings as configured, without the in-cluster defaults.
KubeletOptions configured_kubelet(const Options& o) {
  KubeletOptions k;
  k.url = o.kubelet_url;
  k.token_file = o.kubelet_token_file;
  k.ca_file = o.kubelet_ca_file;
  k.insecure_skip_verify = o.kubelet_insecure_skip_verify;
  k.allow_http_token = o.kubelet_allow_http_token;
  k.poll_interval = std::chrono::seconds(o.kubelet_poll_interval_s);
  k.pod_grace = std::chrono::seconds(o.pod_grace_period_s);
  return k;
}

// The API server settings as configured, without the in-cluster defaults.
KubeApiOptions configured_kube_api(const Options& o) {
  KubeApiOptions a;
  a.url = o.kube_api_url;
  a.token_file = o.kube_api_token_file;
  a.ca_file = o.kube_api_ca_file;
  a.insecure_skip_verify = o.kube_api_insecure_skip_verify;
  a.allow_http_token = o.kube_api_allow_http_token;
  return a;
}

// Whether the configuration names rules or turns a direction off: without, the pipeline writes
// every event switched on and remembers nothing for the Closes.
bool rules_configured(const RulesSpec& rules) {
  return !rules.egress.rules.empty() || !rules.ingress.rules.empty() || !rules.egress.enabled ||
         !rules.ingress.enabled;
}

// What /readyz waits for; the HTTP server's thread reads it.
struct Readiness {
  std::atomic<bool> attached{false};
  std::atomic<KubeletWatcher*> kubelet{nullptr};
};

// Why the agent is not ready ("": ready): what /readyz answers and netmon_ready shows.
std::string not_ready_reason(const Readiness& readiness, const LineWriter& writer) {
  if (const int e = writer.output_error()) {
    return std::string("stdout failed (") + std::strerror(e) + "): stopping";
  }
  if (!readiness.attached.load()) return "kernel probes not attached yet";
  KubeletWatcher* k = readiness.kubelet.load();
  if (k && !k->synced()) {
    const std::string why = k->last_error();
    return "first kubelet sync not done yet" + (why.empty() ? "" : "; kubelet: " + why);
  }
  return "";
}

// The HTTP endpoint at `address` (--metrics-address, not empty): /metrics, /healthz and
// /readyz, which is ready once the probes are attached and the kubelet's first sync is done, and
// not ready again once stdout failed.
Result<std::unique_ptr<HttpServer>> serve_http(const std::string& address, const Metrics& metrics,
                                               const Readiness& readiness,
                                               const LineWriter& writer) {
  auto listen = parse_listen_address(address);
  auto server = HttpServer::start(
      *listen, [&metrics] { return metrics.render(); },
      [&readiness, &writer] { return not_ready_reason(readiness, writer); });
  if (!server) return server;
  const std::string host =
      listen->host.find(':') != std::string::npos ? "[" + listen->host + "]" : listen->host;
  log::info("serving /metrics, /healthz and /readyz on http://" + host + ":" +
            std::to_string((*server)->port()));
  return server;
}

// The peer watcher for `api` (the API server settings with the in-cluster defaults; an empty url:
// none) and the peer options; not started.
Result<std::unique_ptr<PeerWatcher>> create_peer_watcher(const Options& options,
                                                         const KubeApiOptions& api,
                                                         const std::string& node_name,
                                                         PeerSnapshots& snapshots) {
  PeerWatchOptions p;
  if (!api.url.empty()) p.api = api;
  p.watch_services = options.watch_services;
  p.watch_nodes = options.watch_nodes;
  p.watch_pods = options.watch_pods;
  p.node_name = node_name;
  auto classes = CidrClasses::parse(options.external_networks);
  if (!classes) return fail("kubernetes.external_networks: " + classes.error().message);
  p.external_networks = std::move(*classes);
  p.pod_grace_ns = static_cast<uint64_t>(options.pod_grace_period_s) * 1'000'000'000u;
  auto watcher = PeerWatcher::create(std::move(p), snapshots);
  if (!watcher) return fail("kubernetes.api_url: " + watcher.error().message);
  return watcher;
}

// Whether any resource is to be watched on the API server.
bool watches_api(const Options& o) { return o.watch_services || o.watch_nodes || o.watch_pods; }

// The start-up snapshot (issue #21) on a thread of its own, while the polling thread reads what
// it reports from the ring buffer. It first waits, kKubeletWait at most, for the kubelet's first
// pods (`ready`), so that the connections it reports carry their pods: it reports each only once.
// Between chunks it waits while `room` says no (the ring buffer or the output queue a quarter
// full: it goes at stdout's pace, and the output never has to shed its events); a stop ends it.
// Joined by the destructor.
class SnapshotRun {
 public:
  static constexpr auto kKubeletWait = std::chrono::seconds(15);

  SnapshotRun(Probe& probe, std::function<bool()> ready, std::function<bool()> room)
      : ready_(std::move(ready)), room_(std::move(room)), thread_([this, &probe] { run(probe); }) {}
  ~SnapshotRun() {
    stop_.store(true);
    thread_.join();
  }
  SnapshotRun(const SnapshotRun&) = delete;
  SnapshotRun& operator=(const SnapshotRun&) = delete;

 private:
  bool stopping() const { return stop_.load() || stop_flag().load(); }

  void run(Probe& probe) {
    const auto until = std::chrono::steady_clock::now() + kKubeletWait;
    while (!ready_() && !stopping() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (stopping()) return;
    if (!ready_()) {
      log::info("snapshot: the kubelet has not answered within " +
                std::to_string(kKubeletWait.count()) +
                " s; the connections older than the agent are reported without their pods' "
                "metadata where it is missing");
    }
    auto room = [&] {
      while (!stopping()) {
        if (room_()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      return false;
    };
    auto stats = probe.snapshot(room);
    if (!stats) {
      log::info("connections older than the agent are not reported: " + stats.error().message);
      return;
    }
    char took[32];
    std::snprintf(took, sizeof took, "%.0f ms", stats->seconds * 1000);
    std::string how = "the task/file iterator";
    if (stats->mechanism == "netlink") {
      char scan[32];
      std::snprintf(scan, sizeof scan, "%.0f ms", stats->scan_seconds * 1000);
      how = "sock_diag in " + std::to_string(stats->namespaces) + " network namespaces (" +
            std::to_string(stats->namespaces_failed) + " not entered), owners from " +
            "a /proc scan (" + scan + "); " + std::to_string(stats->closed_meanwhile) +
            " closed before their report, " + std::to_string(stats->without_owner) +
            " held by no process; the iterator: " + stats->fallback_reason;
    }
    log::info(
        "snapshot: " + std::to_string(stats->reported) +
        " connections older than the agent reported (" + std::to_string(stats->tracked_already) +
        " already reported: opened meanwhile, or a second holder, " +
        std::to_string(stats->connecting) + " connecting, " + std::to_string(stats->listeners) +
        " listening sockets) in " + took + "; mechanism: " + stats->mechanism + " (" + how + ")");
    if (stats->truncated) {
      log::warn(
          "snapshot: a bound (processes, descriptors or time) was reached: some connections "
          "older than the agent may not be reported");
    }
    if (stats->no_room > 0) {
      log::warn("snapshot: " + std::to_string(stats->no_room) +
                " connections older than the agent were not reported: the ring buffer or the "
                "sockets map was full (counted in netmon_events_lost_total)");
    }
  }

  std::function<bool()> ready_;
  std::function<bool()> room_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Whether the agent's network namespace is the one of `proc_root`'s pid 1 (the node's); true when
// that cannot be read (nothing to warn about then).
bool same_network_namespace(const std::string& proc_root) {
  struct stat own {};
  struct stat init {};
  if (::stat("/proc/self/ns/net", &own) != 0) return true;
  if (::stat((proc_root + "/1/ns/net").c_str(), &init) != 0) return true;
  return own.st_ino == init.st_ino && own.st_dev == init.st_dev;
}

// The node's connection tracking, started; null (with one info line saying why) when it is
// switched off or cannot be read here.
std::unique_ptr<ConntrackTracker> open_conntrack(const Options& options) {
  if (!options.conntrack) {
    log::info(
        "conntrack: off (nat.conntrack is false): events carry no peer.backend or "
        "peer.original");
    return nullptr;
  }
  ConntrackTracker::Settings settings;
  settings.max_entries = options.conntrack_max_entries;
  settings.netns_path = options.conntrack_netns;
  if (options.fault_conntrack_buffer > 0) {
    settings.receive_buffer_bytes = options.fault_conntrack_buffer;
    log::warn(
        "fault injection (NETMON_FAULT_CONNTRACK_BUFFER): the conntrack event socket "
        "holds " +
        std::to_string(options.fault_conntrack_buffer) + " bytes; for tests only");
  }
  auto tracker = ConntrackTracker::open(settings);
  if (!tracker) {
    log::info("conntrack: not available (" + tracker.error().message +
              "): events carry no peer.backend or peer.original");
    return nullptr;
  }
  (*tracker)->start();
  const std::string where = settings.netns_path.empty()
                                ? "this network namespace"
                                : "the network namespace " + settings.netns_path;
  std::string note;
  if (settings.netns_path.empty() && !same_network_namespace(options.proc_root)) {
    note = "; it is not the node's (" + options.proc_root +
           "/1/ns/net): the node's translations (kube-proxy) are not seen; run with host "
           "networking or set nat.netns";
  }
  log::info("conntrack: reading the translated connections of " + where + " (" +
            std::to_string((*tracker)->stats().entries) + " in the table now)" + note);
  return std::move(*tracker);
}

// Starts `peers` (publishing the first index) and says where the peers' names come from.
void start_peers(PeerWatcher& peers, const KubeApiOptions& api, const Options& options) {
  peers.start();
  if (!watches_api(options)) {
    log::info(
        "no API server watch (kubernetes.watch_services, watch_nodes and watch_pods are false): "
        "peers are named from this node's kubelet, its own addresses and the external networks "
        "only");
    return;
  }
  if (api.url.empty()) {
    log::info(
        "no API server configured: peers are named from this node's kubelet, its own addresses "
        "and the external networks only");
    return;
  }
  std::string watched;
  auto add = [&](bool on, std::string_view what) {
    if (!on) return;
    if (!watched.empty()) watched += ", ";
    watched += what;
  };
  add(options.watch_services, "services, endpointslices");
  add(options.watch_nodes, "nodes");
  add(options.watch_pods, "pods");
  log::info("peer names from the API server " + api.url + " (" + watched + ")" +
            (api.insecure_skip_verify ? " (TLS not verified)" : ""));
}

// The kubelet watcher, started, for `k` (the kubelet settings with the in-cluster defaults);
// null when no kubelet is configured.
Result<std::unique_ptr<KubeletWatcher>> start_kubelet(const KubeletOptions& k) {
  if (k.url.empty()) {
    log::info("no kubelet configured: events carry container ids but no pod metadata");
    return std::unique_ptr<KubeletWatcher>();
  }
  auto watcher = KubeletWatcher::create(k);
  if (!watcher) return watcher;
  (*watcher)->start();
  log::info("pod metadata from " + k.url + (k.insecure_skip_verify ? " (TLS not verified)" : ""));
  return watcher;
}

// Logs what the probe attached and how, and hands it to the metrics.
void report_probe(const Probe& probe, Metrics& metrics) {
  std::vector<std::pair<std::string, std::string>> hook_variants;
  for (const AttachedHook& h : probe.hooks()) {
    log::info("attached " + h.hook + " as " + h.variant);
    hook_variants.emplace_back(h.hook, h.variant);
  }
  metrics.set_hooks(std::move(hook_variants));
  std::vector<std::pair<std::string, std::string>> chosen;
  for (const ChosenVariant& v : probe.variants()) {
    log::info("hook variant: " + v.hook + " = " + v.variant +
              (v.reason.empty() ? " (preferred)" : " (" + v.reason + ")"));
    chosen.emplace_back(v.hook, v.variant);
  }
  metrics.set_hook_variants(std::move(chosen));
  std::vector<std::pair<std::string, uint64_t>> map_memory;
  uint64_t map_total = 0;
  std::string map_detail;
  for (const MapMemory& m : probe.map_memory()) {
    map_total += m.bytes;
    map_detail += (map_detail.empty() ? "" : ", ") + m.name + " " + std::to_string(m.bytes >> 10);
    map_memory.emplace_back(m.name, m.bytes);
  }
  log::info("BPF maps take " + std::to_string(map_total >> 10) +
            " KiB of kernel memory (KiB: " + map_detail + ")");
  metrics.set_map_memory(std::move(map_memory));
}

// The API server settings `api` (with the in-cluster defaults), each failure naming its key:
// the URL and a token over http://, the CA file, the token file.
Result<void> check_kube_api(const KubeApiOptions& api) {
  if (auto r = KubeApiClient::validate_settings(api); !r) {
    return fail("kubernetes.api_url: " + r.error().message);
  }
  KubeApiOptions without_token = api;
  without_token.token_file.clear();
  if (auto r = KubeApiClient::validate(without_token); !r) {
    return fail("kubernetes.api_ca_file: " + r.error().message);
  }
  if (auto r = KubeApiClient::validate(api); !r) {
    return fail("kubernetes.api_token_file: " + r.error().message);
  }
  return {};
}

// What a start checks before it touches the kernel: the configuration (validate_config()), the
// --proc-root directory, and the kubelet settings `kubelet` (a token over http://, the token and
// CA files). Gives the compiled rules.
Result<CompiledRules> check_start(const Options& options, const KubeletOptions& kubelet,
                                  const KubeApiOptions& api) {
  if (auto valid = validate_config(options); !valid) return tl::unexpected(valid.error());
  if (!api.url.empty()) {
    if (auto r = check_kube_api(api); !r) return tl::unexpected(r.error());
  }
  if (auto proc = check_proc_root(options.proc_root); !proc) return tl::unexpected(proc.error());
  auto rules = compile_rules(options.rules);
  if (!rules) return rules;
  if (!kubelet.url.empty()) {
    if (auto r = KubeletWatcher::validate(kubelet); !r) return tl::unexpected(r.error());
  }
  return rules;
}

}  // namespace

HealthSnapshot health(const Pipeline& pipeline, const OutputStats& out, const KernelCounters& k,
                      const ProcessTableStats& p, const OutputFlow& pause,
                      const Attributor& attributor, const KubeletWatcher* kubelet,
                      const PeerWatcher* peers, const ConntrackTracker* nat) {
  const PipelineStats& s = pipeline.stats();
  HealthSnapshot h;
  h.output_waits = pause.episodes();
  h.output_wait_seconds = std::chrono::duration<double>(pause.waited()).count();
  h.events_by_type = out.lines_written_by_kind;  // netmon_events_total: lines written
  h.lost = losses(k, s, out);
  h.events_without_process = s.events_without_process;
  h.events_without_pod = attributor.stats().in_pod_without_metadata;
  h.owner_unknown = k.owner_unknown;
  h.state_runs_made_up = k.state_runs_made_up;
  h.process_table_live = p.live;
  h.process_table_exited = p.exited;
  h.process_table_misses = p.misses;
  h.process_table_evictions = p.evictions;
  h.kubelet_enabled = kubelet != nullptr;
  if (kubelet) h.kubelet = kubelet->stats();
  h.peers_enabled = peers != nullptr;
  h.peer_lookups = s.peer_lookups;
  if (peers) h.peer_watch = peers->stats();
  h.nat_enabled = nat != nullptr;
  if (nat) h.nat = nat->stats();
  return h;
}

Result<void> validate_config(const Options& options) {
  if (auto rules = compile_rules(options.rules); !rules) return fail(rules.error().message);
  if (!options.kubelet_url.empty()) {
    // As given, without the in-cluster defaults (they look at the host's files).
    const KubeletOptions given = configured_kubelet(options);
    if (auto settings = KubeletWatcher::validate_settings(given); !settings) return settings;
  }
  if (!options.kube_api_url.empty()) {
    // As given too; an empty URL is the in-cluster one (https, the service-account token).
    KubeApiOptions api;
    api.url = options.kube_api_url;
    api.token_file = options.kube_api_token_file;
    api.allow_http_token = options.kube_api_allow_http_token;
    if (auto settings = KubeApiClient::validate_settings(api); !settings) return settings;
  }
  if (auto classes = CidrClasses::parse(options.external_networks); !classes) {
    return fail("kubernetes.external_networks: " + classes.error().message);
  }
  return {};
}

namespace {

// The running agent's parts, owned by run_agent(): what the loop and the stop sequence use.
struct Running {
  LineWriter& writer;
  ProcessTable& processes;
  Metrics& metrics;
  Readiness& readiness;
  Attributor& attributor;
  OutputFlow& output;
  Pipeline& pipeline;
  std::unique_ptr<HttpServer>& http;
  std::unique_ptr<KubeletWatcher>& kubelet;
  std::unique_ptr<PeerWatcher>& peers;
  std::unique_ptr<ConntrackTracker>& nat;
  std::unique_ptr<Probe>& probe;
};

// Reads the kernel and hands the lines to the output until a stop signal, a broken stdout
// (kExitOutputFailed) or a failed poll (1). Twice a second: the observer's link, stdout's state
// and the health snapshot; once a second: the boot clock's offset and the idle edges.
int run_until_stopped(Running& r) {
  Probe& probe = *r.probe;
  auto last_refresh = std::chrono::steady_clock::now();
  auto last_health = last_refresh - std::chrono::seconds(1);
  bool observer = probe.check_observer();
  while (!stop_flag().load()) {
    if (const int e = r.writer.output_error()) {
      log::error(std::string("writing events to stdout failed (") + std::strerror(e) +
                 "): stopping with exit status " + std::to_string(kExitOutputFailed) +
                 " so that the container is restarted with a new stdout; events that could not "
                 "be written are counted as lost (output_error)");
      return kExitOutputFailed;
    }
    if (take_status_request()) {
      log::info("status: " + summary(r.pipeline, r.writer.stats(), probe.counters(),
                                     r.processes.stats(), r.output));
    }
    if (const int sig = take_ignored_signal()) {
      log::info("ignoring " + signal_name(sig) +
                " (netmon stops on SIGTERM, SIGINT or SIGHUP; SIGUSR1 logs a status line)");
    }
    if (r.output.reading()) {
      auto polled = probe.poll(100);
      if (!polled) {
        log::error(polled.error().message);
        return 1;
      }
      r.output.flush();
    } else {
      r.output.wait_or_shed(probe.ring_fill());  // the output queue is full
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - last_health >= std::chrono::milliseconds(500)) {
      if (observer && !probe.check_observer()) {
        observer = false;
        log::warn(
            "the TCP state observer's cgroup link was detached: connection ends rely on the "
            "tracepoint programs alone, which the kernel may skip");
      }
      r.writer.check_output();  // a stdout whose reader is gone, even with nothing to write
      HealthSnapshot h =
          health(r.pipeline, r.writer.stats(), probe.counters(), r.processes.stats(), r.output,
                 r.attributor, r.kubelet.get(), r.peers.get(), r.nat.get());
      h.ready = not_ready_reason(r.readiness, r.writer).empty();
      r.metrics.publish_health(h);
      last_health = now;
    }
    if (now - last_refresh >= std::chrono::seconds(1)) {
      r.pipeline.refresh_clock();
      r.pipeline.remove_idle_edges();
      last_refresh = now;
    }
  }
  if (const int sig = stop_signal(); sig != 0)
    log::info("received " + signal_name(sig) + ": stopping");
  return 0;
}

// Delivers what the kernel has already written, then detaches before the output drains (the
// backlog may be larger than the output queue: since the stop signal batches wait for room,
// kStopDrain at most, shared with the final drain, instead of being dropped), stops the HTTP
// server and the kubelet watcher, and logs the "stopped:" line.
void stop_and_report(Running& r) {
  r.output.stop([&r] { (void)r.probe->poll(0); });
  const KernelCounters counters = r.probe->counters();
  r.readiness.attached.store(false);
  r.http.reset();  // no scrape may read the probe's maps once it is gone
  r.probe.reset();
  const KubeletStats kubelet_stats = r.kubelet ? r.kubelet->stats() : KubeletStats{};
  r.readiness.kubelet.store(nullptr);
  r.kubelet.reset();  // aborts a request in flight; nothing is logged after the summary
  r.peers->stop();    // aborts the API server requests in flight
  r.nat.reset();
  if (!r.output.finish()) {
    log::warn("stdout did not drain within " + std::to_string(kStopDrain.count()) +
              " s; the remaining events are counted as lost");
  }
  std::string line =
      "stopped: " + summary(r.pipeline, r.writer.stats(), counters, r.processes.stats(), r.output);
  constexpr size_t kOk = static_cast<size_t>(KubeletResult::kOk);
  if (kubelet_stats.synced || kubelet_stats.requests[kOk] > 0) {
    uint64_t failed = 0;
    for (size_t i = 0; i < kubelet_stats.requests.size(); ++i) {
      if (i != kOk) failed += kubelet_stats.requests[i];
    }
    line += "; kubelet requests ok " + std::to_string(kubelet_stats.requests[kOk]) + ", failed " +
            std::to_string(failed);
  }
  log::info(line);
}

}  // namespace

int run_agent(const Options& options) {
  install_signal_handlers();  // first: a stop signal during the start-up is not lost
  // The output's batches (256 KiB) are the agent's large allocations, made on the polling thread
  // and freed on the writer's. glibc's default raises its mmap threshold to the size of the
  // first such buffer freed, after which batches come from the heap, which keeps what a backlog
  // grew to (a pipe that fell behind under the start-up snapshot of 100 000 connections left
  // +38 MiB of heap; +2 MiB with the threshold fixed). A fixed threshold keeps them mmapped, so
  // that a freed batch goes back to the system at once.
  ::mallopt(M_MMAP_THRESHOLD, kMmapThresholdBytes);
  const InClusterEnvironment cluster = InClusterEnvironment::of_process();
  KubeletOptions kubelet_settings = with_in_cluster_defaults(configured_kubelet(options), cluster);
  auto api_settings = kube_api_with_in_cluster_defaults(configured_kube_api(options), cluster);
  if (!api_settings) {
    log::error("configuration error: kubernetes.api_url: " + api_settings.error().message);
    return 2;
  }
  if (!watches_api(options)) *api_settings = KubeApiOptions{};  // nothing to ask it
  auto rules = check_start(options, kubelet_settings, *api_settings);
  if (!rules) {
    log::error("configuration error: " + rules.error().message);
    return 2;
  }
  LineWriter writer(STDOUT_FILENO, options.output_queue_bytes, [](std::string_view line) {
    return static_cast<size_t>(event_kind_of_line(line));
  });
  if (const size_t pipe = widen_pipe(STDOUT_FILENO, kStdoutPipeBytes); pipe != 0) {
    log::info("stdout is a pipe of " + std::to_string(pipe / 1024) + " KiB");
  }
  ProcessTable processes(ProcReader(options.proc_root), options.max_processes);
  Metrics metrics(options.metrics_drop_labels, NETMON_VERSION_STRING, options.edges);

  // The HTTP endpoint comes up first, so /readyz can say "not ready" while the probes load.
  Readiness readiness;
  std::unique_ptr<HttpServer> http;
  if (!options.metrics_address.empty()) {
    auto server = serve_http(options.metrics_address, metrics, readiness, writer);
    if (!server) {
      log::error(server.error().message);
      return 1;
    }
    http = std::move(*server);
  }

  // What the pipeline needs is there before the probe that feeds it starts. The peer watcher
  // first (the kubelet hands it this node's pods), started after the kubelet.
  const std::string node_name = node_name_or_default(options.node_name, cluster);
  PeerSnapshots peer_snapshots;
  auto peers_created = create_peer_watcher(options, *api_settings, node_name, peer_snapshots);
  if (!peers_created) {
    log::error("configuration error: " + peers_created.error().message);
    return 2;
  }
  std::unique_ptr<PeerWatcher> peers = std::move(*peers_created);
  kubelet_settings.on_pods = [p = peers.get()](std::vector<KubePod> pods) {
    p->set_local_pods(std::move(pods));
  };
  auto kubelet_started = start_kubelet(kubelet_settings);
  if (!kubelet_started) {
    log::error("configuration error: " + kubelet_started.error().message);
    return 2;
  }
  std::unique_ptr<KubeletWatcher> kubelet = std::move(*kubelet_started);
  start_peers(*peers, *api_settings, options);
  ProbeOptions probe_options = options.probe;
  probe_options.cgroup_root = cgroup2_root_or_default(options.cgroup_root);
  probe_options.snapshot = options.preexisting;
  probe_options.proc_root = options.proc_root;
  Attributor attributor(open_cgroups(probe_options.cgroup_root), kubelet.get());
  PipelineDeps deps;
  deps.attributor = &attributor;
  deps.node_name = node_name;
  deps.peers = &peer_snapshots;
  deps.peer_labels = options.peer_labels;
  std::unique_ptr<ConntrackTracker> nat = open_conntrack(options);
  deps.nat = nat.get();
  deps.pod_labels = options.pod_labels;
  deps.metrics = &metrics;
  deps.max_connections = options.probe.max_connections;
  deps.verdicts = Verdicts(rules_configured(options.rules) ? &*rules : nullptr, options.events,
                           options.probe.max_connections);
  OutputFlow::Settings flow;
  flow.max_pause = std::chrono::milliseconds(options.output_max_pause_ms);
  flow.wait_step = kPauseStep;
  flow.stop = &stop_flag();
  flow.stop_drain = kStopDrain;
  OutputFlow output(writer, std::move(flow));
  Pipeline pipeline(output, processes, read_last_cap(options.proc_root), std::move(deps));

  if (probe_options.fault_skip_state) {
    log::warn("fault injection (NETMON_FAULT_SKIP_STATE): the state tracepoint programs ignore " +
              options.fault_skip_state + " changes; for tests only");
  }
  auto probe = Probe::start(probe_options, pipeline);
  if (!probe) {
    log::error(probe.error().message);
    writer.finish(std::chrono::milliseconds(0));
    return 1;
  }
  report_probe(**probe, metrics);
  // Seed after attaching: a process started in between is in /proc, in the ring buffer, or both.
  processes.seed();
  log::info("process table seeded from " + options.proc_root + " with " +
            std::to_string(processes.size()) + " processes");
  // The allocator keeps freed heap resident: hand back what the start-up (the probes' attach,
  // the /proc scan) freed. The probe already trimmed the kernel BTF's megabytes before it mapped
  // the ring buffer.
  ::malloc_trim(0);
  readiness.kubelet.store(kubelet.get());
  readiness.attached.store(true);

  log::info("netmon is running; events go to stdout");
  std::optional<SnapshotRun> snapshot;
  if (options.preexisting) {
    Probe& p = **probe;
    snapshot.emplace(
        p, [k = kubelet.get()] { return k == nullptr || k->synced(); },
        [&p, &writer, queue = options.output_queue_bytes] {
          const RingFill fill = p.ring_fill();
          return (fill.size == 0 || fill.used < fill.size / 4) &&
                 writer.stats().queued_bytes < queue / 4;
        });
  }
  Running running{writer,   processes, metrics, readiness, attributor, output,
                  pipeline, http,      kubelet, peers,     nat,        *probe};
  const int exit_code = run_until_stopped(running);
  snapshot.reset();  // before the probe it reads goes
  stop_and_report(running);
  return exit_code;
}

}  // namespace netmon
