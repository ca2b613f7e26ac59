// A sensor: one hook family's programs in the one BPF object, seen from user space. It says
// which variants its hook has (the preferred one and a fallback with the same events), which
// programs each variant loads and where they attach, which read-only settings (rodata) it gives
// its programs, and what the kernel's statistics of its programs count as (its counters). The
// loader (bpf/loader.cpp) iterates the registry (sensors/registry.h) and does the rest.
//
// Private to agent/bpf: the skeleton type appears here by name only.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "bpf/kernel_features.h"
#include "bpf/probe.h"
#include "netmon_events.h"

struct netmon_bpf;

namespace netmon {

// One program of a variant: its name in the BPF object (the C function's name) and the hook it
// attaches to, for logs and the netmon_hook_info metric.
struct SensorProgram {
  std::string_view program;  // e.g. "handle_inet_sock_set_state_btf"
  std::string_view hook;     // e.g. "sock/inet_sock_set_state"
};

// What a sensor's settings may depend on: the options and the concrete variant of every hook.
struct SensorSettings {
  const ProbeOptions& options;
  const HookVariants& variants;  // no kAuto
  const KernelFacts& facts;
};

// What the kernel reports for a sensor's programs, for its counters.
struct SensorRuns {
  uint64_t recursion_misses = 0;  // summed over the sensor's loaded programs (bpf_prog_info)
  std::array<uint64_t, NM_CNT__MAX> kernel{};  // the kernel-side counters, by enum nm_counter
  bool observer_attached = false;              // the TCP state observer runs (sock_ops)
};

struct Sensor {
  std::string_view name;             // its hook in --hook-variant, logs, metrics: "state"
  HookVariant HookVariants::*field;  // where --hook-variant sets its variant
  HookVariant preferred;
  HookVariant fallback;  // the same events where the preferred variant does not load
  // The same events where the fallback too is refused for want of privileges (its attach or
  // load fails with EACCES or EPERM), at a cost the fallback does not have; kAuto: none.
  HookVariant last_resort = HookVariant::kAuto;
  // The programs of `variant` (preferred, fallback or last resort), in attach order.
  std::vector<SensorProgram> (*programs)(HookVariant variant, const KernelFacts& facts);
  // Sets the sensor's read-only settings in the opened, not yet loaded skeleton.
  void (*configure)(netmon_bpf& skel, const SensorSettings& settings);
  // Adds what the kernel reports of the sensor's programs to `out` (its loss stages and
  // counters).
  void (*count)(const SensorRuns& runs, KernelCounters& out);
};

// The sensors, in probing order (the state sensor first: the accept programs' cookie use depends
// on its choice). Adding a sensor: one file in sensors/ and one line in registry.cpp (and its
// field in HookVariants).
std::span<const Sensor* const> sensors();

// The programs of `sensor` in the variant `variants` chose for it.
std::vector<SensorProgram> chosen_programs(const Sensor& sensor, const HookVariants& variants,
                                           const KernelFacts& facts);

}  // namespace netmon
