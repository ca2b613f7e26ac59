#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/text.h"
#include "k8s/kube_json.h"
#include "k8s/kube_objects.h"
#include "k8s/pods.h"

namespace netmon {

std::string_view to_string(KubeServiceType type) {
  switch (type) {
    case KubeServiceType::kClusterIP:
      return "ClusterIP";
    case KubeServiceType::kNodePort:
      return "NodePort";
    case KubeServiceType::kLoadBalancer:
      return "LoadBalancer";
    case KubeServiceType::kExternalName:
      return "ExternalName";
  }
  return "ClusterIP";
}

namespace {

using nlohmann::json;

// Reads fields of one object. The first failure is kept in `error` (the field's path and what is
// wrong with it); later reads still return defaults, so parse functions read on and check once.
// Field access never throws: every access checks the type first.
class FieldReader {
 public:
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

  void fail_at(const std::string& path, const std::string& what) {
    if (error_.empty()) error_ = path + ": " + what;
  }

  // The member `key` of `object`; nullptr when absent or null (Go's encoding of a nil value).
  static const json* get(const json& object, const char* key) {
    if (!object.is_object()) return nullptr;
    auto it = object.find(key);
    if (it == object.end() || it->is_null()) return nullptr;
    return &*it;
  }

  const json* object(const json& parent, const char* key, const std::string& path) {
    const json* value = get(parent, key);
    if (value == nullptr) return nullptr;
    if (!value->is_object()) {
      fail_at(path, type_error(*value, "an object"));
      return nullptr;
    }
    return value;
  }

  const json* array(const json& parent, const char* key, const std::string& path, size_t max) {
    const json* value = get(parent, key);
    if (value == nullptr) return nullptr;
    if (!value->is_array()) {
      fail_at(path, type_error(*value, "an array"));
      return nullptr;
    }
    if (value->size() > max) {
      fail_at(path, std::to_string(value->size()) + " entries, more than " + std::to_string(max));
      return nullptr;
    }
    return value;
  }

  std::string string_value(const json& value, const std::string& path) {
    if (!value.is_string()) {
      fail_at(path, type_error(value, "a string"));
      return {};
    }
    const auto& text = value.get_ref<const std::string&>();
    if (text.size() > kKubeMaxStringBytes) {
      fail_at(path, std::to_string(text.size()) + " bytes, more than " +
                        std::to_string(kKubeMaxStringBytes));
      return {};
    }
    return text;
  }

  std::string string(const json& parent, const char* key, const std::string& path) {
    const json* value = get(parent, key);
    return value == nullptr ? std::string() : string_value(*value, path);
  }

  bool boolean(const json& parent, const char* key, const std::string& path, bool absent) {
    const json* value = get(parent, key);
    if (value == nullptr) return absent;
    if (!value->is_boolean()) {
      fail_at(path, type_error(*value, "a boolean"));
      return absent;
    }
    return value->get<bool>();
  }

  // An integer port: 1..65535, or 0 when absent (and `required` is false).
  uint16_t port(const json& parent, const char* key, const std::string& path, bool required) {
    const json* value = get(parent, key);
    if (value == nullptr) {
      if (required) fail_at(path, "missing");
      return 0;
    }
    if (!value->is_number_integer()) {
      fail_at(path, type_error(*value, "an integer"));
      return 0;
    }
    const int64_t number =
        value->is_number_unsigned()
            ? static_cast<int64_t>(std::min<uint64_t>(value->get<uint64_t>(), uint64_t{1} << 32))
            : value->get<int64_t>();
    if (number < 1 || number > 65535) {
      fail_at(path, std::to_string(number) + " is not a port number (1-65535)");
      return 0;
    }
    return static_cast<uint16_t>(number);
  }

  std::optional<IpAddress> ip(const json& value, const std::string& path) {
    std::string text = string_value(value, path);
    if (!ok()) return std::nullopt;
    std::optional<IpAddress> address = parse_ip_address(text);
    if (!address) fail_at(path, quoted(text, 64) + " is not an IP address");
    return address;
  }

