#include "bpf/loader.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <string>
#include <string_view>

#include "bpf/libbpf_log.h"
#include "bpf/sensors/connection_state.h"
#include "bpf/sensors/sensor.h"
#include "common/files.h"
#include "common/log.h"
#include "common/unique_fd.h"
#include "netmon.skel.h"

namespace netmon {
namespace {

std::string errno_text(int err) {
  if (err < 0) err = -err;
  return std::strerror(err);
}

// What a preallocated hash map entry takes in the kernel besides its key and value (rounded up to
// 8 bytes each): the element's list node, hash and free-list links. Measured on 6.18 (x86_64):
// 47 105 KiB for 262144 entries of 8 + 112 bytes (bpftool's bytes_memlock); other kernels differ
// by a few bytes, so the figure it gives is "about".
constexpr uint64_t kHashEntryOverheadBytes = 64;

uint64_t round_up8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

// `entry_bytes`: what one entry of the sockets map takes when preallocated.
std::string load_failure(int err, const ProbeOptions& options, uint64_t entry_bytes) {
  if (err < 0) err = -err;
  if (err == ENOMEM) {
    // The maps are charged to the agent's memory cgroup (5.11+) or its RLIMIT_MEMLOCK.
    std::string what = "loading the BPF programs failed: " + errno_text(err) +
                       ": the kernel memory of the maps did not fit what the agent may use (its "
                       "memory cgroup's limit): ";
    if (!options.preallocate_connections) {
      return what + "lower ring_buffer_bytes or max_connections, or raise the limit";
    }
    const uint64_t mib = (uint64_t{options.max_connections} * entry_bytes + (1u << 20) - 1) >> 20;
    return what + "the sockets map preallocates about " + std::to_string(mib) +
           " MiB for max_connections " + std::to_string(options.max_connections) +
           "; lower it, set preallocate_connections: false, or raise the limit";
  }
  if (err == EPERM) {
    return "not permitted to load BPF programs (" + errno_text(err) +
           "): run as root, or with CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE";
  }
  if (err == EACCES || err == EINVAL || err == E2BIG) {
    return "the kernel's verifier rejected a BPF program (" + errno_text(err) +
           "; run with --log-level debug to see its output)";
  }
  return "loading the BPF programs failed: " + errno_text(err) +
         " (run with --log-level debug to see the verifier's output)";
}

// The skeleton's entry for the program `name`: the program and the slot its link goes to (the
// skeleton destroys the links it holds).
const bpf_prog_skeleton* find_program(const netmon_bpf& skel, std::string_view name) {
  const bpf_object_skeleton* s = skel.skeleton;
  for (int i = 0; i < s->prog_cnt; ++i) {
    if (name == s->progs[i].name) return &s->progs[i];
  }
  return nullptr;
}

// A concrete variant for each sensor (no kAuto), and which sensors to load at all.
struct Plan {
  HookVariants variants;
  const Sensor* only = nullptr;  // load this sensor's programs alone (probing one variant)
};

// The sock_ops program loaded with a plan, the most capable first: the TCP state observer (which
// also assigns cookies), the cookie assigner alone, none. Each needs CAP_NET_ADMIN and a cgroup v2
// mount; a kernel or a container that refuses one gets the next.
enum class SockOps { kObserver, kCookieAssigner, kNone };

// `plan` loading `sensor`'s programs alone.
Plan alone_with(const Plan& plan, const Sensor& sensor) {
  Plan alone = plan;
  alone.only = &sensor;
  return alone;
}

constexpr const char* kObserverConsequence =
    "connection ends rely on the tracepoint programs alone, which the kernel may skip";
constexpr const char* kCookieConsequence = "cookies may be 0";

}  // namespace

// One start-up's loads: they share the options, the kernel facts, and the collector of the
// verifier's reasons (set up for as long as the loader lives).
class Loader {
 public:
  Loader(const ProbeOptions& options, const KernelFacts& facts)
      : options_(options), facts_(facts) {}

