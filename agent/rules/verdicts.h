// The decision whether a connection event is written, and under which rule's name: the event
// switches, the rules, and the memory of which open connections a rule named, so that their
// Close carries it (and a Close whose open event was filtered out is filtered too).
// Runs on the pipeline thread; not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/cookie_map.h"
#include "events/event.h"
#include "k8s/pods.h"
#include "rules/rules.h"

namespace netmon {

// Which connection events are reported (events.establish, ...). An event type switched off is
// not written (its connection is still counted in the metrics).
struct EventSwitches {
  bool establish = true;
  bool accept = true;
  bool close = true;
  bool failed = true;
};

// What the rules look at besides the record: the owner's process, its parent and its pod, and
// who the remote end is.
struct EventOwner {
  std::string_view binary_path;         // "" when unknown
  std::string_view parent_binary_path;  // "" when unknown
  const PodMeta* pod = nullptr;         // null for host processes, or a pod still unknown
  const ContainerMeta* container = nullptr;
  const Peer* peer = nullptr;     // the remote end (the record's daddr); null: no peer index
  const Peer* backend = nullptr;  // the pod or other peer a translated connection reached
};

struct VerdictStats {
  uint64_t rule_tracking_full = 0;  // an open event's rule could not be remembered
};

class Verdicts {
 public:
  // Every event, without a rule name, nothing remembered.
  Verdicts() = default;
  // Without rules (null): every event switched on is written, without a rule name, and nothing
  // is remembered. `rules` must outlive this object. `max_tracked`: connections whose open
  // event's rule is remembered for their Close at once.
  Verdicts(const CompiledRules* rules, EventSwitches switches, size_t max_tracked);

  // False when the event is not written; otherwise sets `rule` to the matching rule's name
  // ("" for none), which stays valid as long as the rules.
  bool decide(const ConnectionEvent& e, const EventOwner& owner, std::string_view& rule);

  const VerdictStats& stats() const { return stats_; }
  // Connections whose rule is remembered now.
  size_t tracked() const { return open_rules_.size(); }

 private:
  const CompiledRules* rules_ = nullptr;
  EventSwitches switches_;
  size_t max_tracked_ = 0;
  // The rule of each connection reported open while rules are configured ("" for none), so
  // its Close carries it; a connection missing here was filtered out at open. Keys: the cookie,
  // or (without one) the ports with bit 63 set: never 0.
  CookieMap<std::string_view> open_rules_;
  VerdictStats stats_;
};

}  // namespace netmon
