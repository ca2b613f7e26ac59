// The Kubernetes API server's JSON -> the typed objects of k8s/kube_objects.h. Only the k8s
// module includes this header (it names nlohmann::json); the API client hands each list response
// and each watch event's "object" to these functions.
//
// Strict but tolerant: unknown fields are ignored, absent and null fields read as their default,
// but a field of the wrong type, an unparsable IP or CIDR, an out-of-range port, or a count or
// string over the bounds of kube_objects.h makes the object fail with an error naming the object
// and the field (e.g. "Service shop/web: spec.clusterIPs[1]: '10.0.0' is not an IP address").
// An object without metadata.uid fails too (objects are keyed by uid). Never throws.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "common/result.h"
#include "k8s/kube_objects.h"

namespace netmon {

Result<KubeService> parse_kube_service(const nlohmann::json& object);
Result<KubeEndpointSlice> parse_kube_endpoint_slice(const nlohmann::json& object);
Result<KubeNode> parse_kube_node(const nlohmann::json& object);
Result<KubePod> parse_kube_pod(const nlohmann::json& object);

// A list response (ServiceList, EndpointSliceList, NodeList, PodList). Items that fail to parse
// are left out and counted: one bad object must not cost the whole list.
template <typename T>
struct KubeList {
  std::vector<T> items;
  std::string resource_version;  // metadata.resourceVersion: where the watch starts
  size_t skipped = 0;            // items that failed to parse
  std::string first_error;       // the first of their errors, for a log line
};

// Fail only when the list itself is unusable: not an object, "items" neither an array nor
// null, more than kKubeMaxListItems items, or a metadata.resourceVersion that is not a string.
Result<KubeList<KubeService>> parse_kube_service_list(const nlohmann::json& list);
Result<KubeList<KubeEndpointSlice>> parse_kube_endpoint_slice_list(const nlohmann::json& list);
Result<KubeList<KubeNode>> parse_kube_node_list(const nlohmann::json& list);
Result<KubeList<KubePod>> parse_kube_pod_list(const nlohmann::json& list);

// The "items" array of a list, or of one page of it, alone (what ListWatchHandler::on_list and
// on_list_page hand over; resource_version stays empty). Fail only when `items` is neither an
// array nor null, or has more than kKubeMaxListItems entries.
Result<KubeList<KubeService>> parse_kube_service_items(const nlohmann::json& items);
Result<KubeList<KubeEndpointSlice>> parse_kube_endpoint_slice_items(const nlohmann::json& items);
Result<KubeList<KubeNode>> parse_kube_node_items(const nlohmann::json& items);
Result<KubeList<KubePod>> parse_kube_pod_items(const nlohmann::json& items);

}  // namespace netmon
