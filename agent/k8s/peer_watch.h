// PeerWatcher: keeps the peer index (k8s/peer_index.h) current and publishes it to a
// PeerSnapshots (k8s/peer_snapshots.h), which the pipeline reads (issue #19).
//
// Sources: the API server, through one ListWatcher per resource (services, endpointslices,
// nodes, and pods with watch_pods: the collections kube-proxy watches on every node); this
// node's pods from the kubelet (set_local_pods(), called by the kubelet poller); this node's own
// addresses (its Node object's InternalIP/ExternalIP, and the addresses of the host's interfaces,
// getifaddrs(): the agent runs in the host's network namespace); and the external network
// classes of the configuration.
//
// Threads: each ListWatcher's thread parses its objects (kube_json.h) and feeds the ClusterState;
// the kubelet's thread hands over this node's pods; one builder thread builds and publishes the
// index. The ClusterState is single-threaded: one mutex (state_mutex_) serialises every feed and
// build. Builds are debounced: at once after a resource's first list and after the kubelet's
// first pods, otherwise at most once per min_build_interval while changes come in.
//
// start() publishes a first index before it returns, even without an API server (this host, the
// external classes, and the kubelet's pods when they came already), so that a pipeline started
// after it always has one. Without an API server the watcher still runs its builder (the
// kubelet's pods and the host's addresses change).
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "k8s/cidr.h"
#include "k8s/kube_api.h"
#include "k8s/kube_objects.h"
#include "k8s/list_watch.h"
#include "k8s/peer_index.h"
#include "k8s/peer_snapshots.h"
#include "k8s/peer_watch_stats.h"

namespace netmon {

struct PeerWatchOptions {
  // The API server; none: only this node's kubelet, its addresses and the external classes.
  std::optional<KubeApiOptions> api;
  bool watch_services = true;  // services and endpointslices (kubernetes.watch_services)
  bool watch_nodes = true;     // nodes (kubernetes.watch_nodes)
  bool watch_pods = false;     // also watch all the cluster's pods (kubernetes.watch_pods)
  std::string node_name;       // this node: its Node object's addresses are this host's
  CidrClasses external_networks;
  uint64_t pod_grace_ns = 60'000'000'000;  // PeerIndexOptions::pod_grace_ns
  // Builds, at most this often while changes come in (a first sync builds at once).
  std::chrono::milliseconds min_build_interval{1000};
  // How often the host's interface addresses are read again.
  std::chrono::milliseconds host_address_interval{30000};
  // The list-watch settings of every resource (resource and name are set per resource).
  ListWatchOptions list_watch;
  // Injectable for tests. The host's own addresses (default: getifaddrs(), see
  // host_interface_addresses); CLOCK_BOOTTIME nanoseconds (default: clock_gettime).
  std::function<std::vector<IpAddress>()> interface_addresses;
  std::function<uint64_t()> now_ns;
};

// The addresses of this network namespace's interfaces (getifaddrs()), IPv4 and IPv6, except
// those of kube-proxy's IPVS dummy interface kube-ipvs0, which holds every service IP of the
// cluster (they name services, not this host). Empty when getifaddrs() fails (logged).
std::vector<IpAddress> host_interface_addresses();

class PeerWatcher {
 public:
  // Creates the ListWatchers (validating the API options: KubeApiClient::validate); starts
  // nothing. `out` must outlive the watcher.
  static Result<std::unique_ptr<PeerWatcher>> create(PeerWatchOptions options, PeerSnapshots& out);
  ~PeerWatcher();  // stop()
  PeerWatcher(const PeerWatcher&) = delete;
  PeerWatcher& operator=(const PeerWatcher&) = delete;

  // Publishes the first index, then starts the builder and the watchers.
  void start();
  // Any thread, idempotent: stops the watchers (aborting their requests in flight) and the
  // builder, and joins them. Prompt: about as long as one ListWatcher::stop() (they stop in
  // parallel).
  void stop();

  // Any thread (the kubelet poller's): this node's pods as its kubelet lists them, on each
  // successful poll. Replaces the previous ones; an unchanged list causes no build.
  void set_local_pods(std::vector<KubePod> pods);

  PeerWatchStats stats() const;  // any thread

 private:
  class Handler;
  PeerWatcher(PeerWatchOptions options, PeerSnapshots& out);
  bool watches(PeerResource r) const;  // by the options
  void run_builder();
  // Under state_mutex_: the host's addresses (interfaces + this Node's) into the state; true
  // when they changed.
  bool update_host_addresses_locked();
  void build_and_publish_locked();
  void changed(bool urgent);  // a feed changed the state: wake the builder
  uint64_t now() const;

  PeerWatchOptions options_;
  PeerSnapshots& out_;
  std::vector<std::unique_ptr<Handler>> handlers_;  // one per watched resource
  std::vector<std::unique_ptr<ListWatcher>> watchers_;

  mutable std::mutex state_mutex_;  // guards everything below it
  ClusterState state_;
  std::vector<IpAddress> interface_addresses_;
  std::vector<IpAddress> node_addresses_;  // this node's Node object's
  std::vector<IpAddress> host_addresses_;  // what the state has
  std::vector<KubePod> local_pods_;        // the kubelet's last list (to see changes)
  bool have_local_pods_ = false;
  bool dirty_ = false;
  bool urgent_ = false;
  bool stop_ = false;
  bool started_ = false;
  std::condition_variable wake_;
  std::array<PeerResourceStats, static_cast<size_t>(PeerResource::kCount)> resource_stats_{};
  uint64_t builds_ = 0;
  PeerIndex::Stats index_stats_;

  std::thread builder_;
};

}  // namespace netmon