  // An array of IP address strings.
  std::vector<IpAddress> ips(const json& parent, const char* key, const std::string& path) {
    std::vector<IpAddress> out;
    const json* list = array(parent, key, path, kKubeMaxAddresses);
    if (list == nullptr) return out;
    out.reserve(list->size());
    for (size_t i = 0; i < list->size() && ok(); ++i) {
      if (auto address = ip((*list)[i], indexed(path, i))) out.push_back(*address);
    }
    return out;
  }

  KubeLabels labels(const json& metadata, const std::string& path) {
    KubeLabels out;
    const json* map = object(metadata, "labels", path);
    if (map == nullptr) return out;
    if (map->size() > kKubeMaxLabels) {
      fail_at(path,
              std::to_string(map->size()) + " labels, more than " + std::to_string(kKubeMaxLabels));
      return out;
    }
    out.reserve(map->size());
    for (auto it = map->begin(); it != map->end() && ok(); ++it) {
      std::string value = string_value(it.value(), path + "[" + quoted(it.key(), 64) + "]");
      if (it.key().size() > kKubeMaxStringBytes) {
        fail_at(path, "a label key of " + std::to_string(it.key().size()) + " bytes");
      }
      out.emplace_back(it.key(), std::move(value));
    }
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    return out;
  }

  static std::string indexed(const std::string& path, size_t index) {
    return path + "[" + std::to_string(index) + "]";
  }

 private:
  static std::string type_error(const json& value, const char* wanted) {
    return std::string("is ") + value.type_name() + ", not " + wanted;
  }

