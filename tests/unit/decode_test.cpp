#include <gtest/gtest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "events/decode.h"
#include "records.h"

extern "C" {
#include "netmon_events.h"
}

namespace netmon {
namespace {

using test::make_record;
using test::to_bytes;

void expect_task_fields(const TaskInfo& t) {
  EXPECT_EQ(t.pid, 1001u);
  EXPECT_EQ(t.tid, 1002u);
  EXPECT_EQ(t.ppid, 1u);
  EXPECT_EQ(t.uid, 1003u);
  EXPECT_EQ(t.euid, 1004u);
  EXPECT_EQ(t.gid, 1005u);
  EXPECT_EQ(t.egid, 1006u);
  EXPECT_EQ(t.auid, 1007u);
  EXPECT_EQ(t.start_ns, 869'494'270'000'000ull);
  EXPECT_EQ(t.cgroup_id, 0x1122334455667788ull);
  EXPECT_EQ(t.cap_effective, 0x1ull);
  EXPECT_EQ(t.cap_permitted, 0x3ull);
  EXPECT_EQ(t.cap_inheritable, 0x7ull);
  EXPECT_EQ(t.comm_view(), "curl");
}

void expect_common_fields(const ConnectionEvent& e) {
  EXPECT_EQ(e.boot_ns, 123'456'789'012ull);
  EXPECT_TRUE(e.owner_known);
  expect_task_fields(e.task);
  EXPECT_EQ(e.cookie, 0xdeadbeefcafef00dull);
  EXPECT_EQ(e.sport, 43210);
  EXPECT_EQ(e.dport, 443);
}

struct KindCase {
  uint8_t raw;
  ConnKind kind;
  Direction direction;
  int32_t error;
};

constexpr KindCase kKinds[] = {
    {NM_CONN_ESTABLISH, ConnKind::kEstablish, Direction::kOutbound, 0},
    {NM_CONN_ACCEPT, ConnKind::kAccept, Direction::kInbound, 0},
    {NM_CONN_CLOSE, ConnKind::kClose, Direction::kOutbound, 0},
    {NM_CONN_FAILED, ConnKind::kFailed, Direction::kOutbound, 111},
};

TEST(DecodeRecord, Ipv4RecordOfEveryKind) {
  for (const KindCase& k : kKinds) {
    SCOPED_TRACE(static_cast<int>(k.raw));
    const auto e = decode_record(to_bytes(make_record(k.raw, NM_AF_INET)));
    ASSERT_TRUE(e.has_value()) << e.error().message;
    EXPECT_EQ(e->kind, k.kind);
    EXPECT_EQ(e->direction, k.direction);
    EXPECT_EQ(e->error, k.error);
    expect_common_fields(*e);
    EXPECT_EQ(e->saddr.family, IpAddress::Family::kV4);
    EXPECT_EQ(e->daddr.family, IpAddress::Family::kV4);
    const std::array<uint8_t, 16> s = {10, 0, 0, 1};
    const std::array<uint8_t, 16> d = {192, 168, 1, 254};
    EXPECT_EQ(e->saddr.bytes, s);
    EXPECT_EQ(e->daddr.bytes, d);
  }
}

TEST(DecodeRecord, Ipv6RecordOfEveryKind) {
  for (const KindCase& k : kKinds) {
    SCOPED_TRACE(static_cast<int>(k.raw));
    const auto e = decode_record(to_bytes(make_record(k.raw, NM_AF_INET6)));
    ASSERT_TRUE(e.has_value()) << e.error().message;
    EXPECT_EQ(e->kind, k.kind);
    EXPECT_EQ(e->direction, k.direction);
    EXPECT_EQ(e->error, k.error);
    expect_common_fields(*e);
    EXPECT_EQ(e->saddr.family, IpAddress::Family::kV6);
    EXPECT_EQ(e->daddr.family, IpAddress::Family::kV6);
    for (size_t i = 0; i < 16; ++i) {
      EXPECT_EQ(e->saddr.bytes[i], 0x20 + i);
      EXPECT_EQ(e->daddr.bytes[i], 0x80 + i);
    }
  }
}

// Issue #21: an open record of the start-up snapshot carries the statistics so far and when the
// socket was made; the flags say so. Other records ignore those fields and flags.
TEST(DecodeRecord, PreexistingOpenCarriesItsStatisticsAndItsCloseTheOpenTimeFlag) {
  nm_conn_record r = make_record(NM_CONN_ACCEPT, NM_AF_INET);
  r.flags |= NM_CONN_F_PREEXISTING | NM_CONN_F_OPEN_FROM_AGENT;
  r.open_ns = 1234;
  r.bytes_sent = 10;
  r.bytes_received = 20;
  r.srtt_us = 30;
  r.retransmits = 4;
  auto e = decode_record(to_bytes(r));
  ASSERT_TRUE(e.has_value()) << e.error().message;
  EXPECT_TRUE(e->preexisting);
  EXPECT_TRUE(e->open_from_agent);
  EXPECT_EQ(e->close.open_boot_ns, 1234u);
  EXPECT_EQ(e->close.bytes_sent, 10u);
  EXPECT_EQ(e->close.bytes_received, 20u);
  EXPECT_EQ(e->close.srtt_us, 30u);
  EXPECT_EQ(e->close.retransmits, 4u);

  r.flags = NM_CONN_F_OWNER_KNOWN;  // an open event of the hooks: no statistics
  e = decode_record(to_bytes(r));
  ASSERT_TRUE(e.has_value());
  EXPECT_FALSE(e->preexisting);
  EXPECT_FALSE(e->open_from_agent);
  EXPECT_EQ(e->close.bytes_sent, 0u);

  r = make_record(NM_CONN_CLOSE, NM_AF_INET);  // a Close: the open-time flag only
  r.flags |= NM_CONN_F_PREEXISTING | NM_CONN_F_OPEN_FROM_AGENT;
  e = decode_record(to_bytes(r));
  ASSERT_TRUE(e.has_value());
  EXPECT_FALSE(e->preexisting);
  EXPECT_TRUE(e->open_from_agent);

  r = make_record(NM_CONN_FAILED, NM_AF_INET);  // a Failed: neither
  r.flags |= NM_CONN_F_PREEXISTING | NM_CONN_F_OPEN_FROM_AGENT;
  e = decode_record(to_bytes(r));
  ASSERT_TRUE(e.has_value());
  EXPECT_FALSE(e->preexisting);
  EXPECT_FALSE(e->open_from_agent);
}

TEST(DecodeRecord, Ipv4IgnoresBytesAfterTheFirstFour) {
  nm_conn_record r = make_record(NM_CONN_ESTABLISH, NM_AF_INET);
  std::memset(r.saddr + 4, 0xaa, NM_ADDR_LEN - 4);
  std::memset(r.daddr + 4, 0xbb, NM_ADDR_LEN - 4);
  const auto e = decode_record(to_bytes(r));
  ASSERT_TRUE(e.has_value()) << e.error().message;
  const std::array<uint8_t, 16> s = {10, 0, 0, 1};
  const std::array<uint8_t, 16> d = {192, 168, 1, 254};
  EXPECT_EQ(e->saddr.bytes, s);
  EXPECT_EQ(e->daddr.bytes, d);
}

TEST(DecodeRecord, FailedRecordCarriesItsErrno) {
  nm_conn_record r = make_record(NM_CONN_FAILED, NM_AF_INET);
  r.error = 110;
  const auto e = decode_record(to_bytes(r));
  ASSERT_TRUE(e.has_value()) << e.error().message;
  EXPECT_EQ(e->error, 110);
}

TEST(DecodeRecord, EmptyBufferFails) {
  const std::vector<std::byte> empty;
  EXPECT_FALSE(decode_record(empty).has_value());
}

TEST(DecodeRecord, ShorterThanHeaderFails) {
  const auto bytes = to_bytes(make_record(NM_CONN_ESTABLISH, NM_AF_INET));
  const auto e = decode_record(std::span(bytes).first(sizeof(nm_header) - 1));
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message.find("shorter than its header"), std::string::npos)
      << e.error().message;
}

TEST(DecodeRecord, HeaderOnlyFails) {
  const auto bytes = to_bytes(make_record(NM_CONN_ESTABLISH, NM_AF_INET));
  EXPECT_FALSE(decode_record(std::span(bytes).first(sizeof(nm_header))).has_value());
}

TEST(DecodeRecord, UnknownTypeFails) {
  nm_conn_record r = make_record(NM_CONN_ESTABLISH, NM_AF_INET);
  r.hdr.type = 7;
  const auto e = decode_record(to_bytes(r));
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message.find("unknown record type 7"), std::string::npos)
      << e.error().message;
}

TEST(DecodeRecord, SizeFieldSmallerThanBufferFails) {
  nm_conn_record r = make_record(NM_CONN_ESTABLISH, NM_AF_INET);
  r.hdr.size = sizeof(nm_conn_record) - 8;
  EXPECT_FALSE(decode_record(to_bytes(r)).has_value());
}

TEST(DecodeRecord, SizeFieldLargerThanBufferFails) {
  nm_conn_record r = make_record(NM_CONN_ESTABLISH, NM_AF_INET);
  r.hdr.size = sizeof(nm_conn_record) + 8;
  EXPECT_FALSE(decode_record(to_bytes(r)).has_value());
}

TEST(DecodeRecord, TruncatedBufferWithFullSizeFieldFails) {
  const auto bytes = to_bytes(make_record(NM_CONN_ESTABLISH, NM_AF_INET));
  // Copy so that ASan would catch a read past the shorter buffer.
  const std::vector<std::byte> shorter(bytes.begin(), bytes.end() - 1);
  EXPECT_FALSE(decode_record(shorter).has_value());
}

TEST(DecodeRecord, BufferBiggerThanSizeFieldFails) {
  auto bytes = to_bytes(make_record(NM_CONN_ESTABLISH, NM_AF_INET));
  bytes.resize(bytes.size() + 8);
  EXPECT_FALSE(decode_record(bytes).has_value());
}

// Records only grow at their end (bpf/netmon_events.h): a longer record from a newer BPF side
// decodes as far as this build knows it, for every kind and family.
TEST(DecodeRecord, LongerRecordIgnoresItsTail) {
  for (const KindCase& k : kKinds) {
    for (uint8_t family : {uint8_t{NM_AF_INET}, uint8_t{NM_AF_INET6}}) {
      nm_conn_record r = make_record(k.raw, family);
      r.hdr.size = sizeof(nm_conn_record) + 24;
      auto bytes = to_bytes(r);
      bytes.resize(bytes.size() + 24, std::byte{0xee});
      const auto e = decode_record(bytes);
      ASSERT_TRUE(e.has_value()) << e.error().message;
      EXPECT_EQ(e->kind, k.kind);
      EXPECT_EQ(e->error, k.error);
      expect_common_fields(*e);
      const auto same = decode_record(to_bytes(make_record(k.raw, family)));
      ASSERT_TRUE(same.has_value());
      EXPECT_EQ(e->saddr.bytes, same->saddr.bytes);
      EXPECT_EQ(e->daddr.bytes, same->daddr.bytes);
    }
  }
  // And through decode().
  nm_conn_record r = make_record(NM_CONN_CLOSE, NM_AF_INET);
  r.hdr.size = sizeof(nm_conn_record) + 1;
  auto bytes = to_bytes(r);
  bytes.push_back(std::byte{1});
  const auto e = decode(bytes);
  ASSERT_TRUE(e.has_value()) << e.error().message;
  EXPECT_EQ(std::get<ConnectionEvent>(*e).kind, ConnKind::kClose);
}

// A record shorter than the one this build knows is rejected, even when its size field agrees.
TEST(DecodeRecord, ShorterRecordFails) {
  for (size_t cut : {size_t{1}, size_t{8}, sizeof(nm_conn_record) - sizeof(nm_header)}) {
    SCOPED_TRACE(cut);
    nm_conn_record r = make_record(NM_CONN_ESTABLISH, NM_AF_INET);
    r.hdr.size = static_cast<uint16_t>(sizeof(nm_conn_record) - cut);
    const auto full = to_bytes(r);
    const std::vector<std::byte> bytes(full.begin(), full.end() - static_cast<ptrdiff_t>(cut));
    const auto e = decode_record(bytes);
    ASSERT_FALSE(e.has_value());
    EXPECT_NE(e.error().message.find("shorter than " + std::to_string(sizeof(nm_conn_record))),
              std::string::npos)
        << e.error().message;
    EXPECT_FALSE(decode(bytes).has_value());
  }
}

TEST(DecodeRecord, UnknownKindFails) {
  for (uint8_t kind : {uint8_t{0}, uint8_t{5}, uint8_t{255}}) {
    const auto e = decode_record(to_bytes(make_record(kind, NM_AF_INET)));
    ASSERT_FALSE(e.has_value()) << static_cast<int>(kind);
    EXPECT_NE(e.error().message.find("unknown kind"), std::string::npos) << e.error().message;
  }
}

TEST(DecodeRecord, UnknownDirectionFails) {
  for (uint8_t direction : {uint8_t{0}, uint8_t{3}}) {
    nm_conn_record r = make_record(NM_CONN_ESTABLISH, NM_AF_INET);
    r.direction = direction;
    const auto e = decode_record(to_bytes(r));
    ASSERT_FALSE(e.has_value()) << static_cast<int>(direction);
    EXPECT_NE(e.error().message.find("unknown direction"), std::string::npos) << e.error().message;
  }
}

TEST(DecodeRecord, UnknownFamilyFails) {
  for (uint8_t family : {uint8_t{0}, uint8_t{1}, uint8_t{17}}) {
    const auto e = decode_record(to_bytes(make_record(NM_CONN_ESTABLISH, family)));
    ASSERT_FALSE(e.has_value()) << static_cast<int>(family);
    EXPECT_NE(e.error().message.find("unknown address family"), std::string::npos)
        << e.error().message;
  }
}

TEST(DecodeRecord, OwnerFlagClearLeavesOwnerUnknownAndTaskDefault) {
  nm_conn_record r = make_record(NM_CONN_CLOSE, NM_AF_INET);
  r.flags = 0;
  const auto e = decode_record(to_bytes(r));
  ASSERT_TRUE(e.has_value()) << e.error().message;
  EXPECT_FALSE(e->owner_known);
  EXPECT_EQ(e->task.pid, 0u);
  EXPECT_EQ(e->task.auid, 0xffffffffu);
  EXPECT_EQ(e->task.comm_view(), "");
  EXPECT_EQ(e->cookie, 0xdeadbeefcafef00dull);
}

TEST(DecodeRecord, UnknownFlagBitsDoNotSetOwner) {
  nm_conn_record r = make_record(NM_CONN_CLOSE, NM_AF_INET);
  r.flags = 0xfe;
  const auto e = decode_record(to_bytes(r));
  ASSERT_TRUE(e.has_value()) << e.error().message;
  EXPECT_FALSE(e->owner_known);
}

TEST(DecodeRecord, CommWithoutNulStaysBounded) {
  nm_conn_record r = make_record(NM_CONN_ESTABLISH, NM_AF_INET);
  std::memset(r.task.comm, 'x', NM_COMM_LEN);
  const auto e = decode_record(to_bytes(r));
  ASSERT_TRUE(e.has_value()) << e.error().message;
  const std::string_view comm = e->task.comm_view();
  EXPECT_LE(comm.size(), 16u);
  EXPECT_EQ(comm.find_first_not_of('x'), std::string_view::npos);
  EXPECT_GE(comm.size(), 15u);
}

TEST(TaskInfo, CommViewOfUnterminatedArrayIsSixteenChars) {
  TaskInfo t;
  t.comm.fill('y');
  EXPECT_EQ(t.comm_view(), std::string_view("yyyyyyyyyyyyyyyy"));
}

TEST(TaskInfo, CommViewStopsAtFirstNul) {
  TaskInfo t;
  std::memcpy(t.comm.data(), "ab\0cd", 5);
  EXPECT_EQ(t.comm_view(), "ab");
}

// ---- decode(): every record type ----

template <typename Rec>
std::vector<std::byte> bytes_of(const Rec& r) {
  std::vector<std::byte> out(sizeof(r));
  std::memcpy(out.data(), &r, sizeof(r));
  return out;
}

std::vector<std::byte> exec_record(std::string_view path, std::string_view args, uint8_t flags) {
  nm_exec_record r{};
  r.hdr.type = NM_REC_EXEC;
  r.hdr.size = static_cast<uint16_t>(sizeof(r) + path.size() + args.size());
  r.hdr.ts_ns = 777'000'000'123ull;
  r.task.pid = 4242;
  r.task.uid = 1000;
  r.task.euid = 0;
  r.task.start_ns = 700'000'000'000ull;
  std::memcpy(r.task.comm, "sudo", 5);
  r.secureexec = NM_SECUREEXEC_SETUID;
  r.path_len = static_cast<uint16_t>(path.size());
  r.args_len = static_cast<uint16_t>(args.size());
  r.flags = flags;
  std::vector<std::byte> out = bytes_of(r);
  for (char c : path) out.push_back(static_cast<std::byte>(c));
  for (char c : args) out.push_back(static_cast<std::byte>(c));
  return out;
}

TEST(Decode, ConnectionRecordGivesConnectionEvent) {
  const auto e = decode(to_bytes(make_record(NM_CONN_ACCEPT, NM_AF_INET6)));
  ASSERT_TRUE(e.has_value()) << e.error().message;
  ASSERT_TRUE(std::holds_alternative<ConnectionEvent>(*e));
  const auto& c = std::get<ConnectionEvent>(*e);
  EXPECT_EQ(c.kind, ConnKind::kAccept);
  EXPECT_EQ(c.direction, Direction::kInbound);
  expect_common_fields(c);
}

TEST(Decode, BadConnectionRecordFails) {
  nm_conn_record r = make_record(NM_CONN_ESTABLISH, NM_AF_INET);
  r.kind = 9;
  EXPECT_FALSE(decode(to_bytes(r)).has_value());
}

TEST(Decode, ExecRecordWithPathAndArgs) {
  const std::string args("sudo\0-i\0", 8);
  const auto bytes = exec_record("/usr/bin/sudo", args, 0);
  const auto e = decode(bytes);
  ASSERT_TRUE(e.has_value()) << e.error().message;
  ASSERT_TRUE(std::holds_alternative<ExecEvent>(*e));
  const auto& x = std::get<ExecEvent>(*e);
  EXPECT_EQ(x.boot_ns, 777'000'000'123ull);
  EXPECT_EQ(x.task.pid, 4242u);
  EXPECT_EQ(x.task.uid, 1000u);
  EXPECT_EQ(x.task.euid, 0u);
  EXPECT_EQ(x.task.start_ns, 700'000'000'000ull);
  EXPECT_EQ(x.task.comm_view(), "sudo");
  EXPECT_EQ(x.secureexec, kSecureExecSetuid);
  EXPECT_EQ(x.binary_path, "/usr/bin/sudo");
  EXPECT_EQ(x.raw_args, args);
  EXPECT_FALSE(x.path_truncated);
  EXPECT_FALSE(x.args_truncated);
  // The views point into the record.
  EXPECT_EQ(static_cast<const void*>(x.binary_path.data()),
            static_cast<const void*>(bytes.data() + sizeof(nm_exec_record)));
}

TEST(Decode, ExecRecordTruncationFlags) {
  const auto path_cut = decode(exec_record("/p", "a", NM_EXEC_F_PATH_TRUNCATED));
  ASSERT_TRUE(path_cut.has_value()) << path_cut.error().message;
  EXPECT_TRUE(std::get<ExecEvent>(*path_cut).path_truncated);
  EXPECT_FALSE(std::get<ExecEvent>(*path_cut).args_truncated);
  const auto args_cut = decode(exec_record("/p", "a", NM_EXEC_F_ARGS_TRUNCATED));
  ASSERT_TRUE(args_cut.has_value()) << args_cut.error().message;
  EXPECT_FALSE(std::get<ExecEvent>(*args_cut).path_truncated);
  EXPECT_TRUE(std::get<ExecEvent>(*args_cut).args_truncated);
}

TEST(Decode, ExecRecordWithEmptyPathAndArgs) {
  const auto e = decode(exec_record("", "", 0));
  ASSERT_TRUE(e.has_value()) << e.error().message;
  EXPECT_TRUE(std::get<ExecEvent>(*e).binary_path.empty());
  EXPECT_TRUE(std::get<ExecEvent>(*e).raw_args.empty());
}

TEST(Decode, ExecRecordLengthsMustMatchSize) {
  auto bytes = exec_record("/bin/true", "true", 0);
  nm_exec_record r{};
  std::memcpy(&r, bytes.data(), sizeof(r));
  r.path_len = 10;  // one more than present; hdr.size still matches the buffer
  std::memcpy(bytes.data(), &r, sizeof(r));
  EXPECT_FALSE(decode(bytes).has_value());
}

TEST(Decode, ExecRecordLengthsOverBoundsFail) {
  const std::string long_path(NM_PATH_MAX + 1, 'p');
  EXPECT_FALSE(decode(exec_record(long_path, "", 0)).has_value());
  const std::string long_args(NM_ARGS_MAX + 1, 'a');
  EXPECT_FALSE(decode(exec_record("/x", long_args, 0)).has_value());
  const std::string max_args(NM_ARGS_MAX, 'a');
  EXPECT_TRUE(decode(exec_record("/x", max_args, 0)).has_value());
}

TEST(Decode, ExecRecordShorterThanFixedPartFails) {
  auto bytes = exec_record("", "", 0);
  bytes.resize(sizeof(nm_exec_record) - 8);
  nm_header hdr{};
  std::memcpy(&hdr, bytes.data(), sizeof(hdr));
  hdr.size = static_cast<uint16_t>(bytes.size());
  std::memcpy(bytes.data(), &hdr, sizeof(hdr));
  EXPECT_FALSE(decode(bytes).has_value());
}

// An exec record grows at the end of its fixed part: the path and args follow the longer fixed
// part, whose size is what hdr.size leaves besides them.
std::vector<std::byte> exec_record_with_fixed_part(size_t fixed, std::string_view path,
                                                   std::string_view args) {
  auto bytes = exec_record(path, args, 0);
  bytes.insert(bytes.begin() + sizeof(nm_exec_record), fixed - sizeof(nm_exec_record),
               std::byte{0xee});
  nm_header hdr{};
  std::memcpy(&hdr, bytes.data(), sizeof(hdr));
  hdr.size = static_cast<uint16_t>(bytes.size());
  std::memcpy(bytes.data(), &hdr, sizeof(hdr));
  return bytes;
}

TEST(Decode, ExecRecordWithLongerFixedPartReadsPathAfterIt) {
  const std::string args("sudo\0-i\0", 8);
  for (size_t extra : {size_t{8}, size_t{64}}) {
    SCOPED_TRACE(extra);
    const auto bytes =
        exec_record_with_fixed_part(sizeof(nm_exec_record) + extra, "/usr/bin/sudo", args);
    const auto e = decode(bytes);
    ASSERT_TRUE(e.has_value()) << e.error().message;
    const auto& x = std::get<ExecEvent>(*e);
    EXPECT_EQ(x.task.pid, 4242u);
    EXPECT_EQ(x.secureexec, kSecureExecSetuid);
    EXPECT_EQ(x.binary_path, "/usr/bin/sudo");
    EXPECT_EQ(x.raw_args, args);
    EXPECT_EQ(static_cast<const void*>(x.binary_path.data()),
              static_cast<const void*>(bytes.data() + sizeof(nm_exec_record) + extra));
  }
}

TEST(Decode, ExecRecordWithShorterOrUnalignedFixedPartFails) {
  // Lengths that leave a fixed part shorter than this build's: an older layout, or a wrong length.
  auto bytes = exec_record("/bin/true", "true", 0);
  nm_exec_record r{};
  std::memcpy(&r, bytes.data(), sizeof(r));
  r.args_len = 4 + 8;  // eight bytes more than present: the fixed part would be 8 bytes short
  std::memcpy(bytes.data(), &r, sizeof(r));
  EXPECT_FALSE(decode(bytes).has_value());
  // A fixed part that is not a whole number of 8-byte words is no struct of the header.
  EXPECT_FALSE(
      decode(exec_record_with_fixed_part(sizeof(nm_exec_record) + 4, "/x", "x")).has_value());
  EXPECT_TRUE(
      decode(exec_record_with_fixed_part(sizeof(nm_exec_record) + 8, "/x", "x")).has_value());
}

TEST(Decode, ForkRecord) {
  nm_fork_record r{};
  r.hdr.type = NM_REC_FORK;
  r.hdr.size = sizeof(r);
  r.hdr.ts_ns = 55;
  r.child.pid = 300;
  r.child.ppid = 299;
  r.child.start_ns = 50;
  std::memcpy(r.child.comm, "bash", 5);
  r.parent_start_ns = 10;
  const auto e = decode(bytes_of(r));
  ASSERT_TRUE(e.has_value()) << e.error().message;
  ASSERT_TRUE(std::holds_alternative<ForkEvent>(*e));
  const auto& f = std::get<ForkEvent>(*e);
  EXPECT_EQ(f.boot_ns, 55u);
  EXPECT_EQ(f.child.pid, 300u);
  EXPECT_EQ(f.child.ppid, 299u);
  EXPECT_EQ(f.child.start_ns, 50u);
  EXPECT_EQ(f.child.comm_view(), "bash");
  EXPECT_EQ(f.parent_start_ns, 10u);
}

TEST(Decode, ExitRecord) {
  nm_exit_record r{};
  r.hdr.type = NM_REC_EXIT;
  r.hdr.size = sizeof(r);
  r.hdr.ts_ns = 99;
  r.pid = 300;
  r.start_ns = 50;
  const auto e = decode(bytes_of(r));
  ASSERT_TRUE(e.has_value()) << e.error().message;
  ASSERT_TRUE(std::holds_alternative<ExitEvent>(*e));
  const auto& x = std::get<ExitEvent>(*e);
  EXPECT_EQ(x.boot_ns, 99u);
  EXPECT_EQ(x.pid, 300u);
  EXPECT_EQ(x.start_ns, 50u);
}

template <typename Rec>
std::vector<std::byte> resized(Rec r, size_t size) {
  r.hdr.size = static_cast<uint16_t>(size);
  auto bytes = bytes_of(r);
  bytes.resize(size, std::byte{0xee});
  return bytes;
}

TEST(Decode, LongerForkAndExitRecordsIgnoreTheirTail) {
  nm_fork_record f{};
  f.hdr.type = NM_REC_FORK;
  f.child.pid = 300;
  f.parent_start_ns = 10;
  const auto fork = decode(resized(f, sizeof(f) + 16));
  ASSERT_TRUE(fork.has_value()) << fork.error().message;
  EXPECT_EQ(std::get<ForkEvent>(*fork).child.pid, 300u);
  EXPECT_EQ(std::get<ForkEvent>(*fork).parent_start_ns, 10u);
  nm_exit_record x{};
  x.hdr.type = NM_REC_EXIT;
  x.pid = 300;
  x.start_ns = 50;
  const auto exit = decode(resized(x, sizeof(x) + 8));
  ASSERT_TRUE(exit.has_value()) << exit.error().message;
  EXPECT_EQ(std::get<ExitEvent>(*exit).pid, 300u);
  EXPECT_EQ(std::get<ExitEvent>(*exit).start_ns, 50u);
}

TEST(Decode, ShorterFixedRecordsFail) {
  nm_exit_record x{};
  x.hdr.type = NM_REC_EXIT;
  EXPECT_FALSE(decode(resized(x, sizeof(x) - 8)).has_value());
  nm_fork_record f{};
  f.hdr.type = NM_REC_FORK;
  EXPECT_FALSE(decode(resized(f, sizeof(f) - 8)).has_value());
  const auto e = decode(resized(f, sizeof(f) - 1));
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message.find("fork record of 111 bytes is shorter than 112"),
            std::string::npos)
      << e.error().message;
}

TEST(Decode, SizeFieldMustMatchBuffer) {
  nm_exit_record r{};
  r.hdr.type = NM_REC_EXIT;
  r.hdr.size = sizeof(r) - 1;
  EXPECT_FALSE(decode(bytes_of(r)).has_value());
}

TEST(Decode, ShortOrUnknownRecordsFail) {
  EXPECT_FALSE(decode(std::vector<std::byte>(sizeof(nm_header) - 1)).has_value());
  nm_exit_record r{};
  r.hdr.type = 99;
  r.hdr.size = sizeof(r);
  const auto e = decode(bytes_of(r));
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message.find("unknown record type 99"), std::string::npos)
      << e.error().message;
}

}  // namespace
}  // namespace netmon
