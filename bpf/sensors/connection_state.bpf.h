/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Sensor: connection state. Every state change of a TCP socket, which the lifecycle of
 * lib/connections.bpf.h turns into the owner remembered at connect() and the Establish, Failed
 * and Close of outbound connections (and the Close of accepted ones).
 *
 * Hooks, and the variants the loader picks between (its plan:
 * agent/bpf/sensors/connection_state.cpp):
 *   sock:inet_sock_set_state, every TCP state change with its struct sock:
 *     tp_btf      handle_inet_sock_set_state_btf and, attached after it,
 *                 handle_inet_sock_set_state_btf_nested: two copies of one program (see
 *                 state_copy()). Preferred: BTF-typed tracepoints (5.5+); it assigns cookies
 *                 where tracing programs may call bpf_get_socket_cookie() (5.12+).
 *     tracepoint  handle_inet_sock_set_state_tp, the classic tracepoint; it only reads cookies.
 *   sock_ops on the cgroup v2 root, optional (CAP_NET_ADMIN; the agent runs without them), the
 *   most capable that loads:
 *     observe_tcp_states  the TCP state observer: sees the state changes of connections opened
 *                         after it attached from TCP's own state callbacks, which the kernel
 *                         never skips, and assigns their cookies;
 *     assign_cookies      the cookie assigner, only where the observer cannot load and the state
 *                         hook cannot assign cookies;
 *     or none.
 *
 * Why these: the state tracepoint is stable, present where kprobes on tcp_v4_connect are not,
 * and the only place that sees the connecting task (the -> SYN_SENT change runs inside
 * connect()); the observer makes a connection's end independent of the tracing programs, which
 * the kernel skips now and then.
 *
 * Emits: NM_REC_CONNECTION records, kinds Establish (outbound), Failed and Close.
 * Maps: sockets, scratch (SLOT_STATE, SLOT_STATE_NESTED), state_running (its own), events,
 * counters. Counters: NM_CNT_SPARED, NM_CNT_OWNER_UNKNOWN, NM_CNT_UNOBSERVED, and those of
 * lib/connections.bpf.h. Set by the agent: state_assigns_cookie and fault_skip_state before load
 * (read-only data), observer_attached once the observer is attached.
 */
#ifndef NETMON_BPF_SENSORS_CONNECTION_STATE_BPF_H
#define NETMON_BPF_SENSORS_CONNECTION_STATE_BPF_H

#include "lib/connections.bpf.h"

#include <bpf/bpf_tracing.h>

/* Set by the agent before load (read-only data): the tp_btf state program may call
 * bpf_get_socket_cookie() (5.12+); on 5.5-5.11 it reads the cookie the socket has, which the
 * sock_ops program assigns. Unset, the verifier never sees the call (dead code for a read-only
 * constant). */
const volatile bool state_assigns_cookie = true;

/* Set by the agent once the TCP state observer is attached (see observe_tcp_states). */
volatile bool observer_attached = false;

/* Fault injection for tests (the agent's NETMON_FAULT_SKIP_STATE): the state tracepoint programs
 * ignore these changes (enum nm_fault bits), as when the kernel skips them. 0 in production, and
 * then dead code the verifier never sees. */
const volatile __u32 fault_skip_state = 0;

/* Per CPU: which copies of the tp_btf state program are running on this CPU (NM_COPY_FIRST,
 * NM_COPY_SECOND), interrupted by the run in progress, and the change the first copy handled
 * last. See state_copy(). */
enum nm_state_copy {
	NM_COPY_FIRST = 1,
	NM_COPY_SECOND = 2,
};

struct state_cpu {
	u32 running;	 /* enum nm_state_copy bits */
	u32 handled_old; /* the change the first copy completed last, unless handled_sk is 0 */
	u32 handled_new;
	u32 pad;
	u64 handled_sk;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct state_cpu);
} state_running SEC(".maps");

/* The changes the state machine acts on (on_state_change). The first FIN needs none: the state
 * a socket leaves for CLOSE tells who sent it (fin_side()). */
static __always_inline bool lifecycle_change(int oldstate, int newstate)
{
	return newstate == TCP_SYN_SENT || newstate == TCP_CLOSE ||
	       (oldstate == TCP_SYN_SENT && newstate == TCP_ESTABLISHED);
}

/* Whether fault injection has the state tracepoint programs ignore this change. */
static __always_inline bool fault_skipped(int oldstate, int newstate)
{
	if (!fault_skip_state)
		return false;
	if (newstate == TCP_SYN_SENT || (oldstate == TCP_SYN_SENT && newstate == TCP_ESTABLISHED))
		return fault_skip_state & NM_FAULT_OPEN;
	if (newstate == TCP_CLOSE)
		return fault_skip_state & NM_FAULT_END;
	return false;
}

