// The service map's edge metrics (issue #22): the labels of an edge from this end and the peer,
// the edge kept per open connection until its Close, the cap and its overflow series, and the
// removal of idle edges.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "metrics/edge_counters.h"
#include "metrics/metrics.h"
#include "pod_meta.h"

namespace netmon {
namespace {

constexpr uint64_t kSecond = 1'000'000'000;

ConnectionEvent event(ConnKind kind, uint64_t cookie, uint16_t server_port = 8080) {
  ConnectionEvent e;
  e.kind = kind;
  e.direction = kind == ConnKind::kAccept ? Direction::kInbound : Direction::kOutbound;
  e.owner_known = true;
  e.task.cgroup_id = 7;
  const char comm[] = "curl";
  std::copy(std::begin(comm), std::end(comm) - 1, e.task.comm.begin());
  e.cookie = cookie;
  e.boot_ns = 100 * kSecond;
  if (e.direction == Direction::kOutbound) {
    e.sport = 40000;
    e.dport = server_port;
  } else {
    e.sport = server_port;
    e.dport = 40000;
  }
  return e;
}

ConnectionEvent closed(ConnectionEvent open, uint64_t sent, uint64_t received) {
  ConnectionEvent e = open;
  e.kind = ConnKind::kClose;
  e.close.open_boot_ns = open.boot_ns;
  e.boot_ns = open.boot_ns + 2 * kSecond;  // 2 s long
  e.close.bytes_sent = sent;
  e.close.bytes_received = received;
  e.close.srtt_us = 300;  // 0.3 ms
  e.close.retransmits = 1;
  return e;
}

// The rendered samples of `family` whose labels contain every one of `labels` (each
// `name="value"`).
std::vector<double> samples(const std::string& text, const std::string& family,
                            const std::vector<std::string>& labels) {
  std::vector<double> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with(family + "{") && line.rfind(family + " ", 0) != 0) continue;
    bool all = true;
    for (const std::string& l : labels) all = all && line.find(l) != std::string::npos;
    if (all) out.push_back(std::stod(line.substr(line.rfind(' ') + 1)));
  }
  return out;
}

double value(const std::string& text, const std::string& family,
             const std::vector<std::string>& labels) {
  const auto v = samples(text, family, labels);
  EXPECT_EQ(v.size(), 1u) << family << " with the given labels in:\n" << text;
  return v.empty() ? -1 : v.front();
}

// The full label set of an edge, for an exact match.
std::string edge(const std::string& direction, const std::string& ns, const std::string& workload,
                 const std::string& kind, const std::string& peer_kind,
                 const std::string& peer_ns = "", const std::string& peer_workload = "",
                 const std::string& peer_service = "", const std::string& peer_node = "",
                 const std::string& peer_network = "", const std::string& port = "") {
  return "{direction=\"" + direction + "\",namespace=\"" + ns + "\",workload=\"" + workload +
         "\",workload_kind=\"" + kind + "\",peer_kind=\"" + peer_kind + "\",peer_namespace=\"" +
         peer_ns + "\",peer_workload=\"" + peer_workload + "\",peer_service=\"" + peer_service +
         "\",peer_node=\"" + peer_node + "\",peer_network=\"" + peer_network + "\",port=\"" + port +
         "\"}";
}

class EdgesTest : public ::testing::Test {
 protected:
  explicit EdgesTest(EdgeSettings settings = {}) : metrics_({}, "test", std::move(settings)) {}

  std::string render() const { return metrics_.render(); }

  PodMeta web_ = test::make_pod("shop", "web-7d4b9c-x1", "uid-web", "web", "c-web", "main");
  Attribution web_attr_ = test::attribution_of(web_);
  Metrics metrics_;
  EdgeCounters counters_{metrics_.edges(), 100};
};

Peer service_peer() {
  Peer p;
  p.kind = PeerKind::kService;
  p.namespace_name = "shop";
  p.name = "cart";
  p.uid = "uid-svc";
  p.service_type = "ClusterIP";
  return p;
}

Peer pod_peer(std::string_view workload) {
  Peer p;
  p.kind = PeerKind::kPod;
  p.namespace_name = "shop";
  p.name = "cart-5f6d-abcde";  // never a label
  p.uid = "uid-cart";
  p.workload = workload;
  p.workload_kind = "Deployment";
  return p;
}

