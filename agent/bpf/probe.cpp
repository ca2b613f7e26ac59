#include "bpf/probe.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdarg>
#include <cstring>
#include <fstream>

#include "common/files.h"
#include "common/log.h"
#include "common/text.h"
#include "common/unique_fd.h"
#include "netmon.skel.h"

extern "C" {
#include "netmon_events.h"
}

namespace netmon {
namespace {

bool path_exists(const char* path) { return ::access(path, F_OK) == 0; }

// The verifier's last word on the last program it rejected, to say why a variant is
// unavailable. Written and read on the starting thread only.
std::string last_libbpf_warning;

void note_libbpf_warning(const std::string& message) {
  // A verifier log ends "...\nREASON\n-- END PROG LOAD LOG --".
  std::string_view text = message;
  const size_t end = text.find("-- END PROG LOAD LOG --");
  if (end == std::string_view::npos) return;
  text = text.substr(0, end);
  // The last line that is not one of the verifier's statistics.
  while (!text.empty()) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
    const size_t nl = text.rfind('\n');
    const std::string_view line = nl == std::string_view::npos ? text : text.substr(nl + 1);
    if (!line.starts_with("processed ") && !line.starts_with("verification time")) {
      last_libbpf_warning = std::string(line);
      return;
    }
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(0, nl);
  }
}

// libbpf's messages (verifier logs included) go to the debug log only: start-up failures are
// reported as one clear line, and --log-level debug shows the detail.
int libbpf_print(enum libbpf_print_level level, const char* format, va_list args) noexcept {
  if (!log::enabled(log::Level::kDebug) && level != LIBBPF_WARN) return 0;
  // Verifier logs arrive as one message of up to megabytes: size the buffer to fit.
  va_list copy;
  va_copy(copy, args);
  const int n = vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  if (n <= 0) return 0;
  std::string line(static_cast<size_t>(n) + 1, '\0');
  vsnprintf(line.data(), line.size(), format, args);
  line.resize(static_cast<size_t>(n));
  if (level == LIBBPF_WARN) note_libbpf_warning(line);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  log::debug("libbpf: " + line);
  return 0;
}

// Classic tracepoints are found through tracefs. libbpf looks in /sys/kernel/debug/tracing when
// that exists, else in /sys/kernel/tracing; mount tracefs at the latter when neither has events.
bool is_tracefs(const char* path) {
  struct statfs fs {};
  return ::statfs(path, &fs) == 0 && fs.f_type == TRACEFS_MAGIC;
}

void ensure_tracefs() {
  if (is_tracefs("/sys/kernel/debug/tracing") || is_tracefs("/sys/kernel/tracing")) return;
  if (::mount("nodev", "/sys/kernel/tracing", "tracefs", 0, nullptr) == 0) {
    log::info("mounted tracefs at /sys/kernel/tracing");
  } else {
    log::warn(
        std::string("tracefs is not mounted and mounting it at /sys/kernel/tracing failed: ") +
        std::strerror(errno) + "; tracepoint programs will fail to attach");
  }
}

std::string errno_text(int err) {
  if (err < 0) err = -err;
  return std::strerror(err);
}

std::string load_failure(int err) {
  if (err < 0) err = -err;
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

struct SkelDeleter {
  void operator()(netmon_bpf* skel) const { netmon_bpf__destroy(skel); }
};
using SkelPtr = std::unique_ptr<netmon_bpf, SkelDeleter>;

struct RingBufferDeleter {
  void operator()(ring_buffer* rb) const { ring_buffer__free(rb); }
};

// What a ring-buffer callback returns when the sink asked to stop: libbpf then marks the record
// read, stops, and returns this from ring_buffer__poll() or ring_buffer__consume().
constexpr int kSinkStopped = -ECANCELED;

// The ring buffer's reader: the sink, and what one poll delivered.
struct RingReader {
  RecordSink* sink = nullptr;
  int delivered = 0;
};

int on_ring_buffer_record(void* ctx, void* data, size_t size) noexcept {
  auto* reader = static_cast<RingReader*>(ctx);
  ++reader->delivered;
  const bool more = reader->sink->on_record(
      std::span<const std::byte>(static_cast<const std::byte*>(data), size));
  return more ? 0 : kSinkStopped;
}

// The ring buffer's consumer and producer positions: the first two pages of the map's memory,
// mapped read-only (libbpf maps the same pages for its reader) to tell how full the buffer is.
class RingPositions {
 public:
  RingPositions(int map_fd, uint64_t size) : size_(size) {
    page_ = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    void* p = ::mmap(nullptr, 2 * page_, PROT_READ, MAP_SHARED, map_fd, 0);
    if (p != MAP_FAILED) {
      base_ = p;
    } else {
      error_ = errno;
    }
  }
  ~RingPositions() {
    if (base_) ::munmap(base_, 2 * page_);
  }
  RingPositions(const RingPositions&) = delete;
  RingPositions& operator=(const RingPositions&) = delete;

  bool mapped() const { return base_ != nullptr; }
  int error() const { return error_; }  // the mmap's errno when not mapped

  RingFill fill() const {  // only once mapped
    const auto* consumer = static_cast<const unsigned long*>(base_);
    const auto* producer =
        reinterpret_cast<const unsigned long*>(static_cast<const char*>(base_) + page_);
    // The producer first: the consumer never passes it, so the difference cannot go negative.
    const uint64_t produced = __atomic_load_n(producer, __ATOMIC_ACQUIRE);
    const uint64_t consumed = __atomic_load_n(consumer, __ATOMIC_ACQUIRE);
    return RingFill{produced > consumed ? produced - consumed : 0, size_};
  }

 private:
  void* base_ = nullptr;
  int error_ = 0;
  size_t page_ = 4096;
  uint64_t size_ = 0;
};

}  // namespace

struct Probe::Impl {
  SkelPtr skel;
  RingReader reader;
  std::unique_ptr<ring_buffer, RingBufferDeleter> ring;
  std::unique_ptr<RingPositions> positions;
  std::vector<AttachedHook> hooks;
  std::vector<ChosenVariant> variants;
  int ncpus = 1;
};

std::string_view hook_variant_name(HookVariant variant) {
  switch (variant) {
    case HookVariant::kAuto:
      return "auto";
    case HookVariant::kTpBtf:
      return "tp_btf";
    case HookVariant::kTracepoint:
      return "tracepoint";
    case HookVariant::kFexit:
      return "fexit";
    case HookVariant::kRawTp:
      return "raw_tp";
  }
  return "?";
}

namespace {

// The hooks with variants, each with its preferred variant first and its fallback second.
struct HookSpec {
  const char* name;
  HookVariant HookVariants::*field;
  HookVariant preferred;
  HookVariant fallback;
};
constexpr HookSpec kHookSpecs[] = {
    {"state", &HookVariants::state, HookVariant::kTpBtf, HookVariant::kTracepoint},
    {"accept", &HookVariants::accept, HookVariant::kFexit, HookVariant::kTracepoint},
    {"process", &HookVariants::process, HookVariant::kTpBtf, HookVariant::kRawTp},
};

std::string variant_list(const HookSpec& h) {
  return std::string("auto, ") + std::string(hook_variant_name(h.preferred)) + ", " +
         std::string(hook_variant_name(h.fallback));
}

}  // namespace

Result<HookVariants> parse_hook_variants(std::string_view text) {
  HookVariants v;
  if (text == "auto") return v;
  if (text == "tp_btf" || text == "tracepoint") {  // the state hook, as before per-hook choice
    v.state = text == "tp_btf" ? HookVariant::kTpBtf : HookVariant::kTracepoint;
    return v;
  }
  std::string_view seen[std::size(kHookSpecs)] = {};  // the item that set each hook
  for (size_t pos = 0, comma = 0; comma != std::string_view::npos; pos = comma + 1) {
    comma = text.find(',', pos);
    const std::string_view item = text.substr(pos, comma == text.npos ? text.npos : comma - pos);
    const size_t eq = item.find('=');
    const std::string_view hook = item.substr(0, eq);
    const HookSpec* spec = nullptr;
    for (const HookSpec& h : kHookSpecs) {
      if (hook == h.name) spec = &h;
    }
    if (eq == std::string_view::npos || !spec) {
      return fail(quoted(item) +
                  " is not one of auto, tp_btf, tracepoint or HOOK=VARIANT,... with HOOK one "
                  "of state, accept, process");
    }
    const std::string_view name = item.substr(eq + 1);
    HookVariant chosen;
    if (name == "auto") {
      chosen = HookVariant::kAuto;
    } else if (name == hook_variant_name(spec->preferred)) {
      chosen = spec->preferred;
    } else if (name == hook_variant_name(spec->fallback)) {
      chosen = spec->fallback;
    } else {
      return fail(quoted(name) + " is not a variant of the " + spec->name + " hook (" +
                  variant_list(*spec) + ")");
    }
    std::string_view& before = seen[static_cast<size_t>(spec - kHookSpecs)];
    if (!before.empty()) {
      return fail("the " + std::string(spec->name) + " hook is given twice (" + quoted(before) +
                  ", " + quoted(item) + ")");
    }
    before = item;
    v.*(spec->field) = chosen;
  }
  return v;
}

std::string hook_variants_text(const HookVariants& variants) {
  std::string out;
  for (const HookSpec& h : kHookSpecs) {
    const HookVariant v = variants.*(h.field);
    if (v == HookVariant::kAuto) continue;
    if (!out.empty()) out += ',';
    out += std::string(h.name) + "=" + std::string(hook_variant_name(v));
  }
  return out.empty() ? "auto" : out;
}

Result<uint32_t> parse_fault_skip_state(std::string_view text) {
  uint32_t bits = 0;
  if (text.empty()) return bits;
  for (size_t start = 0; start <= text.size();) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string_view word = text.substr(start, comma - start);
    if (word == "open") {
      bits |= NM_FAULT_OPEN;
    } else if (word == "end") {
      bits |= NM_FAULT_END;
    } else {
      return fail("NETMON_FAULT_SKIP_STATE: '" + std::string(word) +
                  "' is not a change class (open, end)");
    }
    start = comma + 1;
  }
  return bits;
}

