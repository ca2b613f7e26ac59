// The peer watcher (k8s/peer_watch.h): the first index published at start without an API server
// (host addresses, external classes), this node's pods from the kubelet, the builds' debounce,
// the in-cluster API server defaults, and against an in-process plain-HTTP API server (lists,
// a watch event, this node's Node object, a 403 counted by reason, a prompt stop with watches
// open). The peer metrics' rendering is here too. The agent-level scenarios (TLS, 410, token
// rotation, real connections) are tests/integration/test_kube_api.py and test_peers.py.
#include "k8s/peer_watch.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "k8s/cidr.h"
#include "k8s/in_cluster.h"
#include "k8s/pods.h"
#include "metrics/metrics.h"
#include "temp_dir.h"

namespace netmon {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

IpAddress ip(const char* text) {
  auto a = parse_ip_address(text);
  EXPECT_TRUE(a) << text;
  return a.value_or(IpAddress{});
}

KubePod local_pod(const std::string& name, const char* address) {
  KubePod p;
  p.namespace_name = "shop";
  p.name = name;
  p.uid = "u-" + name;
  p.node_name = "node-a";
  p.workload = "web";
  p.workload_kind = "Deployment";
  p.pod_ips.push_back(ip(address));
  return p;
}

// Waits (bounded) until `done` holds.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = 10s) {
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return done();
}

// A fixed boot clock the test moves: builds date what appears by it.
struct TestClock {
  std::atomic<uint64_t> ns{1'000'000'000'000};
  std::function<uint64_t()> fn() {
    return [this] { return ns.load(); };
  }
};

PeerWatchOptions base_options(TestClock& clock, std::vector<const char*> interfaces = {}) {
  PeerWatchOptions o;
  o.node_name = "node-a";
  std::vector<IpAddress> addresses;
  for (const char* a : interfaces) addresses.push_back(ip(a));
  o.interface_addresses = [addresses] { return addresses; };
  o.now_ns = clock.fn();
  auto classes =
      CidrClasses::parse({{"private", {"10.0.0.0/8"}}, {"metadata", {"169.254.0.0/16"}}});
  EXPECT_TRUE(classes);
  o.external_networks = std::move(*classes);
  return o;
}

Peer lookup(const PeerSnapshots& snapshots, const char* address, uint16_t port, uint64_t at) {
  auto index = snapshots.load();
  if (!index) return Peer{PeerKind::kExternal, {}, {}, {}, {}, {}, {}, {}, {}, "no index"};
  return index->lookup(ip(address), port, at);
}

TEST(PeerWatcher, PublishesAFirstIndexAtStartWithoutAnApiServer) {
  TestClock clock;
  PeerSnapshots snapshots;
  auto watcher = PeerWatcher::create(base_options(clock, {"192.168.1.10", "fd00::10"}), snapshots);
  ASSERT_TRUE(watcher) << watcher.error().message;
  EXPECT_EQ(snapshots.version(), 0u);
  (*watcher)->start();
  ASSERT_EQ(snapshots.version(), 1u);  // before start() returned
  const uint64_t t = clock.ns.load();
  EXPECT_EQ(lookup(snapshots, "192.168.1.10", 22, t).kind, PeerKind::kHost);
  EXPECT_EQ(lookup(snapshots, "fd00::10", 22, t).kind, PeerKind::kHost);
  EXPECT_EQ(lookup(snapshots, "127.0.0.1", 22, t).kind, PeerKind::kHost);
  const Peer private_net = lookup(snapshots, "10.1.2.3", 443, t);
  EXPECT_EQ(private_net.kind, PeerKind::kExternal);
  EXPECT_EQ(private_net.network, "private");
  EXPECT_EQ(lookup(snapshots, "169.254.169.254", 80, t).network, "metadata");
  EXPECT_EQ(lookup(snapshots, "8.8.8.8", 53, t).network, "internet");
  const PeerWatchStats stats = (*watcher)->stats();
  EXPECT_FALSE(stats.api_enabled);
  EXPECT_EQ(stats.builds, 1u);
  EXPECT_EQ(stats.host_addresses, 2u);
  for (const PeerResourceStats& r : stats.resources) EXPECT_FALSE(r.watched);
  (*watcher)->stop();
  (*watcher)->stop();  // idempotent
}

