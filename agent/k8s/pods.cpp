#include "k8s/pods.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "k8s/kube_json.h"
#include "k8s/kube_objects.h"

namespace netmon {

namespace {

using nlohmann::json;

// Field access never throws: every lookup checks the type first.
//
// Malformed individual fields (one bad pod or field must not cost the whole list):
// - an item that is not an object, or whose metadata is not an object, or whose metadata.uid is
//   not a non-empty string, is skipped (without a uid the pod cannot be indexed);
// - any other field of the wrong type is ignored, i.e. treated as absent: a non-string name,
//   namespace, nodeName, image or imageID reads as ""; labels/annotations that are not an object
//   read as none, and a single label/annotation whose value is not a string is dropped;
//   ownerReferences/status lists that are not arrays read as empty, and entries in them that are
//   not objects are dropped; a containerID that is not a string, or that is empty after its
//   scheme, leaves the container without an id.

const json* member(const json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

const json* object_member(const json& object, const char* key) {
  const json* value = member(object, key);
  return value != nullptr && value->is_object() ? value : nullptr;
}

const json* array_member(const json& object, const char* key) {
  const json* value = member(object, key);
  return value != nullptr && value->is_array() ? value : nullptr;
}

std::string string_member(const json& object, const char* key) {
  const json* value = member(object, key);
  return value != nullptr && value->is_string() ? value->get_ref<const std::string&>()
                                                : std::string();
}

bool bool_member(const json& object, const char* key) {
  const json* value = member(object, key);
  return value != nullptr && value->is_boolean() && value->get<bool>();
}

// String-valued entries of a map-like object (labels, annotations), sorted by key.
std::vector<std::pair<std::string, std::string>> string_map(const json* object) {
  std::vector<std::pair<std::string, std::string>> out;
  if (object == nullptr || !object->is_object()) return out;
  for (auto it = object->begin(); it != object->end(); ++it) {
    if (it.value().is_string()) {
      out.emplace_back(it.key(), it.value().get_ref<const std::string&>());
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  return out;
}

const std::string* find_value(const std::vector<std::pair<std::string, std::string>>& map,
                              std::string_view key) {
  for (const auto& [k, v] : map) {
    if (k == key) return &v;
  }
  return nullptr;
}

// "containerd://abc" -> runtime "containerd", id "abc". A value without a scheme is all id.
void split_container_id(const std::string& raw, ContainerMeta& out) {
  size_t sep = raw.find("://");
  if (sep == std::string::npos) {
    out.runtime.clear();
    out.id = raw;
  } else {
    out.runtime = raw.substr(0, sep);
    out.id = raw.substr(sep + 3);
  }
  if (out.id.empty()) out.runtime.clear();
}

// The image named by the spec for container `name` in `spec_list` (may be null).
std::string spec_image(const json* spec_list, const std::string& name) {
  if (spec_list == nullptr) return {};
  for (const json& container : *spec_list) {
    if (container.is_object() && string_member(container, "name") == name) {
      return string_member(container, "image");
    }
  }
  return {};
}

void add_container(std::vector<ContainerMeta>& containers, ContainerMeta meta) {
  // One entry per id: a lastState id equal to the current one, or an id repeated across lists,
  // is listed once. Containers without an id are all listed.
  if (!meta.id.empty()) {
    for (const ContainerMeta& existing : containers) {
      if (existing.id == meta.id) return;
    }
  }
  containers.push_back(std::move(meta));
}

void parse_statuses(const json* statuses, const json* spec_list,
                    std::vector<ContainerMeta>& containers) {
  if (statuses == nullptr) return;
  for (const json& status : *statuses) {
    if (!status.is_object()) continue;
    ContainerMeta meta;
    meta.name = string_member(status, "name");
    meta.image = string_member(status, "image");
    if (meta.image.empty()) meta.image = spec_image(spec_list, meta.name);
    meta.image_id = string_member(status, "imageID");
    split_container_id(string_member(status, "containerID"), meta);

    // The previous instance (restart, OOM kill) still reported by the kubelet: same container
    // name and image; its image id is not reported separately, so the current one is used.
    std::string last_id;
    if (const json* last = object_member(status, "lastState")) {
      if (const json* terminated = object_member(*last, "terminated")) {
        last_id = string_member(*terminated, "containerID");
      }
    }
    ContainerMeta previous;
    if (!last_id.empty()) {
      previous.name = meta.name;
      previous.image = meta.image;
      previous.image_id = meta.image_id;
      split_container_id(last_id, previous);
    }
    add_container(containers, std::move(meta));
    if (!previous.id.empty()) add_container(containers, std::move(previous));
  }
}

bool is_static_pod(const std::vector<std::pair<std::string, std::string>>& annotations) {
  const std::string* source = find_value(annotations, "kubernetes.io/config.source");
  if (source != nullptr && *source != "api") return true;
  return find_value(annotations, "kubernetes.io/config.mirror") != nullptr;
}

std::vector<OwnerRef> parse_owners(const json& metadata) {
  std::vector<OwnerRef> owners;
  const json* refs = array_member(metadata, "ownerReferences");
  if (refs == nullptr) return owners;
  for (const json& ref : *refs) {
    if (!ref.is_object()) continue;
    owners.push_back(OwnerRef{string_member(ref, "kind"), string_member(ref, "name"),
                              bool_member(ref, "controller")});
  }
  return owners;
}

// Fills `pod` from one item of "items"; false when the item is skipped (see above).
bool parse_pod(const json& item, PodMeta& pod) {
  const json* metadata = object_member(item, "metadata");
  if (metadata == nullptr) return false;
  pod.uid = string_member(*metadata, "uid");
  if (pod.uid.empty()) return false;
  pod.name = string_member(*metadata, "name");
  pod.namespace_name = string_member(*metadata, "namespace");
  pod.labels = string_map(object_member(*metadata, "labels"));
  auto annotations = string_map(object_member(*metadata, "annotations"));

  const json* spec = object_member(item, "spec");
  if (spec != nullptr) pod.node_name = string_member(*spec, "nodeName");

  auto [workload, kind] = derive_workload(parse_owners(*metadata), pod.labels,
                                          is_static_pod(annotations), pod.name, pod.node_name);
  pod.workload = std::move(workload);
  pod.workload_kind = std::move(kind);

  if (const json* status = object_member(item, "status")) {
    const json* spec_containers = spec != nullptr ? array_member(*spec, "containers") : nullptr;
    const json* spec_init = spec != nullptr ? array_member(*spec, "initContainers") : nullptr;
    const json* spec_ephemeral =
        spec != nullptr ? array_member(*spec, "ephemeralContainers") : nullptr;
    parse_statuses(array_member(*status, "containerStatuses"), spec_containers, pod.containers);
    parse_statuses(array_member(*status, "initContainerStatuses"), spec_init, pod.containers);
    parse_statuses(array_member(*status, "ephemeralContainerStatuses"), spec_ephemeral,
                   pod.containers);
  }
  return true;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

Result<std::vector<PodMeta>> parse_pod_list(std::string_view text, std::vector<KubePod>* peers) {
  try {
    json doc;
    try {
      doc = json::parse(text.begin(), text.end());
    } catch (const json::parse_error& e) {
      return fail(std::string("kubelet pod list: malformed JSON: ") + e.what());
    }
    if (!doc.is_object()) {
      return fail(std::string("kubelet pod list: top level is ") + doc.type_name() +
                  ", not an object");
    }
    const json* items = member(doc, "items");
    if (items == nullptr) return fail("kubelet pod list: no \"items\" member");
    // Go encodes an empty list as null: a node without pods.
    if (items->is_null()) {
      if (peers) peers->clear();
      return std::vector<PodMeta>{};
    }
    if (!items->is_array()) {
      return fail(std::string("kubelet pod list: \"items\" is ") + items->type_name() +
                  ", not an array");
    }
    std::vector<PodMeta> pods;
    pods.reserve(items->size());
    for (const json& item : *items) {
      PodMeta pod;
      if (parse_pod(item, pod)) pods.push_back(std::move(pod));
    }
    if (peers) {
      auto kube = parse_kube_pod_items(*items);
      peers->clear();
      if (kube) *peers = std::move(kube->items);
    }
    return pods;
  } catch (const json::exception& e) {
    // Not expected (every access checks types first); kept so that no nlohmann exception leaves
    // the module.
    return fail(std::string("kubelet pod list: ") + e.what());
  }
}

std::pair<std::string, std::string> derive_workload(
    const std::vector<OwnerRef>& owners,
    const std::vector<std::pair<std::string, std::string>>& labels, bool static_pod,
    std::string_view pod_name, std::string_view node_name) {
  // Static pods (kubelet view: config.source "file"/"http"; API view: a mirror with a Node owner).
  for (const OwnerRef& owner : owners) {
    if (owner.kind == "Node") {
      return {owner.name.empty() ? std::string(node_name) : owner.name, "Node"};
    }
  }
  if (static_pod) return {std::string(node_name), "Node"};

  // The controller; an owner reference without a kind or name cannot name a workload.
  const OwnerRef* controller = nullptr;
  for (const OwnerRef& owner : owners) {
    if (owner.controller && !owner.kind.empty() && !owner.name.empty()) {
      controller = &owner;
      break;
    }
  }
  if (controller == nullptr) return {std::string(pod_name), "Pod"};

  const std::string& name = controller->name;
  if (controller->kind == "ReplicaSet") {
    const std::string* hash = find_value(labels, "pod-template-hash");
    if (hash != nullptr && !hash->empty() && name.size() > hash->size() + 1 &&
        name.compare(name.size() - hash->size(), hash->size(), *hash) == 0 &&
        name[name.size() - hash->size() - 1] == '-') {
      return {name.substr(0, name.size() - hash->size() - 1), "Deployment"};
    }
    return {name, "ReplicaSet"};
  }
  if (controller->kind == "Job") {
    size_t dash = name.rfind('-');
    if (dash != std::string::npos && dash > 0) {
      std::string_view suffix = std::string_view(name).substr(dash + 1);
      if (suffix.size() >= 8 && all_digits(suffix)) return {name.substr(0, dash), "CronJob"};
    }
    return {name, "Job"};
  }
  return {name, controller->kind};
}

std::shared_ptr<const PodSnapshot> PodSnapshot::build(std::vector<PodMeta> current,
                                                      const PodSnapshot* previous,
                                                      Clock::time_point now,
                                                      Clock::duration grace) {
  auto snapshot = std::make_shared<PodSnapshot>();
  snapshot->pods_.reserve(current.size());
  for (PodMeta& pod : current) {
    if (pod.uid.empty() || snapshot->by_uid_.count(pod.uid) != 0) continue;  // first one wins
    snapshot->by_uid_.emplace(pod.uid, snapshot->pods_.size());
    snapshot->pods_.push_back(Entry{std::move(pod), Clock::time_point{}});
  }

  if (previous != nullptr) {
    // The epoch means "present"; a pod first missed at exactly the epoch is marked one tick later.
    const Clock::time_point first_missed =
        now == Clock::time_point{} ? Clock::time_point{} + Clock::duration{1} : now;
    for (const Entry& old : previous->pods_) {
      if (snapshot->by_uid_.count(old.pod.uid) != 0) continue;  // present (again): fresh
      Clock::time_point missing_since =
          old.missing_since == Clock::time_point{} ? first_missed : old.missing_since;
      if (now - missing_since >= grace) continue;
      snapshot->by_uid_.emplace(old.pod.uid, snapshot->pods_.size());
      snapshot->pods_.push_back(Entry{old.pod, missing_since});
    }
  }

  // Present pods come first, so a container id they report wins over a deleted pod's.
  for (size_t p = 0; p < snapshot->pods_.size(); ++p) {
    const auto& containers = snapshot->pods_[p].pod.containers;
    for (size_t c = 0; c < containers.size(); ++c) {
      if (!containers[c].id.empty()) snapshot->by_container_.try_emplace(containers[c].id, p, c);
    }
  }
  return snapshot;
}

const PodMeta* PodSnapshot::find_pod(std::string_view uid) const {
  auto it = by_uid_.find(std::string(uid));
  return it == by_uid_.end() ? nullptr : &pods_[it->second].pod;
}

std::pair<const PodMeta*, const ContainerMeta*> PodSnapshot::find_container(
    std::string_view container_id) const {
  auto it = by_container_.find(std::string(container_id));
  if (it == by_container_.end()) return {nullptr, nullptr};
  const PodMeta& pod = pods_[it->second.first].pod;
  return {&pod, &pod.containers[it->second.second]};
}

size_t PodSnapshot::deleted_pod_count() const {
  return static_cast<size_t>(std::count_if(pods_.begin(), pods_.end(), [](const Entry& e) {
    return e.missing_since != Clock::time_point{};
  }));
}

}  // namespace netmon
