/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Sensor: accept. An accepted TCP connection, in the accepting task: the Accept record with the
 * connection's own addresses and cookie and the accepting process, and the connection's entry in
 * the "sockets" map, whose Close the state sensor reports.
 *
 * Hooks, and the variants the loader picks between (its plan: agent/bpf/sensors/accept.cpp):
 *   fexit       on inet_csk_accept(), the TCP accept of every caller (the accept syscalls,
 *               io_uring, in-kernel users). Preferred: needs BPF trampolines (5.5+) and a kernel
 *               that allows them (lockdown or an LSM may refuse fexit). One program per
 *               prototype: handle_inet_csk_accept_fexit (up to 6.9) or
 *               handle_inet_csk_accept_fexit_arg (6.10+), the one matching the kernel's BTF.
 *   tracepoint  syscalls:sys_exit_accept4 and sys_exit_accept (handle_sys_exit_accept4,
 *               handle_sys_exit_accept): the accept syscalls return, and the new descriptor
 *               leads to the socket. Attaching needs a perf event, which perf_event_paranoid
 *               above 2 (Debian) refuses without CAP_SYS_ADMIN.
 *   tp_btf      raw_syscalls:sys_exit (handle_sys_exit_btf): every syscall's return, the accept
 *               syscalls picked by number from the saved registers, then as the tracepoint
 *               variant. Needs no perf event and no trampoline; used only where fexit is
 *               unavailable and the tracepoints' perf events are refused (arm64 before 6.4,
 *               which has no BPF trampolines, with perf_event_paranoid 3), as it runs on every
 *               syscall exit of the machine (its cost: docs/performance.md).
 *
 * Why these: a kprobe on inet_csk_accept breaks whenever the function is renamed or inlined and
 * is not compiled into every kernel; the syscall tracepoints are stable and need no trampoline,
 * which lockdown or an LSM may refuse.
 *
 * Emits: NM_REC_CONNECTION records, kind Accept (inbound), and the Close of a connection that
 * ended while it waited in the accept queue.
 * Maps: sockets, scratch (SLOT_ACCEPT), events, counters. Counters: NM_CNT_ACCEPT_NO_SOCK, and
 * those of lib/connections.bpf.h. Set by the agent before load: accept_assigns_cookie.
 */
#ifndef NETMON_BPF_SENSORS_ACCEPT_BPF_H
#define NETMON_BPF_SENSORS_ACCEPT_BPF_H

#include "lib/connections.bpf.h"

#include <bpf/bpf_tracing.h>

/* Set by the agent before load (read-only data): the fexit accept program may call
 * bpf_get_socket_cookie() (tracing programs: 5.12+). The agent sets it when the tp_btf state
 * program, which needs the same helper, loaded. */
const volatile bool accept_assigns_cookie = false;

/*
 * An accepted connection, in the accepting thread: emit Accept with the connection's own
 * addresses and cookie and the accepting process, and track the socket. Both accept variants end
 * here, so their events are the same.
 */
static __always_inline void on_accepted(struct sock *sk, u64 cookie, long fd, u32 btf)
{
	struct sock_state *st;
	u16 family;
	u64 key;
	u8 state;

	family = NM_READ(btf & NM_BTF_SOCK, sk, __sk_common.skc_family);
	if (NM_READ(btf & NM_BTF_SOCK, sk, sk_protocol) != IPPROTO_TCP ||
	    (family != AF_INET && family != AF_INET6))
		return; /* not a TCP socket (e.g. AF_UNIX, or DCCP through inet_csk_accept): not
			   ours */

	key = (u64)sk;
	st = scratch_state(SLOT_ACCEPT);
	if (!st)
		return;
	__builtin_memset(st, 0, sizeof(*st));
	st->cookie = cookie;
	fill_current_task(&st->owner);
	st->direction = NM_DIR_INBOUND;
	st->flags = NM_CONN_F_OWNER_KNOWN;
	st->reported = 1;
	st->open_ns = open_time(emit_record(sk, cookie, NM_CONN_ACCEPT, NM_DIR_INBOUND, st, 0,
					    cookie || fd < 0 ? 0 : (u32)fd + 1, btf));
	track((u64)sk, st);

	/* The peer may have reset the connection while it waited in the accept queue, or may do so
	 * on another CPU right now: its CLOSE transition then found nothing to report. If the
	 * socket is closed, report the Close here, unless the state-change hook already took the
	 * entry (the delete decides). */
	state = NM_READ(btf & NM_BTF_SOCK, sk, __sk_common.skc_state);
	if (state == TCP_CLOSE && bpf_map_delete_elem(&sockets, &key) == 0) {
		st->abortive = 1;
		emit(sk, cookie, NM_CONN_CLOSE, NM_DIR_INBOUND, st, 0, btf);
	}
}

/*
 * Fallback accept variant: accept()/accept4() return in the accepting thread with the new
 * descriptor. Resolve it through the task's descriptor table (files->fdt->fd[fd]->private_data is
 * the struct socket) to the accepted connection's struct sock, so the event carries the
 * connection's own addresses and cookie and the accepting process. The table is RCU-protected;
 * probe reads of a concurrently replaced entry are safe, and the socket checks below reject
 * anything that is not a TCP socket.
 */
