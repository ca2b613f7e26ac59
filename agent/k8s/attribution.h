// Attribution: cgroup id -> container -> pod, on the pipeline thread. Combines the cgroup
// resolver (paths on this host) with the kubelet's latest pod snapshot. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "k8s/cgroup_resolver.h"
#include "k8s/pods.h"  // Attribution, PodSnapshot

namespace netmon {

class KubeletWatcher;

struct AttributionStats {
  uint64_t in_pod_without_metadata = 0;  // pod cgroup whose pod the snapshot lacks
  uint64_t refresh_requests = 0;
};

class Attributor {
 public:
  // Either may be null: without a resolver nothing is attributed; without a watcher only
  // container ids (from cgroup paths) are.
  Attributor(std::optional<CgroupResolver> cgroups, KubeletWatcher* kubelet);

  const Attribution& resolve(uint64_t cgroup_id);

  const AttributionStats& stats() const { return stats_; }
  // The pod snapshot resolve() currently uses, and a number that changes with it.
  uint64_t snapshot_version() const { return snapshot_version_; }
  const PodSnapshot* snapshot() const { return snapshot_.get(); }
  const CgroupResolver* cgroups() const { return cgroups_ ? &*cgroups_ : nullptr; }

 private:
  void refresh_snapshot();

  std::optional<CgroupResolver> cgroups_;
  KubeletWatcher* kubelet_;
  std::shared_ptr<const PodSnapshot> snapshot_;
  uint64_t snapshot_version_ = 0;
  std::unordered_map<uint64_t, Attribution> cache_;  // for the current snapshot
  Attribution none_;
  AttributionStats stats_;
};

}  // namespace netmon
