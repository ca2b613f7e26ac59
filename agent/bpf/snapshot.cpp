// The start-up snapshot (issue #21): loads netmon_snapshot.bpf.c next to the main object, with
// the main object's maps, and runs its task/file iterator twice (listeners, then connections).
// The connections go out as records in the ring buffer, which the polling thread reads meanwhile;
// the iterator writes one 16-byte line per socket it reports into its seq_file, so that a read()
// returns after about 2 000 of them (the seq_file's 32 KiB buffer) and the reader can wait for
// room in the ring buffer between chunks instead of losing records.
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

#include "bpf/libbpf_log.h"
#include "bpf/loader.h"
#include "common/socket_cookie.h"
#include "common/unique_fd.h"
#include "netmon.skel.h"
#include "netmon_snapshot.skel.h"

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

}  // namespace

void LoadedProgram::SnapshotDeleter::operator()(netmon_snapshot_bpf* skel) const {
  netmon_snapshot_bpf__destroy(skel);
}

void LoadedProgram::LinkDeleter::operator()(bpf_link* link) const { bpf_link__destroy(link); }

void LoadedProgram::load_snapshot() {
  VerifierReasons reasons;
  std::unique_ptr<netmon_snapshot_bpf, SnapshotDeleter> s(netmon_snapshot_bpf__open());
  if (!s) {
    snapshot_error_ = "opening the snapshot's BPF object: " + errno_text(errno);
    return;
  }
  netmon_bpf* main = skel_.get();
  // The main object's maps: its ring buffer, its connections, its counters and scratch slots.
  const std::pair<bpf_map*, bpf_map*> shared[] = {{s->maps.events, main->maps.events},
                                                  {s->maps.sockets, main->maps.sockets},
                                                  {s->maps.counters, main->maps.counters},
                                                  {s->maps.scratch, main->maps.scratch}};
  for (const auto& [mine, theirs] : shared) {
    if (int err = bpf_map__reuse_fd(mine, bpf_map__fd(theirs)); err != 0) {
      snapshot_error_ = std::string("sharing the map ") + bpf_map__name(theirs) +
                        " with the snapshot: " + errno_text(-err);
      return;
    }
  }
  s->rodata->wakeup_bytes = main->rodata->wakeup_bytes;
  if (int err = netmon_snapshot_bpf__load(s.get()); err != 0) {
    std::string why = errno_text(-err);
    if (!reasons.last().empty()) why += ": the verifier says \"" + reasons.last() + "\"";
    snapshot_error_ = "the kernel refused the snapshot's iterator (" + why +
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

Result<SnapshotStats> LoadedProgram::snapshot(const std::function<bool()>& room) {
  if (!snapshot_) return fail(snapshot_error_);
  const auto started = std::chrono::steady_clock::now();
  netmon_snapshot_bpf& s = *snapshot_;
  bpf_link* link = snapshot_link_.get();
  SnapshotStats stats;
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

}  // namespace netmon
