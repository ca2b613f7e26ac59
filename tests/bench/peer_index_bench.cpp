// Microbenchmark of the peer index (issue #19) at the scale: 10 000 services (every 10th
// dual-stack, every 20th NodePort, every 50th LoadBalancer), 100 000 endpoints (10 pods per
// service, one EndpointSlice each) and 5 000 nodes (an internal and an external IP each).
//   build/tests/bench/netmon-bench-peer-index
// Reports lookup ns/op per kind of answer (pod, service cluster IP, node, node port, external
// miss, host; a lookup that allocates fails the benchmark), the time of a full re-list (replace
// every resource + build), of a build alone, and memory: the index's own byte count and the RSS
// the state and the index add. The cluster is tests/bench/peer_cluster.h's.

#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "count_new.h"
#include "k8s/peer_index.h"
#include "peer_cluster.h"

namespace netmon {
namespace {

using namespace bench;

Cluster& cluster() {
  static Cluster c(true);
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
  const uint64_t allocations_before = new_calls();
  for (auto _ : state) {
    const auto& [address, port] = queries[i++ & (queries.size() - 1)];
    Peer p = c.index->lookup(address, port, kNow + 1);
    wrong += p.kind != expected[kind];
    benchmark::DoNotOptimize(p);
  }
  const uint64_t allocations = new_calls() - allocations_before;
  state.SetLabel(kKindNames[kind]);
  state.counters["allocations"] = static_cast<double>(allocations);
  if (wrong != 0) state.SkipWithError("a lookup gave the wrong kind of peer");
  if (allocations != 0) state.SkipWithError("lookups allocated");
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
