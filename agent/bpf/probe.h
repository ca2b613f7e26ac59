// Probe: the one owner of libbpf and the BPF skeleton. Loads netmon's BPF programs, attaches
// them with the best hook variant the running kernel accepts, and delivers ring-buffer records to
// a RecordSink. Nothing of libbpf leaks through this header.
//
// This is the facade of agent/bpf; behind it, one unit per job: kernel_features (what the kernel
// offers), loader (open, plan, load, attach, fall back), ring_reader (the ring buffer, its data
// mapped once; ring_records walks its records),
// libbpf_log (libbpf's messages, the verifier's reason), and sensors/ (each hook family's
// variants, programs, settings and counters, listed in sensors/registry.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "events/counters.h"

namespace netmon {

// How a kernel hook attaches. Each hook (a sensor, agent/bpf/sensors) has a preferred variant
// and a fallback with the same events (docs/kernels.md):
//   state    sock/inet_sock_set_state   tp_btf (assigns cookies itself on 5.12+) or tracepoint
//   accept   inet_csk_accept / accept() fexit (also io_uring accepts) or tracepoint (syscalls);
//            last resort where the tracepoints' perf events are refused: tp_btf on
//            raw_syscalls/sys_exit (every syscall's exit)
//   process  sched_process_exec/fork/exit  tp_btf or raw_tp
// The sock_ops programs on the cgroup v2 root (the TCP state observer, or the cookie assigner;
// ProbeOptions::cgroup_root) have no variants: each is attached or left out.
enum class HookVariant {
  kAuto,        // the preferred variant when the kernel accepts it, else the fallback
  kTpBtf,       // BTF-typed tracepoint
  kTracepoint,  // classic tracepoint
  kFexit,       // fexit (BPF trampoline)
  kRawTp,       // raw tracepoint
};
std::string_view hook_variant_name(HookVariant variant);

// The variant wanted for each hook (kAuto: probe the kernel).
struct HookVariants {
  HookVariant state = HookVariant::kAuto;
  HookVariant accept = HookVariant::kAuto;
  HookVariant process = HookVariant::kAuto;
  bool operator==(const HookVariants&) const = default;
};
// "auto"; a bare "tp_btf" or "tracepoint" (the state hook, as before); or a comma-separated
// list of HOOK=VARIANT with HOOK one of state, accept, process. The error names the bad part.
Result<HookVariants> parse_hook_variants(std::string_view text);
// The canonical text parse_hook_variants() reads back: "auto", or the forced hooks.
std::string hook_variants_text(const HookVariants& variants);

// The one-line error for a kernel that lacks what netmon needs: the release and each missing
// feature (with the Linux version that brought it).
std::string unsupported_kernel_message(std::string_view release,
                                       const std::vector<std::string>& missing);

// The value of NETMON_FAULT_SKIP_STATE (fault injection, for tests): "", or a comma-separated
// list of change classes the state tracepoint programs then ignore: "open" (a connect() and its
// completion), "end" (the first FIN and the close). The error names the bad word.
Result<uint32_t> parse_fault_skip_state(std::string_view text);

struct ProbeOptions {
  HookVariants variants;
  uint32_t ring_buffer_bytes = 4u << 20;  // a power of two, at least one page
  uint32_t max_connections = 262144;      // live connections tracked at once
  // The sockets map's memory taken at load, for all max_connections at once (an insert and a
  // delete then only move an element between per-CPU free lists), rather than allocated and freed
  // (through RCU) per connection.
  bool preallocate_connections = true;
  // The kernel wakes the reader once this much data waits; smaller batches are picked up by
  // poll()'s timeout. 0 wakes the reader on every record.
  uint64_t wakeup_bytes = 64u << 10;
  // The cgroup v2 mount, where the TCP state observer (a sock_ops program that sees every state
  // change of connections opened after it attached, and assigns their cookies) attaches; or, where
  // the observer cannot load and the state hook cannot assign socket cookies itself (the classic
  // tracepoint, or tp_btf before 5.12), the sock_ops cookie assigner. Empty: neither, so
  // connection ends rely on the tracepoint programs alone and such cookies may be 0.
  std::string cgroup_root;
  // Load the start-up snapshot's object too (Probe::snapshot(); issue #21).
  bool snapshot = true;
  // Fault injection for tests (NETMON_FAULT_SNAPSHOT=netlink): the snapshot takes its fallback
  // (sock_diag netlink and a /proc scan) even where the task/file iterator loads.
  bool snapshot_netlink = false;
  // Where the fallback reads processes (their descriptors and network namespaces).
  std::string proc_root = "/proc";
  // Fault injection for tests: the state tracepoint programs ignore these changes (enum nm_fault
  // bits of netmon_events.h), as when the kernel skips them. 0 in production.
  uint32_t fault_skip_state = 0;
};

// Counters kept by the kernel side, summed over CPUs (see enum nm_counter).
struct KernelCounters {
  // The loss stages of events/counters.h that the kernel counts (LossSource::kKernel) or the
  // probe derives (kProbe: the recursion misses, bpf_prog_info 5.12+: the accept and process
  // programs' skipped runs, and the state tracepoint programs' skipped runs that the other tp_btf
  // copy did not make up for, unless the observer made up for those), by loss_index(). The
  // agent's stages stay 0.
  LossCounts lost{};
  uint64_t owner_unknown = 0;  // connections reported without their process (NM_CNT_OWNER_UNKNOWN)
  // Skipped runs of the state tracepoint programs whose changes the TCP state observer (sock_ops)
  // handled instead: not lost.
  uint64_t state_runs_made_up = 0;
};

// Which hook a program attached to and how, for logs and metrics.
struct AttachedHook {
  std::string hook;     // e.g. "sock/inet_sock_set_state"
  std::string variant;  // e.g. "tp_btf"
};

// The variant chosen for each hook, for logs and the netmon_hook_variant_info metric.
struct ChosenVariant {
  std::string hook;     // state, accept, process
  std::string variant;  // e.g. "fexit"
  std::string reason;   // why not the preferred one; empty when it is the preferred one
};

// Kernel memory of one BPF map (its "memlock" in /proc/self/fdinfo: the bytes charged for it;
// a preallocated map's full capacity, a hash map without preallocation's buckets and the entries
// it holds when read).
struct MapMemory {
  std::string name;  // e.g. "events"
  uint64_t bytes = 0;
};

// What the start-up snapshot found (issue #21): connections older than the agent.
struct SnapshotStats {
  uint64_t reported = 0;         // connections reported as preexisting open events
  uint64_t tracked_already = 0;  // met again through another holder, or reported by the hooks
  uint64_t connecting = 0;       // connects in progress, whose owner is now tracked
  uint64_t listeners = 0;        // listening sockets (they decide Accept or Establish)
  uint64_t no_room = 0;          // not reported: the ring buffer or the sockets map was full
  uint64_t chunks = 0;           // reads of the iterator (the reader paused between them)
  uint64_t cookies_made = 0;     // sockets that had no cookie yet, given one (SO_COOKIE)
  double seconds = 0;            // how long it took
  // "iterator" (netmon_snapshot.bpf.c) or "netlink" (the fallback: sock_diag in each network
  // namespace, owners from a /proc fd scan), and for the fallback why.
  std::string mechanism;
  std::string fallback_reason;
  // The fallback only:
  uint64_t namespaces = 0;         // network namespaces dumped
  uint64_t namespaces_failed = 0;  // not entered (their processes left; setns(): CAP_SYS_ADMIN)
  uint64_t closed_meanwhile = 0;   // dumped, then closed before they were reported
  uint64_t without_owner = 0;      // dumped, held by no process (an accept queue's)
  bool truncated = false;          // a bound (processes, descriptors, time) was reached
  double scan_seconds = 0;         // the /proc scan's part of `seconds`
};

// Receives raw records on the polling thread. Must not throw. Returns false to stop reading for
// now (the record itself was taken): the rest stays in the ring buffer for the next poll.
class RecordSink {
 public:
  virtual ~RecordSink() = default;
  virtual bool on_record(std::span<const std::byte> record) noexcept = 0;
};

// How much of the kernel ring buffer holds records not read yet.
struct RingFill {
  uint64_t used = 0;  // bytes
  uint64_t size = 0;  // bytes; 0 when unknown
};

class Probe {
 public:
  // Mounts tracefs when it is missing, checks the kernel, chooses each hook's variant (the
  // preferred one unless it fails to load or attach here, or as forced), loads and attaches.
  // `sink` must outlive the Probe. Fails with a one-line reason (what the kernel lacks, missing
  // privileges, a forced variant the kernel refuses).
  static Result<std::unique_ptr<Probe>> start(const ProbeOptions& options, RecordSink& sink);
  ~Probe();  // detaches every program and frees every map
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;

