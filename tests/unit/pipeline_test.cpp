// The pipeline's side of back-pressure, through its OutputFlow: a batch the output queue has no
// room for is held and the reader told to stop, offered again by flush(), dropped and counted
// when the reader sheds; from the stop on, batches wait for room instead. And the peer of each
// connection event (issue #19): looked up in the published snapshot at the connection's open
// time, counted by kind, written and seen by the rules.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "app/output_flow.h"
#include "app/pipeline.h"
#include "k8s/peer_index.h"
#include "k8s/peer_snapshots.h"
#include "output_pipe.h"
#include "records.h"
#include "rules/rules.h"
#include "stalled_output.h"

namespace netmon {
namespace {

using namespace std::chrono_literals;

// The Close of a connection `cookie` (an outbound IPv4 one, owner not in the process table).
std::vector<std::byte> close_record(uint64_t cookie) {
  nm_conn_record r = test::make_record(NM_CONN_CLOSE, NM_AF_INET);
  r.cookie = cookie;
  return test::to_bytes(r);
}

// What every pipeline test stands on: a pipe the writer writes into (read by the test), a
// LineWriter with an output queue of `queue_bytes`, an empty proc root for the process table, an
// OutputFlow over the writer; the pipeline itself is the test's to make.
class PipelineFixture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { signal(SIGPIPE, SIG_IGN); }

  void set_up(size_t queue_bytes, OutputFlow::Settings flow) {
    ASSERT_TRUE(pipe_.ok());
    char dir[] = "/tmp/netmon-pipeline-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    proc_dir_ = dir;
    writer_ = std::make_unique<LineWriter>(pipe_.write_fd(), queue_bytes);
    processes_ = std::make_unique<ProcessTable>(ProcReader(proc_dir_), 1024);
    output_ = std::make_unique<OutputFlow>(*writer_, std::move(flow));
  }

  void TearDown() override {
    pipeline_.reset();
    output_.reset();
    if (pipe_.reading()) (void)finish_reading();
    writer_.reset();
    rmdir(proc_dir_.c_str());
  }

  // Once the pipe is read: stops the writer when it has written everything, closes the pipe and
  // waits for the reader. Whether the writer drained in time.
  bool finish_reading() {
    const bool drained = writer_->finish(5s);
    pipe_.close_and_join();
    return drained;
  }

  test::OutputPipe pipe_;
  std::string proc_dir_;
  std::unique_ptr<LineWriter> writer_;
  std::unique_ptr<ProcessTable> processes_;
  std::unique_ptr<OutputFlow> output_;
  std::unique_ptr<Pipeline> pipeline_;
};

// A pipeline writing into a pipe that nobody reads until read_everything(), through an output
// queue of 64 KiB, with batches of 16 KiB (a line is ~600 bytes here). Before any record, the
// writer thread is stalled (stalled_output.h) on a filled pipe and a filler with no newline, so
// the queue changes only once the test reads, never by the writer thread taking batches late (as
// it did on a loaded machine, where it started writing only after a test had filled the queue).
class PipelineBackpressureTest : public PipelineFixture {
 protected:
  void SetUp() override {
    OutputFlow::Settings flow;
    flow.batch_bytes = 16u << 10;
    flow.stop = &stop_;
    flow.stop_drain = 5000ms;
    set_up(64u << 10, std::move(flow));
    pipeline_ = std::make_unique<Pipeline>(*output_, *processes_, 40);
    stall_writer();
  }

  // Blocks the writer's thread in write(2) until read_everything(); what it writes there
  // counts as no line.
  void stall_writer() { ASSERT_GT(test::stall(*writer_, pipe_.write_fd()), 0u); }

  // Feeds records until the pipeline asks to stop; returns how many it took.
  size_t feed_until_held(size_t limit) {
    size_t n = 0;
    while (n < limit) {
      const auto r = close_record(++cookie_);
      ++n;
      if (!pipeline_->on_record(std::span<const std::byte>(r.data(), r.size()))) break;
    }
    return n;
  }

  void read_everything() { pipe_.read_everything(); }

