// The ctnetlink messages (parse), the kernel socket filter (run by the kernel on a datagram
// socket pair: the same classic BPF, the same SKF_AD_NLATTR ancillary load), and NatTable.
#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nat/conntrack_message.h"
#include "nat/nat_table.h"

namespace netmon {
namespace {

IpAddress v4(const char* text) {
  IpAddress a;
  a.family = IpAddress::Family::kV4;
  inet_pton(AF_INET, text, a.bytes.data());
  return a;
}

IpAddress v6(const char* text) {
  IpAddress a;
  a.family = IpAddress::Family::kV6;
  inet_pton(AF_INET6, text, a.bytes.data());
  return a;
}

ConntrackTuple tuple(const IpAddress& src, uint16_t sport, const IpAddress& dst, uint16_t dport) {
  ConntrackTuple t;
  t.src = src;
  t.dst = dst;
  t.sport = sport;
  t.dport = dport;
  return t;
}

// Builds ctnetlink messages as the kernel writes them (nested attributes, network order).
class MessageBuilder {
 public:
  MessageBuilder(uint16_t type, uint16_t flags, uint8_t family) {
    bytes_.resize(sizeof(nlmsghdr) + sizeof(nfgenmsg));
    nlmsghdr h{};
    h.nlmsg_type = static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | type);
    h.nlmsg_flags = flags;
    std::memcpy(bytes_.data(), &h, sizeof h);
    bytes_[sizeof(nlmsghdr)] = std::byte{family};
  }
  size_t begin(uint16_t type) {
    const size_t at = bytes_.size();
    put_header(type | NLA_F_NESTED, 0);
    return at;
  }
  void end(size_t at) {
    const uint16_t length = static_cast<uint16_t>(bytes_.size() - at);
    std::memcpy(bytes_.data() + at, &length, sizeof length);
  }
  void put(uint16_t type, const void* data, size_t size) {
    put_header(type, static_cast<uint16_t>(sizeof(nlattr) + size));
    const size_t at = bytes_.size();
    bytes_.resize(at + ((size + 3) & ~size_t{3}));
    std::memcpy(bytes_.data() + at, data, size);
  }
  void put_tuple(uint16_t type, const ConntrackTuple& t, uint8_t proto = IPPROTO_TCP) {
    const size_t outer = begin(type);
    const size_t ip = begin(CTA_TUPLE_IP);
    if (t.src.family == IpAddress::Family::kV4) {
      put(CTA_IP_V4_SRC, t.src.bytes.data(), 4);
      put(CTA_IP_V4_DST, t.dst.bytes.data(), 4);
    } else {
      put(CTA_IP_V6_SRC, t.src.bytes.data(), 16);
      put(CTA_IP_V6_DST, t.dst.bytes.data(), 16);
    }
    end(ip);
    const size_t p = begin(CTA_TUPLE_PROTO);
    put(CTA_PROTO_NUM, &proto, 1);
    const uint16_t sport = htons(t.sport);
    const uint16_t dport = htons(t.dport);
    put(CTA_PROTO_SRC_PORT, &sport, 2);
    put(CTA_PROTO_DST_PORT, &dport, 2);
    end(p);
    end(outer);
  }
  void put_status(uint32_t status) {
    const uint32_t be = htonl(status);
    put(CTA_STATUS, &be, 4);
  }
  void put_zone(uint16_t zone) {
    const uint16_t be = htons(zone);
    put(CTA_ZONE, &be, 2);
  }
  std::vector<std::byte> done() {
    const uint32_t length = static_cast<uint32_t>(bytes_.size());
    std::memcpy(bytes_.data(), &length, sizeof length);
    return bytes_;
  }

