// Probe: the one owner of libbpf and the BPF skeleton. Loads netmon's BPF programs, attaches
// them with the best hook variant the running kernel accepts, and delivers ring-buffer records to
// a RecordSink. Nothing of libbpf leaks through this header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace netmon {

// How the TCP state-change hook attaches.
enum class HookVariant {
  kAuto,        // tp_btf when the kernel accepts it, else the classic tracepoint
  kTpBtf,       // BTF-typed tracepoint: exact socket cookies (5.12+ for the cookie helper)
  kTracepoint,  // classic tracepoint: cookies only when something else assigned them
};
std::optional<HookVariant> parse_hook_variant(std::string_view text);
std::string_view hook_variant_name(HookVariant variant);

struct ProbeOptions {
  HookVariant variant = HookVariant::kAuto;
  uint32_t ring_buffer_bytes = 4u << 20;  // a power of two, at least one page
  uint32_t max_connections = 262144;      // live connections tracked at once
  // The kernel wakes the reader once this much data waits; smaller batches are picked up by
  // poll()'s timeout. 0 wakes the reader on every record.
  uint64_t wakeup_bytes = 64u << 10;
};

// Counters kept by the kernel side, summed over CPUs (see enum nm_counter).
struct KernelCounters {
  uint64_t ring_buffer_full = 0;
  uint64_t sockets_map_full = 0;
  uint64_t owner_unknown = 0;
  uint64_t accept_no_socket = 0;
  uint64_t unobserved = 0;        // connections whose last transition never reached the hooks
  uint64_t recursion_misses = 0;  // program runs the kernel skipped (bpf_prog_info, 5.12+)
};

// Which hook a program attached to and how, for logs and metrics.
struct AttachedHook {
  std::string hook;     // e.g. "sock/inet_sock_set_state"
  std::string variant;  // e.g. "tp_btf"
};

// Kernel memory of one BPF map (its "memlock" in /proc/self/fdinfo: the bytes charged for it;
// for a hash map without preallocation, what its full capacity would take).
struct MapMemory {
  std::string name;  // e.g. "events"
  uint64_t bytes = 0;
};

// Receives raw records on the polling thread. Must not throw.
class RecordSink {
 public:
  virtual ~RecordSink() = default;
  virtual void on_record(std::span<const std::byte> record) noexcept = 0;
};

class Probe {
 public:
  // Mounts tracefs when it is missing, loads and attaches. `sink` must outlive the Probe.
  // Fails with a one-line reason (missing BTF, missing privileges, missing tracepoint).
  static Result<std::unique_ptr<Probe>> start(const ProbeOptions& options, RecordSink& sink);
  ~Probe();  // detaches every program and frees every map
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;

  // Waits up to `timeout_ms` for a wakeup, then delivers every record available to the sink.
  // Returns the number of records delivered.
  Result<int> poll(int timeout_ms);

  KernelCounters counters() const;
  const std::vector<AttachedHook>& hooks() const;
  std::vector<MapMemory> map_memory() const;

  struct Impl;

 private:
  explicit Probe(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace netmon