/* CLOSE -> SYN_SENT, inside connect(): current is the connecting thread. Track its owner. A
 * copy that finds the connection tracked already (the other one's run) leaves the entry as it is:
 * track() looks only when its insert finds an entry, so the usual connect costs no lookup. */
static __always_inline void on_connect(const struct sock *sk, u64 cookie, u32 slot)
{
	u64 key = (u64)sk;
	struct sock_state *st;

	st = scratch_state(slot);
	if (!st)
		return;
	__builtin_memset(st, 0, sizeof(*st));
	st->cookie = cookie;
	fill_current_task(&st->owner);
	st->direction = NM_DIR_OUTBOUND;
	st->flags = NM_CONN_F_OWNER_KNOWN;
	track(key, st);
}

/* SYN_SENT -> ESTABLISHED: report the Establish once. `fresh` is room for an entry, used when
 * the connect() was not seen (it began before netmon attached, or no program saw it). */
static __always_inline void on_established(const struct sock *sk, u64 cookie,
					   struct sock_state *fresh, u32 btf)
{
	u64 key = (u64)sk;
	struct sock_state *st = bpf_map_lookup_elem(&sockets, &key);

	if (st && stale_entry(st, cookie)) {
		/* An earlier socket's: its `reported` and owner are not this connection's. */
		drop_stale(key);
		st = NULL;
	}
	if (st) {
		if (st->reported)
			return; /* another program reported it */
		st->reported = 1;
		st->open_ns =
		    open_time(emit(sk, cookie, NM_CONN_ESTABLISH, NM_DIR_OUTBOUND, st, 0, btf));
		return;
	}
	/* Report it without a process, and track it so that its Close is reported too. */
	count(NM_CNT_OWNER_UNKNOWN);
	__builtin_memset(fresh, 0, sizeof(*fresh));
	fresh->cookie = cookie;
	fresh->direction = NM_DIR_OUTBOUND;
	fresh->reported = 1;
	fresh->open_ns = bpf_ktime_get_boot_ns();
	track(key, fresh);
	emit(sk, cookie, NM_CONN_ESTABLISH, NM_DIR_OUTBOUND, fresh, 0, btf);
}

#define SO_EE_ORIGIN_ICMP  2
#define SO_EE_ORIGIN_ICMP6 3

/*
 * The errno of the oldest ICMP error in the socket's error queue, 0 when there is none. For
 * IPv4, tcp_v4_err() queues the ICMP error of a connect in SYN_SENT whatever IP_RECVERR says
 * (ip_icmp_error()), which wakes poll() with POLLERR. When the error arrived while connect() held
 * the socket (a local REJECT answers within the connect), it is otherwise kept only as the soft
 * error, which the application's SO_ERROR read takes (sk_err_soft is then 0) while the socket
 * stays in SYN_SENT: the queued error is what is left when the application closes it.
 */
static __always_inline int queued_icmp_error(const struct sock *sk)
{
	const struct sock_exterr_skb *serr;
	struct sk_buff *skb;
	u8 origin;

	if (!bpf_core_type_exists(struct sock_exterr_skb) ||
	    !bpf_core_field_exists(sk->sk_error_queue))
		return 0;
	skb = BPF_CORE_READ(sk, sk_error_queue.next);
	if (!skb || (void *)skb == (void *)&sk->sk_error_queue)
		return 0; /* the empty list points at its head */
	serr = (const void *)skb + bpf_core_field_offset(struct sk_buff, cb);
	origin = BPF_CORE_READ(serr, ee.ee_origin);
	if (origin != SO_EE_ORIGIN_ICMP && origin != SO_EE_ORIGIN_ICMP6)
		return 0;
	return BPF_CORE_READ(serr, ee.ee_errno);
}

