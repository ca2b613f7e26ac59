// The peer index (issue #19): CIDR classes, and every naming rule of k8s/peer_index.h, each on
// hand-built objects over IPv4 and IPv6: services (cluster, external, load-balancer IPs, node
// ports, headless, ExternalName), pods (IP reuse and its grace, terminating endpoints,
// host-network pods), nodes, this host, external classes; and that a lookup does not allocate.
#include "k8s/peer_index.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "k8s/cidr.h"
#include "k8s/kube_objects.h"

// ---- allocation counting ---------------------------------------------------------------------
//
// lookup() must not allocate. rules_test.cpp already replaces the global operator new (with one
// that forwards to malloc) and a program can hold only one replacement, so this file counts one
// level lower: it interposes malloc itself, forwarding to glibc's __libc_malloc (free() stays
// glibc's and releases those blocks as usual). calloc/realloc/aligned allocations are not
// counted; operator new and std containers use malloc. The sanitizer binary does not interpose
// (ASan owns malloc there) and leaves the test out.
#if defined(__SANITIZE_ADDRESS__)
#define NETMON_PEERS_COUNT_MALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NETMON_PEERS_COUNT_MALLOC 0
#endif
#endif
#if !defined(NETMON_PEERS_COUNT_MALLOC) && defined(__GLIBC__)
#define NETMON_PEERS_COUNT_MALLOC 1
#endif
#ifndef NETMON_PEERS_COUNT_MALLOC
#define NETMON_PEERS_COUNT_MALLOC 0
#endif

#if NETMON_PEERS_COUNT_MALLOC
namespace {
thread_local uint64_t g_malloc_calls = 0;
}  // namespace
extern "C" void* __libc_malloc(std::size_t size);
extern "C" void* malloc(std::size_t size) {
  ++g_malloc_calls;
  return __libc_malloc(size);
}
#endif

