#include "nat/conntrack_message.h"

#include <linux/filter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <optional>

namespace netmon {
namespace {

constexpr size_t kNlHeader = sizeof(nlmsghdr);
constexpr size_t kNfHeader = sizeof(nfgenmsg);
constexpr size_t kAttrHeader = sizeof(nlattr);

uint16_t load16(const std::byte* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

uint32_t load32(const std::byte* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// The attributes of one nesting level: their payloads by type (the first of each type), for
// types below N. Fails on an attribute whose length runs past the level.
template <size_t N>
Result<std::array<std::span<const std::byte>, N>> attributes_of(std::span<const std::byte> level) {
  std::array<std::span<const std::byte>, N> found{};
  size_t offset = 0;
  while (level.size() - offset >= kAttrHeader) {
    const uint16_t length = load16(level.data() + offset);
    const uint16_t type = load16(level.data() + offset + 2) & NLA_TYPE_MASK;
    if (length < kAttrHeader || length > level.size() - offset) {
      return fail("attribute " + std::to_string(type) + " of length " + std::to_string(length) +
                  " runs past its " + std::to_string(level.size() - offset) + " bytes");
    }
    if (type < N && found[type].data() == nullptr) {
      found[type] = level.subspan(offset + kAttrHeader, length - kAttrHeader);
    }
    const size_t aligned = (static_cast<size_t>(length) + 3) & ~size_t{3};  // NLA_ALIGN
    if (aligned >= level.size() - offset) break;
    offset += aligned;
  }
  return found;
}

// A tuple (CTA_TUPLE_ORIG or CTA_TUPLE_REPLY); nullopt when it is not TCP; an error when its
// addresses or ports are missing or the wrong size.
Result<std::optional<ConntrackTuple>> parse_tuple(std::span<const std::byte> nested,
                                                  uint8_t family) {
  auto tuple_attrs = attributes_of<CTA_TUPLE_MAX + 1>(nested);
  if (!tuple_attrs) return tl::unexpected(tuple_attrs.error());
  const auto ip = (*tuple_attrs)[CTA_TUPLE_IP];
  const auto proto = (*tuple_attrs)[CTA_TUPLE_PROTO];
  if (ip.data() == nullptr || proto.data() == nullptr) return fail("a tuple without ip or proto");
  auto proto_attrs = attributes_of<CTA_PROTO_MAX + 1>(proto);
  if (!proto_attrs) return tl::unexpected(proto_attrs.error());
  const auto number = (*proto_attrs)[CTA_PROTO_NUM];
  if (number.size() != 1) return fail("a tuple without its protocol number");
  if (static_cast<uint8_t>(number[0]) != IPPROTO_TCP) return std::optional<ConntrackTuple>{};
  const auto sport = (*proto_attrs)[CTA_PROTO_SRC_PORT];
  const auto dport = (*proto_attrs)[CTA_PROTO_DST_PORT];
  if (sport.size() != 2 || dport.size() != 2) return fail("a TCP tuple without its ports");

  auto ip_attrs = attributes_of<CTA_IP_MAX + 1>(ip);
  if (!ip_attrs) return tl::unexpected(ip_attrs.error());
  ConntrackTuple tuple;
  std::span<const std::byte> src;
  std::span<const std::byte> dst;
  size_t size = 0;
  if (family == AF_INET) {
    src = (*ip_attrs)[CTA_IP_V4_SRC];
    dst = (*ip_attrs)[CTA_IP_V4_DST];
    size = 4;
    tuple.src.family = tuple.dst.family = IpAddress::Family::kV4;
  } else {
    src = (*ip_attrs)[CTA_IP_V6_SRC];
    dst = (*ip_attrs)[CTA_IP_V6_DST];
    size = 16;
    tuple.src.family = tuple.dst.family = IpAddress::Family::kV6;
  }
  if (src.size() != size || dst.size() != size) return fail("a tuple without its addresses");
  std::memcpy(tuple.src.bytes.data(), src.data(), size);
  std::memcpy(tuple.dst.bytes.data(), dst.data(), size);
  tuple.sport = ntohs(load16(sport.data()));
  tuple.dport = ntohs(load16(dport.data()));
  return std::optional<ConntrackTuple>{tuple};
}

}  // namespace

size_t ConntrackTupleHash::operator()(const ConntrackTuple& t) const noexcept {
  // FNV-1a over the bytes that make the key: fast, and good enough for kernel-chosen ports.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  };
  const size_t size = t.src.family == IpAddress::Family::kV4 ? 4 : 16;
  mix(t.src.bytes.data(), size);
  mix(t.dst.bytes.data(), size);
  const uint8_t ports[4] = {static_cast<uint8_t>(t.sport), static_cast<uint8_t>(t.sport >> 8),
                            static_cast<uint8_t>(t.dport), static_cast<uint8_t>(t.dport >> 8)};
  mix(ports, sizeof ports);
  return static_cast<size_t>(h);
}

bool ConntrackEntry::source_translated() const { return (status & IPS_SRC_NAT) != 0; }
bool ConntrackEntry::destination_translated() const { return (status & IPS_DST_NAT) != 0; }

Result<ConntrackEntry> parse_conntrack_message(std::span<const std::byte> message) {
  ConntrackEntry entry;
  if (message.size() < kNlHeader) return fail("a netlink message shorter than its header");
  nlmsghdr header;
  std::memcpy(&header, message.data(), sizeof header);
  if (header.nlmsg_len != message.size()) return fail("a netlink message of the wrong length");
  if (NFNL_SUBSYS_ID(header.nlmsg_type) != NFNL_SUBSYS_CTNETLINK) return entry;  // kOther
  const uint16_t type = NFNL_MSG_TYPE(header.nlmsg_type);
  if (type == IPCTNL_MSG_CT_NEW) {
    // Event group NEW (NLM_F_CREATE) or a dump's entry (NLM_F_MULTI); an update has neither.
    if ((header.nlmsg_flags & (NLM_F_CREATE | NLM_F_MULTI)) == 0) return entry;
    entry.kind = ConntrackMessageKind::kNew;
  } else if (type == IPCTNL_MSG_CT_DELETE) {
    entry.kind = ConntrackMessageKind::kDestroy;
  } else {
    return entry;
  }
  if (message.size() < kNlHeader + kNfHeader) return fail("a conntrack message without nfgenmsg");
  const uint8_t family = static_cast<uint8_t>(message[kNlHeader]);  // nfgen_family
  if (family != AF_INET && family != AF_INET6) {
    entry.kind = ConntrackMessageKind::kOther;
    return entry;
  }
  auto attrs = attributes_of<CTA_MAX + 1>(message.subspan(kNlHeader + kNfHeader));
  if (!attrs) return tl::unexpected(attrs.error());
  const auto original = (*attrs)[CTA_TUPLE_ORIG];
  const auto reply = (*attrs)[CTA_TUPLE_REPLY];
  const auto status = (*attrs)[CTA_STATUS];
  if (original.data() == nullptr || reply.data() == nullptr) {
    return fail("a conntrack entry without both tuples");
  }
  if (status.size() != 4) return fail("a conntrack entry without its status");
  auto original_tuple = parse_tuple(original, family);
  if (!original_tuple) return tl::unexpected(original_tuple.error());
  auto reply_tuple = parse_tuple(reply, family);
  if (!reply_tuple) return tl::unexpected(reply_tuple.error());
  if (!*original_tuple || !*reply_tuple) {  // not TCP
    entry.kind = ConntrackMessageKind::kOther;
    return entry;
  }
  entry.original = **original_tuple;
  entry.reply = **reply_tuple;
  entry.status = ntohl(load32(status.data()));
  const auto zone = (*attrs)[CTA_ZONE];
  if (zone.size() == 2) entry.zone = ntohs(load16(zone.data()));
  return entry;
}

std::vector<std::byte> conntrack_dump_request(uint32_t sequence) {
  std::vector<std::byte> request(NLMSG_ALIGN(kNlHeader + kNfHeader));
  nlmsghdr header{};
  header.nlmsg_len = static_cast<uint32_t>(request.size());
  header.nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
  header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  header.nlmsg_seq = sequence;
  std::memcpy(request.data(), &header, sizeof header);
  nfgenmsg nf{};
  nf.nfgen_family = AF_UNSPEC;
  nf.version = NFNETLINK_V0;
  std::memcpy(request.data() + kNlHeader, &nf, sizeof nf);
  return request;
}

std::span<const sock_filter> translated_entries_filter() {
  // A = offset of the top-level CTA_STATUS attribute (the kernel's nla_find from byte 20, after
  // nlmsghdr and nfgenmsg), 0 when there is none; then the status word after its 4-byte header,
  // loaded in network order as classic BPF does: a NAT bit must be set. Then the protocol of the
  // original tuple (CTA_TUPLE_ORIG > CTA_TUPLE_PROTO > CTA_PROTO_NUM, found with the nested
  // search): TCP only, so that translated UDP (every pod's DNS query to the cluster DNS service)
  // never reaches the agent either.
  static constexpr uint32_t kAttrsStart = kNlHeader + kNfHeader;
  static constexpr uint32_t kFind = static_cast<uint32_t>(SKF_AD_OFF + SKF_AD_NLATTR);
  static constexpr uint32_t kFindNested = static_cast<uint32_t>(SKF_AD_OFF + SKF_AD_NLATTR_NEST);
  static const sock_filter program[] = {
      /* 0 */ BPF_STMT(BPF_LD | BPF_IMM, kAttrsStart),
      /* 1 */ BPF_STMT(BPF_LDX | BPF_IMM, CTA_STATUS),
      /* 2 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, kFind),
      /* 3 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 16, 0),  // no status: drop (20)
      /* 4 */ BPF_STMT(BPF_MISC | BPF_TAX, 0),
      /* 5 */ BPF_STMT(BPF_LD | BPF_W | BPF_IND, kAttrHeader),
      /* 6 */ BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, IPS_SRC_NAT | IPS_DST_NAT, 0, 13),  // else 20
      /* 7 */ BPF_STMT(BPF_LD | BPF_IMM, kAttrsStart),
      /* 8 */ BPF_STMT(BPF_LDX | BPF_IMM, CTA_TUPLE_ORIG),
      /* 9 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, kFind),
      /* 10 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 9, 0),  // drop (20)
      /* 11 */ BPF_STMT(BPF_LDX | BPF_IMM, CTA_TUPLE_PROTO),
      /* 12 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, kFindNested),
      /* 13 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 6, 0),  // drop (20)
      /* 14 */ BPF_STMT(BPF_LDX | BPF_IMM, CTA_PROTO_NUM),
      /* 15 */ BPF_STMT(BPF_LD | BPF_B | BPF_ABS, kFindNested),
      /* 16 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 3, 0),  // drop (20)
      /* 17 */ BPF_STMT(BPF_MISC | BPF_TAX, 0),
      /* 18 */ BPF_STMT(BPF_LD | BPF_B | BPF_IND, kAttrHeader),
      /* 19 */ BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 1, 0),  // TCP: accept (21)
      /* 20 */ BPF_STMT(BPF_RET | BPF_K, 0),                            // drop
      /* 21 */ BPF_STMT(BPF_RET | BPF_K, 0xffffffff),                   // the whole message
  };
  return program;
}

}  // namespace netmon
