// The process sensor's decoder: NM_REC_EXEC, NM_REC_FORK and NM_REC_EXIT records.
#include <string>

#include "events/record_reader.h"

namespace netmon::records {

Result<ExecEvent> decode_exec(std::span<const std::byte> record) {
  auto known = read_known_prefix<nm_exec_record>(record, "exec");
  if (!known) return fail(known.error().message);
  const nm_exec_record& r = *known;
  // The fixed part ends where the path starts: hdr.size - path_len - args_len bytes, at least the
  // struct this build knows (a newer one appends fields to it) and a whole number of 8-byte words.
  const size_t variable = size_t{r.path_len} + r.args_len;
  const size_t fixed = record.size() >= variable ? record.size() - variable : 0;
  if (r.path_len > NM_PATH_MAX || r.args_len > NM_ARGS_MAX || fixed < sizeof(r) || fixed % 8 != 0) {
    return fail("exec record of " + std::to_string(record.size()) + " bytes states path " +
                std::to_string(r.path_len) + " and args " + std::to_string(r.args_len) + " bytes");
  }
  ExecEvent e;
  e.boot_ns = r.hdr.ts_ns;
  e.task = to_task(r.task);
  e.secureexec = r.secureexec;
  const auto* tail = reinterpret_cast<const char*>(record.data()) + fixed;
  e.binary_path = std::string_view(tail, r.path_len);
  e.raw_args = std::string_view(tail + r.path_len, r.args_len);
  e.path_truncated = (r.flags & NM_EXEC_F_PATH_TRUNCATED) != 0;
  e.args_truncated = (r.flags & NM_EXEC_F_ARGS_TRUNCATED) != 0;
  return e;
}

Result<ForkEvent> decode_fork(std::span<const std::byte> record) {
  auto r = read_known_prefix<nm_fork_record>(record, "fork");
  if (!r) return fail(r.error().message);
  return ForkEvent{r->hdr.ts_ns, to_task(r->child), r->parent_start_ns};
}

Result<ExitEvent> decode_exit(std::span<const std::byte> record) {
  auto r = read_known_prefix<nm_exit_record>(record, "exit");
  if (!r) return fail(r.error().message);
  return ExitEvent{r->hdr.ts_ns, r->pid, r->start_ns};
}

}  // namespace netmon::records
