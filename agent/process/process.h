// The `process` (and `parent`) object of an event, and how it is derived from what the kernel
// recorded. The process table (the next stage of the pipeline) fills the fields the kernel record
// cannot carry; until it has, `complete` is false and only the kernel's fields are written.
#pragma once

#include <cstdint>
#include <string>

#include "events/event.h"

namespace netmon {

struct ProcessObject {
  uint32_t pid = 0;
  uint32_t tid = 0;
  uint32_t ppid = 0;
  uint32_t uid = 0;
  uint32_t euid = 0;
  uint32_t gid = 0;
  uint32_t egid = 0;
  uint32_t auid = 0xffffffff;
  uint64_t start_ns = 0;  // CLOCK_BOOTTIME of the process image's start
  std::string filename;   // executable name (the command name until the table knows better)
  std::string exec_id;
};

// Start times in exec ids are truncated to the kernel's USER_HZ clock tick (10 ms), the precision
// of /proc/PID/stat, so a process gets the same exec id whether netmon learned it from a kernel
// record or from a /proc scan.
constexpr uint64_t kExecIdTickNs = 10'000'000;

// Standard base64 of "<pid>:<start ns since boot, truncated to the tick>".
std::string make_exec_id(uint32_t pid, uint64_t start_boot_ns);

// Standard (RFC 4648) base64 with padding.
std::string base64_encode(std::string_view data);

// The object as far as the kernel record knows it.
ProcessObject process_from_task(const TaskInfo& task);

}  // namespace netmon
