#include "bpf/sensors/accept.h"

#include "bpf/sensors/connection_state.h"
#include "netmon.skel.h"

namespace netmon {
namespace {

std::vector<SensorProgram> programs(HookVariant variant, const KernelFacts& facts) {
  if (variant == HookVariant::kFexit) {
    // inet_csk_accept(sk, struct proto_accept_arg *) since 6.10, four parameters before.
    if (facts.accept_takes_arg) return {{"handle_inet_csk_accept_fexit_arg", "inet_csk_accept"}};
    return {{"handle_inet_csk_accept_fexit", "inet_csk_accept"}};
  }
  // Every syscall's exit, the accept syscalls picked by number.
  if (variant == HookVariant::kTpBtf) return {{"handle_sys_exit_btf", "raw_syscalls/sys_exit"}};
  return {{"handle_sys_exit_accept4", "syscalls/sys_exit_accept4"},
          {"handle_sys_exit_accept", "syscalls/sys_exit_accept"}};
}

void configure(netmon_bpf& skel, const SensorSettings& s) {
  // The accept programs assign the cookie of an accepted socket where the state programs assign
  // cookies (else a sock_ops program does).
  skel.rodata->accept_assigns_cookie = state_assigns_cookie(s.variants, s.facts);
}

void count(const SensorRuns& runs, KernelCounters& out) {
  out.lost[loss_index(LossStage::kRecursion)] += runs.recursion_misses;
}

}  // namespace

const Sensor kAcceptSensor = {
    .name = "accept",
    .field = &HookVariants::accept,
    .preferred = HookVariant::kFexit,
    .fallback = HookVariant::kTracepoint,
    // The tracepoints need a perf event, which perf_event_paranoid > 2 refuses without
    // CAP_SYS_ADMIN; this one needs none, but runs at every syscall exit.
    .last_resort = HookVariant::kTpBtf,
    .programs = programs,
    .configure = configure,
    .count = count,
};

}  // namespace netmon