namespace netmon {
namespace {

constexpr uint64_t kSecond = 1'000'000'000;
constexpr uint64_t kT0 = 1000 * kSecond;  // "now" of the first list

IpAddress ip(const char* text) {
  std::optional<IpAddress> address = parse_ip_address(text);
  EXPECT_TRUE(address.has_value()) << text;
  return address.value_or(IpAddress{});
}

KubeService service(const std::string& ns, const std::string& name,
                    std::vector<const char*> cluster_ips,
                    std::vector<KubeServicePort> ports = {{"http", "TCP", 80, 0}}) {
  KubeService s;
  s.namespace_name = ns;
  s.name = name;
  s.uid = "svc-" + ns + "-" + name;
  for (const char* a : cluster_ips) s.cluster_ips.push_back(ip(a));
  s.ports = std::move(ports);
  return s;
}

KubeNode node(const std::string& name, std::vector<const char*> internal,
              std::vector<const char*> external = {}) {
  KubeNode n;
  n.name = name;
  n.uid = "node-" + name;
  for (const char* a : internal) {
    n.addresses.push_back({KubeNodeAddressType::kInternalIP, a, ip(a)});
  }
  for (const char* a : external) {
    n.addresses.push_back({KubeNodeAddressType::kExternalIP, a, ip(a)});
  }
  n.addresses.push_back({KubeNodeAddressType::kHostname, name, std::nullopt});
  return n;
}

KubePod pod(const std::string& ns, const std::string& name, const std::string& uid,
            std::vector<const char*> ips) {
  KubePod p;
  p.namespace_name = ns;
  p.name = name;
  p.uid = uid;
  p.workload = name + "-workload";
  p.workload_kind = "Deployment";
  p.labels = {{"app", name}, {"tier", "backend"}};
  for (const char* a : ips) p.pod_ips.push_back(ip(a));
  return p;
}

struct EndpointSpec {
  const char* address;
  std::string pod_name;  // empty: no targetRef
  std::string pod_uid;
  bool terminating = false;
};

KubeEndpointSlice slice(const std::string& ns, const std::string& service_name,
                        const std::string& uid, std::vector<EndpointSpec> endpoints,
                        std::vector<KubeEndpointPort> ports = {{"http", "TCP", 8080}}) {
  KubeEndpointSlice s;
  s.namespace_name = ns;
  s.name = service_name + "-" + uid;
  s.uid = uid;
  s.service_name = service_name;
  s.address_type = KubeAddressType::kIPv4;
  for (const EndpointSpec& e : endpoints) {
    KubeEndpoint endpoint;
    endpoint.addresses.push_back(ip(e.address));
    if (endpoint.addresses[0].family == IpAddress::Family::kV6) {
      s.address_type = KubeAddressType::kIPv6;
    }
    if (!e.pod_name.empty()) endpoint.target = KubeObjectRef{"Pod", ns, e.pod_name, e.pod_uid};
    endpoint.conditions.terminating = e.terminating;
    endpoint.conditions.ready = !e.terminating;
    s.endpoints.push_back(std::move(endpoint));
  }
  s.ports = std::move(ports);
  return s;
}

PeerIndexOptions options() {
  PeerIndexOptions o;
  o.host_addresses = {ip("192.168.1.1"), ip("fd00:192:168::1")};
  auto classes = CidrClasses::parse({{"private", {"10.0.0.0/8", "192.168.0.0/16", "fd00::/8"}},
                                     {"metadata", {"169.254.169.254/32"}},
                                     {"link-local", {"169.254.0.0/16", "fe80::/10"}}});
  EXPECT_TRUE(classes) << classes.error().message;
  if (classes) o.external_networks = std::move(*classes);
  return o;
}

// ---- CIDRs -------------------------------------------------------------------------------------

TEST(Cidr, ParseAndContain) {
  auto v4 = Cidr::parse("10.0.0.0/8");
  ASSERT_TRUE(v4) << v4.error().message;
  EXPECT_TRUE(v4->contains(ip("10.255.1.2")));
  EXPECT_FALSE(v4->contains(ip("11.0.0.1")));
  EXPECT_FALSE(v4->contains(ip("::ffff:10.0.0.1")));  // callers pass canonical addresses
  auto odd = Cidr::parse("172.16.0.0/12");
  ASSERT_TRUE(odd);
  EXPECT_TRUE(odd->contains(ip("172.31.255.255")));
  EXPECT_FALSE(odd->contains(ip("172.32.0.0")));
  auto v6 = Cidr::parse("fd00:10:244:1::/64");
  ASSERT_TRUE(v6) << v6.error().message;
  EXPECT_TRUE(v6->contains(ip("fd00:10:244:1::99")));
  EXPECT_FALSE(v6->contains(ip("fd00:10:244:2::99")));
  EXPECT_FALSE(v6->contains(ip("10.0.0.1")));
  auto all = Cidr::parse("0.0.0.0/0");
  ASSERT_TRUE(all);
  EXPECT_TRUE(all->contains(ip("8.8.8.8")));
  auto host = Cidr::parse("169.254.169.254");
  ASSERT_TRUE(host);
  EXPECT_EQ(host->prefix, 32);
  EXPECT_EQ(host->to_string(), "169.254.169.254/32");

  EXPECT_EQ(Cidr::parse("10.0.0.0/33").error().message,
            "prefix length is not a number from 0 to 32");
  EXPECT_EQ(Cidr::parse("10.0.0.0/").error().message, "prefix length is not a number from 0 to 32");
  EXPECT_EQ(Cidr::parse("10.0.0.0/8x").error().message,
            "prefix length is not a number from 0 to 32");
  EXPECT_EQ(Cidr::parse("10.0.0/8").error().message, "not an IP address");
  EXPECT_EQ(Cidr::parse("10.0.0.1/8").error().message,
            "address bits past the /8 prefix are not zero");
  EXPECT_EQ(Cidr::parse("fd00::1/129").error().message,
            "prefix length is not a number from 0 to 128");
}

TEST(CidrClasses, FirstMatchWinsAndErrorsNameTheCidr) {
  auto classes = CidrClasses::parse({{"metadata", {"169.254.169.254/32"}},
                                     {"link-local", {"169.254.0.0/16"}},
                                     {"private", {"10.0.0.0/8", "fd00::/8"}},
                                     {"empty", {}}});
  ASSERT_TRUE(classes) << classes.error().message;
  EXPECT_EQ(classes->class_count(), 4u);
  EXPECT_EQ(classes->classify(ip("169.254.169.254")), "metadata");
  EXPECT_EQ(classes->classify(ip("169.254.1.1")), "link-local");
  EXPECT_EQ(classes->classify(ip("10.1.2.3")), "private");
  EXPECT_EQ(classes->classify(ip("::ffff:10.1.2.3")), "private");  // IPv4-mapped
  EXPECT_EQ(classes->classify(ip("fd12::1")), "private");
  EXPECT_EQ(classes->classify(ip("8.8.8.8")), "");

  // The other order: the wider class first takes the metadata address.
  auto wide_first = CidrClasses::parse(
      {{"link-local", {"169.254.0.0/16"}}, {"metadata", {"169.254.169.254/32"}}});
  ASSERT_TRUE(wide_first);
  EXPECT_EQ(wide_first->classify(ip("169.254.169.254")), "link-local");

  auto bad = CidrClasses::parse({{"private", {"10.0.0.0/8", "192.168.0.0/33"}}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message,
            "external network class 'private': '192.168.0.0/33' is not a CIDR: prefix length is "
            "not a number from 0 to 32");
  auto twice = CidrClasses::parse({{"a", {}}, {"a", {}}});
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().message, "external network class 'a' is given twice");
  EXPECT_FALSE(CidrClasses::parse({{"", {"10.0.0.0/8"}}}));
}

TEST(CidrClasses, IndexedLookupAgreesWithTryingEveryCidrInOrder) {
  // classify() searches one sorted table per prefix length; the reference tries each CIDR of
  // each class in order. Random classes of both families, overlapping, with the same network in
  // several classes, and addresses inside and next to their CIDRs, IPv4-mapped ones included.
  uint64_t state = 0x9e3779b97f4a7c15ULL;
  auto next = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  auto random_address = [&](bool v4) {
    IpAddress a;
    a.family = v4 ? IpAddress::Family::kV4 : IpAddress::Family::kV6;
    for (size_t i = 0; i < (v4 ? 4u : 16u); ++i) a.bytes[i] = static_cast<uint8_t>(next());
    if (v4 && next() % 2) a.bytes[0] = 10;  // crowd them, so that classes overlap
    if (!v4 && next() % 2) a.bytes[0] = 0xfd;
    return a;
  };
  for (int round = 0; round < 50; ++round) {
    std::vector<std::pair<std::string, std::vector<std::string>>> spec;
    std::vector<std::pair<Cidr, size_t>> reference;  // in class order, then the CIDRs' order
    const size_t class_count = 1 + next() % 8;
    for (size_t c = 0; c < class_count; ++c) {
      spec.push_back({"c" + std::to_string(c), {}});
      const size_t count = next() % 12;
      for (size_t i = 0; i < count; ++i) {
        Cidr cidr;
        if (c > 0 && next() % 5 == 0 && !reference.empty()) {
          cidr = reference[next() % reference.size()].first;  // a network of an earlier class
        } else {
          const bool v4 = next() % 2;
          cidr.prefix = static_cast<uint8_t>(next() % ((v4 ? 32 : 128) + 1));
          cidr.network = random_address(v4);
          for (unsigned bit = cidr.prefix; bit < 128; ++bit) {
            cidr.network.bytes[bit / 8] &= static_cast<uint8_t>(~(0x80 >> (bit % 8)));
          }
        }
        spec.back().second.push_back(cidr.to_string());
        reference.emplace_back(cidr, c);
      }
    }
    auto classes = CidrClasses::parse(spec);
    ASSERT_TRUE(classes) << classes.error().message;
    for (int probe = 0; probe < 400; ++probe) {
      IpAddress address;
      if (probe % 2 == 0 && !reference.empty()) {
        // Inside (or, with a flipped bit past the prefix, still inside) a CIDR, or just outside.
        const Cidr& cidr = reference[next() % reference.size()].first;
        address = cidr.network;
        const unsigned bits = cidr.network.family == IpAddress::Family::kV4 ? 32 : 128;
        const unsigned bit = static_cast<unsigned>(next() % bits);
        address.bytes[bit / 8] ^= static_cast<uint8_t>(0x80 >> (bit % 8));
      } else {
        address = random_address(next() % 2);
      }
      std::string_view want;
      for (const auto& [cidr, c] : reference) {
        if (cidr.contains(address)) {
          want = spec[c].first;
          break;
        }
      }
      ASSERT_EQ(classes->classify(address), want) << round << "/" << probe;
      if (address.family == IpAddress::Family::kV4) {
        IpAddress mapped;
        mapped.family = IpAddress::Family::kV6;
        mapped.bytes[10] = mapped.bytes[11] = 0xff;
        std::copy(address.bytes.begin(), address.bytes.begin() + 4, mapped.bytes.begin() + 12);
        ASSERT_EQ(classes->classify(mapped), want) << round << "/" << probe << " mapped";
      }
    }
  }
}

// ---- naming rules ------------------------------------------------------------------------------

TEST(PeerIndex, ServicesByClusterIpDualStackWithPortName) {
  ClusterState state(options());
  KubeService dns =
      service("kube-system", "kube-dns", {"10.96.0.10", "fd00:96::a"},
              {{"dns", "UDP", 53, 0}, {"dns-tcp", "TCP", 53, 0}, {"metrics", "TCP", 9153, 0}});
  state.replace_services({dns}, kT0);
  auto index = state.build(kT0);
  for (const char* address : {"10.96.0.10", "fd00:96::a", "::ffff:10.96.0.10"}) {
    Peer p = index->lookup(ip(address), 53, kT0 + 1);
    EXPECT_EQ(p.kind, PeerKind::kService) << address;
    EXPECT_EQ(p.namespace_name, "kube-system");
    EXPECT_EQ(p.name, "kube-dns");
    EXPECT_EQ(p.uid, "svc-kube-system-kube-dns");
    EXPECT_EQ(p.service_type, "ClusterIP");
    EXPECT_EQ(p.port_name, "dns-tcp") << address;  // TCP only: not the UDP "dns"
  }
  EXPECT_EQ(index->lookup(ip("10.96.0.10"), 9153, kT0).port_name, "metrics");
  Peer other_port = index->lookup(ip("10.96.0.10"), 1234, kT0);
  EXPECT_EQ(other_port.kind, PeerKind::kService);
  EXPECT_EQ(other_port.port_name, "");
  EXPECT_EQ(to_string(other_port.kind), "service");
}

TEST(PeerIndex, ExternalAndLoadBalancerIps) {
  ClusterState state(options());
  KubeService lb = service("shop", "front", {"10.96.5.5"}, {{"https", "TCP", 443, 30443}});
  lb.type = KubeServiceType::kLoadBalancer;
  lb.external_ips = {ip("198.51.100.7")};
  lb.ingress_ips = {ip("203.0.113.10"), ip("2001:db8::10"), ip("192.168.1.20")};
  state.replace_services({lb}, kT0);
  state.replace_nodes({node("node-b", {"192.168.1.20"})}, kT0);
  auto index = state.build(kT0);

  Peer ext = index->lookup(ip("198.51.100.7"), 443, kT0);
  EXPECT_EQ(ext.kind, PeerKind::kService);
  EXPECT_EQ(ext.service_type, "ExternalIP");
  EXPECT_EQ(ext.port_name, "https");
  Peer ingress = index->lookup(ip("2001:db8::10"), 443, kT0);
  EXPECT_EQ(ingress.service_type, "LoadBalancer");
  EXPECT_EQ(ingress.name, "front");
  // No service port: still the service (nothing else has the address), without a port name.
  Peer other = index->lookup(ip("203.0.113.10"), 22, kT0);
  EXPECT_EQ(other.kind, PeerKind::kService);
  EXPECT_EQ(other.service_type, "LoadBalancer");
  EXPECT_EQ(other.port_name, "");
  // An ingress IP that is a node's address (servicelb-style): the port tells them apart.
  EXPECT_EQ(index->lookup(ip("192.168.1.20"), 443, kT0).service_type, "LoadBalancer");
  Peer ssh = index->lookup(ip("192.168.1.20"), 22, kT0);
  EXPECT_EQ(ssh.kind, PeerKind::kNode);
  EXPECT_EQ(ssh.name, "node-b");
}

TEST(PeerIndex, NodesAndNodePorts) {
  ClusterState state(options());
  KubeService np = service("shop", "api", {"10.96.7.7"}, {{"web", "TCP", 80, 30080}});
  np.type = KubeServiceType::kNodePort;
  KubeService cluster_only = service("shop", "internal", {"10.96.7.8"}, {{"x", "TCP", 81, 30081}});
  state.replace_services({np, cluster_only}, kT0);
  state.replace_nodes({node("node-b", {"192.168.1.20", "fd00:192:168::20"}, {"203.0.113.20"})},
                      kT0);
  auto index = state.build(kT0);

  Peer n = index->lookup(ip("192.168.1.20"), 10250, kT0);
  EXPECT_EQ(n.kind, PeerKind::kNode);
  EXPECT_EQ(n.name, "node-b");
  EXPECT_EQ(n.uid, "node-node-b");
  EXPECT_EQ(index->lookup(ip("fd00:192:168::20"), 22, kT0).name, "node-b");
  EXPECT_EQ(index->lookup(ip("203.0.113.20"), 22, kT0).kind, PeerKind::kNode);
  for (const char* address : {"192.168.1.20", "fd00:192:168::20", "203.0.113.20"}) {
    Peer p = index->lookup(ip(address), 30080, kT0);
    EXPECT_EQ(p.kind, PeerKind::kService) << address;
    EXPECT_EQ(p.name, "api");
    EXPECT_EQ(p.service_type, "NodePort");
    EXPECT_EQ(p.port_name, "web");
  }
  // A ClusterIP service's stray nodePort opens nothing.
  EXPECT_EQ(index->lookup(ip("192.168.1.20"), 30081, kT0).kind, PeerKind::kNode);
  // A node port on an address that is no node's: nothing to say.
  EXPECT_EQ(index->lookup(ip("10.20.30.40"), 30080, kT0).kind, PeerKind::kExternal);
}

TEST(PeerIndex, PodsFromEndpointSlicesAndHeadlessServices) {
  ClusterState state(options());
  KubeService headless = service("shop", "db", {});
  headless.headless = true;
  state.replace_services({headless}, kT0);
  state.replace_endpoint_slices(
      {slice("shop", "db", "s1", {{"10.244.1.5", "db-0", "u-db-0"}}),
       slice("shop", "db", "s2", {{"fd00:10:244:1::5", "db-0", "u-db-0"}})},
      kT0);
  auto index = state.build(kT0);
  EXPECT_EQ(index->stats().services, 0u);  // headless: no address, no record
  for (const char* address : {"10.244.1.5", "fd00:10:244:1::5"}) {
    Peer p = index->lookup(ip(address), 5432, kT0);
    EXPECT_EQ(p.kind, PeerKind::kPod) << address;
    EXPECT_EQ(p.namespace_name, "shop");
    EXPECT_EQ(p.name, "db-0");
    EXPECT_EQ(p.uid, "u-db-0");
    EXPECT_EQ(p.workload, "");  // only an EndpointSlice names it
    EXPECT_TRUE(p.labels.empty());
  }
  EXPECT_EQ(index->stats().pods, 1u);

  // With the Pod object (pods watch), the same pod gains workload and labels.
  state.replace_pods({pod("shop", "db-0", "u-db-0", {"10.244.1.5", "fd00:10:244:1::5"})}, kT0);
  index = state.build(kT0);
  Peer p = index->lookup(ip("10.244.1.5"), 5432, kT0);
  EXPECT_EQ(p.workload, "db-0-workload");
  EXPECT_EQ(p.workload_kind, "Deployment");
  ASSERT_EQ(p.labels.size(), 2u);
  EXPECT_EQ(p.labels[0].key, "app");
  EXPECT_EQ(p.labels[0].value, "db-0");
  EXPECT_EQ(p.labels[1].key, "tier");
  EXPECT_EQ(index->stats().pods, 1u);
}

TEST(PeerIndex, EndpointTargetsInAnotherNamespaceAndWithoutTargetRef) {
  ClusterState state(options());
  KubeEndpointSlice s =
      slice("front", "proxy", "s1", {{"10.244.6.1", "api-0", "u-api-0"}, {"10.244.6.2", "", ""}});
  s.endpoints[0].target->namespace_name = "back";        // a hand-made slice may point elsewhere
  s.endpoints[0].addresses.push_back(ip("10.244.6.3"));  // only the first address counts
  state.replace_endpoint_slices({s}, kT0);
  auto index = state.build(kT0);
  Peer p = index->lookup(ip("10.244.6.1"), 80, kT0);
  EXPECT_EQ(p.kind, PeerKind::kPod);
  EXPECT_EQ(p.namespace_name, "back");
  EXPECT_EQ(p.name, "api-0");
  EXPECT_EQ(p.uid, "u-api-0");
  EXPECT_EQ(index->lookup(ip("10.244.6.2"), 80, kT0).kind, PeerKind::kExternal);  // no pod
  EXPECT_EQ(index->lookup(ip("10.244.6.3"), 80, kT0).kind, PeerKind::kExternal);
}

TEST(PeerIndex, ExternalNameServicesNameNothing) {
  ClusterState state(options());
  KubeService ext = service("shop", "ext", {});
  ext.type = KubeServiceType::kExternalName;
  ext.external_name = "db.example.com";
  state.replace_services({ext}, kT0);
  auto index = state.build(kT0);
  EXPECT_EQ(index->stats().services, 0u);
  EXPECT_EQ(index->stats().addresses, 0u);
  Peer p = index->lookup(ip("93.184.216.34"), 80, kT0);
  EXPECT_EQ(p.kind, PeerKind::kExternal);
  EXPECT_EQ(p.network, "internet");
}

TEST(PeerIndex, HostLoopbackAndExternalClasses) {
  ClusterState state(options());
  state.replace_nodes({node("this-node", {"192.168.1.1"})}, kT0);
  auto index = state.build(kT0);
  for (const char* address :
       {"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "192.168.1.1", "fd00:192:168::1"}) {
    Peer p = index->lookup(ip(address), 8080, kT0);
    EXPECT_EQ(p.kind, PeerKind::kHost) << address;
    EXPECT_EQ(to_string(p.kind), "host");
    EXPECT_EQ(p.name, "");
  }
  struct Case {
    const char* address;
    const char* network;
  };
  for (const Case& c : {Case{"10.1.2.3", "private"}, Case{"192.168.9.9", "private"},
                        Case{"fd99::1", "private"}, Case{"169.254.169.254", "metadata"},
                        Case{"169.254.1.1", "link-local"}, Case{"fe80::1", "link-local"},
                        Case{"8.8.8.8", "internet"}, Case{"2001:4860:4860::8888", "internet"}}) {
    Peer p = index->lookup(ip(c.address), 443, kT0);
    EXPECT_EQ(p.kind, PeerKind::kExternal) << c.address;
    EXPECT_EQ(p.network, c.network) << c.address;
  }
  // No classes configured: everything outside is "internet".
  ClusterState bare(PeerIndexOptions{});
  EXPECT_EQ(bare.build(kT0)->lookup(ip("10.1.2.3"), 443, kT0).network, "internet");
  EXPECT_EQ(bare.build(kT0)->lookup(ip("192.168.1.1"), 443, kT0).kind, PeerKind::kExternal);
  // Set later (this node's Node object arrives, the configuration is reloaded).
  bare.set_host_addresses({ip("192.168.1.1")});
  auto classes = CidrClasses::parse({{"lan", {"10.0.0.0/8"}}});
  ASSERT_TRUE(classes);
  bare.set_external_networks(std::move(*classes));
  auto later = bare.build(kT0);
  EXPECT_EQ(later->lookup(ip("192.168.1.1"), 443, kT0).kind, PeerKind::kHost);
  EXPECT_EQ(later->lookup(ip("10.1.2.3"), 443, kT0).network, "lan");
}

TEST(PeerIndex, IpReuseNewerOwnerWinsOlderConnectionsKeepTheOldOwner) {
  PeerIndexOptions o = options();
  o.pod_grace_ns = 30 * kSecond;
  ClusterState state(std::move(o));
  state.replace_pods({pod("shop", "old", "u-old", {"10.244.1.9"})}, kT0);
  const uint64_t opened_old = kT0 + 5 * kSecond;  // a connection to the old pod
  const uint64_t t_delete = kT0 + 10 * kSecond;
  state.apply(WatchOp::kDeleted, pod("shop", "old", "u-old", {"10.244.1.9"}), t_delete);
  // Between deletion and reuse: only connections opened before the deletion keep the name.
  auto between = state.build(t_delete + 1);
  EXPECT_EQ(between->lookup(ip("10.244.1.9"), 80, opened_old).name, "old");
  EXPECT_EQ(between->lookup(ip("10.244.1.9"), 80, t_delete + 1).kind, PeerKind::kExternal);

  const uint64_t t_reuse = kT0 + 12 * kSecond;
  state.apply(WatchOp::kAdded, pod("shop", "new", "u-new", {"10.244.1.9"}), t_reuse);
  auto index = state.build(t_reuse);
  EXPECT_EQ(index->stats().gone_pod_claims, 1u);
  Peer old_conn = index->lookup(ip("10.244.1.9"), 80, opened_old);
  EXPECT_EQ(old_conn.kind, PeerKind::kPod);
  EXPECT_EQ(old_conn.name, "old");
  EXPECT_EQ(old_conn.workload, "old-workload");  // kept with what named it
  EXPECT_EQ(old_conn.labels.size(), 2u);
  EXPECT_EQ(index->lookup(ip("10.244.1.9"), 80, t_reuse + 1).name, "new");
  // Opened after the deletion, before the new pod was seen (watch lag): the new pod.
  EXPECT_EQ(index->lookup(ip("10.244.1.9"), 80, t_delete + kSecond).name, "new");
  // Opened before we knew anything (before the first list): the present owner.
  EXPECT_EQ(index->lookup(ip("10.244.1.9"), 80, kT0 - kSecond).name, "new");

  // After the grace period the old owner is gone for everyone.
  auto later = state.build(t_delete + 30 * kSecond);
  EXPECT_EQ(later->stats().gone_pod_claims, 0u);
  EXPECT_EQ(later->lookup(ip("10.244.1.9"), 80, opened_old).name, "new");
}

TEST(PeerIndex, IpReuseThroughEndpointSlicesAndRelists) {
  ClusterState state(options());
  state.replace_endpoint_slices({slice("shop", "web", "s1", {{"10.244.2.2", "web-a", "u-a"}})},
                                kT0);
  // A re-list (after a 410) in which the slice now shows a new pod at the same IP.
  const uint64_t t_relist = kT0 + 20 * kSecond;
  state.replace_endpoint_slices({slice("shop", "web", "s1", {{"10.244.2.2", "web-b", "u-b"}})},
                                t_relist);
  auto index = state.build(t_relist);
  EXPECT_EQ(index->lookup(ip("10.244.2.2"), 8080, kT0 + kSecond).name, "web-a");
  EXPECT_EQ(index->lookup(ip("10.244.2.2"), 8080, t_relist).name, "web-b");
  // A claim both lists show keeps its age: re-listing the same slice changes nothing.
  state.replace_endpoint_slices({slice("shop", "web", "s1", {{"10.244.2.2", "web-b", "u-b"}})},
                                t_relist + kSecond);
  index = state.build(t_relist + kSecond);
  EXPECT_EQ(index->lookup(ip("10.244.2.2"), 8080, t_relist).name, "web-b");
  EXPECT_EQ(index->stats().gone_pod_claims, 1u);  // only web-a
}

TEST(PeerIndex, ListsInPages) {
  ClusterState state(options());
  state.replace_endpoint_slices({slice("shop", "web", "s1", {{"10.244.2.2", "web-a", "u-a"}}),
                                 slice("shop", "db", "s2", {{"10.244.2.3", "db-0", "u-db"}})},
                                kT0);
  // A paged re-list that fails part-way changes nothing.
  state.add_list_page(
      std::vector<KubeEndpointSlice>{slice("shop", "web", "s1", {{"10.244.2.2", "web-b", "u-b"}})});
  state.abandon_list<KubeEndpointSlice>();
  auto index = state.build(kT0 + kSecond);
  EXPECT_EQ(index->lookup(ip("10.244.2.2"), 80, kT0 + kSecond).name, "web-a");
  EXPECT_EQ(state.endpoint_slice_count(), 2u);

  // A complete one replaces everything at finish_list(): s2 is gone, s1 changed, s3 is new.
  const uint64_t t_list = kT0 + 10 * kSecond;
  state.add_list_page(
      std::vector<KubeEndpointSlice>{slice("shop", "web", "s1", {{"10.244.2.2", "web-b", "u-b"}})});
  EXPECT_EQ(state.build(t_list)->lookup(ip("10.244.2.2"), 80, t_list).name, "web-a");  // aside
  state.add_list_page(std::vector<KubeEndpointSlice>{
      slice("shop", "cache", "s3", {{"10.244.2.4", "cache-0", "u-cache"}})});
  state.finish_list<KubeEndpointSlice>(t_list);
  EXPECT_EQ(state.endpoint_slice_count(), 2u);
  index = state.build(t_list);
  EXPECT_EQ(index->lookup(ip("10.244.2.2"), 80, t_list).name, "web-b");
  EXPECT_EQ(index->lookup(ip("10.244.2.2"), 80, kT0 + kSecond).name, "web-a");  // in grace
  EXPECT_EQ(index->lookup(ip("10.244.2.3"), 80, t_list).kind, PeerKind::kExternal);
  EXPECT_EQ(index->lookup(ip("10.244.2.3"), 80, kT0 + kSecond).name, "db-0");
  EXPECT_EQ(index->lookup(ip("10.244.2.4"), 80, t_list).name, "cache-0");

  // Other resources page the same way.
  state.add_list_page(std::vector<KubeService>{service("shop", "web", {"10.96.0.1"})});
  state.finish_list<KubeService>(t_list);
  state.add_list_page(std::vector<KubeNode>{node("n1", {"192.168.5.1"})});
  state.finish_list<KubeNode>(t_list);
  state.add_list_page(std::vector<KubePod>{pod("shop", "p", "u-p", {"10.244.2.9"})});
  state.finish_list<KubePod>(t_list);
  index = state.build(t_list);
  EXPECT_EQ(index->lookup(ip("10.96.0.1"), 80, t_list).name, "web");
  EXPECT_EQ(index->lookup(ip("192.168.5.1"), 80, t_list).name, "n1");
  EXPECT_EQ(index->lookup(ip("10.244.2.9"), 80, t_list).workload, "p-workload");
  EXPECT_EQ(state.service_count(), 1u);
  EXPECT_EQ(state.node_count(), 1u);
  EXPECT_EQ(state.pod_count(), 1u);
}

TEST(PeerIndex, TerminatingEndpoints) {
  ClusterState state(options());
  // A terminating endpoint still names its pod: the connections it still serves are its.
  state.replace_endpoint_slices(
      {slice("shop", "web", "s1", {{"10.244.3.3", "web-old", "u-old", true}})}, kT0);
  auto index = state.build(kT0);
  Peer p = index->lookup(ip("10.244.3.3"), 8080, kT0 + 1);
  EXPECT_EQ(p.kind, PeerKind::kPod);
  EXPECT_EQ(p.name, "web-old");
  // A stale slice still lists the terminating pod while another slice has a new pod at the
  // same IP: the non-terminating one wins, even when it was seen first.
  state.apply(WatchOp::kAdded, slice("shop", "web", "s0", {{"10.244.3.3", "web-new", "u-new"}}),
              kT0 - kSecond);
  index = state.build(kT0 + kSecond);
  EXPECT_EQ(index->lookup(ip("10.244.3.3"), 8080, kT0 + kSecond).name, "web-new");
}

TEST(PeerIndex, HostNetworkPodsAndThePortRule) {
  ClusterState state(options());
  state.replace_nodes({node("node-b", {"192.168.1.20", "fd00:192:168::20"})}, kT0);
  KubePod proxy = pod("kube-system", "ingress-ctl", "u-ing", {"192.168.1.20", "fd00:192:168::20"});
  proxy.host_network = true;
  proxy.ports = {{"http", "TCP", 80}, {"dns", "UDP", 5353}};
  KubePod exporter = pod("monitoring", "node-exporter", "u-ne", {"192.168.1.20"});
  exporter.host_network = true;
  exporter.ports = {{"metrics", "TCP", 9100}};
  KubePod clash = pod("monitoring", "other-exporter", "u-oe", {"192.168.1.20"});
  clash.host_network = true;
  clash.ports = {{"metrics", "TCP", 9100}};
  state.replace_pods({proxy, exporter}, kT0);
  // A host-network pod seen only through a slice: its endpoint address is the node's.
  state.replace_endpoint_slices(
      {slice("kube-system", "kubelet-probe", "s1", {{"192.168.1.20", "agent-x", "u-ax"}},
             {{"probe", "TCP", 7070}})},
      kT0);
  auto index = state.build(kT0);
  Peer ingress = index->lookup(ip("192.168.1.20"), 80, kT0);
  EXPECT_EQ(ingress.kind, PeerKind::kPod);
  EXPECT_EQ(ingress.name, "ingress-ctl");
  EXPECT_EQ(index->lookup(ip("fd00:192:168::20"), 80, kT0).name, "ingress-ctl");
  EXPECT_EQ(index->lookup(ip("192.168.1.20"), 9100, kT0).name, "node-exporter");
  EXPECT_EQ(index->lookup(ip("192.168.1.20"), 7070, kT0).name, "agent-x");
  EXPECT_EQ(index->lookup(ip("192.168.1.20"), 5353, kT0).kind, PeerKind::kNode);  // UDP port
  Peer ssh = index->lookup(ip("192.168.1.20"), 22, kT0);
  EXPECT_EQ(ssh.kind, PeerKind::kNode);  // no pod declares the port: the node
  EXPECT_EQ(ssh.name, "node-b");

  // Two pods declare the same port on the node: ambiguous, the node.
  state.apply(WatchOp::kAdded, clash, kT0 + 1);
  index = state.build(kT0 + 1);
  EXPECT_EQ(index->lookup(ip("192.168.1.20"), 9100, kT0 + 1).kind, PeerKind::kNode);
  // A deleted host-network pod leaves no "gone" claim on the node's address.
  state.apply(WatchOp::kDeleted, proxy, kT0 + 2);
  index = state.build(kT0 + 2);
  EXPECT_EQ(index->lookup(ip("192.168.1.20"), 80, kT0).kind, PeerKind::kNode);
}

TEST(PeerIndex, LocalPodsTerminalPodsAndWatchUpdates) {
  ClusterState state(options());
  KubePod done = pod("batch", "job-1", "u-job", {"10.244.4.4"});
  done.terminal = true;
  state.replace_local_pods({pod("shop", "cart", "u-cart", {"10.244.4.5"}), done}, kT0);
  auto index = state.build(kT0);
  EXPECT_EQ(index->lookup(ip("10.244.4.5"), 80, kT0).name, "cart");
  EXPECT_EQ(index->lookup(ip("10.244.4.4"), 80, kT0).kind, PeerKind::kExternal);  // released
  EXPECT_EQ(state.pod_count(), 2u);

  // Watch: a service is added, modified (new cluster IP), deleted.
  state.apply(WatchOp::kAdded, service("shop", "cart", {"10.96.9.9"}), kT0);
  EXPECT_EQ(state.build(kT0)->lookup(ip("10.96.9.9"), 80, kT0).name, "cart");
  state.apply(WatchOp::kModified, service("shop", "cart", {"10.96.9.10"}), kT0);
  index = state.build(kT0);
  EXPECT_EQ(index->lookup(ip("10.96.9.9"), 80, kT0).kind, PeerKind::kExternal);
  EXPECT_EQ(index->lookup(ip("10.96.9.10"), 80, kT0).name, "cart");
  EXPECT_EQ(state.service_count(), 1u);
  state.apply(WatchOp::kDeleted, service("shop", "cart", {}), kT0);
  EXPECT_EQ(state.build(kT0)->lookup(ip("10.96.9.10"), 80, kT0).kind, PeerKind::kExternal);
  EXPECT_EQ(state.service_count(), 0u);
  // Deleting what is unknown is ignored; modifying it adds it.
  state.apply(WatchOp::kDeleted, node("ghost", {"192.168.7.7"}), kT0);
  state.apply(WatchOp::kModified, node("late", {"192.168.7.8"}), kT0);
  EXPECT_EQ(state.node_count(), 1u);
  EXPECT_EQ(state.build(kT0)->lookup(ip("192.168.7.8"), 1, kT0).name, "late");
}

TEST(PeerIndex, SnapshotsAreIndependent) {
  auto state = std::make_unique<ClusterState>(options());
  state->replace_services({service("shop", "a", {"10.96.1.1"})}, kT0);
  std::shared_ptr<const PeerIndex> first = state->build(kT0);
  state->replace_services({service("shop", "b", {"10.96.1.1"})}, kT0 + 1);
  std::shared_ptr<const PeerIndex> second = state->build(kT0 + 1);
  EXPECT_EQ(first->lookup(ip("10.96.1.1"), 80, kT0).name, "a");
  EXPECT_EQ(second->lookup(ip("10.96.1.1"), 80, kT0).name, "b");
  EXPECT_GT(first->stats().memory_bytes, 0u);
  // A peer's views live as long as its snapshot, whatever happens to the state.
  Peer kept = first->lookup(ip("10.96.1.1"), 80, kT0);
  state.reset();
  second.reset();
  EXPECT_EQ(kept.name, "a");
  EXPECT_EQ(kept.namespace_name, "shop");
}

#if NETMON_PEERS_COUNT_MALLOC
TEST(PeerIndexAllocation, LookupDoesNotAllocate) {
  ClusterState state(options());
  KubeService lb =
      service("shop", "front", {"10.96.5.5", "fd00:96::5"}, {{"https", "TCP", 443, 30443}});
  lb.type = KubeServiceType::kLoadBalancer;
  lb.ingress_ips = {ip("203.0.113.10")};
  state.replace_services({lb}, kT0);
  state.replace_nodes({node("node-b", {"192.168.1.20"})}, kT0);
  state.replace_endpoint_slices({slice("shop", "front", "s1", {{"10.244.1.5", "f-1", "u-f-1"}})},
                                kT0);
  state.replace_pods({pod("shop", "f-1", "u-f-1", {"10.244.1.5"})}, kT0);
  auto index = state.build(kT0);
  const IpAddress addresses[] = {ip("10.96.5.5"),       ip("fd00:96::5"), ip("203.0.113.10"),
                                 ip("192.168.1.20"),    ip("10.244.1.5"), ip("127.0.0.1"),
                                 ip("169.254.169.254"), ip("8.8.8.8"),    ip("::ffff:10.244.1.5")};
  size_t named = 0;
  const uint64_t before = g_malloc_calls;
  for (int round = 0; round < 100; ++round) {
    for (const IpAddress& address : addresses) {
      for (uint16_t port : {uint16_t{443}, uint16_t{30443}, uint16_t{22}}) {
        Peer p = index->lookup(address, port, kT0 + 1);
        named += !p.name.empty() || !p.network.empty();
      }
    }
  }
  const uint64_t after = g_malloc_calls;
  EXPECT_EQ(after - before, 0u);
  EXPECT_GT(named, 0u);

  // The counter works.
  const uint64_t probe = g_malloc_calls;
  auto* p = new std::string(100, 'x');
  EXPECT_GT(g_malloc_calls, probe);
  delete p;
}
#endif

}  // namespace
}  // namespace netmon
