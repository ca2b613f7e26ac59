#include "metrics/connection_counters.h"

namespace netmon {

void ConnectionCounters::use_snapshot(uint64_t version, const PodSnapshot* snapshot) {
  if (version == series_snapshot_version_) return;
  // A new pod snapshot: pods whose grace period ended are gone from it; drop their series.
  series_snapshot_version_ = version;
  series_cache_.clear();
  if (snapshot) {
    metrics_.remove_pods(
        [snapshot](const std::string& uid) { return snapshot->find_pod(uid) != nullptr; });
  }
}

void ConnectionCounters::count(const ConnectionEvent& e, const Attribution* attribution) {
  const uint64_t cgroup = e.owner_known ? e.task.cgroup_id : 0;
  const uint64_t key = (cgroup << 1) | (e.direction == Direction::kInbound ? 1 : 0);
  auto& series = series_cache_[key];
  // A pod still unknown to the snapshot is not cached: its next event looks again.
  if (!series || (attribution && !attribution->pod && !attribution->container_id.empty())) {
    series = metrics_.series(e.direction, attribution);
  }
  Metrics::record(*series, e);
}

}  // namespace netmon
