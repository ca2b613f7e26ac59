#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "events/event.h"
#include "process/process.h"
#include "temp_dir.h"

namespace netmon {
namespace {

namespace fs = std::filesystem;

// The kernel's capability names, bit 0 first (include/uapi/linux/capability.h).
const std::vector<std::string> kExpectedCapNames = {
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
};

uint64_t bits_through(int last) { return last == 63 ? ~0ull : (1ull << (last + 1)) - 1; }

std::string names_of(uint64_t caps) {
  std::string out;
  for (size_t bit = 0; bit < kExpectedCapNames.size(); ++bit) {
    if (!(caps & (1ull << bit))) continue;
    if (!out.empty()) out += " | ";
    out += kExpectedCapNames[bit];
  }
  return out;
}

using test::TempDir;

void write_cap_last_cap(const std::string& root, const std::string& text) {
  fs::create_directories(root + "/sys/kernel");
  std::ofstream(root + "/sys/kernel/cap_last_cap") << text;
}

// ---- capabilities ----

TEST(ProcessFormat, CapabilitiesNoneIsEmpty) {
  EXPECT_EQ(format_capabilities(0, 40), "");
  EXPECT_EQ(format_capabilities(0, 37), "");
}

TEST(ProcessFormat, CapabilitiesAllThroughLastCapIsAnyCaps) {
  EXPECT_EQ(format_capabilities(bits_through(40), 40), "ANY_CAPS");
  EXPECT_EQ(format_capabilities(0x000001ffffffffffull, 40), "ANY_CAPS");
}

TEST(ProcessFormat, CapabilitiesAllThroughSmallerLastCapIsAnyCaps) {
  EXPECT_EQ(format_capabilities(bits_through(37), 37), "ANY_CAPS");
  // The same mask lacks CAP_PERFMON..CAP_CHECKPOINT_RESTORE on a kernel that knows them.
  EXPECT_EQ(format_capabilities(bits_through(37), 40), names_of(bits_through(37)));
  // One short of the smaller set is not ANY_CAPS either.
  EXPECT_EQ(format_capabilities(bits_through(36), 37), names_of(bits_through(36)));
}

TEST(ProcessFormat, CapabilitiesAllButSysResourceListsTheRestInBitOrder) {
  const uint64_t caps = bits_through(40) & ~(1ull << 24);
  const std::string text = format_capabilities(caps, 40);
  EXPECT_EQ(text, names_of(caps));
  EXPECT_EQ(text.find("CAP_SYS_RESOURCE"), std::string::npos);
  EXPECT_EQ(text.rfind("CAP_CHOWN | CAP_DAC_OVERRIDE | ", 0), 0u);
  EXPECT_NE(text.find("CAP_SYS_NICE | CAP_SYS_TIME"), std::string::npos);
  const std::string tail = "CAP_PERFMON | CAP_BPF | CAP_CHECKPOINT_RESTORE";
  ASSERT_GT(text.size(), tail.size());
  EXPECT_EQ(text.substr(text.size() - tail.size()), tail);
}

TEST(ProcessFormat, CapabilitiesNetRawAndSysAdmin) {
  EXPECT_EQ(format_capabilities((1ull << 13) | (1ull << 21), 40), "CAP_NET_RAW | CAP_SYS_ADMIN");
}

TEST(ProcessFormat, CapabilitiesSingleBits) {
  EXPECT_EQ(format_capabilities(1ull << 0, 40), "CAP_CHOWN");
  EXPECT_EQ(format_capabilities(1ull << 40, 40), "CAP_CHECKPOINT_RESTORE");
  for (size_t bit = 0; bit < kExpectedCapNames.size(); ++bit) {
    EXPECT_EQ(format_capabilities(1ull << bit, 40), kExpectedCapNames[bit]) << "bit " << bit;
  }
}

TEST(ProcessFormat, CapabilitiesUnknownHighBitIsNumbered) {
  EXPECT_EQ(format_capabilities(1ull << 50, 40), "CAP_50");
  EXPECT_EQ(format_capabilities((1ull << 13) | (1ull << 50), 40), "CAP_NET_RAW | CAP_50");
  EXPECT_EQ(format_capabilities(1ull << 63, 40), "CAP_63");
}

TEST(ProcessFormat, AppendCapabilitiesAppends) {
  std::string out = "caps=";
  append_capabilities(out, 1ull << 13, 40);
  EXPECT_EQ(out, "caps=CAP_NET_RAW");
  append_capabilities(out, 0, 40);
  EXPECT_EQ(out, "caps=CAP_NET_RAW");
}

// ---- secureexec ----

TEST(ProcessFormat, SecureexecNoneIsEmpty) { EXPECT_EQ(format_secureexec(0), ""); }

TEST(ProcessFormat, SecureexecSetuid) { EXPECT_EQ(format_secureexec(kSecureExecSetuid), "SETUID"); }

TEST(ProcessFormat, SecureexecSetuidSetgid) {
  EXPECT_EQ(format_secureexec(kSecureExecSetuid | kSecureExecSetgid), "SETUID | SETGID");
}

TEST(ProcessFormat, SecureexecAllFourInOrder) {
  const uint32_t all =
      kSecureExecFileless | kSecureExecFileCaps | kSecureExecSetgid | kSecureExecSetuid;
  EXPECT_EQ(format_secureexec(all), "SETUID | SETGID | FILE_CAPS | FILELESS_EXEC");
}

TEST(ProcessFormat, SecureexecSingleLaterFlags) {
  EXPECT_EQ(format_secureexec(kSecureExecFileCaps), "FILE_CAPS");
  EXPECT_EQ(format_secureexec(kSecureExecFileless), "FILELESS_EXEC");
  EXPECT_EQ(format_secureexec(kSecureExecSetgid | kSecureExecFileless), "SETGID | FILELESS_EXEC");
}

// ---- join_args ----

TEST(ProcessFormat, JoinArgsDropsArgv0AndJoinsWithSpaces) {
  const std::string raw = std::string("telnet\0localhost\0", 17) + std::string("7878\0", 5);
  ASSERT_EQ(raw.size(), 22u);
  EXPECT_EQ(join_args(raw, false), "localhost 7878");
}

TEST(ProcessFormat, JoinArgsWithoutTrailingNul) {
  EXPECT_EQ(join_args(std::string("nc\0-l\0"
                                  "8080",
                                  10),
                      false),
            "-l 8080");
}

TEST(ProcessFormat, JoinArgsArgv0OnlyIsEmpty) {
  EXPECT_EQ(join_args(std::string("telnet\0", 7), false), "");
  EXPECT_EQ(join_args("telnet", false), "");
}

TEST(ProcessFormat, JoinArgsEmptyIsEmpty) { EXPECT_EQ(join_args("", false), ""); }

TEST(ProcessFormat, JoinArgsTruncatedFlagAppendsMarker) {
  const std::string raw("curl\0http://exa", 15);
  EXPECT_EQ(join_args(raw, true), "http://exa" + std::string(kArgsTruncatedMarker));
  EXPECT_EQ(join_args("", true), std::string(kArgsTruncatedMarker));
}

TEST(ProcessFormat, JoinArgsAtLimitIsNotCut) {
  std::string raw("prog\0", 5);
  raw += std::string(kArgsMaxBytes - raw.size(), 'a');
  ASSERT_EQ(raw.size(), kArgsMaxBytes);
  EXPECT_EQ(join_args(raw, false), std::string(kArgsMaxBytes - 5, 'a'));
}

TEST(ProcessFormat, JoinArgsOneByteOverLimitIsCut) {
  std::string raw("prog\0", 5);
  raw += std::string(kArgsMaxBytes + 1 - raw.size(), 'a');
  ASSERT_EQ(raw.size(), kArgsMaxBytes + 1);
  EXPECT_EQ(join_args(raw, false), std::string(kArgsMaxBytes - 5, 'a') + "...");
}

TEST(ProcessFormat, JoinArgsLongerThanLimitIsCutWithMarker) {
  std::string raw("prog\0", 5);
  for (int i = 0; i < 300; ++i) raw += std::string("arg\0", 4) + std::string(1, 'x');
  ASSERT_GT(raw.size(), kArgsMaxBytes);
  const std::string out = join_args(raw, false);
  // What is left of the first kArgsMaxBytes bytes, argv[0] dropped, then the marker.
  std::string expected(raw.substr(5, kArgsMaxBytes - 5));
  for (char& c : expected) {
    if (c == '\0') c = ' ';
  }
  if (!expected.empty() && expected.back() == ' ') expected.pop_back();
  expected += kArgsTruncatedMarker;
  EXPECT_EQ(out, expected);
  EXPECT_LE(out.size(), kArgsMaxBytes + kArgsTruncatedMarker.size());
  EXPECT_EQ(out.substr(out.size() - kArgsTruncatedMarker.size()), kArgsTruncatedMarker);
  EXPECT_EQ(out.find('\0'), std::string::npos);
}

TEST(ProcessFormat, JoinArgsLongSingleArgumentIsCut) {
  std::string raw("prog\0", 5);
  raw += std::string(2000, 'a');
  EXPECT_EQ(join_args(raw, false), std::string(kArgsMaxBytes - 5, 'a') + "...");
}

// ---- path_basename ----

TEST(ProcessFormat, PathBasename) {
  EXPECT_EQ(path_basename("/usr/bin/inetutils-telnet"), "inetutils-telnet");
  EXPECT_EQ(path_basename("/nc"), "nc");
  EXPECT_EQ(path_basename("relative/dir/tool"), "tool");
  EXPECT_EQ(path_basename("bare"), "bare");
  EXPECT_EQ(path_basename(""), "");
  EXPECT_EQ(path_basename("/usr/bin/"), "");
  EXPECT_EQ(path_basename("/memfd:payload"), "memfd:payload");
}

// ---- exec_id ----

// The RFC 4648 vectors are in process_test.cpp (Base64Encode).

TEST(ProcessFormat, ExecIdMatchesReferenceExamples) {
  EXPECT_EQ(make_exec_id(84537, 869494270000000), "ODQ1Mzc6ODY5NDk0MjcwMDAwMDAw");
  EXPECT_EQ(make_exec_id(84660, 869506889611238), "ODQ2NjA6ODY5NTA2ODg5NjExMjM4");
}

TEST(ProcessFormat, ExecIdIsBase64OfPidColonStart) {
  EXPECT_EQ(make_exec_id(1, 0), base64_encode("1:0"));
  EXPECT_EQ(make_exec_id(4294967295u, 18446744073709551615ull),
            base64_encode("4294967295:18446744073709551615"));
  EXPECT_NE(make_exec_id(84537, 869494270000000), make_exec_id(84538, 869494270000000));
  EXPECT_NE(make_exec_id(84537, 869494270000000), make_exec_id(84537, 869494270000001));
}

// ---- read_last_cap ----

TEST(ProcessFormat, ReadLastCapFromProc) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  write_cap_last_cap(dir.path(), "40\n");
  EXPECT_EQ(read_last_cap(dir.path()), 40);
  write_cap_last_cap(dir.path(), "37\n");
  EXPECT_EQ(read_last_cap(dir.path()), 37);
}

TEST(ProcessFormat, ReadLastCapFallsBackTo40WhenMissing) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  EXPECT_EQ(read_last_cap(dir.path()), 40);
  EXPECT_EQ(read_last_cap(dir.path() + "/does-not-exist"), 40);
}

TEST(ProcessFormat, ReadLastCapFallsBackOnGarbageOrOutOfRange) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  write_cap_last_cap(dir.path(), "garbage\n");
  EXPECT_EQ(read_last_cap(dir.path()), 40);
  write_cap_last_cap(dir.path(), "64\n");
  EXPECT_EQ(read_last_cap(dir.path()), 40);
  write_cap_last_cap(dir.path(), "-1\n");
  EXPECT_EQ(read_last_cap(dir.path()), 40);
}

}  // namespace
}  // namespace netmon
