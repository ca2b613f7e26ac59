#include "app/agent.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>

#include "app/pipeline.h"
#include "bpf/probe.h"
#include "common/log.h"
#include "output/line_writer.h"
#include "process/table.h"

namespace netmon {
namespace {

std::atomic<bool> g_stop{false};

void on_stop_signal(int) { g_stop.store(true); }

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: the poll wakes up with EINTR
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a closed stdout is a write error, counted, not a crash
}

std::string summary(const Pipeline& pipeline, const OutputStats& out, const KernelCounters& k,
                    const ProcessTableStats& p) {
  const PipelineStats& s = pipeline.stats();
  return "stopped: records " + std::to_string(s.records) + ", establish " +
         std::to_string(s.events_by_kind[0]) + ", accept " + std::to_string(s.events_by_kind[1]) +
         ", close " + std::to_string(s.events_by_kind[2]) + ", failed " +
         std::to_string(s.events_by_kind[3]) + ", written " + std::to_string(out.lines_written) +
         "; lost: ring_buffer " + std::to_string(k.ring_buffer_full) + ", sockets_map " +
         std::to_string(k.sockets_map_full) + ", decode " + std::to_string(s.decode_errors) +
         ", output_queue " + std::to_string(out.lines_dropped_queue_full) + ", output_error " +
         std::to_string(out.lines_dropped_write_error) + "; without process " +
         std::to_string(s.events_without_process) + "; process table: " + std::to_string(p.live) +
         " live, " + std::to_string(p.exited) + " exited, misses " + std::to_string(p.misses) +
         ", read from /proc " + std::to_string(p.resolved_from_proc) + ", evictions " +
         std::to_string(p.evictions);
}

}  // namespace

int run_agent(const Options& options) {
  install_signal_handlers();
  LineWriter writer(STDOUT_FILENO, options.output_queue_bytes);
  ProcessTable processes(ProcReader(options.proc_root), options.max_processes);
  Pipeline pipeline(writer, processes, read_last_cap(options.proc_root));

  auto probe = Probe::start(options.probe, pipeline);
  if (!probe) {
    log::error(probe.error().message);
    writer.finish(std::chrono::milliseconds(0));
    return 1;
  }
  for (const AttachedHook& h : (*probe)->hooks()) {
    log::info("attached " + h.hook + " as " + h.variant);
  }
  // Seed after attaching: a process started in between is in /proc, in the ring buffer, or both.
  processes.seed();
  log::info("process table seeded from " + options.proc_root + " with " +
            std::to_string(processes.size()) + " processes");
  log::info("netmon is running; events go to stdout");

  auto last_refresh = std::chrono::steady_clock::now();
  int exit_code = 0;
  while (!g_stop.load()) {
    auto polled = (*probe)->poll(100);
    if (!polled) {
      log::error(polled.error().message);
      exit_code = 1;
      break;
    }
    pipeline.flush();
    const auto now = std::chrono::steady_clock::now();
    if (now - last_refresh >= std::chrono::seconds(1)) {
      pipeline.refresh_clock();
      last_refresh = now;
    }
  }

  // Deliver what the kernel has already written, then detach before the output drains.
  (void)(*probe)->poll(0);
  pipeline.flush();
  const KernelCounters counters = (*probe)->counters();
  probe->reset();
  if (!writer.finish(std::chrono::seconds(5))) {
    log::warn("stdout did not drain within 5 s; the remaining events are counted as lost");
  }
  log::info(summary(pipeline, writer.stats(), counters, processes.stats()));
  return exit_code;
}

}  // namespace netmon
