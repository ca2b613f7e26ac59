// The agent's run loop: start the probe, poll until SIGTERM/SIGINT, shut down in order.
#pragma once

#include "cli/options.h"

namespace netmon {

// Returns the process exit code: 0 after a signal-initiated stop, 1 for a start-up failure.
int run_agent(const Options& options);

}  // namespace netmon
