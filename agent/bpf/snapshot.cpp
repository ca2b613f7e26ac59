// The start-up snapshot (issue #21): loads netmon_snapshot.bpf.c next to the main object, with
// the main object's maps, and runs its task/file iterator twice (listeners, then connections).
// The connections go out as records in the ring buffer, which the polling thread reads meanwhile;
// the iterator writes one 16-byte line per socket it reports into its seq_file, so that a read()
// returns after about 2 000 of them (the seq_file's 32 KiB buffer) and the reader can wait for
// room in the ring buffer between chunks instead of losing records.
//
// Where the iterator cannot load (5.10), the fallback: the connections from sock_diag in every
// network namespace and their owners from a /proc fd scan (snapshot_netlink.cpp), each reported
// by a test run of netmon_snapshot_netlink.bpf.c, which finds the socket and reports it exactly
// once as the iterator does.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

#include <linux/bpf.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include <optional>
#include <unordered_map>

#include "bpf/libbpf_log.h"
#include "bpf/loader.h"
#include "bpf/snapshot_netlink.h"
#include "common/files.h"
#include "common/socket_cookie.h"
#include "common/unique_fd.h"
#include "netmon.skel.h"
#include "netmon_events.h"
#include "netmon_snapshot.skel.h"
#include "netmon_snapshot_netlink.skel.h"
#include "process/proc_reader.h"

namespace netmon {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

enum Pass : uint32_t { kListeners = 1, kConnections = 2 };

// Has the kernel make the cookie of each socket the first pass wrote out as (pid, fd) without
// one: getsockopt(SO_COOKIE) on a copy of the fd (pidfd_getfd(): CAP_SYS_PTRACE). A process that
// exited meanwhile is skipped (its sockets are reported with the cookie 0 if they are still open
// through another holder). Returns how many were made.
uint64_t make_cookies(const std::vector<char>& lines) {
  struct Line {
    uint32_t pid;
    uint32_t fd;
  };
  uint64_t made = 0;
  uint32_t open_pid = 0;
  UniqueFd pidfd;
  for (size_t at = 0; at + sizeof(Line) <= lines.size(); at += sizeof(Line)) {
    Line line;
    std::memcpy(&line, lines.data() + at, sizeof line);
    if (line.pid != open_pid) {  // the iterator writes a process's files together
      pidfd = open_process(line.pid);
      open_pid = line.pid;
    }
    if (socket_cookie(pidfd, line.fd) != 0) ++made;
  }
  return made;
}

// Runs one pass of the iterator to its end; between reads, `room` (false: give up). What the
// pass wrote goes to `out` when given.
Result<uint64_t> run_pass(netmon_snapshot_bpf& s, bpf_link* link, Pass pass,
                          const std::function<bool()>& room, std::vector<char>* out = nullptr) {
  s.bss->snapshot_pass = pass;
  UniqueFd iter(bpf_iter_create(bpf_link__fd(link)));
  if (!iter.valid()) return fail("creating the snapshot iterator: " + errno_text(errno), errno);
  std::array<char, 1 << 16> buffer;
  uint64_t chunks = 0;
  for (;;) {
    const ssize_t n = ::read(iter.get(), buffer.data(), buffer.size());
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("reading the snapshot iterator: " + errno_text(errno), errno);
    }
    ++chunks;
    if (out) out->insert(out->end(), buffer.data(), buffer.data() + n);
    if (!room()) break;
  }
  return chunks;
}

