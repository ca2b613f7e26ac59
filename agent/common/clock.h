// Kernel boot-clock time to wall-clock time, and the RFC 3339 format events use.
#pragma once

#include <cstdint>
#include <string>

namespace netmon {

// Converts CLOCK_BOOTTIME nanoseconds (what BPF's bpf_ktime_get_boot_ns() returns) to Unix
// nanoseconds. The offset between the clocks moves when the wall clock is stepped, so the owner
// calls refresh() now and then. Not thread-safe: one instance per thread.
class BootClock {
 public:
  BootClock() { refresh(); }
  void refresh();
  // For tests: a fixed offset (Unix ns at boot).
  explicit BootClock(int64_t unix_ns_at_boot) : offset_ns_(unix_ns_at_boot) {}

  int64_t to_unix_ns(uint64_t boot_ns) const { return offset_ns_ + static_cast<int64_t>(boot_ns); }
  int64_t unix_ns_at_boot() const { return offset_ns_; }

 private:
  int64_t offset_ns_ = 0;
};

// Appends e.g. "2026-04-30T11:43:31.910Z": UTC, milliseconds (truncated), "Z" suffix.
void append_rfc3339_ms(std::string& out, int64_t unix_ns);
std::string format_rfc3339_ms(int64_t unix_ns);

}  // namespace netmon