  std::atomic<bool> stop_{false};
  uint64_t cookie_ = 0;
};

TEST_F(PipelineBackpressureTest, HoldsTheBatchTheQueueRefusesAndStopsTheReader) {
  // The queue (64 KiB) takes about a hundred lines; then a batch is held.
  const size_t fed = feed_until_held(100000);
  ASSERT_LT(fed, 100000u);
  EXPECT_FALSE(output_->reading());
  EXPECT_GE(output_->held_bytes(), 16u << 10);
  output_->flush();  // still no room: still held, nothing dropped
  EXPECT_FALSE(output_->reading());
  EXPECT_EQ(writer_->stats().lines_dropped_queue_full, 0u);

  // The reader resumes: the held batch goes on the next flush, and every line arrives.
  read_everything();
  ASSERT_TRUE(writer_->wait_for_room(output_->held_bytes(), 5s));
  output_->flush();
  EXPECT_TRUE(output_->reading());
  output_->flush();
  ASSERT_TRUE(finish_reading());
  EXPECT_EQ(test::count_lines(pipe_.received()), fed);
  EXPECT_EQ(writer_->stats().lines_dropped_queue_full, 0u);
}

TEST_F(PipelineBackpressureTest, ShedDropsAndCountsUntilTheQueueTakesABatchAgain) {
  const size_t fed = feed_until_held(100000);
  ASSERT_FALSE(output_->reading());
  output_->wait_or_shed(RingFill{});  // the ring buffer's fill unknown: shed at once
  EXPECT_TRUE(output_->reading());
  const uint64_t dropped_first = writer_->stats().lines_dropped_queue_full;
  EXPECT_GT(dropped_first, 0u);

  // Shedding: a full batch that does not fit is dropped at once, never held.
  const size_t more = feed_until_held(200);
  EXPECT_EQ(more, 200u);
  output_->flush();
  EXPECT_TRUE(output_->reading());
  const uint64_t dropped = writer_->stats().lines_dropped_queue_full;
  EXPECT_GT(dropped, dropped_first);

  // The reader resumes: the queue takes a batch, shedding ends, and everything not dropped
  // arrives; dropped + received = fed.
  read_everything();
  ASSERT_TRUE(test::queue_empties(*writer_));
  const size_t after = feed_until_held(40);
  EXPECT_EQ(after, 40u);
  output_->flush();
  EXPECT_TRUE(output_->reading());
  ASSERT_TRUE(finish_reading());
  EXPECT_EQ(writer_->stats().lines_dropped_queue_full, dropped);  // nothing more dropped
  EXPECT_EQ(test::count_lines(pipe_.received()) + dropped, fed + more + after);
}

TEST_F(PipelineBackpressureTest, StoppingWaitsForRoomInsteadOfHolding) {
  const size_t fed = feed_until_held(100000);
  ASSERT_FALSE(output_->reading());
  stop_ = true;
  std::thread late_reader([this] {
    std::this_thread::sleep_for(100ms);
    read_everything();
  });
  output_->flush();  // draining: waits for the reader instead of holding or dropping
  EXPECT_TRUE(output_->reading());
  late_reader.join();
  ASSERT_TRUE(finish_reading());
  EXPECT_EQ(test::count_lines(pipe_.received()), fed);
  EXPECT_EQ(writer_->stats().lines_dropped_queue_full, 0u);
}

// ---- peers -------------------------------------------------------------------------------------

constexpr uint64_t kSecond = 1'000'000'000;
constexpr uint64_t kT0 = 1000 * kSecond;

IpAddress ip(const char* text) {
  std::optional<IpAddress> address = parse_ip_address(text);
  EXPECT_TRUE(address.has_value()) << text;
  return address.value_or(IpAddress{});
}

KubePod kube_pod(const std::string& name, const std::string& uid, const char* address) {
  KubePod p;
  p.namespace_name = "shop";
  p.name = name;
  p.uid = uid;
  p.workload = name + "-workload";
  p.workload_kind = "Deployment";
  p.labels = {{"app", name}};
  p.pod_ips.push_back(ip(address));
  return p;
}

// A connection record of `kind` to `remote`:`port` (the remote end: daddr/dport for every
// kind), at `at`; a Close opened at `opened` (0: unknown).
std::vector<std::byte> connection(uint8_t kind, const char* remote, uint16_t port, uint64_t at,
                                  uint64_t opened = 0, uint64_t cookie = 1) {
  const IpAddress a = ip(remote);
  nm_conn_record r =
      test::make_record(kind, a.family == IpAddress::Family::kV4 ? NM_AF_INET : NM_AF_INET6);
  std::memset(r.daddr, 0, sizeof(r.daddr));
  std::memcpy(r.daddr, a.bytes.data(), a.family == IpAddress::Family::kV4 ? 4 : 16);
  r.dport = port;
  r.hdr.ts_ns = at;
  r.open_ns = opened;
  r.cookie = cookie;
  return test::to_bytes(r);
}

// A pipeline writing into a pipe read as it goes; lines() stops it and parses what it wrote.
class PipelinePeersTest : public PipelineFixture {
 protected:
  void SetUp() override {
    set_up(4u << 20, OutputFlow::Settings{});
    pipe_.read_everything();
  }

