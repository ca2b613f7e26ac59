// What the peer watcher (k8s/peer_watch.h) reports, as plain values for the metrics module, which
// must not see the API client's JSON types.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "k8s/kube_api.h"
#include "k8s/peer_index.h"

namespace netmon {

// The resources, in the order of PeerWatchStats::resources and of the metrics' series.
enum class PeerResource : uint8_t { kServices, kEndpointSlices, kNodes, kPods, kCount };
std::string_view to_string(PeerResource resource);  // "services", "endpointslices", ...
// The collection's path: /api/v1/services, /apis/discovery.k8s.io/v1/endpointslices, ...
std::string_view resource_path(PeerResource resource);

struct PeerResourceStats {
  bool watched = false;  // pods: only with watch_pods
  bool synced = false;   // a first list completed
  size_t objects = 0;    // in the current state
  uint64_t skipped = 0;  // objects that did not parse (left out)
  std::array<uint64_t, static_cast<size_t>(KubeApiError::kCount)> errors{};  // by reason
};

struct PeerWatchStats {
  bool api_enabled = false;
  std::array<PeerResourceStats, static_cast<size_t>(PeerResource::kCount)> resources{};
  uint64_t builds = 0;        // indexes published (the first one included)
  size_t local_pods = 0;      // this node's pods, from the kubelet
  size_t host_addresses = 0;  // this host's addresses in the index
  PeerIndex::Stats index;     // of the last published index
};

}  // namespace netmon
