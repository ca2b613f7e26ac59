#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "events/event.h"
#include "process/proc_reader.h"
#include "process/process.h"
#include "process/table.h"
#include "temp_dir.h"

namespace netmon {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSec = 1'000'000'000;
constexpr uint64_t kMs = 1'000'000;

// An empty directory by default: the table's /proc fallbacks find nothing unless a test adds
// entries.
class FakeProc {
 public:
  const std::string& root() const { return dir_.path(); }
  ProcReader reader() const { return ProcReader(root()); }

  // A process as /proc shows it: stat, status, exe and cmdline.
  void add(uint32_t pid, uint32_t ppid, uint64_t start_ticks, const std::string& exe,
           const std::string& cmdline) const {
    const std::string dir = root() + "/" + std::to_string(pid);
    fs::create_directories(dir);
    std::ofstream(dir + "/stat")
        << pid << " (" << std::string(path_basename(exe)).substr(0, 15) << ") S " << ppid
        << " 1 1 0 -1 4194560 10 0 0 0 1 1 0 0 20 0 1 0 " << start_ticks
        << " 9330688 1024 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 "
           "0 0 0\n";
    std::ofstream(dir + "/status") << "Name:\tx\nUid:\t1000\t1000\t1000\t1000\n"
                                      "Gid:\t1000\t1000\t1000\t1000\nCapInh:\t0000000000000000\n"
                                      "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n";
    std::ofstream(dir + "/cmdline", std::ios::binary) << cmdline;
    ASSERT_EQ(::symlink(exe.c_str(), (dir + "/exe").c_str()), 0);
  }

 private:
  test::TempDir dir_;
};

uint64_t ns_per_tick() { return kSec / static_cast<uint64_t>(sysconf(_SC_CLK_TCK)); }

TaskInfo task(uint32_t pid, uint32_t ppid, uint64_t start_ns, const char* comm = "") {
  TaskInfo t;
  t.pid = pid;
  t.tid = pid;
  t.ppid = ppid;
  t.start_ns = start_ns;
  std::strncpy(t.comm.data(), comm, t.comm.size() - 1);
  return t;
}

// `path` and `raw_args` must outlive the event.
ExecEvent exec_event(uint32_t pid, uint32_t ppid, uint64_t start_ns, uint64_t boot_ns,
                     std::string_view path, std::string_view raw_args = {}) {
  ExecEvent x;
  x.boot_ns = boot_ns;
  x.task = task(pid, ppid, start_ns, "comm");
  x.binary_path = path;
  x.raw_args = raw_args;
  return x;
}

ForkEvent fork_event(uint32_t pid, uint32_t ppid, uint64_t start_ns, uint64_t parent_start_ns,
                     const char* comm = "") {
  ForkEvent f;
  f.boot_ns = start_ns;
  f.child = task(pid, ppid, start_ns, comm);
  f.parent_start_ns = parent_start_ns;
  return f;
}

ExitEvent exit_event(uint32_t pid, uint64_t start_ns, uint64_t boot_ns) {
  ExitEvent x;
  x.pid = pid;
  x.start_ns = start_ns;
  x.boot_ns = boot_ns;
  return x;
}

const std::string kTelnetArgs = std::string("telnet\0localhost\0", 17) + std::string("7878\0", 5);

// ---- exec ----

TEST(ProcessTable, ExecInsertsImageFromEvent) {
  FakeProc proc;
  ProcessTable table(proc.reader(), 64);
  ExecEvent x = exec_event(100, 1, 5 * kSec + 3 * kMs, 7 * kSec + 1, "/usr/bin/inetutils-telnet",
                           kTelnetArgs);
  x.task.uid = 1000;
  x.task.euid = 0;
  x.task.auid = 1000;
  x.task.cap_effective = 1ull << 13;
  x.secureexec = kSecureExecSetuid;
  table.on_exec(x);

  const ProcessEntry* e = table.find(100, 5 * kSec + 3 * kMs);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->pid, 100u);
  EXPECT_EQ(e->ppid, 1u);
  EXPECT_EQ(e->fork_start_ns, 5 * kSec + 3 * kMs);
  EXPECT_EQ(e->image_start_ns, 7 * kSec + 1);
  EXPECT_FALSE(e->cloned);
  EXPECT_EQ(e->binary_path, "/usr/bin/inetutils-telnet");
  EXPECT_EQ(e->filename, "inetutils-telnet");
  EXPECT_EQ(e->args, "localhost 7878");
  EXPECT_EQ(e->exec_id, make_exec_id(100, 7 * kSec + 1));
  EXPECT_EQ(e->parent_exec_id, "");
  EXPECT_EQ(e->uid, 1000u);
  EXPECT_EQ(e->euid, 0u);
  EXPECT_EQ(e->auid, 1000u);
  EXPECT_EQ(e->cap_effective, 1ull << 13);
  EXPECT_EQ(e->secureexec, static_cast<uint32_t>(kSecureExecSetuid));
  EXPECT_EQ(e->exited_ns, 0u);
  EXPECT_EQ(table.stats().live, 1u);
}

