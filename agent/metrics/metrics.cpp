#include "metrics/metrics.h"

#include <prometheus/text_serializer.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <sstream>

#include "common/text.h"
#include "metrics/exposition.h"

namespace netmon {
namespace {

using namespace exposition;

// Connection duration buckets, seconds.
constexpr std::array<double, 12> kDurationBuckets = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5,
                                                     1,     5,     10,   60,   300, 3600};

}  // namespace

Result<std::vector<std::string>> parse_dropped_labels(std::string_view csv) {
  std::vector<std::string> out;
  for (const std::string_view item : split_list(csv)) {
    if (std::find(kConnectionLabels.begin(), kConnectionLabels.end(), item) ==
        kConnectionLabels.end()) {
      return fail("unknown label '" + std::string(item) +
                  "' (labels: direction, namespace, pod, container, workload)");
    }
    out.emplace_back(item);
  }
  return out;
}

struct ConnectionSeries {
  std::array<std::string, kConnectionLabels.size()> labels;
  std::string pod_uid;
  std::atomic<uint64_t> opened{0};
  std::atomic<uint64_t> closed{0};
  std::atomic<uint64_t> bytes_sent{0};
  std::atomic<uint64_t> bytes_received{0};
  std::array<std::atomic<uint64_t>, kConnectErrorSlots> failed{};  // connect_error_slot()
  std::array<std::atomic<uint64_t>, kDurationBuckets.size()> duration_buckets{};
  std::atomic<uint64_t> duration_count{0};
  std::atomic<uint64_t> duration_sum_us{0};
};

struct Metrics::Impl {
  explicit Impl(EdgeSettings edge_settings) : edges(std::move(edge_settings)) {}
  EdgeTable edges;
  std::array<bool, kConnectionLabels.size()> dropped{};
  std::string version;
  mutable std::mutex mutex;  // guards the maps below and `health` (never held per event)
  std::map<std::string, std::shared_ptr<ConnectionSeries>> series;
  HealthSnapshot health;
  std::vector<std::pair<std::string, std::string>> hooks;
  std::vector<std::pair<std::string, std::string>> hook_variants;
  std::vector<std::pair<std::string, uint64_t>> map_memory;
};

Metrics::Metrics(std::vector<std::string> dropped_labels, std::string version, EdgeSettings edges)
    : impl_(std::make_unique<Impl>(std::move(edges))) {
  for (const std::string& d : dropped_labels) {
    for (size_t i = 0; i < kConnectionLabels.size(); ++i) {
      if (kConnectionLabels[i] == d) impl_->dropped[i] = true;
    }
  }
  impl_->version = std::move(version);
}

Metrics::~Metrics() = default;

std::shared_ptr<ConnectionSeries> Metrics::series(Direction direction,
                                                  const Attribution* attribution) {
  std::array<std::string, kConnectionLabels.size()> labels;
  labels[0] = direction == Direction::kOutbound ? "outbound" : "inbound";
  std::string uid;
  if (attribution && attribution->pod) {
    const PodMeta& pod = *attribution->pod;
    labels[1] = pod.namespace_name;
    labels[2] = pod.name;
    labels[3] = attribution->container ? attribution->container->name : "";
    labels[4] = pod.workload;
    uid = pod.uid;
  }
  std::string key;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (impl_->dropped[i]) labels[i].clear();
    key += labels[i];
    key += '\x1f';
  }
  // With the pod label dropped, series of several pods merge: keep them (no single pod owns
  // them) rather than remove them with one pod.
  if (impl_->dropped[2]) uid.clear();
  std::lock_guard lock(impl_->mutex);
  auto& slot = impl_->series[key];
  if (!slot) {
    slot = std::make_shared<ConnectionSeries>();
    slot->labels = std::move(labels);
    slot->pod_uid = std::move(uid);
  } else if (!uid.empty() && slot->pod_uid != uid) {
    // A pod recreated under the same name (a StatefulSet's web-0) continues the series: it now
    // belongs to the new pod, so the old pod's deletion must not remove it.
    slot->pod_uid = std::move(uid);
  }
  return slot;
}