/* -> CLOSE: report the Failed (from SYN_SENT) or the Close of a connection reported open, once. */
static __always_inline void on_close(const struct sock *sk, int oldstate, u64 cookie, u32 btf)
{
	u64 key = (u64)sk;
	struct sock_state *st = bpf_map_lookup_elem(&sockets, &key);
	struct sock_state closing;

	if (!st)
		return; /* never reported open: a listener, an unaccepted child, pre-attach */
	if (stale_entry(st, cookie)) {
		/* Not this socket's (a listener's, say, which is never tracked). */
		drop_stale(key);
		return;
	}
	closing = *st;
	if (!closing.first_fin)
		closing.first_fin = fin_side(oldstate);
	closing.abortive =
	    oldstate == TCP_ESTABLISHED || oldstate == TCP_SYN_RECV || oldstate == TCP_CLOSE_WAIT;
	/* The delete decides who reports the end of the connection when the accept() hook races
	 * with this CLOSE on another CPU, and between the programs that see the change: only the
	 * one whose delete succeeds emits. */
	if (bpf_map_delete_elem(&sockets, &key))
		return;
	if (oldstate == TCP_SYN_SENT) {
		/* tcp_done_with_error()/tcp_reset() store sk_err before moving to CLOSE. When the
		 * caller closes the socket instead, sk_err is 0, or was taken by its SO_ERROR read,
		 * unless an ICMP error arrived: the kernel keeps that as the soft error, which the
		 * connect saw (an IPv4 ICMP error that arrives while connect() holds the socket
		 * fails a non-blocking connect at once, and leaves the socket in SYN_SENT). */
		int err = NM_READ(btf & NM_BTF_SOCK, sk, sk_err);

		if (!err)
			err = NM_READ(btf & NM_BTF_SOCK, sk, sk_err_soft);
		if (!err)
			err = queued_icmp_error(sk);
		emit(sk, cookie, NM_CONN_FAILED, NM_DIR_OUTBOUND, &closing, err, btf);
	} else if (closing.reported) {
		emit(sk, cookie, NM_CONN_CLOSE, closing.direction, &closing, 0, btf);
	}
}

/*
 * The state machine shared by both variants of the inet_sock_set_state hook. `cookie` is the
 * socket cookie as the variant can obtain it; `btf`: see NM_READ.
 */
static __always_inline void on_state_change(const struct sock *sk, int oldstate, int newstate,
					    u64 cookie, u32 slot, u32 btf)
{
	struct sock_state *fresh;

	if (newstate == TCP_SYN_SENT) {
		on_connect(sk, cookie, slot);
	} else if (oldstate == TCP_SYN_SENT && newstate == TCP_ESTABLISHED) {
		fresh = scratch_state(slot);
		if (fresh)
			on_established(sk, cookie, fresh, btf);
	} else if (newstate == TCP_CLOSE) {
		on_close(sk, oldstate, cookie, btf);
	}
}

/*
 * Whether the TCP state observer handles this change of `sk`, so the state tracepoint programs
 * need not: it is attached and turned on the socket's state callbacks when the socket connected
 * or completed its passive handshake. tcp_set_state() then runs it before the tracepoint for
 * every change (all changes of such a socket go through tcp_set_state()), and the kernel never
 * skips it. The connect()'s own -> SYN_SENT change comes before the callbacks are on, and only a
 * tracing program can record the connecting task: that one is never left to the observer.
 */
static __always_inline bool observed(const struct sock *sk, int newstate, u32 btf)
{
	if (!observer_attached || newstate == TCP_SYN_SENT ||
	    !bpf_core_field_exists(((struct tcp_sock *)0)->bpf_sock_ops_cb_flags))
		return false;
	return NM_READ(btf & NM_BTF_TCP, (const struct tcp_sock *)sk, bpf_sock_ops_cb_flags) &
	       BPF_SOCK_OPS_STATE_CB_FLAG;
}

/* Whether the state tracepoint programs leave this change alone: the observer handles it, or
 * fault injection has them ignore it. */
static __always_inline bool left_to_observer(const struct sock *sk, int oldstate, int newstate,
					     u32 btf)
{
	return fault_skipped(oldstate, newstate) || observed(sk, newstate, btf);
}

/* Preferred variant: BTF-typed tracepoint (5.5+); bpf_get_socket_cookie() on a BTF socket
 * pointer needs 5.12. The cookie helper also assigns the cookie when the socket has none yet. */
