// Microbenchmark of the peer index (issue #19) at the scale: 10 000 services (every 10th
// dual-stack, every 20th NodePort, every 50th LoadBalancer), 100 000 endpoints (10 pods per
// service, one EndpointSlice each) and 5 000 nodes (an internal and an external IP each).
//   build/tests/bench/netmon-bench-peer-index
// Reports lookup ns/op per kind of answer (pod, service cluster IP, node, node port, external
// miss, host), the time of a full re-list (replace every resource + build), of a build alone,
// and memory: the index's own byte count and the RSS the state and the index add.

#include <benchmark/benchmark.h>
#include <malloc.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "k8s/cidr.h"
#include "k8s/kube_objects.h"
#include "k8s/peer_index.h"

namespace netmon {
namespace {

constexpr size_t kServices = 10'000;
constexpr size_t kPodsPerService = 10;  // 100 000 endpoints
constexpr size_t kNodes = 5'000;
constexpr uint64_t kNow = 1'000'000'000'000ull;

IpAddress v4(uint32_t value) {
  IpAddress ip;
  ip.family = IpAddress::Family::kV4;
  ip.bytes[0] = static_cast<uint8_t>(value >> 24);
  ip.bytes[1] = static_cast<uint8_t>(value >> 16);
  ip.bytes[2] = static_cast<uint8_t>(value >> 8);
  ip.bytes[3] = static_cast<uint8_t>(value);
  return ip;
}

IpAddress v6(uint32_t prefix, uint32_t value) {
  IpAddress ip;
  ip.family = IpAddress::Family::kV6;
  ip.bytes[0] = 0xfd;
  ip.bytes[2] = static_cast<uint8_t>(prefix >> 8);
  ip.bytes[3] = static_cast<uint8_t>(prefix);
  for (int i = 0; i < 4; ++i) ip.bytes[12 + i] = static_cast<uint8_t>(value >> (24 - 8 * i));
  return ip;
}

uint32_t addr(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return uint32_t{a} << 24 | uint32_t{b} << 16 | uint32_t{c} << 8 | d;
}

IpAddress service_ip(size_t i) { return v4(addr(10, 96, 0, 0) + static_cast<uint32_t>(i)); }
IpAddress pod_ip(size_t i) { return v4(addr(10, 128, 0, 0) + static_cast<uint32_t>(i)); }
IpAddress node_ip(size_t i) { return v4(addr(192, 168, 0, 0) + static_cast<uint32_t>(i)); }
IpAddress node_external_ip(size_t i) { return v4(addr(100, 64, 0, 0) + static_cast<uint32_t>(i)); }

std::string uid(const char* kind, size_t i) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%s-0000-4000-8000-%012zu", kind, i);
  return buffer;
}

struct Objects {
  std::vector<KubeService> services;
  std::vector<KubeEndpointSlice> slices;
  std::vector<KubeNode> nodes;
};

Objects make_objects() {
  Objects o;
  o.services.reserve(kServices);
  o.slices.reserve(kServices);
  for (size_t s = 0; s < kServices; ++s) {
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
    o.services.push_back(std::move(svc));

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
    o.slices.push_back(std::move(slice));
  }
  o.nodes.reserve(kNodes);
  for (size_t n = 0; n < kNodes; ++n) {
    KubeNode node;
    node.name = "node-" + std::to_string(n);
    node.uid = uid("node", n);
    node.addresses = {{KubeNodeAddressType::kInternalIP, "", node_ip(n)},
                      {KubeNodeAddressType::kExternalIP, "", node_external_ip(n)},
                      {KubeNodeAddressType::kHostname, node.name, std::nullopt}};
    o.nodes.push_back(std::move(node));
  }
  return o;
}

PeerIndexOptions options() {
  PeerIndexOptions o;
  o.host_addresses = {node_ip(0)};
  auto classes = CidrClasses::parse({{"metadata", {"169.254.169.254/32"}},
                                     {"private", {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}},
                                     {"cgnat", {"100.64.0.0/10"}}});
  if (classes) o.external_networks = std::move(*classes);
  return o;
}

long rss_kib() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  long pages = 0;
  long resident = 0;
  if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
  std::fclose(f);
  return resident * 4;
}

double heap_mib() {
  const struct mallinfo2 m = mallinfo2();  // in use: small chunks + mmapped large blocks
  return static_cast<double>(m.uordblks + m.hblkhd) / (1024.0 * 1024.0);
}

// The cluster, built once for all benchmarks; the memory figures are taken while building it:
// heap bytes in use (what the state and the index hold) and RSS (what the process pays,
// including what freeing the objects the state compacts leaves behind in malloc's arenas).
struct Cluster {
  std::unique_ptr<ClusterState> state;
  std::shared_ptr<const PeerIndex> index;
  Objects copy;  // for re-lists
  double objects_heap_mib = 0;
  double state_heap_mib = 0;
  double index_heap_mib = 0;
  double state_rss_mib = 0;
  double index_rss_mib = 0;

