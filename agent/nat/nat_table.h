// The translated TCP connections the node's conntrack holds, by tuple in both directions: the
// NAT tracker's memory (single-threaded; its owner locks). Bounded: at most `max_entries`
// entries; an entry that does not fit is refused and counted. A destroyed entry is kept for a
// grace period, so that a Close the pipeline reads late still finds its translation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>

#include "nat/conntrack_message.h"
#include "nat/nat.h"

namespace netmon {

class NatTable {
 public:
  explicit NatTable(size_t max_entries) : max_entries_(max_entries) {}

  // Applies a NEW/DESTROY message (or a dump's entry): a translated TCP entry of zone 0 is
  // added (replacing an entry of the same tuple: the tuple was reused), a destroyed one is marked
  // gone at `now_ns`. Untranslated entries and other zones are ignored (a socket has no zone;
  // the kernel puts a pod's connections in zone 0 unless a CT zone rule says otherwise). Returns
  // false when the entry was refused because the table is full.
  bool apply(const ConntrackEntry& entry, uint64_t now_ns);

  // The translation of a connection: `local`/`remote` as the socket sees them. Outbound: the
  // entry whose original direction is local -> remote; inbound: the one whose reply direction is.
  // nullopt when there is none, or when it was not translated in the direction that matters.
  std::optional<NatTranslation> find(const ConntrackTuple& socket_tuple, bool outbound) const;

  // A Close found its translation: when both ends of the entry's connection have closed here (a
  // client and a backend on this node, a hairpin), nothing will look it up again and it goes at
  // once; otherwise it stays until conntrack destroys it (and kDestroyedGrace after).
  void closed(const ConntrackTuple& socket_tuple, bool outbound);

  // Forgets the entries destroyed before `before_ns`.
  void purge_destroyed(uint64_t before_ns);

  size_t size() const { return entries_.size(); }
  uint64_t refused() const { return refused_; }

 private:
  struct Entry {
    ConntrackTuple reply;
    uint64_t destroyed_ns = 0;  // 0: alive
    uint8_t closed = 0;         // kOutboundClosed | kInboundClosed
  };
  static constexpr uint8_t kOutboundClosed = 1;
  static constexpr uint8_t kInboundClosed = 2;
  void erase(const ConntrackTuple& original);

  size_t max_entries_;
  std::unordered_map<ConntrackTuple, Entry, ConntrackTupleHash> entries_;  // by original tuple
  // reply tuple -> original tuple
  std::unordered_map<ConntrackTuple, ConntrackTuple, ConntrackTupleHash> by_reply_;
  std::deque<std::pair<uint64_t, ConntrackTuple>> destroyed_;  // (when, original), oldest first
  uint64_t refused_ = 0;
};

}  // namespace netmon