static __always_inline void on_state_btf(const struct sock *sk, int oldstate, int newstate,
					 u32 slot)
{
	bool passive_child =
	    newstate == TCP_SYN_RECV || (oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED);
	u64 cookie;

	if (!lifecycle_change(oldstate, newstate) && !passive_child)
		return; /* checked first: it costs no read of the socket */
	if (passive_child && observer_attached)
		return; /* the observer assigns its cookie at PASSIVE_ESTABLISHED, before accept()
			 */
	if (sk->sk_protocol != IPPROTO_TCP || left_to_observer(sk, oldstate, newstate, NM_BTF_SOCK))
		return;
	if (state_assigns_cookie)
		cookie = bpf_get_socket_cookie((void *)sk);
	else
		cookie = sk->__sk_common.skc_cookie.counter;
	/*
	 * A passive child gets its cookie here, so that the accept() tracepoint, which can only
	 * read the field, finds it. It is born LISTEN -> SYN_RECV in inet_csk_clone_lock(), which
	 * up to at least 6.12 copies the request socket's cookie (usually 0) over sk_cookie *after*
	 * that state change; the SYN_RECV -> ESTABLISHED change of tcp_child_process() comes after
	 * the copy, and before accept() returns the child (inet_accept() locks the child, which the
	 * softirq holds until then). Both assign: whichever runs last wins, and both give the same
	 * value once one has (the helper keeps an existing cookie).
	 */
	if (passive_child)
		return;
	on_state_change(sk, oldstate, newstate, cookie, slot, NM_BTF_SOCK);
}

/*
 * The kernel runs a tracing program at most once per CPU at a time: when a softirq (or the
 * softirq work done on an interrupt's exit) changes a TCP state while the program runs in process
 * context on the same CPU, that nested run is skipped and only counted as a recursion miss: under
 * connection churn a few in ten thousand runs, each a lost event. So two copies of the program
 * are attached, each with its own recursion guard; whichever the kernel skips, the other takes
 * the change. Handling a change twice changes nothing: the first copy tracks a connect (the
 * second finds the entry, with this socket's cookie), reports an Establish once (the entry's
 * `reported`) and reports a Close once (only one delete of the entry succeeds).
 *
 * The second copy runs right after the first on the same CPU. It skips the work when the first
 * copy completed this very change: the first copy clears the per-CPU `handled` mark when it
 * starts and sets it to the change when it ends, and the second copy takes (and clears) the mark.
 * A mark equal to the change can only come from the first copy's run of it: had the first copy
 * been skipped, it was interrupted on this CPU, so its last start cleared the mark and no run of
 * it ended since. Runs nested in between clear or replace the mark, and the second copy then does
 * the work again, harmlessly.
 *
 * A change is lost only when both copies are skipped, and the TCP state observer, where
 * attached, makes up for that too (it runs first, from tcp_set_state()). A copy that runs while
 * the other is in progress on this CPU (interrupted, so the kernel skips it for this change)
 * counts the other's miss as spared; the agent reports the two copies' misses minus the spared
 * ones. (An interrupt in the few instructions between the kernel's recursion check and the
 * flag's update counts a miss that lost nothing: the figure is an upper bound.)
 */
static __always_inline void state_copy(u32 self, u32 other, const struct sock *sk, int oldstate,
				       int newstate, u32 slot)
{
	u32 zero = 0;
	struct state_cpu *cpu = bpf_map_lookup_elem(&state_running, &zero);
	bool done;
	u32 was;

	if (!cpu)
		return;
	done = self == NM_COPY_SECOND && cpu->handled_sk == (u64)sk &&
	       cpu->handled_old == (u32)oldstate && cpu->handled_new == (u32)newstate;
	cpu->handled_sk = 0; /* the first copy starts, or the second takes the mark */
	if (done)
		return;
	was = cpu->running;
	cpu->running = was | self;
	if (was & other)
		count(NM_CNT_SPARED);
	on_state_btf(sk, oldstate, newstate, slot);
	cpu->running = was;
	if (self == NM_COPY_FIRST) {
		cpu->handled_old = oldstate;
		cpu->handled_new = newstate;
		cpu->handled_sk = (u64)sk;
	}
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_inet_sock_set_state_btf, const struct sock *sk, int oldstate, int newstate)
{
	state_copy(NM_COPY_FIRST, NM_COPY_SECOND, sk, oldstate, newstate, SLOT_STATE);
	return 0;
}

/* The second copy (see above), attached after the first. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_inet_sock_set_state_btf_nested, const struct sock *sk, int oldstate,
	     int newstate)
{
	state_copy(NM_COPY_SECOND, NM_COPY_FIRST, sk, oldstate, newstate, SLOT_STATE_NESTED);
	return 0;
}

/* Fallback variant: the classic tracepoint. It cannot assign cookies, so it reports the cookie
 * the socket has (0 when nothing asked the kernel for one yet). */
SEC("tracepoint/sock/inet_sock_set_state")
int handle_inet_sock_set_state_tp(struct inet_sock_set_state_ctx *ctx)
{
	const struct sock *sk = ctx->skaddr;
	int newstate = ctx->newstate;
	int oldstate = ctx->oldstate;

	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	if (!lifecycle_change(oldstate, newstate) || left_to_observer(sk, oldstate, newstate, 0))
		return 0;
	on_state_change(sk, oldstate, newstate,
			(u64)BPF_CORE_READ(sk, __sk_common.skc_cookie.counter), SLOT_STATE, 0);
	return 0;
}