std::string unsupported_kernel_message(std::string_view release,
                                       const std::vector<std::string>& missing) {
  std::string text = "this kernel (" + std::string(release) + ") lacks what netmon needs: ";
  for (size_t i = 0; i < missing.size(); ++i) text += (i ? "; " : "") + missing[i];
  return text + ". netmon supports Linux 5.10 and newer, built with BTF";
}

namespace {

// What this kernel gives a hook's variant, found before the load.
struct KernelFacts {
  bool accept_takes_arg = false;  // inet_csk_accept(sk, struct proto_accept_arg *) (6.10+)
  // Tracing programs may call bpf_get_socket_cookie() (5.12+): the kernel has the helper's
  // tracing implementation. Without it the tp_btf state program reads the socket's cookie and
  // a sock_ops program assigns cookies.
  bool tracing_cookie_helper = false;
};

// inet_csk_accept's parameters in the running kernel's BTF (2 since 6.10, 4 before), and
// whether it has bpf_get_socket_ptr_cookie (the helper's tracing-program version, 5.12+).
KernelFacts read_kernel_facts() {
  KernelFacts facts;
  btf* vmlinux = btf__load_vmlinux_btf();
  if (!vmlinux) return facts;
  const int id = btf__find_by_name_kind(vmlinux, "inet_csk_accept", BTF_KIND_FUNC);
  if (id > 0) {
    const btf_type* func = btf__type_by_id(vmlinux, static_cast<uint32_t>(id));
    const btf_type* proto = func ? btf__type_by_id(vmlinux, func->type) : nullptr;
    facts.accept_takes_arg = proto && btf_is_func_proto(proto) && btf_vlen(proto) == 2;
  }
  facts.tracing_cookie_helper =
      btf__find_by_name_kind(vmlinux, "bpf_get_socket_ptr_cookie", BTF_KIND_FUNC) > 0;
  btf__free(vmlinux);
  return facts;
}

// One program of a hook variant and where its link goes.
struct ProgramSlot {
  bpf_program* prog;
  bpf_link** link;
  const char* hook;     // for logs and metrics
  const char* variant;  // as attached
};

// The programs of `hook` in `variant`, in attach order (the nested state copy after the main).
std::vector<ProgramSlot> programs_of(netmon_bpf* s, const HookSpec& hook, HookVariant variant,
                                     const KernelFacts& facts) {
  const std::string_view name = hook.name;
  if (name == "state") {
    if (variant == HookVariant::kTpBtf) {
      return {{s->progs.handle_inet_sock_set_state_btf, &s->links.handle_inet_sock_set_state_btf,
               "sock/inet_sock_set_state", "tp_btf"},
              {s->progs.handle_inet_sock_set_state_btf_nested,
               &s->links.handle_inet_sock_set_state_btf_nested,
               "sock/inet_sock_set_state (nested runs)", "tp_btf"}};
    }
    return {{s->progs.handle_inet_sock_set_state_tp, &s->links.handle_inet_sock_set_state_tp,
             "sock/inet_sock_set_state", "tracepoint"}};
  }
  if (name == "accept") {
    if (variant == HookVariant::kFexit) {
      if (facts.accept_takes_arg) {
        return {{s->progs.handle_inet_csk_accept_fexit_arg,
                 &s->links.handle_inet_csk_accept_fexit_arg, "inet_csk_accept", "fexit"}};
      }
      return {{s->progs.handle_inet_csk_accept_fexit, &s->links.handle_inet_csk_accept_fexit,
               "inet_csk_accept", "fexit"}};
    }
    return {{s->progs.handle_sys_exit_accept4, &s->links.handle_sys_exit_accept4,
             "syscalls/sys_exit_accept4", "tracepoint"},
            {s->progs.handle_sys_exit_accept, &s->links.handle_sys_exit_accept,
             "syscalls/sys_exit_accept", "tracepoint"}};
  }
  if (variant == HookVariant::kTpBtf) {
    return {{s->progs.handle_sched_process_exec_btf, &s->links.handle_sched_process_exec_btf,
             "sched/sched_process_exec", "tp_btf"},
            {s->progs.handle_sched_process_fork_btf, &s->links.handle_sched_process_fork_btf,
             "sched/sched_process_fork", "tp_btf"},
            {s->progs.handle_sched_process_exit_btf, &s->links.handle_sched_process_exit_btf,
             "sched/sched_process_exit", "tp_btf"}};
  }
  return {{s->progs.handle_sched_process_exec_raw, &s->links.handle_sched_process_exec_raw,
           "sched/sched_process_exec", "raw_tp"},
          {s->progs.handle_sched_process_fork_raw, &s->links.handle_sched_process_fork_raw,
           "sched/sched_process_fork", "raw_tp"},
          {s->progs.handle_sched_process_exit_raw, &s->links.handle_sched_process_exit_raw,
           "sched/sched_process_exit", "raw_tp"}};
}

// A concrete variant for each hook (no kAuto), and which hooks to load at all.
struct Plan {
  HookVariants variants;
  bool only_one = false;  // load the programs of `only` alone (probing one variant)
  size_t only = 0;        // index into kHookSpecs
};

// The sock_ops program loaded with a plan, the most capable first: the TCP state observer (which
// also assigns cookies), the cookie assigner alone, none. Each needs CAP_NET_ADMIN and a cgroup v2
// mount; a kernel or a container that refuses one gets the next.
enum class SockOps { kObserver, kCookieAssigner, kNone };

// Attaches a sock_ops program to the cgroup v2 root. Without it the events still flow: a warning
// (`consequence`), not a failure.
bool attach_sock_ops(bpf_program* prog, bpf_link** link_slot, const std::string& cgroup_root,
                     const char* what, const char* consequence, Probe::Impl& impl) {
  const UniqueFd cgroup(::open(cgroup_root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  bpf_link* link = cgroup.valid() ? bpf_program__attach_cgroup(prog, cgroup.get()) : nullptr;
  if (!link) {
    log::warn(std::string("attaching ") + what + " to " + cgroup_root + " failed (" +
              errno_text(errno) + "): " + consequence);
    return false;
  }
  *link_slot = link;
  impl.hooks.push_back(AttachedHook{std::string("cgroup/sock_ops (") + what + ")", "sock_ops"});
  return true;
}

constexpr const char* kObserverConsequence =
    "connection ends rely on the tracepoint programs alone, which the kernel may skip";
constexpr const char* kCookieConsequence = "cookies may be 0";

// Opens, loads and attaches the programs of `plan`. With plan.only_one the maps are minimal and
// nothing reads them: the caller only wants to know whether the kernel accepts those programs.
Result<std::unique_ptr<Probe::Impl>> load_plan(const ProbeOptions& options, const Plan& plan,
                                               const KernelFacts& facts, RecordSink* sink,
                                               SockOps sock_ops) {
  SkelPtr skel(netmon_bpf__open());
  if (!skel) return fail("opening the BPF object failed: " + errno_text(errno));

  bpf_program* prog = nullptr;
  bpf_object__for_each_program(prog, skel->obj) { bpf_program__set_autoload(prog, false); }
  std::vector<ProgramSlot> slots;
  for (size_t i = 0; i < std::size(kHookSpecs); ++i) {
    if (plan.only_one && i != plan.only) continue;
    const HookSpec& h = kHookSpecs[i];
    for (const ProgramSlot& slot : programs_of(skel.get(), h, plan.variants.*(h.field), facts)) {
      bpf_program__set_autoload(slot.prog, true);
      slots.push_back(slot);
    }
  }
  // Without the cookie helper in tracing programs, a sock_ops program assigns the cookies: the
  // observer does, else the cookie assigner.
  const bool state_helper =
      plan.variants.state == HookVariant::kTpBtf && facts.tracing_cookie_helper;
  if (plan.only_one || options.cgroup_root.empty()) sock_ops = SockOps::kNone;
  if (sock_ops == SockOps::kCookieAssigner && state_helper) sock_ops = SockOps::kNone;
  bpf_program__set_autoload(skel->progs.observe_tcp_states, sock_ops == SockOps::kObserver);
  bpf_program__set_autoload(skel->progs.assign_cookies, sock_ops == SockOps::kCookieAssigner);
  bpf_map__set_max_entries(skel->maps.events, plan.only_one ? 4096 : options.ring_buffer_bytes);
  bpf_map__set_max_entries(skel->maps.sockets, plan.only_one ? 1 : options.max_connections);
  skel->rodata->wakeup_bytes = options.wakeup_bytes;
  skel->rodata->accept_assigns_cookie = state_helper;
  skel->rodata->state_assigns_cookie = state_helper;
  skel->rodata->fault_skip_state = options.fault_skip_state;

  last_libbpf_warning.clear();
  if (int err = netmon_bpf__load(skel.get()); err != 0) {
    if (sock_ops != SockOps::kNone) {
      // The sock_ops programs are optional (loading one needs CAP_NET_ADMIN; the observer's
      // helpers are not in every kernel's sock_ops programs): try the next.
      std::string why = errno_text(-err);
      if (-err == EPERM || -err == EACCES) {
        why += "; loading it needs CAP_NET_ADMIN";
      } else if (!last_libbpf_warning.empty()) {
        why += ": the verifier says \"" + last_libbpf_warning + "\"";
      }
      const SockOps next =
          sock_ops == SockOps::kObserver ? SockOps::kCookieAssigner : SockOps::kNone;
      auto loaded = load_plan(options, plan, facts, sink, next);
      if (loaded) {
        log::warn(sock_ops == SockOps::kObserver
                      ? "the TCP state observer (sock_ops) did not load (" + why +
                            "): " + kObserverConsequence
                      : "the sock_ops cookie assigner did not load (" + why +
                            "): " + kCookieConsequence);
      }
      return loaded;
    }
    // A probe says why in a few words; the real load also says what to do about it.
    std::string message = plan.only_one ? errno_text(err) : load_failure(err);
    if (!last_libbpf_warning.empty())
      message += ": the verifier says \"" + last_libbpf_warning + "\"";
    return fail(message, -err);
  }

  auto impl = std::make_unique<Probe::Impl>();
  for (const ProgramSlot& slot : slots) {
    bpf_link* link = bpf_program__attach(slot.prog);
    if (!link) {
      const int err = errno;
      return fail(std::string("attaching to ") + slot.variant + " " + slot.hook +
                      " failed: " + errno_text(err) +
                      (err == ENOENT ? " (the kernel or tracefs lacks this hook)" : ""),
                  err);
    }
    *slot.link = link;
    impl->hooks.push_back(AttachedHook{slot.hook, slot.variant});
  }
  if (plan.only_one) return impl;
  if (sock_ops == SockOps::kObserver) {
    // Once set, the state tracepoint programs leave the sockets it watches to it.
    skel->bss->observer_attached =
        attach_sock_ops(skel->progs.observe_tcp_states, &skel->links.observe_tcp_states,
                        options.cgroup_root, "state observer", kObserverConsequence, *impl);
  } else if (sock_ops == SockOps::kCookieAssigner) {
    attach_sock_ops(skel->progs.assign_cookies, &skel->links.assign_cookies, options.cgroup_root,
                    "cookie assigner", kCookieConsequence, *impl);
  }

  // Loading parsed the kernel's BTF (megabytes, more than once when variants were probed) and
  // freed it, but the allocator keeps freed heap resident: hand it back before the ring buffer
  // (mapped twice, 8 MiB of RSS by default) is mapped on top, or the start-up peak adds both.
  ::malloc_trim(0);
  impl->reader.sink = sink;
  const int ring_fd = bpf_map__fd(skel->maps.events);
  impl->ring.reset(ring_buffer__new(ring_fd, on_ring_buffer_record, &impl->reader, nullptr));
  if (!impl->ring) return fail("creating the ring buffer reader failed: " + errno_text(errno));
  impl->positions =
      std::make_unique<RingPositions>(ring_fd, bpf_map__max_entries(skel->maps.events));
  if (!impl->positions->mapped()) {
    return fail("mapping the ring buffer's positions failed: " +
                errno_text(impl->positions->error()));
  }
  const int ncpus = libbpf_num_possible_cpus();
  impl->ncpus = ncpus > 0 ? ncpus : 1;
  impl->skel = std::move(skel);
  return impl;
}

// What every variant needs, checked before anything loads, so that an old kernel gets one line
// naming what it lacks instead of a verifier message. Checks that cannot run (no privileges)
// are left to the load, which then reports the privilege problem.
std::vector<std::string> missing_kernel_features() {
  std::vector<std::string> missing;
  // libbpf's probes report "unsupported" for whatever fails, lack of privileges included: when
  // not even a tracepoint program (Linux 4.7) loads, leave the diagnosis to the real load.
  if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_TRACEPOINT, nullptr) != 1) return missing;
  if (libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, nullptr) == 0) {
    missing.push_back("the BPF ring buffer (Linux 5.8)");
  }
  struct Helper {
    bpf_func_id id;
    const char* what;
  };
  for (const Helper& h :
       {Helper{BPF_FUNC_ktime_get_boot_ns, "bpf_ktime_get_boot_ns() (Linux 5.8)"},
        Helper{BPF_FUNC_probe_read_kernel, "bpf_probe_read_kernel() (Linux 5.5)"},
        Helper{BPF_FUNC_get_current_cgroup_id, "bpf_get_current_cgroup_id() (Linux 4.18)"}}) {
    if (libbpf_probe_bpf_helper(BPF_PROG_TYPE_TRACEPOINT, h.id, nullptr) == 0) {
      missing.push_back(h.what);
    }
  }
  if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_RAW_TRACEPOINT, nullptr) == 0) {
    missing.push_back("raw tracepoint programs (Linux 4.17)");
  }
  const char* roots[] = {"/sys/kernel/debug/tracing/events", "/sys/kernel/tracing/events"};
  for (const char* event : {"sock/inet_sock_set_state", "syscalls/sys_exit_accept4"}) {
    bool found = false;
    bool searchable = false;
    for (const char* root : roots) {
      searchable = searchable || path_exists(root);
      found = found || path_exists((std::string(root) + "/" + event).c_str());
    }
    if (searchable && !found) {
      missing.push_back(std::string("the tracepoint ") + event +
                        (std::string_view(event).starts_with("syscalls")
                             ? " (CONFIG_FTRACE_SYSCALLS)"
                             : " (Linux 4.16)"));
    }
  }
  return missing;
}

