#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "output/json.h"
#include "process/process.h"

namespace netmon {
namespace {

using nlohmann::json;

std::string encode(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

// Encodes `raw` and parses it back as a JSON string.
std::string round_trip(std::string_view raw) { return json::parse(encode(raw)).get<std::string>(); }

TEST(AppendJsonString, PlainAsciiIsQuotedUnchanged) {
  EXPECT_EQ(encode("curl"), "\"curl\"");
  EXPECT_EQ(encode(""), "\"\"");
}

TEST(AppendJsonString, AppendsAfterExistingContent) {
  std::string out = "x=";
  append_json_string(out, "a");
  EXPECT_EQ(out, "x=\"a\"");
}

TEST(AppendJsonString, EscapesQuoteAndBackslash) {
  EXPECT_EQ(encode("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(round_trip("a\"b\\c"), "a\"b\\c");
}

TEST(AppendJsonString, EscapesNewlineTabCarriageReturn) {
  EXPECT_EQ(encode("a\nb\tc\rd"), R"("a\nb\tc\rd")");
}

TEST(AppendJsonString, EscapesOtherControlCharactersAsUnicode) {
  EXPECT_EQ(encode(std::string_view("\0", 1)), R"("\u0000")");
  EXPECT_EQ(encode("\x01\x08\x0c\x1f"), R"("\u0001\u0008\u000c\u001f")");
  EXPECT_EQ(round_trip("\x01\x1f"), "\x01\x1f");
}

TEST(AppendJsonString, DelAndSlashStayLiteral) {
  EXPECT_EQ(encode("/\x7f"), "\"/\x7f\"");
  EXPECT_EQ(round_trip("/\x7f"), "/\x7f");
}

TEST(AppendJsonString, KeepsValidMultiByteUtf8) {
  const std::string text = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf";
  EXPECT_EQ(encode(text), "\"" + text + "\"");
  EXPECT_EQ(round_trip(text), text);
}

TEST(AppendJsonString, EscapesInvalidBytes) {
  EXPECT_EQ(encode("\xff"), R"("\\xff")");
  EXPECT_EQ(encode("a\x80z"), R"("a\\x80z")");
}

// An invalid byte must not decode to a character it is not: 0xe4 alone is not "ä" (U+00E4,
// which a \u00e4 escape would make it), but the text \xe4, as Python's backslashreplace writes.
TEST(AppendJsonString, InvalidBytesAreNotTakenForLatin1Characters) {
  EXPECT_EQ(round_trip("ssh\xe4"), "ssh\\xe4");
  EXPECT_NE(round_trip("ssh\xe4"), round_trip("ssh\xc3\xa4"));  // the real "ä"
  EXPECT_EQ(round_trip("ssh\xc3\xa4"), "ssh\xc3\xa4");
  EXPECT_EQ(round_trip("/tmp/\xff\xfe\x80x"), "/tmp/\\xff\\xfe\\x80x");
}

// The per-event path appends into a buffer that already has room: escaping allocates nothing.
TEST(AppendJsonString, EscapingReusesTheBuffersRoom) {
  std::string out;
  out.reserve(256);
  const char* before = out.data();
  append_json_string(out, "a\xff\x01\"\\\xe2\x82\xac\xc3");
  EXPECT_EQ(out.data(), before);
  EXPECT_EQ(out, R"("a\\xff\u0001\"\\)"
                 "\xe2\x82\xac"
                 R"(\\xc3")");
}

TEST(AppendJsonString, EscapesOverlongSequences) {
  EXPECT_EQ(encode("\xc0\xaf"), R"("\\xc0\\xaf")");
  EXPECT_EQ(encode("\xc1\xbf"), R"("\\xc1\\xbf")");
  EXPECT_EQ(encode("\xe0\x80\xaf"), R"("\\xe0\\x80\\xaf")");
  EXPECT_EQ(encode("\xf0\x80\x80\xaf"), R"("\\xf0\\x80\\x80\\xaf")");
}

TEST(AppendJsonString, EscapesSurrogatesAndBeyondUnicode) {
  EXPECT_EQ(encode("\xed\xa0\x80"), R"("\\xed\\xa0\\x80")");
  EXPECT_EQ(encode("\xf4\x90\x80\x80"), R"("\\xf4\\x90\\x80\\x80")");
  EXPECT_EQ(encode("\xf5\x80\x80\x80"), R"("\\xf5\\x80\\x80\\x80")");
}

TEST(AppendJsonString, EscapesTruncatedSequenceAndKeepsFollowingText) {
  EXPECT_EQ(encode("\xe2\x82"), R"("\\xe2\\x82")");
  EXPECT_EQ(encode("\xe2\x82z"), R"("\\xe2\\x82z")");
  EXPECT_EQ(encode("\xc3"), R"("\\xc3")");
  // A sequence cut short, then a valid one: only the cut bytes are escaped.
  EXPECT_EQ(encode("\xe2\x82\xe2\x82\xac"), R"("\\xe2\\x82)"
                                            "\xe2\x82\xac"
                                            R"(")");
}

TEST(AppendJsonString, EveryByteYieldsValidJsonOnOneLine) {
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  const std::string encoded = encode(all);
  EXPECT_EQ(encoded.find('\n'), std::string::npos);
  json parsed;
  EXPECT_NO_THROW(parsed = json::parse(encoded));
  EXPECT_TRUE(parsed.is_string());
}

// ---- append_event_line ----

constexpr int64_t kNsPerSec = 1'000'000'000;
constexpr int64_t kNsPerMs = 1'000'000;
// Boot at 2026-04-30T11:00:00Z.
constexpr int64_t kBootUnixNs = (1777549411 - 43 * 60 - 31) * kNsPerSec;
// 2026-04-30T11:43:31.910Z, plus sub-millisecond noise that must be truncated.
constexpr uint64_t kEventBootNs = (43 * 60 + 31) * kNsPerSec + 910 * kNsPerMs + 999'999;

constexpr uint64_t kTaskStartNs = 5 * kNsPerSec + 123 * kNsPerMs;  // 2026-04-30T11:00:05.123Z
constexpr uint64_t kNetRawAndAdmin = (1ull << 12) | (1ull << 13);
constexpr uint64_t kAllCaps = (1ull << 41) - 1;  // CAP_CHOWN .. CAP_CHECKPOINT_RESTORE (40)

ConnectionEvent make_event(ConnKind kind) {
  ConnectionEvent e;
  e.boot_ns = kEventBootNs;
  e.kind = kind;
  e.direction = kind == ConnKind::kAccept ? Direction::kInbound : Direction::kOutbound;
  e.owner_known = true;
  e.task.pid = 84537;
  e.task.tid = 84538;
  e.task.ppid = 1200;
  e.task.uid = 1000;
  e.task.euid = 1001;
  e.task.gid = 1002;
  e.task.egid = 1003;
  e.task.auid = 4294967295u;
  e.task.start_ns = kTaskStartNs;
  e.task.cap_effective = kNetRawAndAdmin;
  e.task.cap_permitted = kAllCaps;
  e.task.cap_inheritable = 0;
  std::memcpy(e.task.comm.data(), "nc", 3);
  e.cookie = 18446744073709551615ull;
  e.saddr.family = IpAddress::Family::kV4;
  e.saddr.bytes = {10, 0, 0, 1};
  e.daddr.family = IpAddress::Family::kV4;
  e.daddr.bytes = {93, 184, 216, 34};
  e.sport = 54321;
  e.dport = 80;
  e.error = kind == ConnKind::kFailed ? 111 : 0;
  if (kind == ConnKind::kClose) {
    e.close.open_boot_ns = kEventBootNs - 1'500'000'000ull;  // open 1.5 s before the close
    e.close.bytes_sent = 1234;
    e.close.bytes_received = 5678;
    e.close.srtt_us = 250;
    e.close.retransmits = 3;
    e.close.closed_by = ClosedBy::kRemote;
    e.close.reset = true;
  }
  return e;
}

// A process table entry whose every field differs from make_event()'s task.
ProcessEntry make_entry() {
  ProcessEntry p;
  p.pid = 7;
  p.ppid = 6;
  p.fork_start_ns = 1 * kNsPerSec;
  p.image_start_ns = 2 * kNsPerSec + 250 * kNsPerMs;  // 2026-04-30T11:00:02.250Z
  p.cloned = false;
  p.uid = 10;
  p.euid = 11;
  p.gid = 12;
  p.egid = 13;
  p.auid = 14;
  p.cap_effective = 1ull << 21;  // CAP_SYS_ADMIN
  p.cap_permitted = 0;
  p.cap_inheritable = 1ull << 0;  // CAP_CHOWN
  p.secureexec = kSecureExecSetuid | kSecureExecFileCaps;
  p.filename = "ssh";
  p.binary_path = "/usr/bin/ssh";
  p.args = "-v host";
  p.exec_id = "ZXhlYw==";
  p.parent_exec_id = "cGFyZW50";
  return p;
}

// The line of `e`, from `encoder` (keeping its caches from line to line) or from a new one.
std::string line_for(const ConnectionEvent& e, const EventContext& context = {},
                     EventEncoder* encoder = nullptr) {
  EventEncoder fresh;
  std::string out;
  (encoder ? *encoder : fresh).append_event_line(out, e, context, BootClock(kBootUnixNs));
  return out;
}

void expect_one_line(const std::string& line) {
  ASSERT_FALSE(line.empty());
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1);
}

// The ids, credentials and capabilities of make_event()'s task.
void expect_task_ids(const json& p) {
  EXPECT_EQ(p.at("pid"), 84537);
  EXPECT_EQ(p.at("tid"), 84538);
  EXPECT_EQ(p.at("ppid"), 1200);
  EXPECT_EQ(p.at("uid"), 1000);
  EXPECT_EQ(p.at("euid"), 1001);
  EXPECT_EQ(p.at("gid"), 1002);
  EXPECT_EQ(p.at("egid"), 1003);
  EXPECT_EQ(p.at("auid"), 4294967295u);
  EXPECT_EQ(p.at("cap_effective"), "CAP_NET_ADMIN | CAP_NET_RAW");
  EXPECT_EQ(p.at("cap_permitted"), "ANY_CAPS");
  EXPECT_EQ(p.at("cap_inheritable"), "");
}

// The image fields of make_entry().
void expect_entry_image(const json& p) {
  EXPECT_EQ(p.at("secureexec"), "SETUID | FILE_CAPS");
  EXPECT_EQ(p.at("filename"), "ssh");
  EXPECT_EQ(p.at("binary_path"), "/usr/bin/ssh");
  EXPECT_EQ(p.at("args"), "-v host");
  EXPECT_EQ(p.at("start_time"), "2026-04-30T11:00:02.250Z");
  EXPECT_EQ(p.at("cloned"), false);
  EXPECT_EQ(p.at("exec_id"), "ZXhlYw==");
  EXPECT_EQ(p.at("parent_exec_id"), "cGFyZW50");
}

struct TypeCase {
  ConnKind kind;
  const char* name;
};

constexpr TypeCase kTypes[] = {
    {ConnKind::kEstablish, "TcpConnectionEstablish"},
    {ConnKind::kAccept, "TcpConnectionAccept"},
    {ConnKind::kClose, "TcpConnectionClose"},
    {ConnKind::kFailed, "TcpConnectionFailed"},
};

TEST(EventTypeName, NamesEveryKind) {
  for (const TypeCase& t : kTypes) EXPECT_EQ(event_type_name(t.kind), t.name);
}

TEST(AppendEventLine, EveryTypeHasExactFields) {
  for (const TypeCase& t : kTypes) {
    SCOPED_TRACE(t.name);
    const std::string line = line_for(make_event(t.kind));
    expect_one_line(line);
    const json j = json::parse(line);
    EXPECT_EQ(j.size(), 5u) << j.dump();
    EXPECT_EQ(j.at("type"), "NetworkEvent");
    EXPECT_EQ(j.at("timestamp"), "2026-04-30T11:43:31.910Z");
    const json& n = j.at("network_event");
    EXPECT_EQ(n.at("type"), t.name);
    EXPECT_EQ(n.at("saddr"), "10.0.0.1");
    EXPECT_EQ(n.at("sport"), 54321);
    EXPECT_EQ(n.at("daddr"), "93.184.216.34");
    EXPECT_EQ(n.at("dport"), 80);
    EXPECT_EQ(n.at("cookie").get<uint64_t>(), 18446744073709551615ull);
    if (t.kind == ConnKind::kFailed) {
      EXPECT_EQ(n.size(), 7u) << n.dump();
      EXPECT_EQ(n.at("error"), "ECONNREFUSED");
    } else if (t.kind == ConnKind::kClose) {
      EXPECT_EQ(n.size(), 14u) << n.dump();
      EXPECT_FALSE(n.contains("error"));
      EXPECT_EQ(n.at("direction"), "outbound");
      EXPECT_EQ(n.at("bytes_sent"), 1234);
      EXPECT_EQ(n.at("bytes_received"), 5678);
      EXPECT_EQ(n.at("duration_ms"), 1500);
      EXPECT_EQ(n.at("srtt_us"), 250);
      EXPECT_EQ(n.at("retransmits"), 3);
      EXPECT_EQ(n.at("closed_by"), "remote");
      EXPECT_EQ(n.at("reset"), true);
    } else {
      EXPECT_EQ(n.size(), 6u) << n.dump();
      EXPECT_FALSE(n.contains("error"));
    }
    ASSERT_TRUE(j.contains("parent"));
    EXPECT_TRUE(j.at("parent").is_null());
  }
}

TEST(AppendEventLine, ProcessFromRecordAloneWhenNotInTable) {
  const json p = json::parse(line_for(make_event(ConnKind::kEstablish))).at("process");
  ASSERT_TRUE(p.is_object()) << p.dump();
  EXPECT_EQ(p.size(), 14u) << p.dump();
  expect_task_ids(p);
  EXPECT_EQ(p.at("filename"), "nc");
  EXPECT_EQ(p.at("start_time"), "2026-04-30T11:00:05.123Z");
  EXPECT_EQ(p.at("exec_id"), make_exec_id(84537, kTaskStartNs));
}

TEST(AppendEventLine, ProcessTakesIdsFromRecordAndImageFromTable) {
  const ProcessEntry entry = make_entry();
  const std::string line = line_for(make_event(ConnKind::kAccept), EventContext{.process = &entry});
  expect_one_line(line);
  const json p = json::parse(line).at("process");
  EXPECT_EQ(p.size(), 19u) << p.dump();
  expect_task_ids(p);
  expect_entry_image(p);
}

TEST(AppendEventLine, UnknownOwnerWithoutEntryWritesNullProcess) {
  ConnectionEvent e = make_event(ConnKind::kClose);
  e.owner_known = false;
  const std::string line = line_for(e);
  expect_one_line(line);
  const json j = json::parse(line);
  ASSERT_TRUE(j.contains("process"));
  EXPECT_TRUE(j.at("process").is_null());
  EXPECT_TRUE(j.at("parent").is_null());
}

TEST(AppendEventLine, UnknownOwnerWithEntryWritesEntryOnly) {
  ConnectionEvent e = make_event(ConnKind::kClose);
  e.owner_known = false;
  const ProcessEntry entry = make_entry();
  const json p = json::parse(line_for(e, EventContext{.process = &entry})).at("process");
  EXPECT_EQ(p.size(), 19u) << p.dump();
  EXPECT_EQ(p.at("pid"), 7);
  EXPECT_EQ(p.at("tid"), 7);
  EXPECT_EQ(p.at("ppid"), 6);
  EXPECT_EQ(p.at("uid"), 10);
  EXPECT_EQ(p.at("euid"), 11);
  EXPECT_EQ(p.at("gid"), 12);
  EXPECT_EQ(p.at("egid"), 13);
  EXPECT_EQ(p.at("auid"), 14);
  EXPECT_EQ(p.at("cap_effective"), "CAP_SYS_ADMIN");
  EXPECT_EQ(p.at("cap_permitted"), "");
  EXPECT_EQ(p.at("cap_inheritable"), "CAP_CHOWN");
  expect_entry_image(p);
}

TEST(AppendEventLine, ParentIsWrittenFromItsEntry) {
  ProcessEntry parent = make_entry();
  parent.cloned = true;
  const json pa =
      json::parse(line_for(make_event(ConnKind::kEstablish), EventContext{.parent = &parent}))
          .at("parent");
  ASSERT_TRUE(pa.is_object()) << pa.dump();
  EXPECT_EQ(pa.size(), 19u) << pa.dump();
  EXPECT_EQ(pa.at("pid"), 7);
  EXPECT_EQ(pa.at("tid"), 7);
  EXPECT_EQ(pa.at("cloned"), true);
  EXPECT_EQ(pa.at("exec_id"), "ZXhlYw==");
}

TEST(AppendEventLine, LastCapDecidesAnyCaps) {
  ConnectionEvent e = make_event(ConnKind::kEstablish);
  e.task.cap_permitted = (1ull << 38) - 1;  // CAP_CHOWN .. CAP_AUDIT_READ (37)
  EventContext context;
  context.last_cap = 37;
  EXPECT_EQ(json::parse(line_for(e, context)).at("process").at("cap_permitted"), "ANY_CAPS");
  context.last_cap = 40;
  const std::string names = json::parse(line_for(e, context)).at("process").at("cap_permitted");
  EXPECT_TRUE(names.starts_with("CAP_CHOWN | CAP_DAC_OVERRIDE | ")) << names;
  EXPECT_TRUE(names.ends_with(" | CAP_AUDIT_READ")) << names;
}

TEST(AppendEventLine, FailedWithZeroErrorIsConnAborted) {
  ConnectionEvent e = make_event(ConnKind::kFailed);
  e.error = 0;
  EXPECT_EQ(json::parse(line_for(e)).at("network_event").at("error"), "ECONNABORTED");
}

TEST(AppendEventLine, FailedTimeoutNamesErrno) {
  ConnectionEvent e = make_event(ConnKind::kFailed);
  e.error = 110;
  EXPECT_EQ(json::parse(line_for(e)).at("network_event").at("error"), "ETIMEDOUT");
}

TEST(AppendEventLine, Ipv6AddressesAreTextual) {
  ConnectionEvent e = make_event(ConnKind::kEstablish);
  e.saddr.family = IpAddress::Family::kV6;
  e.saddr.bytes = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  e.daddr.family = IpAddress::Family::kV6;
  e.daddr.bytes = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  const json n = json::parse(line_for(e)).at("network_event");
  EXPECT_EQ(n.at("saddr"), "::1");
  EXPECT_EQ(n.at("daddr"), "2001:db8::1");
}

TEST(AppendEventLine, CommWithControlAndInvalidBytesStaysValidJson) {
  ConnectionEvent e = make_event(ConnKind::kEstablish);
  std::memcpy(e.task.comm.data(), "a\nb\xff\"c", 7);
  const std::string line = line_for(e);
  expect_one_line(line);
  const json j = json::parse(line);
  // The invalid byte 0xff is the text \xff, not the character U+00FF ("\xc3\xbf").
  EXPECT_EQ(j.at("process").at("filename"), "a\nb\\xff\"c");
}

TEST(AppendEventLine, EntryStringsWithNewlinesStayOnOneLine) {
  ProcessEntry entry = make_entry();
  entry.binary_path = "/tmp/evil\nname";
  entry.args = "--x=\"1\"\t\x01";
  const std::string line =
      line_for(make_event(ConnKind::kEstablish), EventContext{.process = &entry});
  expect_one_line(line);
  const json p = json::parse(line).at("process");
  EXPECT_EQ(p.at("binary_path"), "/tmp/evil\nname");
  EXPECT_EQ(p.at("args"), "--x=\"1\"\t\x01");
}

TEST(EventKindOfLine, ReadsTheTypeOfEveryKind) {
  const BootClock clock(kBootUnixNs);
  for (const ConnKind kind :
       {ConnKind::kEstablish, ConnKind::kAccept, ConnKind::kClose, ConnKind::kFailed}) {
    std::string line;
    EventEncoder().append_event_line(line, make_event(kind), {}, clock);
    EXPECT_EQ(event_kind_of_line(line), kind) << line;
  }
  EXPECT_EQ(event_kind_of_line("not an event"), ConnKind::kEstablish);
  EXPECT_EQ(event_kind_of_line(R"({"network_event":{"type":"TcpConnectionCloseX"}})"),
            ConnKind::kEstablish);
}

TEST(AppendEventLine, AppendsAfterExistingLines) {
  std::string out;
  const BootClock clock(kBootUnixNs);
  EventEncoder encoder;
  encoder.append_event_line(out, make_event(ConnKind::kEstablish), {}, clock);
  const size_t first = out.size();
  encoder.append_event_line(out, make_event(ConnKind::kClose), {}, clock);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2);
  EXPECT_EQ(json::parse(out.substr(0, first)).at("network_event").at("type"),
            "TcpConnectionEstablish");
  EXPECT_EQ(json::parse(out.substr(first)).at("network_event").at("type"), "TcpConnectionClose");
}

