#include "events/decode.h"

#include <cstring>
#include <string>

extern "C" {
#include "netmon_events.h"
}

namespace netmon {

// The layout contract with bpf/netmon_events.h: these sizes and offsets are what the BPF side
// writes; a change on either side without the other fails the build here.
static_assert(sizeof(nm_header) == 16);
static_assert(sizeof(nm_task) == 88);
static_assert(sizeof(nm_conn_record) == 160);
static_assert(offsetof(nm_conn_record, task) == 16);
static_assert(offsetof(nm_conn_record, cookie) == 104);
static_assert(offsetof(nm_conn_record, error) == 152);

std::string_view TaskInfo::comm_view() const {
  return std::string_view(comm.data(), strnlen(comm.data(), comm.size()));
}

namespace {

TaskInfo to_task(const nm_task& t) {
  TaskInfo out;
  out.pid = t.pid;
  out.tid = t.tid;
  out.ppid = t.ppid;
  out.uid = t.uid;
  out.euid = t.euid;
  out.gid = t.gid;
  out.egid = t.egid;
  out.auid = t.auid;
  out.start_ns = t.start_ns;
  out.cgroup_id = t.cgroup_id;
  out.cap_effective = t.cap_effective;
  out.cap_permitted = t.cap_permitted;
  out.cap_inheritable = t.cap_inheritable;
  static_assert(sizeof(out.comm) == sizeof(t.comm));
  std::memcpy(out.comm.data(), t.comm, sizeof(t.comm));
  out.comm.back() = '\0';
  return out;
}

IpAddress to_address(const __u8 (&bytes)[NM_ADDR_LEN], IpAddress::Family family) {
  IpAddress a;
  a.family = family;
  std::memcpy(a.bytes.data(), bytes, a.bytes.size());
  if (family == IpAddress::Family::kV4) std::memset(a.bytes.data() + 4, 0, 12);
  return a;
}

}  // namespace

Result<ConnectionEvent> decode_record(std::span<const std::byte> record) {
  nm_header hdr{};
  if (record.size() < sizeof(hdr)) {
    return fail("record of " + std::to_string(record.size()) + " bytes is shorter than its header");
  }
  std::memcpy(&hdr, record.data(), sizeof(hdr));
  if (hdr.type != NM_REC_CONNECTION) {
    return fail("unknown record type " + std::to_string(hdr.type));
  }
  if (hdr.size != record.size() || hdr.size != sizeof(nm_conn_record)) {
    return fail("connection record of " + std::to_string(record.size()) + " bytes states size " +
                std::to_string(hdr.size) + ", expected " + std::to_string(sizeof(nm_conn_record)));
  }
  nm_conn_record r{};
  std::memcpy(&r, record.data(), sizeof(r));

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
  return e;
}

}  // namespace netmon