  std::string error_;
};

// metadata.{namespace, name, uid}; `what` names the object in errors ("Service shop/web").
struct Metadata {
  std::string namespace_name;
  std::string name;
  std::string uid;
  const json* object = nullptr;
  std::string what;
};

Result<Metadata> read_metadata(FieldReader& r, const json& item, const char* kind) {
  if (!item.is_object()) {
    return fail(std::string(kind) + ": is " + item.type_name() + ", not an object");
  }
  Metadata m;
  m.object = r.object(item, "metadata", "metadata");
  if (m.object != nullptr) {
    m.namespace_name = r.string(*m.object, "namespace", "metadata.namespace");
    m.name = r.string(*m.object, "name", "metadata.name");
    m.uid = r.string(*m.object, "uid", "metadata.uid");
  }
  m.what = std::string(kind) + " " +
           (m.namespace_name.empty() ? quoted(m.name, 64)
                                     : quoted(m.namespace_name + "/" + m.name, 128));
  if (!r.ok()) return fail(m.what + ": " + r.error());
  if (m.uid.empty()) return fail(m.what + ": metadata.uid: missing");
  return m;
}

// The label value of `key` in sorted `labels`; nullptr when absent.
const std::string* label(const KubeLabels& labels, std::string_view key) {
  for (const auto& [k, v] : labels) {
    if (k == key) return &v;
  }
  return nullptr;
}

template <typename T>
void parse_items(const json& items, Result<T> (*parse_item)(const json&), KubeList<T>& out) {
  out.items.reserve(out.items.size() + items.size());
  for (const json& item : items) {
    Result<T> parsed = parse_item(item);
    if (parsed) {
      out.items.push_back(std::move(*parsed));
    } else {
      if (out.skipped == 0) out.first_error = parsed.error().message;
      ++out.skipped;
    }
  }
}

template <typename T>
Result<KubeList<T>> parse_list(const json& list, const char* kind,
                               Result<T> (*parse_item)(const json&)) {
  if (!list.is_object()) {
    return fail(std::string(kind) + ": is " + list.type_name() + ", not an object");
  }
  KubeList<T> out;
  FieldReader r;
  if (const json* metadata = r.object(list, "metadata", "metadata")) {
    out.resource_version = r.string(*metadata, "resourceVersion", "metadata.resourceVersion");
  }
  const json* items = r.array(list, "items", "items", kKubeMaxListItems);
  if (!r.ok()) return fail(std::string(kind) + ": " + r.error());
  if (items == nullptr) return out;  // null: an empty list, as Go encodes it
  parse_items(*items, parse_item, out);
  return out;
}

// The "items" array alone (what ListWatchHandler::on_list and on_list_page hand over).
template <typename T>
Result<KubeList<T>> parse_item_array(const json& items, const char* kind,
                                     Result<T> (*parse_item)(const json&)) {
  KubeList<T> out;
  if (items.is_null()) return out;
  if (!items.is_array()) {
    return fail(std::string(kind) + " items: is " + items.type_name() + ", not an array");
  }
  if (items.size() > kKubeMaxListItems) {
    return fail(std::string(kind) + " items: " + std::to_string(items.size()) +
                " entries, more than " + std::to_string(kKubeMaxListItems));
  }
  parse_items(items, parse_item, out);
  return out;
}

Result<KubeService> parse_service_unguarded(const json& item) {
  FieldReader r;
  Result<Metadata> meta = read_metadata(r, item, "Service");
  if (!meta) return fail(meta.error().message);
  KubeService s;
  s.namespace_name = std::move(meta->namespace_name);
  s.name = std::move(meta->name);
  s.uid = std::move(meta->uid);

  if (const json* spec = r.object(item, "spec", "spec")) {
    const std::string type = r.string(*spec, "type", "spec.type");
    if (type.empty() || type == "ClusterIP") {
      s.type = KubeServiceType::kClusterIP;
    } else if (type == "NodePort") {
      s.type = KubeServiceType::kNodePort;
    } else if (type == "LoadBalancer") {
      s.type = KubeServiceType::kLoadBalancer;
    } else if (type == "ExternalName") {
      s.type = KubeServiceType::kExternalName;
    } else if (r.ok()) {
      r.fail_at("spec.type", quoted(type, 64) + " is not a service type");
    }
    s.external_name = r.string(*spec, "externalName", "spec.externalName");

    // clusterIPs[0] equals clusterIP when both are set; "None" (headless) appears in both.
    std::vector<std::string> texts;
    if (const json* list = r.array(*spec, "clusterIPs", "spec.clusterIPs", kKubeMaxAddresses)) {
      for (size_t i = 0; i < list->size(); ++i) {
        texts.push_back(r.string_value((*list)[i], FieldReader::indexed("spec.clusterIPs", i)));
      }
    } else {
      std::string one = r.string(*spec, "clusterIP", "spec.clusterIP");
      if (!one.empty()) texts.push_back(std::move(one));
    }
    for (size_t i = 0; i < texts.size() && r.ok(); ++i) {
      if (texts[i] == "None") {
        s.headless = true;
      } else if (s.type != KubeServiceType::kExternalName) {
        std::optional<IpAddress> ip = parse_ip_address(texts[i]);
        if (!ip) {
          r.fail_at(FieldReader::indexed("spec.clusterIPs", i),
                    quoted(texts[i], 64) + " is not an IP address");
        } else {
          s.cluster_ips.push_back(*ip);
        }
      }
    }
    if (s.headless) s.cluster_ips.clear();

    s.external_ips = r.ips(*spec, "externalIPs", "spec.externalIPs");

    if (const json* ports = r.array(*spec, "ports", "spec.ports", kKubeMaxPorts)) {
      s.ports.reserve(ports->size());
      for (size_t i = 0; i < ports->size() && r.ok(); ++i) {
        const std::string path = FieldReader::indexed("spec.ports", i);
        const json& p = (*ports)[i];
        if (!p.is_object()) {
          r.fail_at(path, std::string("is ") + p.type_name() + ", not an object");
          break;
        }
        KubeServicePort port;
        port.name = r.string(p, "name", path + ".name");
        port.protocol = r.string(p, "protocol", path + ".protocol");
        if (port.protocol.empty()) port.protocol = "TCP";
        port.port = r.port(p, "port", path + ".port", true);
        port.node_port = r.port(p, "nodePort", path + ".nodePort", false);
        s.ports.push_back(std::move(port));
      }
    }
  }
  if (const json* status = r.object(item, "status", "status")) {
    if (const json* lb = r.object(*status, "loadBalancer", "status.loadBalancer")) {
      if (const json* ingress =
              r.array(*lb, "ingress", "status.loadBalancer.ingress", kKubeMaxAddresses)) {
        for (size_t i = 0; i < ingress->size() && r.ok(); ++i) {
          const std::string path = FieldReader::indexed("status.loadBalancer.ingress", i);
          const json* ip = FieldReader::get((*ingress)[i], "ip");
          if (ip != nullptr) {
            if (auto address = r.ip(*ip, path + ".ip")) s.ingress_ips.push_back(*address);
          } else if (!(*ingress)[i].is_object()) {
            r.fail_at(path, std::string("is ") + (*ingress)[i].type_name() + ", not an object");
          }
        }
      }
    }
  }
  if (s.type == KubeServiceType::kExternalName) {
    // An ExternalName service is a DNS alias: no address of its own names it.
    s.cluster_ips.clear();
    s.external_ips.clear();
    s.ingress_ips.clear();
  }
  if (!r.ok()) return fail(meta->what + ": " + r.error());
  return s;
}

Result<KubeEndpointSlice> parse_endpoint_slice_unguarded(const json& item) {
  FieldReader r;
  Result<Metadata> meta = read_metadata(r, item, "EndpointSlice");
  if (!meta) return fail(meta.error().message);
  KubeEndpointSlice s;
  s.namespace_name = std::move(meta->namespace_name);
  s.name = std::move(meta->name);
  s.uid = std::move(meta->uid);
  const KubeLabels labels = r.labels(*meta->object, "metadata.labels");
  if (const std::string* service = label(labels, "kubernetes.io/service-name")) {
    s.service_name = *service;
  }

  const std::string address_type = r.string(item, "addressType", "addressType");
  if (address_type == "IPv4") {
    s.address_type = KubeAddressType::kIPv4;
  } else if (address_type == "IPv6") {
    s.address_type = KubeAddressType::kIPv6;
  } else if (address_type == "FQDN") {
    s.address_type = KubeAddressType::kFQDN;
  } else if (r.ok()) {
    r.fail_at("addressType", address_type.empty()
                                 ? std::string("missing")
                                 : quoted(address_type, 64) + " is not IPv4, IPv6 or FQDN");
  }

  if (const json* endpoints = r.array(item, "endpoints", "endpoints", kKubeMaxEndpoints)) {
    s.endpoints.reserve(endpoints->size());
    for (size_t i = 0; i < endpoints->size() && r.ok(); ++i) {
      const std::string path = FieldReader::indexed("endpoints", i);
      const json& e = (*endpoints)[i];
      if (!e.is_object()) {
        r.fail_at(path, std::string("is ") + e.type_name() + ", not an object");
        break;
      }
      KubeEndpoint endpoint;
      if (s.address_type == KubeAddressType::kFQDN) {
        // Names, not IPs: checked for shape only.
        if (const json* names = r.array(e, "addresses", path + ".addresses", kKubeMaxAddresses)) {
          for (size_t a = 0; a < names->size(); ++a) {
            r.string_value((*names)[a], FieldReader::indexed(path + ".addresses", a));
          }
        }
      } else {
        endpoint.addresses = r.ips(e, "addresses", path + ".addresses");
        const auto family = s.address_type == KubeAddressType::kIPv4 ? IpAddress::Family::kV4
                                                                     : IpAddress::Family::kV6;
        for (size_t a = 0; a < endpoint.addresses.size() && r.ok(); ++a) {
          if (endpoint.addresses[a].family != family) {
            r.fail_at(FieldReader::indexed(path + ".addresses", a),
                      "not an address of the slice's addressType");
          }
        }
      }
      if (const json* c = r.object(e, "conditions", path + ".conditions")) {
        endpoint.conditions.ready = r.boolean(*c, "ready", path + ".conditions.ready", true);
        endpoint.conditions.serving =
            r.boolean(*c, "serving", path + ".conditions.serving", endpoint.conditions.ready);
        endpoint.conditions.terminating =
            r.boolean(*c, "terminating", path + ".conditions.terminating", false);
      }
      if (const json* t = r.object(e, "targetRef", path + ".targetRef")) {
        KubeObjectRef ref;
        ref.kind = r.string(*t, "kind", path + ".targetRef.kind");
        ref.namespace_name = r.string(*t, "namespace", path + ".targetRef.namespace");
        ref.name = r.string(*t, "name", path + ".targetRef.name");
        ref.uid = r.string(*t, "uid", path + ".targetRef.uid");
        endpoint.target = std::move(ref);
      }
      endpoint.node_name = r.string(e, "nodeName", path + ".nodeName");
      s.endpoints.push_back(std::move(endpoint));
    }
  }

  if (const json* ports = r.array(item, "ports", "ports", kKubeMaxPorts)) {
    s.ports.reserve(ports->size());
    for (size_t i = 0; i < ports->size() && r.ok(); ++i) {
      const std::string path = FieldReader::indexed("ports", i);
      const json& p = (*ports)[i];
      if (!p.is_object()) {
        r.fail_at(path, std::string("is ") + p.type_name() + ", not an object");
        break;
      }
      KubeEndpointPort port;
      port.name = r.string(p, "name", path + ".name");
      port.protocol = r.string(p, "protocol", path + ".protocol");
      if (port.protocol.empty()) port.protocol = "TCP";
      port.port = r.port(p, "port", path + ".port", false);
      s.ports.push_back(std::move(port));
    }
  }
  if (!r.ok()) return fail(meta->what + ": " + r.error());
  return s;
}

Result<KubeNode> parse_node_unguarded(const json& item) {
  FieldReader r;
  Result<Metadata> meta = read_metadata(r, item, "Node");
  if (!meta) return fail(meta.error().message);
  KubeNode n;
  n.name = std::move(meta->name);
  n.uid = std::move(meta->uid);

  if (const json* spec = r.object(item, "spec", "spec")) {
    std::vector<std::pair<std::string, std::string>> texts;  // (path, cidr)
    if (const json* list = r.array(*spec, "podCIDRs", "spec.podCIDRs", kKubeMaxAddresses)) {
      for (size_t i = 0; i < list->size(); ++i) {
        std::string path = FieldReader::indexed("spec.podCIDRs", i);
        std::string text = r.string_value((*list)[i], path);
        texts.emplace_back(std::move(path), std::move(text));
      }
    } else {
      std::string one = r.string(*spec, "podCIDR", "spec.podCIDR");
      if (!one.empty()) texts.emplace_back("spec.podCIDR", std::move(one));
    }
    for (const auto& [path, text] : texts) {
      if (!r.ok()) break;
      Result<Cidr> cidr = Cidr::parse(text);
      if (cidr) {
        n.pod_cidrs.push_back(*cidr);
      } else {
        r.fail_at(path, quoted(text, 64) + " is not a CIDR: " + cidr.error().message);
      }
    }
  }
  if (const json* status = r.object(item, "status", "status")) {
    if (const json* list = r.array(*status, "addresses", "status.addresses", kKubeMaxAddresses)) {
      for (size_t i = 0; i < list->size() && r.ok(); ++i) {
        const std::string path = FieldReader::indexed("status.addresses", i);
        const json& a = (*list)[i];
        if (!a.is_object()) {
          r.fail_at(path, std::string("is ") + a.type_name() + ", not an object");
          break;
        }
        KubeNodeAddress address;
        const std::string type = r.string(a, "type", path + ".type");
        address.address = r.string(a, "address", path + ".address");
        if (type == "InternalIP") {
          address.type = KubeNodeAddressType::kInternalIP;
        } else if (type == "ExternalIP") {
          address.type = KubeNodeAddressType::kExternalIP;
        } else if (type == "Hostname") {
          address.type = KubeNodeAddressType::kHostname;
        } else if (type == "InternalDNS") {
          address.type = KubeNodeAddressType::kInternalDNS;
        } else if (type == "ExternalDNS") {
          address.type = KubeNodeAddressType::kExternalDNS;
        }
        if (address.type == KubeNodeAddressType::kInternalIP ||
            address.type == KubeNodeAddressType::kExternalIP) {
          address.ip = parse_ip_address(address.address);
          if (!address.ip && r.ok()) {
            r.fail_at(path + ".address", quoted(address.address, 64) + " is not an IP address");
          }
        }
        n.addresses.push_back(std::move(address));
      }
    }
  }
  if (!r.ok()) return fail(meta->what + ": " + r.error());
  return n;
}

Result<KubePod> parse_pod_unguarded(const json& item) {
  FieldReader r;
  Result<Metadata> meta = read_metadata(r, item, "Pod");
  if (!meta) return fail(meta.error().message);
  KubePod p;
  p.namespace_name = std::move(meta->namespace_name);
  p.name = std::move(meta->name);
  p.uid = std::move(meta->uid);
  p.labels = r.labels(*meta->object, "metadata.labels");

  std::vector<OwnerRef> owners;
  if (const json* refs =
          r.array(*meta->object, "ownerReferences", "metadata.ownerReferences", kKubeMaxLabels)) {
    for (size_t i = 0; i < refs->size() && r.ok(); ++i) {
      const std::string path = FieldReader::indexed("metadata.ownerReferences", i);
      const json& ref = (*refs)[i];
      if (!ref.is_object()) {
        r.fail_at(path, std::string("is ") + ref.type_name() + ", not an object");
        break;
      }
      owners.push_back(OwnerRef{r.string(ref, "kind", path + ".kind"),
                                r.string(ref, "name", path + ".name"),
                                r.boolean(ref, "controller", path + ".controller", false)});
    }
  }
  // A static pod, as k8s/pods.cpp tells it: the kubelet's view says config.source "file" or
  // "http"; the API's mirror pod also carries config.mirror (and a Node owner).
  bool static_pod = false;
  p.terminating = FieldReader::get(*meta->object, "deletionTimestamp") != nullptr;
  if (const json* annotations = r.object(*meta->object, "annotations", "metadata.annotations")) {
    const std::string source = r.string(*annotations, "kubernetes.io/config.source",
                                        "metadata.annotations[kubernetes.io/config.source]");
    static_pod = (!source.empty() && source != "api") ||
                 annotations->contains("kubernetes.io/config.mirror");
  }

  if (const json* spec = r.object(item, "spec", "spec")) {
    p.node_name = r.string(*spec, "nodeName", "spec.nodeName");
    p.host_network = r.boolean(*spec, "hostNetwork", "spec.hostNetwork", false);
    if (const json* containers =
            r.array(*spec, "containers", "spec.containers", kKubeMaxContainers)) {
      for (size_t c = 0; c < containers->size() && r.ok(); ++c) {
        const std::string cpath = FieldReader::indexed("spec.containers", c);
        const json* ports = r.array((*containers)[c], "ports", cpath + ".ports", kKubeMaxPorts);
        if (ports == nullptr) continue;
        for (size_t i = 0; i < ports->size() && r.ok(); ++i) {
          const std::string path = FieldReader::indexed(cpath + ".ports", i);
          const json& port = (*ports)[i];
          KubeContainerPort cp;
          cp.name = r.string(port, "name", path + ".name");
          cp.protocol = r.string(port, "protocol", path + ".protocol");
          if (cp.protocol.empty()) cp.protocol = "TCP";
          cp.port = r.port(port, "containerPort", path + ".containerPort", true);
          if (p.ports.size() >= kKubeMaxPorts) {
            r.fail_at(path, "more than " + std::to_string(kKubeMaxPorts) + " container ports");
          }
          p.ports.push_back(std::move(cp));
        }
      }
    }
  }
  if (const json* status = r.object(item, "status", "status")) {
    const std::string phase = r.string(*status, "phase", "status.phase");
    p.terminal = phase == "Succeeded" || phase == "Failed";
    if (const json* list = r.array(*status, "podIPs", "status.podIPs", kKubeMaxAddresses)) {
      for (size_t i = 0; i < list->size() && r.ok(); ++i) {
        const std::string path = FieldReader::indexed("status.podIPs", i);
        const json* ip = FieldReader::get((*list)[i], "ip");
        if (ip == nullptr) {
          r.fail_at(path + ".ip", "missing");
        } else if (auto address = r.ip(*ip, path + ".ip")) {
          p.pod_ips.push_back(*address);
        }
      }
    } else if (const json* ip = FieldReader::get(*status, "podIP")) {
      if (auto address = r.ip(*ip, "status.podIP")) p.pod_ips.push_back(*address);
    }
  }
  auto [workload, kind] = derive_workload(owners, p.labels, static_pod, p.name, p.node_name);
  p.workload = std::move(workload);
  p.workload_kind = std::move(kind);
  if (!r.ok()) return fail(meta->what + ": " + r.error());
  return p;
}

// No nlohmann exception leaves the module (none is expected: every access checks types).
template <typename T>
Result<T> guarded(const char* kind, Result<T> (*parse)(const json&), const json& value) {
  try {
    return parse(value);
  } catch (const std::exception& e) {
    return fail(std::string(kind) + ": " + e.what());
  }
}

Result<KubeService> service_item(const json& v) {
  return guarded("Service", parse_service_unguarded, v);
}
Result<KubeEndpointSlice> slice_item(const json& v) {
  return guarded("EndpointSlice", parse_endpoint_slice_unguarded, v);
}
Result<KubeNode> node_item(const json& v) { return guarded("Node", parse_node_unguarded, v); }
Result<KubePod> pod_item(const json& v) { return guarded("Pod", parse_pod_unguarded, v); }

}  // namespace

Result<KubeService> parse_kube_service(const json& object) { return service_item(object); }
Result<KubeEndpointSlice> parse_kube_endpoint_slice(const json& object) {
  return slice_item(object);
}
Result<KubeNode> parse_kube_node(const json& object) { return node_item(object); }
Result<KubePod> parse_kube_pod(const json& object) { return pod_item(object); }

Result<KubeList<KubeService>> parse_kube_service_list(const json& list) {
  return parse_list<KubeService>(list, "ServiceList", service_item);
}
Result<KubeList<KubeEndpointSlice>> parse_kube_endpoint_slice_list(const json& list) {
  return parse_list<KubeEndpointSlice>(list, "EndpointSliceList", slice_item);
}
Result<KubeList<KubeNode>> parse_kube_node_list(const json& list) {
  return parse_list<KubeNode>(list, "NodeList", node_item);
}
Result<KubeList<KubePod>> parse_kube_pod_list(const json& list) {
  return parse_list<KubePod>(list, "PodList", pod_item);
}

Result<KubeList<KubeService>> parse_kube_service_items(const json& items) {
  return parse_item_array<KubeService>(items, "Service", service_item);
}
Result<KubeList<KubeEndpointSlice>> parse_kube_endpoint_slice_items(const json& items) {
  return parse_item_array<KubeEndpointSlice>(items, "EndpointSlice", slice_item);
}
Result<KubeList<KubeNode>> parse_kube_node_items(const json& items) {
  return parse_item_array<KubeNode>(items, "Node", node_item);
}
Result<KubeList<KubePod>> parse_kube_pod_items(const json& items) {
  return parse_item_array<KubePod>(items, "Pod", pod_item);
}

}  // namespace netmon
