// What the running kernel offers netmon, found before anything loads: tracefs (mounted when
// missing), kernel BTF, the helpers and program types every variant needs, and the BTF facts
// that choose between programs of one variant. No libbpf type in this header.
#pragma once

#include <string>
#include <vector>

namespace netmon {

// What this kernel gives a hook's variant, found before the load.
struct KernelFacts {
  bool accept_takes_arg = false;  // inet_csk_accept(sk, struct proto_accept_arg *) (6.10+)
  // Tracing programs may call bpf_get_socket_cookie() (5.12+): the kernel has the helper's
  // tracing implementation. Without it the tp_btf state program reads the socket's cookie and
  // a sock_ops program assigns cookies.
  bool tracing_cookie_helper = false;
  // bpf_get_current_task_btf() (5.11+): the programs read the current task with plain loads
  // checked against the kernel's BTF instead of a bpf_probe_read_kernel() call per field.
  bool current_task_btf_helper = false;
};

// Whether the kernel exposes its BTF (/sys/kernel/btf/vmlinux: CONFIG_DEBUG_INFO_BTF=y).
bool kernel_btf_present();

// Classic tracepoints are found through tracefs: mounts it at /sys/kernel/tracing when neither
// /sys/kernel/debug/tracing nor /sys/kernel/tracing has it (a warning when that fails).
void ensure_tracefs();

// inet_csk_accept's parameters in the running kernel's BTF (2 since 6.10, 4 before), and
// whether it has bpf_get_socket_ptr_cookie (the helper's tracing-program version, 5.12+) and
// bpf_get_current_task_btf (5.11+).
KernelFacts read_kernel_facts();

// What every variant needs and this kernel lacks, each with the Linux version that brought it,
// checked before anything loads, so that an old kernel gets one line naming what it lacks
// (unsupported_kernel_message(), probe.h) instead of a verifier message. Checks that cannot run
// (no privileges) are left to the load, which then reports the privilege problem.
std::vector<std::string> missing_kernel_features();

// uname's release, "unknown" when uname fails.
std::string kernel_release();

}  // namespace netmon
