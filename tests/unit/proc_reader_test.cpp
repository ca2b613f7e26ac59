#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "events/event.h"
#include "process/proc_reader.h"
#include "process/process.h"
#include "temp_dir.h"

namespace netmon {
namespace {

namespace fs = std::filesystem;

class FakeProc {
 public:
  const std::string& root() const { return dir_.path(); }

  void write(const std::string& entry, const std::string& file, const std::string& text) const {
    fs::create_directories(root() + "/" + entry);
    std::ofstream(root() + "/" + entry + "/" + file, std::ios::binary) << text;
  }
  void link_exe(const std::string& entry, const std::string& target) const {
    fs::create_directories(root() + "/" + entry);
    ASSERT_EQ(::symlink(target.c_str(), (root() + "/" + entry + "/exe").c_str()), 0);
  }

 private:
  test::TempDir dir_;
};

// A /proc/PID/stat line as Linux 5.x/6.x writes it (52 fields).
std::string stat_line(uint32_t pid, const std::string& comm, uint32_t ppid, uint64_t start) {
  return std::to_string(pid) + " (" + comm + ") S " + std::to_string(ppid) + " " +
         std::to_string(pid) + " " + std::to_string(pid) + " 34817 " + std::to_string(pid) +
         " 4194560 1234 0 3 0 12 3 0 0 20 0 1 0 " + std::to_string(start) +
         " 9330688 1024 18446744073709551615 94215373914112 94215374010297 140730417371776 0 0 0 "
         "0 3686400 134307847 1 0 0 17 2 0 0 0 0 0 94215374039472 94215374044360 94215387758592 "
         "140730417376533 140730417376557 140730417376557 140730417381355 0\n";
}

std::string status_text(const std::string& uids, const std::string& gids, const std::string& inh,
                        const std::string& prm, const std::string& eff) {
  return "Name:\tprog\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4242\n"
         "PPid:\t1\nTracerPid:\t0\nUid:\t" +
         uids + "\nGid:\t" + gids +
         "\nFDSize:\t64\nGroups:\t4 24 27 1000 \nNStgid:\t4242\nVmRSS:\t    5120 kB\n"
         "Threads:\t1\nSigQ:\t0/63371\nCapInh:\t" +
         inh + "\nCapPrm:\t" + prm + "\nCapEff:\t" + eff +
         "\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\n";
}

uint64_t ns_per_tick() { return 1'000'000'000ull / static_cast<uint64_t>(sysconf(_SC_CLK_TCK)); }

const std::string kComm = "my (weird) prog";

// A complete entry: a setuid-root process started by uid 1000.
void write_full_entry(const FakeProc& proc) {
  proc.write("4242", "stat", stat_line(4242, kComm, 1, 86949427));
  proc.write("4242", "status",
             status_text("1000\t0\t0\t0", "1000\t1000\t1000\t1000", "0000000000000000",
                         "000001ffffffffff", "0000000000003000"));
  proc.write("4242", "loginuid", "1000");
  proc.write("4242", "cmdline", std::string("/usr/bin/prog\0--flag\0value two\0", 31));
  proc.link_exe("4242", "/opt/my tools/prog-bin");
}

// ---- ProcReader::read ----

TEST(ProcReader, ReadsIdentityFromStat) {
  FakeProc proc;
  write_full_entry(proc);
  auto e = ProcReader(proc.root()).read(4242);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->pid, 4242u);
  EXPECT_EQ(e->ppid, 1u);
  EXPECT_EQ(e->fork_start_ns, 86949427ull * ns_per_tick());
  EXPECT_EQ(e->image_start_ns, e->fork_start_ns);
  EXPECT_FALSE(e->cloned);
  EXPECT_EQ(e->exited_ns, 0u);
  EXPECT_EQ(e->parent_exec_id, "");
}

TEST(ProcReader, ReadsCredentialsFromStatusAndLoginuid) {
  FakeProc proc;
  write_full_entry(proc);
  auto e = ProcReader(proc.root()).read(4242);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->uid, 1000u);
  EXPECT_EQ(e->euid, 0u);
  EXPECT_EQ(e->gid, 1000u);
  EXPECT_EQ(e->egid, 1000u);
  EXPECT_EQ(e->auid, 1000u);
  EXPECT_EQ(e->cap_inheritable, 0u);
  EXPECT_EQ(e->cap_permitted, 0x1ffffffffffull);
  EXPECT_EQ(e->cap_effective, 0x3000ull);
}

TEST(ProcReader, ReadsImageFromExeAndCmdline) {
  FakeProc proc;
  write_full_entry(proc);
  auto e = ProcReader(proc.root()).read(4242);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->binary_path, "/opt/my tools/prog-bin");
  EXPECT_EQ(e->filename, "prog-bin");
  EXPECT_EQ(e->args, "--flag value two");
  EXPECT_EQ(e->exec_id, make_exec_id(4242, 86949427ull * ns_per_tick()));
}