  void start(PipelineDeps deps) {
    pipeline_ = std::make_unique<Pipeline>(*output_, *processes_, 40, std::move(deps));
  }
  void start_with_peers(bool labels = false) {
    PipelineDeps deps;
    deps.peers = &snapshots_;
    deps.peer_labels = labels;
    start(std::move(deps));
  }

  void feed(const std::vector<std::byte>& r) {
    ASSERT_TRUE(pipeline_->on_record(std::span<const std::byte>(r.data(), r.size())));
  }

  // Every line written, parsed; the pipeline cannot be fed afterwards.
  std::vector<nlohmann::json> lines() {
    output_->flush();
    EXPECT_TRUE(finish_reading());
    std::vector<nlohmann::json> out;
    const std::string& text = pipe_.received();
    size_t begin = 0;
    for (size_t end; (end = text.find('\n', begin)) != std::string::npos; begin = end + 1) {
      out.push_back(nlohmann::json::parse(text.substr(begin, end - begin)));
    }
    return out;
  }

  static const nlohmann::json& peer(const nlohmann::json& line) {
    return line.at("network_event").at("peer");
  }

  uint64_t lookups(PeerKind kind) const {
    return pipeline_->stats().peer_lookups[static_cast<size_t>(kind)];
  }
  uint64_t total_lookups() const {
    uint64_t n = 0;
    for (uint64_t k : pipeline_->stats().peer_lookups) n += k;
    return n;
  }

  // An index with a service, a pod, a node, this host and two external classes.
  static std::shared_ptr<const PeerIndex> cluster_index(uint64_t now) {
    PeerIndexOptions o;
    o.host_addresses = {ip("192.168.1.1")};
    auto classes = CidrClasses::parse({{"private", {"10.0.0.0/8", "fd00::/8"}}});
    EXPECT_TRUE(classes);
    if (classes) o.external_networks = std::move(*classes);
    ClusterState state(std::move(o));
    KubeService svc;
    svc.namespace_name = "shop";
    svc.name = "web";
    svc.uid = "svc-uid";
    svc.cluster_ips = {ip("10.96.0.10"), ip("fd00:96::10")};
    svc.ports = {{"http", "TCP", 80, 0}};
    state.replace_services({svc}, now);
    KubeNode node;
    node.name = "node-2";
    node.uid = "node-uid";
    node.addresses = {{KubeNodeAddressType::kInternalIP, "192.168.1.2", ip("192.168.1.2")}};
    state.replace_nodes({node}, now);
    state.replace_pods({kube_pod("db", "db-uid", "10.244.1.5")}, now);
    return state.build(now);
  }

  PeerSnapshots snapshots_;
};

TEST_F(PipelinePeersTest, WithoutPeersNoFieldAndNoLookups) {
  start({});
  feed(connection(NM_CONN_ESTABLISH, "10.96.0.10", 80, kT0));
  EXPECT_EQ(total_lookups(), 0u);
  const auto out = lines();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].at("network_event").contains("peer"));
}

TEST_F(PipelinePeersTest, BeforeTheFirstSnapshotNoFieldAndNoLookups) {
  start_with_peers();
  feed(connection(NM_CONN_ESTABLISH, "10.96.0.10", 80, kT0));
  EXPECT_EQ(total_lookups(), 0u);
  snapshots_.publish(cluster_index(kT0));
  feed(connection(NM_CONN_ESTABLISH, "10.96.0.10", 80, kT0 + kSecond));
  EXPECT_EQ(lookups(PeerKind::kService), 1u);
  const auto out = lines();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_FALSE(out[0].at("network_event").contains("peer"));
  EXPECT_EQ(peer(out[1]).at("name"), "web");
}

