// The cluster of the peer-index benchmarks (issue #19), shared by netmon-bench-peer-index and
// netmon-bench-pipeline: 10 000 services (every 10th dual-stack, every 20th NodePort, every 50th
// LoadBalancer), 100 000 endpoints (10 pods per service, one EndpointSlice each) and 5 000 nodes
// (an internal and an external IP each), their addresses, and the memory they take.
#pragma once

#include <malloc.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "k8s/cidr.h"
#include "k8s/kube_objects.h"
#include "k8s/peer_index.h"

namespace netmon::bench {

constexpr size_t kServices = 10'000;
constexpr size_t kPodsPerService = 10;  // 100 000 endpoints
constexpr size_t kNodes = 5'000;
constexpr uint64_t kNow = 1'000'000'000'000ull;

inline IpAddress v4(uint32_t value) {
  IpAddress ip;
  ip.family = IpAddress::Family::kV4;
  ip.bytes[0] = static_cast<uint8_t>(value >> 24);
  ip.bytes[1] = static_cast<uint8_t>(value >> 16);
  ip.bytes[2] = static_cast<uint8_t>(value >> 8);
  ip.bytes[3] = static_cast<uint8_t>(value);
  return ip;
}

inline IpAddress v6(uint32_t prefix, uint32_t value) {
  IpAddress ip;
  ip.family = IpAddress::Family::kV6;
  ip.bytes[0] = 0xfd;
  ip.bytes[2] = static_cast<uint8_t>(prefix >> 8);
  ip.bytes[3] = static_cast<uint8_t>(prefix);
  for (int i = 0; i < 4; ++i) ip.bytes[12 + i] = static_cast<uint8_t>(value >> (24 - 8 * i));
  return ip;
}

inline uint32_t addr(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return uint32_t{a} << 24 | uint32_t{b} << 16 | uint32_t{c} << 8 | d;
}

inline IpAddress service_ip(size_t i) { return v4(addr(10, 96, 0, 0) + static_cast<uint32_t>(i)); }
inline IpAddress pod_ip(size_t i) { return v4(addr(10, 128, 0, 0) + static_cast<uint32_t>(i)); }
inline IpAddress node_ip(size_t i) { return v4(addr(192, 168, 0, 0) + static_cast<uint32_t>(i)); }
inline IpAddress node_external_ip(size_t i) {
  return v4(addr(100, 64, 0, 0) + static_cast<uint32_t>(i));
}

inline std::string uid(const char* kind, size_t i) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%s-0000-4000-8000-%012zu", kind, i);
  return buffer;
}

struct Objects {
  std::vector<KubeService> services;
  std::vector<KubeEndpointSlice> slices;
  std::vector<KubeNode> nodes;
};

inline KubeService make_service(size_t s) {
  KubeService svc;
  svc.namespace_name = "ns-" + std::to_string(s % 200);
  svc.name = "service-" + std::to_string(s);
  svc.uid = uid("svc", s);
  svc.cluster_ips.push_back(service_ip(s));
  if (s % 10 == 0) svc.cluster_ips.push_back(v6(0x96, static_cast<uint32_t>(s)));
  svc.ports = {{"http", "TCP", 80, 0}, {"metrics", "TCP", 9090, 0}};
  if (s % 20 == 0) {
    svc.type = KubeServiceType::kNodePort;
    svc.ports[0].node_port = static_cast<uint16_t>(30000 + s / 20);
  }
  if (s % 50 == 1) {
    svc.type = KubeServiceType::kLoadBalancer;
    svc.ingress_ips.push_back(v4(addr(203, 0, 0, 0) + static_cast<uint32_t>(s)));
  }
  return svc;
}

// The EndpointSlice of service `s`: its kPodsPerService pods.
inline KubeEndpointSlice make_slice(size_t s) {
  KubeEndpointSlice slice;
  slice.namespace_name = "ns-" + std::to_string(s % 200);
  slice.name = "service-" + std::to_string(s) + "-abcde";
  slice.uid = uid("eps", s);
  slice.service_name = "service-" + std::to_string(s);
  slice.ports = {{"http", "TCP", 8080}, {"metrics", "TCP", 9090}};
  slice.endpoints.reserve(kPodsPerService);  // as the parser does
  for (size_t p = 0; p < kPodsPerService; ++p) {
    const size_t pod = s * kPodsPerService + p;
    KubeEndpoint e;
    e.addresses.push_back(pod_ip(pod));
    e.target = KubeObjectRef{"Pod", slice.namespace_name,
                             "service-" + std::to_string(s) + "-7d4b9c8f5-" + std::to_string(p),
                             uid("pod", pod)};
    e.node_name = "node-" + std::to_string(pod % kNodes);
    slice.endpoints.push_back(std::move(e));
  }
  return slice;
}

