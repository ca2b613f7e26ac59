// The pipeline's side of the edge metrics (metrics/edges.h): the edge of each connection event,
// from this end's pod (or host process) and the peer. Two caches keep the event path to a hash
// lookup and a few relaxed atomic adds:
//  - by inputs: the identities the labels are made from (the pod's and the peers' objects in the
//    current pod and peer snapshots, which stay put until the snapshot changes, the host
//    process's name, the direction and the port) -> the edge, a direct-mapped array (no
//    allocation, no chain to follow), emptied when a snapshot changes or an edge is removed; the
//    labels are built only on a miss;
//  - by cookie: the edge of each open connection, found at its open and kept until its Close, so
//    that both count in the same edge and an edge with open connections is never removed.
// Runs on the pipeline thread; not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "common/cookie_map.h"
#include "events/event.h"
#include "k8s/attribution.h"
#include "k8s/peer_index.h"
#include "metrics/edges.h"

namespace netmon {

// Who the two ends of one connection event are, as the pipeline found them. The pointers and
// views must stay valid, and point to the same objects for the same pod or peer, as long as
// `generation` stays the same.
struct EdgeEnds {
  const Attribution* attribution = nullptr;  // this end's pod; null or without pod: a host process
  std::string_view process_name;             // this end's binary name (host processes)
  // The peer index's answer for the remote end (null: no peer index). For an inbound connection
  // whose conntrack entry shows the client before translation, that client's.
  const Peer* peer = nullptr;
  // Outbound, translated by conntrack: where the connection landed (null: not translated).
  const Peer* backend = nullptr;
  // Change whenever the pod snapshot, or the peer index, the pointers come from changes.
  uint64_t pod_generation = 0;
  uint64_t peer_generation = 0;
};

class EdgeCounters {
 public:
  // `table` must outlive this object. `max_open`: connections whose edge is kept until their
  // Close; past it a Close finds its edge again by its inputs (an edge whose connections are all
  // past it may then be removed while they are open, and come back at their Close).
  EdgeCounters(EdgeTable& table, size_t max_open);

  // Counts `e` in its edge. `now_ns`: CLOCK_BOOTTIME.
  void count(const ConnectionEvent& e, const EdgeEnds& ends, uint64_t now_ns);

  // Removes the edges idle for the table's idle time (call about once a second).
  size_t remove_idle(uint64_t now_ns);

  size_t open_connections() const { return open_.size(); }

 private:
  // What an edge's labels are made from, by identity.
  struct Inputs {
    const void* owner = nullptr;   // the PodMeta; null: no pod
    uint64_t host_name_hash = 0;   // a host process's name (compared in full on a hit)
    const void* peer_a = nullptr;  // the peer's namespace and name-like view's data
    const void* peer_b = nullptr;
    const void* service = nullptr;  // the dialed service's name, when a backend is named
    uint16_t port = 0;              // 0: not a listed port
    uint8_t direction = 0;
    uint8_t owner_kind = 0;  // 0 pod, 1 container without pod, 2 host
    uint8_t peer_kind = 0;   // PeerKind + 1; 0: no peer index
    uint8_t backend = 0;

    bool operator==(const Inputs&) const = default;
  };
  static uint64_t hash(const Inputs& i);

  Inputs inputs_of(const ConnectionEvent& e, const EdgeEnds& ends, std::string_view& host) const;
  EdgeSeries* find(const ConnectionEvent& e, const EdgeEnds& ends, uint64_t now_ns);
  EdgeSeries* build(const ConnectionEvent& e, const EdgeEnds& ends, uint16_t port, uint64_t now_ns);
  void forget_inputs();

  struct Slot {
    Inputs inputs;
    EdgeSeries* edge = nullptr;  // null: empty
  };
  static constexpr size_t kSlots = 4096;  // a power of two: 224 KiB

  EdgeTable& table_;
  const size_t max_open_;
  CookieMap<EdgeSeries*> open_;  // by cookie; each counted in edge->open
  std::unique_ptr<Slot[]> by_inputs_;
  uint64_t pod_generation_ = 0;  // of by_inputs_
  uint64_t peer_generation_ = 0;
  EdgeLabels labels_;  // reused: no allocation per miss once warm
  std::string key_;
};

}  // namespace netmon
