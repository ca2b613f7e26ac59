#include "process/table.h"

#include <sys/stat.h>

namespace netmon {

ProcessTable::ProcessTable(ProcReader reader, size_t capacity)
    : reader_(std::move(reader)), capacity_(capacity < 16 ? 16 : capacity) {}

void ProcessTable::seed() {
  reader_.scan([this](ProcessEntry&& e) {
    if (size() < capacity_) live_[e.pid] = std::move(e);
  });
  for (auto& [pid, e] : live_) e.parent_exec_id = parent_exec_id(e.ppid);
}

std::string ProcessTable::parent_exec_id(uint32_t ppid) {
  auto it = live_.find(ppid);
  return it == live_.end() ? std::string() : it->second.exec_id;
}

void ProcessTable::retire(ProcessEntry&& e, uint64_t exited_ns) {
  e.exited_ns = exited_ns;
  const ExitedKey key{e.pid, tick(e.fork_start_ns)};
  auto [it, inserted] = exited_.insert_or_assign(key, std::move(e));
  (void)it;
  if (inserted) exit_order_.push_back(key);
  make_room(0);
}

void ProcessTable::make_room(uint32_t keep_pid) {
  while (size() > capacity_ && !exit_order_.empty()) {
    exited_.erase(exit_order_.front());
    exit_order_.pop_front();
    ++stats_.evictions;
  }
  if (size() <= capacity_) return;
  // Only live entries left: drop those whose process is gone (an exit record was lost).
  for (auto it = live_.begin(); it != live_.end() && size() > capacity_;) {
    if (it->first == keep_pid) {
      ++it;
      continue;
    }
    struct stat st {};
    const std::string dir = reader_.root() + "/" + std::to_string(it->first);
    if (::stat(dir.c_str(), &st) != 0) {
      it = live_.erase(it);
      ++stats_.stale_removed;
    } else {
      ++it;
    }
  }
}

ProcessEntry& ProcessTable::put_live(ProcessEntry&& e) {
  const uint32_t pid = e.pid;
  auto it = live_.find(pid);
  if (it == live_.end()) {
    live_.emplace(pid, std::move(e));
  } else if (same_task(it->second, e.fork_start_ns)) {
    it->second = std::move(e);  // a new image of the same process (exec)
  } else {
    // The pid was reused and the old process's exit was not seen: keep it as exited.
    ProcessEntry old = std::move(it->second);
    it->second = std::move(e);
    old.exited_ns = it->second.fork_start_ns;
    const ExitedKey key{old.pid, tick(old.fork_start_ns)};
    if (exited_.insert_or_assign(key, std::move(old)).second) exit_order_.push_back(key);
  }
  make_room(pid);
  return live_.at(pid);
}

void ProcessTable::on_exec(const ExecEvent& x) {
  ProcessEntry e;
  e.pid = x.task.pid;
  e.ppid = x.task.ppid;
  e.fork_start_ns = x.task.start_ns;
  e.image_start_ns = x.boot_ns;
  e.cloned = false;
  static_cast<Credentials&>(e) = x.task;  // those after the exec
  e.secureexec = x.secureexec;
  if (!x.binary_path.empty()) {
    e.binary_path = std::string(x.binary_path);
    e.filename = std::string(path_basename(x.binary_path));
  } else {
    e.filename = std::string(x.task.comm_view());
  }
  e.args = join_args(x.raw_args, x.args_truncated);
  e.exec_id = make_exec_id(e.pid, e.image_start_ns);
  e.parent_exec_id = parent_exec_id(e.ppid);
  put_live(std::move(e));
}

void ProcessTable::on_fork(const ForkEvent& f) {
  ProcessEntry e;
  const ProcessEntry* parent = lookup(f.child.ppid, f.parent_start_ns, false);
  if (parent) {
    e = *parent;  // the image fields: a cloned process runs its parent's image
    e.parent_exec_id = parent->exec_id;
  } else {
    e.filename = std::string(f.child.comm_view());
  }
  e.pid = f.child.pid;
  e.ppid = f.child.ppid;
  e.fork_start_ns = f.child.start_ns;
  e.image_start_ns = f.child.start_ns;
  e.cloned = true;
  static_cast<Credentials&>(e) = f.child;  // the child's own
  e.exited_ns = 0;
  e.exec_id = make_exec_id(e.pid, e.image_start_ns);
  put_live(std::move(e));
}

void ProcessTable::on_exit(const ExitEvent& x) {
  auto it = live_.find(x.pid);
  if (it == live_.end() || !same_task(it->second, x.start_ns)) return;
  ProcessEntry e = std::move(it->second);
  live_.erase(it);
  retire(std::move(e), x.boot_ns);
}

const ProcessEntry* ProcessTable::find(uint32_t pid, uint64_t start_ns) {
  return lookup(pid, start_ns, true);
}

const ProcessEntry* ProcessTable::lookup(uint32_t pid, uint64_t start_ns, bool count) {
  if (auto it = live_.find(pid); it != live_.end() && same_task(it->second, start_ns)) {
    if (count) ++stats_.hits;
    return &it->second;
  }
  if (auto it = exited_.find(ExitedKey{pid, tick(start_ns)}); it != exited_.end()) {
    if (count) ++stats_.hits;
    return &it->second;
  }
  // Not seen yet (e.g. its exec record was lost): read it while it still exists.
  if (auto e = reader_.read(pid); e && same_task(*e, start_ns)) {
    ++stats_.resolved_from_proc;
    e->parent_exec_id = parent_exec_id(e->ppid);
    return &put_live(std::move(*e));
  }
  if (count) ++stats_.misses;
  return nullptr;
}

const ProcessEntry* ProcessTable::find_current(uint32_t pid) {
  if (auto it = live_.find(pid); it != live_.end()) return &it->second;
  if (auto e = reader_.read(pid)) {
    ++stats_.resolved_from_proc;
    e->parent_exec_id = parent_exec_id(e->ppid);
    return &put_live(std::move(*e));
  }
  return nullptr;
}

ProcessTableStats ProcessTable::stats() const {
  ProcessTableStats s = stats_;
  s.live = live_.size();
  s.exited = exited_.size();
  return s;
}

}  // namespace netmon