// Texts are cached by the encoder (identity, image, pod): what changes must show.
TEST(AppendEventLine, IdentityTextFollowsEveryField) {
  EventEncoder encoder;
  ConnectionEvent e = make_event(ConnKind::kEstablish);
  expect_task_ids(json::parse(line_for(e, {}, &encoder)).at("process"));
  e.task.uid = 0;  // the same thread after setuid()
  e.task.cap_effective = 0;
  json p = json::parse(line_for(e, {}, &encoder)).at("process");
  EXPECT_EQ(p.at("tid"), 84538);
  EXPECT_EQ(p.at("uid"), 0);
  EXPECT_EQ(p.at("cap_effective"), "");
  // Many threads, more than the cache holds, several rounds: each line has its own ids.
  for (int round = 0; round < 3; ++round) {
    for (uint32_t tid = 1; tid <= 200; ++tid) {
      e.task.tid = tid;
      e.task.pid = tid / 4 + 1;
      e.task.euid = tid * 7;
      p = json::parse(line_for(e, {}, &encoder)).at("process");
      ASSERT_EQ(p.at("tid"), tid);
      ASSERT_EQ(p.at("pid"), tid / 4 + 1);
      ASSERT_EQ(p.at("euid"), tid * 7);
    }
  }
}

TEST(AppendEventLine, PodObjectIsBuiltOnceAndFollowsTheLabelSetting) {
  PodMeta pod;
  pod.namespace_name = "shop";
  pod.name = "web-7d4b9c-x2x7z";
  pod.uid = "8b7c1c1e-uid";
  pod.workload = "web";
  pod.workload_kind = "Deployment";
  pod.labels = {{"app", "web"}, {"tier", "front\"end"}};
  pod.containers.push_back(
      ContainerMeta{"abc123", "containerd", "nginx", "nginx:1.27", "sha256:1"});
  Attribution a;
  a.container_id = "abc123";
  a.pod = &pod;
  a.container = &pod.containers[0];
  const ConnectionEvent e = make_event(ConnKind::kAccept);
  EventEncoder encoder;
  for (int round = 0; round < 2; ++round) {
    for (bool labels : {true, false}) {
      SCOPED_TRACE(labels ? "with labels" : "without labels");
      const std::string line =
          line_for(e, EventContext{.attribution = &a, .pod_labels = labels}, &encoder);
      expect_one_line(line);
      const json j = json::parse(line);
      EXPECT_EQ(j.at("process").at("container_id"), "abc123");
      const json& p = j.at("pod");
      EXPECT_EQ(p.at("namespace"), "shop");
      EXPECT_EQ(p.at("name"), "web-7d4b9c-x2x7z");
      EXPECT_EQ(p.at("uid"), "8b7c1c1e-uid");
      EXPECT_EQ(p.at("workload"), "web");
      EXPECT_EQ(p.at("workload_kind"), "Deployment");
      if (labels) {
        EXPECT_EQ(p.at("labels"), json({{"app", "web"}, {"tier", "front\"end"}}));
      } else {
        EXPECT_EQ(p.at("labels"), json::object());
      }
      EXPECT_EQ(p.at("container"), json({{"id", "abc123"},
                                         {"name", "nginx"},
                                         {"image", "nginx:1.27"},
                                         {"image_id", "sha256:1"}}));
    }
  }
}