void Metrics::record(ConnectionSeries& s, const ConnectionEvent& e) {
  constexpr auto relaxed = std::memory_order_relaxed;
  switch (e.kind) {
    case ConnKind::kEstablish:
    case ConnKind::kAccept:
      s.opened.fetch_add(1, relaxed);
      break;
    case ConnKind::kFailed:
      s.failed[connect_error_slot(e.error)].fetch_add(1, relaxed);
      break;
    case ConnKind::kClose: {
      s.closed.fetch_add(1, relaxed);
      s.bytes_sent.fetch_add(e.close.bytes_sent, relaxed);
      s.bytes_received.fetch_add(e.close.bytes_received, relaxed);
      const uint64_t us =
          e.boot_ns > e.close.open_boot_ns ? (e.boot_ns - e.close.open_boot_ns) / 1000 : 0;
      const double seconds = static_cast<double>(us) / 1e6;
      for (size_t i = 0; i < kDurationBuckets.size(); ++i) {
        if (seconds <= kDurationBuckets[i]) {
          s.duration_buckets[i].fetch_add(1, relaxed);
          break;
        }
      }
      s.duration_count.fetch_add(1, relaxed);
      s.duration_sum_us.fetch_add(us, relaxed);
      break;
    }
  }
}

void Metrics::remove_pods(const std::function<bool(const std::string& uid)>& known) {
  std::lock_guard lock(impl_->mutex);
  for (auto it = impl_->series.begin(); it != impl_->series.end();) {
    if (!it->second->pod_uid.empty() && !known(it->second->pod_uid)) {
      it = impl_->series.erase(it);
    } else {
      ++it;
    }
  }
}

EdgeTable& Metrics::edges() { return impl_->edges; }

void Metrics::publish_health(const HealthSnapshot& health) {
  std::lock_guard lock(impl_->mutex);
  impl_->health = health;
}

void Metrics::set_hooks(std::vector<std::pair<std::string, std::string>> hook_variants) {
  std::lock_guard lock(impl_->mutex);
  impl_->hooks = std::move(hook_variants);
}

void Metrics::set_hook_variants(std::vector<std::pair<std::string, std::string>> chosen) {
  std::lock_guard lock(impl_->mutex);
  impl_->hook_variants = std::move(chosen);
}

void Metrics::set_map_memory(std::vector<std::pair<std::string, uint64_t>> bytes_by_map) {
  std::lock_guard lock(impl_->mutex);
  impl_->map_memory = std::move(bytes_by_map);
}

size_t Metrics::series_count() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->series.size();
}

