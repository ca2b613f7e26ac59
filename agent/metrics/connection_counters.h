// The pipeline's side of the connection metrics: counts each connection event in its series,
// found once per owner cgroup and direction and cached for one pod snapshot; a new pod snapshot
// empties the cache and removes the series of the pods gone from it (deleted pods whose grace
// period ended). Runs on the pipeline thread; not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>

#include "events/event.h"
#include "k8s/attribution.h"
#include "k8s/pods.h"
#include "metrics/metrics.h"

namespace netmon {

class ConnectionCounters {
 public:
  // `metrics` must outlive this object.
  explicit ConnectionCounters(Metrics& metrics) : metrics_(metrics) {}

  // The pod snapshot that attributions now come from, and the number that changes with it (0:
  // none yet). When `version` differs from the last one seen, the cached series are forgotten and
  // the series of pods missing from `snapshot` removed (none when `snapshot` is null).
  void use_snapshot(uint64_t version, const PodSnapshot* snapshot);

  // Counts `e` in the series of its owner's pod (`attribution`, null: the host series), cached
  // per owner cgroup and direction. An attribution of a container whose pod the snapshot does not
  // know yet always looks its series up again.
  void count(const ConnectionEvent& e, const Attribution* attribution);

 private:
  Metrics& metrics_;
  // Series per (cgroup id, direction), valid for one pod snapshot.
  std::unordered_map<uint64_t, std::shared_ptr<ConnectionSeries>> series_cache_;
  uint64_t series_snapshot_version_ = 0;
};

}  // namespace netmon