TEST(EventEncoder, ProcessImageFollowsTheEntry) {
  EventEncoder encoder;
  const ConnectionEvent e = make_event(ConnKind::kEstablish);
  ProcessEntry entry = make_entry();
  expect_entry_image(
      json::parse(line_for(e, EventContext{.process = &entry}, &encoder)).at("process"));
  EXPECT_EQ(encoder.cache_sizes().images, 1u);
  // A new exec of the process: a new entry with a new image start.
  entry.image_start_ns += kNsPerSec;
  entry.binary_path = "/usr/bin/scp";
  entry.filename = "scp";
  json p = json::parse(line_for(e, EventContext{.process = &entry}, &encoder)).at("process");
  EXPECT_EQ(p.at("binary_path"), "/usr/bin/scp");
  EXPECT_EQ(p.at("start_time"), "2026-04-30T11:00:03.250Z");
  // A fork: the child's entry copies the parent's image but is cloned and has its own start.
  ProcessEntry child = entry;
  child.pid = 8;
  child.fork_start_ns = child.image_start_ns = 4 * kNsPerSec;
  child.cloned = true;
  p = json::parse(line_for(e, EventContext{.process = &child, .parent = &entry}, &encoder))
          .at("process");
  EXPECT_EQ(p.at("cloned"), true);
  EXPECT_EQ(p.at("start_time"), "2026-04-30T11:00:04.000Z");
  EXPECT_EQ(encoder.cache_sizes().images, 2u);
  // A new boot clock offset (NTP stepped the wall clock): start times move.
  std::string out;
  encoder.append_event_line(out, e, EventContext{.process = &entry},
                            BootClock(kBootUnixNs + kNsPerSec));
  EXPECT_EQ(json::parse(out).at("process").at("start_time"), "2026-04-30T11:00:04.250Z");
  // Exit: the text is dropped; an exited entry's image is written but not kept.
  encoder.forget_process(entry.pid);
  EXPECT_EQ(encoder.cache_sizes().images, 1u);
  entry.exited_ns = 5 * kNsPerSec;
  p = json::parse(line_for(e, EventContext{.process = &entry}, &encoder)).at("process");
  EXPECT_EQ(p.at("binary_path"), "/usr/bin/scp");
  EXPECT_EQ(encoder.cache_sizes().images, 1u);
}

