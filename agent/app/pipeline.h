// Pipeline: runs on the ring-buffer polling thread, without locks. Decodes each kernel record:
// exec, fork and exit records update the process table; a connection record goes through the
// owner's pod attribution, the process table (owner and parent), the connection metrics and the
// rules, and becomes at most one JSON line (none when the rules or the event switches leave it
// out). Batches of lines go to the LineWriter.
//
// When the output queue has no room for a batch, the pipeline holds it (held()) and asks the
// ring-buffer reader to stop, so that the records not read yet wait in the kernel's ring buffer,
// which holds them in a tenth of the memory their JSON takes. The caller then either waits for
// room and flushes again, or gives up (shed()): the held batch is dropped and counted, and until
// the queue takes a batch again, batches that do not fit are dropped at once instead of held.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "bpf/probe.h"
#include "common/clock.h"
#include "events/event.h"
#include "k8s/attribution.h"
#include "metrics/connection_counters.h"
#include "metrics/metrics.h"
#include "output/json.h"
#include "output/line_writer.h"
#include "process/table.h"
#include "rules/rules.h"
#include "rules/verdicts.h"

namespace netmon {

struct PipelineStats {
  uint64_t records = 0;
  uint64_t decode_errors = 0;
  // Events made into a JSON line, indexed by ConnKind: written, or lost at the output
  // (OutputStats counts which; netmon_events_total counts the written ones).
  std::array<uint64_t, 4> events_by_kind{};
  uint64_t events_without_process = 0;
  uint64_t events_with_pod = 0;
  uint64_t events_filtered = 0;  // not written: a rule set matched none, or switched off
};

// What the pipeline works with besides the writer and the process table.
struct PipelineDeps {
  // Kubernetes attribution (null: no container ids, no pods); must outlive the pipeline.
  Attributor* attributor = nullptr;
  std::string node_name;  // written as node_name; "": none
  bool pod_labels = true;
  // Connection metrics (null: none); must outlive the pipeline.
  Metrics* metrics = nullptr;
  // Which events are written, under which rule's name (default: every event, no rule names).
  Verdicts verdicts;
};

class Pipeline final : public RecordSink {
 public:
  // `writer` and `processes` must outlive the pipeline. `last_cap`: the kernel's cap_last_cap.
  // `batch_bytes`: a batch is handed over once this large, and at every flush().
  Pipeline(LineWriter& writer, ProcessTable& processes, int last_cap, PipelineDeps deps = {},
           size_t batch_bytes = 256u << 10);

  // Returns false once a batch is held: read no more records until flush() hands it over.
  bool on_record(std::span<const std::byte> record) noexcept override;

  // Once `*stop` is set (by a signal handler), batches wait for room in the output queue, for
  // `drain` at most from then, instead of being dropped: stopping writes the kernel's backlog.
  void set_stop_flag(const std::atomic<bool>* stop, std::chrono::milliseconds drain) {
    stop_ = stop;
    stop_drain_ = drain;
  }

  // Hands the pending lines to the writer; call after each poll round. When the queue has no room
  // they are held (unless shedding or stopping, where they are dropped and counted).
  void flush();
  // Whether a batch waits for room in the output queue.
  bool held() const { return held_; }
  // Its size in bytes (0 when none is held).
  size_t held_bytes() const { return held_ ? batch_.size() : 0; }
  // Drops the held batch, counted as lost at the output queue, and sheds from now on: batches
  // that do not fit are dropped, not held, until the queue takes one again.
  void shed();
  // Re-reads the offset between the boot clock and the wall clock (it moves when NTP steps).
  void refresh_clock() { clock_.refresh(); }

  const PipelineStats& stats() const { return stats_; }

 private:
  void handle(const ConnectionEvent& e);

  LineWriter& writer_;
  ProcessTable& processes_;
  const int last_cap_;
  Attributor* const attributor_;
  const std::string node_name_;
  const bool pod_labels_;
  std::optional<ConnectionCounters> counters_;
  Verdicts verdicts_;
  const size_t batch_bytes_;
  BootClock clock_;
  EventEncoder encoder_;
  std::string batch_;
  LineCount batch_lines_;  // the lines of batch_, by ConnKind
  PipelineStats stats_;
  uint64_t decode_errors_logged_ = 0;
  const std::atomic<bool>* stop_ = nullptr;
  std::chrono::milliseconds stop_drain_{0};
  bool draining_ = false;
  bool held_ = false;      // batch_ waits for room in the output queue
  bool shedding_ = false;  // the reader gave up waiting: drop what does not fit
};

}  // namespace netmon
