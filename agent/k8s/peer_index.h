// Who is on the other end of a connection (issue #19): an immutable index from a remote address
// (and port) to a pod, service, node, this host, or an external network, built from the
// Kubernetes objects a ClusterState holds.
//
// Threads: the ClusterState is single-threaded; its owner (k8s/peer_watch.h's PeerWatcher)
// serialises the lists, watch events and kubelet pods its threads apply, and the builds, with one
// mutex, and publishes each new snapshot through PeerSnapshots (k8s/peer_snapshots.h), a
// mutex-guarded swap of a std::shared_ptr<const PeerIndex> outside the event path. PeerIndex is
// immutable: lookup() is const, never locks, never allocates, and may run on any number of
// threads at once.
//
// Times are CLOCK_BOOTTIME nanoseconds, the events' clock (ConnectionEvent::boot_ns; a Close
// event's open time is close.open_boot_ns), and must be > 0.
//
// How an address is named, in this order (the first rule that applies wins):
//  1. host: a loopback address (127.0.0.0/8, ::1) or one of this node's own addresses (given in
//     the options; the kubelet's view of this node), whatever the port.
//  2. service, ClusterIP: a service's cluster IP (any port; port_name is the name of the
//     service's TCP port equal to the connection's port, empty when none is).
//  3. service, ExternalIP / LoadBalancer: one of a service's spec.externalIPs / load-balancer
//     ingress IPs when the port is one of the service's TCP ports (these are often node
//     addresses too; the port tells the service from the node).
//  4. service, NodePort: a node's address (InternalIP/ExternalIP) and a port that is a TCP
//     nodePort of a NodePort or LoadBalancer service (kube-proxy DNATs those on every node).
//  5. pod, host network: a node's address and a port that exactly one hostNetwork pod listens on:
//     a port it declares (spec.containers[].ports, from the pods watch or this node's kubelet) or
//     a TCP port of an EndpointSlice whose endpoint for that pod has the node's address. Two pods
//     claiming the same node address and port name nobody: rule 7 applies.
//  6. pod: a pod IP (status.podIPs of a watched pod, or an EndpointSlice endpoint's address
//     whose targetRef is a Pod, ready or not, terminating or not; headless services' pods are
//     named this way). When several pods claim one IP, see "IP reuse" below.
//  7. node: a node's InternalIP/ExternalIP.
//  8. service, ExternalIP / LoadBalancer: as 3, but no service port matched (port_name empty).
//  9. external: anything else; network is the first matching class of the configured
//     CidrClasses, or "internet".
// ExternalName services have no address and never name a peer. Only TCP service ports count
// (netmon observes TCP): a UDP "dns" port and a TCP "dns-tcp" port 53 give "dns-tcp".
//
// IP reuse. Each (pod IP, pod uid) claim an object shows is remembered with the time it
// appeared (the apply that first showed it in that object) and, once the object no longer shows
// it (pod deleted or terminal, endpoint removed, slice deleted), the time it went; a gone claim
// stays in the index for the grace period only. For a connection opened at time t, the pod claims
// alive at t (appeared <= t < went) are candidates, a non-terminating one before a terminating one,
// the most recent first; when none was alive at t (the connection is older than what we know, or
// the watch lagged) the newest present claim names it; a gone claim never names a connection opened
// after it went. Services and nodes have no grace: a deleted one stops naming at the next build().
//
// An EndpointSlice endpoint names its pod by its first address only (the API: an endpoint's
// addresses are fungible and consumers may use the first; the slice controller writes one).
// Pods named only through an EndpointSlice carry namespace, name and uid; workload,
// workload_kind and labels need the Pod object (the pods watch, or this node's kubelet list via
// replace_local_pods()).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "events/event.h"
#include "k8s/cidr.h"
#include "k8s/kube_objects.h"