namespace {

// A counter family with one unlabelled sample.
MetricFamily single_counter(std::string name, std::string help, double value) {
  MetricFamily f = family(std::move(name), std::move(help), MetricType::Counter);
  f.metric.push_back(counter(value));
  return f;
}

std::vector<ClientMetric::Label> series_labels(const ConnectionSeries& s) {
  std::vector<ClientMetric::Label> out;
  for (size_t i = 0; i < kConnectionLabels.size(); ++i) {
    out.push_back({std::string(kConnectionLabels[i]), s.labels[i]});
  }
  return out;
}

// The peer names' metrics (#19): the lookups, the index's size, and with an API server each
// watched resource's sync state and errors.
void render_peers(const HealthSnapshot& h, std::vector<MetricFamily>& out) {
  auto lookups = family("netmon_peer_lookups_total",
                        "Connection events whose peer was looked up, by the kind that named it.",
                        MetricType::Counter);
  for (size_t k = 0; k < kPeerKinds; ++k) {
    lookups.metric.push_back(
        counter(static_cast<double>(h.peer_lookups[k]),
                {{"result", std::string(to_string(static_cast<PeerKind>(k)))}}));
  }
  out.push_back(std::move(lookups));
  const PeerIndex::Stats& index = h.peer_watch.index;
  auto objects = family("netmon_peer_index_objects",
                        "Objects in the current peer index, by kind (addresses: distinct "
                        "addresses indexed).",
                        MetricType::Gauge);
  for (const auto& [kind, n] : {std::pair<const char*, size_t>{"pods", index.pods},
                                {"services", index.services},
                                {"nodes", index.nodes},
                                {"addresses", index.addresses}}) {
    objects.metric.push_back(gauge(static_cast<double>(n), {{"kind", kind}}));
  }
  out.push_back(std::move(objects));
  if (!h.peer_watch.api_enabled) return;
  auto synced =
      family("netmon_kube_api_synced",
             "1 once the resource's first list from the API server completed.", MetricType::Gauge);
  auto errors = family("netmon_kube_api_watch_errors_total",
                       "Failed list and watch requests to the API server, by resource and reason.",
                       MetricType::Counter);
  for (size_t r = 0; r < h.peer_watch.resources.size(); ++r) {
    const PeerResourceStats& s = h.peer_watch.resources[r];
    if (!s.watched) continue;
    const std::string resource(to_string(static_cast<PeerResource>(r)));
    synced.metric.push_back(gauge(s.synced ? 1 : 0, {{"resource", resource}}));
    for (size_t e = 0; e < s.errors.size(); ++e) {
      const auto error = static_cast<KubeApiError>(e);
      if (error == KubeApiError::kNone || error == KubeApiError::kCancelled) continue;
      errors.metric.push_back(
          counter(static_cast<double>(s.errors[e]),
                  {{"resource", resource}, {"reason", std::string(kube_api_error_name(error))}}));
    }
  }
  out.push_back(std::move(synced));
  out.push_back(std::move(errors));
}

// The node's connection tracking (#20): the lookups by result always (zero when it is not read),
// its table and losses when it is.
void render_nat(const HealthSnapshot& h, std::vector<MetricFamily>& out) {
  auto lookups = family("netmon_nat_lookups_total",
                        "Connection events looked up in the node's conntrack translations, by "
                        "result: translated, not_translated, lost (messages were lost).",
                        MetricType::Counter);
  for (size_t r = 0; r < kNatResults; ++r) {
    lookups.metric.push_back(
        counter(static_cast<double>(h.nat.lookups[r]),
                {{"result", std::string(to_string(static_cast<NatResult>(r)))}}));
  }
  out.push_back(std::move(lookups));
  auto enabled =
      family("netmon_nat_conntrack_enabled",
             "1 when the agent reads the node's conntrack translations.", MetricType::Gauge);
  enabled.metric.push_back(gauge(h.nat_enabled ? 1 : 0));
  out.push_back(std::move(enabled));
  if (!h.nat_enabled) return;
  auto entries = family("netmon_nat_entries", "Translated connections held from conntrack.",
                        MetricType::Gauge);
  entries.metric.push_back(gauge(static_cast<double>(h.nat.entries)));
  out.push_back(std::move(entries));
  out.push_back(single_counter("netmon_nat_messages_lost_total",
                               "Times the conntrack event socket overflowed and lost messages "
                               "(the table is read again after each).",
                               static_cast<double>(h.nat.overflows)));
  out.push_back(single_counter("netmon_nat_entries_refused_total",
                               "Translated connections not held because the table was full "
                               "(nat.max_entries).",
                               static_cast<double>(h.nat.refused)));
}

}  // namespace

