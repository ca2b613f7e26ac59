#include "bpf/sensors/connection_state.h"

#include "netmon.skel.h"

namespace netmon {
namespace {

std::vector<SensorProgram> programs(HookVariant variant, const KernelFacts&) {
  if (variant == HookVariant::kTpBtf) {
    // The nested copy after the main one: it runs when the main one is already running on this
    // CPU (bpf/sensors/connection_state.bpf.h, state_copy()).
    return {{"handle_inet_sock_set_state_btf", "sock/inet_sock_set_state"},
            {"handle_inet_sock_set_state_btf_nested", "sock/inet_sock_set_state (nested runs)"}};
  }
  return {{"handle_inet_sock_set_state_tp", "sock/inet_sock_set_state"}};
}

void configure(netmon_bpf& skel, const SensorSettings& s) {
  skel.rodata->state_assigns_cookie = state_assigns_cookie(s.variants, s.facts);
  skel.rodata->fault_skip_state = s.options.fault_skip_state;
}

void count(const SensorRuns& runs, KernelCounters& out) {
  // A miss of one copy of the tp_btf state program that the other copy made up for loses
  // nothing (bpf/sensors/connection_state.bpf.h). The counts are read at slightly different
  // moments: never report less than zero.
  const uint64_t spared = runs.kernel[NM_CNT_SPARED];
  const uint64_t misses = runs.recursion_misses > spared ? runs.recursion_misses - spared : 0;
  // With the TCP state observer attached (the kernel never skips it), the observer made up for
  // the rest: they are reported, but not as lost events.
  if (runs.observer_attached) {
    out.state_runs_made_up += misses;
  } else {
    out.lost[loss_index(LossStage::kRecursion)] += misses;
  }
}

}  // namespace

const Sensor kConnectionStateSensor = {
    .name = "state",
    .field = &HookVariants::state,
    .preferred = HookVariant::kTpBtf,
    .fallback = HookVariant::kTracepoint,
    .programs = programs,
    .configure = configure,
    .count = count,
};

bool state_assigns_cookie(const HookVariants& variants, const KernelFacts& facts) {
  return variants.state == HookVariant::kTpBtf && facts.tracing_cookie_helper;
}

}  // namespace netmon