TEST(EventEncoder, ImageCacheStaysWithinItsBound) {
  EventEncoder encoder;
  const ConnectionEvent e = make_event(ConnKind::kEstablish);
  ProcessEntry entry = make_entry();
  for (uint32_t pid = 1; pid <= EventEncoder::kMaxImages + 10; ++pid) {
    entry.pid = pid;
    entry.exec_id = std::to_string(pid);
    const std::string line = line_for(e, EventContext{.process = &entry}, &encoder);
    if (pid % 4096 == 0 || pid > EventEncoder::kMaxImages) {
      ASSERT_EQ(json::parse(line).at("process").at("exec_id"), std::to_string(pid));
    }
    ASSERT_LE(encoder.cache_sizes().images, EventEncoder::kMaxImages);
  }
  EXPECT_LE(encoder.cache_sizes().image_bytes, EventEncoder::kMaxImageBytes);
}

TEST(EventEncoder, PodObjectIsEncodedAnewForANewSnapshot) {
  PodMeta pod;
  pod.namespace_name = "shop";
  pod.name = "web-1";
  pod.uid = "uid-1";
  pod.labels = {{"app", "web"}};
  pod.containers.push_back(ContainerMeta{"abc123", "containerd", "nginx", "nginx:1", "sha256:1"});
  Attribution a;
  a.container_id = "abc123";
  a.pod = &pod;
  a.container = &pod.containers[0];
  const ConnectionEvent e = make_event(ConnKind::kAccept);
  EventEncoder encoder;
  auto pod_of = [&](uint64_t generation) {
    return json::parse(
               line_for(e, EventContext{.attribution = &a, .pod_generation = generation}, &encoder))
        .at("pod");
  };
  EXPECT_EQ(pod_of(1).at("labels"), json({{"app", "web"}}));
  EXPECT_EQ(encoder.cache_sizes().pods, 1u);
  // The next snapshot has the pod with new labels and image (here: at the same address).
  pod.labels = {{"app", "web"}, {"version", "2"}};
  pod.containers[0].image = "nginx:2";
  const json p = pod_of(2);
  EXPECT_EQ(p.at("labels"), json({{"app", "web"}, {"version", "2"}}));
  EXPECT_EQ(p.at("container").at("image"), "nginx:2");
  EXPECT_EQ(encoder.cache_sizes().pods, 1u);
  // A container the kubelet does not know: its id comes from the attribution, per cgroup.
  a.container = nullptr;
  EXPECT_EQ(pod_of(2).at("container"), json({{"id", "abc123"}}));
  a.container_id = "def456";
  EXPECT_EQ(pod_of(2).at("container"), json({{"id", "def456"}}));
}

