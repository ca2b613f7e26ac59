// The agent's run loop: start the probe, poll until SIGTERM/SIGINT, shut down in order.
#pragma once

#include "cli/options.h"

namespace netmon {

// Returns the process exit code: 0 after a signal-initiated stop, 2 for a configuration error
// (the rules, the kubelet URL, NETMON_FAULT_SKIP_STATE), 1 for any other start-up failure or when
// reading the ring buffer fails.
int run_agent(const Options& options);

}  // namespace netmon
