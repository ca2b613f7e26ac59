// Building prometheus-cpp's exposition types from the agent's own counters: the families and
// samples metrics.cpp and edges.cpp render. Internal to agent/metrics (the only module that
// includes prometheus-cpp).
#pragma once

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "metrics/connect_errors.h"

namespace netmon::exposition {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

inline MetricFamily family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

inline ClientMetric counter(double value, Labels labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = value;
  return m;
}

inline ClientMetric gauge(double value, Labels labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  return m;
}

// A histogram sample from per-bucket (not cumulative) counts. `count` is read before the
// buckets by the caller: a sample counted meanwhile may make the buckets' sum larger than it,
// never smaller, so the +Inf bucket is the larger of the two.
template <size_t N>
ClientMetric histogram(Labels labels, const std::array<double, N>& bounds,
                       const std::array<std::atomic<uint64_t>, N>& buckets, uint64_t count,
                       double sum) {
  ClientMetric m;
  m.label = std::move(labels);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < N; ++i) {
    cumulative += buckets[i].load(std::memory_order_relaxed);
    ClientMetric::Bucket b;
    b.upper_bound = bounds[i];
    b.cumulative_count = cumulative;
    m.histogram.bucket.push_back(b);
  }
  ClientMetric::Bucket inf;
  inf.upper_bound = std::numeric_limits<double>::infinity();
  inf.cumulative_count = count < cumulative ? cumulative : count;
  m.histogram.bucket.push_back(inf);
  m.histogram.sample_count = inf.cumulative_count;
  m.histogram.sample_sum = sum;
  return m;
}

}  // namespace netmon::exposition
