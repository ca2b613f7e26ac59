// Record dispatch and what the sensors' decoders share; the decoders themselves are in
// connection_decode.cpp and process_decode.cpp.
#include "events/decode.h"

#include <cstring>
#include <string>

#include "events/record_reader.h"

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

namespace records {

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

TaskInfo to_task(const nm_task& t) {
  TaskInfo out;
  out.uid = t.uid;
  out.euid = t.euid;
  out.gid = t.gid;
  out.egid = t.egid;
  out.auid = t.auid;
  out.cap_effective = t.cap_effective;
  out.cap_permitted = t.cap_permitted;
  out.cap_inheritable = t.cap_inheritable;
  out.pid = t.pid;
  out.tid = t.tid;
  out.ppid = t.ppid;
  out.start_ns = t.start_ns;
  out.cgroup_id = t.cgroup_id;
  static_assert(sizeof(out.comm) == sizeof(t.comm));
  std::memcpy(out.comm.data(), t.comm, sizeof(t.comm));
  out.comm.back() = '\0';
  return out;
}

}  // namespace records

namespace {

template <typename Event>
Result<KernelEvent> as_kernel_event(Result<Event> e) {
  if (!e) return fail(e.error().message);
  return KernelEvent(std::move(*e));
}

}  // namespace

Result<KernelEvent> decode(std::span<const std::byte> record) {
  auto hdr = records::read_header(record);
  if (!hdr) return fail(hdr.error().message);
  switch (hdr->type) {
    case NM_REC_CONNECTION:
      return as_kernel_event(records::decode_connection(record));
    case NM_REC_EXEC:
      return as_kernel_event(records::decode_exec(record));
    case NM_REC_FORK:
      return as_kernel_event(records::decode_fork(record));
    case NM_REC_EXIT:
      return as_kernel_event(records::decode_exit(record));
    default:
      return fail("unknown record type " + std::to_string(hdr->type));
  }
}

}  // namespace netmon
