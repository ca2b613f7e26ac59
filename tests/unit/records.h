// Connection records as the BPF programs write them, for the unit tests of what reads them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

extern "C" {
#include "netmon_events.h"
}

namespace netmon::test {

// A fully populated record with distinct values in every field.
inline nm_conn_record make_record(uint8_t kind, uint8_t family) {
  nm_conn_record r{};
  r.hdr.type = NM_REC_CONNECTION;
  r.hdr.size = sizeof(nm_conn_record);
  r.hdr.ts_ns = 123'456'789'012ull;
  r.task.pid = 1001;
  r.task.tid = 1002;
  r.task.ppid = 1;
  r.task.uid = 1003;
  r.task.euid = 1004;
  r.task.gid = 1005;
  r.task.egid = 1006;
  r.task.auid = 1007;
  r.task.start_ns = 869'494'270'000'000ull;
  r.task.cgroup_id = 0x1122334455667788ull;
  r.task.cap_effective = 0x1ull;
  r.task.cap_permitted = 0x3ull;
  r.task.cap_inheritable = 0x7ull;
  std::memcpy(r.task.comm, "curl", 5);
  r.cookie = 0xdeadbeefcafef00dull;
  if (family == NM_AF_INET) {
    const uint8_t s[4] = {10, 0, 0, 1};
    const uint8_t d[4] = {192, 168, 1, 254};
    std::memcpy(r.saddr, s, 4);
    std::memcpy(r.daddr, d, 4);
  } else {
    for (int i = 0; i < NM_ADDR_LEN; ++i) {
      r.saddr[i] = static_cast<uint8_t>(0x20 + i);
      r.daddr[i] = static_cast<uint8_t>(0x80 + i);
    }
  }
  r.sport = 43210;
  r.dport = 443;
  r.family = family;
  r.kind = kind;
  r.direction = kind == NM_CONN_ACCEPT ? NM_DIR_INBOUND : NM_DIR_OUTBOUND;
  r.flags = NM_CONN_F_OWNER_KNOWN;
  r.error = kind == NM_CONN_FAILED ? 111 : 0;
  return r;
}

inline std::vector<std::byte> to_bytes(const nm_conn_record& r) {
  std::vector<std::byte> out(sizeof(r));
  std::memcpy(out.data(), &r, sizeof(r));
  return out;
}

}  // namespace netmon::test
