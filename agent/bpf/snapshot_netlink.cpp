// The start-up snapshot's fallback enumeration: see snapshot_netlink.h.
//
// Order: the /proc scan first (namespaces and socket descriptors), then per namespace the
// listeners, then the connections. A connection opened after the scan has no owner here and is
// left out: the hooks, attached before, report it. One that closes in between is not found by
// the BPF program (its cookie) and is not reported either.
#include "bpf/snapshot_netlink.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "common/unique_fd.h"

namespace netmon {
namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text(int err) { return std::strerror(err); }

// TCP states (include/net/tcp_states.h).
constexpr int kEstablished = 1, kFinWait1 = 4, kFinWait2 = 5, kCloseWait = 8, kLastAck = 9,
              kListen = 10, kClosing = 11;
// The states reported: not SYN_SENT (its Establish is still to come, from the hooks), not
// SYN_RECV (no descriptor yet), not TIME_WAIT (none any more), not LISTEN.
constexpr uint32_t kConnectedStates = (1u << kEstablished) | (1u << kFinWait1) | (1u << kFinWait2) |
                                      (1u << kCloseWait) | (1u << kClosing) | (1u << kLastAck);

// A pid's directory name, or 0.
uint32_t pid_of(const char* name) {
  uint32_t pid = 0;
  const char* end = name + std::strlen(name);
  auto [p, ec] = std::from_chars(name, end, pid);
  return ec == std::errc() && p == end ? pid : 0;
}

struct Scan {
  std::vector<std::pair<uint64_t, uint32_t>> namespaces;  // (netns inode, pid)
  std::vector<std::pair<uint32_t, uint32_t>> sockets;     // (socket inode, pid)
};

// The socket descriptors of `pid`, bounded.
void scan_fds(const std::string& proc_root, uint32_t pid, const DiagBounds& bounds, Scan& scan,
              DiagStats& stats) {
  const std::string dir = proc_root + "/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;  // exited, or a kernel thread
  ++stats.processes;
  size_t seen = 0;
  char link[64];
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    if (++seen > bounds.max_fds_per_process || scan.sockets.size() >= bounds.max_socket_fds) {
      stats.truncated = true;
      break;
    }
    const ssize_t n = ::readlinkat(::dirfd(d), e->d_name, link, sizeof link - 1);
    constexpr std::string_view kPrefix = "socket:[";
    if (n <= static_cast<ssize_t>(kPrefix.size()) || link[n - 1] != ']') continue;
    if (std::string_view(link, kPrefix.size()) != kPrefix) continue;
    uint32_t inode = 0;
    auto [p, ec] = std::from_chars(link + kPrefix.size(), link + n - 1, inode);
    if (ec != std::errc() || p != link + n - 1) continue;
    scan.sockets.emplace_back(inode, pid);
    ++stats.socket_fds;
  }
  ::closedir(d);
}

Result<Scan> scan_proc(const std::string& proc_root, const DiagBounds& bounds,
                       Clock::time_point until, DiagStats& stats) {
  DIR* d = ::opendir(proc_root.c_str());
  if (!d) return fail(proc_root + ": " + errno_text(errno), errno);
  Scan scan;
  size_t processes = 0;
  while (dirent* e = ::readdir(d)) {
    const uint32_t pid = pid_of(e->d_name);
    if (pid == 0) continue;
    if (++processes > bounds.max_processes || Clock::now() > until) {
      stats.truncated = true;
      break;
    }
    struct stat ns {};
    if (::stat((proc_root + "/" + e->d_name + "/ns/net").c_str(), &ns) == 0) {
      scan.namespaces.emplace_back(ns.st_ino, pid);
    }
    scan_fds(proc_root, pid, bounds, scan, stats);
  }
  ::closedir(d);
  // One owner per socket: the lowest pid, as the iterator (usually the process that opened it;
  // its children, which inherited it, came later).
  std::sort(scan.sockets.begin(), scan.sockets.end());
  scan.sockets.erase(std::unique(scan.sockets.begin(), scan.sockets.end(),
                                 [](const auto& a, const auto& b) { return a.first == b.first; }),
                     scan.sockets.end());
  scan.sockets.shrink_to_fit();
  std::sort(scan.namespaces.begin(), scan.namespaces.end());
  return scan;
}

