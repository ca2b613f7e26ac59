// The API server's objects (Service, EndpointSlice, Node, Pod) parsed from its JSON: real list
// responses from ../shared/fixtures/kube_api/ (see SOURCES.md there) and hand-written objects of
// today's wire format for the corners (dual-stack, headless, ExternalName, IPv6, terminating).
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>

#include "k8s/kube_json.h"
#include "k8s/kube_objects.h"
#include "k8s/peer_index.h"
#include "k8s/pods.h"

namespace netmon {
namespace {

using nlohmann::json;

std::optional<json> read_fixture(const std::string& name) {
  std::ifstream in(std::string(NETMON_SHARED_DIR) + "/fixtures/kube_api/" + name, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  return json::parse(out.str());
}

// Skips when the fixture is absent (under CI=true the unit tests' main turns the skip into a
// failure: CI has the fixtures).
#define LOAD_OR_SKIP(doc, file)                 \
  std::optional<json> doc = read_fixture(file); \
  if (!doc) GTEST_SKIP() << "fixture not available: kube_api/" << file

std::string text_of(const IpAddress& ip) {
  char buffer[INET6_ADDRSTRLEN] = {};
  inet_ntop(ip.family == IpAddress::Family::kV4 ? AF_INET : AF_INET6, ip.bytes.data(), buffer,
            sizeof(buffer));
  return buffer;
}

// ---- real list responses -----------------------------------------------------------------------

TEST(KubeObjectsFixtures, ServiceListMinikube117) {
  LOAD_OR_SKIP(doc, "servicelist_minikube_k8s1.17.json");
  auto list = parse_kube_service_list(*doc);
  ASSERT_TRUE(list) << list.error().message;
  EXPECT_EQ(list->resource_version, "60485");
  EXPECT_EQ(list->skipped, 0u);
  ASSERT_EQ(list->items.size(), 1u);
  const KubeService& s = list->items[0];
  EXPECT_EQ(s.namespace_name, "kube-system");
  EXPECT_EQ(s.name, "kube-dns");
  EXPECT_EQ(s.uid, "38a396f1-17fe-46c2-a5f4-3b225c18dcdf");
  EXPECT_EQ(s.type, KubeServiceType::kClusterIP);
  EXPECT_FALSE(s.headless);
  ASSERT_EQ(s.cluster_ips.size(), 1u);  // clusterIP only (1.17 has no clusterIPs)
  EXPECT_EQ(text_of(s.cluster_ips[0]), "10.96.0.10");
  EXPECT_TRUE(s.external_ips.empty());
  EXPECT_TRUE(s.ingress_ips.empty());  // "loadBalancer": {}
  ASSERT_EQ(s.ports.size(), 3u);
  EXPECT_EQ(s.ports[0].name, "dns");
  EXPECT_EQ(s.ports[0].protocol, "UDP");
  EXPECT_EQ(s.ports[0].port, 53);
  EXPECT_EQ(s.ports[1].name, "dns-tcp");
  EXPECT_EQ(s.ports[1].protocol, "TCP");
  EXPECT_EQ(s.ports[2].name, "metrics");
  EXPECT_EQ(s.ports[2].port, 9153);
  EXPECT_EQ(s.ports[2].node_port, 0);
}

TEST(KubeObjectsFixtures, EndpointSliceListKind2020) {
  LOAD_OR_SKIP(doc, "endpointslicelist_kind_2020.json");
  auto list = parse_kube_endpoint_slice_list(*doc);
  ASSERT_TRUE(list) << list.error().message;
  EXPECT_EQ(list->resource_version, "1177");
  EXPECT_EQ(list->skipped, 0u);
  ASSERT_EQ(list->items.size(), 2u);

  const KubeEndpointSlice& api = list->items[0];
  EXPECT_EQ(api.namespace_name, "default");
  EXPECT_EQ(api.name, "kubernetes");
  EXPECT_EQ(api.service_name, "kubernetes");
  EXPECT_EQ(api.address_type, KubeAddressType::kIPv4);
  ASSERT_EQ(api.endpoints.size(), 1u);
  EXPECT_EQ(text_of(api.endpoints[0].addresses.at(0)), "172.18.0.2");
  EXPECT_FALSE(api.endpoints[0].target.has_value());  // the API server: no targetRef
  EXPECT_TRUE(api.endpoints[0].conditions.ready);
  EXPECT_TRUE(api.endpoints[0].conditions.serving);  // absent: as ready
  EXPECT_FALSE(api.endpoints[0].conditions.terminating);
  ASSERT_EQ(api.ports.size(), 1u);
  EXPECT_EQ(api.ports[0].name, "https");
  EXPECT_EQ(api.ports[0].port, 6443);

  const KubeEndpointSlice& dns = list->items[1];
  EXPECT_EQ(dns.namespace_name, "kube-system");
  EXPECT_EQ(dns.name, "kube-dns-22mvb");
  EXPECT_EQ(dns.uid, "7c95c854-f34c-48e1-86f5-bb8269113c11");
  EXPECT_EQ(dns.service_name, "kube-dns");
  ASSERT_EQ(dns.endpoints.size(), 1u);
  const KubeEndpoint& e = dns.endpoints[0];
  EXPECT_EQ(text_of(e.addresses.at(0)), "10.244.0.3");
  ASSERT_TRUE(e.target.has_value());
  EXPECT_EQ(e.target->kind, "Pod");
  EXPECT_EQ(e.target->namespace_name, "kube-system");
  EXPECT_EQ(e.target->name, "coredns-66bff467f8-z8czk");
  EXPECT_EQ(e.target->uid, "36a545ff-dbba-4192-a5f6-1dbb0c21c73d");
  EXPECT_EQ(e.node_name, "");  // this capture has the v1beta1 "topology" instead
  ASSERT_EQ(dns.ports.size(), 2u);
  EXPECT_EQ(dns.ports[1].name, "dns");
  EXPECT_EQ(dns.ports[1].protocol, "UDP");
  EXPECT_EQ(dns.ports[1].port, 53);
}

TEST(KubeObjectsFixtures, NodeListMinikube117) {
  LOAD_OR_SKIP(doc, "nodelist_minikube_k8s1.17.json");
  auto list = parse_kube_node_list(*doc);
  ASSERT_TRUE(list) << list.error().message;
  EXPECT_EQ(list->resource_version, "22627");
  ASSERT_EQ(list->items.size(), 1u);
  const KubeNode& n = list->items[0];
  EXPECT_EQ(n.name, "m01");
  EXPECT_EQ(n.uid, "b48dd901-ead0-476a-b209-d2d908d65109");
  ASSERT_EQ(n.addresses.size(), 2u);
  EXPECT_EQ(n.addresses[0].type, KubeNodeAddressType::kInternalIP);
  ASSERT_TRUE(n.addresses[0].ip.has_value());
  EXPECT_EQ(text_of(*n.addresses[0].ip), "172.17.0.2");
  EXPECT_EQ(n.addresses[1].type, KubeNodeAddressType::kHostname);
  EXPECT_EQ(n.addresses[1].address, "m01");
  EXPECT_FALSE(n.addresses[1].ip.has_value());
  ASSERT_EQ(n.pod_cidrs.size(), 1u);
  EXPECT_EQ(n.pod_cidrs[0].to_string(), "10.244.0.0/24");
}

// The kubelet's /pods is a PodList in the API's format: the Pod parser reads the real 1.35
// capture (terminal job pods keeping their IPs, host-network and static pods) and derives the
// same workloads as the kubelet parser (k8s/pods.h).
TEST(KubeObjectsFixtures, PodListKubelet135AgreesWithTheKubeletParser) {
  std::ifstream in(
      std::string(NETMON_SHARED_DIR) + "/fixtures/kubelet_pods_k8s1.35_minikube_containerd.json",
      std::ios::binary);
  if (!in) GTEST_SKIP() << "fixture not available: kubelet_pods_k8s1.35_minikube_containerd.json";
  std::ostringstream text;
  text << in.rdbuf();
  auto list = parse_kube_pod_list(json::parse(text.str()));
  ASSERT_TRUE(list) << list.error().message;
  EXPECT_EQ(list->skipped, 0u) << list->first_error;
  ASSERT_EQ(list->items.size(), 24u);
  auto kubelet = parse_pod_list(text.str());
  ASSERT_TRUE(kubelet) << kubelet.error().message;
  ASSERT_EQ(kubelet->size(), 24u);
  size_t host_network = 0;
  size_t terminal = 0;
  for (size_t i = 0; i < 24; ++i) {
    const KubePod& pod = list->items[i];
    const PodMeta& meta = (*kubelet)[i];
    EXPECT_EQ(pod.uid, meta.uid);
    EXPECT_EQ(pod.workload, meta.workload) << pod.name;
    EXPECT_EQ(pod.workload_kind, meta.workload_kind) << pod.name;
    EXPECT_EQ(pod.labels, meta.labels) << pod.name;
    EXPECT_EQ(pod.pod_ips.size(), 1u) << pod.name;
    host_network += pod.host_network;
    terminal += pod.terminal;
  }
  EXPECT_EQ(host_network, 8u);
  EXPECT_EQ(terminal, 6u);  // 4 failed job pods, 2 completed cron job pods
  const KubePod* apiserver = nullptr;
  for (const KubePod& pod : list->items) {
    if (pod.name == "kube-apiserver-datagen-1-35") apiserver = &pod;
  }
  ASSERT_NE(apiserver, nullptr);
  EXPECT_TRUE(apiserver->host_network);
  EXPECT_EQ(apiserver->workload_kind, "Node");  // a static pod
  EXPECT_EQ(text_of(apiserver->pod_ips.at(0)), "192.168.67.2");
  ASSERT_EQ(apiserver->ports.size(), 1u);
  EXPECT_EQ(apiserver->ports[0].name, "probe-port");
  EXPECT_EQ(apiserver->ports[0].port, 8443);
}

// The same pods through the peer index, seen from another node: pod IPs name their pods, the
// terminal pods' IPs name nobody, the node's address names a host-network pod by its declared
// port and the node otherwise.
TEST(KubeObjectsFixtures, PodListKubelet135NamesPeers) {
  std::ifstream in(
      std::string(NETMON_SHARED_DIR) + "/fixtures/kubelet_pods_k8s1.35_minikube_containerd.json",
      std::ios::binary);
  if (!in) GTEST_SKIP() << "fixture not available: kubelet_pods_k8s1.35_minikube_containerd.json";
  std::ostringstream text;
  text << in.rdbuf();
  auto list = parse_kube_pod_list(json::parse(text.str()));
  ASSERT_TRUE(list) << list.error().message;
  ClusterState state(PeerIndexOptions{});
  const uint64_t now = 1'000'000'000'000;
  state.replace_local_pods(std::move(list->items), now);
  KubeNode node;
  node.name = "datagen-1-35";
  node.uid = "u-node";
  node.addresses.push_back(
      {KubeNodeAddressType::kInternalIP, "192.168.67.2", parse_ip_address("192.168.67.2")});
  state.replace_nodes({node}, now);
  auto index = state.build(now);
  auto at = [&](const char* address, uint16_t port) {
    return index->lookup(*parse_ip_address(address), port, now);
  };
  Peer hpa = at("10.244.0.6", 80);
  EXPECT_EQ(hpa.kind, PeerKind::kPod);
  EXPECT_EQ(hpa.namespace_name, "scraper");
  EXPECT_EQ(hpa.name, "e2e-hpa-6cd8d99884-tggnr");
  EXPECT_EQ(hpa.workload, "e2e-hpa");
  EXPECT_EQ(hpa.workload_kind, "Deployment");
  EXPECT_EQ(at("10.244.0.12", 80).workload_kind, "StatefulSet");
  EXPECT_EQ(at("10.244.0.11", 80).kind, PeerKind::kExternal);  // a failed job pod's IP
  Peer apiserver = at("192.168.67.2", 8443);
  EXPECT_EQ(apiserver.kind, PeerKind::kPod);
  EXPECT_EQ(apiserver.name, "kube-apiserver-datagen-1-35");
  EXPECT_EQ(at("192.168.67.2", 2381).name, "etcd-datagen-1-35");
  Peer other = at("192.168.67.2", 22);
  EXPECT_EQ(other.kind, PeerKind::kNode);
  EXPECT_EQ(other.name, "datagen-1-35");
}

// ---- today's wire format, by hand --------------------------------------------------------------

TEST(KubeService, DualStackLoadBalancer) {
  const json doc = json::parse(R"({
    "kind": "Service", "apiVersion": "v1",
    "metadata": {"name": "web", "namespace": "shop", "uid": "u-web", "resourceVersion": "9",
                 "managedFields": [{"manager": "kubectl"}]},
    "spec": {"type": "LoadBalancer", "clusterIP": "10.96.1.2",
             "clusterIPs": ["10.96.1.2", "fd00:10:96::1:2"],
             "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack",
             "externalIPs": ["198.51.100.7"], "internalTrafficPolicy": "Cluster",
             "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
                       {"name": "https", "protocol": "TCP", "port": 443, "targetPort": 8443,
                        "nodePort": 30443}]},
    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10", "ipMode": "VIP"},
                                            {"hostname": "lb.example.com"},
                                            {"ip": "2001:db8::10"}]}}})");
  auto s = parse_kube_service(doc);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->type, KubeServiceType::kLoadBalancer);
  EXPECT_EQ(to_string(s->type), "LoadBalancer");
  ASSERT_EQ(s->cluster_ips.size(), 2u);
  EXPECT_EQ(text_of(s->cluster_ips[0]), "10.96.1.2");
  EXPECT_EQ(s->cluster_ips[1].family, IpAddress::Family::kV6);
  EXPECT_EQ(text_of(s->cluster_ips[1]), "fd00:10:96::1:2");
  ASSERT_EQ(s->external_ips.size(), 1u);
  EXPECT_EQ(text_of(s->external_ips[0]), "198.51.100.7");
  ASSERT_EQ(s->ingress_ips.size(), 2u);  // the hostname-only entry has no IP
  EXPECT_EQ(text_of(s->ingress_ips[1]), "2001:db8::10");
  ASSERT_EQ(s->ports.size(), 2u);
  EXPECT_EQ(s->ports[0].protocol, "TCP");  // the default
  EXPECT_EQ(s->ports[0].node_port, 30080);
  EXPECT_EQ(s->ports[1].port, 443);
}

