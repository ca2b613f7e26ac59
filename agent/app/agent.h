// The agent's run loop: start the probe, poll until SIGTERM/SIGINT, shut down in order.
#pragma once

#include "cli/options.h"
#include "common/result.h"

namespace netmon {

// Exit status when stdout failed (EPIPE: its reader is gone; or another write error): the agent
// stops as on SIGTERM and exits with it, so that the kubelet restarts the container with a new
// stdout instead of leaving it running with nowhere to write (docs/deployment.md).
constexpr int kExitOutputFailed = 3;

// Everything about the configuration that a start checks before it touches the kernel or the
// host: the rules compile (macro cycles, depth, ports, addresses), the kubelet and API server
// URLs parse, a token goes over http:// only when allowed. What depends on the host (the
// --proc-root directory, BTF, privileges) is checked by run_agent(). Used by --check-config and
// --print-config.
Result<void> validate_config(const Options& options);

// Returns the process exit code: 0 after a stop by SIGTERM, SIGINT or SIGHUP (SIGUSR1 logs a
// status line, SIGUSR2 is ignored; docs/deployment.md), 2 for a configuration error (as
// validate_config(), and a --proc-root that is not a proc filesystem), kExitOutputFailed when
// stdout failed, 1 for any other start-up failure or when reading the ring buffer fails.
int run_agent(const Options& options);

}  // namespace netmon
