// In-cluster discovery: the defaults a pod on a Kubernetes node finds for what was not
// configured. The kubelet's URL, token and CA from the service account and $NODE_IP/$NODE_NAME;
// the API server's from $KUBERNETES_SERVICE_HOST/PORT and the service account; the node's name;
// and the host's cgroup v2 hierarchy from the mount table.
#pragma once

#include <optional>
#include <string>

#include "common/result.h"
#include "k8s/cgroup_resolver.h"
#include "k8s/kube_api.h"
#include "k8s/kubelet.h"

namespace netmon {

// Where a pod finds its service account's token and CA.
inline constexpr const char* kServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount";

// What the host tells an agent about the cluster it runs in; injectable for tests.
struct InClusterEnvironment {
  std::string service_account_dir = kServiceAccountDir;
  std::string node_ip;    // $NODE_IP ("" when unset)
  std::string node_name;  // $NODE_NAME ("" when unset)
  // Where the API server is, as the kubelet tells every pod ("" when unset: not in a cluster).
  std::string kubernetes_service_host;  // $KUBERNETES_SERVICE_HOST
  std::string kubernetes_service_port;  // $KUBERNETES_SERVICE_PORT

  // The real one: kServiceAccountDir and the process's environment.
  static InClusterEnvironment of_process();
};

// `given` with the in-cluster defaults filled in. In a cluster (the service-account token is
// readable): an empty url becomes https://<NODE_IP, else NODE_NAME>:10250/pods (an IPv6 literal
// bracketed; still empty when neither is set) and an empty token file the service-account token.
// An empty CA file becomes the service-account CA when it is readable and the certificate is to
// be verified. An empty url afterwards means "no kubelet".
KubeletOptions with_in_cluster_defaults(KubeletOptions given, const InClusterEnvironment& env);

// The API server client's options in a pod: url from kubernetes_service_host (an IPv6 address
// bracketed) and kubernetes_service_port, token_file and ca_file in the service-account
// directory (<dir>/token, <dir>/ca.crt). Reads no file: a missing token or CA shows when
// validated or used. Fails when the variables are unset or malformed (not in a cluster).
Result<KubeApiOptions> in_cluster_kube_api(const InClusterEnvironment& env);

// `given` with the in-cluster defaults filled in, the way the kubelet's are. An empty url: in a
// cluster ($KUBERNETES_SERVICE_HOST set) the in-cluster one (in_cluster_kube_api), else it stays
// empty, meaning "no API server". In a cluster (the service-account token is readable) an empty
// token file becomes the service-account token, and an empty CA file the service-account CA when
// it is readable and the certificate is to be verified. Fails, naming the variable, when
// $KUBERNETES_SERVICE_HOST/PORT are set but malformed and the url is empty.
Result<KubeApiOptions> kube_api_with_in_cluster_defaults(KubeApiOptions given,
                                                         const InClusterEnvironment& env);

// `configured`, else $NODE_NAME, else the host name ("" when that fails).
std::string node_name_or_default(const std::string& configured, const InClusterEnvironment& env);

// `configured`, else the cgroup v2 mount found in /proc/self/mountinfo ("" when none; a mount
// table that cannot be read is logged as a warning).
std::string cgroup2_root_or_default(const std::string& configured);

// The resolver for the cgroup v2 hierarchy at `root` (as cgroup2_root_or_default() gives it), or
// none, with a warning that says why events carry no container or pod.
std::optional<CgroupResolver> open_cgroups(const std::string& root);

}  // namespace netmon
