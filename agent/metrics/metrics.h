// Metrics: the agent's Prometheus metrics, kept without locks on the event path and rendered in
// the text exposition format at scrape time. The only module that includes prometheus-cpp; its
// types stay in metrics.cpp.
//
// Threads: the pipeline thread creates series (a short lock, once per cgroup and direction; the
// caller caches the pointer), updates them with relaxed atomic adds, and publishes a health
// snapshot once per poll round. The HTTP thread renders.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "events/counters.h"
#include "events/event.h"
#include "k8s/attribution.h"
#include "k8s/kubelet.h"
#include "k8s/peer_index.h"
#include "k8s/peer_watch_stats.h"
#include "metrics/edges.h"
#include "nat/conntrack_tracker.h"

namespace netmon {

// The connection metrics' labels, in order; any of them can be dropped by configuration (the
// label is then written empty, which merges its series).
inline constexpr std::array<std::string_view, 5> kConnectionLabels = {
    "direction", "namespace", "pod", "container", "workload"};

// Parses "pod,container" into label names; fails naming an unknown label.
Result<std::vector<std::string>> parse_dropped_labels(std::string_view csv);

// The counters of one label set. Opaque outside metrics.cpp.
struct ConnectionSeries;

// Agent health, published by the pipeline thread (plain numbers, totals since start).
struct HealthSnapshot {
  bool ready = false;                   // what /readyz answers (netmon_ready)
  EventCounts events_by_type{};         // lines written, by kind_index(ConnKind)
  LossCounts lost{};                    // events lost, by loss_index(LossStage) (events/counters.h)
  uint64_t events_without_process = 0;  // owner not in the process table
  uint64_t events_without_pod = 0;      // owner in a pod cgroup, pod metadata unknown
  uint64_t owner_unknown = 0;           // kernel: connection opened before attach
  uint64_t state_runs_made_up = 0;      // kernel: state program runs skipped, not lost
  uint64_t output_waits = 0;       // times the output queue refused a batch and the reader paused
  double output_wait_seconds = 0;  // time the reader waited for room in the output queue
  uint64_t process_table_live = 0;
  uint64_t process_table_exited = 0;
  uint64_t process_table_misses = 0;
  uint64_t process_table_evictions = 0;
  bool kubelet_enabled = false;
  KubeletStats kubelet;
  // Peer names (#19): with a peer index, the lookups by the kind they answered
  // (PipelineStats::peer_lookups) and the watcher's state; its API server metrics only when
  // peer_watch.api_enabled.
  bool peers_enabled = false;
  PeerLookupCounts peer_lookups{};
  PeerWatchStats peer_watch;
  // The node's connection tracking (#20): its lookups, table and losses, when it is read.
  bool nat_enabled = false;
  ConntrackStats nat;
};

class Metrics {
 public:
  Metrics(std::vector<std::string> dropped_labels, std::string version, EdgeSettings edges = {});
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Pipeline thread. The series for a connection of `direction` owned by `attribution`'s pod
  // (null or without pod: the host series, empty pod labels). Locks briefly: cache the result.
  std::shared_ptr<ConnectionSeries> series(Direction direction, const Attribution* attribution);
  // Pipeline thread, lock-free: counts `event` in `series`.
  static void record(ConnectionSeries& series, const ConnectionEvent& event);
  // Pipeline thread: drops the series of pods for which `known(uid)` is false (deleted pods
  // whose grace period ended), so they stop being exported.
  void remove_pods(const std::function<bool(const std::string& uid)>& known);

  // The service map's edges (metrics/edges.h): the pipeline thread counts in them.
  EdgeTable& edges();

  void publish_health(const HealthSnapshot& health);
  // Start-up: which hook variant each probe attached with, and readiness inputs.
  void set_hooks(std::vector<std::pair<std::string, std::string>> hook_variants);
  // Start-up: the variant chosen for each hook (state, accept, process).
  void set_hook_variants(std::vector<std::pair<std::string, std::string>> chosen);
  // Start-up: the kernel memory of each BPF map, in bytes.
  void set_map_memory(std::vector<std::pair<std::string, uint64_t>> bytes_by_map);

  // Any thread: the text exposition of every metric.
  std::string render() const;

  size_t series_count() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace netmon