TEST_F(PipelinePeersTest, EveryKindOfEventNamesItsRemoteEndAndIsCounted) {
  snapshots_.publish(cluster_index(kT0));
  start_with_peers(true);
  const uint64_t t = kT0 + kSecond;
  feed(connection(NM_CONN_ESTABLISH, "10.96.0.10", 80, t, 0, 1));
  feed(connection(NM_CONN_ESTABLISH, "fd00:96::10", 80, t, 0, 2));
  feed(connection(NM_CONN_ACCEPT, "10.244.1.5", 41000, t, 0, 3));  // daddr: the client
  feed(connection(NM_CONN_CLOSE, "192.168.1.2", 22, t + kSecond, t, 4));
  feed(connection(NM_CONN_FAILED, "10.9.9.9", 443, t, 0, 5));
  feed(connection(NM_CONN_FAILED, "8.8.8.8", 53, t, 0, 6));
  feed(connection(NM_CONN_ESTABLISH, "127.0.0.1", 8080, t, 0, 7));
  feed(connection(NM_CONN_ESTABLISH, "192.168.1.1", 10250, t, 0, 8));
  EXPECT_EQ(lookups(PeerKind::kService), 2u);
  EXPECT_EQ(lookups(PeerKind::kPod), 1u);
  EXPECT_EQ(lookups(PeerKind::kNode), 1u);
  EXPECT_EQ(lookups(PeerKind::kExternal), 2u);
  EXPECT_EQ(lookups(PeerKind::kHost), 2u);
  const auto out = lines();
  ASSERT_EQ(out.size(), 8u);
  using nlohmann::json;
  const json service = {{"kind", "service"},
                        {"namespace", "shop"},
                        {"name", "web"},
                        {"port_name", "http"},
                        {"type", "ClusterIP"}};
  EXPECT_EQ(peer(out[0]), service);
  EXPECT_EQ(peer(out[1]), service);
  EXPECT_EQ(peer(out[2]), json({{"kind", "pod"},
                                {"namespace", "shop"},
                                {"name", "db"},
                                {"uid", "db-uid"},
                                {"workload", "db-workload"},
                                {"workload_kind", "Deployment"},
                                {"labels", {{"app", "db"}}}}));
  EXPECT_EQ(peer(out[3]), json({{"kind", "node"}, {"name", "node-2"}}));
  EXPECT_EQ(peer(out[4]), json({{"kind", "external"}, {"network", "private"}}));
  EXPECT_EQ(peer(out[5]), json({{"kind", "external"}, {"network", "internet"}}));
  EXPECT_EQ(peer(out[6]), json({{"kind", "host"}}));
  EXPECT_EQ(peer(out[7]), json({{"kind", "host"}}));
}

// The pipeline holds the snapshot it reads (its Peer views point into it) until a new one is
// published, then lets go of the old one: a snapshot lives as long as a reader needs it.
TEST_F(PipelinePeersTest, HoldsTheSnapshotUntilANewOneIsPublished) {
  std::shared_ptr<const PeerIndex> first = cluster_index(kT0);
  snapshots_.publish(first);
  start_with_peers();
  EXPECT_EQ(first.use_count(), 2);  // here and in snapshots_
  feed(connection(NM_CONN_ESTABLISH, "10.96.0.10", 80, kT0 + kSecond, 0, 1));
  EXPECT_EQ(first.use_count(), 3);  // and the pipeline's
  std::shared_ptr<const PeerIndex> second = cluster_index(kT0 + kSecond);
  snapshots_.publish(second);
  EXPECT_EQ(first.use_count(), 2);  // here and in the pipeline, which has not read since
  feed(connection(NM_CONN_ESTABLISH, "10.96.0.10", 80, kT0 + 2 * kSecond, 0, 2));
  EXPECT_EQ(first.use_count(), 1);
  EXPECT_EQ(second.use_count(), 3);
  feed(connection(NM_CONN_ESTABLISH, "8.8.8.8", 443, kT0 + 3 * kSecond, 0, 3));
  EXPECT_EQ(second.use_count(), 3);
  EXPECT_EQ(lookups(PeerKind::kService), 2u);
  EXPECT_EQ(lookups(PeerKind::kExternal), 1u);
}