// ---- the peer object (issue #19) -------------------------------------------------------------

// The `peer` object of a line whose context names `peer`; also checks that it sits right after
// "dport" (next to the address it names).
json peer_of_line(const std::string& line) {
  EXPECT_NE(line.find("\"dport\":80,\"peer\":{"), std::string::npos) << line;
  expect_one_line(line);
  return json::parse(line).at("network_event").at("peer");
}

json peer_json(const Peer& peer, bool labels = false) {
  EventContext context;
  context.peer = &peer;
  context.peer_labels = labels;
  return peer_of_line(line_for(make_event(ConnKind::kEstablish), context));
}

TEST(AppendEventLine, NoPeerFieldWithoutAnIndex) {
  const std::string line = line_for(make_event(ConnKind::kEstablish));
  EXPECT_EQ(line.find("\"peer\""), std::string::npos);
  EXPECT_FALSE(json::parse(line).at("network_event").contains("peer"));
}

TEST(AppendEventLine, PeerSitsAfterDportInEveryType) {
  Peer peer;
  peer.kind = PeerKind::kHost;
  for (const TypeCase& t : kTypes) {
    SCOPED_TRACE(t.name);
    EventContext context;
    context.peer = &peer;
    const std::string line = line_for(make_event(t.kind), context);
    EXPECT_EQ(peer_of_line(line), json({{"kind", "host"}}));
    // One more field than without a peer, and nothing else moved.
    const json n = json::parse(line).at("network_event");
    const json without = json::parse(line_for(make_event(t.kind))).at("network_event");
    EXPECT_EQ(n.size(), without.size() + 1);
    json stripped = n;
    stripped.erase("peer");
    EXPECT_EQ(stripped, without);
  }
}