TEST(KubeService, Headless) {
  const json doc = json::parse(R"({
    "metadata": {"name": "db", "namespace": "shop", "uid": "u-db"},
    "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 5432}]}})");
  auto s = parse_kube_service(doc);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_TRUE(s->headless);
  EXPECT_TRUE(s->cluster_ips.empty());
  EXPECT_EQ(s->type, KubeServiceType::kClusterIP);
  EXPECT_EQ(s->ports.at(0).name, "");
}

TEST(KubeService, ExternalNameHasNoAddress) {
  const json doc = json::parse(R"({
    "metadata": {"name": "ext", "namespace": "shop", "uid": "u-ext"},
    "spec": {"type": "ExternalName", "externalName": "db.example.com",
             "externalIPs": ["198.51.100.9"]}})");
  auto s = parse_kube_service(doc);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->type, KubeServiceType::kExternalName);
  EXPECT_EQ(s->external_name, "db.example.com");
  EXPECT_TRUE(s->cluster_ips.empty());
  EXPECT_TRUE(s->external_ips.empty());
  EXPECT_TRUE(s->ports.empty());
}

TEST(KubeService, NullsAndAbsentFieldsReadAsDefaults) {
  const json doc = json::parse(R"({
    "metadata": {"name": "x", "namespace": "n", "uid": "u", "labels": null},
    "spec": {"ports": null, "clusterIPs": null, "clusterIP": "", "externalIPs": null},
    "status": null})");
  auto s = parse_kube_service(doc);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_TRUE(s->cluster_ips.empty());
  EXPECT_FALSE(s->headless);
}

