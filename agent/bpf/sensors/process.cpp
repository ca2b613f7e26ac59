#include "bpf/sensors/process.h"

namespace netmon {
namespace {

std::vector<SensorProgram> programs(HookVariant variant, const KernelFacts&) {
  if (variant == HookVariant::kTpBtf) {
    return {{"handle_sched_process_exec_btf", "sched/sched_process_exec"},
            {"handle_sched_process_fork_btf", "sched/sched_process_fork"},
            {"handle_sched_process_exit_btf", "sched/sched_process_exit"}};
  }
  return {{"handle_sched_process_exec_raw", "sched/sched_process_exec"},
          {"handle_sched_process_fork_raw", "sched/sched_process_fork"},
          {"handle_sched_process_exit_raw", "sched/sched_process_exit"}};
}

void configure(netmon_bpf&, const SensorSettings&) {}  // no settings of its own

void count(const SensorRuns& runs, KernelCounters& out) {
  out.lost[loss_index(LossStage::kRecursion)] += runs.recursion_misses;
}

}  // namespace

const Sensor kProcessSensor = {
    .name = "process",
    .field = &HookVariants::process,
    .preferred = HookVariant::kTpBtf,
    .fallback = HookVariant::kRawTp,
    .programs = programs,
    .configure = configure,
    .count = count,
};

}  // namespace netmon
