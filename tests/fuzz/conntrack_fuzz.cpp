// libFuzzer target for the conntrack messages the agent reads from the kernel (agent/nat): any
// bytes as one netlink datagram, split into messages, each parsed, and the entries applied to a
// small NatTable and looked up both ways. Nothing may crash or trip a sanitizer; a parsed entry's
// tuples come back from the table as they went in; the table never holds more than its bound.
//
// Build and run (scripts/fuzz.sh does both):
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -I agent -I bpf \
//     tests/fuzz/conntrack_fuzz.cpp agent/nat/conntrack_message.cpp agent/nat/nat_table.cpp \
//     -o /tmp/conntrack_fuzz
//   /tmp/conntrack_fuzz -max_total_time=60 -max_len=16384
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "nat/conntrack_message.h"
#include "nat/nat_table.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr size_t kMax = 8;
  netmon::NatTable table(kMax);
  const auto datagram = std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size);
  uint64_t now = 1;
  (void)netmon::for_each_netlink_message(datagram, [&](std::span<const std::byte> message) {
    auto entry = netmon::parse_conntrack_message(message);
    if (!entry || entry->kind == netmon::ConntrackMessageKind::kOther) return true;
    table.apply(*entry, now++);
    if (table.size() > kMax) std::abort();
    // A kept, translated entry answers for its own tuples with what it holds.
    if (entry->kind == netmon::ConntrackMessageKind::kNew && entry->zone == 0 &&
        entry->destination_translated()) {
      auto outbound = table.find(entry->original, true);
      if (outbound && !(outbound->backend_addr.bytes == entry->reply.src.bytes &&
                        outbound->backend_port == entry->reply.sport)) {
        std::abort();
      }
    }
    (void)table.find(entry->reply, false);
    if (now % 3 == 0) table.closed(entry->original, true);
    if (now % 5 == 0) table.closed(entry->reply, false);
    if (now % 4 == 0) table.purge_destroyed(now - 2);
    return true;
  });
  return 0;
}