TEST(ProcessTable, ExecWithoutPathUsesComm) {
  FakeProc proc;
  ProcessTable table(proc.reader(), 64);
  table.on_exec(exec_event(100, 1, 5 * kSec, 5 * kSec, ""));
  const ProcessEntry* e = table.find(100, 5 * kSec);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->filename, "comm");
  EXPECT_EQ(e->binary_path, "");
}

TEST(ProcessTable, ExecTruncatedArgsGetMarker) {
  FakeProc proc;
  ProcessTable table(proc.reader(), 64);
  const std::string raw("curl\0http://exa", 15);
  ExecEvent x = exec_event(100, 1, 5 * kSec, 5 * kSec, "/usr/bin/curl", raw);
  x.args_truncated = true;
  table.on_exec(x);
  const ProcessEntry* e = table.find(100, 5 * kSec);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->args, "http://exa...");
}

TEST(ProcessTable, ExecLinksKnownParent) {
  FakeProc proc;
  ProcessTable table(proc.reader(), 64);
  table.on_exec(exec_event(50, 1, 2 * kSec, 3 * kSec, "/bin/bash"));
  table.on_exec(exec_event(100, 50, 5 * kSec, 6 * kSec, "/usr/bin/nc"));
  const ProcessEntry* e = table.find(100, 5 * kSec);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->parent_exec_id, make_exec_id(50, 3 * kSec));
}

// ---- find ----

TEST(ProcessTable, FindHitsOnlyTheSameTaskStart) {
  FakeProc proc;
  ProcessTable table(proc.reader(), 64);
  table.on_exec(exec_event(100, 1, 5 * kSec + 3 * kMs, 6 * kSec, "/usr/bin/nc"));
  // Start times compare at clock-tick (10 ms) precision.
  EXPECT_NE(table.find(100, 5 * kSec + 3 * kMs), nullptr);
  EXPECT_NE(table.find(100, 5 * kSec + 9 * kMs), nullptr);
  EXPECT_EQ(table.stats().hits, 2u);
  EXPECT_EQ(table.find(100, 5 * kSec + 10 * kMs), nullptr);
  EXPECT_EQ(table.find(100, 9 * kSec), nullptr);
  EXPECT_EQ(table.find(101, 5 * kSec + 3 * kMs), nullptr);
  EXPECT_EQ(table.stats().misses, 3u);
  EXPECT_EQ(table.stats().resolved_from_proc, 0u);
  EXPECT_EQ(table.stats().live, 1u);
}