uint32_t owner_of(const Scan& scan, uint32_t inode) {
  auto it = std::lower_bound(scan.sockets.begin(), scan.sockets.end(),
                             std::make_pair(inode, uint32_t{0}));
  return it != scan.sockets.end() && it->first == inode ? it->second : 0;
}

struct ListenerKey {
  uint8_t family;
  uint16_t port;
  std::array<uint8_t, 16> addr;  // zero: any
  auto operator<=>(const ListenerKey&) const = default;
};

ListenerKey local_key(const inet_diag_msg& m, bool any) {
  ListenerKey k{m.idiag_family, ntohs(m.id.idiag_sport), {}};
  if (!any) std::memcpy(k.addr.data(), m.id.idiag_src, m.idiag_family == AF_INET6 ? 16 : 4);
  return k;
}

enum class Dumped { kDone, kFailed, kStopped };

// One dump of `family`'s TCP sockets in `states`, on a netlink socket of its own made in this
// thread's network namespace: `visit` for each (with its tcp_info when `info`, or null), `room`
// after each datagram (false: stop).
Dumped dump(uint8_t family, uint32_t states, bool info, Clock::time_point until,
            const std::function<void(const inet_diag_msg&, const tcp_info*)>& visit,
            const std::function<bool()>& room) {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd.valid()) return Dumped::kFailed;
  timeval timeout{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  struct {
    nlmsghdr nlh;
    inet_diag_req_v2 req;
  } msg{};
  msg.nlh.nlmsg_len = sizeof msg;
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  msg.nlh.nlmsg_seq = 1;
  msg.req.sdiag_family = family;
  msg.req.sdiag_protocol = IPPROTO_TCP;
  msg.req.idiag_states = states;
  msg.req.idiag_ext = info ? 1u << (INET_DIAG_INFO - 1) : 0;
  if (::send(fd.get(), &msg, sizeof msg, 0) != static_cast<ssize_t>(sizeof msg)) {
    return Dumped::kFailed;
  }
  alignas(nlmsghdr) static thread_local std::array<char, 1 << 16> buffer;
  while (Clock::now() < until) {
    const ssize_t n = ::recv(fd.get(), buffer.data(), buffer.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Dumped::kFailed;  // an error, or the receive timeout
    size_t left = static_cast<size_t>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buffer.data()); NLMSG_OK(h, left);
         h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE) return Dumped::kDone;
      if (h->nlmsg_type == NLMSG_ERROR) return Dumped::kFailed;  // e.g. no IPv6 here
      if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY ||
          h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg))) {
        continue;
      }
      inet_diag_msg m;
      std::memcpy(&m, NLMSG_DATA(h), sizeof m);
      tcp_info ti{};
      bool have_info = false;
      size_t attr_left = h->nlmsg_len - NLMSG_LENGTH(sizeof(inet_diag_msg));
      auto* a = reinterpret_cast<rtattr*>(static_cast<char*>(NLMSG_DATA(h)) +
                                          NLMSG_ALIGN(sizeof(inet_diag_msg)));
      for (; RTA_OK(a, attr_left); a = RTA_NEXT(a, attr_left)) {
        if (a->rta_type != INET_DIAG_INFO) continue;
        std::memcpy(&ti, RTA_DATA(a), std::min<size_t>(RTA_PAYLOAD(a), sizeof ti));
        have_info = true;
      }
      visit(m, have_info ? &ti : nullptr);
    }
    if (!room()) return Dumped::kStopped;
  }
  return Dumped::kStopped;  // out of time
}