TEST(ProcReader, EuidDifferentFromUidSetsSetuidOnly) {
  FakeProc proc;
  write_full_entry(proc);
  auto e = ProcReader(proc.root()).read(4242);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->secureexec, static_cast<uint32_t>(kSecureExecSetuid));
}

TEST(ProcReader, EgidDifferentFromGidSetsSetgid) {
  FakeProc proc;
  proc.write("77", "stat", stat_line(77, "sg", 1, 500));
  proc.write("77", "status", status_text("5\t5\t5\t5", "5\t0\t0\t0", "0", "0", "0"));
  auto e = ProcReader(proc.root()).read(77);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->secureexec, static_cast<uint32_t>(kSecureExecSetgid));
}

TEST(ProcReader, MatchingIdsSetNoSecureexec) {
  FakeProc proc;
  proc.write("77", "stat", stat_line(77, "plain", 1, 500));
  proc.write("77", "status", status_text("5\t5\t5\t5", "6\t6\t6\t6", "0", "0", "0"));
  proc.link_exe("77", "/usr/bin/plain");
  auto e = ProcReader(proc.root()).read(77);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->secureexec, 0u);
}

TEST(ProcReader, DeletedExeIsFilelessAndSuffixStripped) {
  FakeProc proc;
  proc.write("88", "stat", stat_line(88, "dropper", 1, 700));
  proc.link_exe("88", "/tmp/dropper (deleted)");
  auto e = ProcReader(proc.root()).read(88);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->binary_path, "/tmp/dropper");
  EXPECT_EQ(e->filename, "dropper");
  EXPECT_TRUE(e->secureexec & kSecureExecFileless);
}

TEST(ProcReader, MemfdExeIsFileless) {
  FakeProc proc;
  proc.write("89", "stat", stat_line(89, "3", 1, 700));
  proc.link_exe("89", "/memfd:foo (deleted)");
  auto e = ProcReader(proc.root()).read(89);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->binary_path, "/memfd:foo");
  EXPECT_EQ(e->filename, "memfd:foo");
  EXPECT_EQ(e->secureexec, static_cast<uint32_t>(kSecureExecFileless));
}

TEST(ProcReader, OrdinaryExeIsNotFileless) {
  FakeProc proc;
  proc.write("90", "stat", stat_line(90, "deleted", 1, 700));
  proc.link_exe("90", "/usr/bin/deleted");
  auto e = ProcReader(proc.root()).read(90);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->binary_path, "/usr/bin/deleted");
  EXPECT_FALSE(e->secureexec & kSecureExecFileless);
}

TEST(ProcReader, KernelThreadWithoutExeUsesComm) {
  FakeProc proc;
  proc.write("2", "stat", stat_line(2, "kthreadd", 0, 0));
  proc.write("2", "status",
             status_text("0\t0\t0\t0", "0\t0\t0\t0", "0000000000000000", "000001ffffffffff",
                         "000001ffffffffff"));
  proc.write("2", "cmdline", "");
  proc.write("2", "loginuid", "4294967295\n");
  auto e = ProcReader(proc.root()).read(2);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->filename, "kthreadd");
  EXPECT_EQ(e->binary_path, "");
  EXPECT_EQ(e->args, "");
  EXPECT_EQ(e->ppid, 0u);
  EXPECT_EQ(e->auid, 0xffffffffu);
  EXPECT_EQ(e->cap_effective, 0x1ffffffffffull);
  EXPECT_EQ(e->exec_id, make_exec_id(2, 0));
}

TEST(ProcReader, CommWithParenthesesAndSpacesIsKeptWhole) {
  FakeProc proc;
  proc.write("91", "stat", stat_line(91, "(my (weird) prog)", 7, 1234));
  auto e = ProcReader(proc.root()).read(91);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->filename, "(my (weird) prog)");
  EXPECT_EQ(e->ppid, 7u);
  EXPECT_EQ(e->fork_start_ns, 1234ull * ns_per_tick());
}

TEST(ProcReader, StatOnlyEntryKeepsDefaults) {
  FakeProc proc;
  proc.write("92", "stat", stat_line(92, "bare", 3, 10));
  auto e = ProcReader(proc.root()).read(92);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->auid, 0xffffffffu);
  EXPECT_EQ(e->uid, 0u);
  EXPECT_EQ(e->cap_effective, 0u);
  EXPECT_EQ(e->filename, "bare");
  EXPECT_EQ(e->args, "");
}