namespace netmon {

enum class PeerKind : uint8_t { kExternal, kPod, kService, kNode, kHost };
// "external", "pod", "service", "node", "host" (the events' peer.kind, the metrics' result).
// Inline: the JSON writer uses it without linking the k8s module.
constexpr std::string_view to_string(PeerKind kind) {
  switch (kind) {
    case PeerKind::kPod:
      return "pod";
    case PeerKind::kService:
      return "service";
    case PeerKind::kNode:
      return "node";
    case PeerKind::kHost:
      return "host";
    case PeerKind::kExternal:
      break;
  }
  return "external";
}
inline constexpr size_t kPeerKinds = 5;
// Lookups by the kind they answered (netmon_peer_lookups_total{result}), indexed by PeerKind.
using PeerLookupCounts = std::array<uint64_t, kPeerKinds>;

struct PeerLabel {
  std::string_view key;
  std::string_view value;
};

// The answer of a lookup. The views point into the PeerIndex (or into static strings) and stay
// valid as long as the caller holds the snapshot's shared_ptr. Fields not listed for a kind are
// empty.
struct Peer {
  PeerKind kind = PeerKind::kExternal;
  std::string_view namespace_name;    // pod, service
  std::string_view name;              // pod, service, node
  std::string_view uid;               // pod, service, node
  std::string_view workload;          // pod (empty when only an EndpointSlice names it)
  std::string_view workload_kind;     // pod
  std::span<const PeerLabel> labels;  // pod, sorted by key (empty when unknown)
  std::string_view port_name;         // service: the matched port's name ("" when none matched)
  std::string_view service_type;      // service: "ClusterIP", "NodePort", "LoadBalancer",
                                      // "ExternalIP"
  std::string_view network;           // external: the CIDR class, or "internet"
};

struct PeerIndexOptions {
  uint64_t pod_grace_ns = 60'000'000'000;  // how long a gone pod claim still names connections
  std::vector<IpAddress> host_addresses;   // this node's own addresses
  CidrClasses external_networks;
};

class PeerIndex {
 public:
  // `remote`: the connection's remote address (daddr; an IPv4-mapped IPv6 address is looked up
  // as IPv4); `port`: its remote port (dport); `opened_ns`: when it opened (see IP reuse).
  Peer lookup(const IpAddress& remote, uint16_t port, uint64_t opened_ns) const noexcept;

  struct Stats {
    size_t addresses = 0;  // distinct addresses indexed
    size_t claims = 0;     // (address, owner) pairs
    size_t pods = 0;
    size_t services = 0;
    size_t nodes = 0;
    size_t gone_pod_claims = 0;  // kept for their grace period
    size_t memory_bytes = 0;     // heap bytes the snapshot holds (capacities, not RSS)
  };
  const Stats& stats() const { return stats_; }

 private:
  friend class ClusterState;
  friend class PeerIndexBuilder;

  struct Str {  // a string in arena_
    uint32_t offset = 0;
    uint32_t size = 0;
  };
  struct PodRecord {
    Str namespace_name, name, uid, workload, workload_kind;
    uint32_t labels_begin = 0;
    uint32_t labels_count = 0;
  };
  struct ServicePortRecord {
    Str name;
    uint16_t port = 0;
  };
  struct ServiceRecord {
    Str namespace_name, name, uid;
    uint32_t ports_begin = 0;
    uint32_t ports_count = 0;
    KubeServiceType type = KubeServiceType::kClusterIP;
  };
  struct NodeRecord {
    Str name, uid;
  };
  enum class ClaimKind : uint8_t {
    kClusterIP,   // target: service
    kExternalIP,  // target: service
    kIngressIP,   // target: service
    kHostPort,    // target: pod; port
    kPod,         // target: pod; since/gone/terminating
    kNode,        // target: node
  };
  struct Claim {
    uint64_t since_ns = 0;
    uint64_t gone_ns = UINT64_MAX;  // UINT64_MAX: present
    uint32_t target = 0;
    uint16_t port = 0;
    ClaimKind kind = ClaimKind::kPod;
    bool terminating = false;
  };
  struct Slot {  // open addressing; an empty slot has claims_count 0
    std::array<uint8_t, 16> bytes{};
    uint32_t claims_begin = 0;
    uint16_t claims_count = 0;
    IpAddress::Family family = IpAddress::Family::kV4;
  };
  struct NodePortRecord {
    uint16_t node_port = 0;
    uint32_t service = 0;
    uint32_t port = 0;  // index into service_ports_
  };