TEST(ProcessTable, FindMissReadsProcWhenStartMatches) {
  FakeProc proc;
  proc.add(300, 50, 700, "/usr/bin/ssh", std::string("ssh\0host\0", 9));
  ProcessTable table(proc.reader(), 64);
  table.on_exec(exec_event(50, 1, 2 * kSec, 3 * kSec, "/bin/bash"));

  const ProcessEntry* e = table.find(300, 700 * ns_per_tick());
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->binary_path, "/usr/bin/ssh");
  EXPECT_EQ(e->args, "host");
  EXPECT_EQ(e->exec_id, make_exec_id(300, 700 * ns_per_tick()));
  EXPECT_EQ(e->parent_exec_id, make_exec_id(50, 3 * kSec));
  EXPECT_EQ(table.stats().resolved_from_proc, 1u);
  EXPECT_EQ(table.stats().misses, 0u);

  // Now in the table: a plain hit.
  EXPECT_NE(table.find(300, 700 * ns_per_tick()), nullptr);
  EXPECT_EQ(table.stats().resolved_from_proc, 1u);
  EXPECT_EQ(table.stats().hits, 1u);
}

TEST(ProcessTable, FindMissIgnoresProcEntryOfAnotherTask) {
  FakeProc proc;
  proc.add(300, 1, 700, "/usr/bin/ssh", "ssh");
  ProcessTable table(proc.reader(), 64);
  EXPECT_EQ(table.find(300, 700 * ns_per_tick() + 5 * kSec), nullptr);
  EXPECT_EQ(table.stats().resolved_from_proc, 0u);
  EXPECT_EQ(table.stats().misses, 1u);
  EXPECT_EQ(table.stats().live, 0u);
}

TEST(ProcessTable, FindCurrentIgnoresStartAndFallsBackToProc) {
  FakeProc proc;
  proc.add(60, 1, 400, "/usr/sbin/sshd", "sshd");
  ProcessTable table(proc.reader(), 64);
  table.on_exec(exec_event(50, 1, 2 * kSec, 3 * kSec, "/bin/bash"));

  const ProcessEntry* e = table.find_current(50);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->binary_path, "/bin/bash");

  e = table.find_current(60);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->binary_path, "/usr/sbin/sshd");
  EXPECT_EQ(table.stats().resolved_from_proc, 1u);

  EXPECT_EQ(table.find_current(70), nullptr);
  EXPECT_EQ(table.stats().live, 2u);
}

// ---- fork ----

TEST(ProcessTable, ForkOfKnownParentIsClonedWithParentImage) {
  FakeProc proc;
  ProcessTable table(proc.reader(), 64);
  const std::string raw("bash\0-c\0nc localhost 80\0", 24);
  table.on_exec(exec_event(100, 1, 2 * kSec, 3 * kSec, "/usr/bin/bash", raw));
  ForkEvent f = fork_event(101, 100, 4 * kSec + 5 * kMs, 2 * kSec, "bash");
  f.child.uid = 1000;
  f.child.cap_effective = 1ull << 21;
  table.on_fork(f);

  const ProcessEntry* e = table.find(101, 4 * kSec + 5 * kMs);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->cloned);
  EXPECT_EQ(e->pid, 101u);
  EXPECT_EQ(e->ppid, 100u);
  EXPECT_EQ(e->binary_path, "/usr/bin/bash");
  EXPECT_EQ(e->filename, "bash");
  EXPECT_EQ(e->args, "-c nc localhost 80");
  EXPECT_EQ(e->fork_start_ns, 4 * kSec + 5 * kMs);
  EXPECT_EQ(e->image_start_ns, 4 * kSec + 5 * kMs);
  EXPECT_EQ(e->exec_id, make_exec_id(101, 4 * kSec + 5 * kMs));
  EXPECT_EQ(e->parent_exec_id, make_exec_id(100, 3 * kSec));
  EXPECT_EQ(e->uid, 1000u);
  EXPECT_EQ(e->cap_effective, 1ull << 21);
  EXPECT_EQ(e->exited_ns, 0u);
}

