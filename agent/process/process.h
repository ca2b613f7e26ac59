// What netmon knows about a process, and the text forms of its fields in the `process` and
// `parent` objects of an event.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "events/event.h"  // Credentials

namespace netmon {

// A process image as the process table keeps it. Credentials and capabilities are those at the
// image's start (exec, fork or /proc scan); events overlay the values current at the event.
struct ProcessEntry : Credentials {
  uint32_t pid = 0;
  uint32_t ppid = 0;
  uint64_t fork_start_ns = 0;   // the task's creation (CLOCK_BOOTTIME ns): identity with pid
  uint64_t image_start_ns = 0;  // exec time; fork time when cloned; /proc start for a scan
  bool cloned = false;          // forked and not exec'd since: the image fields are the parent's
  uint32_t secureexec = 0;      // SecureExec flags (events/event.h)
  std::string filename;         // basename of binary_path (the command name when there is no path)
  std::string binary_path;      // symlinks resolved
  std::string args;             // arguments without argv[0], space separated, bounded
  std::string exec_id;
  std::string parent_exec_id;  // "" when the parent was unknown
  uint64_t exited_ns = 0;      // 0 while alive
};

// Standard (RFC 4648) base64 with padding.
std::string base64_encode(std::string_view data);

// Base64 of "<pid>:<image start in ns since boot>" (the reference's exec_id).
std::string make_exec_id(uint32_t pid, uint64_t image_start_ns);

// Arguments are cut at kArgsMaxBytes of raw argv (NUL separated, argv[0] included), the same
// bound for kernel records and /proc scans; a cut list ends with kArgsTruncatedMarker.
constexpr size_t kArgsMaxBytes = 1024;
constexpr std::string_view kArgsTruncatedMarker = "...";

// Joins a raw argv area ("prog\0arg1\0arg2\0") into "arg1 arg2", dropping argv[0]; appends
// the marker when `truncated` (by the kernel) or when the area exceeds kArgsMaxBytes.
std::string join_args(std::string_view raw_argv, bool truncated);

// The last path component ("/usr/bin/inetutils-telnet" -> "inetutils-telnet").
std::string_view path_basename(std::string_view path);

// "ANY_CAPS" when every capability up to `last_cap` (the kernel's cap_last_cap) is set; ""
// when none is; otherwise the names of the set bits in bit order joined by " | ", e.g.
// "CAP_NET_RAW | CAP_SYS_ADMIN". Bits without a known name are written "CAP_<bit>".
void append_capabilities(std::string& out, uint64_t caps, int last_cap);
std::string format_capabilities(uint64_t caps, int last_cap);

// "SETUID | FILE_CAPS" etc. for SecureExec flags; "" when none.
void append_secureexec(std::string& out, uint32_t flags);
std::string format_secureexec(uint32_t flags);

// Reads the kernel's highest capability number from <proc_root>/sys/kernel/cap_last_cap; 40 (the
// last one known to this build) when it cannot be read.
int read_last_cap(const std::string& proc_root);

}  // namespace netmon