TEST(KubeService, ErrorsNameTheField) {
  struct Case {
    const char* spec;
    const char* error;
  };
  const Case cases[] = {
      {R"({"clusterIPs": ["10.96.0.1", "10.96.0"]})",
       "Service 'shop/web': spec.clusterIPs[1]: '10.96.0' is not an IP address"},
      {R"({"clusterIPs": "10.96.0.1"})",
       "Service 'shop/web': spec.clusterIPs: is string, not an "
       "array"},
      {R"({"ports": [{"port": "80"}]})",
       "Service 'shop/web': spec.ports[0].port: is string, not an integer"},
      {R"({"ports": [{"port": 70000}]})",
       "Service 'shop/web': spec.ports[0].port: 70000 is not a port number (1-65535)"},
      {R"({"ports": [{"name": "x"}]})", "Service 'shop/web': spec.ports[0].port: missing"},
      {R"({"ports": [{"port": 80, "nodePort": -1}]})",
       "Service 'shop/web': spec.ports[0].nodePort: -1 is not a port number (1-65535)"},
      {R"({"type": "Magic"})", "Service 'shop/web': spec.type: 'Magic' is not a service type"},
      {R"({"externalIPs": [1]})",
       "Service 'shop/web': spec.externalIPs[0]: is number, not a string"},
  };
  for (const Case& c : cases) {
    json doc = {{"metadata", {{"name", "web"}, {"namespace", "shop"}, {"uid", "u"}}},
                {"spec", json::parse(c.spec)}};
    auto s = parse_kube_service(doc);
    ASSERT_FALSE(s) << c.spec;
    EXPECT_EQ(s.error().message, c.error) << c.spec;
  }
  auto no_uid = parse_kube_service(json::parse(R"({"metadata": {"name": "a", "namespace": "b"}})"));
  ASSERT_FALSE(no_uid);
  EXPECT_EQ(no_uid.error().message, "Service 'b/a': metadata.uid: missing");
  auto not_object = parse_kube_service(json::array());
  ASSERT_FALSE(not_object);
  EXPECT_EQ(not_object.error().message, "Service: is array, not an object");
}

