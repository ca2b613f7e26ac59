// Unit tests for the kubelet URL parsing, the cgroup2 mount lookup and the cgroup id resolver.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "k8s/cgroup_resolver.h"
#include "k8s/kubelet.h"

namespace netmon {
namespace {

TEST(KubeletUrl, SplitsSchemeHostPortAndPath) {
  auto u = parse_kubelet_url("https://10.0.0.5:10250/pods");
  ASSERT_TRUE(u) << u.error().message;
  EXPECT_EQ(u->scheme_host_port, "https://10.0.0.5:10250");
  EXPECT_EQ(u->path, "/pods");
}

TEST(KubeletUrl, DefaultsThePathToPods) {
  auto u = parse_kubelet_url("https://node-1:10250");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->path, "/pods");
}

TEST(KubeletUrl, KeepsIpv6Literals) {
  auto u = parse_kubelet_url("https://[fd00::5]:10250/pods");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->scheme_host_port, "https://[fd00::5]:10250");
}

TEST(KubeletUrl, RejectsOtherSchemesAndMissingParts) {
  EXPECT_FALSE(parse_kubelet_url("ftp://x/pods"));
  EXPECT_FALSE(parse_kubelet_url("10.0.0.5:10250/pods"));
  EXPECT_FALSE(parse_kubelet_url("https:///pods"));
}

TEST(KubeletResultName, NamesEveryResult) {
  for (int r = 0; r < static_cast<int>(KubeletResult::kCount); ++r) {
    EXPECT_NE(kubelet_result_name(static_cast<KubeletResult>(r)), "unknown") << r;
  }
  EXPECT_EQ(kubelet_result_name(KubeletResult::kTlsError), "tls_error");
}

TEST(CgroupMount, FindsTheCgroup2LineInMountinfo) {
  const std::string mountinfo =
      "25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n"
      "35 25 0:29 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n"
      "36 35 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n"
      "37 35 0:31 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,name=systemd\n";
  EXPECT_EQ(find_cgroup2_mount(mountinfo), "/sys/fs/cgroup/unified");
}

TEST(CgroupMount, UnescapesSpacesAndSkipsOptionalFields) {
  const std::string mountinfo =
      "36 35 0:30 / /host/sys/fs/my\\040cgroup rw shared:10 master:3 - cgroup2 none rw\n";
  EXPECT_EQ(find_cgroup2_mount(mountinfo), "/host/sys/fs/my cgroup");
}

TEST(CgroupMount, NoneWithoutCgroup2) {
  EXPECT_EQ(find_cgroup2_mount("37 35 0:31 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"),
            std::nullopt);
  EXPECT_EQ(find_cgroup2_mount(""), std::nullopt);
}

std::optional<std::string> host_cgroup2_mount() {
  std::ifstream in("/proc/self/mountinfo");
  std::stringstream text;
  text << in.rdbuf();
  return find_cgroup2_mount(text.str());
}

TEST(CgroupResolver, ResolvesTheRootAndOwnCgroupById) {
  auto mount = host_cgroup2_mount();
  if (!mount) GTEST_SKIP() << "no cgroup2 hierarchy mounted";
  auto resolver = CgroupResolver::open(*mount);
  ASSERT_TRUE(resolver) << resolver.error().message;
  struct stat st {};
  ASSERT_EQ(::stat(mount->c_str(), &st), 0);
  EXPECT_EQ(resolver->path_of(st.st_ino), "/");
  // This process's own cgroup (the "0::" line of /proc/self/cgroup), by its directory's inode.
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  std::string own;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) own = line.substr(3);
  }
  if (own.empty() || own.find("..") != std::string::npos) GTEST_SKIP() << "own cgroup unknown";
  const std::string dir = *mount + (own == "/" ? "" : own);
  ASSERT_EQ(::stat(dir.c_str(), &st), 0) << dir;
  EXPECT_EQ(resolver->path_of(st.st_ino), own);
  EXPECT_FALSE(resolver->identity(st.st_ino).in_pod());
}

TEST(CgroupResolver, UnknownIdResolvesToEmptyIdentity) {
  auto mount = host_cgroup2_mount();
  if (!mount) GTEST_SKIP() << "no cgroup2 hierarchy mounted";
  auto resolver = CgroupResolver::open(*mount);
  ASSERT_TRUE(resolver);
  const CgroupIdentity& id = resolver->identity(0x7fffffffffffull);
  EXPECT_FALSE(id.in_pod());
  EXPECT_FALSE(id.in_container());
  EXPECT_EQ(resolver->stats().unresolved, 1u);
}

TEST(CgroupResolver, OpenFailsForAMissingRoot) {
  auto resolver = CgroupResolver::open("/nonexistent/cgroup");
  ASSERT_FALSE(resolver);
  EXPECT_NE(resolver.error().message.find("/nonexistent/cgroup"), std::string::npos);
}

}  // namespace
}  // namespace netmon