std::string kernel_release() {
  utsname u{};
  return ::uname(&u) == 0 ? u.release : "unknown";
}

}  // namespace

Probe::Probe(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Probe::~Probe() {
  if (!impl_) return;
  impl_->ring.reset();  // before the maps it reads
  impl_->skel.reset();  // destroys links (detach), programs and maps
}

Result<std::unique_ptr<Probe>> Probe::start(const ProbeOptions& options, RecordSink& sink) {
  libbpf_set_print(libbpf_print);
  if (!path_exists("/sys/kernel/btf/vmlinux")) {
    return fail(
        "kernel BTF not found at /sys/kernel/btf/vmlinux: netmon needs a kernel built with "
        "CONFIG_DEBUG_INFO_BTF=y");
  }
  ensure_tracefs();
  if (std::vector<std::string> missing = missing_kernel_features(); !missing.empty()) {
    return fail(unsupported_kernel_message(kernel_release(), missing));
  }
  const KernelFacts facts = read_kernel_facts();

  // The preferred variant of every hook left to auto; forced ones as given.
  Plan plan;
  std::vector<std::string> reasons(std::size(kHookSpecs));
  for (const HookSpec& h : kHookSpecs) {
    const HookVariant wanted = options.variants.*(h.field);
    plan.variants.*(h.field) = wanted == HookVariant::kAuto ? h.preferred : wanted;
  }
  auto impl = load_plan(options, plan, facts, &sink, SockOps::kObserver);
  if (!impl) {
    // Find which preferred variants this kernel refuses, one hook at a time, and fall back for
    // those. The state hook goes first: the accept programs' cookie use depends on its choice.
    bool changed = false;
    for (size_t i = 0; i < std::size(kHookSpecs); ++i) {
      const HookSpec& h = kHookSpecs[i];
      if (options.variants.*(h.field) != HookVariant::kAuto) continue;
      Plan alone = plan;
      alone.only_one = true;
      alone.only = i;
      auto probe = load_plan(options, alone, facts, nullptr, SockOps::kNone);
      if (probe) continue;
      reasons[i] = probe.error().message;
      log::info(std::string(h.name) + " hook: the " + std::string(hook_variant_name(h.preferred)) +
                " variant is unavailable here (" + reasons[i] + "); using " +
                std::string(hook_variant_name(h.fallback)));
      plan.variants.*(h.field) = h.fallback;
      changed = true;
    }
    if (changed) impl = load_plan(options, plan, facts, &sink, SockOps::kObserver);
  }
  if (!impl) {
    if (options.variants != HookVariants{}) {
      return fail(impl.error().message + " (with --hook-variant " +
                  hook_variants_text(options.variants) + ")");
    }
    return fail(impl.error().message);
  }
  for (size_t i = 0; i < std::size(kHookSpecs); ++i) {
    const HookSpec& h = kHookSpecs[i];
    std::string reason = reasons[i];
    if (reason.empty() && options.variants.*(h.field) != HookVariant::kAuto) {
      reason = "forced with --hook-variant";
    }
    (*impl)->variants.push_back(
        ChosenVariant{h.name, std::string(hook_variant_name(plan.variants.*(h.field))), reason});
  }
  return std::unique_ptr<Probe>(new Probe(std::move(*impl)));
}

Result<int> Probe::poll(int timeout_ms) {
  impl_->reader.delivered = 0;
  const int n = ring_buffer__poll(impl_->ring.get(), timeout_ms);
  if (n == kSinkStopped) return impl_->reader.delivered;
  if (n < 0 && n != -EINTR) return fail("polling the ring buffer failed: " + errno_text(n));
  // Records submitted without a wakeup do not end the wait: consume whatever is there.
  const int more = ring_buffer__consume(impl_->ring.get());
  if (more < 0 && more != kSinkStopped) {
    return fail("reading the ring buffer failed: " + errno_text(more));
  }
  return impl_->reader.delivered;
}

RingFill Probe::ring_fill() const { return impl_->positions->fill(); }

KernelCounters Probe::counters() const {
  KernelCounters c;
  const int fd = bpf_map__fd(impl_->skel->maps.counters);
  std::vector<uint64_t> values(static_cast<size_t>(impl_->ncpus));
  auto sum = [&](uint32_t index) {
    uint64_t total = 0;
    if (bpf_map_lookup_elem(fd, &index, values.data()) == 0) {
      for (uint64_t v : values) total += v;
    }
    return total;
  };
  for (const LossStageInfo& stage : kLossStages) {
    if (stage.source.source == LossSource::kKernel) {
      c.lost[loss_index(stage.stage)] = sum(static_cast<uint32_t>(stage.source.counter));
    }
  }
  c.owner_unknown = sum(NM_CNT_OWNER_UNKNOWN);
  const auto& progs = impl_->skel->progs;
  const bpf_program* state_programs[] = {progs.handle_inet_sock_set_state_btf,
                                         progs.handle_inet_sock_set_state_btf_nested,
                                         progs.handle_inet_sock_set_state_tp};
  bpf_program* prog = nullptr;
  uint64_t misses = 0;
  uint64_t state_misses = 0;
  bpf_object__for_each_program(prog, impl_->skel->obj) {
    const int prog_fd = bpf_program__fd(prog);
    if (prog_fd < 0) continue;  // not loaded (the other variant)
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) != 0) continue;
    const bool state = std::ranges::find(state_programs, prog) != std::end(state_programs);
    (state ? state_misses : misses) += info.recursion_misses;
  }
  // A miss of one copy of the tp_btf state program that the other copy made up for loses
  // nothing (netmon.bpf.c). The counts are read at slightly different moments: never report
  // less than zero.
  const uint64_t spared = sum(NM_CNT_SPARED);
  state_misses = state_misses > spared ? state_misses - spared : 0;
  // With the TCP state observer attached (the kernel never skips it), the observer made up for
  // the rest: they are reported, but not as lost events.
  if (impl_->skel->bss->observer_attached) {
    c.state_runs_made_up = state_misses;
  } else {
    misses += state_misses;
  }
  c.lost[loss_index(LossStage::kRecursion)] = misses;
  return c;
}

bool Probe::check_observer() {
  auto* bss = impl_->skel->bss;
  bpf_link* link = impl_->skel->links.observe_tcp_states;
  if (!bss->observer_attached || !link) return false;
  bpf_link_info info{};
  uint32_t len = sizeof(info);
  // A detached cgroup link keeps its fd but reports cgroup id 0.
  if (bpf_obj_get_info_by_fd(bpf_link__fd(link), &info, &len) != 0 || info.cgroup.cgroup_id != 0)
    return true;
  bss->observer_attached = false;
  return false;
}

const std::vector<AttachedHook>& Probe::hooks() const { return impl_->hooks; }

const std::vector<ChosenVariant>& Probe::variants() const { return impl_->variants; }

std::vector<MapMemory> Probe::map_memory() const {
  std::vector<MapMemory> out;
  const bpf_map* map = nullptr;
  bpf_object__for_each_map(map, impl_->skel->obj) {
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
