#include "k8s/peer_watch.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "k8s/kube_json.h"

namespace netmon {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::array<std::string_view, static_cast<size_t>(PeerResource::kCount)> kNames = {
    "services", "endpointslices", "nodes", "pods"};
constexpr std::array<std::string_view, static_cast<size_t>(PeerResource::kCount)> kPaths = {
    "/api/v1/services", "/apis/discovery.k8s.io/v1/endpointslices", "/api/v1/nodes",
    "/api/v1/pods"};

// How often a resource's objects that do not parse are logged again.
constexpr auto kSkippedLogInterval = std::chrono::minutes(10);

size_t index_of(PeerResource r) { return static_cast<size_t>(r); }

// The parsers of each object type.
template <typename T>
struct Parsers;
template <>
struct Parsers<KubeService> {
  static Result<KubeList<KubeService>> items(const nlohmann::json& j) {
    return parse_kube_service_items(j);
  }
  static Result<KubeService> one(const nlohmann::json& j) { return parse_kube_service(j); }
};
template <>
struct Parsers<KubeEndpointSlice> {
  static Result<KubeList<KubeEndpointSlice>> items(const nlohmann::json& j) {
    return parse_kube_endpoint_slice_items(j);
  }
  static Result<KubeEndpointSlice> one(const nlohmann::json& j) {
    return parse_kube_endpoint_slice(j);
  }
};
template <>
struct Parsers<KubeNode> {
  static Result<KubeList<KubeNode>> items(const nlohmann::json& j) {
    return parse_kube_node_items(j);
  }
  static Result<KubeNode> one(const nlohmann::json& j) { return parse_kube_node(j); }
};
template <>
struct Parsers<KubePod> {
  static Result<KubeList<KubePod>> items(const nlohmann::json& j) {
    return parse_kube_pod_items(j);
  }
  static Result<KubePod> one(const nlohmann::json& j) { return parse_kube_pod(j); }
};

// Calls f(std::type_identity<T>{}) with the object type of `r`.
template <typename F>
void with_type(PeerResource r, F&& f) {
  switch (r) {
    case PeerResource::kServices:
      f(std::type_identity<KubeService>{});
      return;
    case PeerResource::kEndpointSlices:
      f(std::type_identity<KubeEndpointSlice>{});
      return;
    case PeerResource::kNodes:
      f(std::type_identity<KubeNode>{});
      return;
    case PeerResource::kPods:
    case PeerResource::kCount:
      f(std::type_identity<KubePod>{});
      return;
  }
}

bool same_address(const IpAddress& a, const IpAddress& b) {
  return a.family == b.family && a.bytes == b.bytes;
}

bool same_addresses(const std::vector<IpAddress>& a, const std::vector<IpAddress>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), same_address);
}

bool address_less(const IpAddress& a, const IpAddress& b) {
  if (a.family != b.family) return a.family < b.family;
  return a.bytes < b.bytes;
}

// Sorted, canonical, without repeats.
std::vector<IpAddress> normalized(std::vector<IpAddress> addresses) {
  for (IpAddress& a : addresses) a = canonical_address(a);
  std::sort(addresses.begin(), addresses.end(), address_less);
  addresses.erase(std::unique(addresses.begin(), addresses.end(), same_address), addresses.end());
  return addresses;
}

bool same_pod(const KubePod& a, const KubePod& b) {
  auto same_ports = [](const std::vector<KubeContainerPort>& x,
                       const std::vector<KubeContainerPort>& y) {
    return std::equal(x.begin(), x.end(), y.begin(), y.end(),
                      [](const KubeContainerPort& p, const KubeContainerPort& q) {
                        return p.name == q.name && p.protocol == q.protocol && p.port == q.port;
                      });
  };
  return a.uid == b.uid && a.namespace_name == b.namespace_name && a.name == b.name &&
         a.node_name == b.node_name && a.workload == b.workload &&
         a.workload_kind == b.workload_kind && a.labels == b.labels &&
         same_addresses(a.pod_ips, b.pod_ips) && a.host_network == b.host_network &&
         a.terminal == b.terminal && a.terminating == b.terminating && same_ports(a.ports, b.ports);
}