// IP reuse, through the pipeline: the old pod is deleted, its IP given to a new one. A Close is
// named by whoever owned the address when the connection opened; a connection opened after the
// old pod went never names it.
TEST_F(PipelinePeersTest, CloseUsesTheOpenTimeAndGoneClaimsNameNothingLater) {
  ClusterState state(PeerIndexOptions{});
  state.replace_pods({kube_pod("old", "u-old", "10.244.1.9")}, kT0);
  const uint64_t opened_old = kT0 + 5 * kSecond;
  const uint64_t t_delete = kT0 + 10 * kSecond;
  state.apply(WatchOp::kDeleted, kube_pod("old", "u-old", "10.244.1.9"), t_delete);
  snapshots_.publish(state.build(t_delete));
  start_with_peers();
  // Between the deletion and the reuse: a connection opened after the deletion is not "old".
  feed(connection(NM_CONN_ESTABLISH, "10.244.1.9", 80, t_delete + kSecond, 0, 1));
  // The new pod takes the address; a new snapshot is published and picked up.
  const uint64_t t_reuse = kT0 + 12 * kSecond;
  state.apply(WatchOp::kAdded, kube_pod("new", "u-new", "10.244.1.9"), t_reuse);
  snapshots_.publish(state.build(t_reuse));
  const uint64_t later = t_reuse + 5 * kSecond;
  feed(connection(NM_CONN_CLOSE, "10.244.1.9", 80, later, opened_old, 2));  // opened before
  feed(connection(NM_CONN_CLOSE, "10.244.1.9", 80, later, t_reuse + kSecond, 3));
  feed(connection(NM_CONN_CLOSE, "10.244.1.9", 80, later, 0, 4));  // open time unknown: now
  feed(connection(NM_CONN_ESTABLISH, "10.244.1.9", 80, later, 0, 5));
  // A Close's own time would name "new": only its open time names "old".
  feed(connection(NM_CONN_FAILED, "10.244.1.9", 80, opened_old, 0, 6));
  const auto out = lines();
  ASSERT_EQ(out.size(), 6u);
  EXPECT_EQ(peer(out[0]), nlohmann::json({{"kind", "external"}, {"network", "internet"}}));
  EXPECT_EQ(peer(out[1]).at("name"), "old");
  EXPECT_EQ(peer(out[1]).at("uid"), "u-old");
  EXPECT_EQ(peer(out[2]).at("name"), "new");
  EXPECT_EQ(peer(out[3]).at("name"), "new");
  EXPECT_EQ(peer(out[4]).at("name"), "new");
  EXPECT_EQ(peer(out[5]).at("name"), "old");
  EXPECT_EQ(lookups(PeerKind::kPod), 5u);
  EXPECT_EQ(lookups(PeerKind::kExternal), 1u);
}

// Filtered events are looked up too (metrics and rules need the peer), and the rules see it.
TEST_F(PipelinePeersTest, RulesSeeThePeerAndFilteredEventsAreLookedUp) {
  snapshots_.publish(cluster_index(kT0));
  RulesSpec spec;
  spec.egress.rules.push_back({"to-shop-pods", "", R"(peer_kind == "pod" AND peer_namespace ==
                               "shop" AND peer_label["app"] == "db")",
                               1});
  spec.egress.rules.push_back({"to-internet", "", R"(peer_network == "internet")", 2});
  auto rules = compile_rules(spec);
  ASSERT_TRUE(rules) << rules.error().message;
  PipelineDeps deps;
  deps.peers = &snapshots_;
  deps.verdicts = Verdicts(&*rules, EventSwitches{}, 1024);
  start(std::move(deps));
  const uint64_t t = kT0 + kSecond;
  feed(connection(NM_CONN_ESTABLISH, "10.244.1.5", 5432, t, 0, 1));  // pod: written
  feed(connection(NM_CONN_ESTABLISH, "10.96.0.10", 80, t, 0, 2));    // service: filtered
  feed(connection(NM_CONN_ESTABLISH, "8.8.8.8", 443, t, 0, 3));      // internet: written
  feed(connection(NM_CONN_FAILED, "10.9.9.9", 443, t, 0, 4));        // private: filtered
  feed(connection(NM_CONN_CLOSE, "10.96.0.10", 80, t, t, 2));        // its open was filtered
  EXPECT_EQ(pipeline_->stats().events_filtered, 3u);
  EXPECT_EQ(total_lookups(), 5u);
  EXPECT_EQ(lookups(PeerKind::kService), 2u);
  const auto out = lines();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].at("rule"), "to-shop-pods");
  EXPECT_EQ(peer(out[0]).at("name"), "db");
  EXPECT_FALSE(peer(out[0]).contains("labels"));  // peer_labels off: rules still see them
  EXPECT_EQ(out[1].at("rule"), "to-internet");
}

}  // namespace
}  // namespace netmon