TEST_F(EdgesTest, AServiceConnectionThatLandedOnABackendNamesBothAndCountsItsClose) {
  const Peer service = service_peer();
  const Peer backend = pod_peer("cart");
  EdgeEnds ends{&web_attr_, "curl", &service, &backend};
  const ConnectionEvent open = event(ConnKind::kEstablish, 11);
  counters_.count(open, ends, open.boot_ns);
  // The Close finds its edge by cookie, whatever the pipeline knows then.
  counters_.count(closed(open, 1000, 5000), EdgeEnds{}, open.boot_ns + 2 * kSecond);
  EXPECT_EQ(counters_.open_connections(), 0u);

  const std::string text = render();
  const std::string e =
      edge("outbound", "shop", "web", "Deployment", "pod", "shop", "cart", "cart", "", "", "8080");
  EXPECT_EQ(value(text, "netmon_edge_connections_total" + e, {}), 1);
  EXPECT_EQ(value(text, "netmon_edge_bytes_sent_total" + e, {}), 1000);
  EXPECT_EQ(value(text, "netmon_edge_bytes_received_total" + e, {}), 5000);
  EXPECT_EQ(value(text, "netmon_edge_retransmits_total" + e, {}), 1);
  EXPECT_EQ(value(text, "netmon_edge_rtt_seconds_count" + e, {}), 1);
  EXPECT_DOUBLE_EQ(value(text, "netmon_edge_rtt_seconds_sum" + e, {}), 0.0003);
  EXPECT_EQ(value(text, "netmon_edge_rtt_seconds_bucket", {"le=\"0.0001\""}), 0);
  EXPECT_EQ(value(text, "netmon_edge_rtt_seconds_bucket", {"le=\"0.0005\""}), 1);
  EXPECT_EQ(value(text, "netmon_edge_connection_duration_seconds_bucket", {"le=\"1\""}), 0);
  EXPECT_EQ(value(text, "netmon_edge_connection_duration_seconds_bucket", {"le=\"10\""}), 1);
  EXPECT_EQ(value(text, "netmon_edge_connection_duration_seconds_bucket", {"le=\"+Inf\""}), 1);
  EXPECT_DOUBLE_EQ(value(text, "netmon_edge_connection_duration_seconds_sum" + e, {}), 2);
  EXPECT_EQ(value(text, "netmon_edge_series", {}), 1);
  // Never the pod's or the peer's pod name, never an address or a client port.
  EXPECT_EQ(text.find("web-7d4b9c-x1"), std::string::npos);
  EXPECT_EQ(text.find("cart-5f6d-abcde"), std::string::npos);
  EXPECT_EQ(text.find("40000"), std::string::npos);
}

TEST_F(EdgesTest, PeerKindsFillTheirOwnLabel) {
  Peer node;
  node.kind = PeerKind::kNode;
  node.name = "node-2";
  Peer external;
  external.kind = PeerKind::kExternal;
  external.network = "internet";
  Peer host;
  host.kind = PeerKind::kHost;
  const Peer service = service_peer();
  counters_.count(event(ConnKind::kEstablish, 1), {&web_attr_, "", &node, nullptr}, 1);
  counters_.count(event(ConnKind::kEstablish, 2), {&web_attr_, "", &external, nullptr}, 1);
  counters_.count(event(ConnKind::kEstablish, 3), {&web_attr_, "", &host, nullptr}, 1);
  counters_.count(event(ConnKind::kEstablish, 4), {&web_attr_, "", &service, nullptr}, 1);
  counters_.count(event(ConnKind::kEstablish, 5), {&web_attr_, "", nullptr, nullptr}, 1);
  const std::string text = render();
  const std::string family = "netmon_edge_connections_total";
  EXPECT_EQ(value(text,
                  family + edge("outbound", "shop", "web", "Deployment", "node", "", "", "",
                                "node-2", "", "8080"),
                  {}),
            1);
  EXPECT_EQ(value(text,
                  family + edge("outbound", "shop", "web", "Deployment", "external", "", "", "", "",
                                "internet", "8080"),
                  {}),
            1);
  EXPECT_EQ(value(text,
                  family + edge("outbound", "shop", "web", "Deployment", "host", "", "", "", "", "",
                                "8080"),
                  {}),
            1);
  EXPECT_EQ(value(text,
                  family + edge("outbound", "shop", "web", "Deployment", "service", "shop", "",
                                "cart", "", "", "8080"),
                  {}),
            1);
  EXPECT_EQ(value(text,
                  family + edge("outbound", "shop", "web", "Deployment", "unknown", "", "", "", "",
                                "", "8080"),
                  {}),
            1);
  EXPECT_EQ(value(text, "netmon_edge_series", {}), 5);
}

