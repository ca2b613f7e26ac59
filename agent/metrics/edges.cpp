#include "metrics/edges.h"

#include "metrics/exposition.h"

namespace netmon {
namespace {

using namespace exposition;

// Adds `n` to a counter only this thread writes.
void add(std::atomic<uint64_t>& counter, uint64_t n) {
  counter.store(counter.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

template <size_t N>
void observe(const std::array<double, N>& bounds, std::array<std::atomic<uint64_t>, N>& buckets,
             double value) {
  for (size_t i = 0; i < N; ++i) {
    if (value <= bounds[i]) {
      add(buckets[i], 1);
      return;
    }
  }
}

}  // namespace

void EdgeSeries::record(const ConnectionEvent& e) {
  switch (e.kind) {
    case ConnKind::kEstablish:
    case ConnKind::kAccept:
      add(connections, 1);
      return;
    case ConnKind::kFailed:
      add(failures[connect_error_slot(e.error)], 1);
      return;
    case ConnKind::kClose: {
      add(bytes_sent, e.close.bytes_sent);
      add(bytes_received, e.close.bytes_received);
      add(retransmits, e.close.retransmits);
      observe(kEdgeRttBuckets, rtt_buckets, static_cast<double>(e.close.srtt_us) / 1e6);
      add(rtt_sum_us, e.close.srtt_us);
      const uint64_t us =
          e.boot_ns > e.close.open_boot_ns ? (e.boot_ns - e.close.open_boot_ns) / 1000 : 0;
      observe(kEdgeDurationBuckets, duration_buckets, static_cast<double>(us) / 1e6);
      add(duration_sum_us, us);
      add(closed, 1);  // last: a scrape sees the buckets of every Close it counts
      return;
    }
  }
}

EdgeTable::EdgeTable(EdgeSettings settings) : settings_(std::move(settings)) {
  for (size_t d = 0; d < overflow_.size(); ++d) {
    overflow_[d] = std::make_shared<EdgeSeries>();
    overflow_[d]->overflow = true;
    EdgeLabels& l = overflow_[d]->labels;
    l[kEdgeDirection] = static_cast<Direction>(d) == Direction::kOutbound ? "outbound" : "inbound";
    l[kEdgeWorkloadKind] = "Overflow";
    l[kEdgePeerKind] = "overflow";
  }
}

EdgeSeries* EdgeTable::find(const std::string& key, const EdgeLabels& labels, Direction direction,
                            uint64_t now_ns) {
  // The only writer: reading the map unlocked is safe on this thread.
  if (auto it = edges_.find(key); it != edges_.end()) {
    it->second->last_used_ns = now_ns;
    return it->second.get();
  }
  if (edges_.size() >= settings_.max_edges) return overflow_[static_cast<size_t>(direction)].get();
  auto edge = std::make_shared<EdgeSeries>();
  edge->labels = labels;
  edge->last_used_ns = now_ns;
  EdgeSeries* found = edge.get();
  std::lock_guard lock(mutex_);
  edges_.emplace(key, std::move(edge));
  return found;
}

size_t EdgeTable::remove_idle(uint64_t now_ns) {
  const uint64_t idle_ns = static_cast<uint64_t>(settings_.idle_seconds) * 1'000'000'000u;
  size_t removed = 0;
  for (auto it = edges_.begin(); it != edges_.end();) {
    // A scrape in progress may still hold it: it renders it once more.
    if (it->second->open == 0 && now_ns >= it->second->last_used_ns + idle_ns) {
      std::lock_guard lock(mutex_);
      it = edges_.erase(it);
      ++removed;
    } else {
      ++it;
    }
  }
  removed_.fetch_add(removed, std::memory_order_relaxed);
  return removed;
}

size_t EdgeTable::size() const {
  std::lock_guard lock(mutex_);
  return edges_.size();
}

void EdgeTable::render(std::vector<MetricFamily>& out) const {
  constexpr auto relaxed = std::memory_order_relaxed;
  auto limit = family("netmon_edge_series_limit",
                      "The most edges the agent exports (metrics.max_edges); past it new edges "
                      "are counted in the overflow series.",
                      MetricType::Gauge);
  limit.metric.push_back(gauge(settings_.max_edges, {}));
  out.push_back(std::move(limit));
  if (!settings_.enabled) return;

  std::vector<std::shared_ptr<EdgeSeries>> edges;
  {
    std::lock_guard lock(mutex_);  // copy the pointers, render unlocked
    edges.reserve(edges_.size() + overflow_.size());
    for (const auto& [key, edge] : edges_) edges.push_back(edge);
  }
  const size_t held = edges.size();
  for (size_t d = 0; d < overflow_.size(); ++d) {
    // The overflow series appear once something went there.
    if (overflowed_[d].load(relaxed) > 0) edges.push_back(overflow_[d]);
  }

  auto connections =
      family("netmon_edge_connections_total", "TCP connections established or accepted, by edge.",
             MetricType::Counter);
  auto failures =
      family("netmon_edge_connection_failures_total",
             "Outbound TCP connects that failed, by edge and error.", MetricType::Counter);
  auto sent = family("netmon_edge_bytes_sent_total",
                     "Payload bytes sent by the edge's closed connections.", MetricType::Counter);
  auto received =
      family("netmon_edge_bytes_received_total",
             "Payload bytes received by the edge's closed connections.", MetricType::Counter);
  auto retransmits =
      family("netmon_edge_retransmits_total",
             "Segments retransmitted by the edge's closed connections.", MetricType::Counter);
  auto rtt = family("netmon_edge_rtt_seconds",
                    "Smoothed round-trip time of the edge's connections when they closed.",
                    MetricType::Histogram);
  auto duration =
      family("netmon_edge_connection_duration_seconds",
             "Time from open to close of the edge's closed connections.", MetricType::Histogram);
  for (const auto& e : edges) {
    Labels labels;
    labels.reserve(kEdgeLabelNames.size() + 1);
    for (size_t i = 0; i < kEdgeLabelNames.size(); ++i) {
      labels.push_back({std::string(kEdgeLabelNames[i]), e->labels[i]});
    }
    connections.metric.push_back(
        counter(static_cast<double>(e->connections.load(relaxed)), labels));
    for (size_t i = 0; i < kConnectErrorSlots; ++i) {
      const uint64_t n = e->failures[i].load(relaxed);
      if (n == 0) continue;  // no series for errors that never happened
      auto l = labels;
      l.push_back({"error", connect_error_label(i)});
      failures.metric.push_back(counter(static_cast<double>(n), std::move(l)));
    }
    sent.metric.push_back(counter(static_cast<double>(e->bytes_sent.load(relaxed)), labels));
    received.metric.push_back(
        counter(static_cast<double>(e->bytes_received.load(relaxed)), labels));
    retransmits.metric.push_back(
        counter(static_cast<double>(e->retransmits.load(relaxed)), labels));
    const uint64_t closed = e->closed.load(relaxed);
    rtt.metric.push_back(histogram(labels, kEdgeRttBuckets, e->rtt_buckets, closed,
                                   static_cast<double>(e->rtt_sum_us.load(relaxed)) / 1e6));
    duration.metric.push_back(
        histogram(labels, kEdgeDurationBuckets, e->duration_buckets, closed,
                  static_cast<double>(e->duration_sum_us.load(relaxed)) / 1e6));
  }
  for (auto* f : {&connections, &failures, &sent, &received, &retransmits, &rtt, &duration}) {
    out.push_back(std::move(*f));
  }

  auto series = family("netmon_edge_series",
                       "Edges exported now (the overflow series not counted).", MetricType::Gauge);
  series.metric.push_back(gauge(static_cast<double>(held), {}));
  out.push_back(std::move(series));
  auto overflow = family("netmon_edge_series_overflow_total",
                         "Connection events counted in the overflow series of their direction: "
                         "those of edges that were new while metrics.max_edges edges were held, "
                         "their Closes included.",
                         MetricType::Counter);
  for (size_t d = 0; d < overflow_.size(); ++d) {
    overflow.metric.push_back(counter(static_cast<double>(overflowed_[d].load(relaxed)),
                                      {{"direction", overflow_[d]->labels[kEdgeDirection]}}));
  }
  out.push_back(std::move(overflow));
  auto removed = family("netmon_edge_series_removed_total",
                        "Edges removed after metrics.edge_idle_seconds without an event and "
                        "without an open connection.",
                        MetricType::Counter);
  removed.metric.push_back(counter(static_cast<double>(removed_.load(relaxed)), {}));
  out.push_back(std::move(removed));
}

}  // namespace netmon
