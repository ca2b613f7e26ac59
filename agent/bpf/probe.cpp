#include "bpf/probe.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <fstream>

#include "common/log.h"
#include "netmon.skel.h"

extern "C" {
#include "netmon_events.h"
}

namespace netmon {
namespace {

bool path_exists(const char* path) { return ::access(path, F_OK) == 0; }

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

int on_ring_buffer_record(void* ctx, void* data, size_t size) noexcept {
  static_cast<RecordSink*>(ctx)->on_record(
      std::span<const std::byte>(static_cast<const std::byte*>(data), size));
  return 0;
}

}  // namespace

struct Probe::Impl {
  SkelPtr skel;
  std::unique_ptr<ring_buffer, RingBufferDeleter> ring;
  std::vector<AttachedHook> hooks;
  int ncpus = 1;
};

std::optional<HookVariant> parse_hook_variant(std::string_view text) {
  if (text == "auto") return HookVariant::kAuto;
  if (text == "tp_btf") return HookVariant::kTpBtf;
  if (text == "tracepoint") return HookVariant::kTracepoint;
  return std::nullopt;
}

std::string_view hook_variant_name(HookVariant variant) {
  switch (variant) {
    case HookVariant::kAuto:
      return "auto";
    case HookVariant::kTpBtf:
      return "tp_btf";
    case HookVariant::kTracepoint:
      return "tracepoint";
  }
  return "?";
}

namespace {

// Opens, loads and attaches with one concrete variant of the state-change hook.
Result<std::unique_ptr<Probe::Impl>> start_variant(const ProbeOptions& options, HookVariant variant,
                                                   RecordSink& sink) {
  SkelPtr skel(netmon_bpf__open());
  if (!skel) return fail("opening the BPF object failed: " + errno_text(errno));

  const bool btf = variant == HookVariant::kTpBtf;
  bpf_program__set_autoload(skel->progs.handle_inet_sock_set_state_btf, btf);
  bpf_program__set_autoload(skel->progs.handle_inet_sock_set_state_btf_nested, btf);
  bpf_program__set_autoload(skel->progs.handle_inet_sock_set_state_tp, !btf);
  bpf_program__set_autoload(skel->progs.handle_sched_process_exec_btf, btf);
  bpf_program__set_autoload(skel->progs.handle_sched_process_exec_raw, !btf);
  bpf_program__set_autoload(skel->progs.handle_sched_process_fork_btf, btf);
  bpf_program__set_autoload(skel->progs.handle_sched_process_fork_raw, !btf);
  bpf_program__set_autoload(skel->progs.handle_sched_process_exit_btf, btf);
  bpf_program__set_autoload(skel->progs.handle_sched_process_exit_raw, !btf);
  bpf_map__set_max_entries(skel->maps.events, options.ring_buffer_bytes);
  bpf_map__set_max_entries(skel->maps.sockets, options.max_connections);
  skel->rodata->wakeup_bytes = options.wakeup_bytes;

  if (int err = netmon_bpf__load(skel.get()); err != 0) return fail(load_failure(err), -err);

  auto impl = std::make_unique<Probe::Impl>();
  struct Hook {
    bpf_program* prog;
    bpf_link** link;
    const char* hook;
    const char* variant;
  };
  const Hook nested{skel->progs.handle_inet_sock_set_state_btf_nested,
                    &skel->links.handle_inet_sock_set_state_btf_nested,
                    "sock/inet_sock_set_state (nested runs)", "tp_btf"};
  std::vector<Hook> hooks = {
      btf ? Hook{skel->progs.handle_inet_sock_set_state_btf,
                 &skel->links.handle_inet_sock_set_state_btf, "sock/inet_sock_set_state", "tp_btf"}
          : Hook{skel->progs.handle_inet_sock_set_state_tp,
                 &skel->links.handle_inet_sock_set_state_tp, "sock/inet_sock_set_state",
                 "tracepoint"},
      btf ? Hook{skel->progs.handle_sched_process_exec_btf,
                 &skel->links.handle_sched_process_exec_btf, "sched/sched_process_exec", "tp_btf"}
          : Hook{skel->progs.handle_sched_process_exec_raw,
                 &skel->links.handle_sched_process_exec_raw, "sched/sched_process_exec", "raw_tp"},
      btf ? Hook{skel->progs.handle_sched_process_fork_btf,
                 &skel->links.handle_sched_process_fork_btf, "sched/sched_process_fork", "tp_btf"}
          : Hook{skel->progs.handle_sched_process_fork_raw,
                 &skel->links.handle_sched_process_fork_raw, "sched/sched_process_fork", "raw_tp"},
      btf ? Hook{skel->progs.handle_sched_process_exit_btf,
                 &skel->links.handle_sched_process_exit_btf, "sched/sched_process_exit", "tp_btf"}
          : Hook{skel->progs.handle_sched_process_exit_raw,
                 &skel->links.handle_sched_process_exit_raw, "sched/sched_process_exit", "raw_tp"},
      {skel->progs.handle_sys_exit_accept4, &skel->links.handle_sys_exit_accept4,
       "syscalls/sys_exit_accept4", "tracepoint"},
      {skel->progs.handle_sys_exit_accept, &skel->links.handle_sys_exit_accept,
       "syscalls/sys_exit_accept", "tracepoint"},
  };
  if (btf) hooks.insert(hooks.begin() + 1, nested);
  for (const Hook& h : hooks) {
    bpf_link* link = bpf_program__attach(h.prog);
    if (!link) {
      const int err = errno;
      return fail(std::string("attaching to ") + h.variant + " " + h.hook +
                  " failed: " + errno_text(err) +
                  (err == ENOENT ? " (the kernel or tracefs lacks this tracepoint)" : ""));
    }
    *h.link = link;
    impl->hooks.push_back(AttachedHook{h.hook, h.variant});
  }

  impl->ring.reset(
      ring_buffer__new(bpf_map__fd(skel->maps.events), on_ring_buffer_record, &sink, nullptr));
  if (!impl->ring) return fail("creating the ring buffer reader failed: " + errno_text(errno));
  const int ncpus = libbpf_num_possible_cpus();
  impl->ncpus = ncpus > 0 ? ncpus : 1;
  impl->skel = std::move(skel);
  return impl;
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

  Result<std::unique_ptr<Impl>> impl = fail("no hook variant tried");
  if (options.variant == HookVariant::kAuto || options.variant == HookVariant::kTpBtf) {
    impl = start_variant(options, HookVariant::kTpBtf, sink);
    if (!impl && impl.error().code == EPERM) return fail(impl.error().message);
    if (!impl && options.variant == HookVariant::kAuto) {
      log::info("tp_btf variant unavailable (" + impl.error().message +
                "); trying the classic tracepoint");
    }
  }
  if (!impl && options.variant != HookVariant::kTpBtf) {
    impl = start_variant(options, HookVariant::kTracepoint, sink);
  }
  if (!impl) return fail(impl.error().message);
  return std::unique_ptr<Probe>(new Probe(std::move(*impl)));
}

Result<int> Probe::poll(int timeout_ms) {
  int n = ring_buffer__poll(impl_->ring.get(), timeout_ms);
  if (n < 0 && n != -EINTR) return fail("polling the ring buffer failed: " + errno_text(n));
  // Records submitted without a wakeup do not end the wait: consume whatever is there.
  const int more = ring_buffer__consume(impl_->ring.get());
  if (more < 0) return fail("reading the ring buffer failed: " + errno_text(more));
  return (n > 0 ? n : 0) + more;
}

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
  c.ring_buffer_full = sum(NM_CNT_RINGBUF_FULL);
  c.sockets_map_full = sum(NM_CNT_SOCKETS_FULL);
  c.owner_unknown = sum(NM_CNT_OWNER_UNKNOWN);
  c.accept_no_socket = sum(NM_CNT_ACCEPT_NO_SOCK);
  c.unobserved = sum(NM_CNT_UNOBSERVED);
  bpf_program* prog = nullptr;
  const bool nested_copy =
      bpf_program__fd(impl_->skel->progs.handle_inet_sock_set_state_btf_nested) >= 0;
  uint64_t misses = 0;
  bpf_object__for_each_program(prog, impl_->skel->obj) {
    const int prog_fd = bpf_program__fd(prog);
    if (prog_fd < 0) continue;  // not loaded (the other variant)
    // The main tp_btf state program's skipped runs are taken by its nested copy: not lost.
    if (nested_copy && prog == impl_->skel->progs.handle_inet_sock_set_state_btf) continue;
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(prog_fd, &info, &len) == 0) misses += info.recursion_misses;
  }
  // Misses of the nested copy for changes the main program handled lose nothing. The two
  // counts are read at slightly different moments: never report less than zero.
  const uint64_t spared = sum(NM_CNT_NESTED_SPARED);
  c.recursion_misses = misses > spared ? misses - spared : 0;
  return c;
}

const std::vector<AttachedHook>& Probe::hooks() const { return impl_->hooks; }

std::vector<MapMemory> Probe::map_memory() const {
  std::vector<MapMemory> out;
  const bpf_map* map = nullptr;
  bpf_object__for_each_map(map, impl_->skel->obj) {
    const int fd = bpf_map__fd(map);
    if (fd < 0) continue;
    std::ifstream fdinfo("/proc/self/fdinfo/" + std::to_string(fd));
    for (std::string line; std::getline(fdinfo, line);) {
      if (line.rfind("memlock:", 0) == 0) {
        out.push_back(MapMemory{bpf_map__name(map), std::stoull(line.substr(8))});
        break;
      }
    }
  }
  return out;
}

}  // namespace netmon