static __always_inline void on_accept_return(long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt;
	struct file **fds;
	struct file *file;
	struct socket *sock;
	struct sock *sk;

	if (fd < 0)
		return;
	fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		goto no_sock;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_core_read(&file, sizeof(file), &fds[fd]) || !file)
		goto no_sock;
	sock = BPF_CORE_READ(file, private_data);
	if (!sock)
		goto no_sock;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		goto no_sock;
	on_accepted(sk, BPF_CORE_READ(sk, __sk_common.skc_cookie.counter), fd, 0);
	return;

no_sock:
	count(NM_CNT_ACCEPT_NO_SOCK);
}

/*
 * Preferred accept variant: fexit on inet_csk_accept(), the TCP accept of every caller (the
 * accept syscalls, io_uring, in-kernel users), in the accepting task, with the new socket as its
 * return value (NULL on failure). Needs BPF trampolines (5.5+) and a kernel that allows them
 * (lockdown or an LSM may refuse fexit). The signature changed in 6.10; the agent loads the
 * program matching the running kernel's BTF.
 */
static __always_inline void on_csk_accept(struct sock *newsk)
{
	if (!newsk)
		return;
	/* The child is complete and queued, its cookie copied from the request socket: assigning
	 * one now is final. Without the helper (5.10, 5.11), read what the socket has. */
	if (accept_assigns_cookie)
		on_accepted(newsk, bpf_get_socket_cookie(newsk), -1, NM_BTF_SOCK);
	else
		on_accepted(newsk, newsk->__sk_common.skc_cookie.counter, -1, NM_BTF_SOCK);
}

/* Up to 6.9: struct sock *inet_csk_accept(struct sock *sk, int flags, int *err, bool kern). */
SEC("fexit/inet_csk_accept")
int BPF_PROG(handle_inet_csk_accept_fexit, struct sock *sk, int flags, int *err, bool kern,
	     struct sock *newsk)
{
	on_csk_accept(newsk);
	return 0;
}

/* 6.10+: struct sock *inet_csk_accept(struct sock *sk, struct proto_accept_arg *arg). */
SEC("fexit/inet_csk_accept")
int BPF_PROG(handle_inet_csk_accept_fexit_arg, struct sock *sk, void *arg, struct sock *newsk)
{
	on_csk_accept(newsk);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int handle_sys_exit_accept4(struct syscall_exit_ctx *ctx)
{
	on_accept_return(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int handle_sys_exit_accept(struct syscall_exit_ctx *ctx)
{
	on_accept_return(ctx->ret);
	return 0;
}

/*
 * The accept syscalls' numbers of the architecture compiled for (the kernel's
 * include/uapi/asm-generic/unistd.h for arm64, arch/x86/entry/syscalls/syscall_64.tbl), and the
 * syscall number and 32-bit-ness of the current syscall from the registers it saved. A 32-bit
 * task's numbers are another table's (ia32, AArch32: 43 and 202 are other syscalls there), so its
 * syscalls are left out: the variant does not see a 32-bit process's accepts. x32 syscalls carry
 * __X32_SYSCALL_BIT and match neither number.
 */
#if defined(__TARGET_ARCH_x86)
#define NM_NR_ACCEPT  43
#define NM_NR_ACCEPT4 288
#define NM_TS_COMPAT  0x0002 /* arch/x86/include/asm/thread_info.h */

static __always_inline long syscall_nr(struct pt_regs *regs)
{
	return ((struct pt_regs___netmon_x86 *)regs)->orig_ax;
}

static __always_inline bool compat_syscall(struct pt_regs *regs)
{
	struct task_struct___netmon_x86 *task = (void *)bpf_get_current_task();

	return BPF_CORE_READ(task, thread_info.status) & NM_TS_COMPAT;
}
#elif defined(__TARGET_ARCH_arm64)
#define NM_NR_ACCEPT	  202
#define NM_NR_ACCEPT4	  242
#define NM_PSR_MODE32_BIT 0x10 /* arch/arm64/include/uapi/asm/ptrace.h: compat_user_mode() */

static __always_inline long syscall_nr(struct pt_regs *regs)
{
	return ((struct pt_regs___netmon_arm64 *)regs)->syscallno;
}

static __always_inline bool compat_syscall(struct pt_regs *regs)
{
	return ((struct pt_regs___netmon_arm64 *)regs)->pstate & NM_PSR_MODE32_BIT;
}
#else
#error "the accept hook's sys_exit variant needs the syscall numbers of this architecture"
#endif

/*
 * Last-resort accept variant: the BTF-typed raw_syscalls:sys_exit tracepoint, at the return of
 * every syscall of the machine, in the calling thread, with its saved registers and return value.
 * Only accept()/accept4() of a 64-bit task go on, to what the tracepoint variant does with the
 * new descriptor. Unlike the syscalls:sys_exit_accept{,4} tracepoints it is attached without a
 * perf event (BPF_RAW_TRACEPOINT_OPEN), which perf_event_paranoid does not govern. The registers
 * are a BTF pointer (tp_btf): the syscall number is a direct load, the cheap first test that
 * every other syscall stops at.
 */
SEC("tp_btf/sys_exit")
int BPF_PROG(handle_sys_exit_btf, struct pt_regs *regs, long ret)
{
	long nr = syscall_nr(regs);

	if (nr != NM_NR_ACCEPT && nr != NM_NR_ACCEPT4)
		return 0;
	if (compat_syscall(regs))
		return 0;
	on_accept_return(ret);
	return 0;
}

#endif /* NETMON_BPF_SENSORS_ACCEPT_BPF_H */