TEST(ProcReader, LongCmdlineIsCutWithMarker) {
  FakeProc proc;
  proc.write("93", "stat", stat_line(93, "long", 1, 10));
  proc.write("93", "cmdline", std::string("long\0", 5) + std::string(3000, 'z') + '\0');
  auto e = ProcReader(proc.root()).read(93);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->args, std::string(kArgsMaxBytes - 5, 'z') + std::string(kArgsTruncatedMarker));
}

TEST(ProcReader, MissingPidIsNullopt) {
  FakeProc proc;
  write_full_entry(proc);
  EXPECT_FALSE(ProcReader(proc.root()).read(4243).has_value());
  EXPECT_FALSE(ProcReader(proc.root() + "/nonexistent").read(4242).has_value());
}

TEST(ProcReader, SpecialFilesInACopiedProcRootAreNotRead) {
  // A --proc-root that is not procfs could hold a FIFO (whose open waited for a writer) or a
  // device where a proc file should be: refused at once.
  FakeProc proc;
  write_full_entry(proc);
  fs::remove(proc.root() + "/4242/status");
  ASSERT_EQ(::mkfifo((proc.root() + "/4242/status").c_str(), 0600), 0);
  fs::remove(proc.root() + "/4242/cmdline");
  ASSERT_EQ(::symlink("/dev/zero", (proc.root() + "/4242/cmdline").c_str()), 0);
  fs::create_directories(proc.root() + "/77");
  ASSERT_EQ(::mkfifo((proc.root() + "/77/stat").c_str(), 0600), 0);
  const ProcReader reader(proc.root());
  const auto started = std::chrono::steady_clock::now();
  auto e = reader.read(4242);
  EXPECT_FALSE(reader.read(77).has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(1));
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->uid, 0u);  // status not read
  EXPECT_TRUE(e->args.empty());
  fs::create_directories(proc.root() + "/sys/kernel");
  ASSERT_EQ(::mkfifo((proc.root() + "/sys/kernel/cap_last_cap").c_str(), 0600), 0);
  EXPECT_EQ(read_last_cap(proc.root()), 40);
}

TEST(ProcReader, MalformedStatIsNullopt) {
  FakeProc proc;
  proc.write("94", "stat", "94 (short) S 1 94 94\n");
  proc.write("94", "status", status_text("0\t0\t0\t0", "0\t0\t0\t0", "0", "0", "0"));
  proc.link_exe("94", "/usr/bin/short");
  proc.write("95", "stat", "garbage without parentheses\n");
  proc.write("96", "stat", "");
  const ProcReader reader(proc.root());
  EXPECT_FALSE(reader.read(94).has_value());
  EXPECT_FALSE(reader.read(95).has_value());
  EXPECT_FALSE(reader.read(96).has_value());
}

TEST(ProcReader, RootIsKept) { EXPECT_EQ(ProcReader("/host/proc").root(), "/host/proc"); }

// ---- ProcReader::scan ----

TEST(ProcReader, ScanVisitsNumericDirsOnly) {
  FakeProc proc;
  proc.write("1", "stat", stat_line(1, "init", 0, 5));
  proc.write("42", "stat", stat_line(42, "worker", 1, 600));
  proc.write("31337", "stat", stat_line(31337, "sleep", 42, 9000));
  // Valid stat files under names that are not pids must not be read.
  proc.write("self", "stat", stat_line(999, "self", 1, 1));
  proc.write("12abc", "stat", stat_line(12, "notpid", 1, 1));
  proc.write("0", "stat", stat_line(0, "zero", 0, 0));
  proc.write("sys/kernel", "cap_last_cap", "40\n");
  // A numeric entry that vanished (no stat) is skipped.
  fs::create_directories(proc.root() + "/555");

  std::vector<uint32_t> pids;
  std::vector<std::string> names;
  ProcReader(proc.root()).scan([&](ProcessEntry&& e) {
    pids.push_back(e.pid);
    names.push_back(e.filename);
  });
  std::sort(pids.begin(), pids.end());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(pids, (std::vector<uint32_t>{1, 42, 31337}));
  EXPECT_EQ(names, (std::vector<std::string>{"init", "sleep", "worker"}));
}

TEST(ProcReader, ScanOfMissingRootVisitsNothing) {
  int visits = 0;
  ProcReader("/nonexistent-netmon-proc").scan([&](ProcessEntry&&) { ++visits; });
  EXPECT_EQ(visits, 0);
}