  Cluster() {
    malloc_trim(0);
    const long rss_before = rss_kib();
    const double heap_before = heap_mib();
    {
      Objects objects = make_objects();
      objects_heap_mib = heap_mib() - heap_before;
      state = std::make_unique<ClusterState>(options());
      state->replace_services(std::move(objects.services), kNow);
      state->replace_endpoint_slices(std::move(objects.slices), kNow);
      state->replace_nodes(std::move(objects.nodes), kNow);
    }
    malloc_trim(0);
    const long rss_state = rss_kib();
    const double heap_state = heap_mib();
    index = state->build(kNow);
    malloc_trim(0);
    state_heap_mib = heap_state - heap_before;
    index_heap_mib = heap_mib() - heap_state;
    state_rss_mib = static_cast<double>(rss_state - rss_before) / 1024.0;
    index_rss_mib = static_cast<double>(rss_kib() - rss_state) / 1024.0;
    copy = make_objects();
  }
};

Cluster& cluster() {
  static Cluster c;
  return c;
}

enum Kind : int { kPod, kService, kNode, kNodePort, kExternal, kHost };
const char* const kKindNames[] = {"pod", "service", "node", "node_port", "external", "host"};

void BM_Lookup(benchmark::State& state) {
  Cluster& c = cluster();
  const int kind = static_cast<int>(state.range(0));
  std::mt19937 random(42);
  std::vector<std::pair<IpAddress, uint16_t>> queries(4096);
  for (auto& [address, port] : queries) {
    const uint32_t r = random();
    switch (kind) {
      case kPod:
        address = pod_ip(r % (kServices * kPodsPerService));
        port = 8080;
        break;
      case kService:
        address = service_ip(r % kServices);
        port = 80;
        break;
      case kNode:
        address = node_ip(1 + r % (kNodes - 1));
        port = 22;
        break;
      case kNodePort:
        address = node_external_ip(r % kNodes);
        port = static_cast<uint16_t>(30000 + r % (kServices / 20));
        break;
      case kExternal:  // misses: half private, half internet
        address = r % 2 ? v4(addr(172, 16, 0, 0) + r % 65536) : v4(addr(8, 8, 0, 0) + r % 65536);
        port = 443;
        break;
      default:
        address = r % 2 ? v4(addr(127, 0, 0, 1)) : node_ip(0);
        port = 80;
        break;
    }
  }
  const PeerKind expected[] = {PeerKind::kPod,     PeerKind::kService,  PeerKind::kNode,
                               PeerKind::kService, PeerKind::kExternal, PeerKind::kHost};
  size_t i = 0;
  size_t wrong = 0;
  for (auto _ : state) {
    const auto& [address, port] = queries[i++ & (queries.size() - 1)];
    Peer p = c.index->lookup(address, port, kNow + 1);
    wrong += p.kind != expected[kind];
    benchmark::DoNotOptimize(p);
  }
  state.SetLabel(kKindNames[kind]);
  if (wrong != 0) state.SkipWithError("a lookup gave the wrong kind of peer");
}
BENCHMARK(BM_Lookup)->DenseRange(kPod, kHost);

// A full re-list: every resource replaced (the objects already parsed), then a new snapshot.
void BM_Relist(benchmark::State& state) {
  Cluster& c = cluster();
  for (auto _ : state) {
    state.PauseTiming();
    Objects objects = c.copy;
    state.ResumeTiming();
    c.state->replace_services(std::move(objects.services), kNow);
    c.state->replace_endpoint_slices(std::move(objects.slices), kNow);
    c.state->replace_nodes(std::move(objects.nodes), kNow);
    auto index = c.state->build(kNow);
    benchmark::DoNotOptimize(index);
    state.PauseTiming();
    index.reset();
    objects = Objects{};
    state.ResumeTiming();
  }
}
BENCHMARK(BM_Relist)->Unit(benchmark::kMillisecond)->Iterations(5);

void BM_Build(benchmark::State& state) {
  Cluster& c = cluster();
  for (auto _ : state) {
    auto index = c.state->build(kNow);
    benchmark::DoNotOptimize(index);
    state.PauseTiming();
    index.reset();
    state.ResumeTiming();
  }
  const PeerIndex::Stats& s = c.index->stats();
  state.counters["addresses"] = static_cast<double>(s.addresses);
  state.counters["claims"] = static_cast<double>(s.claims);
  state.counters["pods"] = static_cast<double>(s.pods);
  state.counters["index_bytes_MiB"] = static_cast<double>(s.memory_bytes) / (1024.0 * 1024.0);
  state.counters["heap_objects_MiB"] = c.objects_heap_mib;
  state.counters["heap_state_MiB"] = c.state_heap_mib;
  state.counters["heap_index_MiB"] = c.index_heap_mib;
  state.counters["rss_state_MiB"] = c.state_rss_mib;
  state.counters["rss_index_MiB"] = c.index_rss_mib;
}
BENCHMARK(BM_Build)->Unit(benchmark::kMillisecond)->Iterations(5);

}  // namespace
}  // namespace netmon

BENCHMARK_MAIN();