  std::string_view str(Str s) const { return std::string_view(arena_).substr(s.offset, s.size); }
  const Slot* find(const IpAddress& canonical) const noexcept;
  Peer pod_peer(uint32_t pod) const noexcept;
  Peer service_peer(uint32_t service, uint16_t port, std::string_view type) const noexcept;
  bool service_has_port(uint32_t service, uint16_t port) const noexcept;

  std::string arena_;
  std::vector<PeerLabel> labels_;  // views into arena_
  std::vector<PodRecord> pods_;
  std::vector<ServiceRecord> services_;
  std::vector<ServicePortRecord> service_ports_;
  std::vector<NodeRecord> nodes_;
  std::vector<Claim> claims_;               // grouped by address; each slot's span
  std::vector<Slot> slots_;                 // open addressing, at most two thirds full
  std::vector<NodePortRecord> node_ports_;  // sorted by node_port
  std::vector<IpAddress> host_addresses_;   // canonical
  CidrClasses external_networks_;
  Stats stats_;
};

// What the watcher knows: the current objects of each resource, keyed by uid, and the life of
// each pod IP claim (for IP reuse). Single-threaded; not used by the event path.
enum class WatchOp : uint8_t { kAdded, kModified, kDeleted };

class ClusterState {
 public:
  explicit ClusterState(PeerIndexOptions options);
  ~ClusterState();
  ClusterState(const ClusterState&) = delete;
  ClusterState& operator=(const ClusterState&) = delete;

  // A (re-)list: the objects replace all of that resource's. `now_ns` dates what appeared and
  // what went.
  void replace_services(std::vector<KubeService> items, uint64_t now_ns);
  void replace_endpoint_slices(std::vector<KubeEndpointSlice> items, uint64_t now_ns);
  void replace_nodes(std::vector<KubeNode> items, uint64_t now_ns);
  void replace_pods(std::vector<KubePod> items, uint64_t now_ns);  // the pods watch
  // This node's pods as its kubelet lists them (their IPs and hostNetwork ports); kept apart
  // from the pods watch, which replace_pods() replaces.
  void replace_local_pods(std::vector<KubePod> items, uint64_t now_ns);

  // A list in pages (ListWatchHandler::list_in_pages): each page's objects are compacted and
  // kept aside, so that a big list never exists whole as objects, until finish_list() replaces
  // all of the resource's objects with them (as replace_*() does) or abandon_list() drops them
  // (the list failed part-way; the current objects stay). T: KubeService, KubeEndpointSlice,
  // KubeNode, or KubePod (the pods watch).
  template <typename T>
  void add_list_page(std::vector<T> items);
  template <typename T>
  void finish_list(uint64_t now_ns);
  template <typename T>
  void abandon_list();

  // One watch event. kModified of an unknown uid adds it; kDeleted of an unknown uid is ignored.
  void apply(WatchOp op, KubeService object, uint64_t now_ns);
  void apply(WatchOp op, KubeEndpointSlice object, uint64_t now_ns);
  void apply(WatchOp op, KubeNode object, uint64_t now_ns);
  void apply(WatchOp op, KubePod object, uint64_t now_ns);

  // This node's own addresses (rule 1: e.g. once its Node object or the kubelet names them) and
  // the external network classes (rule 9), from the next build() on.
  void set_host_addresses(std::vector<IpAddress> addresses);
  void set_external_networks(CidrClasses classes);

  // A new snapshot of everything known now; gone pod claims older than the grace period are
  // dropped (from the state too). O(objects); allocates.
  std::shared_ptr<const PeerIndex> build(uint64_t now_ns);

  size_t service_count() const;
  size_t endpoint_slice_count() const;
  size_t node_count() const;
  size_t pod_count() const;  // watched + local

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace netmon