TEST(PeerWatcher, TheKubeletsPodsAreNamedAtOnceThenDebounced) {
  TestClock clock;
  PeerSnapshots snapshots;
  PeerWatchOptions o = base_options(clock);
  o.min_build_interval = 400ms;
  auto watcher = PeerWatcher::create(std::move(o), snapshots);
  ASSERT_TRUE(watcher);
  (*watcher)->start();
  ASSERT_EQ(snapshots.version(), 1u);
  const uint64_t t0 = clock.ns.load();
  EXPECT_EQ(lookup(snapshots, "10.244.1.7", 80, t0).kind, PeerKind::kExternal);

  // The kubelet's first pods: built at once (no wait for the debounce interval).
  const auto first = Clock::now();
  (*watcher)->set_local_pods({local_pod("web-1", "10.244.1.7")});
  ASSERT_TRUE(eventually([&] { return snapshots.version() == 2; }));
  EXPECT_LT(Clock::now() - first, 300ms);
  const Peer pod = lookup(snapshots, "10.244.1.7", 80, t0 + 1);
  EXPECT_EQ(pod.kind, PeerKind::kPod);
  EXPECT_EQ(pod.name, "web-1");
  EXPECT_EQ(pod.workload, "web");

  // The same list again builds nothing.
  (*watcher)->set_local_pods({local_pod("web-1", "10.244.1.7")});
  std::this_thread::sleep_for(600ms);
  EXPECT_EQ(snapshots.version(), 2u);

  // A burst of changes: the first may build at once (the last build is older than the
  // interval), the rest wait for the interval and build once together.
  const auto burst = Clock::now();
  for (int i = 0; i < 20; ++i) {
    clock.ns += 1000;
    (*watcher)->set_local_pods({local_pod("web-1", "10.244.1.7"),
                                local_pod("web-" + std::to_string(i + 2), "10.244.1.8")});
  }
  uint64_t named_by = 0;  // the version published when the last pod was first seen named
  ASSERT_TRUE(eventually(
      [&] {
        if (lookup(snapshots, "10.244.1.8", 80, clock.ns.load()).name != "web-21") return false;
        named_by = snapshots.version();  // read after: version 4 means build 4 was published
        return true;
      },
      3s));
  const auto named_after = Clock::now() - burst;
  std::this_thread::sleep_for(600ms);
  const uint64_t builds = (*watcher)->stats().builds;
  EXPECT_GE(builds, 3u);
  EXPECT_LE(builds, 4u);
  EXPECT_EQ(snapshots.version(), builds);
  // The build made at once names the last pod when the watcher's thread took the list after the
  // burst (a slow wake-up); otherwise the next build does, and it waited for the interval.
  if (named_by == 4) {
    EXPECT_GE(named_after, 300ms);
  }
  const Peer last = lookup(snapshots, "10.244.1.8", 80, clock.ns.load());
  EXPECT_EQ(last.kind, PeerKind::kPod);
  EXPECT_EQ(last.name, "web-21");
  EXPECT_EQ((*watcher)->stats().local_pods, 2u);
}

TEST(PeerWatcher, ReadsTheHostsInterfacesAgain) {
  TestClock clock;
  PeerSnapshots snapshots;
  PeerWatchOptions o = base_options(clock);
  auto addresses =
      std::make_shared<std::vector<IpAddress>>(std::vector<IpAddress>{ip("192.168.1.10")});
  auto mutex = std::make_shared<std::mutex>();
  o.interface_addresses = [addresses, mutex] {
    std::lock_guard lock(*mutex);
    return *addresses;
  };
  o.host_address_interval = 50ms;
  o.min_build_interval = 50ms;
  auto watcher = PeerWatcher::create(std::move(o), snapshots);
  ASSERT_TRUE(watcher);
  (*watcher)->start();
  const uint64_t t = clock.ns.load();
  EXPECT_EQ(lookup(snapshots, "192.168.1.10", 22, t).kind, PeerKind::kHost);
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(snapshots.version(), 1u);  // unchanged addresses: no build
  {
    std::lock_guard lock(*mutex);
    *addresses = {ip("192.168.1.99")};
  }
  ASSERT_TRUE(
      eventually([&] { return lookup(snapshots, "192.168.1.99", 22, t).kind == PeerKind::kHost; }));
  EXPECT_EQ(lookup(snapshots, "192.168.1.10", 22, t).kind, PeerKind::kExternal);
}

TEST(HostInterfaceAddresses, IncludesLoopback) {
  const std::vector<IpAddress> addresses = host_interface_addresses();
  bool loopback = false;
  for (const IpAddress& a : addresses) {
    loopback = loopback || (a.family == IpAddress::Family::kV4 && a.bytes[0] == 127);
  }
  EXPECT_TRUE(loopback);
}

