// The connection state sensor: copies of the sock/inet_sock_set_state program (tp_btf: a main and
// a nested copy; or the classic tracepoint) that see every TCP state change. The TCP state
// observer (sock_ops, attached by the loader to the cgroup root) backs them up.
#pragma once

#include "bpf/sensors/sensor.h"

namespace netmon {

extern const Sensor kConnectionStateSensor;

// Whether the state programs assign socket cookies themselves (tp_btf with the tracing cookie
// helper, 5.12+); otherwise a sock_ops program does.
bool state_assigns_cookie(const HookVariants& variants, const KernelFacts& facts);

}  // namespace netmon
