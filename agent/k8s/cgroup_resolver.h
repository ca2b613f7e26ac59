// CgroupResolver: cgroup v2 id (what bpf_get_current_cgroup_id() returns: the inode number of
// the cgroup's directory) -> the cgroup's path and the container/pod identity it encodes.
// Owned by the pipeline thread; not thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

#include "common/result.h"
#include "common/unique_fd.h"
#include "k8s/cgroup_path.h"

namespace netmon {

// The mount point of the cgroup v2 hierarchy, from a mountinfo text (/proc/self/mountinfo):
// the first "cgroup2" filesystem. nullopt when there is none.
std::optional<std::string> find_cgroup2_mount(std::string_view mountinfo);

struct CgroupResolverStats {
  uint64_t lookups = 0;
  uint64_t cache_misses = 0;
  uint64_t unresolved = 0;  // ids whose directory could not be found (cgroup already removed)
  uint64_t tree_walks = 0;
};

class CgroupResolver {
 public:
  // `root`: where the cgroup2 hierarchy is mounted (e.g. /sys/fs/cgroup/unified here, or
  // /host/sys/fs/cgroup in a container). Opened once; fails when it is not a directory.
  static Result<CgroupResolver> open(std::string root);

  // The identity for `cgroup_id`: cached; on a miss the id is resolved through
  // open_by_handle_at() (a kernfs file handle is the id itself), or, where that is refused, by
  // walking the hierarchy once (at most once per second). An unknown id yields an empty identity.
  const CgroupIdentity& identity(uint64_t cgroup_id);

  // The path below the root ("/kubepods/burstable/pod.../..."), or nullopt.
  std::optional<std::string> path_of(uint64_t cgroup_id);

  const std::string& root() const { return root_; }
  const CgroupResolverStats& stats() const { return stats_; }

 private:
  CgroupResolver(std::string root, UniqueFd root_fd);
  std::optional<std::string> path_by_handle(uint64_t cgroup_id);
  void walk_tree();

  static constexpr size_t kMaxCached = 16384;

  std::string root_;
  UniqueFd root_fd_;
  bool handles_work_ = true;
  int64_t last_walk_ms_ = -1000000;
  std::unordered_map<uint64_t, std::string> walked_;  // id -> path, from the last walk
  std::unordered_map<uint64_t, CgroupIdentity> cache_;
  CgroupIdentity empty_;
  CgroupResolverStats stats_;
};

}  // namespace netmon