// In-cluster API server defaults (k8s/in_cluster.h): the URL from KUBERNETES_SERVICE_HOST/PORT,
// the service account's token and CA; off outside a cluster.
TEST(InClusterKubeApiDefaults, InOrOutOfACluster) {
  test::TempDir dir;
  InClusterEnvironment env;
  env.service_account_dir = dir.path() + "/sa";
  auto off = kube_api_with_in_cluster_defaults(KubeApiOptions{}, env);
  ASSERT_TRUE(off);
  EXPECT_EQ(off->url, "");
  EXPECT_EQ(off->token_file, "");

  env.kubernetes_service_host = "10.96.0.1";
  env.kubernetes_service_port = "443";
  auto no_files = kube_api_with_in_cluster_defaults(KubeApiOptions{}, env);
  ASSERT_TRUE(no_files);
  EXPECT_EQ(no_files->url, "https://10.96.0.1:443");
  EXPECT_EQ(no_files->token_file, env.service_account_dir + "/token");  // named when it fails
  EXPECT_EQ(no_files->ca_file, "");

  const std::string ca = dir.file("sa/ca.crt", "c");
  const std::string token = dir.file("sa/token", "t");
  auto in = kube_api_with_in_cluster_defaults(KubeApiOptions{}, env);
  ASSERT_TRUE(in);
  EXPECT_EQ(in->token_file, token);
  EXPECT_EQ(in->ca_file, ca);

  KubeApiOptions given;
  given.url = "https://api.example:6443";
  given.insecure_skip_verify = true;
  auto configured = kube_api_with_in_cluster_defaults(given, env);
  ASSERT_TRUE(configured);
  EXPECT_EQ(configured->url, "https://api.example:6443");
  EXPECT_EQ(configured->token_file, token);
  EXPECT_EQ(configured->ca_file, "");  // not verified: no CA

  env.kubernetes_service_port = "44x";
  auto bad = kube_api_with_in_cluster_defaults(KubeApiOptions{}, env);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("KUBERNETES_SERVICE_HOST/PORT"), std::string::npos);
  EXPECT_TRUE(kube_api_with_in_cluster_defaults(given, env));  // a configured URL needs no variable
}