// Before `snapshot` (either snapshot object: the iterator's or the fallback's) loads: makes its
// maps the main object's (its ring buffer, its connections, its counters and scratch slots) and
// gives it the main object's wakeup policy. Returns an error naming `what`, or "".
template <typename Snapshot>
std::string share_main_maps(netmon_bpf& main, Snapshot& snapshot, const char* what) {
  const std::pair<bpf_map*, bpf_map*> shared[] = {{snapshot.maps.events, main.maps.events},
                                                  {snapshot.maps.sockets, main.maps.sockets},
                                                  {snapshot.maps.counters, main.maps.counters},
                                                  {snapshot.maps.scratch, main.maps.scratch}};
  for (const auto& [mine, theirs] : shared) {
    if (int err = bpf_map__reuse_fd(mine, bpf_map__fd(theirs)); err != 0) {
      return std::string("sharing the map ") + bpf_map__name(theirs) + " with " + what + ": " +
             errno_text(-err);
    }
  }
  snapshot.rodata->wakeup_bytes = main.rodata->wakeup_bytes;
  return {};
}

}  // namespace

void LoadedProgram::SnapshotDeleter::operator()(netmon_snapshot_bpf* skel) const {
  netmon_snapshot_bpf__destroy(skel);
}

void LoadedProgram::LinkDeleter::operator()(bpf_link* link) const { bpf_link__destroy(link); }

void LoadedProgram::load_iterator() {
  VerifierReasons reasons;
  std::unique_ptr<netmon_snapshot_bpf, SnapshotDeleter> s(netmon_snapshot_bpf__open());
  if (!s) {
    snapshot_error_ = "opening the snapshot's BPF object: " + errno_text(errno);
    return;
  }
  if (std::string error = share_main_maps(*skel_, *s, "the snapshot"); !error.empty()) {
    snapshot_error_ = std::move(error);
    return;
  }
  if (int err = netmon_snapshot_bpf__load(s.get()); err != 0) {
    snapshot_error_ = std::string("the kernel refused the snapshot's iterator (") +
                      errno_text(-err) + reasons.said() +
                      "; it needs iter/task_file with bpf_sock_from_file(), Linux 5.11)";
    return;
  }
  bpf_link* link = bpf_program__attach_iter(s->progs.snapshot_task_file, nullptr);
  if (!link) {
    snapshot_error_ = "attaching the snapshot's iterator: " + errno_text(errno);
    return;
  }
  snapshot_ = std::move(s);
  snapshot_link_.reset(link);
  snapshot_error_.clear();
}

void LoadedProgram::NetlinkDeleter::operator()(netmon_snapshot_netlink_bpf* skel) const {
  netmon_snapshot_netlink_bpf__destroy(skel);
}

void LoadedProgram::load_snapshot(const ProbeOptions& options) {
  proc_root_ = options.proc_root;
  cgroup_root_ = options.cgroup_root;
  if (options.snapshot_netlink) {
    iterator_error_ = "NETMON_FAULT_SNAPSHOT=netlink";
  } else {
    load_iterator();
    if (snapshot_) return;
    iterator_error_ = snapshot_error_;
  }
  VerifierReasons reasons;
  std::unique_ptr<netmon_snapshot_netlink_bpf, NetlinkDeleter> s(
      netmon_snapshot_netlink_bpf__open());
  if (!s) {
    snapshot_error_ += "; opening the fallback's BPF object: " + errno_text(errno);
    return;
  }
  if (std::string error = share_main_maps(*skel_, *s, "the snapshot's fallback"); !error.empty()) {
    snapshot_error_ = std::move(error);
    return;
  }
  if (int err = netmon_snapshot_netlink_bpf__load(s.get()); err != 0) {
    snapshot_error_ = iterator_error_ + "; and the kernel refused the fallback's program (" +
                      errno_text(-err) + reasons.said() +
                      "; it needs bpf_sk_lookup_tcp() and bpf_skc_to_tcp_sock() in tc programs, "
                      "Linux 5.10)";
    return;
  }
  snapshot_netlink_ = std::move(s);
  snapshot_error_.clear();
}

Result<SnapshotStats> LoadedProgram::snapshot(const std::function<bool()>& room) {
  if (snapshot_netlink_) return snapshot_netlink(room);
  return snapshot_iterator(room);
}