TEST(KubeService, BoundedCounts) {
  json doc = {{"metadata", {{"name", "web"}, {"namespace", "shop"}, {"uid", "u"}}}};
  json ips = json::array();
  for (size_t i = 0; i <= kKubeMaxAddresses; ++i) ips.push_back("10.0.0.1");
  doc["spec"]["externalIPs"] = ips;
  auto s = parse_kube_service(doc);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().message, "Service 'shop/web': spec.externalIPs: 129 entries, more than 128");

  json long_name = {{"metadata", {{"name", std::string(2000, 'a')}, {"uid", "u"}}}};
  auto l = parse_kube_service(long_name);
  ASSERT_FALSE(l);
  EXPECT_NE(l.error().message.find("metadata.name: 2000 bytes, more than 1024"), std::string::npos)
      << l.error().message;
}

TEST(KubeEndpointSlice, IPv6WithConditionsAndNodeName) {
  const json doc = json::parse(R"({
    "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
    "metadata": {"name": "web-abc12", "namespace": "shop", "uid": "u-slice",
                 "labels": {"kubernetes.io/service-name": "web",
                            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
    "addressType": "IPv6",
    "endpoints": [
      {"addresses": ["fd00:10:244::5"], "conditions": {"ready": true, "serving": true,
       "terminating": false}, "nodeName": "node-a", "zone": "z1",
       "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-1", "uid": "u-web-1"}},
      {"addresses": ["fd00:10:244::6"], "conditions": {"ready": false, "serving": true,
       "terminating": true}, "nodeName": "node-b",
       "targetRef": {"kind": "Pod", "namespace": "shop", "name": "web-2", "uid": "u-web-2"}},
      {"addresses": ["fd00:10:244::7"], "conditions": {"ready": false}},
      {"addresses": ["fd00:10:244::8"]}
    ],
    "ports": [{"name": "http", "protocol": "TCP", "port": 8080, "appProtocol": "http"},
              {"name": "all"}]})");
  auto s = parse_kube_endpoint_slice(doc);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->address_type, KubeAddressType::kIPv6);
  EXPECT_EQ(s->service_name, "web");
  ASSERT_EQ(s->endpoints.size(), 4u);
  EXPECT_EQ(text_of(s->endpoints[0].addresses.at(0)), "fd00:10:244::5");
  EXPECT_EQ(s->endpoints[0].node_name, "node-a");
  const KubeEndpointConditions& terminating = s->endpoints[1].conditions;
  EXPECT_FALSE(terminating.ready);
  EXPECT_TRUE(terminating.serving);
  EXPECT_TRUE(terminating.terminating);
  // serving absent: as ready; terminating absent: not terminating.
  EXPECT_FALSE(s->endpoints[2].conditions.ready);
  EXPECT_FALSE(s->endpoints[2].conditions.serving);
  EXPECT_FALSE(s->endpoints[2].conditions.terminating);
  // conditions absent: ready (and so serving).
  EXPECT_TRUE(s->endpoints[3].conditions.ready);
  EXPECT_TRUE(s->endpoints[3].conditions.serving);
  ASSERT_EQ(s->ports.size(), 2u);
  EXPECT_EQ(s->ports[0].port, 8080);
  EXPECT_EQ(s->ports[1].port, 0);  // absent: all ports
  EXPECT_EQ(s->ports[1].protocol, "TCP");
}