// The namespace this thread is in: its listeners, then its connections. A family that cannot be
// dumped (no IPv6 in this namespace) is skipped; false when a stop or the time bound ended it.
bool dump_namespace(const Scan& scan, Clock::time_point until,
                    const std::function<void(const DiagConnection&)>& report,
                    const std::function<bool()>& room, DiagStats& stats) {
  std::set<ListenerKey> listeners;
  auto listening = [&](const inet_diag_msg& m, const tcp_info*) {
    if (m.idiag_state != kListen) return;
    listeners.insert(local_key(m, false));
    ++stats.listeners;
  };
  auto always = [] { return true; };
  int failed = 0;
  for (uint8_t family : {AF_INET, AF_INET6}) {
    const Dumped d = dump(family, 1u << kListen, false, until, listening, always);
    if (d == Dumped::kStopped) return false;
    if (d == Dumped::kFailed) ++failed;
  }
  auto connected = [&](const inet_diag_msg& m, const tcp_info* ti) {
    if (!((1u << m.idiag_state) & kConnectedStates)) return;
    if (m.idiag_family != AF_INET && m.idiag_family != AF_INET6) return;
    DiagConnection c;
    c.inode = m.idiag_inode;
    c.owner = c.inode ? owner_of(scan, c.inode) : 0;
    if (c.owner == 0) {
      ++stats.without_owner;  // in an accept queue, or no process holds it any more
      return;
    }
    c.family = m.idiag_family;
    c.state = m.idiag_state;
    std::memcpy(c.src, m.id.idiag_src, 16);
    std::memcpy(c.dst, m.id.idiag_dst, 16);
    c.sport = ntohs(m.id.idiag_sport);
    c.dport = ntohs(m.id.idiag_dport);
    c.cookie = static_cast<uint64_t>(m.id.idiag_cookie[1]) << 32 | m.id.idiag_cookie[0];
    c.accepted = listeners.count(local_key(m, false)) || listeners.count(local_key(m, true));
    if (ti) {
      c.bytes_sent = ti->tcpi_bytes_sent;
      c.bytes_received = ti->tcpi_bytes_received;
      c.srtt_us = ti->tcpi_rtt;
      c.retransmits = ti->tcpi_total_retrans;
    }
    ++stats.connections;
    report(c);
  };
  for (uint8_t family : {AF_INET, AF_INET6}) {
    const Dumped d = dump(family, kConnectedStates, true, until, connected, room);
    if (d == Dumped::kStopped) return false;
    if (d == Dumped::kFailed) ++failed;
  }
  if (failed == 4) {
    ++stats.namespaces_failed;
  } else {
    ++stats.namespaces;
  }
  return room();  // once more in this namespace (the caller's last batch)
}

}  // namespace

Result<DiagStats> enumerate_connections(const std::string& proc_root, const DiagBounds& bounds,
                                        const std::function<void(const DiagConnection&)>& report,
                                        const std::function<bool()>& room) {
  const auto until = Clock::now() + bounds.max_time;
  DiagStats stats;
  const auto scan_started = Clock::now();
  auto scanned = scan_proc(proc_root, bounds, until, stats);
  if (!scanned) return fail(scanned.error().message);
  stats.scan_seconds = std::chrono::duration<double>(Clock::now() - scan_started).count();
  const Scan& scan = *scanned;
  Result<DiagStats> result = fail("not run");
  try {
    // setns() moves this thread only: a thread of our own enters each namespace, and ends.
    std::thread([&] {
      bool stopped = false;
      auto dump_here = [&] {
        if (!dump_namespace(scan, until, report, room, stats)) {
          stopped = true;
          stats.truncated = true;
        }
      };
      // The thread's own namespace first, where it is without setns() (which needs
      // CAP_SYS_ADMIN): with host networking, the node's.
      struct stat own {};
      uint64_t own_ns = 0;
      if (::stat("/proc/thread-self/ns/net", &own) == 0) own_ns = own.st_ino;
      if (own_ns != 0 && std::any_of(scan.namespaces.begin(), scan.namespaces.end(),
                                     [own_ns](const auto& n) { return n.first == own_ns; })) {
        dump_here();
      }
      for (size_t i = 0; i < scan.namespaces.size() && !stopped;) {
        const uint64_t ns = scan.namespaces[i].first;
        if (ns == own_ns) {
          ++i;
          continue;
        }
        bool entered = false;
        // The first of its processes whose namespace link still opens (they may exit).
        for (; i < scan.namespaces.size() && scan.namespaces[i].first == ns; ++i) {
          if (entered) continue;
          const std::string path =
              proc_root + "/" + std::to_string(scan.namespaces[i].second) + "/ns/net";
          UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
          struct stat st {};
          if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || st.st_ino != ns) continue;
          entered = ::setns(fd.get(), CLONE_NEWNET) == 0;
        }
        if (!entered) {
          ++stats.namespaces_failed;  // its processes left, or no CAP_SYS_ADMIN
          continue;
        }
        dump_here();
      }
      result = stats;
    }).join();
  } catch (const std::system_error& e) {
    return fail(std::string("starting the snapshot's thread: ") + e.what());
  }
  return result;
}

}  // namespace netmon
