// The kubelet's view of the pods on this node (GET /pods), reduced to what events carry, and
// immutable snapshots of it for the pipeline thread. Only this module and the kubelet client
// know the JSON. Plain types and parsing only: no HTTP in this header's include chain, so that
// the modules that read pods (output, rules) do not see the kubelet client.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/result.h"

namespace netmon {

struct ContainerMeta {
  std::string id;       // without the "<runtime>://" scheme
  std::string runtime;  // the scheme: "containerd", "cri-o", "docker", ...
  std::string name;
  std::string image;     // status.image (spec image when the status has none)
  std::string image_id;  // status.imageID
};

struct PodMeta {
  std::string namespace_name;
  std::string name;
  std::string uid;       // metadata.uid: for static pods the kubelet reports the 32-hex config hash
  std::string workload;  // see derive_workload
  std::string workload_kind;  // "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob",
                              // "ReplicaSet", "Node" (static pods), "Pod", or another owner kind
  std::string node_name;
  std::vector<std::pair<std::string, std::string>> labels;  // sorted by key
  // Every container id the pod has had that the kubelet still reports: containerStatuses,
  // initContainerStatuses, ephemeralContainerStatuses, and each one's lastState.terminated.
  std::vector<ContainerMeta> containers;
};

// What an event learns about its owner's container and pod (Attributor::resolve(), in
// k8s/attribution.h). The pointers are into one PodSnapshot and stay valid until the next
// Attributor::resolve() that sees a new snapshot; copy what must live longer.
struct Attribution {
  std::string container_id;                  // "" when the owner is not in a container
  const PodMeta* pod = nullptr;              // null: no pod (host process, or pod unknown)
  const ContainerMeta* container = nullptr;  // null: container unknown to the kubelet
};

// Parses a PodList. Pods without metadata.uid are skipped; containers without a containerID
// (not started yet) are listed without an id. Fails, naming what is wrong, on malformed JSON or
// when the top level is not an object with an "items" array.
//
// With `peers` (not null), the same document's items are also parsed as the peer index sees pods
// (KubePod, parse_kube_pod_items in k8s/kube_json.h; items that do not parse are left out, as
// is everything when the list has more than kKubeMaxListItems): the JSON is parsed once.
struct KubePod;
Result<std::vector<PodMeta>> parse_pod_list(std::string_view json,
                                            std::vector<KubePod>* peers = nullptr);

// Owner reference -> workload: ReplicaSet "web-7d4b9c" with the pod-template-hash label
// "7d4b9c" -> ("web", "Deployment") (a ReplicaSet whose name does not end in "-<hash>" stays
// ("<name>", "ReplicaSet")); StatefulSet, DaemonSet -> themselves; Job "backup-28391520" whose
// suffix is the scheduled time in minutes (8 or more digits) -> ("backup", "CronJob"), other
// Jobs -> ("<name>", "Job"); a Node owner, or a static pod (annotation kubernetes.io/config.source
// other than "api", or kubernetes.io/config.mirror present) -> (node name, "Node"); no controller
// owner -> (pod name, "Pod"); any other controller kind -> (owner name, owner kind).
struct OwnerRef {
  std::string kind;
  std::string name;
  bool controller = false;
};
std::pair<std::string, std::string> derive_workload(
    const std::vector<OwnerRef>& owners,
    const std::vector<std::pair<std::string, std::string>>& labels, bool static_pod,
    std::string_view pod_name, std::string_view node_name);

// An immutable view of the pods, indexed for the pipeline thread. Pods that disappeared from
// the kubelet's list stay for a grace period so late events (e.g. Close after deletion) still
// resolve.
class PodSnapshot {
 public:
  using Clock = std::chrono::steady_clock;

  // `current`: the latest PodList. `previous` (may be null): the snapshot it replaces; its pods
  // missing from `current` are kept until `grace` after they were first missed.
  static std::shared_ptr<const PodSnapshot> build(std::vector<PodMeta> current,
                                                  const PodSnapshot* previous,
                                                  Clock::time_point now, Clock::duration grace);

  const PodMeta* find_pod(std::string_view uid) const;
  // The pod and container owning `container_id`; {nullptr, nullptr} when unknown.
  std::pair<const PodMeta*, const ContainerMeta*> find_container(
      std::string_view container_id) const;

  size_t pod_count() const { return pods_.size(); }
  size_t deleted_pod_count() const;  // kept only for their grace period

 private:
  struct Entry {
    PodMeta pod;
    Clock::time_point missing_since{};  // epoch while present in the kubelet's list
  };
  std::vector<Entry> pods_;
  std::unordered_map<std::string, size_t> by_uid_;
  std::unordered_map<std::string, std::pair<size_t, size_t>> by_container_;
};

}  // namespace netmon
