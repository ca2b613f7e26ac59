// The service map's metrics (issue #22): connection counters per edge, an edge being who talks
// to whom at workload level: this end's namespace, workload and kind, the direction, the peer's
// kind and name (workload, service, node or network), and the server port when it is a
// well-known one. Never a pod IP, a client port or an external address, so that the series stay
// bounded on any cluster; a hard cap (EdgeSettings::max_edges) sends the events of edges past it
// to one overflow series per direction, and an edge idle for EdgeSettings::idle_seconds with no
// connection open on it is removed.
//
// Threads: EdgeTable has one writer, the pipeline thread, which finds and adds edges and updates
// their counters with relaxed atomic loads and stores; it reads its own map without the lock and
// takes the lock only to change it. The HTTP thread renders under the lock. EdgeCounters (below) is
// the pipeline's side: the labels of an event's edge, and the edge of each open connection by
// cookie, so that its Close costs one hash lookup and a few atomic adds.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "events/event.h"
#include "metrics/connect_errors.h"

namespace prometheus {
struct MetricFamily;
}

namespace netmon {

// The edge labels, in the order of EdgeLabels.
inline constexpr std::array<std::string_view, 11> kEdgeLabelNames = {
    "direction",     "namespace",    "workload",  "workload_kind", "peer_kind", "peer_namespace",
    "peer_workload", "peer_service", "peer_node", "peer_network",  "port"};
using EdgeLabels = std::array<std::string, kEdgeLabelNames.size()>;
enum EdgeLabel : size_t {
  kEdgeDirection,
  kEdgeNamespace,
  kEdgeWorkload,
  kEdgeWorkloadKind,
  kEdgePeerKind,
  kEdgePeerNamespace,
  kEdgePeerWorkload,
  kEdgePeerService,
  kEdgePeerNode,
  kEdgePeerNetwork,
  kEdgePort,
};

// The server ports written in the port label by default: the protocols a service map is read
// by (SSH, DNS, HTTP(S), etcd, MySQL, PostgreSQL, AMQP, Redis, the API server, HTTP alternates,
// Prometheus, Kafka, Elasticsearch, the kubelet, memcached, MongoDB).
inline constexpr std::array<uint16_t, 18> kDefaultEdgePorts = {
    22,   53,   80,   443,  2379, 3306, 5432,  5672,  6379,
    6443, 8080, 8443, 9090, 9092, 9200, 10250, 11211, 27017};

struct EdgeSettings {
  bool enabled = true;                                    // metrics.edges
  uint32_t max_edges = 1000;                              // metrics.max_edges
  uint32_t idle_seconds = 900;                            // metrics.edge_idle_seconds
  std::vector<uint16_t> ports{kDefaultEdgePorts.begin(),  // metrics.edge_ports
                              kDefaultEdgePorts.end()};
  bool host_workload = true;  // metrics.edge_host_workload: a host process's workload is its name
};

// Smoothed RTT buckets, seconds: from loopback and a node's own pods (tens of microseconds)
// through a zone (sub-millisecond to a few ms) to other regions and the internet (tens to
// hundreds of ms).
inline constexpr std::array<double, 10> kEdgeRttBuckets = {0.0001, 0.0005, 0.001, 0.005, 0.01,
                                                           0.025,  0.05,   0.1,   0.25,  1};
// Connection duration buckets, seconds: a request per connection (under 10 ms) to pools and
// streams held for hours.
inline constexpr std::array<double, 8> kEdgeDurationBuckets = {0.01, 0.1, 1,    10,
                                                               60,   300, 1800, 7200};

// The counters of one edge.
struct EdgeSeries {
  EdgeLabels labels;
  std::atomic<uint64_t> connections{0};
  std::array<std::atomic<uint64_t>, kConnectErrorSlots> failures{};  // connect_error_slot()
  std::atomic<uint64_t> bytes_sent{0};
  std::atomic<uint64_t> bytes_received{0};
  std::atomic<uint64_t> retransmits{0};
  std::array<std::atomic<uint64_t>, kEdgeRttBuckets.size()> rtt_buckets{};
  std::atomic<uint64_t> rtt_sum_us{0};
  std::array<std::atomic<uint64_t>, kEdgeDurationBuckets.size()> duration_buckets{};
  std::atomic<uint64_t> duration_sum_us{0};
  std::atomic<uint64_t> closed{0};  // the histograms' count
  // Pipeline thread only: CLOCK_BOOTTIME of the last event, and the connections open on it
  // (EdgeCounters keeps their edge until their Close).
  uint64_t last_used_ns = 0;
  uint32_t open = 0;
  bool overflow = false;  // one of the overflow series

  // Pipeline thread, lock-free: counts `e`. The pipeline thread is the only writer, so a
  // relaxed load and store is enough (no locked read-modify-write); a scrape reads each counter
  // whole.
  void record(const ConnectionEvent& e);
};

class EdgeTable {
 public:
  explicit EdgeTable(EdgeSettings settings);

  const EdgeSettings& settings() const { return settings_; }

  // Pipeline thread. The series of the edge `labels` (its key: the labels joined by '\x1f'),
  // added when new and there is room, else the overflow series of the direction. `now_ns`:
  // CLOCK_BOOTTIME, the edge's last use.
  // The series stays until remove_idle() removes it (never one with open connections).
  EdgeSeries* find(const std::string& key, const EdgeLabels& labels, Direction direction,
                   uint64_t now_ns);

  // Pipeline thread: counts an event counted in the overflow series of `direction`.
  void overflowed(Direction direction) {
    overflowed_[static_cast<size_t>(direction)].fetch_add(1, std::memory_order_relaxed);
  }

  // Pipeline thread: removes the edges unused since `now_ns` - idle_seconds with no connection
  // open on them. Returns how many went.
  size_t remove_idle(uint64_t now_ns);

  // Any thread, under the lock: the edge families.
  void render(std::vector<prometheus::MetricFamily>& out) const;

  size_t size() const;

 private:
  const EdgeSettings settings_;
  mutable std::mutex mutex_;  // the pipeline thread holds it only to change edges_
  std::unordered_map<std::string, std::shared_ptr<EdgeSeries>> edges_;
  std::array<std::shared_ptr<EdgeSeries>, 2> overflow_;  // by Direction
  std::array<std::atomic<uint64_t>, 2> overflowed_{};  // events counted in overflow_, by Direction
  std::atomic<uint64_t> removed_{0};
};

}  // namespace netmon
