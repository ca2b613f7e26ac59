// The snapshot fallback's /proc scan (agent/bpf/snapshot_netlink.cpp) on a hostile copy of /proc:
// descriptors that are not sockets or not well formed, a process without descriptors (exited,
// or a kernel thread), descriptor tables past their bound, a namespace that cannot be entered.
// Without privileges: a regular file is no network namespace, so nothing is dumped.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "bpf/snapshot_netlink.h"
#include "temp_dir.h"

namespace netmon {
namespace {

void fd_link(const test::TempDir& dir, const std::string& pid_fd, const std::string& target) {
  const std::string path = dir.path() + "/" + pid_fd;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  ASSERT_EQ(::symlink(target.c_str(), path.c_str()), 0) << path;
}

struct Counted {
  int reports = 0;
  int rooms = 0;
};

Result<DiagStats> enumerate(const std::string& root, const DiagBounds& bounds, Counted& n) {
  return enumerate_connections(
      root, bounds, [&n](const DiagConnection&) { ++n.reports; },
      [&n] {
        ++n.rooms;
        return true;
      });
}

TEST(SnapshotNetlink, ScansAHostileProcWithinItsBounds) {
  test::TempDir proc;
  for (int fd = 0; fd < 10; ++fd) {
    fd_link(proc, "100/fd/" + std::to_string(fd), "socket:[" + std::to_string(1000 + fd) + "]");
  }
  proc.file("100/ns/net", "");                 // a regular file: setns() refuses it
  fd_link(proc, "200/fd/0", "socket:[1000]");  // shared with pid 100
  fd_link(proc, "200/fd/1", "pipe:[5]");
  fd_link(proc, "200/fd/2", "socket:[12x]");
  fd_link(proc, "200/fd/3", "socket:[4294967296]");  // past an inode number's 32 bits
  fd_link(proc, "200/fd/4", "socket:[");
  proc.file("300/status", "Name:\tgone\n");  // no fd directory: exited, or a kernel thread
  proc.file("net/fd/0", "");                 // not a pid
  DiagBounds bounds;
  bounds.max_fds_per_process = 5;
  Counted n;
  auto stats = enumerate(proc.path(), bounds, n);
  ASSERT_TRUE(stats) << stats.error().message;
  EXPECT_EQ(stats->processes, 2u);
  EXPECT_EQ(stats->socket_fds, 6u);  // 5 of pid 100 (its bound), socket:[1000] of pid 200
  EXPECT_TRUE(stats->truncated);
  EXPECT_EQ(stats->namespaces, 0u);
  EXPECT_EQ(stats->namespaces_failed, 1u);
  EXPECT_EQ(n.reports, 0);
  EXPECT_EQ(n.rooms, 0);

  bounds.max_fds_per_process = 100;
  stats = enumerate(proc.path(), bounds, n);
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->socket_fds, 11u);
  EXPECT_FALSE(stats->truncated);

  bounds.max_socket_fds = 4;  // in all
  stats = enumerate(proc.path(), bounds, n);
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->socket_fds, 4u);
  EXPECT_TRUE(stats->truncated);

  bounds = DiagBounds{};
  bounds.max_processes = 1;
  stats = enumerate(proc.path(), bounds, n);
  ASSERT_TRUE(stats);
  EXPECT_LE(stats->processes, 1u);  // the first pid directory readdir() gives, 300 or not
  EXPECT_TRUE(stats->truncated);
}

TEST(SnapshotNetlink, FailsWithoutProc) {
  Counted n;
  auto stats = enumerate("/nonexistent/netmon-proc", DiagBounds{}, n);
  ASSERT_FALSE(stats);
  EXPECT_NE(stats.error().message.find("/nonexistent/netmon-proc"), std::string::npos);
}

}  // namespace
}  // namespace netmon
