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
static_assert(sizeof(nm_conn_record) == 200);
static_assert(offsetof(nm_conn_record, task) == 16);
static_assert(offsetof(nm_conn_record, cookie) == 104);
static_assert(offsetof(nm_conn_record, error) == 152);
static_assert(sizeof(nm_exec_record) == 120);
static_assert(sizeof(nm_fork_record) == 112);
static_assert(sizeof(nm_exit_record) == 32);

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

namespace {

Result<nm_header> read_header(std::span<const std::byte> record) {
  nm_header hdr{};
  if (record.size() < sizeof(hdr)) {
    return fail("record of " + std::to_string(record.size()) + " bytes is shorter than its header");
  }
  std::memcpy(&hdr, record.data(), sizeof(hdr));
  if (hdr.size != record.size()) {
    return fail("record of " + std::to_string(record.size()) + " bytes states size " +
                std::to_string(hdr.size));
  }
  return hdr;
}

template <typename Rec>
Result<Rec> read_fixed(std::span<const std::byte> record, const char* what) {
  if (record.size() != sizeof(Rec)) {
    return fail(std::string(what) + " record of " + std::to_string(record.size()) +
                " bytes, expected " + std::to_string(sizeof(Rec)));
  }
  Rec r{};
  std::memcpy(&r, record.data(), sizeof(r));
  return r;
}

Result<ExecEvent> decode_exec(std::span<const std::byte> record) {
  nm_exec_record r{};
  if (record.size() < sizeof(r)) {
    return fail("exec record of " + std::to_string(record.size()) + " bytes is shorter than " +
                std::to_string(sizeof(r)));
  }
  std::memcpy(&r, record.data(), sizeof(r));
  if (r.path_len > NM_PATH_MAX || r.args_len > NM_ARGS_MAX ||
      record.size() != sizeof(r) + r.path_len + r.args_len) {
    return fail("exec record of " + std::to_string(record.size()) + " bytes states path " +
                std::to_string(r.path_len) + " and args " + std::to_string(r.args_len) + " bytes");
  }
  ExecEvent e;
  e.boot_ns = r.hdr.ts_ns;
  e.task = to_task(r.task);
  e.secureexec = r.secureexec;
  const auto* tail = reinterpret_cast<const char*>(record.data()) + sizeof(r);
  e.binary_path = std::string_view(tail, r.path_len);
  e.raw_args = std::string_view(tail + r.path_len, r.args_len);
  e.path_truncated = (r.flags & NM_EXEC_F_PATH_TRUNCATED) != 0;
  e.args_truncated = (r.flags & NM_EXEC_F_ARGS_TRUNCATED) != 0;
  return e;
}

}  // namespace

Result<KernelEvent> decode(std::span<const std::byte> record) {
  auto hdr = read_header(record);
  if (!hdr) return fail(hdr.error().message);
  switch (hdr->type) {
    case NM_REC_CONNECTION: {
      auto e = decode_record(record);
      if (!e) return fail(e.error().message);
      return KernelEvent(*e);
    }
    case NM_REC_EXEC: {
      auto e = decode_exec(record);
      if (!e) return fail(e.error().message);
      return KernelEvent(*e);
    }
    case NM_REC_FORK: {
      auto r = read_fixed<nm_fork_record>(record, "fork");
      if (!r) return fail(r.error().message);
      return KernelEvent(ForkEvent{r->hdr.ts_ns, to_task(r->child), r->parent_start_ns});
    }
    case NM_REC_EXIT: {
      auto r = read_fixed<nm_exit_record>(record, "exit");
      if (!r) return fail(r.error().message);
      return KernelEvent(ExitEvent{r->hdr.ts_ns, r->pid, r->start_ns});
    }
    default:
      return fail("unknown record type " + std::to_string(hdr->type));
  }
}

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

}  // namespace netmon
