// Loading and attaching: opens the one BPF skeleton, applies a plan (each sensor's variant, the
// sock_ops program), loads, attaches, and falls back per sensor where the kernel refuses a
// preferred variant. Private to agent/bpf: the skeleton type appears here by name only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bpf/kernel_features.h"
#include "bpf/probe.h"
#include "common/result.h"

struct netmon_bpf;
struct netmon_snapshot_bpf;
struct netmon_snapshot_netlink_bpf;
struct bpf_link;

namespace netmon {

// The loaded and attached programs and their maps. Destroying it detaches every program and
// frees every map.
class LoadedProgram {
 public:
  ~LoadedProgram();
  LoadedProgram(const LoadedProgram&) = delete;
  LoadedProgram& operator=(const LoadedProgram&) = delete;

  int events_fd() const;          // the ring buffer map
  uint64_t events_bytes() const;  // its size

  const std::vector<AttachedHook>& hooks() const { return hooks_; }
  const std::vector<ChosenVariant>& variants() const { return chosen_; }

  // The kernel-side counters summed over CPUs, and what each sensor makes of its programs'
  // statistics.
  KernelCounters counters() const;
  // See Probe::check_observer().
  bool check_observer();
  std::vector<MapMemory> map_memory() const;
  // Loads the start-up snapshot's object (bpf/snapshot.cpp) with this one's maps and attaches its
  // iterator, right after this object loaded, so that libbpf's parse of the kernel's BTF for it
  // is freed with the first one's before the start-up's memory is handed back; where it cannot
  // load (or `options.snapshot_netlink` forces it), the fallback's object (sock_diag and a /proc
  // scan, netmon_snapshot_netlink.bpf.c). A failure of both is kept for snapshot() to report.
  void load_snapshot(const ProbeOptions& options);
  // See Probe::snapshot(); frees the snapshot's object when done. Once only.
  Result<SnapshotStats> snapshot(const std::function<bool()>& room);

 private:
  friend class Loader;
  LoadedProgram() = default;

  struct SkelDeleter {
    void operator()(netmon_bpf* skel) const;
  };
  std::unique_ptr<netmon_bpf, SkelDeleter> skel_;
  struct SnapshotDeleter {
    void operator()(netmon_snapshot_bpf* skel) const;
  };
  struct LinkDeleter {
    void operator()(bpf_link* link) const;
  };
  std::unique_ptr<netmon_snapshot_bpf, SnapshotDeleter> snapshot_;
  std::unique_ptr<bpf_link, LinkDeleter> snapshot_link_;  // before snapshot_ goes
  struct NetlinkDeleter {
    void operator()(netmon_snapshot_netlink_bpf* skel) const;
  };
  std::unique_ptr<netmon_snapshot_netlink_bpf, NetlinkDeleter> snapshot_netlink_;
  std::string snapshot_error_ = "not loaded";
  std::string iterator_error_;  // why the fallback runs: the iterator's failure, or forced
  std::string proc_root_ = "/proc";
  std::string cgroup_root_;
  // The two ways of the snapshot (snapshot.cpp).
  void load_iterator();
  Result<SnapshotStats> snapshot_iterator(const std::function<bool()>& room);
  Result<SnapshotStats> snapshot_netlink(const std::function<bool()>& room);
  HookVariants variants_;  // concrete: the variant of each sensor's programs
  KernelFacts facts_;
  std::vector<AttachedHook> hooks_;
  std::vector<ChosenVariant> chosen_;
  int ncpus_ = 1;
};

// Chooses each sensor's variant (the preferred one unless it fails to load or attach here, or as
// forced), loads and attaches. Fails with a one-line reason.
Result<std::unique_ptr<LoadedProgram>> load_sensors(const ProbeOptions& options,
                                                    const KernelFacts& facts);

// The programs the sensors name that the BPF object does not have, as "sensor: program"; and
// the object's programs that neither a sensor nor the loader (sock_ops) knows. Opens the object
// without loading it (no privileges needed): a check for tests.
std::vector<std::string> unknown_programs();

}  // namespace netmon