/*
 * Cookies where tracing programs cannot assign them (bpf_get_socket_cookie() in tracing programs
 * arrived in 5.12): a sock_ops program on the cgroup v2 root sees every TCP socket of every
 * cgroup, and may call the helper. It assigns the cookie when a connect() sends its SYN (before
 * the SYN_SENT -> ESTABLISHED change reads it) and when a passive connection completes its
 * handshake (before accept() returns it), so a state hook without the helper (the classic
 * tracepoint, or tp_btf before 5.12) reports the same cookies as one with it. Loaded only then.
 */
SEC("sockops")
int assign_cookies(struct bpf_sock_ops *skops)
{
	if (skops->op == BPF_SOCK_OPS_TCP_CONNECT_CB ||
	    skops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		bpf_get_socket_cookie(skops);
	return 1;
}

/*
 * The state observer: TCP's own state callbacks (BPF_SOCK_OPS_STATE_CB), for every socket that
 * connects or completes a passive handshake while it is attached (a sock_ops program on the cgroup
 * v2 root sees every TCP socket of every cgroup). The kernel runs them from tcp_set_state() itself,
 * just before the inet_sock_set_state tracepoint, in whatever context the change happens, and it
 * never skips a cgroup program: no recursion guard, no per-CPU "a BPF program is running" check.
 * The tracepoint programs are skipped now and then (nested runs; and on some hosts every change
 * made in a softirq over certain threads, which no tracing program sees at all), so this program
 * makes the connection's end independent of them: it reports the Establish of an outbound
 * connection and reports the Close or Failed, each exactly once with the
 * tracepoint programs (the entry's `reported` and the entry's delete decide, as between the two
 * copies). A connect() whose SYN went out before it was attached gets its callbacks when the
 * handshake completes (ACTIVE_ESTABLISHED); connections established before it was attached have
 * none: the tracepoint programs alone see their end.
 *
 * It also assigns the socket's cookie when a connect() sends its SYN and when a passive handshake
 * completes, as the cookie assigner does, for state hooks that cannot call the helper.
 */
/* Turns on the socket's state callbacks (BPF_SOCK_OPS_STATE_CB), unless they are on already. */
static __always_inline void watch_states(struct bpf_sock_ops *skops)
{
	u32 flags = skops->bpf_sock_ops_cb_flags;

	if (!(flags & BPF_SOCK_OPS_STATE_CB_FLAG))
		bpf_sock_ops_cb_flags_set(skops, flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

SEC("sockops")
int observe_tcp_states(struct bpf_sock_ops *skops)
{
	u32 op = skops->op;
	struct bpf_sock *bsk;
	const struct sock *sk;
	int oldstate, newstate;
	u64 cookie;

	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB || op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
		bpf_get_socket_cookie(skops);
		watch_states(skops);
		return 1;
	}
	if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		/* A connect() that sent its SYN before this program was attached has just completed
		 * (the tracepoint programs saw SYN_SENT -> ESTABLISHED): watch the rest of it. */
		watch_states(skops);
		return 1;
	}
	if (op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	oldstate = skops->args[0];
	newstate = skops->args[1];
	/* -> SYN_SENT again (a reconnect after tcp_disconnect()): left to the tracepoint. */
	if (newstate == TCP_SYN_SENT || !lifecycle_change(oldstate, newstate))
		return 1;
	bsk = skops->sk;
	if (!bsk)
		return 1;
	sk = (const struct sock *)bpf_skc_to_tcp_sock(bsk);
	if (!sk)
		return 1;
	/* Assigned when the callbacks were turned on, but for a connect() that sent its SYN before
	 * this program was attached: read it, and call the helper (which assigns) only then. */
	cookie = sk->__sk_common.skc_cookie.counter;
	if (!cookie)
		cookie = bpf_get_socket_cookie(skops);
	if (newstate == TCP_ESTABLISHED) {
		/* On the stack, not in a scratch slot: this program may run nested in itself. */
		struct sock_state fresh;

		on_established(sk, cookie, &fresh, NM_BTF_SOCK | NM_BTF_TCP);
	} else {
		on_close(sk, oldstate, cookie, NM_BTF_SOCK | NM_BTF_TCP);
	}
	return 1;
}

#endif /* NETMON_BPF_SENSORS_CONNECTION_STATE_BPF_H */