 private:
  void put_header(uint16_t type, uint16_t length) {
    nlattr a{};
    a.nla_len = length;
    a.nla_type = type;
    const size_t at = bytes_.size();
    bytes_.resize(at + sizeof a);
    std::memcpy(bytes_.data() + at, &a, sizeof a);
  }
  std::vector<std::byte> bytes_;
};

const ConntrackTuple kOriginal = tuple(v4("10.244.1.7"), 40000, v4("10.96.0.10"), 80);
const ConntrackTuple kReply = tuple(v4("10.244.2.9"), 8080, v4("10.244.1.7"), 40000);

std::vector<std::byte> entry_message(uint16_t type, uint16_t flags, const ConntrackTuple& original,
                                     const ConntrackTuple& reply, uint32_t status,
                                     uint16_t zone = 0) {
  const uint8_t family = original.src.family == IpAddress::Family::kV4 ? AF_INET : AF_INET6;
  MessageBuilder b(type, flags, family);
  b.put_tuple(CTA_TUPLE_ORIG, original);
  b.put_tuple(CTA_TUPLE_REPLY, reply);
  b.put_status(status);
  if (zone != 0) b.put_zone(zone);
  return b.done();
}

std::vector<std::byte> new_event(const ConntrackTuple& original, const ConntrackTuple& reply,
                                 uint32_t status, uint16_t zone = 0) {
  return entry_message(IPCTNL_MSG_CT_NEW, NLM_F_CREATE | NLM_F_EXCL, original, reply, status, zone);
}

TEST(ConntrackMessage, ParsesANewTranslatedEntry) {
  const auto bytes = new_event(kOriginal, kReply, IPS_CONFIRMED | IPS_DST_NAT);
  auto entry = parse_conntrack_message(bytes);
  ASSERT_TRUE(entry) << entry.error().message;
  EXPECT_EQ(entry->kind, ConntrackMessageKind::kNew);
  EXPECT_EQ(entry->original, kOriginal);
  EXPECT_EQ(entry->reply, kReply);
  EXPECT_TRUE(entry->destination_translated());
  EXPECT_FALSE(entry->source_translated());
  EXPECT_EQ(entry->zone, 0);
}

TEST(ConntrackMessage, ParsesIPv6ZoneAndDestroy) {
  const auto original = tuple(v6("fd00:10:244::7"), 40000, v6("fd00:10:96::a"), 443);
  const auto reply = tuple(v6("fd00:10:244::9"), 8443, v6("fd00:10:244::7"), 40000);
  const auto bytes =
      entry_message(IPCTNL_MSG_CT_DELETE, 0, original, reply, IPS_SRC_NAT | IPS_DST_NAT, 7);
  auto entry = parse_conntrack_message(bytes);
  ASSERT_TRUE(entry) << entry.error().message;
  EXPECT_EQ(entry->kind, ConntrackMessageKind::kDestroy);
  EXPECT_EQ(entry->original, original);
  EXPECT_EQ(entry->reply, reply);
  EXPECT_EQ(entry->zone, 7);
  EXPECT_TRUE(entry->source_translated());
}

TEST(ConntrackMessage, AnUpdateUdpOrAnotherSubsystemIsNotAnEntry) {
  // An update: IPCTNL_MSG_CT_NEW without NLM_F_CREATE (nor NLM_F_MULTI of a dump).
  auto update =
      parse_conntrack_message(entry_message(IPCTNL_MSG_CT_NEW, 0, kOriginal, kReply, IPS_DST_NAT));
  ASSERT_TRUE(update);
  EXPECT_EQ(update->kind, ConntrackMessageKind::kOther);
  // A dump's entry counts as new.
  auto dumped = parse_conntrack_message(
      entry_message(IPCTNL_MSG_CT_NEW, NLM_F_MULTI, kOriginal, kReply, IPS_DST_NAT));
  ASSERT_TRUE(dumped);
  EXPECT_EQ(dumped->kind, ConntrackMessageKind::kNew);

  MessageBuilder udp(IPCTNL_MSG_CT_NEW, NLM_F_CREATE, AF_INET);
  udp.put_tuple(CTA_TUPLE_ORIG, kOriginal, IPPROTO_UDP);
  udp.put_tuple(CTA_TUPLE_REPLY, kReply, IPPROTO_UDP);
  udp.put_status(IPS_DST_NAT);
  auto not_tcp = parse_conntrack_message(udp.done());
  ASSERT_TRUE(not_tcp);
  EXPECT_EQ(not_tcp->kind, ConntrackMessageKind::kOther);

  auto other = new_event(kOriginal, kReply, IPS_DST_NAT);
  const uint16_t expectations = (NFNL_SUBSYS_CTNETLINK_EXP << 8) | IPCTNL_MSG_CT_NEW;
  std::memcpy(other.data() + 4, &expectations, sizeof expectations);
  auto expectation = parse_conntrack_message(other);
  ASSERT_TRUE(expectation);
  EXPECT_EQ(expectation->kind, ConntrackMessageKind::kOther);
}

TEST(ConntrackMessage, MalformedMessagesAreErrorsAndNeverReadPastTheEnd) {
  const auto good = new_event(kOriginal, kReply, IPS_DST_NAT);
  // Every truncation, with the header's length made to agree: an error or (at the attribute
  // boundaries past both tuples) a parse, never a read past the end (ASan runs this too).
  for (size_t n = 0; n < good.size(); ++n) {
    std::vector<std::byte> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    if (n >= 4) {
      const uint32_t length = static_cast<uint32_t>(n);
      std::memcpy(cut.data(), &length, sizeof length);
    }
    auto entry = parse_conntrack_message(cut);
    EXPECT_FALSE(entry) << "a " << n << "-byte prefix of a " << good.size() << "-byte message";
  }
  // An attribute length that runs past the message.
  auto bad = good;
  const uint16_t huge = 0xfff0;
  std::memcpy(bad.data() + sizeof(nlmsghdr) + sizeof(nfgenmsg), &huge, sizeof huge);
  EXPECT_FALSE(parse_conntrack_message(bad));
  // A header length that disagrees with the message.
  auto wrong = good;
  const uint32_t length = static_cast<uint32_t>(good.size() + 4);
  std::memcpy(wrong.data(), &length, sizeof length);
  EXPECT_FALSE(parse_conntrack_message(wrong));
  // No status.
  MessageBuilder no_status(IPCTNL_MSG_CT_NEW, NLM_F_CREATE, AF_INET);
  no_status.put_tuple(CTA_TUPLE_ORIG, kOriginal);
  no_status.put_tuple(CTA_TUPLE_REPLY, kReply);
  EXPECT_FALSE(parse_conntrack_message(no_status.done()));
}

TEST(ConntrackMessage, SplitsADatagramIntoItsMessages) {
  auto one = new_event(kOriginal, kReply, IPS_DST_NAT);
  auto two = entry_message(IPCTNL_MSG_CT_DELETE, 0, kOriginal, kReply, IPS_DST_NAT);
  std::vector<std::byte> datagram = one;
  datagram.insert(datagram.end(), two.begin(), two.end());
  std::vector<ConntrackMessageKind> kinds;
  auto walked = for_each_netlink_message(datagram, [&](std::span<const std::byte> m) {
    auto entry = parse_conntrack_message(m);
    EXPECT_TRUE(entry);
    if (entry) kinds.push_back(entry->kind);
    return true;
  });
  ASSERT_TRUE(walked);
  EXPECT_EQ(kinds, (std::vector{ConntrackMessageKind::kNew, ConntrackMessageKind::kDestroy}));
  // A length past the datagram's end is an error.
  datagram.resize(datagram.size() - 1);
  EXPECT_FALSE(for_each_netlink_message(datagram, [](std::span<const std::byte>) { return true; }));
}

TEST(ConntrackMessage, DumpRequestAsksEveryEntryOfBothFamilies) {
  const auto request = conntrack_dump_request(42);
  nlmsghdr h;
  ASSERT_GE(request.size(), sizeof h + sizeof(nfgenmsg));
  std::memcpy(&h, request.data(), sizeof h);
  EXPECT_EQ(h.nlmsg_len, request.size());
  EXPECT_EQ(h.nlmsg_type, (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET);
  EXPECT_EQ(h.nlmsg_flags, NLM_F_REQUEST | NLM_F_DUMP);
  EXPECT_EQ(h.nlmsg_seq, 42u);
  EXPECT_EQ(static_cast<uint8_t>(request[sizeof h]), AF_UNSPEC);
}

// The filter, run by the kernel: a datagram passes when recv() gets it.
class FilterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, fds_), 0);
    const auto program = translated_entries_filter();
    sock_fprog fprog{};
    fprog.len = static_cast<unsigned short>(program.size());
    fprog.filter = const_cast<sock_filter*>(program.data());
    ASSERT_EQ(setsockopt(fds_[1], SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog), 0)
        << std::strerror(errno);
  }
  void TearDown() override {
    close(fds_[0]);
    close(fds_[1]);
  }
  bool passes(const std::vector<std::byte>& message) {
    EXPECT_EQ(send(fds_[0], message.data(), message.size(), 0),
              static_cast<ssize_t>(message.size()));
    std::vector<std::byte> got(message.size() + 16);
    const ssize_t n = recv(fds_[1], got.data(), got.size(), MSG_DONTWAIT);
    if (n < 0) return false;
    EXPECT_EQ(static_cast<size_t>(n), message.size()) << "a message is passed whole";
    return true;
  }
  int fds_[2] = {-1, -1};
};

