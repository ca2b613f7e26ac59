// Pipeline: runs on the ring-buffer polling thread, without locks. Decodes each kernel record:
// exec, fork and exit records update the process table; a connection record goes through the
// owner's pod attribution, the process table (owner and parent), the connection metrics and the
// rules, and becomes at most one JSON line (none when the rules or the event switches leave it
// out). The remote end of each connection event is looked up in the peer index, when there is
// one, for its `peer` object and the rules (a lookup neither locks nor allocates). With the
// node's conntrack (nat/conntrack_tracker.h), a translated connection's backend or original
// client is added to the peer, the backend named from the same index. The lines go to
// the OutputFlow, which batches them for the LineWriter; while it holds a batch the output queue
// has no room for, the pipeline asks the ring-buffer reader to stop (on_record() returns false), so
// that the records not read yet wait in the kernel's ring buffer.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "bpf/probe.h"
#include "common/clock.h"
#include "events/event.h"
#include "k8s/attribution.h"
#include "k8s/peer_snapshots.h"
#include "metrics/connection_counters.h"
#include "metrics/edge_counters.h"
#include "metrics/metrics.h"
#include "nat/conntrack_tracker.h"
#include "output/json.h"
#include "process/table.h"
#include "rules/rules.h"
#include "rules/verdicts.h"

namespace netmon {

class OutputFlow;

struct PipelineStats {
  uint64_t records = 0;
  uint64_t decode_errors = 0;
  // Events made into a JSON line, indexed by ConnKind: written, or lost at the output
  // (OutputStats counts which; netmon_events_total counts the written ones).
  std::array<uint64_t, 4> events_by_kind{};
  uint64_t events_without_process = 0;
  uint64_t events_with_pod = 0;
  uint64_t events_filtered = 0;     // not written: a rule set matched none, or switched off
  PeerLookupCounts peer_lookups{};  // connection events whose peer was looked up, by PeerKind
};

// What the pipeline works with besides the output and the process table.
struct PipelineDeps {
  // Kubernetes attribution (null: no container ids, no pods); must outlive the pipeline.
  Attributor* attributor = nullptr;
  std::string node_name;  // written as node_name; "": none
  bool pod_labels = true;
  // Connection metrics (null: none), and the edges' when metrics.edges is on; must outlive the
  // pipeline.
  Metrics* metrics = nullptr;
  // Connections the kernel tracks at most (max_connections): the open connections whose edge
  // is kept until their Close (65 536 at most).
  size_t max_connections = 65536;
  // Which events are written, under which rule's name (default: every event, no rule names).
  Verdicts verdicts;
  // The peer index (null: no `peer` object); must outlive the pipeline.
  PeerSnapshots* peers = nullptr;
  bool peer_labels = false;  // write a pod peer's labels
  // The node's connection tracking (null: no peer.backend / peer.original); must outlive the
  // pipeline.
  ConntrackTracker* nat = nullptr;
};

class Pipeline final : public RecordSink {
 public:
  // `output` and `processes` must outlive the pipeline. `last_cap`: the kernel's cap_last_cap.
  Pipeline(OutputFlow& output, ProcessTable& processes, int last_cap, PipelineDeps deps = {});

  // Returns false once the output holds a batch (OutputFlow::reading()): read no more records
  // until it is handed over.
  bool on_record(std::span<const std::byte> record) noexcept override;

  // Re-reads the offset between the boot clock and the wall clock (it moves when NTP steps).
  void refresh_clock() { clock_.refresh(); }

  // Removes the edge series idle for metrics.edge_idle_seconds (about once a second).
  void remove_idle_edges();

  const PipelineStats& stats() const { return stats_; }

 private:
  void handle(const ConnectionEvent& e);
  // Counts `e` in its edge's series (metrics.edges).
  void count_edge(const ConnectionEvent& e, const EventContext& context, const NatTranslation& nat);
  // The remote end of `e` in the current peer snapshot (re-loaded when its version changed);
  // false when there is no snapshot (no peers, or none published yet).
  bool look_up_peer(const ConnectionEvent& e, Peer& peer);

  OutputFlow& output_;
  ProcessTable& processes_;
  const int last_cap_;
  Attributor* const attributor_;
  const std::string node_name_;
  const bool pod_labels_;
  std::optional<ConnectionCounters> counters_;
  std::optional<EdgeCounters> edges_;
  Verdicts verdicts_;
  BootClock clock_;
  EventEncoder encoder_;
  PeerSnapshots* const peers_;
  ConntrackTracker* const nat_;
  const bool peer_labels_;
  uint64_t peer_version_ = 0;                    // of peer_index_
  std::shared_ptr<const PeerIndex> peer_index_;  // held: the Peer views point into it
  PipelineStats stats_;
  uint64_t decode_errors_logged_ = 0;
};

}  // namespace netmon
