#include "k8s/attribution.h"

#include "k8s/kubelet.h"

namespace netmon {

Attributor::Attributor(std::optional<CgroupResolver> cgroups, KubeletWatcher* kubelet)
    : cgroups_(std::move(cgroups)), kubelet_(kubelet) {}

void Attributor::refresh_snapshot() {
  if (!kubelet_) return;
  const uint64_t version = kubelet_->version();
  if (version == snapshot_version_) return;
  snapshot_ = kubelet_->snapshot();
  snapshot_version_ = version;
  cache_.clear();  // its pointers are into the old snapshot
}

const Attribution& Attributor::resolve(uint64_t cgroup_id) {
  if (!cgroups_ || cgroup_id == 0) return none_;
  refresh_snapshot();
  if (auto it = cache_.find(cgroup_id); it != cache_.end()) return it->second;

  const CgroupIdentity& id = cgroups_->identity(cgroup_id);
  Attribution a;
  a.container_id = id.container_id;
  if (snapshot_) {
    if (!id.container_id.empty()) {
      auto [pod, container] = snapshot_->find_container(id.container_id);
      a.pod = pod;
      a.container = container;
    }
    if (!a.pod && id.in_pod()) a.pod = snapshot_->find_pod(id.pod_uid);
  }
  if (id.in_pod() && !a.pod) {
    // A pod the snapshot does not know yet: ask the watcher for an early poll, and do not cache
    // the miss, so the next event of this cgroup looks again.
    ++stats_.in_pod_without_metadata;
    if (kubelet_) {
      kubelet_->request_refresh();
      ++stats_.refresh_requests;
    }
    none_ = a;
    return none_;
  }
  if (cache_.size() >= 16384) cache_.clear();
  return cache_.emplace(cgroup_id, std::move(a)).first->second;
}

}  // namespace netmon