TEST(ProcessTable, ForkOfParentOnlyInProcInheritsItsImage) {
  FakeProc proc;
  proc.add(100, 1, 600, "/usr/sbin/sshd", std::string("sshd\0-D\0", 8));
  ProcessTable table(proc.reader(), 64);
  table.on_fork(fork_event(101, 100, 20 * kSec, 600 * ns_per_tick(), "sshd"));
  const ProcessEntry* e = table.find(101, 20 * kSec);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->cloned);
  EXPECT_EQ(e->binary_path, "/usr/sbin/sshd");
  EXPECT_EQ(e->args, "-D");
  EXPECT_EQ(e->parent_exec_id, make_exec_id(100, 600 * ns_per_tick()));
  EXPECT_EQ(table.stats().resolved_from_proc, 1u);
}

TEST(ProcessTable, ForkOfUnknownParentUsesChildComm) {
  FakeProc proc;
  ProcessTable table(proc.reader(), 64);
  table.on_fork(fork_event(401, 400, 4 * kSec, 2 * kSec, "worker"));
  const ProcessEntry* e = table.find(401, 4 * kSec);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->cloned);
  EXPECT_EQ(e->filename, "worker");
  EXPECT_EQ(e->binary_path, "");
  EXPECT_EQ(e->args, "");
  EXPECT_EQ(e->parent_exec_id, "");
  EXPECT_EQ(e->exec_id, make_exec_id(401, 4 * kSec));
}

TEST(ProcessTable, ExecAfterForkReplacesImage) {
  FakeProc proc;
  ProcessTable table(proc.reader(), 64);
  table.on_exec(exec_event(100, 1, 2 * kSec, 3 * kSec, "/usr/bin/bash"));
  table.on_fork(fork_event(101, 100, 4 * kSec, 2 * kSec, "bash"));
  table.on_exec(
      exec_event(101, 100, 4 * kSec, 4 * kSec + 50 * kMs, "/usr/bin/telnet", kTelnetArgs));

  const ProcessEntry* e = table.find(101, 4 * kSec);
  ASSERT_NE(e, nullptr);
  EXPECT_FALSE(e->cloned);
  EXPECT_EQ(e->binary_path, "/usr/bin/telnet");
  EXPECT_EQ(e->filename, "telnet");
  EXPECT_EQ(e->args, "localhost 7878");
  EXPECT_EQ(e->fork_start_ns, 4 * kSec);
  EXPECT_EQ(e->image_start_ns, 4 * kSec + 50 * kMs);
  EXPECT_EQ(e->exec_id, make_exec_id(101, 4 * kSec + 50 * kMs));
  EXPECT_EQ(e->parent_exec_id, make_exec_id(100, 3 * kSec));
  EXPECT_EQ(table.stats().live, 2u);
  EXPECT_EQ(table.stats().exited, 0u);
}

// ---- exit and pid reuse ----

TEST(ProcessTable, ExitKeepsEntryFindable) {
  FakeProc proc;
  ProcessTable table(proc.reader(), 64);
  table.on_exec(exec_event(100, 1, 2 * kSec, 3 * kSec, "/usr/bin/nc"));
  table.on_exit(exit_event(100, 2 * kSec, 8 * kSec));

  EXPECT_EQ(table.stats().live, 0u);
  EXPECT_EQ(table.stats().exited, 1u);
  const ProcessEntry* e = table.find(100, 2 * kSec);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->exited_ns, 8 * kSec);
  EXPECT_EQ(e->binary_path, "/usr/bin/nc");
  EXPECT_EQ(table.find_current(100), nullptr);
}

TEST(ProcessTable, ExitOfAnotherTaskIsIgnored) {
  FakeProc proc;
  ProcessTable table(proc.reader(), 64);
  table.on_exec(exec_event(100, 1, 2 * kSec, 3 * kSec, "/usr/bin/nc"));
  table.on_exit(exit_event(100, 1 * kSec, 8 * kSec));
  table.on_exit(exit_event(555, 1 * kSec, 8 * kSec));
  EXPECT_EQ(table.stats().live, 1u);
  EXPECT_EQ(table.stats().exited, 0u);
  const ProcessEntry* e = table.find(100, 2 * kSec);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->exited_ns, 0u);
}