inline KubeNode make_node(size_t n) {
  KubeNode node;
  node.name = "node-" + std::to_string(n);
  node.uid = uid("node", n);
  node.addresses = {{KubeNodeAddressType::kInternalIP, "", node_ip(n)},
                    {KubeNodeAddressType::kExternalIP, "", node_external_ip(n)},
                    {KubeNodeAddressType::kHostname, node.name, std::nullopt}};
  return node;
}

inline std::vector<KubeService> make_services() {
  std::vector<KubeService> v;
  v.reserve(kServices);
  for (size_t s = 0; s < kServices; ++s) v.push_back(make_service(s));
  return v;
}

inline std::vector<KubeNode> make_nodes() {
  std::vector<KubeNode> v;
  v.reserve(kNodes);
  for (size_t n = 0; n < kNodes; ++n) v.push_back(make_node(n));
  return v;
}

inline Objects make_objects() {
  Objects o;
  o.services = make_services();
  o.slices.reserve(kServices);
  for (size_t s = 0; s < kServices; ++s) o.slices.push_back(make_slice(s));
  o.nodes = make_nodes();
  return o;
}

// The EndpointSlices listed the way the agent's watcher lists them: pages of kListPage objects
// (ListWatchOptions::page_size), each handed to the state as it arrives.
inline constexpr size_t kListPage = 500;
inline void list_slices_in_pages(ClusterState& state, uint64_t now) {
  for (size_t first = 0; first < kServices; first += kListPage) {
    std::vector<KubeEndpointSlice> page;
    page.reserve(kListPage);
    for (size_t s = first; s < first + kListPage && s < kServices; ++s) {
      page.push_back(make_slice(s));
    }
    state.add_list_page(std::move(page));
  }
  state.finish_list<KubeEndpointSlice>(now);
}

inline PeerIndexOptions options() {
  PeerIndexOptions o;
  o.host_addresses = {node_ip(0)};
  auto classes = CidrClasses::parse({{"metadata", {"169.254.169.254/32"}},
                                     {"private", {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}},
                                     {"cgnat", {"100.64.0.0/10"}}});
  if (classes) o.external_networks = std::move(*classes);
  return o;
}

inline long rss_kib() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  long pages = 0;
  long resident = 0;
  if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
  std::fclose(f);
  return resident * 4;
}

inline double heap_mib() {
  const struct mallinfo2 m = mallinfo2();  // in use: small chunks + mmapped large blocks
  return static_cast<double>(m.uordblks + m.hblkhd) / (1024.0 * 1024.0);
}

// The cluster, built once for all benchmarks, as the agent's watcher builds it (services and
// nodes as whole lists, EndpointSlices in pages); the memory figures are taken while building
// it: heap bytes in use (what the state and the index hold) and RSS (what the process pays,
// including what freeing the parsed objects the state compacts leaves behind in malloc's
// arenas).
struct Cluster {
  std::unique_ptr<ClusterState> state;
  std::shared_ptr<const PeerIndex> index;
  Objects copy;                 // for re-lists (kept only when asked for)
  double objects_heap_mib = 0;  // the parsed objects of every resource at once (with the copy)
  double state_heap_mib = 0;
  double index_heap_mib = 0;
  double state_rss_mib = 0;
  double index_rss_mib = 0;

  explicit Cluster(bool keep_copy) {
    malloc_trim(0);
    const long rss_before = rss_kib();
    const double heap_before = heap_mib();
    state = std::make_unique<ClusterState>(options());
    state->replace_services(make_services(), kNow);
    list_slices_in_pages(*state, kNow);
    state->replace_nodes(make_nodes(), kNow);
    malloc_trim(0);
    const long rss_state = rss_kib();
    const double heap_state = heap_mib();
    index = state->build(kNow);
    malloc_trim(0);
    state_heap_mib = heap_state - heap_before;
    index_heap_mib = heap_mib() - heap_state;
    state_rss_mib = static_cast<double>(rss_state - rss_before) / 1024.0;
    index_rss_mib = static_cast<double>(rss_kib() - rss_state) / 1024.0;
    if (keep_copy) {
      const double heap_copy = heap_mib();
      copy = make_objects();
      objects_heap_mib = heap_mib() - heap_copy;
    }
  }
};

}  // namespace netmon::bench