TEST_F(EdgesTest, HostProcessesAreNamedAfterTheirBinaryAndUnknownPodsAreUnknown) {
  const Peer backend = pod_peer("cart");
  counters_.count(event(ConnKind::kEstablish, 1), {nullptr, "wget", &backend, nullptr}, 1);
  counters_.count(event(ConnKind::kEstablish, 2), {nullptr, "", &backend, nullptr}, 1);  // comm
  Attribution unknown;
  unknown.container_id = "c-unknown";
  counters_.count(event(ConnKind::kEstablish, 3), {&unknown, "", &backend, nullptr}, 1);
  const std::string text = render();
  const std::string family = "netmon_edge_connections_total";
  EXPECT_EQ(value(text,
                  family + edge("outbound", "", "wget", "Host", "pod", "shop", "cart", "", "", "",
                                "8080"),
                  {}),
            1);
  EXPECT_EQ(value(text,
                  family + edge("outbound", "", "curl", "Host", "pod", "shop", "cart", "", "", "",
                                "8080"),
                  {}),
            1);
  EXPECT_EQ(
      value(text,
            family + edge("outbound", "", "", "Unknown", "pod", "shop", "cart", "", "", "", "8080"),
            {}),
      1);
}

TEST_F(EdgesTest, ThePortLabelIsTheServerPortOnlyWhenListed) {
  const Peer backend = pod_peer("cart");
  counters_.count(event(ConnKind::kEstablish, 1, 8080), {&web_attr_, "", &backend, nullptr}, 1);
  counters_.count(event(ConnKind::kEstablish, 2, 8081), {&web_attr_, "", &backend, nullptr}, 1);
  counters_.count(event(ConnKind::kAccept, 3, 443), {&web_attr_, "", &backend, nullptr}, 1);
  const std::string text = render();
  const std::string family = "netmon_edge_connections_total";
  EXPECT_EQ(value(text,
                  family + edge("outbound", "shop", "web", "Deployment", "pod", "shop", "cart", "",
                                "", "", "8080"),
                  {}),
            1);
  EXPECT_EQ(value(text,
                  family + edge("outbound", "shop", "web", "Deployment", "pod", "shop", "cart", "",
                                "", "", ""),
                  {}),
            1);
  EXPECT_EQ(value(text,
                  family + edge("inbound", "shop", "web", "Deployment", "pod", "shop", "cart", "",
                                "", "", "443"),
                  {}),
            1);
}

TEST_F(EdgesTest, FailuresAreCountedByErrorOnlyForErrorsThatHappened) {
  const Peer service = service_peer();
  ConnectionEvent refused = event(ConnKind::kFailed, 0);
  refused.error = 111;  // ECONNREFUSED
  counters_.count(refused, {&web_attr_, "", &service, nullptr}, 1);
  counters_.count(refused, {&web_attr_, "", &service, nullptr}, 1);
  ConnectionEvent odd = event(ConnKind::kFailed, 0);
  odd.error = 71;  // EPROTO: other
  counters_.count(odd, {&web_attr_, "", &service, nullptr}, 1);
  const std::string text = render();
  EXPECT_EQ(samples(text, "netmon_edge_connection_failures_total", {}).size(), 2u);
  EXPECT_EQ(value(text, "netmon_edge_connection_failures_total", {"error=\"ECONNREFUSED\""}), 2);
  EXPECT_EQ(value(text, "netmon_edge_connection_failures_total", {"error=\"other\""}), 1);
  EXPECT_EQ(value(text, "netmon_edge_connections_total", {}), 0);
}

class EdgeCapTest : public EdgesTest {
 protected:
  static EdgeSettings capped() {
    EdgeSettings s;
    s.max_edges = 2;
    s.idle_seconds = 10;
    return s;
  }
  EdgeCapTest() : EdgesTest(capped()) {}
};

