#include "rules/verdicts.h"

namespace netmon {
namespace {

// Identifies one end of a connection for the open->close rule memory: its cookie, or, where the
// classic-tracepoint variant has none, its ports and direction.
uint64_t connection_key(const ConnectionEvent& e) {
  if (e.cookie != 0) return e.cookie;
  return (1ull << 63) | (static_cast<uint64_t>(e.direction == Direction::kInbound) << 62) |
         (static_cast<uint64_t>(e.sport) << 16) | e.dport;
}

}  // namespace

Verdicts::Verdicts(const CompiledRules* rules, EventSwitches switches, size_t max_tracked)
    : rules_(rules), switches_(switches), max_tracked_(max_tracked) {}

bool Verdicts::decide(const ConnectionEvent& e, const EventOwner& owner, std::string_view& rule) {
  const bool switched_on = e.kind == ConnKind::kEstablish ? switches_.establish
                           : e.kind == ConnKind::kAccept  ? switches_.accept
                           : e.kind == ConnKind::kClose   ? switches_.close
                                                          : switches_.failed;
  if (!rules_) return switched_on;
  const uint64_t key = connection_key(e);
  if (e.kind == ConnKind::kClose) {
    if (!open_rules_.take(key, rule)) return false;  // its open event was filtered out
    return switched_on;
  }
  const RuleSet& set = e.kind == ConnKind::kAccept ? rules_->ingress : rules_->egress;
  if (!set.enabled()) return false;
  if (set.has_rules()) {
    // Rules speak of the connection's source and destination (who sent the SYN to whom): for an
    // accepted connection the destination is this host's end.
    const bool inbound = e.kind == ConnKind::kAccept;
    RuleInput in;
    in.saddr = inbound ? &e.daddr : &e.saddr;
    in.daddr = inbound ? &e.saddr : &e.daddr;
    in.sport = inbound ? e.dport : e.sport;
    in.dport = inbound ? e.sport : e.dport;
    in.binary_path = owner.binary_path;
    in.parent_binary_path = owner.parent_binary_path;
    if (e.owner_known) in.uid = e.task.uid;
    in.pod = owner.pod;
    in.container = owner.container;
    in.peer = owner.peer;
    in.backend = owner.backend;
    auto matched = set.match(in);
    if (!matched) return false;
    rule = *matched;
  }
  if (e.kind != ConnKind::kFailed) {
    if (open_rules_.size() < max_tracked_) {
      bool added = false;
      *open_rules_.find_or_add(key, added) = rule;
    } else {
      ++stats_.rule_tracking_full;
    }
  }
  return switched_on;
}

}  // namespace netmon