TEST_F(FilterTest, PassesOnlyTranslatedEntries) {
  EXPECT_TRUE(passes(new_event(kOriginal, kReply, IPS_CONFIRMED | IPS_DST_NAT)));
  EXPECT_TRUE(passes(new_event(kOriginal, kReply, IPS_SRC_NAT)));
  EXPECT_TRUE(passes(entry_message(IPCTNL_MSG_CT_DELETE, 0, kOriginal, kReply,
                                   IPS_ASSURED | IPS_SRC_NAT | IPS_DST_NAT)));
  const auto plain = tuple(v4("10.244.1.7"), 40000, v4("10.244.2.9"), 8080);
  const auto plain_reply = tuple(v4("10.244.2.9"), 8080, v4("10.244.1.7"), 40000);
  EXPECT_FALSE(passes(new_event(plain, plain_reply, IPS_CONFIRMED | IPS_ASSURED)));
  // Status bits next to the NAT ones do not pass: IPS_SEEN_REPLY (bit 1), IPS_NAT_DONE_MASK's
  // IPS_SRC_NAT_DONE (bit 7).
  EXPECT_FALSE(passes(new_event(plain, plain_reply, IPS_SEEN_REPLY | IPS_SRC_NAT_DONE)));
  MessageBuilder no_status(IPCTNL_MSG_CT_NEW, NLM_F_CREATE, AF_INET);
  no_status.put_tuple(CTA_TUPLE_ORIG, kOriginal);
  EXPECT_FALSE(passes(no_status.done()));
  // Translated UDP (a pod's DNS query to the cluster DNS service): dropped.
  MessageBuilder udp(IPCTNL_MSG_CT_NEW, NLM_F_CREATE, AF_INET);
  udp.put_tuple(CTA_TUPLE_ORIG, kOriginal, IPPROTO_UDP);
  udp.put_tuple(CTA_TUPLE_REPLY, kReply, IPPROTO_UDP);
  udp.put_status(IPS_DST_NAT);
  EXPECT_FALSE(passes(udp.done()));
  // No original tuple: dropped.
  MessageBuilder no_tuple(IPCTNL_MSG_CT_NEW, NLM_F_CREATE, AF_INET);
  no_tuple.put_status(IPS_DST_NAT);
  EXPECT_FALSE(passes(no_tuple.done()));
  // The status after other attributes (CTA_STATUS is found wherever it is at the top level).
  MessageBuilder late(IPCTNL_MSG_CT_NEW, NLM_F_CREATE, AF_INET);
  late.put_tuple(CTA_TUPLE_ORIG, kOriginal);
  late.put_tuple(CTA_TUPLE_REPLY, kReply);
  late.put_zone(3);
  late.put_status(IPS_DST_NAT);
  EXPECT_TRUE(passes(late.done()));
}