TEST_F(EdgeCapTest, EdgesPastTheCapGoToTheOverflowSeriesOfTheirDirection) {
  Peer a = pod_peer("a"), b = pod_peer("b"), c = pod_peer("c");
  counters_.count(event(ConnKind::kEstablish, 1), {&web_attr_, "", &a, nullptr}, 1);
  counters_.count(event(ConnKind::kEstablish, 2), {&web_attr_, "", &b, nullptr}, 1);
  const ConnectionEvent third = event(ConnKind::kEstablish, 3);
  counters_.count(third, {&web_attr_, "", &c, nullptr}, 1);
  counters_.count(closed(third, 10, 20), {}, 2);  // found by cookie: the overflow series too
  counters_.count(event(ConnKind::kAccept, 4), {&web_attr_, "", &c, nullptr}, 1);
  counters_.count(event(ConnKind::kEstablish, 5), {&web_attr_, "", &a, nullptr}, 1);  // known
  const std::string text = render();
  EXPECT_EQ(value(text, "netmon_edge_series", {}), 2);
  EXPECT_EQ(value(text, "netmon_edge_series_limit", {}), 2);
  // Its Establish and its Close; the Accept.
  EXPECT_EQ(value(text, "netmon_edge_series_overflow_total", {"direction=\"outbound\""}), 2);
  EXPECT_EQ(value(text, "netmon_edge_series_overflow_total", {"direction=\"inbound\""}), 1);
  const std::string overflow_out =
      edge("outbound", "", "", "Overflow", "overflow", "", "", "", "", "", "");
  EXPECT_EQ(value(text, "netmon_edge_connections_total" + overflow_out, {}), 1);
  EXPECT_EQ(value(text, "netmon_edge_bytes_received_total" + overflow_out, {}), 20);
  EXPECT_EQ(value(text, "netmon_edge_connections_total", {"peer_workload=\"a\""}), 2);
  EXPECT_TRUE(samples(text, "netmon_edge_connections_total", {"peer_workload=\"c\""}).empty());
}

TEST_F(EdgeCapTest, IdleEdgesGoButNotWhileAConnectionIsOpenOnThem) {
  Peer a = pod_peer("a"), b = pod_peer("b"), c = pod_peer("c");
  const ConnectionEvent held = event(ConnKind::kEstablish, 1);
  counters_.count(held, {&web_attr_, "", &a, nullptr}, 1 * kSecond);
  const ConnectionEvent brief = event(ConnKind::kEstablish, 2);
  counters_.count(brief, {&web_attr_, "", &b, nullptr}, 1 * kSecond);
  counters_.count(closed(brief, 1, 1), {}, 2 * kSecond);

  EXPECT_EQ(counters_.remove_idle(11 * kSecond), 0u);  // b used 9 s ago
  EXPECT_EQ(counters_.remove_idle(12 * kSecond), 1u);  // b idle 10 s; a is held open
  std::string text = render();
  EXPECT_EQ(value(text, "netmon_edge_series", {}), 1);
  EXPECT_EQ(value(text, "netmon_edge_series_removed_total", {}), 1);
  EXPECT_TRUE(samples(text, "netmon_edge_connections_total", {"peer_workload=\"b\""}).empty());
  // The room it left takes a new edge instead of the overflow series.
  const ConnectionEvent third = event(ConnKind::kEstablish, 3);
  counters_.count(third, {&web_attr_, "", &c, nullptr}, 13 * kSecond);
  counters_.count(closed(third, 1, 1), {}, 14 * kSecond);
  text = render();
  EXPECT_EQ(value(text, "netmon_edge_connections_total", {"peer_workload=\"c\""}), 1);
  EXPECT_EQ(value(text, "netmon_edge_series_overflow_total", {"direction=\"outbound\""}), 0);
  // a goes once its connection closed and it stayed idle.
  counters_.count(closed(held, 1, 1), {}, 20 * kSecond);
  EXPECT_EQ(counters_.remove_idle(29 * kSecond), 1u);  // c (closed at 14 s), not a (closed at 20 s)
  EXPECT_EQ(counters_.remove_idle(30 * kSecond), 1u);
  EXPECT_EQ(value(render(), "netmon_edge_series", {}), 0);
}

TEST(EdgesOffTest, OnlyTheLimitIsExported) {
  EdgeSettings off;
  off.enabled = false;
  Metrics metrics({}, "test", off);
  const std::string text = metrics.render();
  EXPECT_EQ(value(text, "netmon_edge_series_limit", {}), 1000);
  EXPECT_TRUE(samples(text, "netmon_edge_series", {}).empty());
  EXPECT_EQ(text.find("netmon_edge_connections_total"), std::string::npos);
}

TEST(EdgesHostWorkloadTest, CanBeTurnedOff) {
  EdgeSettings settings;
  settings.host_workload = false;
  Metrics metrics({}, "test", settings);
  EdgeCounters counters(metrics.edges(), 10);
  counters.count(event(ConnKind::kEstablish, 1), {nullptr, "wget", nullptr, nullptr}, 1);
  EXPECT_EQ(value(metrics.render(),
                  "netmon_edge_connections_total" +
                      edge("outbound", "", "", "Host", "unknown", "", "", "", "", "", "8080"),
                  {}),
            1);
}

}  // namespace
}  // namespace netmon
