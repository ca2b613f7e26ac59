// Reads processes from a proc filesystem (the host's /proc, or a copy mounted elsewhere such as
// /host/proc in a container).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "process/process.h"

namespace netmon {

class ProcReader {
 public:
  // `proc_root`: where the proc filesystem is mounted, e.g. "/proc".
  explicit ProcReader(std::string proc_root);

  // Reads /proc/<pid>: stat (ppid, start time), status (uids, gids, capabilities), loginuid,
  // exe (binary path; " (deleted)" and memfd files set FILELESS_EXEC) and cmdline. Fills every
  // field but parent_exec_id. Returns nullopt when the process does not exist (anymore) or its
  // stat cannot be parsed. Kernel threads have no exe: their filename is the command name.
  std::optional<ProcessEntry> read(uint32_t pid) const;

  // Calls `visit` for every process readable at the time of the call.
  void scan(const std::function<void(ProcessEntry&&)>& visit) const;

  const std::string& root() const { return root_; }

 private:
  std::string root_;
  uint64_t ns_per_tick_;
};

// Parses the fields netmon needs from the text of /proc/PID/stat: ppid (field 4) and start time
// in clock ticks (field 22), and the command name. The command name may contain spaces and
// parentheses, so the fields are counted from the last ')'.
struct ProcStat {
  std::string comm;
  uint32_t ppid = 0;
  uint64_t start_ticks = 0;
};
std::optional<ProcStat> parse_proc_stat(std::string_view text);

// Parses Uid/Gid/CapInh/CapPrm/CapEff from the text of /proc/PID/status into `entry`. Returns
// false when a field is missing or malformed.
bool parse_proc_status(std::string_view text, ProcessEntry& entry);

}  // namespace netmon