TEST(KubeEndpointSlice, FqdnAndEmptySlices) {
  auto fqdn = parse_kube_endpoint_slice(json::parse(R"({
    "metadata": {"name": "f", "namespace": "n", "uid": "u"}, "addressType": "FQDN",
    "endpoints": [{"addresses": ["db.example.com"]}]})"));
  ASSERT_TRUE(fqdn) << fqdn.error().message;
  EXPECT_EQ(fqdn->address_type, KubeAddressType::kFQDN);
  EXPECT_TRUE(fqdn->endpoints.at(0).addresses.empty());
  // A service with no pods: endpoints null.
  auto empty = parse_kube_endpoint_slice(json::parse(R"({
    "metadata": {"name": "e", "namespace": "n", "uid": "u"}, "addressType": "IPv4",
    "endpoints": null, "ports": null})"));
  ASSERT_TRUE(empty) << empty.error().message;
  EXPECT_TRUE(empty->endpoints.empty());
}

TEST(KubeEndpointSlice, ErrorsNameTheField) {
  auto wrong_family = parse_kube_endpoint_slice(json::parse(R"({
    "metadata": {"name": "s", "namespace": "n", "uid": "u"}, "addressType": "IPv4",
    "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["fd00::1"]}]})"));
  ASSERT_FALSE(wrong_family);
  EXPECT_EQ(wrong_family.error().message,
            "EndpointSlice 'n/s': endpoints[1].addresses[0]: not an address of the slice's "
            "addressType");
  auto bad_ready = parse_kube_endpoint_slice(json::parse(R"({
    "metadata": {"name": "s", "namespace": "n", "uid": "u"}, "addressType": "IPv4",
    "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}}]})"));
  ASSERT_FALSE(bad_ready);
  EXPECT_EQ(bad_ready.error().message,
            "EndpointSlice 'n/s': endpoints[0].conditions.ready: is string, not a boolean");
  auto no_type = parse_kube_endpoint_slice(
      json::parse(R"({"metadata": {"name": "s", "namespace": "n", "uid": "u"}})"));
  ASSERT_FALSE(no_type);
  EXPECT_EQ(no_type.error().message, "EndpointSlice 'n/s': addressType: missing");
  json many = json::parse(R"({"metadata": {"name": "s", "namespace": "n", "uid": "u"},
                              "addressType": "IPv4"})");
  many["endpoints"] = json::array();
  for (size_t i = 0; i <= kKubeMaxEndpoints; ++i) {
    many["endpoints"].push_back({{"addresses", {"10.0.0.1"}}});
  }
  auto too_many = parse_kube_endpoint_slice(many);
  ASSERT_FALSE(too_many);
  EXPECT_EQ(too_many.error().message,
            "EndpointSlice 'n/s': endpoints: 1001 entries, more than 1000");
}

