// In-cluster discovery: the kubelet's defaults from a service-account directory (a temporary one
// here) and $NODE_IP/$NODE_NAME, and the node's name.
#include "k8s/in_cluster.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "temp_dir.h"

namespace netmon {
namespace {

InClusterEnvironment environment(const test::TempDir& dir, std::string node_ip,
                                 std::string node_name) {
  InClusterEnvironment env;
  env.service_account_dir = dir.path() + "/serviceaccount";
  env.node_ip = std::move(node_ip);
  env.node_name = std::move(node_name);
  return env;
}

TEST(InClusterTest, OutsideAClusterNothingIsFilledIn) {
  test::TempDir dir;
  const KubeletOptions k = with_in_cluster_defaults({}, environment(dir, "10.0.0.5", "node-a"));
  EXPECT_EQ(k.url, "");
  EXPECT_EQ(k.token_file, "");
  EXPECT_EQ(k.ca_file, "");
}

TEST(InClusterTest, InAClusterTheKubeletOfNodeIpWithTheServiceAccount) {
  test::TempDir dir;
  const std::string token = dir.file("serviceaccount/token", "t");
  const std::string ca = dir.file("serviceaccount/ca.crt", "c");
  const KubeletOptions k = with_in_cluster_defaults({}, environment(dir, "10.0.0.5", "node-a"));
  EXPECT_EQ(k.url, "https://10.0.0.5:10250/pods");
  EXPECT_EQ(k.token_file, token);
  EXPECT_EQ(k.ca_file, ca);
}

TEST(InClusterTest, NodeNameWhenNoNodeIpAndIpv6Bracketed) {
  test::TempDir dir;
  dir.file("serviceaccount/token", "t");
  EXPECT_EQ(with_in_cluster_defaults({}, environment(dir, "", "node-a")).url,
            "https://node-a:10250/pods");
  EXPECT_EQ(with_in_cluster_defaults({}, environment(dir, "fd00::5", "node-a")).url,
            "https://[fd00::5]:10250/pods");
  EXPECT_EQ(with_in_cluster_defaults({}, environment(dir, "", "")).url, "");
}

TEST(InClusterTest, ConfiguredValuesWinAndSkipVerifyTakesNoCa) {
  test::TempDir dir;
  dir.file("serviceaccount/token", "t");
  dir.file("serviceaccount/ca.crt", "c");
  KubeletOptions given;
  given.url = "https://kubelet:10250/pods";
  given.token_file = "/my/token";
  given.ca_file = "/my/ca";
  KubeletOptions k = with_in_cluster_defaults(given, environment(dir, "10.0.0.5", ""));
  EXPECT_EQ(k.url, given.url);
  EXPECT_EQ(k.token_file, given.token_file);
  EXPECT_EQ(k.ca_file, given.ca_file);

  KubeletOptions insecure;
  insecure.insecure_skip_verify = true;
  k = with_in_cluster_defaults(insecure, environment(dir, "10.0.0.5", ""));
  EXPECT_EQ(k.ca_file, "");
  EXPECT_FALSE(k.token_file.empty());
}

TEST(InClusterTest, CaWithoutTokenIsStillTheDefaultCa) {
  test::TempDir dir;
  const std::string ca = dir.file("serviceaccount/ca.crt", "c");
  const KubeletOptions k = with_in_cluster_defaults({}, environment(dir, "10.0.0.5", ""));
  EXPECT_EQ(k.url, "");
  EXPECT_EQ(k.ca_file, ca);
}

TEST(InClusterTest, NodeNameConfiguredThenEnvironmentThenHostName) {
  test::TempDir dir;
  EXPECT_EQ(node_name_or_default("given", environment(dir, "", "node-a")), "given");
  EXPECT_EQ(node_name_or_default("", environment(dir, "", "node-a")), "node-a");
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof(host) - 1), 0);
  EXPECT_EQ(node_name_or_default("", environment(dir, "", "")), host);
}

TEST(InClusterTest, ConfiguredCgroupRootWins) {
  EXPECT_EQ(cgroup2_root_or_default("/host/cgroup"), "/host/cgroup");
  EXPECT_FALSE(open_cgroups("").has_value());
}

}  // namespace
}  // namespace netmon
