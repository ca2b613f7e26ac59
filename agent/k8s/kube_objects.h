// Typed forms of the Kubernetes API objects that name connection peers (issue #19): Service,
// EndpointSlice (discovery.k8s.io/v1), Node, and Pod, reduced to what a peer lookup needs. Plain
// values: the JSON parsers are in k8s/kube_json.h, so no JSON type leaks out of this module.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "events/event.h"
#include "k8s/cidr.h"

namespace netmon {

// Bounds on what one object may hold; an object over a bound is refused (the parser's error
// names the field). Each is at least the API server's own validation limit, so that only a
// broken or hostile server meets them.
inline constexpr size_t kKubeMaxStringBytes = 1024;  // names are <= 253, label values <= 63
inline constexpr size_t kKubeMaxLabels = 256;        //
inline constexpr size_t kKubeMaxPorts = 1024;        // service / slice / container ports
inline constexpr size_t kKubeMaxAddresses = 128;     // IPs of one field; API: <= 100 per endpoint
inline constexpr size_t kKubeMaxEndpoints = 1000;    // per slice, the API's maximum
inline constexpr size_t kKubeMaxContainers = 256;    // containers with declared ports, per pod
inline constexpr size_t kKubeMaxListItems = 1'000'000;  // items of one list response

using KubeLabels = std::vector<std::pair<std::string, std::string>>;  // sorted by key

// A reference to another object (EndpointSlice targetRef, ownerReferences).
struct KubeObjectRef {
  std::string kind;
  std::string namespace_name;
  std::string name;
  std::string uid;
};

enum class KubeServiceType : uint8_t { kClusterIP, kNodePort, kLoadBalancer, kExternalName };
std::string_view to_string(KubeServiceType type);

struct KubeServicePort {
  std::string name;        // may be empty (a service with one port)
  std::string protocol;    // "TCP" (the default), "UDP", "SCTP"
  uint16_t port = 0;       // the service port, 1..65535
  uint16_t node_port = 0;  // 0 = none
};

struct KubeService {
  std::string namespace_name;
  std::string name;
  std::string uid;
  KubeServiceType type = KubeServiceType::kClusterIP;  // spec.type; absent = ClusterIP
  // spec.clusterIPs (dual-stack: one per family), or spec.clusterIP when clusterIPs is absent.
  // Empty for headless services (clusterIP "None"), ExternalName services, and services whose
  // cluster IP is not allocated yet.
  std::vector<IpAddress> cluster_ips;
  bool headless = false;                // clusterIP "None"
  std::vector<IpAddress> external_ips;  // spec.externalIPs
  std::vector<IpAddress> ingress_ips;   // status.loadBalancer.ingress[].ip (hostname-only
                                        // ingress entries carry no IP and are left out)
  std::string external_name;            // spec.externalName (ExternalName services)
  std::vector<KubeServicePort> ports;   // spec.ports
};

enum class KubeAddressType : uint8_t { kIPv4, kIPv6, kFQDN };

// EndpointConditions with the API's rules for absent values applied: ready absent = ready;
// serving absent = the ready value; terminating absent = not terminating.
struct KubeEndpointConditions {
  bool ready = true;
  bool serving = true;
  bool terminating = false;
};

struct KubeEndpoint {
  std::vector<IpAddress> addresses;  // empty for FQDN slices (their addresses are names)
  KubeEndpointConditions conditions;
  std::optional<KubeObjectRef> target;  // targetRef (kind "Pod" for the slice controller's)
  std::string node_name;
};

struct KubeEndpointPort {
  std::string name;
  std::string protocol = "TCP";
  uint16_t port = 0;  // 0: absent, "all ports" per the API
};

struct KubeEndpointSlice {
  std::string namespace_name;
  std::string name;
  std::string uid;
  std::string service_name;  // label kubernetes.io/service-name; empty for a slice of no service
  KubeAddressType address_type = KubeAddressType::kIPv4;
  std::vector<KubeEndpoint> endpoints;
  std::vector<KubeEndpointPort> ports;
};

enum class KubeNodeAddressType : uint8_t {
  kInternalIP,
  kExternalIP,
  kHostname,
  kInternalDNS,
  kExternalDNS,
  kOther
};

struct KubeNodeAddress {
  KubeNodeAddressType type = KubeNodeAddressType::kOther;
  std::string address;          // as given
  std::optional<IpAddress> ip;  // InternalIP / ExternalIP (always set for those two)
};

struct KubeNode {
  std::string name;
  std::string uid;
  std::vector<KubeNodeAddress> addresses;  // status.addresses
  std::vector<Cidr> pod_cidrs;             // spec.podCIDRs, or spec.podCIDR when absent
};

// A port a container declares (spec.containers[].ports[]): for hostNetwork pods the port the pod
// listens on at its node's addresses.
struct KubeContainerPort {
  std::string name;
  std::string protocol = "TCP";
  uint16_t port = 0;  // containerPort
};

struct KubePod {
  std::string namespace_name;
  std::string name;
  std::string uid;
  std::string node_name;  // spec.nodeName
  std::string workload;   // derive_workload (k8s/pods.h)
  std::string workload_kind;
  KubeLabels labels;
  std::vector<IpAddress> pod_ips;        // status.podIPs, or status.podIP when absent
  bool host_network = false;             // spec.hostNetwork
  bool terminal = false;                 // status.phase Succeeded or Failed: its IP is free
  bool terminating = false;              // metadata.deletionTimestamp is set
  std::vector<KubeContainerPort> ports;  // declared container ports (all containers)
};

}  // namespace netmon