TEST(KubeNode, DualStackAddressesAndPodCidrs) {
  auto n = parse_kube_node(json::parse(R"({
    "metadata": {"name": "node-a", "uid": "u-node-a"},
    "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]},
    "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"},
                             {"type": "InternalIP", "address": "fd00:192:168::10"},
                             {"type": "ExternalIP", "address": "203.0.113.5"},
                             {"type": "Hostname", "address": "node-a"},
                             {"type": "InternalDNS", "address": "node-a.internal"}]}})"));
  ASSERT_TRUE(n) << n.error().message;
  ASSERT_EQ(n->addresses.size(), 5u);
  EXPECT_EQ(n->addresses[1].ip->family, IpAddress::Family::kV6);
  EXPECT_EQ(n->addresses[2].type, KubeNodeAddressType::kExternalIP);
  EXPECT_EQ(n->addresses[4].type, KubeNodeAddressType::kInternalDNS);
  EXPECT_FALSE(n->addresses[4].ip.has_value());
  ASSERT_EQ(n->pod_cidrs.size(), 2u);
  EXPECT_EQ(n->pod_cidrs[1].to_string(), "fd00:10:244:1::/64");

  auto bad = parse_kube_node(json::parse(R"({"metadata": {"name": "b", "uid": "u"},
    "status": {"addresses": [{"type": "InternalIP", "address": "node-b"}]}})"));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message,
            "Node 'b': status.addresses[0].address: 'node-b' is not an IP address");
  auto bad_cidr = parse_kube_node(json::parse(R"({"metadata": {"name": "b", "uid": "u"},
    "spec": {"podCIDRs": ["10.244.1.1/24"]}})"));
  ASSERT_FALSE(bad_cidr);
  EXPECT_EQ(bad_cidr.error().message,
            "Node 'b': spec.podCIDRs[0]: '10.244.1.1/24' is not a CIDR: address bits past the "
            "/24 prefix are not zero");
}

