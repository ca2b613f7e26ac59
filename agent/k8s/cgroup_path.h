// Container and pod identity from cgroup paths, as the kubelet and container runtimes name
// their cgroups. Pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace netmon {

enum class ContainerRuntime { kUnknown, kContainerd, kCrio, kDocker, kPodman };
enum class QosClass { kUnknown, kGuaranteed, kBurstable, kBestEffort };

std::string_view runtime_name(ContainerRuntime runtime);  // "containerd", "cri-o", ...
std::string_view qos_name(QosClass qos);                  // "Guaranteed", "Burstable", ...

struct CgroupIdentity {
  // The pod's UID in its canonical form: the dashed UUID ("4c9f1974-5c46-44c2-...", from the
  // systemd driver's underscored "4c9f1974_5c46_44c2_...") or, for static pods, the 32-hex
  // config hash. Empty when the path is not inside a pod's cgroup.
  std::string pod_uid;
  // The container's id (64 lowercase hex for containerd, CRI-O, docker and podman). Empty for a
  // pod-level cgroup, for conmon cgroups and for paths without a container.
  std::string container_id;
  // From the leaf's prefix (cri-containerd-, crio-, docker-, libpod-); kUnknown for cgroupfs
  // leaves that are a bare id (the runtime then comes from the kubelet's containerID scheme).
  ContainerRuntime runtime = ContainerRuntime::kUnknown;
  QosClass qos = QosClass::kUnknown;  // from the kubepods level: besteffort, burstable, or none
                                      // (Guaranteed) when a pod is found directly below kubepods

  bool in_pod() const { return !pod_uid.empty(); }
  bool in_container() const { return !container_id.empty(); }
};

// Parses a cgroup path as found in /proc/PID/cgroup or below a cgroup mount ("/kubepods/...").
// Understands:
// - the cgroupfs driver: /kubepods[/besteffort|/burstable]/pod<uid>/<id>
// - the systemd driver: /kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/
//   <prefix>-<id>.scope (the ".scope" suffix optional), with any cgroup root above it
//   (e.g. /kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/...)
// - runtime leaf forms: cri-containerd-<id>, crio-<id>, docker-<id>, libpod-<id>, a bare
//   64-hex <id>, and the "<slice>:cri-containerd:<id>" form a systemd cgroupsPath takes when
//   applied literally by a cgroupfs runtime; "crio-conmon-<id>" is conmon, not a container
// - containers outside Kubernetes: /system.slice/docker-<id>.scope, /docker/<id>,
//   /machine.slice/libpod-<id>.scope, /libpod_parent/libpod-<id> (no pod_uid)
// - sub-cgroups below the container's (".../crio-<id>.scope/container", ".../<id>/kube-proxy"):
//   the nearest container ancestor wins
// - leading "/.." components (a path seen from inside another cgroup namespace) are skipped.
// A path matching none of these yields an empty identity.
CgroupIdentity parse_cgroup_path(std::string_view path);

// The identity of a process from the text of its /proc/PID/cgroup: the cgroup v2 line ("0::")
// when it names a container or pod, else the first cgroup v1 line that does (hybrid hosts).
CgroupIdentity parse_proc_cgroup(std::string_view text);

// The canonical UID for a pod directory name's UID part: underscores become dashes; a 32-hex
// static-pod hash is kept as it is. nullopt when `raw` is neither a UUID nor 32 hex digits.
std::optional<std::string> canonical_pod_uid(std::string_view raw);

}  // namespace netmon
