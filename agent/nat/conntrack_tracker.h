// ConntrackTracker: the translations of the node's connection tracking, for the events (issue
// #20). Subscribes to conntrack's NEW and DESTROY event groups in the agent's network namespace
// (the node's: the DaemonSet runs with hostNetwork) with a kernel socket filter that lets through
// only translated entries, so that untranslated connections cost nothing in user space; dumps the
// existing entries once at start; keeps them in a bounded NatTable.
//
// Why no wait: conntrack queues the NEW message of a connection when its first packet (the SYN)
// is confirmed, before the SYN-ACK; the kernel records the Establish or Accept after the
// handshake, so after the message is queued. The pipeline looks up an event; on a miss, when the
// event is newer than the start of the last complete read of the socket, it reads the socket
// itself (non-blocking) and looks again: the answer is then exact, and nothing waits. A Close is
// looked up at its open time (its entry outlives the socket by conntrack's close timeouts; a
// destroyed entry is kept for kDestroyedGrace more).
//
// Losses: when the socket overflows (ENOBUFS) the tracker re-dumps the table from its reader
// thread; a miss for a connection opened between the last complete read before the overflow and
// the re-dump is counted "lost", as is any miss while the table is full.
//
// Threads: translate() on the pipeline thread, the reader thread in start(); one mutex guards the
// socket's reading and the table.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"
#include "events/event.h"
#include "nat/nat.h"
#include "nat/nat_table.h"

namespace netmon {

struct ConntrackStats {
  size_t entries = 0;         // translated entries held
  uint64_t messages = 0;      // entry messages read (events and dumps)
  uint64_t overflows = 0;     // times the socket overflowed (ENOBUFS): messages lost
  uint64_t refused = 0;       // entries refused because the table was full
  uint64_t malformed = 0;     // messages that did not parse
  uint64_t dumps = 0;         // complete dumps (the first, and one after each overflow)
  NatLookupCounts lookups{};  // by NatResult
};

class ConntrackTracker {
 public:
  struct Settings {
    size_t max_entries = 65536;
    int receive_buffer_bytes = 8 << 20;  // the event socket's (SO_RCVBUFFORCE, else SO_RCVBUF)
    // The network namespace whose conntrack is read: a path such as /host/proc/1/ns/net (the
    // sockets are made there, by a thread that enters it: CAP_SYS_ADMIN); "": the agent's own.
    std::string netns_path;
  };
  static constexpr auto kDestroyedGrace = std::chrono::seconds(30);

  // Subscribes in the calling thread's network namespace and dumps the existing entries (at most
  // a few seconds on a huge table). An error says why conntrack cannot be read (no permission,
  // no ctnetlink in the kernel): the caller logs it once and runs without translations.
  static Result<std::unique_ptr<ConntrackTracker>> open(const Settings& settings);
  ~ConntrackTracker();
  ConntrackTracker(const ConntrackTracker&) = delete;
  ConntrackTracker& operator=(const ConntrackTracker&) = delete;

  // Starts the reader thread (reads the events as they come, re-dumps after an overflow, forgets
  // destroyed entries); stop() ends it (also the destructor).
  void start();
  void stop();

  // The translation of a connection event (pipeline thread). Sets `out` when kTranslated.
  NatResult translate(const ConnectionEvent& e, NatTranslation& out) noexcept;

  ConntrackStats stats() const;

 private:
  ConntrackTracker(UniqueFd events, UniqueFd dumps, const Settings& settings);
  // Reads the event socket until it is empty or `budget` messages were read; true when it was
  // emptied (then drained_from_ns_ moves to the read's start). Holds mutex_.
  bool drain_locked(size_t budget);
  // Reads a whole dump from the dump socket into the table. Not under mutex_ while it reads; only
  // open() and then the reader thread call it.
  Result<void> dump();
  void run();

  const Settings settings_;
  UniqueFd events_;
  UniqueFd dumps_;  // the socket dumps are asked on (made with events_, in the same namespace)
  mutable std::mutex mutex_;
  NatTable table_;                  // guarded by mutex_
  uint64_t drained_from_ns_ = 0;    // every message queued before this was read (mutex_)
  uint64_t uncertain_from_ns_ = 0;  // misses for connections opened in [from, to] are "lost"
  uint64_t uncertain_to_ns_ = 0;    //   (mutex_; to == UINT64_MAX while a re-dump is due)
  bool resync_due_ = false;         // (mutex_)
  ConntrackStats stats_;            // (mutex_), lookups included
  std::vector<std::byte> buffer_;   // (mutex_)
  std::atomic<bool> stop_{false};
  UniqueFd wake_;  // eventfd: stop()
  std::thread reader_;
};

}  // namespace netmon
