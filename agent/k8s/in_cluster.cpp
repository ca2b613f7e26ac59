#include "k8s/in_cluster.h"

#include <unistd.h>

#include <cstdlib>

#include "common/files.h"
#include "common/log.h"

namespace netmon {
namespace {

constexpr size_t kMaxMountinfoBytes = 16u << 20;

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

bool file_exists(const std::string& path) { return ::access(path.c_str(), R_OK) == 0; }

}  // namespace

InClusterEnvironment InClusterEnvironment::of_process() {
  InClusterEnvironment env;
  env.node_ip = env_or_empty("NODE_IP");
  env.node_name = env_or_empty("NODE_NAME");
  env.kubernetes_service_host = env_or_empty("KUBERNETES_SERVICE_HOST");
  env.kubernetes_service_port = env_or_empty("KUBERNETES_SERVICE_PORT");
  return env;
}

KubeletOptions with_in_cluster_defaults(KubeletOptions k, const InClusterEnvironment& env) {
  const std::string sa_token = env.service_account_dir + "/token";
  const std::string sa_ca = env.service_account_dir + "/ca.crt";
  const bool in_cluster = file_exists(sa_token);
  if (k.url.empty() && in_cluster) {
    std::string host = env.node_ip;
    if (host.empty()) host = env.node_name;
    if (!host.empty()) {
      if (host.find(':') != std::string::npos) host = "[" + host + "]";  // IPv6 literal
      k.url = "https://" + host + ":10250/pods";
    }
  }
  if (k.token_file.empty() && in_cluster) k.token_file = sa_token;
  if (k.ca_file.empty() && !k.insecure_skip_verify && file_exists(sa_ca)) k.ca_file = sa_ca;
  return k;
}

Result<KubeApiOptions> in_cluster_kube_api(const InClusterEnvironment& env) {
  if (env.kubernetes_service_host.empty()) {
    return fail("KUBERNETES_SERVICE_HOST is not set (not running in a Kubernetes pod)");
  }
  if (env.kubernetes_service_port.empty()) {
    return fail("KUBERNETES_SERVICE_PORT is not set (not running in a Kubernetes pod)");
  }
  auto url = kube_api_url_of(env.kubernetes_service_host, env.kubernetes_service_port);
  if (!url) return fail("KUBERNETES_SERVICE_HOST/PORT: " + url.error().message);
  KubeApiOptions options;
  options.url = std::move(*url);
  std::string dir = env.service_account_dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  options.token_file = dir + "/token";
  options.ca_file = dir + "/ca.crt";
  return options;
}

Result<KubeApiOptions> kube_api_with_in_cluster_defaults(KubeApiOptions k,
                                                         const InClusterEnvironment& env) {
  if (k.url.empty()) {
    if (env.kubernetes_service_host.empty() && env.kubernetes_service_port.empty()) return k;
    auto in_cluster = in_cluster_kube_api(env);
    if (!in_cluster) return in_cluster;
    k.url = std::move(in_cluster->url);
    // The in-cluster API server: the service account's token even when not there (yet): a
    // request then fails naming the file.
    if (k.token_file.empty()) k.token_file = std::move(in_cluster->token_file);
  }
  const std::string sa_token = env.service_account_dir + "/token";
  const std::string sa_ca = env.service_account_dir + "/ca.crt";
  if (k.token_file.empty() && file_exists(sa_token)) k.token_file = sa_token;
  if (k.ca_file.empty() && !k.insecure_skip_verify && file_exists(sa_ca)) k.ca_file = sa_ca;
  return k;
}

std::string node_name_or_default(const std::string& configured, const InClusterEnvironment& env) {
  if (!configured.empty()) return configured;
  if (!env.node_name.empty()) return env.node_name;
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) == 0) return host;
  return "";
}

std::string cgroup2_root_or_default(const std::string& configured) {
  if (!configured.empty()) return configured;
  // Thousands of mounts (a node with many pods) take a few hundred KiB.
  auto text = read_regular_file("/proc/self/mountinfo", kMaxMountinfoBytes);
  if (!text) {
    log::warn("cannot read the mount table: " + text.error().message);
    return "";
  }
  return find_cgroup2_mount(*text).value_or("");
}

std::optional<CgroupResolver> open_cgroups(const std::string& root) {
  if (root.empty()) {
    log::warn("no cgroup v2 hierarchy is mounted: events carry no container or pod");
    return std::nullopt;
  }
  auto resolver = CgroupResolver::open(root);
  if (!resolver) {
    log::warn(resolver.error().message + ": events carry no container or pod");
    return std::nullopt;
  }
  log::info("cgroup v2 hierarchy at " + root);
  return std::move(*resolver);
}

}  // namespace netmon
