// ProcessTable: every process on the host, fed by the kernel's exec/fork/exit records and seeded
// by one /proc scan. Owned and used by the pipeline thread only (not thread-safe); stats() is a
// plain snapshot for the metrics module.
#pragma once

#include <cstdint>
#include <deque>
#include <unordered_map>

#include "events/event.h"
#include "process/proc_reader.h"
#include "process/process.h"

namespace netmon {

struct ProcessTableStats {
  uint64_t live = 0;
  uint64_t exited = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;              // owner not in the table and not readable from /proc
  uint64_t resolved_from_proc = 0;  // owner missing from the table, read from /proc on demand
  uint64_t evictions = 0;           // exited processes dropped to stay within capacity
  uint64_t stale_removed = 0;       // live entries whose process was found gone
};

class ProcessTable {
 public:
  // `capacity`: processes kept, live and exited together. Exited processes stay until the
  // capacity needs their room (oldest exit first), so Close events of connections that outlive
  // their process still resolve.
  ProcessTable(ProcReader reader, size_t capacity);

  // Reads every process in /proc (call once, after the probes attach so that nothing started
  // in between is missed).
  void seed();

  void on_exec(const ExecEvent& e);
  void on_fork(const ForkEvent& e);
  void on_exit(const ExitEvent& e);

  // The process with this pid whose task started at `start_ns` (pid reuse never mixes two
  // processes). On a miss, reads /proc once. nullptr when unknown.
  const ProcessEntry* find(uint32_t pid, uint64_t start_ns);
  // The process currently holding `pid` (for parents, whose start the event does not carry).
  const ProcessEntry* find_current(uint32_t pid);

  ProcessTableStats stats() const;
  size_t size() const { return live_.size() + exited_.size(); }

 private:
  struct ExitedKey {
    uint32_t pid;
    uint64_t start_tick;
    bool operator==(const ExitedKey&) const = default;
  };
  struct ExitedKeyHash {
    size_t operator()(const ExitedKey& k) const {
      return std::hash<uint64_t>()((static_cast<uint64_t>(k.pid) << 40) ^ k.start_tick);
    }
  };

  uint64_t tick(uint64_t ns) const { return ns / kTickNs; }
  bool same_task(const ProcessEntry& e, uint64_t start_ns) const {
    return tick(e.fork_start_ns) == tick(start_ns);
  }
  // find(), counting hits and misses only when `count` (owner lookups, not fork parents).
  const ProcessEntry* lookup(uint32_t pid, uint64_t start_ns, bool count);
  // Inserts or replaces the live entry for e.pid; a replaced entry of another task is retired.
  ProcessEntry& put_live(ProcessEntry&& e);
  void retire(ProcessEntry&& e, uint64_t exited_ns);
  // Evicts the oldest exited entries, then live entries whose process is gone, until the table
  // fits its capacity; never `keep_pid`.
  void make_room(uint32_t keep_pid);
  std::string parent_exec_id(uint32_t ppid);

  // Start times from /proc have clock-tick precision: identity compares at that precision.
  static constexpr uint64_t kTickNs = 10'000'000;

  ProcReader reader_;
  size_t capacity_;
  std::unordered_map<uint32_t, ProcessEntry> live_;
  std::unordered_map<ExitedKey, ProcessEntry, ExitedKeyHash> exited_;
  std::deque<ExitedKey> exit_order_;
  ProcessTableStats stats_;
};

}  // namespace netmon