ConntrackEntry entry_of(ConntrackMessageKind kind, const ConntrackTuple& original,
                        const ConntrackTuple& reply, uint32_t status, uint16_t zone = 0) {
  ConntrackEntry e;
  e.kind = kind;
  e.original = original;
  e.reply = reply;
  e.status = status;
  e.zone = zone;
  return e;
}

TEST(NatTable, AnOutboundConnectionFindsItsBackend) {
  NatTable table(16);
  ASSERT_TRUE(table.apply(entry_of(ConntrackMessageKind::kNew, kOriginal, kReply, IPS_DST_NAT), 1));
  auto t = table.find(kOriginal, true);
  ASSERT_TRUE(t);
  EXPECT_TRUE(t->has_backend);
  EXPECT_FALSE(t->has_original);
  EXPECT_EQ(t->backend_addr.bytes, v4("10.244.2.9").bytes);
  EXPECT_EQ(t->backend_port, 8080);
  // The same tuple read as an inbound socket's is not this entry's reply direction.
  EXPECT_FALSE(table.find(kOriginal, false));
}

TEST(NatTable, AnInboundConnectionFindsItsClientBeforeTranslation) {
  // NodePort from outside, masqueraded: 192.0.2.5:51000 -> node 10.0.0.1:30080, answered by the
  // backend 10.244.2.9:8080 to the node's address 10.0.0.1:61000.
  const auto original = tuple(v4("192.0.2.5"), 51000, v4("10.0.0.1"), 30080);
  const auto reply = tuple(v4("10.244.2.9"), 8080, v4("10.0.0.1"), 61000);
  NatTable table(16);
  table.apply(entry_of(ConntrackMessageKind::kNew, original, reply, IPS_DST_NAT | IPS_SRC_NAT), 1);
  // The backend's accepted socket: local 10.244.2.9:8080, remote 10.0.0.1:61000.
  auto t = table.find(reply, false);
  ASSERT_TRUE(t);
  EXPECT_TRUE(t->has_original);
  EXPECT_EQ(t->original_addr.bytes, v4("192.0.2.5").bytes);
  EXPECT_EQ(t->original_port, 51000);
  EXPECT_EQ(t->dialed_addr.bytes, v4("10.0.0.1").bytes);
  EXPECT_EQ(t->dialed_port, 30080);
  // The client's socket: it dialed the node port and the answers come from elsewhere.
  auto client = table.find(original, true);
  ASSERT_TRUE(client);
  EXPECT_EQ(client->backend_port, 8080);
}