TEST(KubePod, WorkloadIpsAndHostNetwork) {
  auto p = parse_kube_pod(json::parse(R"({
    "metadata": {"name": "web-7d4b9c-x2x9z", "namespace": "shop", "uid": "u-pod",
                 "labels": {"app": "web", "pod-template-hash": "7d4b9c"},
                 "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                      "name": "web-7d4b9c", "uid": "u-rs", "controller": true}]},
    "spec": {"nodeName": "node-a", "containers": [{"name": "c", "ports": [
             {"containerPort": 8080, "name": "http"}, {"containerPort": 53, "protocol": "UDP"}]}]},
    "status": {"phase": "Running", "podIP": "10.244.1.5",
               "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00:10:244:1::5"}]}})"));
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->workload, "web");
  EXPECT_EQ(p->workload_kind, "Deployment");
  EXPECT_EQ(p->node_name, "node-a");
  ASSERT_EQ(p->pod_ips.size(), 2u);
  EXPECT_EQ(text_of(p->pod_ips[1]), "fd00:10:244:1::5");
  EXPECT_FALSE(p->host_network);
  EXPECT_FALSE(p->terminal);
  EXPECT_FALSE(p->terminating);
  ASSERT_EQ(p->labels.size(), 2u);
  EXPECT_EQ(p->labels[0].first, "app");
  ASSERT_EQ(p->ports.size(), 2u);
  EXPECT_EQ(p->ports[0].port, 8080);
  EXPECT_EQ(p->ports[1].protocol, "UDP");

  auto host = parse_kube_pod(json::parse(R"({
    "metadata": {"name": "kube-proxy-abcde", "namespace": "kube-system", "uid": "u-kp",
                 "deletionTimestamp": "2026-12-06T10:00:00Z",
                 "ownerReferences": [{"kind": "DaemonSet", "name": "kube-proxy",
                                      "controller": true}]},
    "spec": {"hostNetwork": true, "nodeName": "node-a"},
    "status": {"phase": "Running", "podIP": "192.168.1.10"}})"));
  ASSERT_TRUE(host) << host.error().message;
  EXPECT_TRUE(host->host_network);
  EXPECT_TRUE(host->terminating);
  EXPECT_EQ(host->workload, "kube-proxy");
  EXPECT_EQ(host->workload_kind, "DaemonSet");
  ASSERT_EQ(host->pod_ips.size(), 1u);  // podIP when podIPs is absent

  auto mirror = parse_kube_pod(json::parse(R"({
    "metadata": {"name": "etcd-node-a", "namespace": "kube-system", "uid": "u-etcd",
                 "annotations": {"kubernetes.io/config.mirror": "abc"}},
    "spec": {"nodeName": "node-a"}, "status": {"phase": "Succeeded"}})"));
  ASSERT_TRUE(mirror) << mirror.error().message;
  EXPECT_EQ(mirror->workload, "node-a");
  EXPECT_EQ(mirror->workload_kind, "Node");
  EXPECT_TRUE(mirror->terminal);

  auto bad = parse_kube_pod(json::parse(R"({"metadata": {"name": "b", "namespace": "n",
    "uid": "u"}, "spec": {"hostNetwork": "true"}})"));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message, "Pod 'n/b': spec.hostNetwork: is string, not a boolean");
}

