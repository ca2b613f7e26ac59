#include "nat/nat_table.h"

namespace netmon {
namespace {

bool same_end(const IpAddress& a, uint16_t a_port, const IpAddress& b, uint16_t b_port) {
  return a.family == b.family && a.bytes == b.bytes && a_port == b_port;
}

}  // namespace

bool NatTable::apply(const ConntrackEntry& entry, uint64_t now_ns) {
  if (entry.zone != 0) return true;
  if (!entry.source_translated() && !entry.destination_translated()) return true;
  if (entry.kind == ConntrackMessageKind::kDestroy) {
    auto it = entries_.find(entry.original);
    if (it == entries_.end() || it->second.destroyed_ns != 0) return true;
    it->second.destroyed_ns = now_ns;
    destroyed_.emplace_back(now_ns, entry.original);
    return true;
  }
  if (entry.kind != ConntrackMessageKind::kNew) return true;
  auto it = entries_.find(entry.original);
  if (it != entries_.end()) {
    by_reply_.erase(it->second.reply);  // a reused tuple: the new entry wins
    it->second = Entry{entry.reply, 0, 0};
    by_reply_[entry.reply] = entry.original;
    return true;
  }
  if (entries_.size() >= max_entries_) {
    ++refused_;
    return false;
  }
  entries_.emplace(entry.original, Entry{entry.reply, 0, 0});
  by_reply_[entry.reply] = entry.original;
  return true;
}

std::optional<NatTranslation> NatTable::find(const ConntrackTuple& socket_tuple,
                                             bool outbound) const {
  NatTranslation t;
  if (outbound) {
    auto it = entries_.find(socket_tuple);
    if (it == entries_.end()) return std::nullopt;
    const ConntrackTuple& reply = it->second.reply;
    // DNAT: the answers come from somewhere else than the socket dialed.
    if (same_end(reply.src, reply.sport, socket_tuple.dst, socket_tuple.dport)) {
      return std::nullopt;
    }
    t.has_backend = true;
    t.backend_addr = reply.src;
    t.backend_port = reply.sport;
    return t;
  }
  auto r = by_reply_.find(socket_tuple);
  if (r == by_reply_.end()) return std::nullopt;
  const ConntrackTuple& original = r->second;
  // The socket's local end is the reply's source, its remote end the reply's destination.
  if (same_end(original.src, original.sport, socket_tuple.dst, socket_tuple.dport) &&
      same_end(original.dst, original.dport, socket_tuple.src, socket_tuple.sport)) {
    return std::nullopt;
  }
  t.has_original = true;
  t.original_addr = original.src;
  t.original_port = original.sport;
  t.dialed_addr = original.dst;
  t.dialed_port = original.dport;
  return t;
}

void NatTable::closed(const ConntrackTuple& socket_tuple, bool outbound) {
  ConntrackTuple original = socket_tuple;
  if (!outbound) {
    auto r = by_reply_.find(socket_tuple);
    if (r == by_reply_.end()) return;
    original = r->second;
  }
  auto it = entries_.find(original);
  if (it == entries_.end()) return;
  it->second.closed |= outbound ? kOutboundClosed : kInboundClosed;
  if (it->second.closed == (kOutboundClosed | kInboundClosed)) erase(original);
}

void NatTable::erase(const ConntrackTuple& original) {
  auto it = entries_.find(original);
  if (it == entries_.end()) return;
  auto r = by_reply_.find(it->second.reply);
  if (r != by_reply_.end() && r->second == original) by_reply_.erase(r);
  entries_.erase(it);
}

void NatTable::purge_destroyed(uint64_t before_ns) {
  while (!destroyed_.empty() && destroyed_.front().first < before_ns) {
    const auto& [when, original] = destroyed_.front();
    auto it = entries_.find(original);
    // Only if it is still that destroyed entry (not re-created for a reused tuple since).
    if (it != entries_.end() && it->second.destroyed_ns == when) erase(original);
    destroyed_.pop_front();
  }
}

}  // namespace netmon