// ---- parse_proc_stat ----

TEST(ProcParseStat, ParsesCommPpidAndStart) {
  auto st = parse_proc_stat(stat_line(4242, kComm, 17, 86949427));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->comm, kComm);
  EXPECT_EQ(st->ppid, 17u);
  EXPECT_EQ(st->start_ticks, 86949427u);
}

TEST(ProcParseStat, CommEndingInParenAndContainingNumbers) {
  auto st = parse_proc_stat(stat_line(5, ") 1 2 3 (", 99, 123));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->comm, ") 1 2 3 (");
  EXPECT_EQ(st->ppid, 99u);
  EXPECT_EQ(st->start_ticks, 123u);
}

TEST(ProcParseStat, EmptyComm) {
  auto st = parse_proc_stat(stat_line(5, "", 2, 3));
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->comm, "");
  EXPECT_EQ(st->ppid, 2u);
}

TEST(ProcParseStat, TooFewFieldsIsNullopt) {
  // Fields 3..21 only: starttime (22) is missing.
  EXPECT_FALSE(
      parse_proc_stat("1 (init) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0").has_value());
  EXPECT_FALSE(parse_proc_stat("1 (init) S 0").has_value());
  EXPECT_FALSE(parse_proc_stat("1 (init)").has_value());
}

TEST(ProcParseStat, MissingParenthesesIsNullopt) {
  EXPECT_FALSE(parse_proc_stat("").has_value());
  EXPECT_FALSE(
      parse_proc_stat("1 init S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 5 6 7").has_value());
  EXPECT_FALSE(
      parse_proc_stat("1 )init( S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 5 6 7").has_value());
}

TEST(ProcParseStat, NonNumericPpidOrStartIsNullopt) {
  EXPECT_FALSE(
      parse_proc_stat("1 (x) S p 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 5 6 7").has_value());
  EXPECT_FALSE(
      parse_proc_stat("1 (x) S 0 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 5x 6 7").has_value());
  EXPECT_FALSE(
      parse_proc_stat("1 (x) S -1 1 1 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 5 6 7").has_value());
}

// ---- parse_proc_status ----

TEST(ProcParseStatus, ParsesIdsAndCaps) {
  ProcessEntry e;
  ASSERT_TRUE(
      parse_proc_status(status_text("1000\t0\t0\t0", "100\t101\t101\t101", "0000000000000001",
                                    "00000000a80425fb", "0000000000002000"),
                        e));
  EXPECT_EQ(e.uid, 1000u);
  EXPECT_EQ(e.euid, 0u);
  EXPECT_EQ(e.gid, 100u);
  EXPECT_EQ(e.egid, 101u);
  EXPECT_EQ(e.cap_inheritable, 1u);
  EXPECT_EQ(e.cap_permitted, 0xa80425fbull);
  EXPECT_EQ(e.cap_effective, 0x2000ull);
}

TEST(ProcParseStatus, MissingCapLineIsFalse) {
  const std::string full = status_text("1\t1\t1\t1", "1\t1\t1\t1", "0", "0", "0");
  for (const char* key : {"CapInh:", "CapPrm:", "CapEff:", "Uid:", "Gid:"}) {
    std::string text = full;
    const size_t at = text.find(key);
    ASSERT_NE(at, std::string::npos);
    text.erase(at, text.find('\n', at) + 1 - at);
    ProcessEntry e;
    EXPECT_FALSE(parse_proc_status(text, e)) << "without " << key;
  }
}

TEST(ProcParseStatus, EmptyIsFalse) {
  ProcessEntry e;
  EXPECT_FALSE(parse_proc_status("", e));
}

TEST(ProcParseStatus, MalformedValuesAreFalse) {
  ProcessEntry e;
  EXPECT_FALSE(parse_proc_status(status_text("1000", "1\t1\t1\t1", "0", "0", "0"), e));
  EXPECT_FALSE(parse_proc_status(status_text("x\t1\t1\t1", "1\t1\t1\t1", "0", "0", "0"), e));
  EXPECT_FALSE(parse_proc_status(status_text("1\t1\t1\t1", "1\t1\t1\t1", "0", "0", "zz"), e));
  EXPECT_FALSE(parse_proc_status(status_text("1\t1\t1\t1", "1\t1\t1\t1", "0", "0 1", "0"), e));
  EXPECT_FALSE(parse_proc_status(status_text("1\t1\t1\t1", "1\t1\t1\t1", "", "0", "0"), e));
}

}  // namespace
}  // namespace netmon