TEST(KubeList, ItemArraysAsTheListWatcherHandsThem) {
  auto page = parse_kube_service_items(json::parse(R"([
    {"metadata": {"name": "a", "namespace": "n", "uid": "ua"}, "spec": {"clusterIP": "10.96.0.1"}},
    {"metadata": {"name": "b", "namespace": "n"}}])"));
  ASSERT_TRUE(page) << page.error().message;
  EXPECT_EQ(page->items.size(), 1u);
  EXPECT_EQ(page->skipped, 1u);
  EXPECT_EQ(page->resource_version, "");
  EXPECT_TRUE(parse_kube_endpoint_slice_items(json())->items.empty());  // null
  EXPECT_TRUE(parse_kube_node_items(json::array())->items.empty());
  auto not_array = parse_kube_pod_items(json::object());
  ASSERT_FALSE(not_array);
  EXPECT_EQ(not_array.error().message, "Pod items: is object, not an array");
}

TEST(KubeList, BadItemsAreSkippedAndCounted) {
  auto list = parse_kube_node_list(json::parse(R"({
    "kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"},
    "items": [{"metadata": {"name": "a", "uid": "ua"}},
              {"metadata": {"name": "b"}},
              42,
              {"metadata": {"name": "c", "uid": "uc"}}]})"));
  ASSERT_TRUE(list) << list.error().message;
  EXPECT_EQ(list->items.size(), 2u);
  EXPECT_EQ(list->skipped, 2u);
  EXPECT_EQ(list->first_error, "Node 'b': metadata.uid: missing");
  EXPECT_EQ(list->resource_version, "7");

  auto null_items = parse_kube_service_list(json::parse(R"({"metadata": {}, "items": null})"));
  ASSERT_TRUE(null_items) << null_items.error().message;
  EXPECT_TRUE(null_items->items.empty());

  auto not_list = parse_kube_pod_list(json::parse(R"({"items": {}})"));
  ASSERT_FALSE(not_list);
  EXPECT_EQ(not_list.error().message, "PodList: items: is object, not an array");
  auto bad_version = parse_kube_endpoint_slice_list(
      json::parse(R"({"metadata": {"resourceVersion": 5}, "items": []})"));
  ASSERT_FALSE(bad_version);
  EXPECT_EQ(bad_version.error().message,
            "EndpointSliceList: metadata.resourceVersion: is number, not a string");
}

}  // namespace
}  // namespace netmon