// A plain-HTTP API server on 127.0.0.1 (on `port`, 0: any free one): a list of each resource (or
// a canned error status), and watches held open, to which push() sends events pushed after they
// opened. One thread per connection.
class FakeApiServer {
 public:
  explicit FakeApiServer(int port = 0) {
    fd_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const int one = 1;
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        ::listen(fd_.get(), 16) != 0 ||
        ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "cannot listen";
      return;
    }
    port_ = ntohs(addr.sin_port);
    accept_thread_ = std::thread([this] { accept_loop(); });
  }
  ~FakeApiServer() {
    {
      std::lock_guard lock(mutex_);
      closing_ = true;
      for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
    }
    changed_.notify_all();
    ::shutdown(fd_.get(), SHUT_RDWR);
    if (accept_thread_.joinable()) accept_thread_.join();
    for (auto& t : connections_) t.join();
  }
  FakeApiServer(const FakeApiServer&) = delete;
  FakeApiServer& operator=(const FakeApiServer&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }

  // The list at `path` (its items, JSON text), or an error status for it.
  void set_list(const std::string& path, const std::string& items) {
    std::lock_guard lock(mutex_);
    lists_[path] = items;
  }
  void set_status(const std::string& path, int status) {
    std::lock_guard lock(mutex_);
    statuses_[path] = status;
  }
  size_t list_requests(const std::string& path) const {
    std::lock_guard lock(mutex_);
    const auto it = list_requests_.find(path);
    return it == list_requests_.end() ? 0 : it->second;
  }
  // Sends a watch event line to the watches of `path` open now and later.
  void push(const std::string& path, const std::string& line) {
    {
      std::lock_guard lock(mutex_);
      events_[path].push_back(line);
    }
    changed_.notify_all();
  }
  size_t open_watches() const {
    std::lock_guard lock(mutex_);
    return watches_;
  }

 private:
  void accept_loop() {
    for (;;) {
      const int fd = ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      std::lock_guard lock(mutex_);
      if (closing_) {
        ::close(fd);
        return;
      }
      open_.push_back(fd);
      connections_.emplace_back([this, fd] { serve(fd); });
    }
  }

  static bool send_all(int fd, const std::string& data) {
    for (size_t off = 0; off < data.size();) {
      const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }

  static std::string chunk(const std::string& data) {
    char size[32];
    std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
    return size + data + "\r\n";
  }

  void serve(int fd) {
    std::string head;
    char buf[4096];
    while (head.find("\r\n\r\n") == std::string::npos && head.size() < 65536) {
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      head.append(buf, static_cast<size_t>(n));
    }
    const size_t sp1 = head.find(' ');
    const size_t sp2 = head.find(' ', sp1 + 1);
    const std::string target = sp1 == std::string::npos || sp2 == std::string::npos
                                   ? ""
                                   : head.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string path = target.substr(0, target.find('?'));
    const bool watch = target.find("watch=1") != std::string::npos;
    std::unique_lock lock(mutex_);
    const auto status = statuses_.find(path);
    if (status != statuses_.end()) {
      const std::string body = R"({"kind":"Status","apiVersion":"v1","status":"Failure",)"
                               R"("reason":"Forbidden","code":)" +
                               std::to_string(status->second) + "}";
      const std::string reply = "HTTP/1.1 " + std::to_string(status->second) +
                                " Forbidden\r\nContent-Type: application/json\r\nContent-Length: " +
                                std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
                                body;
      lock.unlock();
      send_all(fd, reply);
    } else if (!watch) {
      ++list_requests_[path];
      const std::string body =
          R"({"kind":"List","apiVersion":"v1","metadata":{"resourceVersion":"10"},"items":)" +
          (lists_.count(path) ? lists_[path] : std::string("[]")) + "}";
      lock.unlock();
      send_all(fd, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
    } else {
      // Only what is pushed from now on: counted in the same step as the watch, so that an
      // event pushed once open_watches() shows it is sent (not taken for an older one while
      // the headers go out).
      size_t sent = events_[path].size();
      ++watches_;
      lock.unlock();
      bool ok = send_all(fd,
                         "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
      lock.lock();
      while (ok && !closing_) {
        auto& events = events_[path];
        if (sent < events.size()) {
          const std::string line = events[sent++] + "\n";
          lock.unlock();
          ok = send_all(fd, chunk(line));
          lock.lock();
          continue;
        }
        changed_.wait_for(lock, 50ms);
        // A client that went away: recv sees the end.
        char probe;
        if (::recv(fd, &probe, 1, MSG_DONTWAIT | MSG_PEEK) == 0) break;
      }
      --watches_;
      lock.unlock();
    }
    std::lock_guard guard(mutex_);
    std::erase(open_, fd);
    ::close(fd);
  }

  UniqueFd fd_;
  int port_ = 0;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool closing_ = false;
  std::map<std::string, std::string> lists_;
  std::map<std::string, int> statuses_;
  std::map<std::string, std::vector<std::string>> events_;
  std::map<std::string, size_t> list_requests_;
  std::vector<int> open_;
  size_t watches_ = 0;
  std::vector<std::thread> connections_;
  std::thread accept_thread_;
};

constexpr const char* kServices =
    R"([{"metadata":{"name":"web","namespace":"shop","uid":"u-svc-web","resourceVersion":"5"},)"
    R"("spec":{"type":"ClusterIP","clusterIP":"10.96.0.10","clusterIPs":["10.96.0.10"],)"
    R"("ports":[{"name":"http","port":80,"protocol":"TCP","targetPort":8080}]}}])";
constexpr const char* kSlices =
    R"([{"metadata":{"name":"web-abc","namespace":"shop","uid":"u-es-web",)"
    R"("labels":{"kubernetes.io/service-name":"web"}},"addressType":"IPv4",)"
    R"("endpoints":[{"addresses":["10.244.2.5"],"conditions":{"ready":true},"nodeName":"node-b",)"
    R"("targetRef":{"kind":"Pod","namespace":"shop","name":"web-7d4b9c-x1","uid":"u-pod-x1"}}],)"
    R"("ports":[{"name":"http","port":8080,"protocol":"TCP"}]}])";
constexpr const char* kNodes =
    R"([{"metadata":{"name":"node-a","uid":"u-node-a"},"status":{"addresses":[)"
    R"({"type":"InternalIP","address":"192.168.1.10"},{"type":"Hostname","address":"node-a"}]}},)"
    R"({"metadata":{"name":"node-b","uid":"u-node-b"},"status":{"addresses":[)"
    R"({"type":"InternalIP","address":"192.168.1.11"}]}}])";

PeerWatchOptions api_options(TestClock& clock, const FakeApiServer& server) {
  PeerWatchOptions o = base_options(clock);  // no interface address: this node's from its Node
  KubeApiOptions api;
  api.url = server.url();
  api.connect_timeout = 2s;
  api.read_timeout = 5s;
  o.api = api;
  o.min_build_interval = 100ms;
  o.list_watch.backoff.min = 50ms;
  o.list_watch.backoff.max = 200ms;
  o.list_watch.min_watch_duration = 0ms;
  return o;
}

size_t index_of(PeerResource r) { return static_cast<size_t>(r); }

TEST(PeerWatcherApi, ListsWatchesAndStopsPromptly) {
  FakeApiServer server;
  server.set_list("/api/v1/services", kServices);
  server.set_list("/apis/discovery.k8s.io/v1/endpointslices", kSlices);
  server.set_list("/api/v1/nodes", kNodes);
  TestClock clock;
  PeerSnapshots snapshots;
  auto watcher = PeerWatcher::create(api_options(clock, server), snapshots);
  ASSERT_TRUE(watcher) << watcher.error().message;
  (*watcher)->start();
  ASSERT_TRUE(eventually([&] {
    const PeerWatchStats s = (*watcher)->stats();
    return s.resources[index_of(PeerResource::kServices)].synced &&
           s.resources[index_of(PeerResource::kEndpointSlices)].synced &&
           s.resources[index_of(PeerResource::kNodes)].synced;
  }));
  // Each first sync builds at once; the last one's index is out soon after.
  const uint64_t t = clock.ns.load() + 1;
  ASSERT_TRUE(eventually(
      [&] { return lookup(snapshots, "192.168.1.11", 22, t).kind == PeerKind::kNode; }, 2s));
  const Peer service = lookup(snapshots, "10.96.0.10", 80, t);
  EXPECT_EQ(service.kind, PeerKind::kService);
  EXPECT_EQ(service.namespace_name, "shop");
  EXPECT_EQ(service.name, "web");
  EXPECT_EQ(service.port_name, "http");
  const Peer endpoint = lookup(snapshots, "10.244.2.5", 8080, t);
  EXPECT_EQ(endpoint.kind, PeerKind::kPod);
  EXPECT_EQ(endpoint.name, "web-7d4b9c-x1");
  EXPECT_EQ(lookup(snapshots, "192.168.1.10", 22, t).kind, PeerKind::kHost);  // its Node object
  const PeerWatchStats s = (*watcher)->stats();
  EXPECT_TRUE(s.api_enabled);
  EXPECT_FALSE(s.resources[index_of(PeerResource::kPods)].watched);
  EXPECT_EQ(s.resources[index_of(PeerResource::kNodes)].objects, 2u);
  EXPECT_EQ(s.index.services, 1u);

  // A watch event: a new service, published within the debounce interval.
  ASSERT_TRUE(eventually([&] { return server.open_watches() == 3; }));
  clock.ns += 1'000'000;
  server.push("/api/v1/services",
              R"({"type":"ADDED","object":{"metadata":{"name":"api","namespace":"shop",)"
              R"("uid":"u-svc-api","resourceVersion":"11"},"spec":{"clusterIP":"10.96.0.20",)"
              R"("ports":[{"name":"grpc","port":9090}]}}})");
  ASSERT_TRUE(eventually(
      [&] { return lookup(snapshots, "10.96.0.20", 9090, clock.ns.load()).name == "api"; }, 3s));
  // An object that does not parse costs only itself.
  server.push("/api/v1/services",
              R"({"type":"ADDED","object":{"metadata":{"name":"bad","namespace":"shop",)"
              R"("uid":"u-bad","resourceVersion":"12"},"spec":{"clusterIP":"10.96.0"}}})");
  ASSERT_TRUE(eventually([&] {
    return (*watcher)->stats().resources[index_of(PeerResource::kServices)].skipped == 1;
  }));
  EXPECT_EQ(lookup(snapshots, "10.96.0.20", 9090, clock.ns.load()).name, "api");

  // Three watches open and blocked in a read: stop() aborts them.
  const auto before = Clock::now();
  (*watcher)->stop();
  EXPECT_LT(Clock::now() - before, 1500ms);
  const uint64_t version = snapshots.version();
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(snapshots.version(), version);  // nothing builds after the stop
}

TEST(PeerWatcherApi, WatchesOnlyTheResourcesSwitchedOn) {
  FakeApiServer server;
  server.set_list("/api/v1/services", kServices);
  server.set_list("/apis/discovery.k8s.io/v1/endpointslices", kSlices);
  server.set_list("/api/v1/nodes", kNodes);
  TestClock clock;
  PeerSnapshots snapshots;
  PeerWatchOptions o = api_options(clock, server);
  o.watch_nodes = false;  // a large cluster: no nodes watch
  auto watcher = PeerWatcher::create(o, snapshots);
  ASSERT_TRUE(watcher) << watcher.error().message;
  (*watcher)->start();
  ASSERT_TRUE(eventually([&] {
    const PeerWatchStats s = (*watcher)->stats();
    return s.resources[index_of(PeerResource::kServices)].synced &&
           s.resources[index_of(PeerResource::kEndpointSlices)].synced;
  }));
  ASSERT_TRUE(eventually([&] { return server.open_watches() == 2; }));
  const uint64_t t = clock.ns.load() + 1;
  ASSERT_TRUE(eventually(
      [&] { return lookup(snapshots, "10.96.0.10", 80, t).kind == PeerKind::kService; }, 2s));
  // No Node object: its address is nobody's.
  EXPECT_EQ(lookup(snapshots, "192.168.1.11", 22, t).kind, PeerKind::kExternal);
  EXPECT_EQ(server.list_requests("/api/v1/nodes"), 0u);
  const PeerWatchStats s = (*watcher)->stats();
  EXPECT_FALSE(s.resources[index_of(PeerResource::kNodes)].watched);
  EXPECT_TRUE(s.resources[index_of(PeerResource::kServices)].watched);
  EXPECT_TRUE(s.resources[index_of(PeerResource::kEndpointSlices)].watched);
  (*watcher)->stop();

  // Services off, nodes on: only the nodes are asked for.
  FakeApiServer nodes_only;
  nodes_only.set_list("/api/v1/nodes", kNodes);
  PeerSnapshots snapshots2;
  PeerWatchOptions o2 = api_options(clock, nodes_only);
  o2.watch_services = false;
  auto watcher2 = PeerWatcher::create(o2, snapshots2);
  ASSERT_TRUE(watcher2) << watcher2.error().message;
  (*watcher2)->start();
  ASSERT_TRUE(eventually(
      [&] { return (*watcher2)->stats().resources[index_of(PeerResource::kNodes)].synced; }));
  EXPECT_EQ(nodes_only.list_requests("/api/v1/services"), 0u);
  EXPECT_EQ(nodes_only.list_requests("/apis/discovery.k8s.io/v1/endpointslices"), 0u);
  (*watcher2)->stop();
}

TEST(PeerWatcherApi, AForbiddenResourceIsCountedAndTheOthersStillName) {
  FakeApiServer server;
  server.set_list("/api/v1/services", kServices);
  server.set_status("/apis/discovery.k8s.io/v1/endpointslices", 403);
  server.set_list("/api/v1/nodes", kNodes);
  server.set_list("/api/v1/pods",
                  R"([{"metadata":{"name":"solo","namespace":"jobs","uid":"u-solo"},)"
                  R"("spec":{"nodeName":"node-b"},"status":{"phase":"Running",)"
                  R"("podIP":"10.244.2.9","podIPs":[{"ip":"10.244.2.9"}]}}])");
  TestClock clock;
  PeerSnapshots snapshots;
  PeerWatchOptions o = api_options(clock, server);
  o.watch_pods = true;
  auto watcher = PeerWatcher::create(std::move(o), snapshots);
  ASSERT_TRUE(watcher);
  (*watcher)->start();
  const size_t slices = index_of(PeerResource::kEndpointSlices);
  ASSERT_TRUE(eventually([&] {
    const PeerWatchStats s = (*watcher)->stats();
    return s.resources[slices].errors[static_cast<size_t>(KubeApiError::kForbidden)] >= 2 &&
           s.resources[index_of(PeerResource::kPods)].synced &&
           s.resources[index_of(PeerResource::kServices)].synced;
  }));
  const PeerWatchStats s = (*watcher)->stats();
  EXPECT_FALSE(s.resources[slices].synced);
  EXPECT_TRUE(s.resources[index_of(PeerResource::kPods)].watched);
  const uint64_t t = clock.ns.load() + 1;
  ASSERT_TRUE(eventually(
      [&] { return lookup(snapshots, "10.244.2.9", 80, t).kind == PeerKind::kPod; }, 2s));
  EXPECT_EQ(lookup(snapshots, "10.244.2.9", 80, t).name, "solo");
  EXPECT_EQ(lookup(snapshots, "10.96.0.10", 80, t).kind, PeerKind::kService);

  // The metrics: API server series for the watched resources only.
  HealthSnapshot h;
  h.peers_enabled = true;
  h.peer_lookups[static_cast<size_t>(PeerKind::kPod)] = 7;
  h.peer_watch = (*watcher)->stats();
  Metrics metrics({}, "test");
  metrics.publish_health(h);
  const std::string text = metrics.render();
  EXPECT_NE(text.find("netmon_peer_lookups_total{result=\"pod\"} 7"), std::string::npos) << text;
  EXPECT_NE(text.find("netmon_peer_lookups_total{result=\"external\"} 0"), std::string::npos);
  EXPECT_NE(text.find("netmon_kube_api_synced{resource=\"services\"} 1"), std::string::npos);
  EXPECT_NE(text.find("netmon_kube_api_synced{resource=\"endpointslices\"} 0"), std::string::npos);
  EXPECT_NE(text.find("netmon_kube_api_synced{resource=\"pods\"} 1"), std::string::npos);
  EXPECT_NE(text.find("netmon_kube_api_watch_errors_total{resource=\"endpointslices\",reason="
                      "\"forbidden\"}"),
            std::string::npos);
  EXPECT_NE(text.find("netmon_peer_index_objects{kind=\"services\"} 1"), std::string::npos);
  EXPECT_EQ(text.find("reason=\"cancelled\""), std::string::npos);
  (*watcher)->stop();
}

// The API server down at start (nothing listens on its port): the first index is out at once,
// the failures are counted as unreachable, and the names come once it answers.
TEST(PeerWatcherApi, AnApiServerDownAtStartIsRetriedUntilItAnswers) {
  int port = 0;
  std::string url;
  {
    FakeApiServer probe;  // a free port, closed again
    port = probe.port();
    url = probe.url();
  }
  TestClock clock;
  PeerSnapshots snapshots;
  PeerWatchOptions o = base_options(clock, {"192.168.1.10"});
  KubeApiOptions api;
  api.url = url;
  api.connect_timeout = 1s;
  o.api = api;
  o.min_build_interval = 100ms;
  o.list_watch.backoff.min = 50ms;
  o.list_watch.backoff.max = 200ms;
  auto watcher = PeerWatcher::create(std::move(o), snapshots);
  ASSERT_TRUE(watcher);
  (*watcher)->start();
  ASSERT_EQ(snapshots.version(), 1u);
  const uint64_t t = clock.ns.load() + 1;
  EXPECT_EQ(lookup(snapshots, "192.168.1.10", 22, t).kind, PeerKind::kHost);
  EXPECT_EQ(lookup(snapshots, "10.96.0.10", 80, t).network, "private");
  const size_t services = index_of(PeerResource::kServices);
  const size_t unreachable = static_cast<size_t>(KubeApiError::kUnreachable);
  ASSERT_TRUE(
      eventually([&] { return (*watcher)->stats().resources[services].errors[unreachable] >= 2; }));
  EXPECT_FALSE((*watcher)->stats().resources[services].synced);

  FakeApiServer server(port);
  ASSERT_EQ(server.port(), port);
  server.set_list("/api/v1/services", kServices);
  ASSERT_TRUE(eventually([&] { return lookup(snapshots, "10.96.0.10", 80, t).name == "web"; }));
  EXPECT_TRUE((*watcher)->stats().resources[services].synced);
  (*watcher)->stop();
}

// 410 Gone on a watch: the resource is listed again and the new list replaces the old state
// (an object that is no longer in it stops naming).
TEST(PeerWatcherApi, GoneRelistsAndTheNewListReplacesTheState) {
  FakeApiServer server;
  server.set_list("/api/v1/services", kServices);
  TestClock clock;
  PeerSnapshots snapshots;
  auto watcher = PeerWatcher::create(api_options(clock, server), snapshots);
  ASSERT_TRUE(watcher);
  (*watcher)->start();
  uint64_t t = clock.ns.load() + 1;
  ASSERT_TRUE(eventually([&] { return lookup(snapshots, "10.96.0.10", 80, t).name == "web"; }));
  ASSERT_TRUE(eventually([&] { return server.open_watches() == 3; }));
  const size_t lists = server.list_requests("/api/v1/services");
  clock.ns += 1'000'000;
  server.set_list(
      "/api/v1/services",
      R"([{"metadata":{"name":"api","namespace":"shop","uid":"u-svc-api","resourceVersion":"30"},)"
      R"("spec":{"clusterIP":"10.96.0.20","ports":[{"name":"grpc","port":9090}]}}])");
  server.push("/api/v1/services",
              R"({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure",)"
              R"("message":"too old resource version: 10 [25]","reason":"Expired","code":410}})");
  t = clock.ns.load() + 1;
  ASSERT_TRUE(eventually([&] { return lookup(snapshots, "10.96.0.20", 9090, t).name == "api"; }));
  EXPECT_EQ(lookup(snapshots, "10.96.0.10", 80, t).kind, PeerKind::kExternal);
  EXPECT_EQ(server.list_requests("/api/v1/services"), lists + 1);
  EXPECT_EQ((*watcher)->stats().resources[index_of(PeerResource::kServices)].objects, 1u);
  (*watcher)->stop();
}

// A stop while every watcher is still connecting to an address that does not answer (a listener
// whose accept queue is full: the kernel drops the SYNs) is bounded by the connect timeout: a
// connect in flight is not aborted, it runs out, and nothing is tried after it. (The watchers stop
// in parallel, so that connects started at different times do not add up either.)
TEST(PeerWatcherApi, AStopWhileConnectingToASilentAddressTakesAtMostTheConnectTimeout) {
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), len), 0);
  ASSERT_EQ(::listen(listener.get(), 0), 0);
  ASSERT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  std::vector<UniqueFd> fillers;  // never accepted: the queue stays full
  for (int i = 0; i < 3; ++i) {
    fillers.emplace_back(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    (void)::connect(fillers.back().get(), reinterpret_cast<sockaddr*>(&addr), len);
  }
  std::this_thread::sleep_for(100ms);
  TestClock clock;
  PeerSnapshots snapshots;
  PeerWatchOptions o = base_options(clock);
  KubeApiOptions api;
  api.url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  api.connect_timeout = 2s;
  o.api = api;
  o.watch_pods = true;  // four watchers
  auto watcher = PeerWatcher::create(std::move(o), snapshots);
  ASSERT_TRUE(watcher);
  (*watcher)->start();
  std::this_thread::sleep_for(300ms);
  const auto before = Clock::now();
  (*watcher)->stop();
  EXPECT_LT(Clock::now() - before, 3500ms);
  for (const PeerResourceStats& r : (*watcher)->stats().resources) EXPECT_FALSE(r.synced);
}

