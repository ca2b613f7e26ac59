#include "k8s/cgroup_path.h"

#include <algorithm>
#include <cstddef>

namespace netmon {

namespace {

constexpr std::size_t kContainerIdLen = 64;
constexpr std::size_t kStaticUidLen = 32;
constexpr std::size_t kUuidLen = 36;

constexpr bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

bool all_lower_hex(std::string_view s) { return std::all_of(s.begin(), s.end(), is_lower_hex); }

bool is_container_id(std::string_view s) { return s.size() == kContainerIdLen && all_lower_hex(s); }

bool consume_prefix(std::string_view& s, std::string_view prefix) {
  if (s.substr(0, prefix.size()) != prefix) return false;
  s.remove_prefix(prefix.size());
  return true;
}

bool consume_suffix(std::string_view& s, std::string_view suffix) {
  if (s.size() < suffix.size() || s.substr(s.size() - suffix.size()) != suffix) return false;
  s.remove_suffix(suffix.size());
  return true;
}

// A container-level cgroup name. `conmon` leaves (crio-conmon-<id>, libpod-conmon-<id>) are
// recognised, so that they are not mistaken for anything else, but carry no container id.
struct Leaf {
  std::string_view id;  // empty for conmon
  ContainerRuntime runtime = ContainerRuntime::kUnknown;
};

// "<prefix>" + "-" + "<rest>" as one runtime leaf; `prefix` is "cri-containerd", "crio", "docker"
// or "libpod" (possibly followed by "-conmon" inside `rest`). `rest` has no ".scope" suffix.
std::optional<Leaf> leaf_from_parts(std::string_view prefix, std::string_view rest) {
  Leaf leaf;
  bool conmon_allowed = false;
  if (prefix == "cri-containerd") {
    leaf.runtime = ContainerRuntime::kContainerd;
  } else if (prefix == "crio") {
    leaf.runtime = ContainerRuntime::kCrio;
    conmon_allowed = true;
  } else if (prefix == "docker") {
    leaf.runtime = ContainerRuntime::kDocker;
  } else if (prefix == "libpod") {
    leaf.runtime = ContainerRuntime::kPodman;
    conmon_allowed = true;
  } else {
    return std::nullopt;
  }
  const bool conmon = conmon_allowed && consume_prefix(rest, "conmon-");
  if (!is_container_id(rest)) return std::nullopt;
  if (!conmon) leaf.id = rest;
  return leaf;
}

// A runtime leaf: cri-containerd-<id>, crio-<id>, docker-<id>, libpod-<id> (".scope" optional),
// the conmon forms, or a bare 64-hex id.
std::optional<Leaf> parse_leaf(std::string_view segment) {
  if (is_container_id(segment)) return Leaf{segment, ContainerRuntime::kUnknown};
  std::string_view name = segment;
  consume_suffix(name, ".scope");
  for (std::string_view prefix : {"cri-containerd", "crio", "docker", "libpod"}) {
    std::string_view rest = name;
    if (consume_prefix(rest, prefix) && consume_prefix(rest, "-")) {
      return leaf_from_parts(prefix, rest);
    }
  }
  return std::nullopt;
}

struct PodDir {
  std::string uid;  // canonical
  QosClass qos = QosClass::kUnknown;
};

// A systemd pod slice: "[<root>-]kubepods[-besteffort|-burstable]-pod<uid>.slice". The slice
// name spells out its whole ancestry, so it identifies the pod and its QoS on its own.
std::optional<PodDir> parse_pod_slice(std::string_view segment) {
  std::string_view name = segment;
  if (!consume_suffix(name, ".slice")) return std::nullopt;
  const std::size_t pos = name.rfind("-pod");
  if (pos == std::string_view::npos) return std::nullopt;
  auto uid = canonical_pod_uid(name.substr(pos + 4));
  if (!uid) return std::nullopt;
  std::string_view head = name.substr(0, pos);
  QosClass qos = QosClass::kGuaranteed;
  if (consume_suffix(head, "-besteffort")) {
    qos = QosClass::kBestEffort;
  } else if (consume_suffix(head, "-burstable")) {
    qos = QosClass::kBurstable;
  }
  if (!consume_suffix(head, "kubepods")) return std::nullopt;
  if (!head.empty() && head.back() != '-') return std::nullopt;
  return PodDir{std::move(*uid), qos};
}

// "<pod slice>:<prefix>:<id>": a systemd cgroupsPath applied literally by a cgroupfs runtime.
struct ColonForm {
  PodDir pod;
  std::optional<Leaf> leaf;
};

std::optional<ColonForm> parse_colon_form(std::string_view segment) {
  const std::size_t first = segment.find(':');
  if (first == std::string_view::npos) return std::nullopt;
  const std::size_t second = segment.find(':', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  auto pod = parse_pod_slice(segment.substr(0, first));
  if (!pod) return std::nullopt;
  std::string_view prefix = segment.substr(first + 1, second - first - 1);
  const std::string_view id = segment.substr(second + 1);
  // A "crio-conmon" prefix is conmon's cgroup: recognised, but no container.
  const bool conmon = consume_suffix(prefix, "-conmon");
  std::optional<Leaf> leaf = leaf_from_parts(prefix, id);
  if (leaf && conmon) {
    if (leaf->runtime != ContainerRuntime::kCrio && leaf->runtime != ContainerRuntime::kPodman) {
      leaf.reset();
    } else {
      leaf->id = {};
    }
  }
  return ColonForm{std::move(*pod), leaf};
}

// A container outside Kubernetes: docker-<id>[.scope], libpod-<id>[.scope], or a bare id
// directly below "docker" (docker's cgroupfs driver).
std::optional<Leaf> parse_standalone_container(std::string_view segment, std::string_view parent) {
  if (parent == "docker" && is_container_id(segment)) {
    return Leaf{segment, ContainerRuntime::kDocker};
  }
  auto leaf = parse_leaf(segment);
  if (!leaf || leaf->id.empty()) return std::nullopt;
  if (leaf->runtime != ContainerRuntime::kDocker && leaf->runtime != ContainerRuntime::kPodman) {
    return std::nullopt;
  }
  return leaf;
}

// Where the previous segment left the cgroupfs chain kubepods[/<qos>]/pod<uid>/<id>.
enum class Level { kNone, kKubepods, kQos, kPod };

// Scans the path from the root down; the innermost pod and container found win (a kind node's
// pods inside a node container, a process in a sub-cgroup below its container's cgroup). A pod
// found below a container starts afresh (that container is not the pod's); other segments
// leave what was found as it is.
CgroupIdentity parse_path_impl(std::string_view path) {
  std::string pod_uid;
  QosClass qos = QosClass::kUnknown;
  std::string_view container_id;
  ContainerRuntime runtime = ContainerRuntime::kUnknown;

  Level level = Level::kNone;
  QosClass pending_qos = QosClass::kUnknown;
  std::string_view parent;
  bool leading = true;

  auto enter_pod = [&](PodDir pod) {
    pod_uid = std::move(pod.uid);
    qos = pod.qos;
    container_id = {};
    runtime = ContainerRuntime::kUnknown;
    level = Level::kPod;
  };
  auto enter_container = [&](const Leaf& leaf) {
    container_id = leaf.id;
    runtime = leaf.runtime;
    level = Level::kNone;
  };

  std::size_t pos = 0;
  while (pos <= path.size()) {
    std::size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view segment = path.substr(pos, end - pos);
    pos = end + 1;
    if (segment.empty()) continue;  // "//", a trailing "/"
    if (segment == "..") {
      if (leading) continue;  // seen from inside another cgroup namespace
      return {};              // ".." further down: not a path the kernel reports
    }
    leading = false;

    std::optional<ColonForm> colon;
    std::optional<PodDir> pod;
    std::optional<Leaf> leaf;
    std::string_view pod_raw = segment;
    if (segment.find(':') != std::string_view::npos && (colon = parse_colon_form(segment))) {
      enter_pod(std::move(colon->pod));
      if (colon->leaf) enter_container(*colon->leaf);
      level = Level::kNone;
    } else if ((pod = parse_pod_slice(segment))) {
      enter_pod(std::move(*pod));
    } else if (segment == "kubepods") {
      level = Level::kKubepods;
      pending_qos = QosClass::kGuaranteed;
    } else if (level == Level::kKubepods && segment == "besteffort") {
      level = Level::kQos;
      pending_qos = QosClass::kBestEffort;
    } else if (level == Level::kKubepods && segment == "burstable") {
      level = Level::kQos;
      pending_qos = QosClass::kBurstable;
    } else if ((level == Level::kKubepods || level == Level::kQos) &&
               consume_prefix(pod_raw, "pod")) {
      if (auto uid = canonical_pod_uid(pod_raw)) {
        enter_pod(PodDir{std::move(*uid), pending_qos});
      } else {
        level = Level::kNone;
      }
    } else if (level == Level::kPod && (leaf = parse_leaf(segment))) {
      enter_container(*leaf);
    } else if ((leaf = parse_standalone_container(segment, parent))) {
      // Outside Kubernetes; or nested in a pod's container (docker-in-docker), which leaves
      // the path inside the pod's cgroup: the pod stays.
      enter_container(*leaf);
    } else {
      level = Level::kNone;  // a sub-cgroup, or a cgroup that is none of these
    }
    parent = segment;
  }

  CgroupIdentity identity;
  if (pod_uid.empty() && container_id.empty()) return identity;
  identity.qos = pod_uid.empty() ? QosClass::kUnknown : qos;
  identity.pod_uid = std::move(pod_uid);
  identity.container_id = std::string(container_id);
  identity.runtime = runtime;
  return identity;
}

// One /proc/PID/cgroup line: "<hierarchy-id>:<controllers>:<path>" (the path may hold ':').
struct ProcLine {
  bool v2 = false;
  std::string_view path;
};

std::optional<ProcLine> split_proc_line(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const std::size_t first = line.find(':');
  if (first == std::string_view::npos) return std::nullopt;
  const std::size_t second = line.find(':', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  const std::string_view hierarchy = line.substr(0, first);
  const std::string_view controllers = line.substr(first + 1, second - first - 1);
  if (hierarchy.empty()) return std::nullopt;
  return ProcLine{hierarchy == "0" && controllers.empty(), line.substr(second + 1)};
}

template <typename F>
void for_each_line(std::string_view text, F&& f) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    if (!f(text.substr(pos, end - pos))) return;
    pos = end + 1;
  }
}

bool names_something(const CgroupIdentity& identity) {
  return identity.in_pod() || identity.in_container();
}

}  // namespace

std::string_view runtime_name(ContainerRuntime runtime) {
  switch (runtime) {
    case ContainerRuntime::kContainerd:
      return "containerd";
    case ContainerRuntime::kCrio:
      return "cri-o";
    case ContainerRuntime::kDocker:
      return "docker";
    case ContainerRuntime::kPodman:
      return "podman";
    case ContainerRuntime::kUnknown:
      break;
  }
  return "unknown";
}

std::string_view qos_name(QosClass qos) {
  switch (qos) {
    case QosClass::kGuaranteed:
      return "Guaranteed";
    case QosClass::kBurstable:
      return "Burstable";
    case QosClass::kBestEffort:
      return "BestEffort";
    case QosClass::kUnknown:
      break;
  }
  return "unknown";
}

std::optional<std::string> canonical_pod_uid(std::string_view raw) {
  try {
    if (raw.size() == kStaticUidLen) {
      if (!all_lower_hex(raw)) return std::nullopt;
      return std::string(raw);
    }
    if (raw.size() != kUuidLen) return std::nullopt;
    const char separator = raw[8];
    if (separator != '-' && separator != '_') return std::nullopt;
    std::string uid(raw);
    for (std::size_t i = 0; i < uid.size(); ++i) {
      if (i == 8 || i == 13 || i == 18 || i == 23) {
        if (uid[i] != separator) return std::nullopt;  // one separator throughout
        uid[i] = '-';
      } else if (!is_lower_hex(uid[i])) {
        return std::nullopt;
      }
    }
    return uid;
  } catch (...) {
    return std::nullopt;
  }
}

CgroupIdentity parse_cgroup_path(std::string_view path) {
  try {
    return parse_path_impl(path);
  } catch (...) {
    return {};
  }
}

CgroupIdentity parse_proc_cgroup(std::string_view text) {
  try {
    CgroupIdentity found;
    for_each_line(text, [&](std::string_view line) {
      auto parsed = split_proc_line(line);
      if (!parsed || !parsed->v2) return true;
      found = parse_path_impl(parsed->path);
      return !names_something(found);
    });
    if (names_something(found)) return found;
    found = {};
    for_each_line(text, [&](std::string_view line) {
      auto parsed = split_proc_line(line);
      if (!parsed || parsed->v2) return true;
      found = parse_path_impl(parsed->path);
      return !names_something(found);
    });
    if (names_something(found)) return found;
    return {};
  } catch (...) {
    return {};
  }
}

}  // namespace netmon
