// The ctnetlink wire format (NETLINK_NETFILTER, subsystem NFNL_SUBSYS_CTNETLINK), as far as the
// NAT tracker needs it: a TCP entry's two tuples, its zone and its status, parsed from the
// messages of a dump or of the NEW/DESTROY event groups; the dump request; and the classic BPF
// socket filter that lets through only translated entries. No sockets here: pure functions over
// bytes (unit-tested, fuzzed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "events/event.h"

struct sock_filter;

namespace netmon {

// One direction of a connection: source and destination address and port (TCP).
struct ConntrackTuple {
  IpAddress src;
  IpAddress dst;
  uint16_t sport = 0;  // host order
  uint16_t dport = 0;

  bool operator==(const ConntrackTuple& other) const {
    return src.family == other.src.family && src.bytes == other.src.bytes &&
           dst.bytes == other.dst.bytes && sport == other.sport && dport == other.dport;
  }
};

struct ConntrackTupleHash {
  size_t operator()(const ConntrackTuple& t) const noexcept;
};

enum class ConntrackMessageKind : uint8_t {
  kNew,      // an entry created (event group NEW), or one entry of a dump
  kDestroy,  // an entry destroyed (event group DESTROY)
  kOther,    // anything else: not an entry (NLMSG_DONE, errors, other protocols, updates)
};

struct ConntrackEntry {
  ConntrackMessageKind kind = ConntrackMessageKind::kOther;
  ConntrackTuple original;  // as the first packet went
  ConntrackTuple reply;     // as the answers come back
  uint16_t zone = 0;
  uint32_t status = 0;  // IPS_* bits

  bool source_translated() const;       // IPS_SRC_NAT
  bool destination_translated() const;  // IPS_DST_NAT
};

// Parses one netlink message (header included, exactly nlmsg_len bytes). A message that is not
// a TCP conntrack entry of IPv4 or IPv6 (another protocol, an update, NLMSG_DONE) gives kind
// kOther; a malformed one (lengths that do not add up, a tuple without its addresses or ports)
// an error. Never reads outside `message`.
Result<ConntrackEntry> parse_conntrack_message(std::span<const std::byte> message);

// Splits a datagram into its netlink messages (each with its header) and calls `each` with every
// one; stops at the first malformed header (returned as an error) or when `each` returns false.
template <typename F>
Result<void> for_each_netlink_message(std::span<const std::byte> datagram, F&& each);

// The IPCTNL_MSG_CT_GET dump request of every entry of both families (nfgen_family AF_UNSPEC).
std::vector<std::byte> conntrack_dump_request(uint32_t sequence);

// The socket filter: accepts a message whose top-level CTA_STATUS has IPS_SRC_NAT or IPS_DST_NAT
// and whose original tuple is TCP, drops every other (so untranslated connections, and UDP, cost
// the agent nothing). The program is static.
std::span<const sock_filter> translated_entries_filter();

template <typename F>
Result<void> for_each_netlink_message(std::span<const std::byte> datagram, F&& each) {
  constexpr size_t kHeader = 16;  // sizeof(struct nlmsghdr)
  size_t offset = 0;
  while (datagram.size() - offset >= kHeader) {
    uint32_t length = 0;
    std::memcpy(&length, datagram.data() + offset, sizeof length);  // nlmsg_len, host order
    if (length < kHeader || length > datagram.size() - offset) {
      return fail("netlink message length " + std::to_string(length) + " at offset " +
                  std::to_string(offset) + " of a " + std::to_string(datagram.size()) +
                  "-byte datagram");
    }
    if (!each(datagram.subspan(offset, length))) return {};
    const size_t aligned = (static_cast<size_t>(length) + 3) & ~size_t{3};  // NLMSG_ALIGN
    if (aligned >= datagram.size() - offset) break;
    offset += aligned;
  }
  return {};
}

}  // namespace netmon