std::vector<IpAddress> node_ips(const KubeNode& node) {
  std::vector<IpAddress> out;
  for (const KubeNodeAddress& a : node.addresses) {
    if (a.ip && (a.type == KubeNodeAddressType::kInternalIP ||
                 a.type == KubeNodeAddressType::kExternalIP)) {
      out.push_back(*a.ip);
    }
  }
  return out;
}

uint64_t boot_time_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

std::string_view to_string(PeerResource resource) { return kNames[index_of(resource)]; }
std::string_view resource_path(PeerResource resource) { return kPaths[index_of(resource)]; }

std::vector<IpAddress> host_interface_addresses() {
  std::vector<IpAddress> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) {
    log::warn(std::string("cannot read this host's interface addresses (getifaddrs: ") +
              std::strerror(errno) + "): peers at them are not named host");
    return out;
  }
  for (const ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    // kube-proxy in IPVS mode binds every service IP to this dummy interface.
    if (i->ifa_name != nullptr && std::strcmp(i->ifa_name, "kube-ipvs0") == 0) continue;
    IpAddress a;
    if (i->ifa_addr->sa_family == AF_INET) {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
      a.family = IpAddress::Family::kV4;
      std::memcpy(a.bytes.data(), &sin->sin_addr, 4);
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(i->ifa_addr);
      a.family = IpAddress::Family::kV6;
      std::memcpy(a.bytes.data(), &sin6->sin6_addr, 16);
    } else {
      continue;
    }
    out.push_back(a);
  }
  ::freeifaddrs(list);
  return out;
}

// Feeds one resource's lists and events into the state. Lists come page by page (list_in_pages):
// each page is parsed outside the lock and its objects are compacted aside by the state until
// the list completes.
class PeerWatcher::Handler : public ListWatchHandler {
 public:
  Handler(PeerWatcher& watcher, PeerResource resource) : w_(watcher), resource_(resource) {}

  bool list_in_pages() const override { return true; }

  void on_list_page(const nlohmann::json& items) override {
    with_type(resource_, [&](auto type) {
      using T = typename decltype(type)::type;
      auto list = Parsers<T>::items(items);
      if (!list) throw std::runtime_error(list.error().message);
      note_skipped(list->skipped, list->first_error);
      std::lock_guard lock(w_.state_mutex_);
      if constexpr (std::is_same_v<T, KubeNode>) {
        for (const KubeNode& node : list->items) {
          if (node.name == w_.options_.node_name) pending_node_ = node_ips(node);
        }
      }
      w_.state_.add_list_page(std::move(list->items));
    });
  }

  void on_list(const nlohmann::json& /*items: empty, the pages had them*/,
               const std::string& /*resource_version*/) override {
    bool first = false;
    size_t objects = 0;
    with_type(resource_, [&](auto type) {
      using T = typename decltype(type)::type;
      std::lock_guard lock(w_.state_mutex_);
      w_.state_.template finish_list<T>(w_.now());
      if (pending_node_) {
        w_.node_addresses_ = std::move(*pending_node_);
        pending_node_.reset();
        w_.update_host_addresses_locked();
      }
      PeerResourceStats& s = w_.resource_stats_[index_of(resource_)];
      first = !s.synced;
      s.synced = true;
      s.objects = objects = count_locked();
    });
    if (first) {
      log::info("kube api: " + std::string(to_string(resource_)) + " synced (" +
                std::to_string(objects) + " objects)");
    }
    w_.changed(first);
  }

  void on_list_abandoned() override {
    with_type(resource_, [&](auto type) {
      using T = typename decltype(type)::type;
      std::lock_guard lock(w_.state_mutex_);
      w_.state_.template abandon_list<T>();
      pending_node_.reset();
    });
  }