std::string Metrics::render() const {
  constexpr auto relaxed = std::memory_order_relaxed;
  std::vector<std::shared_ptr<ConnectionSeries>> series;
  HealthSnapshot h;
  std::vector<std::pair<std::string, std::string>> hooks;
  std::vector<std::pair<std::string, std::string>> hook_variants;
  std::vector<std::pair<std::string, uint64_t>> map_memory;
  {
    std::lock_guard lock(impl_->mutex);  // copy pointers and numbers, render unlocked
    series.reserve(impl_->series.size());
    for (const auto& [key, s] : impl_->series) series.push_back(s);
    h = impl_->health;
    hooks = impl_->hooks;
    hook_variants = impl_->hook_variants;
    map_memory = impl_->map_memory;
  }

  std::vector<MetricFamily> out;
  auto opened =
      family("netmon_connections_opened_total",
             "TCP connections established (outbound) or accepted (inbound).", MetricType::Counter);
  auto failed = family("netmon_connections_failed_total",
                       "Outbound TCP connects that ended without a connection, by error.",
                       MetricType::Counter);
  auto closed = family("netmon_connections_closed_total",
                       "TCP connections reported open that have closed.", MetricType::Counter);
  auto active = family("netmon_connections_active",
                       "TCP connections reported open and not closed yet.", MetricType::Gauge);
  auto sent = family("netmon_connection_bytes_sent_total",
                     "Payload bytes sent by closed connections.", MetricType::Counter);
  auto received = family("netmon_connection_bytes_received_total",
                         "Payload bytes received by closed connections.", MetricType::Counter);
  auto duration = family("netmon_connection_duration_seconds",
                         "Time from open to close of closed connections.", MetricType::Histogram);
  for (const auto& s : series) {
    const auto labels = series_labels(*s);
    const uint64_t o = s->opened.load(relaxed);
    const uint64_t c = s->closed.load(relaxed);
    opened.metric.push_back(counter(static_cast<double>(o), labels));
    closed.metric.push_back(counter(static_cast<double>(c), labels));
    active.metric.push_back(gauge(static_cast<double>(o >= c ? o - c : 0), labels));
    sent.metric.push_back(counter(static_cast<double>(s->bytes_sent.load(relaxed)), labels));
    received.metric.push_back(
        counter(static_cast<double>(s->bytes_received.load(relaxed)), labels));
    for (size_t i = 0; i < kConnectErrorSlots; ++i) {
      const uint64_t n = s->failed[i].load(relaxed);
      if (n == 0) continue;  // no series for errors that never happened
      auto l = labels;
      l.push_back({"error", connect_error_label(i)});
      failed.metric.push_back(counter(static_cast<double>(n), std::move(l)));
    }
    const uint64_t count = s->duration_count.load(relaxed);
    duration.metric.push_back(
        histogram(labels, kDurationBuckets, s->duration_buckets, count,
                  static_cast<double>(s->duration_sum_us.load(relaxed)) / 1e6));
  }
  for (auto* f : {&opened, &failed, &closed, &active, &sent, &received, &duration}) {
    out.push_back(std::move(*f));
  }

  auto events =
      family("netmon_events_total", "Events written, by event type.", MetricType::Counter);
  for (size_t k = 0; k < h.events_by_type.size(); ++k) {
    events.metric.push_back(counter(static_cast<double>(h.events_by_type[k]),
                                    {{"type", std::string(kEventTypeNames[k])}}));
  }
  out.push_back(std::move(events));

  auto lost = family("netmon_events_lost_total", "Events lost, by the stage that lost them.",
                     MetricType::Counter);
  for (const LossStageInfo& stage : kLossStages) {
    lost.metric.push_back(counter(static_cast<double>(h.lost[loss_index(stage.stage)]),
                                  {{"stage", std::string(stage.name)}}));
  }
  out.push_back(std::move(lost));

  const auto n = [](uint64_t v) { return static_cast<double>(v); };
  out.push_back(single_counter("netmon_events_without_process_total",
                               "Events whose owner was not in the process table.",
                               n(h.events_without_process)));
  out.push_back(single_counter("netmon_events_without_pod_total",
                               "Events from a pod cgroup whose pod metadata was unknown.",
                               n(h.events_without_pod)));
  out.push_back(single_counter(
      "netmon_connections_owner_unknown_total",
      "Connections reported without a process: opened before attach, or connect() unseen.",
      n(h.owner_unknown)));
  out.push_back(single_counter("netmon_bpf_state_runs_made_up_total",
                               "Runs of the state tracepoint programs the kernel skipped, whose "
                               "changes the TCP state observer (sock_ops) handled: no event lost.",
                               n(h.state_runs_made_up)));
  out.push_back(single_counter("netmon_output_waits_total",
                               "Times the output queue had no room for a batch of events, so that "
                               "the kernel reader paused (bounded) to let stdout catch up.",
                               n(h.output_waits)));
  out.push_back(single_counter("netmon_output_wait_seconds_total",
                               "Time the kernel reader waited for room in the output queue.",
                               h.output_wait_seconds));

  auto table =
      family("netmon_process_table_entries", "Processes in the process table.", MetricType::Gauge);
  table.metric.push_back(gauge(static_cast<double>(h.process_table_live), {{"state", "live"}}));
  table.metric.push_back(gauge(static_cast<double>(h.process_table_exited), {{"state", "exited"}}));
  out.push_back(std::move(table));
  out.push_back(single_counter("netmon_process_table_misses_total",
                               "Owner lookups that found no process.", n(h.process_table_misses)));
  out.push_back(single_counter("netmon_process_table_evictions_total",
                               "Exited processes dropped to keep the table within its capacity.",
                               n(h.process_table_evictions)));

  if (h.kubelet_enabled) {
    auto requests =
        family("netmon_kubelet_requests_total",
               "Requests to the kubelet's pods endpoint, by result.", MetricType::Counter);
    for (size_t r = 0; r < h.kubelet.requests.size(); ++r) {
      requests.metric.push_back(
          counter(static_cast<double>(h.kubelet.requests[r]),
                  {{"result", std::string(kubelet_result_name(static_cast<KubeletResult>(r)))}}));
    }
    out.push_back(std::move(requests));
    auto pods = family("netmon_kubelet_pods", "Pods in the current snapshot, deleted ones kept.",
                       MetricType::Gauge);
    pods.metric.push_back(gauge(static_cast<double>(h.kubelet.pods)));
    out.push_back(std::move(pods));
    auto synced = family("netmon_kubelet_synced",
                         "1 once pod metadata has been read from the kubelet.", MetricType::Gauge);
    synced.metric.push_back(gauge(h.kubelet.synced ? 1 : 0));
    out.push_back(std::move(synced));
  }

  if (h.peers_enabled) render_peers(h, out);
  render_nat(h, out);
  impl_->edges.render(out);

  auto ready = family("netmon_ready",
                      "1 when the agent is ready (what /readyz answers): probes attached, first "
                      "kubelet sync done, stdout writable.",
                      MetricType::Gauge);
  ready.metric.push_back(gauge(h.ready ? 1 : 0));
  out.push_back(std::move(ready));

  auto hook =
      family("netmon_hook_info", "The variant each kernel hook attached with.", MetricType::Gauge);
  for (const auto& [name, variant] : hooks) {
    hook.metric.push_back(gauge(1, {{"hook", name}, {"variant", variant}}));
  }
  out.push_back(std::move(hook));
  auto variant_info = family("netmon_hook_variant_info",
                             "The variant chosen at start for each hook: state, accept, process.",
                             MetricType::Gauge);
  for (const auto& [name, variant] : hook_variants) {
    variant_info.metric.push_back(gauge(1, {{"hook", name}, {"variant", variant}}));
  }
  out.push_back(std::move(variant_info));
  auto maps = family("netmon_bpf_map_memory_bytes",
                     "Kernel memory charged for each BPF map (memlock: a preallocated map at "
                     "its full capacity, a hash map without preallocation as it is now).",
                     MetricType::Gauge);
  for (const auto& [name, bytes] : map_memory) {
    maps.metric.push_back(gauge(static_cast<double>(bytes), {{"map", name}}));
  }
  out.push_back(std::move(maps));
  auto build = family("netmon_build_info", "The running agent's version.", MetricType::Gauge);
  build.metric.push_back(gauge(1, {{"version", impl_->version}}));
  out.push_back(std::move(build));

  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, out);
  return text.str();
}

}  // namespace netmon
