// The parts of agent/bpf that run without privileges: the sensors' variant plans and counters,
// the verifier's reason in a libbpf warning, the unsupported-kernel message, and the names the
// sensors give the BPF object's programs. (parse_hook_variants: options_test.cpp.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "bpf/libbpf_log.h"
#include "bpf/loader.h"
#include "bpf/probe.h"
#include "bpf/sensors/connection_state.h"
#include "bpf/sensors/sensor.h"
#include "events/counters.h"

namespace netmon {
namespace {

// "program@hook" for each program of a variant.
std::vector<std::string> plan(const Sensor& s, HookVariant variant, bool accept_takes_arg = false) {
  KernelFacts facts;
  facts.accept_takes_arg = accept_takes_arg;
  std::vector<std::string> out;
  for (const SensorProgram& p : s.programs(variant, facts)) {
    out.push_back(std::string(p.program) + "@" + std::string(p.hook));
  }
  return out;
}

const Sensor& sensor(std::string_view name) {
  for (const Sensor* s : sensors()) {
    if (s->name == name) return *s;
  }
  ADD_FAILURE() << "no sensor " << name;
  return *sensors()[0];
}

TEST(Sensors, RegistryOrderAndVariants) {
  std::vector<std::string> rows;
  for (const Sensor* s : sensors()) {
    rows.push_back(std::string(s->name) + " " + std::string(hook_variant_name(s->preferred)) + " " +
                   std::string(hook_variant_name(s->fallback)) + " " +
                   std::string(hook_variant_name(s->last_resort)));
  }
  // The state sensor first: the accept programs' cookie use depends on its choice.
  EXPECT_EQ(rows, (std::vector<std::string>{"state tp_btf tracepoint auto",
                                            "accept fexit tracepoint tp_btf",
                                            "process tp_btf raw_tp auto"}));
  EXPECT_EQ(sensor("state").field, &HookVariants::state);
  EXPECT_EQ(sensor("accept").field, &HookVariants::accept);
  EXPECT_EQ(sensor("process").field, &HookVariants::process);
}

TEST(Sensors, ProgramsOfEachVariant) {
  EXPECT_EQ(plan(sensor("state"), HookVariant::kTpBtf),
            (std::vector<std::string>{
                "handle_inet_sock_set_state_btf@sock/inet_sock_set_state",
                "handle_inet_sock_set_state_btf_nested@sock/inet_sock_set_state (nested runs)"}));
  EXPECT_EQ(plan(sensor("state"), HookVariant::kTracepoint),
            (std::vector<std::string>{"handle_inet_sock_set_state_tp@sock/inet_sock_set_state"}));
  EXPECT_EQ(plan(sensor("accept"), HookVariant::kFexit),
            (std::vector<std::string>{"handle_inet_csk_accept_fexit@inet_csk_accept"}));
  EXPECT_EQ(plan(sensor("accept"), HookVariant::kFexit, true),
            (std::vector<std::string>{"handle_inet_csk_accept_fexit_arg@inet_csk_accept"}));
  EXPECT_EQ(plan(sensor("accept"), HookVariant::kTracepoint),
            (std::vector<std::string>{"handle_sys_exit_accept4@syscalls/sys_exit_accept4",
                                      "handle_sys_exit_accept@syscalls/sys_exit_accept"}));
  EXPECT_EQ(plan(sensor("accept"), HookVariant::kTpBtf),
            (std::vector<std::string>{"handle_sys_exit_btf@raw_syscalls/sys_exit"}));
  EXPECT_EQ(plan(sensor("process"), HookVariant::kTpBtf),
            (std::vector<std::string>{"handle_sched_process_exec_btf@sched/sched_process_exec",
                                      "handle_sched_process_fork_btf@sched/sched_process_fork",
                                      "handle_sched_process_exit_btf@sched/sched_process_exit"}));
  EXPECT_EQ(plan(sensor("process"), HookVariant::kRawTp),
            (std::vector<std::string>{"handle_sched_process_exec_raw@sched/sched_process_exec",
                                      "handle_sched_process_fork_raw@sched/sched_process_fork",
                                      "handle_sched_process_exit_raw@sched/sched_process_exit"}));
}

TEST(Sensors, ChosenProgramsFollowTheVariants) {
  HookVariants v;
  v.state = HookVariant::kTracepoint;
  v.accept = HookVariant::kFexit;
  v.process = HookVariant::kRawTp;
  const KernelFacts facts;
  EXPECT_EQ(chosen_programs(sensor("state"), v, facts).size(), 1u);
  EXPECT_EQ(chosen_programs(sensor("process"), v, facts).front().program,
            "handle_sched_process_exec_raw");
}

TEST(Sensors, StateProgramsAssignCookiesOnlyAsTpBtfWithTheHelper) {
  KernelFacts with;
  with.tracing_cookie_helper = true;
  HookVariants btf;
  btf.state = HookVariant::kTpBtf;
  HookVariants tp;
  tp.state = HookVariant::kTracepoint;
  EXPECT_TRUE(state_assigns_cookie(btf, with));
  EXPECT_FALSE(state_assigns_cookie(btf, KernelFacts{}));
  EXPECT_FALSE(state_assigns_cookie(tp, with));
}

// Every program a sensor names is in the BPF object, and every program of the object belongs to
// a sensor or to the loader's sock_ops chain.
TEST(Sensors, NamesMatchTheBpfObject) { EXPECT_EQ(unknown_programs(), std::vector<std::string>{}); }

uint64_t recursion(const KernelCounters& c) { return c.lost[loss_index(LossStage::kRecursion)]; }

TEST(SensorCounters, StateMissesLessTheSparedAreLostWithoutTheObserver) {
  SensorRuns runs;
  runs.recursion_misses = 10;
  runs.kernel[NM_CNT_SPARED] = 4;
  KernelCounters c;
  c.lost[loss_index(LossStage::kRecursion)] = 1;  // another sensor's
  sensor("state").count(runs, c);
  EXPECT_EQ(recursion(c), 7u);
  EXPECT_EQ(c.state_runs_made_up, 0u);
}

TEST(SensorCounters, StateMissesTheObserverMadeUpForAreNotLost) {
  SensorRuns runs;
  runs.recursion_misses = 10;
  runs.kernel[NM_CNT_SPARED] = 4;
  runs.observer_attached = true;
  KernelCounters c;
  sensor("state").count(runs, c);
  EXPECT_EQ(recursion(c), 0u);
  EXPECT_EQ(c.state_runs_made_up, 6u);
}

TEST(SensorCounters, MoreSparedThanMissedIsNoneLost) {
  // The two counts are read at slightly different moments.
  SensorRuns runs;
  runs.recursion_misses = 3;
  runs.kernel[NM_CNT_SPARED] = 5;
  KernelCounters c;
  sensor("state").count(runs, c);
  EXPECT_EQ(recursion(c), 0u);
}

TEST(SensorCounters, AcceptAndProcessMissesAreLost) {
  SensorRuns runs;
  runs.recursion_misses = 2;
  runs.observer_attached = true;  // changes nothing for them
  KernelCounters c;
  sensor("accept").count(runs, c);
  sensor("process").count(runs, c);
  EXPECT_EQ(recursion(c), 4u);
  EXPECT_EQ(c.state_runs_made_up, 0u);
}

TEST(LossStages, TableOrderNamesAndSources) {
  std::string names;
  for (const LossStageInfo& s : kLossStages) {
    names += std::string(names.empty() ? "" : ",") + std::string(s.name);
    EXPECT_EQ(loss_index(s.stage), static_cast<size_t>(&s - kLossStages));
    EXPECT_FALSE(s.help.empty());
    EXPECT_EQ(s.source.source == LossSource::kKernel, s.source.counter >= 0) << s.name;
    if (s.source.source == LossSource::kKernel) {
      EXPECT_LT(s.source.counter, NM_CNT__MAX);
    }
  }
  // The order of the "stopped:" line and of netmon_events_lost_total.
  EXPECT_EQ(names,
            "ring_buffer,sockets_map,recursion,unobserved,accept,decode,output_queue,output_error");
  EXPECT_EQ(kLossStages[loss_index(LossStage::kRingBuffer)].source.counter, NM_CNT_RINGBUF_FULL);
  EXPECT_EQ(kLossStages[loss_index(LossStage::kSocketsMap)].source.counter, NM_CNT_SOCKETS_FULL);
  EXPECT_EQ(kLossStages[loss_index(LossStage::kUnobserved)].source.counter, NM_CNT_UNOBSERVED);
  EXPECT_EQ(kLossStages[loss_index(LossStage::kAccept)].source.counter, NM_CNT_ACCEPT_NO_SOCK);
  EXPECT_EQ(kLossStages[loss_index(LossStage::kRecursion)].source.source, LossSource::kProbe);
}

TEST(KernelCounterIndexes, NeverRenumbered) {
  EXPECT_EQ(NM_CNT_RINGBUF_FULL, 0);
  EXPECT_EQ(NM_CNT_SOCKETS_FULL, 1);
  EXPECT_EQ(NM_CNT_OWNER_UNKNOWN, 2);
  EXPECT_EQ(NM_CNT_ACCEPT_NO_SOCK, 3);
  EXPECT_EQ(NM_CNT_UNOBSERVED, 4);
  EXPECT_EQ(NM_CNT_SPARED, 5);
  EXPECT_EQ(NM_CNT__MAX, 6);
}

TEST(VerifierReason, LastLineBeforeTheEndThatIsNotAStatistic) {
  EXPECT_EQ(verifier_reason("libbpf: prog 'x': BPF program load failed: Permission denied\n"
                            "0: R1=ctx() R10=fp0\n"
                            "; int x = 0;\n"
                            "invalid mem access 'scalar'\n"
                            "processed 12 insns (limit 1000000) max_states_per_insn 0\n"
                            "verification time 25 usec\n"
                            "-- END PROG LOAD LOG --\n"),
            "invalid mem access 'scalar'");
  EXPECT_EQ(verifier_reason("unknown func bpf_get_socket_cookie#46  \n\n-- END PROG LOAD LOG --"),
            "unknown func bpf_get_socket_cookie#46");
  EXPECT_EQ(verifier_reason("one line\n-- END PROG LOAD LOG --"), "one line");
}

TEST(VerifierReason, NoneOutsideAVerifierLog) {
  EXPECT_EQ(verifier_reason("libbpf: failed to find BTF for extern 'x'\n"), "");
  EXPECT_EQ(verifier_reason("processed 1 insns\n-- END PROG LOAD LOG --"), "");
  EXPECT_EQ(verifier_reason(""), "");
}

TEST(VerifierReasons, KeepsTheLastReasonUntilCleared) {
  VerifierReasons reasons;
  reasons.note("first\n-- END PROG LOAD LOG --");
  reasons.note("libbpf: not a verifier log");
  EXPECT_EQ(reasons.last(), "first");
  reasons.note("second\n-- END PROG LOAD LOG --");
  EXPECT_EQ(reasons.last(), "second");
  reasons.clear();
  EXPECT_EQ(reasons.last(), "");
}

TEST(VerifierReasons, SaidEndsAnErrorWithTheReasonOrNothing) {
  VerifierReasons reasons;
  EXPECT_EQ(std::string("Permission denied") + reasons.said(), "Permission denied");
  reasons.note("R1 invalid mem access 'scalar'\n-- END PROG LOAD LOG --");
  EXPECT_EQ(std::string("Permission denied") + reasons.said(),
            "Permission denied: the verifier says \"R1 invalid mem access 'scalar'\"");
}

TEST(UnsupportedKernel, NamesTheReleaseAndEachMissingFeature) {
  EXPECT_EQ(unsupported_kernel_message("5.4.0-1", {"the BPF ring buffer (Linux 5.8)",
                                                   "bpf_ktime_get_boot_ns() (Linux 5.8)"}),
            "this kernel (5.4.0-1) lacks what netmon needs: the BPF ring buffer (Linux 5.8); "
            "bpf_ktime_get_boot_ns() (Linux 5.8). netmon supports Linux 5.10 and newer, built "
            "with BTF");
}

}  // namespace
}  // namespace netmon
