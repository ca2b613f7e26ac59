// The start-up snapshot's fallback enumeration (issue #21), user space only: every TCP connection
// of every network namespace, by sock_diag netlink, with the process that holds it, by a /proc
// fd scan. agent/bpf/snapshot.cpp hands each to netmon_snapshot_netlink.bpf.c, which reports it
// exactly once.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "common/result.h"

namespace netmon {

// One connection end as sock_diag gave it, with its owner.
struct DiagConnection {
  uint8_t family = 0;     // the socket's: AF_INET or AF_INET6 (its addresses may be IPv4-mapped)
  uint8_t state = 0;      // TCP state (ESTABLISHED, FIN_WAIT1/2, CLOSE_WAIT, CLOSING, LAST_ACK)
  uint8_t src[16]{};      // local address, network order (IPv4: the first 4 bytes)
  uint8_t dst[16]{};      // remote address
  uint16_t sport = 0;     // host order
  uint16_t dport = 0;     // host order
  uint64_t cookie = 0;    // idiag_cookie: sock_gen_cookie(), the one SO_COOKIE and the hooks see
  uint32_t inode = 0;     // the socket's inode
  uint32_t owner = 0;     // the lowest pid among the processes whose descriptors hold it
  bool accepted = false;  // a listener of its namespace holds its local port (and address, or all)
  // tcp_info (INET_DIAG_INFO): the statistics so far.
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint32_t srtt_us = 0;
  uint32_t retransmits = 0;
};

// What the enumeration saw.
struct DiagStats {
  uint64_t namespaces = 0;  // network namespaces dumped
  // Found but not entered (their processes left, or setns() refused: CAP_SYS_ADMIN) or not dumped.
  uint64_t namespaces_failed = 0;
  uint64_t listeners = 0;      // listening sockets
  uint64_t connections = 0;    // handed to `report`
  uint64_t without_owner = 0;  // dumped, but no process holds them (left out)
  uint64_t processes = 0;      // processes whose descriptors were read
  uint64_t socket_fds = 0;     // socket descriptors among them
  bool truncated = false;      // a bound of DiagBounds was reached: some were not seen
  double scan_seconds = 0;     // the /proc scan's part of the time
};

// The bounds of one enumeration (a hostile /proc: huge descriptor tables, endless processes).
struct DiagBounds {
  size_t max_processes = 1u << 20;
  size_t max_fds_per_process = 1u << 21;
  size_t max_socket_fds = 1u << 22;  // 16 bytes each while the snapshot runs
  std::chrono::seconds max_time{120};
};

// Scans `proc_root` (every process's network namespace and socket descriptors), then in each
// network namespace found dumps the listening sockets and the connections (IPv4 and IPv6) and
// calls `report` for each connection a process holds, on a thread of its own that has entered
// that namespace (a BPF test run happens in the caller's), and `room`, in the same thread, after
// each netlink datagram (about two hundred connections) and at the end of each namespace
// (false: stop). Runs on the calling thread otherwise; joins its thread. Fails when
// /proc cannot be read or the thread cannot be made.
Result<DiagStats> enumerate_connections(const std::string& proc_root, const DiagBounds& bounds,
                                        const std::function<void(const DiagConnection&)>& report,
                                        const std::function<bool()>& room);

}  // namespace netmon
