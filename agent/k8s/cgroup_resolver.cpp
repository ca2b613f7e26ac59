#include "k8s/cgroup_resolver.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

#include "common/log.h"

namespace netmon {
namespace {

// kernfs (cgroup2) file handles: type FILEID_KERNFS, 8 bytes holding the node id, which is the
// cgroup id on 64-bit kernels (include/linux/exportfs.h).
constexpr int kFileIdKernfs = 0xfe;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Unescapes mountinfo's octal escapes ("\040" for a space).
std::string unescape_mount_path(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      const char a = s[i + 1], b = s[i + 2], c = s[i + 3];
      if (a >= '0' && a <= '7' && b >= '0' && b <= '7' && c >= '0' && c <= '7') {
        out += static_cast<char>((a - '0') * 64 + (b - '0') * 8 + (c - '0'));
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

}  // namespace

std::optional<std::string> find_cgroup2_mount(std::string_view mountinfo) {
  size_t pos = 0;
  while (pos < mountinfo.size()) {
    size_t eol = mountinfo.find('\n', pos);
    if (eol == std::string_view::npos) eol = mountinfo.size();
    const std::string_view line = mountinfo.substr(pos, eol - pos);
    pos = eol + 1;
    // "36 35 0:30 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw"
    const size_t dash = line.find(" - ");
    if (dash == std::string_view::npos) continue;
    const std::string_view after = line.substr(dash + 3);
    if (after.substr(0, 8) != "cgroup2 ") continue;
    std::vector<std::string_view> fields;
    size_t i = 0;
    while (i < dash && fields.size() < 5) {
      const size_t j = line.find(' ', i);
      fields.push_back(line.substr(i, (j == std::string_view::npos || j > dash ? dash : j) - i));
      if (j == std::string_view::npos || j >= dash) break;
      i = j + 1;
    }
    if (fields.size() >= 5) return unescape_mount_path(fields[4]);
  }
  return std::nullopt;
}

CgroupResolver::CgroupResolver(std::string root, UniqueFd root_fd)
    : root_(std::move(root)), root_fd_(std::move(root_fd)) {}

Result<CgroupResolver> CgroupResolver::open(std::string root) {
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  UniqueFd fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) {
    return fail("cannot open the cgroup v2 root " + root + ": " + std::strerror(errno), errno);
  }
  return CgroupResolver(std::move(root), std::move(fd));
}

std::optional<std::string> CgroupResolver::path_by_handle(uint64_t cgroup_id) {
  if (!handles_work_) return std::nullopt;
  // struct file_handle ends in a flexible array: build it in aligned storage.
  alignas(file_handle) unsigned char storage[sizeof(file_handle) + sizeof(uint64_t)] = {};
  auto* handle = reinterpret_cast<file_handle*>(storage);
  handle->handle_bytes = sizeof(uint64_t);
  handle->handle_type = kFileIdKernfs;
  std::memcpy(storage + sizeof(file_handle), &cgroup_id, sizeof(cgroup_id));
  UniqueFd fd(::open_by_handle_at(root_fd_.get(), handle, O_RDONLY | O_CLOEXEC | O_PATH));
  if (!fd.valid()) {
    if (errno == EPERM || errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS) {
      log::info(std::string("cgroup file handles unavailable (") + std::strerror(errno) +
                "); resolving cgroup ids by walking " + root_);
      handles_work_ = false;
    }
    return std::nullopt;  // ESTALE: the cgroup is gone
  }
  char link[4096];
  const std::string proc_fd = "/proc/self/fd/" + std::to_string(fd.get());
  const ssize_t n = ::readlink(proc_fd.c_str(), link, sizeof(link) - 1);
  if (n <= 0) return std::nullopt;
  std::string_view path(link, static_cast<size_t>(n));
  // The link names the directory in this mount namespace: under our root, or (when the root is
  // a bind mount of a subtree) relative to the mount's own root.
  if (path.substr(0, root_.size()) == root_ &&
      (path.size() == root_.size() || path[root_.size()] == '/')) {
    path.remove_prefix(root_.size());
  }
  return path.empty() ? std::string("/") : std::string(path);
}

namespace {
std::unordered_map<uint64_t, std::string>* g_walk_target = nullptr;
size_t g_walk_prefix = 0;

int walk_visit(const char* path, const struct stat* st, int type, struct FTW*) {
  if (type == FTW_D || type == FTW_DP) {
    std::string rel(path + g_walk_prefix);
    (*g_walk_target)[st->st_ino] = rel.empty() ? "/" : rel;
  }
  return 0;
}
}  // namespace

void CgroupResolver::walk_tree() {
  const int64_t now = now_ms();
  if (now - last_walk_ms_ < 1000) return;
  last_walk_ms_ = now;
  ++stats_.tree_walks;
  walked_.clear();
  g_walk_target = &walked_;
  g_walk_prefix = root_.size();
  ::nftw(root_.c_str(), walk_visit, 32, FTW_PHYS | FTW_MOUNT);
  g_walk_target = nullptr;
}

std::optional<std::string> CgroupResolver::path_of(uint64_t cgroup_id) {
  if (auto path = path_by_handle(cgroup_id)) return path;
  if (handles_work_) return std::nullopt;
  auto it = walked_.find(cgroup_id);
  if (it == walked_.end()) {
    walk_tree();
    it = walked_.find(cgroup_id);
    if (it == walked_.end()) return std::nullopt;
  }
  return it->second;
}

const CgroupIdentity& CgroupResolver::identity(uint64_t cgroup_id) {
  ++stats_.lookups;
  if (auto it = cache_.find(cgroup_id); it != cache_.end()) return it->second;
  ++stats_.cache_misses;
  auto path = path_of(cgroup_id);
  if (!path) {
    ++stats_.unresolved;
    return empty_;  // not cached: the cgroup may appear in the next walk
  }
  if (cache_.size() >= kMaxCached) cache_.clear();
  return cache_.emplace(cgroup_id, parse_cgroup_path(*path)).first->second;
}

}  // namespace netmon
