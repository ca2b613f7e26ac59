#include "bpf/kernel_features.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "bpf/probe.h"
#include "common/log.h"

namespace netmon {
namespace {

bool path_exists(const char* path) { return ::access(path, F_OK) == 0; }

// libbpf looks for tracepoints in /sys/kernel/debug/tracing when that exists, else in
// /sys/kernel/tracing.
bool is_tracefs(const char* path) {
  struct statfs fs {};
  return ::statfs(path, &fs) == 0 && fs.f_type == TRACEFS_MAGIC;
}

}  // namespace

bool kernel_btf_present() { return path_exists("/sys/kernel/btf/vmlinux"); }

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
  facts.current_task_btf_helper =
      btf__find_by_name_kind(vmlinux, "bpf_get_current_task_btf", BTF_KIND_FUNC) > 0;
  btf__free(vmlinux);
  return facts;
}

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

std::string unsupported_kernel_message(std::string_view release,
                                       const std::vector<std::string>& missing) {
  std::string text = "this kernel (" + std::string(release) + ") lacks what netmon needs: ";
  for (size_t i = 0; i < missing.size(); ++i) text += (i ? "; " : "") + missing[i];
  return text + ". netmon supports Linux 5.10 and newer, built with BTF";
}

}  // namespace netmon