  // Waits up to `timeout_ms` for a wakeup, then delivers every record available to the sink, or
  // those up to the one after which the sink asked to stop. Returns the number delivered.
  Result<int> poll(int timeout_ms);

  // The ring buffer's fill level, read from its producer and consumer positions.
  RingFill ring_fill() const;

  KernelCounters counters() const;

  // The start-up snapshot: reports, through the ring buffer and the sink, every TCP connection
  // that existed before the programs attached, once (netmon_snapshot.bpf.c). Runs on the
  // calling thread, while another thread keeps polling; between chunks of about 2 000 sockets it
  // calls `room`, which returns once the ring buffer has room again, or false to give up (a
  // stop). Fails when the kernel cannot run the snapshot (iter/task_file with
  // bpf_sock_from_file(), 5.11; the cookie helper in tracing programs, 5.12): say so, run on.
  Result<SnapshotStats> snapshot(const std::function<bool()>& room);

  // Whether the TCP state observer is attached to its cgroup. Once its link has been detached
  // from outside (bpftool link detach), this turns the programs' flag off: the state tracepoint
  // programs then stop leaving connections to an observer that no longer runs (they would leave
  // every socket whose state callbacks another sock_ops program turned on, e.g. a second
  // agent's), and their skipped runs count as lost again. False from then on.
  bool check_observer();
  const std::vector<AttachedHook>& hooks() const;
  const std::vector<ChosenVariant>& variants() const;
  std::vector<MapMemory> map_memory() const;

  struct Impl;

 private:
  explicit Probe(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace netmon