const PeerLabel kLabels[] = {{"app", "web"}, {"tier", "front"}};

Peer pod_peer() {
  Peer p;
  p.kind = PeerKind::kPod;
  p.namespace_name = "shop";
  p.name = "web-7d4b9c8f5-x2x1q";
  p.uid = "0b1c2d3e-0000-4000-8000-000000000001";
  p.workload = "web";
  p.workload_kind = "Deployment";
  p.labels = kLabels;
  // Fields of other kinds stay out of a pod's object even when set.
  p.port_name = "http";
  p.service_type = "ClusterIP";
  p.network = "private";
  return p;
}

TEST(AppendPeer, PodHasExactlyItsFields) {
  EXPECT_EQ(peer_json(pod_peer()), json({{"kind", "pod"},
                                         {"namespace", "shop"},
                                         {"name", "web-7d4b9c8f5-x2x1q"},
                                         {"uid", "0b1c2d3e-0000-4000-8000-000000000001"},
                                         {"workload", "web"},
                                         {"workload_kind", "Deployment"}}));
}

TEST(AppendPeer, PodLabelsOnlyWhenSwitchedOn) {
  const json with = peer_json(pod_peer(), true);
  EXPECT_EQ(with.size(), 7u) << with.dump();
  EXPECT_EQ(with.at("labels"), json({{"app", "web"}, {"tier", "front"}}));
  EXPECT_FALSE(peer_json(pod_peer(), false).contains("labels"));
  // A pod only an EndpointSlice names: no workload, no labels known; the fields stay, empty.
  Peer bare;
  bare.kind = PeerKind::kPod;
  bare.namespace_name = "shop";
  bare.name = "db-0";
  bare.uid = "u";
  EXPECT_EQ(peer_json(bare, true), json({{"kind", "pod"},
                                         {"namespace", "shop"},
                                         {"name", "db-0"},
                                         {"uid", "u"},
                                         {"workload", ""},
                                         {"workload_kind", ""},
                                         {"labels", json::object()}}));
}