  void on_event(WatchEventType type, const nlohmann::json& object) override {
    WatchOp op = WatchOp::kAdded;
    switch (type) {
      case WatchEventType::kAdded:
        op = WatchOp::kAdded;
        break;
      case WatchEventType::kModified:
        op = WatchOp::kModified;
        break;
      case WatchEventType::kDeleted:
        op = WatchOp::kDeleted;
        break;
      case WatchEventType::kBookmark:
      case WatchEventType::kError:
        return;  // the ListWatcher handles these
    }
    with_type(resource_, [&](auto t) {
      using T = typename decltype(t)::type;
      auto parsed = Parsers<T>::one(object);
      if (!parsed) {
        note_skipped(1, parsed.error().message);  // one bad object costs only itself
        return;
      }
      std::lock_guard lock(w_.state_mutex_);
      if constexpr (std::is_same_v<T, KubeNode>) {
        if (op != WatchOp::kDeleted && parsed->name == w_.options_.node_name) {
          w_.node_addresses_ = node_ips(*parsed);
          w_.update_host_addresses_locked();
        }
      }
      w_.state_.apply(op, std::move(*parsed), w_.now());
      w_.resource_stats_[index_of(resource_)].objects = count_locked();
    });
    w_.changed(false);
  }

 private:
  size_t count_locked() const {
    switch (resource_) {
      case PeerResource::kServices:
        return w_.state_.service_count();
      case PeerResource::kEndpointSlices:
        return w_.state_.endpoint_slice_count();
      case PeerResource::kNodes:
        return w_.state_.node_count();
      case PeerResource::kPods:
      case PeerResource::kCount:
        break;
    }
    return w_.state_.pod_count();
  }

  // Objects that did not parse are left out; the first one is logged, then at most one line per
  // kSkippedLogInterval with the count.
  void note_skipped(size_t n, const std::string& error) {
    if (n == 0) return;
    uint64_t total = 0;
    {
      std::lock_guard lock(w_.state_mutex_);
      total = w_.resource_stats_[index_of(resource_)].skipped += n;
    }
    const auto now = Clock::now();
    if (logged_skipped_ != 0 && now - last_skipped_log_ < kSkippedLogInterval) return;
    log::warn("kube api " + std::string(to_string(resource_)) + ": " + std::to_string(total) +
              " object(s) left out so far, they do not parse: " + error);
    logged_skipped_ = total;
    last_skipped_log_ = now;
  }

  PeerWatcher& w_;
  const PeerResource resource_;
  std::optional<std::vector<IpAddress>> pending_node_;  // this node's, seen in the list's pages
  uint64_t logged_skipped_ = 0;
  Clock::time_point last_skipped_log_{};
};

PeerWatcher::PeerWatcher(PeerWatchOptions options, PeerSnapshots& out)
    : options_(std::move(options)), out_(out), state_([&] {
        PeerIndexOptions o;
        o.pod_grace_ns = options_.pod_grace_ns;
        o.external_networks = options_.external_networks;
        return o;
      }()) {
  if (!options_.interface_addresses) options_.interface_addresses = host_interface_addresses;
  if (!options_.now_ns) options_.now_ns = boot_time_ns;
}

Result<std::unique_ptr<PeerWatcher>> PeerWatcher::create(PeerWatchOptions options,
                                                         PeerSnapshots& out) {
  std::unique_ptr<PeerWatcher> w(new PeerWatcher(std::move(options), out));
  if (!w->options_.api) return w;
  for (size_t i = 0; i < static_cast<size_t>(PeerResource::kCount); ++i) {
    const auto r = static_cast<PeerResource>(i);
    if (!w->watches(r)) continue;
    w->resource_stats_[i].watched = true;
    auto handler = std::make_unique<Handler>(*w, r);
    ListWatchOptions lw = w->options_.list_watch;
    lw.resource = std::string(resource_path(r));
    lw.name = std::string(to_string(r));
    auto watcher = ListWatcher::create(*w->options_.api, std::move(lw), *handler);
    if (!watcher) return tl::unexpected(watcher.error());
    w->handlers_.push_back(std::move(handler));
    w->watchers_.push_back(std::move(*watcher));
  }
  return w;
}

bool PeerWatcher::watches(PeerResource r) const {
  switch (r) {
    case PeerResource::kServices:
    case PeerResource::kEndpointSlices:
      return options_.watch_services;
    case PeerResource::kNodes:
      return options_.watch_nodes;
    case PeerResource::kPods:
      return options_.watch_pods;
    case PeerResource::kCount:
      break;
  }
  return false;
}

PeerWatcher::~PeerWatcher() { stop(); }

uint64_t PeerWatcher::now() const { return options_.now_ns(); }