Result<SnapshotStats> LoadedProgram::snapshot_iterator(const std::function<bool()>& room) {
  if (!snapshot_) return fail(snapshot_error_);
  const auto started = std::chrono::steady_clock::now();
  netmon_snapshot_bpf& s = *snapshot_;
  bpf_link* link = snapshot_link_.get();
  SnapshotStats stats;
  stats.mechanism = "iterator";
  std::vector<char> without_cookie;
  auto listeners = run_pass(s, link, kListeners, room, &without_cookie);
  if (!listeners) return fail(listeners.error().message);
  stats.cookies_made = make_cookies(without_cookie);
  std::vector<char>().swap(without_cookie);
  auto connections = run_pass(s, link, kConnections, room);
  if (!connections) return fail(connections.error().message);
  stats.chunks = *connections;
  std::array<uint64_t, 5> counts{};
  for (uint32_t i = 0; i < counts.size(); ++i) {
    bpf_map_lookup_elem(bpf_map__fd(s.maps.snapshot_stats), &i, &counts[i]);
  }
  stats.reported = counts[0];
  stats.tracked_already = counts[1];
  stats.connecting = counts[2];
  stats.listeners = counts[3];
  stats.no_room = counts[4];
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  snapshot_link_.reset();  // done: the kernel frees the iterator, its listeners map
  snapshot_.reset();
  snapshot_error_ = "taken already";
  return stats;
}

namespace {

// netmon_snapshot_netlink.bpf.c's struct sock_state (lib/maps.bpf.h) and struct snapshot_input:
// the same fields in the same order (the load checks the value size).
struct SockState {
  nm_task owner;
  uint64_t open_ns;
  uint64_t cookie;
  uint8_t direction;
  uint8_t flags;
  uint8_t reported;
  uint8_t first_fin;
  uint8_t abortive;
  uint8_t pad[3];
};

struct SnapshotInput {
  bpf_sock_tuple tuple;
  uint32_t ipv6;
  uint32_t pad;
  uint64_t cookie;
  SockState state;
  nm_conn_record record;
};

// The owners' task fields, read from /proc once per process: status (uids, gids, capabilities),
// stat (parent, start time), loginuid, comm, and the cgroup v2 id (the inode of its directory
// under `cgroup_root`). Null when the process left meanwhile.
class Owners {
 public:
  Owners(const std::string& proc_root, std::string cgroup_root)
      : proc_root_(proc_root), reader_(proc_root), cgroup_root_(std::move(cgroup_root)) {}

  const nm_task* find(uint32_t pid) {
    auto it = tasks_.find(pid);
    if (it != tasks_.end()) return it->second ? &*it->second : nullptr;
    if (tasks_.size() >= kMaxOwners) tasks_.clear();  // bounded: re-read if needed again
    auto& slot = tasks_[pid];
    slot = read(pid);
    return slot ? &*slot : nullptr;
  }

 private:
  static constexpr size_t kMaxOwners = 1 << 16;

  std::optional<nm_task> read(uint32_t pid) const {
    std::optional<ProcessEntry> e = reader_.read(pid);
    if (!e) return std::nullopt;
    nm_task t{};
    t.pid = pid;
    t.tid = pid;
    t.ppid = e->ppid;
    t.uid = e->uid;
    t.euid = e->euid;
    t.gid = e->gid;
    t.egid = e->egid;
    t.auid = e->auid;
    t.start_ns = e->fork_start_ns;
    t.cap_effective = e->cap_effective;
    t.cap_permitted = e->cap_permitted;
    t.cap_inheritable = e->cap_inheritable;
    const std::string dir = proc_root_ + "/" + std::to_string(pid);
    if (auto comm = read_regular_file_prefix(dir + "/comm", sizeof t.comm)) {
      std::string_view c = *comm;
      if (!c.empty() && c.back() == '\n') c.remove_suffix(1);
      std::memcpy(t.comm, c.data(), std::min(c.size(), sizeof t.comm - 1));
    }
    t.cgroup_id = cgroup_id(dir);
    return t;
  }

