// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * netmon's kernel side: the lifecycle of TCP connections and of processes, recorded into one ring
 * buffer ("events", records of netmon_events.h) for the agent. One object, one skeleton
 * (netmon.skel.h, for agent/bpf); this file only puts the pieces together.
 *
 * The sensors, one file per hook family, each saying which hooks it holds and why, what it emits,
 * the maps and counters it uses and the variants the agent's loader picks between. Each of the
 * first three hooks has a preferred variant and a fallback that reports the same events; the agent
 * loads the preferred one where the kernel accepts it (docs/kernels.md):
 *   sensors/connection_state.bpf.h
 *     state    sock:inet_sock_set_state, every TCP state change with its struct sock: tp_btf, two
 *              copies (see state_copy()), or the classic tracepoint.
 *     sock_ops on the cgroup v2 root: the TCP state observer (observe_tcp_states), which sees the
 *              state changes of connections opened after it attached from TCP's own state
 *              callbacks, which the kernel never skips, and assigns their cookies; or, where the
 *              observer cannot load and the state hook cannot assign cookies, the cookie assigner
 *              (assign_cookies). Both need CAP_NET_ADMIN; the agent runs without them.
 *   sensors/accept.bpf.h
 *     accept   an accepted connection, in the accepting task: fexit on inet_csk_accept (also
 *              accepts made through io_uring or inside the kernel; the program matching the
 *              kernel's prototype), or the syscalls:sys_exit_accept{,4} tracepoints.
 *   sensors/process.bpf.h
 *     process  sched:sched_process_exec/fork/exit, for the agent's process table: tp_btf or raw_tp.
 * What they share: lib/maps.bpf.h (the maps more than one sensor uses), lib/records.bpf.h
 * (reserving and submitting records, the loss counters, a task's identity), lib/connections.bpf.h
 * (the connection record, the "sockets" map's entries, the lifecycle of a connection).
 *
 * Why these hooks: kprobes on tcp_v4_connect/inet_csk_accept break whenever those functions are
 * renamed or inlined and are not compiled into every kernel (the development machines have none);
 * the tracepoints are stable, present where kprobes are not, and need no trampoline, which
 * lockdown or an LSM may refuse (hence the syscall tracepoints behind the fexit accept program).
 *
 * The order of the includes is the order of the maps, variables and programs in the object:
 * lib/maps.bpf.h first (it says why its order matters), then the other shared pieces, then the
 * sensors. Each header includes what it uses and is included once, here. A new sensor is a new
 * sensors/NAME.bpf.h (its hooks, its own maps and settings, its comment), one #include below, its
 * counters in netmon_events.h, and its user side in agent/bpf/sensors/ (variant plan, settings,
 * counters), registered in agent/bpf/sensors/registry.cpp.
 */
#include "lib/maps.bpf.h"
#include "lib/records.bpf.h"
#include "lib/connections.bpf.h"

#include "sensors/connection_state.bpf.h"
#include "sensors/accept.bpf.h"
#include "sensors/process.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";