bool PeerWatcher::update_host_addresses_locked() {
  std::vector<IpAddress> all = interface_addresses_;
  all.insert(all.end(), node_addresses_.begin(), node_addresses_.end());
  all = normalized(std::move(all));
  if (same_addresses(all, host_addresses_)) return false;
  host_addresses_ = all;
  state_.set_host_addresses(std::move(all));
  dirty_ = true;
  return true;
}

void PeerWatcher::build_and_publish_locked() {
  std::shared_ptr<const PeerIndex> index = state_.build(now());
  index_stats_ = index->stats();
  ++builds_;
  out_.publish(std::move(index));
  dirty_ = false;
  urgent_ = false;
}

void PeerWatcher::changed(bool urgent) {
  {
    std::lock_guard lock(state_mutex_);
    dirty_ = true;
    urgent_ = urgent_ || urgent;
  }
  wake_.notify_all();
}

void PeerWatcher::start() {
  std::vector<IpAddress> interfaces = options_.interface_addresses();
  {
    std::lock_guard lock(state_mutex_);
    if (started_ || stop_) return;
    started_ = true;
    interface_addresses_ = std::move(interfaces);
    update_host_addresses_locked();
    build_and_publish_locked();
  }
  builder_ = std::thread([this] { run_builder(); });
  for (auto& w : watchers_) w->start();
}

void PeerWatcher::stop() {
  // Each aborts its request in flight and joins its thread; all at once, so that watchers still
  // connecting to an address that does not answer (stop() waits up to the connect timeout) do
  // not add up.
  std::vector<std::thread> stopping;
  for (auto& w : watchers_) stopping.emplace_back([&w] { w->stop(); });
  for (std::thread& t : stopping) t.join();
  {
    std::lock_guard lock(state_mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (builder_.joinable()) builder_.join();
}

void PeerWatcher::set_local_pods(std::vector<KubePod> pods) {
  bool first = false;
  {
    std::lock_guard lock(state_mutex_);
    if (have_local_pods_ &&
        std::equal(pods.begin(), pods.end(), local_pods_.begin(), local_pods_.end(), same_pod)) {
      return;
    }
    first = !have_local_pods_;
    have_local_pods_ = true;
    local_pods_ = pods;
    state_.replace_local_pods(std::move(pods), now());
  }
  changed(first);
}

void PeerWatcher::run_builder() {
  std::unique_lock lock(state_mutex_);
  auto last_build = Clock::now();
  auto next_interfaces = last_build + options_.host_address_interval;
  while (!stop_) {
    const auto now = Clock::now();
    if (now >= next_interfaces) {
      lock.unlock();  // getifaddrs() talks to the kernel: not under the lock
      std::vector<IpAddress> interfaces = options_.interface_addresses();
      lock.lock();
      next_interfaces = Clock::now() + options_.host_address_interval;
      interface_addresses_ = std::move(interfaces);
      update_host_addresses_locked();
      continue;
    }
    // Gone pod claims leave the index at the first build after their grace period.
    const auto grace = std::chrono::nanoseconds(options_.pod_grace_ns);
    if (!dirty_ && index_stats_.gone_pod_claims > 0 && now >= last_build + grace) dirty_ = true;
    const auto earliest = last_build + options_.min_build_interval;
    if (dirty_ && (urgent_ || now >= earliest)) {
      build_and_publish_locked();
      last_build = Clock::now();
      continue;
    }
    auto until = next_interfaces;
    if (dirty_) {
      until = std::min(until, earliest);
    } else if (index_stats_.gone_pod_claims > 0) {
      until = std::min(until, last_build + std::chrono::duration_cast<Clock::duration>(grace));
    }
    wake_.wait_until(lock, until);
  }
}

PeerWatchStats PeerWatcher::stats() const {
  PeerWatchStats s;
  s.api_enabled = options_.api.has_value();
  {
    std::lock_guard lock(state_mutex_);
    s.resources = resource_stats_;
    s.builds = builds_;
    s.local_pods = local_pods_.size();
    s.host_addresses = host_addresses_.size();
    s.index = index_stats_;
  }
  for (const auto& w : watchers_) {
    const ListWatchStats ls = w->stats();
    for (size_t i = 0; i < kNames.size(); ++i) {
      if (kNames[i] == w->name()) s.resources[i].errors = ls.errors;
    }
  }
  return s;
}

}  // namespace netmon