TEST(AppendPeer, ServiceHasExactlyItsFields) {
  Peer p;
  p.kind = PeerKind::kService;
  p.namespace_name = "shop";
  p.name = "web";
  p.uid = "svc-uid";
  p.port_name = "http";
  p.service_type = "NodePort";
  p.workload = "not written";
  p.network = "not written";
  EXPECT_EQ(peer_json(p, true), json({{"kind", "service"},
                                      {"namespace", "shop"},
                                      {"name", "web"},
                                      {"port_name", "http"},
                                      {"type", "NodePort"}}));
  p.port_name = {};  // no service port matched
  EXPECT_EQ(peer_json(p).at("port_name"), "");
}

TEST(AppendPeer, NodeHostAndExternalHaveExactlyTheirFields) {
  Peer node;
  node.kind = PeerKind::kNode;
  node.name = "node-1";
  node.uid = "node-uid";
  node.namespace_name = "not written";
  EXPECT_EQ(peer_json(node, true), json({{"kind", "node"}, {"name", "node-1"}}));

  Peer host;
  host.kind = PeerKind::kHost;
  host.name = "not written";
  EXPECT_EQ(peer_json(host, true), json({{"kind", "host"}}));

  Peer external;
  external.kind = PeerKind::kExternal;
  external.network = "internet";
  external.name = "not written";
  EXPECT_EQ(peer_json(external, true), json({{"kind", "external"}, {"network", "internet"}}));
  external.network = "metadata";
  EXPECT_EQ(peer_json(external).at("network"), "metadata");
}

// Every string comes from the API server: each is escaped, whatever bytes it holds.
TEST(AppendPeer, EscapesEveryString) {
  const std::string_view nasty("a\"b\\c\n\x01\xff", 8);
  const std::string decoded = round_trip(nasty);
  const PeerLabel labels[] = {{nasty, nasty}};
  Peer p;
  p.kind = PeerKind::kPod;
  p.namespace_name = nasty;
  p.name = nasty;
  p.uid = nasty;
  p.workload = nasty;
  p.workload_kind = nasty;
  p.labels = labels;
  const json pod = peer_json(p, true);
  for (const char* key : {"namespace", "name", "uid", "workload", "workload_kind"}) {
    EXPECT_EQ(pod.at(key), decoded) << key;
  }
  EXPECT_EQ(pod.at("labels"), json({{decoded, decoded}}));

  p.kind = PeerKind::kService;
  p.port_name = nasty;
  p.service_type = nasty;
  const json service = peer_json(p);
  for (const char* key : {"namespace", "name", "port_name", "type"}) {
    EXPECT_EQ(service.at(key), decoded) << key;
  }
  p.kind = PeerKind::kNode;
  EXPECT_EQ(peer_json(p).at("name"), decoded);
  p.kind = PeerKind::kExternal;
  p.network = nasty;
  EXPECT_EQ(peer_json(p).at("network"), decoded);
}

