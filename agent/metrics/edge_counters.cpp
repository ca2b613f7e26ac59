#include "metrics/edge_counters.h"

#include <algorithm>
#include <functional>

#include "common/hash.h"
#include "k8s/pods.h"

namespace netmon {
namespace {

// Names the peer `p` in the peer labels (kind and its one name).
void set_peer(EdgeLabels& l, const Peer& p) {
  l[kEdgePeerKind] = to_string(p.kind);
  switch (p.kind) {
    case PeerKind::kPod:
      l[kEdgePeerNamespace] = p.namespace_name;
      l[kEdgePeerWorkload] = p.workload;
      break;
    case PeerKind::kService:
      l[kEdgePeerNamespace] = p.namespace_name;
      l[kEdgePeerService] = p.name;
      break;
    case PeerKind::kNode:
      l[kEdgePeerNode] = p.name;
      break;
    case PeerKind::kExternal:
      l[kEdgePeerNetwork] = p.network;
      break;
    case PeerKind::kHost:
      break;
  }
}

// The views the labels of `p` come from, by identity.
std::pair<const void*, const void*> peer_identity(const Peer& p) {
  switch (p.kind) {
    case PeerKind::kPod:
      return {p.namespace_name.data(), p.workload.data()};
    case PeerKind::kService:
      return {p.namespace_name.data(), p.name.data()};
    case PeerKind::kNode:
      return {nullptr, p.name.data()};
    case PeerKind::kExternal:
      return {nullptr, p.network.data()};
    case PeerKind::kHost:
      break;
  }
  return {nullptr, nullptr};
}

// Folds `v` into `h` (every bit of the result depends on every bit of both: the slot index
// takes the low bits).
uint64_t mix(uint64_t h, uint64_t v) { return splitmix64(h ^ (v + 0x9e3779b97f4a7c15ull)); }

}  // namespace

EdgeCounters::EdgeCounters(EdgeTable& table, size_t max_open)
    : table_(table), max_open_(max_open), by_inputs_(std::make_unique<Slot[]>(kSlots)) {}

void EdgeCounters::forget_inputs() {
  for (size_t i = 0; i < kSlots; ++i) by_inputs_[i].edge = nullptr;
}

uint64_t EdgeCounters::hash(const Inputs& i) {
  uint64_t h = reinterpret_cast<uintptr_t>(i.owner);
  h = mix(h, i.host_name_hash);
  h = mix(h, reinterpret_cast<uintptr_t>(i.peer_a));
  h = mix(h, reinterpret_cast<uintptr_t>(i.peer_b));
  h = mix(h, reinterpret_cast<uintptr_t>(i.service));
  h = mix(h, uint64_t{i.port} | uint64_t{i.direction} << 16 | uint64_t{i.owner_kind} << 24 |
                 uint64_t{i.peer_kind} << 32 | uint64_t{i.backend} << 40);
  return h;
}

void EdgeCounters::count(const ConnectionEvent& e, const EdgeEnds& ends, uint64_t now_ns) {
  if (e.kind == ConnKind::kClose && e.cookie != 0) {
    if (EdgeSeries* edge = nullptr; open_.take(e.cookie, edge)) {
      --edge->open;
      edge->record(e);
      edge->last_used_ns = now_ns;
      if (edge->overflow) table_.overflowed(e.direction);
      return;
    }
  }
  if (ends.pod_generation != pod_generation_ || ends.peer_generation != peer_generation_) {
    forget_inputs();  // the pointers of the cached inputs may be stale
    pod_generation_ = ends.pod_generation;
    peer_generation_ = ends.peer_generation;
  }
  EdgeSeries* edge = find(e, ends, now_ns);
  edge->record(e);
  if (edge->overflow) table_.overflowed(e.direction);
  const bool opens = e.kind == ConnKind::kEstablish || e.kind == ConnKind::kAccept;
  if (opens && e.cookie != 0 && open_.size() < max_open_) {
    bool added = false;
    EdgeSeries** held = open_.find_or_add(e.cookie, added);
    if (!added) --(*held)->open;  // a cookie reported open twice: the newer edge holds
    *held = edge;
    ++edge->open;
  }
}

EdgeCounters::Inputs EdgeCounters::inputs_of(const ConnectionEvent& e, const EdgeEnds& ends,
                                             std::string_view& host) const {
  Inputs in;
  in.direction = static_cast<uint8_t>(e.direction);
  const Attribution* a = ends.attribution;
  if (a && a->pod) {
    in.owner = a->pod;
  } else if (a && !a->container_id.empty()) {
    in.owner_kind = 1;
  } else {
    in.owner_kind = 2;
    if (table_.settings().host_workload) {
      host = !ends.process_name.empty() ? ends.process_name : e.task.comm_view();
      in.host_name_hash = std::hash<std::string_view>()(host);
    }
  }
  const Peer* named = ends.backend ? ends.backend : ends.peer;
  if (named) {
    in.peer_kind = static_cast<uint8_t>(named->kind) + 1;
    std::tie(in.peer_a, in.peer_b) = peer_identity(*named);
  }
  if (ends.backend) {
    in.backend = 1;
    if (ends.peer && ends.peer->kind == PeerKind::kService) in.service = ends.peer->name.data();
  }
  const uint16_t server_port = e.direction == Direction::kOutbound ? e.dport : e.sport;
  const auto& ports = table_.settings().ports;
  if (std::find(ports.begin(), ports.end(), server_port) != ports.end()) in.port = server_port;
  return in;
}

EdgeSeries* EdgeCounters::find(const ConnectionEvent& e, const EdgeEnds& ends, uint64_t now_ns) {
  std::string_view host;
  const Inputs in = inputs_of(e, ends, host);
  Slot& slot = by_inputs_[hash(in) & (kSlots - 1)];
  // A host process's name is known by its hash only: make sure.
  if (slot.edge && slot.inputs == in &&
      (in.owner_kind != 2 || slot.edge->labels[kEdgeWorkload] == host)) {
    slot.edge->last_used_ns = now_ns;
    return slot.edge;
  }
  EdgeSeries* edge = build(e, ends, in.port, now_ns);
  slot.inputs = in;
  slot.edge = edge;
  return edge;
}

EdgeSeries* EdgeCounters::build(const ConnectionEvent& e, const EdgeEnds& ends, uint16_t port,
                                uint64_t now_ns) {
  EdgeLabels& l = labels_;
  for (std::string& label : l) label.clear();
  const bool outbound = e.direction == Direction::kOutbound;
  l[kEdgeDirection] = outbound ? "outbound" : "inbound";
  const Attribution* a = ends.attribution;
  if (a && a->pod) {
    l[kEdgeNamespace] = a->pod->namespace_name;
    l[kEdgeWorkload] = a->pod->workload;
    l[kEdgeWorkloadKind] = a->pod->workload_kind;
  } else if (a && !a->container_id.empty()) {
    l[kEdgeWorkloadKind] = "Unknown";  // a container whose pod the kubelet did not list (yet)
  } else {
    l[kEdgeWorkloadKind] = "Host";
    if (table_.settings().host_workload) {
      l[kEdgeWorkload] = !ends.process_name.empty() ? ends.process_name : e.task.comm_view();
    }
  }
  if (ends.backend) {
    // Where a service connection landed; the dialed service stays named.
    set_peer(l, *ends.backend);
    if (ends.peer && ends.peer->kind == PeerKind::kService) l[kEdgePeerService] = ends.peer->name;
  } else if (ends.peer) {
    set_peer(l, *ends.peer);
  } else {
    l[kEdgePeerKind] = "unknown";
  }
  if (port != 0) l[kEdgePort] = std::to_string(port);
  key_.clear();
  for (const std::string& label : l) {
    key_ += label;
    key_ += '\x1f';
  }
  return table_.find(key_, l, e.direction, now_ns);
}

size_t EdgeCounters::remove_idle(uint64_t now_ns) {
  const size_t removed = table_.remove_idle(now_ns);
  if (removed > 0) forget_inputs();  // it may point to them
  return removed;
}

}  // namespace netmon