TEST(ProcessTable, PidReuseAfterExitResolvesSeparately) {
  FakeProc proc;
  ProcessTable table(proc.reader(), 64);
  table.on_exec(exec_event(100, 1, 2 * kSec, 3 * kSec, "/usr/bin/old"));
  table.on_exit(exit_event(100, 2 * kSec, 8 * kSec));
  table.on_exec(exec_event(100, 1, 9 * kSec, 10 * kSec, "/usr/bin/new"));

  const ProcessEntry* old_e = table.find(100, 2 * kSec);
  ASSERT_NE(old_e, nullptr);
  EXPECT_EQ(old_e->binary_path, "/usr/bin/old");
  EXPECT_EQ(old_e->exited_ns, 8 * kSec);
  const ProcessEntry* new_e = table.find(100, 9 * kSec);
  ASSERT_NE(new_e, nullptr);
  EXPECT_EQ(new_e->binary_path, "/usr/bin/new");
  EXPECT_EQ(new_e->exited_ns, 0u);
  EXPECT_EQ(new_e->exec_id, make_exec_id(100, 10 * kSec));
  EXPECT_EQ(table.find_current(100), new_e);
  EXPECT_EQ(table.size(), 2u);
}

TEST(ProcessTable, PidReuseWithoutExitRetiresOldEntry) {
  FakeProc proc;
  ProcessTable table(proc.reader(), 64);
  table.on_exec(exec_event(100, 1, 2 * kSec, 3 * kSec, "/usr/bin/old"));
  table.on_exec(exec_event(100, 1, 9 * kSec, 10 * kSec, "/usr/bin/new"));

  EXPECT_EQ(table.stats().live, 1u);
  EXPECT_EQ(table.stats().exited, 1u);
  const ProcessEntry* old_e = table.find(100, 2 * kSec);
  ASSERT_NE(old_e, nullptr);
  EXPECT_EQ(old_e->binary_path, "/usr/bin/old");
  EXPECT_EQ(old_e->exited_ns, 9 * kSec);
  const ProcessEntry* new_e = table.find(100, 9 * kSec);
  ASSERT_NE(new_e, nullptr);
  EXPECT_EQ(new_e->binary_path, "/usr/bin/new");
}

// ---- capacity ----

TEST(ProcessTable, ExitsBeyondCapacityEvictOldestExitedFirst) {
  FakeProc proc;
  ProcessTable table(proc.reader(), 16);
  table.on_exec(exec_event(10, 1, 1 * kSec, 1 * kSec, "/usr/sbin/sshd"));
  for (uint32_t i = 0; i < 20; ++i) {
    const uint64_t start = (100 + i) * kSec;
    table.on_exec(exec_event(1000 + i, 10, start, start, "/usr/bin/true"));
    table.on_exit(exit_event(1000 + i, start, start + kMs));
  }
  EXPECT_EQ(table.size(), 16u);
  EXPECT_EQ(table.stats().live, 1u);
  EXPECT_EQ(table.stats().exited, 15u);
  EXPECT_EQ(table.stats().evictions, 5u);
  EXPECT_EQ(table.stats().stale_removed, 0u);
  for (uint32_t i = 0; i < 5; ++i) {
    EXPECT_EQ(table.find(1000 + i, (100 + i) * kSec), nullptr) << "pid " << 1000 + i;
  }
  for (uint32_t i = 5; i < 20; ++i) {
    EXPECT_NE(table.find(1000 + i, (100 + i) * kSec), nullptr) << "pid " << 1000 + i;
  }
  EXPECT_NE(table.find(10, 1 * kSec), nullptr);
}

TEST(ProcessTable, CapacityBelowSixteenIsRaisedToSixteen) {
  FakeProc proc;
  ProcessTable table(proc.reader(), 2);
  for (uint32_t i = 0; i < 16; ++i) {
    const uint64_t start = (100 + i) * kSec;
    table.on_exec(exec_event(1000 + i, 1, start, start, "/usr/bin/true"));
    table.on_exit(exit_event(1000 + i, start, start + kMs));
  }
  EXPECT_EQ(table.size(), 16u);
  EXPECT_EQ(table.stats().evictions, 0u);
  table.on_exec(exec_event(2000, 1, 500 * kSec, 500 * kSec, "/usr/bin/true"));
  EXPECT_EQ(table.size(), 16u);
  EXPECT_EQ(table.stats().evictions, 1u);
  EXPECT_EQ(table.find(1000, 100 * kSec), nullptr);
}

