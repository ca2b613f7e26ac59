// The agent's loss stages and event counters, each declared once: the stop summary ("stopped:"
// and SIGUSR1's "status:" line), the metrics (netmon_events_lost_total{stage},
// netmon_events_total{type}) and the probe (which kernel counter feeds which stage) all iterate
// these tables. Plain data: no library behind it.
//
// Adding a loss stage:
//   - a kernel stage: a row in NM_COUNTERS (bpf/netmon_events.h) with the next index and its
//     count() in the BPF programs, and a row here with from_kernel(NM_CNT_<NAME>); the probe reads
//     it;
//   - a stage the probe derives (from program statistics): a row here with derived_by_probe(),
//     and the sensor that owns those programs fills it (agent/bpf/sensors);
//   - an agent stage: a row here with from_agent(), and the app fills it from the stats of the
//     module that drops (app/agent.cpp, losses()).
// The row's place is where the stage appears in the summary line and in the metrics' output.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "events/event.h"
#include "netmon_events.h"

namespace netmon {

// Where a loss stage's count comes from.
enum class LossSource : uint8_t {
  kKernel,  // a kernel-side counter (enum nm_counter), summed over CPUs by the probe
  kProbe,   // derived by the probe from what the kernel reports of its programs
  kAgent,   // counted by the agent (decoder, output)
};

struct LossSourceRef {
  LossSource source;
  int counter;  // the enum nm_counter index with kKernel; -1 otherwise
};
constexpr LossSourceRef from_kernel(enum nm_counter counter) {
  return {LossSource::kKernel, static_cast<int>(counter)};
}
constexpr LossSourceRef derived_by_probe() { return {LossSource::kProbe, -1}; }
constexpr LossSourceRef from_agent() { return {LossSource::kAgent, -1}; }

// X(ENUMERATOR, NAME, SOURCE, HELP): NAME is the word of the summary line and the `stage` label
// of netmon_events_lost_total; HELP says what the stage counts (docs/metrics.md).
#define NETMON_LOSS_STAGES(X)                                                             \
  X(kRingBuffer, "ring_buffer", from_kernel(NM_CNT_RINGBUF_FULL),                         \
    "kernel: a record was dropped, no ring-buffer space")                                 \
  X(kSocketsMap, "sockets_map", from_kernel(NM_CNT_SOCKETS_FULL),                         \
    "kernel: a connection was not tracked, the sockets map was full")                     \
  X(kRecursion, "recursion", derived_by_probe(),                                          \
    "kernel: program runs skipped (recursion misses) that may have lost an event")        \
  X(kUnobserved, "unobserved", from_kernel(NM_CNT_UNOBSERVED),                            \
    "kernel: a connection's last transition never reached the hooks")                     \
  X(kAccept, "accept", from_kernel(NM_CNT_ACCEPT_NO_SOCK),                                \
    "kernel: an accepted socket could not be read from its fd")                           \
  X(kDecode, "decode", from_agent(), "agent: malformed records")                          \
  X(kOutputQueue, "output_queue", from_agent(), "agent: output queue full (slow stdout)") \
  X(kOutputError, "output_error", from_agent(), "agent: the stdout write failed")

enum class LossStage : size_t {
#define NETMON_LOSS_ENUM(id, name, source, help) id,
  NETMON_LOSS_STAGES(NETMON_LOSS_ENUM)
#undef NETMON_LOSS_ENUM
};

struct LossStageInfo {
  LossStage stage;
  std::string_view name;
  LossSourceRef source;
  std::string_view help;
};

inline constexpr LossStageInfo kLossStages[] = {
#define NETMON_LOSS_ROW(id, name, source, help) {LossStage::id, name, source, help},
    NETMON_LOSS_STAGES(NETMON_LOSS_ROW)
#undef NETMON_LOSS_ROW
};
inline constexpr size_t kLossStageCount = std::size(kLossStages);

// Events lost, by stage: index with loss_index().
using LossCounts = std::array<uint64_t, kLossStageCount>;
constexpr size_t loss_index(LossStage stage) { return static_cast<size_t>(stage); }

// The kinds of connection event, indexed by ConnKind: the words of the summary line, and the
// `type` label of netmon_events_total (the events' network_event.type).
inline constexpr std::array<std::string_view, 4> kEventKindNames = {"establish", "accept", "close",
                                                                    "failed"};
inline constexpr std::array<std::string_view, 4> kEventTypeNames = {
    "TcpConnectionEstablish", "TcpConnectionAccept", "TcpConnectionClose", "TcpConnectionFailed"};
constexpr size_t kind_index(ConnKind kind) { return static_cast<size_t>(kind); }
static_assert(kind_index(ConnKind::kEstablish) == 0 && kind_index(ConnKind::kAccept) == 1 &&
                  kind_index(ConnKind::kClose) == 2 && kind_index(ConnKind::kFailed) == 3 &&
                  kEventKindNames.size() == 4 && kEventTypeNames.size() == 4,
              "kEventKindNames follows ConnKind");

// Events by kind: index with kind_index().
using EventCounts = std::array<uint64_t, kEventKindNames.size()>;

}  // namespace netmon