// ---- connections older than the agent (issue #21) ------------------------------------------

TEST(EventLine, PreexistingOpenEventCarriesTheStatisticsSoFar) {
  ConnectionEvent e = make_event(ConnKind::kEstablish);
  e.preexisting = true;
  e.close.bytes_sent = 5;
  e.close.bytes_received = 6;
  e.close.srtt_us = 7;
  e.close.retransmits = 8;
  const json n = json::parse(line_for(e)).at("network_event");
  EXPECT_EQ(n.at("preexisting"), true);
  EXPECT_EQ(n.at("bytes_sent"), 5);
  EXPECT_EQ(n.at("bytes_received"), 6);
  EXPECT_EQ(n.at("srtt_us"), 7);
  EXPECT_EQ(n.at("retransmits"), 8);
  EXPECT_FALSE(n.contains("duration_ms"));
  EXPECT_FALSE(n.contains("direction"));
  // Not preexisting: none of them.
  const json plain = json::parse(line_for(make_event(ConnKind::kEstablish))).at("network_event");
  for (const char* key : {"preexisting", "bytes_sent", "srtt_us", "duration_from_agent_start"}) {
    EXPECT_FALSE(plain.contains(key)) << key;
  }
}

TEST(EventLine, CloseSaysWhenItsDurationCountsFromTheAgentStart) {
  ConnectionEvent e = make_event(ConnKind::kClose);
  EXPECT_FALSE(json::parse(line_for(e)).at("network_event").contains("duration_from_agent_start"));
  e.open_from_agent = true;
  const json n = json::parse(line_for(e)).at("network_event");
  EXPECT_EQ(n.at("duration_from_agent_start"), true);
  EXPECT_FALSE(n.contains("preexisting"));
}

// ---- peer.backend and peer.original (issue #20) --------------------------------------------

IpAddress address_of(const char* text) {
  IpAddress a;
  if (inet_pton(AF_INET, text, a.bytes.data()) == 1) return a;
  a.family = IpAddress::Family::kV6;
  EXPECT_EQ(inet_pton(AF_INET6, text, a.bytes.data()), 1) << text;
  return a;
}

json peer_json_with(const Peer& peer, const NatTranslation& nat, const Peer* backend) {
  EventContext context;
  context.peer = &peer;
  context.nat = &nat;
  context.backend = backend;
  return peer_of_line(line_for(make_event(ConnKind::kEstablish), context));
}

TEST(AppendPeer, BackendCarriesItsAddressAndWhoItIs) {
  Peer service;
  service.kind = PeerKind::kService;
  service.namespace_name = "shop";
  service.name = "cart";
  service.port_name = "http";
  service.service_type = "ClusterIP";
  NatTranslation nat;
  nat.has_backend = true;
  nat.backend_addr = address_of("10.244.2.9");
  nat.backend_port = 8080;
  const Peer backend = pod_peer();
  const json with = peer_json_with(service, nat, &backend);
  EXPECT_EQ(with.at("name"), "cart");
  EXPECT_EQ(with.at("backend"), json({{"addr", "10.244.2.9"},
                                      {"port", 8080},
                                      {"kind", "pod"},
                                      {"namespace", "shop"},
                                      {"name", "web-7d4b9c8f5-x2x1q"},
                                      {"uid", "0b1c2d3e-0000-4000-8000-000000000001"},
                                      {"workload", "web"},
                                      {"workload_kind", "Deployment"}}));
  EXPECT_FALSE(with.contains("original"));
  // Without a name for it: the address and port only.
  nat.backend_addr = address_of("fd00:10:244::9");
  EXPECT_EQ(peer_json_with(service, nat, nullptr).at("backend"),
            json({{"addr", "fd00:10:244::9"}, {"port", 8080}}));
}

TEST(AppendPeer, OriginalCarriesTheClientAndWhatItDialed) {
  Peer node;
  node.kind = PeerKind::kNode;
  node.name = "node-1";
  NatTranslation nat;
  nat.has_original = true;
  nat.original_addr = address_of("192.0.2.5");
  nat.original_port = 51000;
  nat.dialed_addr = address_of("10.0.0.1");
  nat.dialed_port = 30080;
  const json with = peer_json_with(node, nat, nullptr);
  EXPECT_EQ(with, json({{"kind", "node"},
                        {"name", "node-1"},
                        {"original",
                         {{"addr", "192.0.2.5"},
                          {"port", 51000},
                          {"dialed_addr", "10.0.0.1"},
                          {"dialed_port", 30080}}}}));
  // A translation that is neither (the pipeline passes only translated ones): nothing added.
  const NatTranslation none;
  EXPECT_EQ(peer_json_with(node, none, nullptr), json({{"kind", "node"}, {"name", "node-1"}}));
}

}  // namespace
}  // namespace netmon
