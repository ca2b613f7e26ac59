// What the node's connection tracking did to a connection (issue #20): the backend a Service
// connection really reached, and the client an inbound connection came from before translation.
// Plain types, shared by the conntrack reader (nat/conntrack_tracker.h), the pipeline, the JSON
// writer and the rules; no netlink here.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "events/event.h"

namespace netmon {

// One connection's translation, as the conntrack entry of its tuple in the agent's (the node's)
// network namespace shows it.
struct NatTranslation {
  // Outbound (the socket's tuple is the entry's original direction, the socket dialed daddr:dport):
  // where the packets went, the reply direction's source, when it differs from daddr:dport (DNAT:
  // a Service's cluster IP, a NodePort, an external or load-balancer IP, any other DNAT).
  bool has_backend = false;
  IpAddress backend_addr;
  uint16_t backend_port = 0;
  // Inbound (the socket's tuple is the entry's reply direction): the client as it was before
  // translation (the original direction's source) and the address it dialed (the original
  // direction's destination), when either was translated (a NodePort, a source-NATed client).
  bool has_original = false;
  IpAddress original_addr;
  uint16_t original_port = 0;
  IpAddress dialed_addr;
  uint16_t dialed_port = 0;
};

// The answer of one lookup (netmon_nat_lookups_total{result}).
enum class NatResult : uint8_t {
  kTranslated,     // an entry that was translated: backend or original set
  kNotTranslated,  // no translated entry for the tuple, and none can have been missed
  kLost,           // no entry, but the conntrack subscription lost messages while it opened
};
inline constexpr size_t kNatResults = 3;
constexpr std::string_view to_string(NatResult result) {
  switch (result) {
    case NatResult::kTranslated:
      return "translated";
    case NatResult::kLost:
      return "lost";
    case NatResult::kNotTranslated:
      break;
  }
  return "not_translated";
}
// Lookups by their result, indexed by NatResult.
using NatLookupCounts = std::array<uint64_t, kNatResults>;

}  // namespace netmon
