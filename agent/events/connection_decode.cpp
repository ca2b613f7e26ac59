// The connection sensor's decoder: NM_REC_CONNECTION records.
#include <string>

#include "events/decode.h"
#include "events/record_reader.h"

namespace netmon {
namespace records {
namespace {

IpAddress to_address(const __u8 (&bytes)[NM_ADDR_LEN], IpAddress::Family family) {
  IpAddress a;
  a.family = family;
  std::memcpy(a.bytes.data(), bytes, a.bytes.size());
  if (family == IpAddress::Family::kV4) std::memset(a.bytes.data() + 4, 0, 12);
  return a;
}

}  // namespace

Result<ConnectionEvent> decode_connection(std::span<const std::byte> record) {
  auto known = read_known_prefix<nm_conn_record>(record, "connection");
  if (!known) return fail(known.error().message);
  const nm_conn_record& r = *known;

  ConnectionEvent e;
  e.boot_ns = r.hdr.ts_ns;
  switch (r.kind) {
    case NM_CONN_ESTABLISH:
      e.kind = ConnKind::kEstablish;
      break;
    case NM_CONN_ACCEPT:
      e.kind = ConnKind::kAccept;
      break;
    case NM_CONN_CLOSE:
      e.kind = ConnKind::kClose;
      break;
    case NM_CONN_FAILED:
      e.kind = ConnKind::kFailed;
      break;
    default:
      return fail("connection record with unknown kind " + std::to_string(r.kind));
  }
  switch (r.direction) {
    case NM_DIR_OUTBOUND:
      e.direction = Direction::kOutbound;
      break;
    case NM_DIR_INBOUND:
      e.direction = Direction::kInbound;
      break;
    default:
      return fail("connection record with unknown direction " + std::to_string(r.direction));
  }
  IpAddress::Family family;
  if (r.family == NM_AF_INET) {
    family = IpAddress::Family::kV4;
  } else if (r.family == NM_AF_INET6) {
    family = IpAddress::Family::kV6;
  } else {
    return fail("connection record with unknown address family " + std::to_string(r.family));
  }
  e.owner_known = (r.flags & NM_CONN_F_OWNER_KNOWN) != 0;
  if (e.owner_known) e.task = to_task(r.task);
  e.cookie = r.cookie;
  e.saddr = to_address(r.saddr, family);
  e.daddr = to_address(r.daddr, family);
  e.sport = r.sport;
  e.dport = r.dport;
  e.error = r.error;
  if (e.kind == ConnKind::kAccept) e.accepted_fd = r.accepted_fd;
  const bool open_event = e.kind == ConnKind::kEstablish || e.kind == ConnKind::kAccept;
  e.preexisting = open_event && (r.flags & NM_CONN_F_PREEXISTING) != 0;
  e.open_from_agent =
      (e.preexisting || e.kind == ConnKind::kClose) && (r.flags & NM_CONN_F_OPEN_FROM_AGENT) != 0;
  if (e.preexisting) {
    e.close.open_boot_ns = r.open_ns;
    e.close.bytes_sent = r.bytes_sent;
    e.close.bytes_received = r.bytes_received;
    e.close.srtt_us = r.srtt_us;
    e.close.retransmits = r.retransmits;
  }
  if (e.kind == ConnKind::kClose) {
    e.close.open_boot_ns = r.open_ns;
    e.close.bytes_sent = r.bytes_sent;
    e.close.bytes_received = r.bytes_received;
    e.close.srtt_us = r.srtt_us;
    e.close.retransmits = r.retransmits;
    e.close.closed_by = r.closed_by == NM_CLOSED_BY_LOCAL    ? ClosedBy::kLocal
                        : r.closed_by == NM_CLOSED_BY_REMOTE ? ClosedBy::kRemote
                                                             : ClosedBy::kUnknown;
    e.close.reset = r.reset != 0;
  }
  return e;
}

}  // namespace records

Result<ConnectionEvent> decode_record(std::span<const std::byte> record) {
  nm_header hdr{};
  if (record.size() < sizeof(hdr)) {
    return fail("record of " + std::to_string(record.size()) + " bytes is shorter than its header");
  }
  std::memcpy(&hdr, record.data(), sizeof(hdr));
  if (hdr.type != NM_REC_CONNECTION) {
    return fail("unknown record type " + std::to_string(hdr.type));
  }
  if (auto checked = records::read_header(record); !checked) return fail(checked.error().message);
  return records::decode_connection(record);
}

}  // namespace netmon