TEST(ProcessTable, LiveOverflowDropsProcessesGoneFromProc) {
  FakeProc proc;
  // Every process but pid 5 still exists.
  for (uint32_t pid = 1; pid <= 16; ++pid) {
    if (pid != 5) fs::create_directories(proc.root() + "/" + std::to_string(pid));
  }
  ProcessTable table(proc.reader(), 16);
  for (uint32_t pid = 1; pid <= 17; ++pid) {
    table.on_exec(exec_event(pid, 0, pid * kSec, pid * kSec, "/usr/bin/x"));
  }
  EXPECT_EQ(table.size(), 16u);
  EXPECT_EQ(table.stats().stale_removed, 1u);
  EXPECT_EQ(table.find_current(5), nullptr);
  EXPECT_NE(table.find_current(17), nullptr);
}

// ---- seed ----

TEST(ProcessTable, SeedReadsProcAndLinksParents) {
  FakeProc proc;
  proc.add(1, 0, 5, "/usr/lib/systemd/systemd", std::string("/sbin/init\0splash\0", 18));
  proc.add(100, 1, 600, "/usr/sbin/sshd", std::string("sshd: /usr/sbin/sshd\0", 21));
  proc.add(200, 100, 900, "/usr/bin/bash", std::string("-bash\0", 6));
  ProcessTable table(proc.reader(), 64);
  table.seed();

  EXPECT_EQ(table.stats().live, 3u);
  const ProcessEntry* init = table.find(1, 5 * ns_per_tick());
  const ProcessEntry* sshd = table.find(100, 600 * ns_per_tick());
  const ProcessEntry* bash = table.find(200, 900 * ns_per_tick());
  ASSERT_NE(init, nullptr);
  ASSERT_NE(sshd, nullptr);
  ASSERT_NE(bash, nullptr);
  EXPECT_EQ(table.stats().hits, 3u);
  EXPECT_EQ(table.stats().resolved_from_proc, 0u);

  EXPECT_EQ(init->parent_exec_id, "");
  EXPECT_EQ(sshd->parent_exec_id, init->exec_id);
  EXPECT_EQ(bash->parent_exec_id, sshd->exec_id);
  EXPECT_EQ(bash->exec_id, make_exec_id(200, 900 * ns_per_tick()));
  EXPECT_EQ(init->filename, "systemd");
  EXPECT_EQ(init->args, "splash");
  EXPECT_FALSE(bash->cloned);
}

TEST(ProcessTable, SeedStopsAtCapacity) {
  FakeProc proc;
  for (uint32_t pid = 1; pid <= 20; ++pid) proc.add(pid, 0, pid * 100, "/usr/bin/x", "x");
  ProcessTable table(proc.reader(), 16);
  table.seed();
  EXPECT_EQ(table.size(), 16u);
  EXPECT_EQ(table.stats().live, 16u);
}

TEST(ProcessTable, SeedOfEmptyProcLeavesTableEmpty) {
  FakeProc proc;
  ProcessTable table(proc.reader(), 64);
  table.seed();
  EXPECT_EQ(table.size(), 0u);
}

TEST(ProcessTable, ExecOfChildOfSeededParentLinksIt) {
  FakeProc proc;
  proc.add(100, 1, 600, "/usr/sbin/sshd", "sshd");
  ProcessTable table(proc.reader(), 64);
  table.seed();
  table.on_exec(exec_event(300, 100, 20 * kSec, 20 * kSec, "/usr/bin/scp"));
  const ProcessEntry* e = table.find(300, 20 * kSec);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->parent_exec_id, make_exec_id(100, 600 * ns_per_tick()));
}

}  // namespace
}  // namespace netmon