TEST(PeerMetrics, RenderedOnlyWhenTheyApply) {
  Metrics metrics({}, "test");
  metrics.publish_health(HealthSnapshot{});
  EXPECT_EQ(metrics.render().find("netmon_peer"), std::string::npos);
  HealthSnapshot h;
  h.peers_enabled = true;  // an index, no API server
  metrics.publish_health(h);
  const std::string text = metrics.render();
  EXPECT_NE(text.find("netmon_peer_lookups_total{result=\"host\"} 0"), std::string::npos);
  EXPECT_NE(text.find("netmon_peer_index_objects{kind=\"addresses\"} 0"), std::string::npos);
  EXPECT_EQ(text.find("netmon_kube_api"), std::string::npos);
}

}  // namespace
}  // namespace netmon

namespace netmon {
namespace {

// The kubelet's PodList, parsed once for both its readers: the pod metadata and the peer index's
// pods (what KubeletOptions::on_pods hands to PeerWatcher::set_local_pods).
TEST(KubeletPodsForPeers, OneParseGivesBoth) {
  const std::string list =
      R"({"kind":"PodList","apiVersion":"v1","metadata":{},"items":[)"
      R"({"metadata":{"name":"web-7d4b9c-x1","namespace":"shop","uid":"u-1",)"
      R"("labels":{"pod-template-hash":"7d4b9c"},)"
      R"("ownerReferences":[{"kind":"ReplicaSet","name":"web-7d4b9c","controller":true}]},)"
      R"("spec":{"nodeName":"node-a","containers":[{"name":"c","ports":[{"containerPort":8080}]}]},)"
      R"("status":{"phase":"Running","podIP":"10.244.1.5","podIPs":[{"ip":"10.244.1.5"},)"
      R"({"ip":"fd00:244::5"}]}},)"
      R"({"metadata":{"name":"broken","namespace":"shop","uid":"u-2"},)"
      R"("status":{"podIP":"10.244"}}]})";
  std::vector<KubePod> peers;
  auto pods = parse_pod_list(list, &peers);
  ASSERT_TRUE(pods) << pods.error().message;
  EXPECT_EQ(pods->size(), 2u);
  ASSERT_EQ(peers.size(), 1u);  // the pod whose IP does not parse is left out of the index only
  EXPECT_EQ(peers[0].name, "web-7d4b9c-x1");
  EXPECT_EQ(peers[0].workload, "web");
  EXPECT_EQ(peers[0].workload_kind, "Deployment");
  EXPECT_EQ(peers[0].pod_ips.size(), 2u);
  std::vector<KubePod> none{peers[0]};
  ASSERT_TRUE(parse_pod_list(R"({"items":null})", &none));
  EXPECT_TRUE(none.empty());
}

}  // namespace
}  // namespace netmon