  Result<std::unique_ptr<LoadedProgram>> load();

 private:
  Result<std::unique_ptr<LoadedProgram>> load_plan(const Plan& plan, SockOps sock_ops);
  bool attach_sock_ops(bpf_program* prog, bpf_link** link_slot, const char* what,
                       const char* consequence, LoadedProgram& loaded);

  const ProbeOptions& options_;
  const KernelFacts& facts_;
  VerifierReasons reasons_;
};

Result<std::unique_ptr<LoadedProgram>> Loader::load() {
  // The preferred variant of every sensor left to auto; forced ones as given.
  Plan plan;
  for (const Sensor* s : sensors()) {
    const HookVariant wanted = options_.variants.*(s->field);
    plan.variants.*(s->field) = wanted == HookVariant::kAuto ? s->preferred : wanted;
  }
  std::vector<std::string> reasons(sensors().size());
  auto loaded = load_plan(plan, SockOps::kObserver);
  if (!loaded) {
    // Find which preferred variants this kernel refuses, one sensor at a time, and fall back for
    // those, in the registry's order.
    bool changed = false;
    for (size_t i = 0; i < sensors().size(); ++i) {
      const Sensor& s = *sensors()[i];
      if (options_.variants.*(s.field) != HookVariant::kAuto) continue;
      auto probe = load_plan(alone_with(plan, s), SockOps::kNone);
      if (probe) continue;
      reasons[i] = probe.error().message;
      log::info(std::string(s.name) + " hook: the " + std::string(hook_variant_name(s.preferred)) +
                " variant is unavailable here (" + reasons[i] + "); using " +
                std::string(hook_variant_name(s.fallback)));
      plan.variants.*(s.field) = s.fallback;
      changed = true;
      if (s.last_resort == HookVariant::kAuto) continue;
      // The fallback refused for want of privileges (a perf event that perf_event_paranoid
      // refuses): the last resort, which needs none. Any other failure stays the fallback's.
      auto fallback = load_plan(alone_with(plan, s), SockOps::kNone);
      if (fallback || (fallback.error().code != EACCES && fallback.error().code != EPERM)) continue;
      log::info(std::string(s.name) + " hook: the " + std::string(hook_variant_name(s.fallback)) +
                " variant is refused here (" + fallback.error().message + "); using " +
                std::string(hook_variant_name(s.last_resort)));
      reasons[i] +=
          "; " + std::string(hook_variant_name(s.fallback)) + ": " + fallback.error().message;
      plan.variants.*(s.field) = s.last_resort;
    }
    if (changed) loaded = load_plan(plan, SockOps::kObserver);
  }
  if (!loaded) {
    if (options_.variants != HookVariants{}) {
      return fail(loaded.error().message + " (with --hook-variant " +
                  hook_variants_text(options_.variants) + ")");
    }
    return fail(loaded.error().message);
  }
  for (size_t i = 0; i < sensors().size(); ++i) {
    const Sensor& s = *sensors()[i];
    std::string reason = reasons[i];
    if (reason.empty() && options_.variants.*(s.field) != HookVariant::kAuto) {
      reason = "forced with --hook-variant";
    }
    (*loaded)->chosen_.push_back(ChosenVariant{
        std::string(s.name), std::string(hook_variant_name(plan.variants.*(s.field))), reason});
  }
  return loaded;
}

// Attaches a sock_ops program to the cgroup v2 root. Without it the events still flow: a warning
// (`consequence`), not a failure.
bool Loader::attach_sock_ops(bpf_program* prog, bpf_link** link_slot, const char* what,
                             const char* consequence, LoadedProgram& loaded) {
  const UniqueFd cgroup(::open(options_.cgroup_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  bpf_link* link = cgroup.valid() ? bpf_program__attach_cgroup(prog, cgroup.get()) : nullptr;
  if (!link) {
    log::warn(std::string("attaching ") + what + " to " + options_.cgroup_root + " failed (" +
              errno_text(errno) + "): " + consequence);
    return false;
  }
  *link_slot = link;
  loaded.hooks_.push_back(AttachedHook{std::string("cgroup/sock_ops (") + what + ")", "sock_ops"});
  return true;
}

// Opens, loads and attaches the programs of `plan`. With plan.only the maps are minimal and
// nothing reads them: the caller only wants to know whether the kernel accepts those programs.
Result<std::unique_ptr<LoadedProgram>> Loader::load_plan(const Plan& plan, SockOps sock_ops) {
  std::unique_ptr<LoadedProgram> loaded(new LoadedProgram());
  loaded->skel_.reset(netmon_bpf__open());
  netmon_bpf* skel = loaded->skel_.get();
  if (!skel) return fail("opening the BPF object failed: " + errno_text(errno));
  loaded->variants_ = plan.variants;
  loaded->facts_ = facts_;

  struct Slot {
    const bpf_prog_skeleton* prog;
    SensorProgram program;
    HookVariant variant;
  };
  bpf_program* prog = nullptr;
  bpf_object__for_each_program(prog, skel->obj) { bpf_program__set_autoload(prog, false); }
  std::vector<Slot> slots;
  for (const Sensor* s : sensors()) {
    if (plan.only && s != plan.only) continue;
    for (const SensorProgram& p : chosen_programs(*s, plan.variants, facts_)) {
      const bpf_prog_skeleton* entry = find_program(*skel, p.program);
      if (!entry) {
        return fail("the BPF object has no program " + std::string(p.program) + " (" +
                    std::string(s->name) + " sensor)");
      }
      bpf_program__set_autoload(*entry->prog, true);
      slots.push_back(Slot{entry, p, plan.variants.*(s->field)});
    }
  }
  // Without the cookie helper in tracing programs, a sock_ops program assigns the cookies: the
  // observer does, else the cookie assigner.
  const bool state_helper = state_assigns_cookie(plan.variants, facts_);
  if (plan.only || options_.cgroup_root.empty()) sock_ops = SockOps::kNone;
  if (sock_ops == SockOps::kCookieAssigner && state_helper) sock_ops = SockOps::kNone;
  bpf_program__set_autoload(skel->progs.observe_tcp_states, sock_ops == SockOps::kObserver);
  bpf_program__set_autoload(skel->progs.assign_cookies, sock_ops == SockOps::kCookieAssigner);
  bpf_map__set_max_entries(skel->maps.events, plan.only ? 4096 : options_.ring_buffer_bytes);
  bpf_map__set_max_entries(skel->maps.sockets, plan.only ? 1 : options_.max_connections);
  if (!options_.preallocate_connections) {
    bpf_map__set_map_flags(skel->maps.sockets,
                           bpf_map__map_flags(skel->maps.sockets) | BPF_F_NO_PREALLOC);
  }
  skel->rodata->wakeup_bytes = options_.wakeup_bytes;
  skel->rodata->task_btf = facts_.current_task_btf_helper;
  const SensorSettings settings{options_, plan.variants, facts_};
  for (const Sensor* s : sensors()) s->configure(*skel, settings);

  reasons_.clear();
  if (int err = netmon_bpf__load(skel); err != 0) {
    // Out of memory is the maps' (the memory cgroup's limit), which every plan makes alike: no
    // other sock_ops program would load either.
    if (sock_ops != SockOps::kNone && -err != ENOMEM) {
      // The sock_ops programs are optional (loading one needs CAP_NET_ADMIN; the observer's
      // helpers are not in every kernel's sock_ops programs): try the next.
      std::string why = errno_text(-err);
      if (-err == EPERM || -err == EACCES) {
        why += "; loading it needs CAP_NET_ADMIN";
      } else {
        why += reasons_.said();
      }
      const SockOps next =
          sock_ops == SockOps::kObserver ? SockOps::kCookieAssigner : SockOps::kNone;
      auto next_loaded = load_plan(plan, next);
      if (next_loaded) {
        log::warn(sock_ops == SockOps::kObserver
                      ? "the TCP state observer (sock_ops) did not load (" + why +
                            "): " + kObserverConsequence
                      : "the sock_ops cookie assigner did not load (" + why +
                            "): " + kCookieConsequence);
      }
      return next_loaded;
    }
    // A probe says why in a few words; the real load also says what to do about it.
    const uint64_t entry_bytes = kHashEntryOverheadBytes +
                                 round_up8(bpf_map__key_size(skel->maps.sockets)) +
                                 round_up8(bpf_map__value_size(skel->maps.sockets));
    return fail(
        (plan.only ? errno_text(err) : load_failure(err, options_, entry_bytes)) + reasons_.said(),
        -err);
  }

  for (const Slot& slot : slots) {
    const std::string_view variant = hook_variant_name(slot.variant);
    bpf_link* link = bpf_program__attach(*slot.prog->prog);
    if (!link) {
      const int err = errno;
      return fail("attaching to " + std::string(variant) + " " + std::string(slot.program.hook) +
                      " failed: " + errno_text(err) +
                      (err == ENOENT ? " (the kernel or tracefs lacks this hook)" : ""),
                  err);
    }
    *slot.prog->link = link;
    loaded->hooks_.push_back(AttachedHook{std::string(slot.program.hook), std::string(variant)});
  }
  if (plan.only) return loaded;
  if (sock_ops == SockOps::kObserver) {
    // Once set, the state tracepoint programs leave the sockets it watches to it.
    skel->bss->observer_attached =
        attach_sock_ops(skel->progs.observe_tcp_states, &skel->links.observe_tcp_states,
                        "state observer", kObserverConsequence, *loaded);
  } else if (sock_ops == SockOps::kCookieAssigner) {
    attach_sock_ops(skel->progs.assign_cookies, &skel->links.assign_cookies, "cookie assigner",
                    kCookieConsequence, *loaded);
  }
  const int ncpus = libbpf_num_possible_cpus();
  loaded->ncpus_ = ncpus > 0 ? ncpus : 1;
  return loaded;
}

Result<std::unique_ptr<LoadedProgram>> load_sensors(const ProbeOptions& options,
                                                    const KernelFacts& facts) {
  return Loader(options, facts).load();
}

std::vector<std::string> unknown_programs() {
  std::vector<std::string> out;
  std::unique_ptr<netmon_bpf, void (*)(netmon_bpf*)> skel(netmon_bpf__open(), netmon_bpf__destroy);
  if (!skel) return {"opening the BPF object failed: " + errno_text(errno)};
  std::vector<std::string_view> known = {"observe_tcp_states", "assign_cookies"};
  const KernelFacts facts[2] = {{.accept_takes_arg = false}, {.accept_takes_arg = true}};
  for (const Sensor* s : sensors()) {
    for (const HookVariant variant : {s->preferred, s->fallback, s->last_resort}) {
      if (variant == HookVariant::kAuto) continue;
      for (const KernelFacts& f : facts) {
        for (const SensorProgram& p : s->programs(variant, f)) {
          known.push_back(p.program);
          if (!find_program(*skel, p.program)) {
            out.push_back(std::string(s->name) + ": " + std::string(p.program));
          }
        }
      }
    }
  }
  const bpf_object_skeleton* object = skel->skeleton;
  for (int i = 0; i < object->prog_cnt; ++i) {
    if (std::ranges::find(known, std::string_view(object->progs[i].name)) == known.end()) {
      out.push_back(std::string("no sensor: ") + object->progs[i].name);
    }
  }
  std::ranges::sort(out);
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

void LoadedProgram::SkelDeleter::operator()(netmon_bpf* skel) const { netmon_bpf__destroy(skel); }

LoadedProgram::~LoadedProgram() {
  snapshot_link_.reset();  // the snapshot's objects before the maps they share
  snapshot_.reset();
  snapshot_netlink_.reset();
}  // the skeleton detaches its links

int LoadedProgram::events_fd() const { return bpf_map__fd(skel_->maps.events); }

uint64_t LoadedProgram::events_bytes() const { return bpf_map__max_entries(skel_->maps.events); }

KernelCounters LoadedProgram::counters() const {
  SensorRuns runs;
  const int fd = bpf_map__fd(skel_->maps.counters);
  std::vector<uint64_t> values(static_cast<size_t>(ncpus_));
  for (uint32_t index = 0; index < runs.kernel.size(); ++index) {
    if (bpf_map_lookup_elem(fd, &index, values.data()) == 0) {
      for (uint64_t v : values) runs.kernel[index] += v;
    }
  }
  KernelCounters c;
  for (const LossStageInfo& stage : kLossStages) {
    if (stage.source.source == LossSource::kKernel) {
      c.lost[loss_index(stage.stage)] = runs.kernel[static_cast<size_t>(stage.source.counter)];
    }
  }
  c.owner_unknown = runs.kernel[NM_CNT_OWNER_UNKNOWN];

  // Program runs the kernel skipped (bpf_prog_info, 5.12+), each program's counted by its sensor;
  // those of programs no sensor owns (the sock_ops programs) count as lost.
  auto misses_of = [](const bpf_program* prog) -> uint64_t {
    const int prog_fd = bpf_program__fd(prog);
    if (prog_fd < 0) return 0;  // not loaded (another variant)
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) != 0) return 0;
    return info.recursion_misses;
  };
  std::vector<const bpf_program*> owned;
  runs.observer_attached = skel_->bss->observer_attached;
  for (const Sensor* s : sensors()) {
    runs.recursion_misses = 0;
    for (const SensorProgram& p : chosen_programs(*s, variants_, facts_)) {
      const bpf_prog_skeleton* entry = find_program(*skel_, p.program);
      if (!entry) continue;
      runs.recursion_misses += misses_of(*entry->prog);
      owned.push_back(*entry->prog);
    }
    s->count(runs, c);
  }
  bpf_program* prog = nullptr;
  bpf_object__for_each_program(prog, skel_->obj) {
    if (std::ranges::find(owned, prog) != owned.end()) continue;
    c.lost[loss_index(LossStage::kRecursion)] += misses_of(prog);
  }
  return c;
}

bool LoadedProgram::check_observer() {
  auto* bss = skel_->bss;
  bpf_link* link = skel_->links.observe_tcp_states;
  if (!bss->observer_attached || !link) return false;
  bpf_link_info info{};
  uint32_t len = sizeof(info);
  // A detached cgroup link keeps its fd but reports cgroup id 0.
  if (bpf_obj_get_info_by_fd(bpf_link__fd(link), &info, &len) != 0 || info.cgroup.cgroup_id != 0)
    return true;
  bss->observer_attached = false;
  return false;
}

std::vector<MapMemory> LoadedProgram::map_memory() const {
  std::vector<MapMemory> out;
  const bpf_map* map = nullptr;
  bpf_object__for_each_map(map, skel_->obj) {
    const int fd = bpf_map__fd(map);
    if (fd < 0) continue;
    auto fdinfo = read_regular_file("/proc/self/fdinfo/" + std::to_string(fd), 64u << 10);
    if (!fdinfo) continue;
    const std::string_view text = *fdinfo;
    const size_t at = text.starts_with("memlock:") ? 0 : text.find("\nmemlock:");
    if (at == std::string_view::npos) continue;
    std::string_view value = text.substr(at + (at == 0 ? 8 : 9));
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    uint64_t bytes = 0;
    if (std::from_chars(value.data(), value.data() + value.size(), bytes).ec == std::errc()) {
      out.push_back(MapMemory{bpf_map__name(map), bytes});
    }
  }
  return out;
}

}  // namespace netmon