TEST(NatTable, SourceNatOnlyHasNoBackendAndUntranslatedEntriesAreNotKept) {
  // Masquerade to the internet: the answers come from where the socket dialed.
  const auto original = tuple(v4("10.244.1.7"), 40000, v4("93.184.216.34"), 443);
  const auto reply = tuple(v4("93.184.216.34"), 443, v4("10.0.0.1"), 40000);
  NatTable table(16);
  table.apply(entry_of(ConntrackMessageKind::kNew, original, reply, IPS_SRC_NAT), 1);
  EXPECT_FALSE(table.find(original, true));
  const auto plain = tuple(v4("10.244.1.7"), 40001, v4("10.244.2.9"), 8080);
  const auto plain_reply = tuple(v4("10.244.2.9"), 8080, v4("10.244.1.7"), 40001);
  table.apply(entry_of(ConntrackMessageKind::kNew, plain, plain_reply, IPS_CONFIRMED), 1);
  EXPECT_EQ(table.size(), 1u);
}

TEST(NatTable, OtherZonesAreNotKept) {
  NatTable table(16);
  table.apply(entry_of(ConntrackMessageKind::kNew, kOriginal, kReply, IPS_DST_NAT, 5), 1);
  EXPECT_EQ(table.size(), 0u);
  EXPECT_FALSE(table.find(kOriginal, true));
}

TEST(NatTable, ADestroyedEntryAnswersUntilItIsPurgedAndAReusedTupleTakesTheNewBackend) {
  NatTable table(16);
  table.apply(entry_of(ConntrackMessageKind::kNew, kOriginal, kReply, IPS_DST_NAT), 1);
  table.apply(entry_of(ConntrackMessageKind::kDestroy, kOriginal, kReply, IPS_DST_NAT), 100);
  EXPECT_TRUE(table.find(kOriginal, true)) << "a late Close still finds it";
  table.purge_destroyed(100);  // destroyed at 100: not before 100
  EXPECT_TRUE(table.find(kOriginal, true));
  table.purge_destroyed(101);
  EXPECT_FALSE(table.find(kOriginal, true));
  EXPECT_FALSE(table.find(kReply, false));
  EXPECT_EQ(table.size(), 0u);

  // Destroyed, then the tuple reused for another backend before the purge: the new one answers
  // and the purge leaves it.
  table.apply(entry_of(ConntrackMessageKind::kNew, kOriginal, kReply, IPS_DST_NAT), 200);
  table.apply(entry_of(ConntrackMessageKind::kDestroy, kOriginal, kReply, IPS_DST_NAT), 210);
  const auto other_reply = tuple(v4("10.244.3.3"), 8080, v4("10.244.1.7"), 40000);
  table.apply(entry_of(ConntrackMessageKind::kNew, kOriginal, other_reply, IPS_DST_NAT), 220);
  table.purge_destroyed(1000);
  auto t = table.find(kOriginal, true);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->backend_addr.bytes, v4("10.244.3.3").bytes);
  EXPECT_FALSE(table.find(kReply, false)) << "the old reply tuple is forgotten";
  EXPECT_TRUE(table.find(other_reply, false));
}

TEST(NatTable, AnEntryGoesOnceBothEndsClosedHere) {
  NatTable table(16);
  table.apply(entry_of(ConntrackMessageKind::kNew, kOriginal, kReply, IPS_DST_NAT), 1);
  table.closed(kOriginal, true);  // the client's Close
  EXPECT_TRUE(table.find(kReply, false)) << "the backend's Close still to come";
  table.closed(kOriginal, true);  // the same end again changes nothing
  EXPECT_EQ(table.size(), 1u);
  table.closed(kReply, false);  // the backend's Close
  EXPECT_EQ(table.size(), 0u);
  EXPECT_FALSE(table.find(kOriginal, true));
  // A Close that found nothing: nothing happens.
  table.closed(kOriginal, true);
  EXPECT_EQ(table.size(), 0u);
}

TEST(NatTable, AFullTableRefusesAndCounts) {
  NatTable table(2);
  for (uint16_t port = 1; port <= 3; ++port) {
    auto original = kOriginal;
    original.sport = port;
    auto reply = kReply;
    reply.dport = port;
    const bool kept =
        table.apply(entry_of(ConntrackMessageKind::kNew, original, reply, IPS_DST_NAT), 1);
    EXPECT_EQ(kept, port <= 2) << port;
  }
  EXPECT_EQ(table.size(), 2u);
  EXPECT_EQ(table.refused(), 1u);
}

}  // namespace
}  // namespace netmon