  // The "0::/path" line of /proc/PID/cgroup, as the inode of that directory.
  uint64_t cgroup_id(const std::string& dir) const {
    if (cgroup_root_.empty()) return 0;
    auto text = read_regular_file_prefix(dir + "/cgroup", 1 << 16);
    if (!text) return 0;
    std::string_view all = *text;
    for (size_t at = 0; at < all.size();) {
      size_t end = all.find('\n', at);
      if (end == std::string_view::npos) end = all.size();
      std::string_view line = all.substr(at, end - at);
      at = end + 1;
      if (line.substr(0, 3) != "0::") continue;
      struct stat st {};
      const std::string path = cgroup_root_ + std::string(line.substr(3));
      return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
    }
    return 0;
  }

  std::string proc_root_;
  ProcReader reader_;
  std::string cgroup_root_;
  std::unordered_map<uint32_t, std::optional<nm_task>> tasks_;
};

// The input of the fallback's program for connection `c` owned by `owner`, as the iterator would
// have reported it (lib/connections.bpf.h: fill_addresses(), fill_close_stats()).
void fill_input(SnapshotInput& in, const DiagConnection& c, const nm_task& owner) {
  in = SnapshotInput{};
  const bool mapped =
      c.family == AF_INET6 && std::memcmp(c.dst, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0;
  const bool v4 = c.family == AF_INET || mapped;
  const uint8_t* src = mapped ? c.src + 12 : c.src;
  const uint8_t* dst = mapped ? c.dst + 12 : c.dst;
  // The lookup's tuple is an arriving packet's: from the peer to this end.
  if (v4) {
    std::memcpy(&in.tuple.ipv4.saddr, dst, 4);
    std::memcpy(&in.tuple.ipv4.daddr, src, 4);
    in.tuple.ipv4.sport = htons(c.dport);
    in.tuple.ipv4.dport = htons(c.sport);
  } else {
    in.ipv6 = 1;
    std::memcpy(in.tuple.ipv6.saddr, dst, 16);
    std::memcpy(in.tuple.ipv6.daddr, src, 16);
    in.tuple.ipv6.sport = htons(c.dport);
    in.tuple.ipv6.dport = htons(c.sport);
  }
  in.cookie = c.cookie;
  const uint8_t direction = c.accepted ? NM_DIR_INBOUND : NM_DIR_OUTBOUND;
  SockState& st = in.state;
  st.owner = owner;
  st.cookie = c.cookie;
  st.direction = direction;
  st.reported = 1;
  st.flags = NM_CONN_F_OWNER_KNOWN | NM_CONN_F_PREEXISTING | NM_CONN_F_OPEN_FROM_AGENT;
  constexpr int kFinWait1 = 4, kFinWait2 = 5, kCloseWait = 8, kLastAck = 9, kClosing = 11;
  if (c.state == kFinWait1 || c.state == kFinWait2 || c.state == kClosing) {
    st.first_fin = NM_CLOSED_BY_LOCAL;
  } else if (c.state == kCloseWait || c.state == kLastAck) {
    st.first_fin = NM_CLOSED_BY_REMOTE;
  }
  nm_conn_record& r = in.record;
  r.task = owner;
  r.flags = st.flags;
  r.cookie = c.cookie;
  r.kind = c.accepted ? NM_CONN_ACCEPT : NM_CONN_ESTABLISH;
  r.direction = direction;
  r.family = v4 ? NM_AF_INET : NM_AF_INET6;
  std::memcpy(r.saddr, src, v4 ? 4 : 16);
  std::memcpy(r.daddr, dst, v4 ? 4 : 16);
  r.sport = c.sport;
  r.dport = c.dport;
  r.bytes_sent = c.bytes_sent;
  // The peer's FIN takes a byte of sequence space that tcp_info counts (SOCK_DONE: it arrived).
  const bool fin_received = c.state == kCloseWait || c.state == kLastAck || c.state == kClosing;
  r.bytes_received = c.bytes_received - (fin_received && c.bytes_received > 0 ? 1 : 0);
  r.srtt_us = c.srtt_us;
  r.retransmits = c.retransmits;
}

}  // namespace

Result<SnapshotStats> LoadedProgram::snapshot_netlink(const std::function<bool()>& room) {
  const auto started = std::chrono::steady_clock::now();
  netmon_snapshot_netlink_bpf& s = *snapshot_netlink_;
  if (bpf_map__value_size(s.maps.snapshot_input) != sizeof(SnapshotInput)) {
    return fail("the snapshot fallback's input is " +
                std::to_string(bpf_map__value_size(s.maps.snapshot_input)) +
                " bytes, the agent's " + std::to_string(sizeof(SnapshotInput)));
  }
  const int input_fd = bpf_map__fd(s.maps.snapshot_input);
  const int prog_fd = bpf_program__fd(s.progs.snapshot_report);
  const uint32_t batch_size = bpf_map__max_entries(s.maps.snapshot_input);
  Owners owners(proc_root_, cgroup_root_);
  std::vector<SnapshotInput> batch;
  batch.reserve(batch_size);
  std::vector<uint32_t> keys(batch_size);
  for (uint32_t i = 0; i < batch_size; ++i) keys[i] = i;
  uint64_t failed_runs = 0;
  int last_error = 0;
  // Reports the batch: its inputs into the map, then one test run per connection, in order. In
  // the namespace of the calling thread, the connections'.
  auto flush = [&] {
    if (batch.empty()) return;
    uint32_t count = static_cast<uint32_t>(batch.size());
    // A packet for the test run: an Ethernet header is the least it takes; never sent.
    std::array<uint8_t, 64> packet{};
    LIBBPF_OPTS(bpf_test_run_opts, run, .data_in = packet.data(), .data_size_in = packet.size(),
                .repeat = static_cast<int>(count));
    s.bss->snapshot_next = 0;
    if (bpf_map_update_batch(input_fd, keys.data(), batch.data(), &count, nullptr) != 0 ||
        count != batch.size() || bpf_prog_test_run_opts(prog_fd, &run) != 0) {
      failed_runs += batch.size();
      last_error = errno;
    }
    batch.clear();
  };
  auto report = [&](const DiagConnection& c) {
    const nm_task* owner = owners.find(c.owner);
    if (!owner) return;  // the process left: as the iterator, which meets holders only
    fill_input(batch.emplace_back(), c, *owner);
    if (batch.size() == batch_size) flush();
  };
  // enumerate_connections() calls `room` after each datagram and at each namespace's end, in
  // the namespace: the batch goes before the wait.
  auto flush_then_room = [&] {
    flush();
    return room();
  };
  DiagBounds bounds;
  auto found = enumerate_connections(proc_root_, bounds, report, flush_then_room);
  if (!found) return fail("the snapshot's fallback: " + found.error().message);
  if (failed_runs > 0) {
    return fail("the snapshot's fallback: " + std::to_string(failed_runs) +
                " connections could not be handed to its program: " + errno_text(last_error));
  }
  SnapshotStats stats;
  stats.mechanism = "netlink";
  stats.fallback_reason = iterator_error_;
  std::array<uint64_t, 4> counts{};
  for (uint32_t i = 0; i < counts.size(); ++i) {
    bpf_map_lookup_elem(bpf_map__fd(s.maps.snapshot_stats), &i, &counts[i]);
  }
  stats.reported = counts[0];
  stats.tracked_already = counts[1];
  stats.closed_meanwhile = counts[2];
  stats.no_room = counts[3];
  stats.listeners = found->listeners;
  stats.namespaces = found->namespaces;
  stats.namespaces_failed = found->namespaces_failed;
  stats.without_owner = found->without_owner;
  stats.truncated = found->truncated;
  stats.scan_seconds = found->scan_seconds;
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  snapshot_netlink_.reset();
  snapshot_error_ = "taken already";
  return stats;
}

}  // namespace netmon
