// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * netmon's kernel side: the lifecycle of TCP connections and of processes, recorded into one ring
 * buffer ("events", records of netmon_events.h) for the agent.
 *
 * The hooks. Each of the first three has a preferred variant and a fallback that reports the same
 * events; the agent loads the preferred one where the kernel accepts it (docs/kernels.md):
 *   state    sock:inet_sock_set_state, every TCP state change with its struct sock: tp_btf, two
 *            copies (see state_copy()), or the classic tracepoint.
 *   accept   an accepted connection, in the accepting task: fexit on inet_csk_accept (also accepts
 *            made through io_uring or inside the kernel; the program matching the kernel's
 *            prototype), or the syscalls:sys_exit_accept{,4} tracepoints.
 *   process  sched:sched_process_exec/fork/exit, for the agent's process table: tp_btf or raw_tp.
 *   sock_ops on the cgroup v2 root: the TCP state observer (observe_tcp_states), which sees the
 *            state changes of connections opened after it attached from TCP's own state callbacks,
 *            which the kernel never skips, and assigns their cookies; or, where the observer
 *            cannot load and the state hook cannot assign cookies, the cookie assigner
 *            (assign_cookies). Both need CAP_NET_ADMIN; the agent runs without them.
 *
 * Why these: kprobes on tcp_v4_connect/inet_csk_accept break whenever those functions are renamed
 * or inlined and are not compiled into every kernel (the development machines have none); the
 * tracepoints are stable, present where kprobes are not, and need no trampoline, which lockdown or
 * an LSM may refuse (hence the syscall tracepoints behind the fexit accept program).
 *
 * The lifecycle, per socket:
 *   CLOSE -> SYN_SENT       runs inside connect(), in the connecting thread: remember the owner.
 *   SYN_SENT -> ESTABLISHED usually in softirq (the SYN-ACK arrived): emit Establish with the
 *                           remembered owner; "current" there is whatever task was interrupted.
 *   SYN_SENT -> CLOSE       the connect failed (RST: ECONNREFUSED; ICMP error: its errno;
 *                           retries exhausted: ETIMEDOUT; closed by the caller first: error 0,
 *                           or the ICMP error it saw): emit Failed, forget the socket.
 *   accept completes        in the accepting thread (inet_csk_accept() or accept() returns):
 *                           emit Accept for the accepted socket (not the listener), remember the
 *                           owner.
 *   any -> CLOSE            for a socket netmon reported open: emit Close with the remembered
 *                           owner, forget the socket.
 * The observer, where attached, takes over the Establish, the first FIN and the Close or Failed
 * of the sockets whose state callbacks it turned on; the state tracepoint programs still record
 * the owner at connect(), which only a tracing program can. Each event is reported once whoever
 * runs.
 *
 * Owners are kept in a hash map keyed by the struct sock address, which is unique among live
 * sockets; entries are deleted at CLOSE, so the map holds one entry per live tracked connection
 * and its capacity (set by the agent before load) bounds memory, not correctness: a full map is
 * counted, never silent. The key is the address rather than the cookie because the classic
 * tracepoints (the fallback variants) cannot call bpf_get_socket_cookie(): a socket nothing has
 * asked for its cookie yet reads 0 there.
 */
#include "kernel_types.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "netmon_events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the agent before load (read-only data). */
/* Submit with a wakeup only once this much data waits in the ring buffer; the agent polls with a
 * timeout, which bounds the delivery delay of smaller batches. 0: wake up on every record. */
const volatile __u64 wakeup_bytes = 0;
/* The fexit accept program may call bpf_get_socket_cookie() (tracing programs: 5.12+). The agent
 * sets it when the tp_btf state program, which needs the same helper, loaded. */
const volatile bool accept_assigns_cookie = false;
/* The tp_btf state program may call bpf_get_socket_cookie() (5.12+); on 5.5-5.11 it reads the
 * cookie the socket has, which the sock_ops program assigns. Unset, the verifier never sees the
 * call (dead code for a read-only constant). */
const volatile bool state_assigns_cookie = true;
/* Set by the agent once the TCP state observer is attached (see observe_tcp_states). */
volatile bool observer_attached = false;
/* Fault injection for tests (the agent's NETMON_FAULT_SKIP_STATE): the state tracepoint programs
 * ignore these changes (enum nm_fault bits), as when the kernel skips them. 0 in production, and
 * then dead code the verifier never sees. */
const volatile __u32 fault_skip_state = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024); /* resized by the agent before load */
} events SEC(".maps");

/* What netmon remembers about a connection between its open and its close. */
struct sock_state {
	struct nm_task owner;
	u64 open_ns;  /* when the Establish/Accept was emitted */
	u64 cookie;   /* the socket's cookie when tracked (0: not known), tells this connection's
		       * entry from a stale one of an earlier socket at the same address */
	u8 direction; /* enum nm_direction */
	u8 flags;     /* enum nm_conn_flags */
	u8 reported;  /* an Establish/Accept went out: the Close must follow */
	u8 first_fin; /* enum nm_closed_by: who sent the first FIN, 0 while nobody has */
	u8 abortive;  /* set on the copy that reports a CLOSE reached without a FIN handshake */
	u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* memory follows the number of live connections */
	__uint(max_entries, 262144);	      /* resized by the agent before load */
	__type(key, u64);		      /* struct sock address */
	__type(value, struct sock_state);
} sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NM_CNT__MAX);
	__type(key, u32);
	__type(value, u64);
} counters SEC(".maps");

/* Scratch space for building a sock_state (too big for the 512-byte stack next to a record), one
 * slot per program that may run nested in another on the same CPU: a softirq can interrupt the
 * state program or the accept program in process context and run the state program again. */
enum scratch_slot {
	SLOT_STATE = 0,	       /* the state program, process or softirq context */
	SLOT_STATE_NESTED = 1, /* the state program's nested copy (see below) */
	SLOT_ACCEPT = 2,       /* the accept programs, process context */
	SLOT__MAX = 3,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SLOT__MAX);
	__type(key, u32);
	__type(value, struct sock_state);
} scratch SEC(".maps");

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

static __always_inline void count(u32 idx)
{
	u64 *value = bpf_map_lookup_elem(&counters, &idx);

	if (value)
		*value += 1; /* per-CPU slot: no other writer */
}

/* Fills *t from `task`. Only meaningful for a task whose identity is the subject of the hook: in
 * softirq "current" is an unrelated task, which is why the state-change handlers take owners from
 * the sockets map. The cgroup is the current task's (the forking parent's for a new child, which
 * inherits it). */
static __always_inline void fill_task(struct nm_task *t, struct task_struct *task)
{
	const struct cred *cred = BPF_CORE_READ(task, cred);

	t->pid = BPF_CORE_READ(task, tgid);
	t->tid = BPF_CORE_READ(task, pid);
	t->ppid = BPF_CORE_READ(task, real_parent, tgid);
	t->uid = BPF_CORE_READ(cred, uid.val);
	t->euid = BPF_CORE_READ(cred, euid.val);
	t->gid = BPF_CORE_READ(cred, gid.val);
	t->egid = BPF_CORE_READ(cred, egid.val);
	t->auid = 0xffffffff;
	if (bpf_core_field_exists(task->loginuid))
		t->auid = BPF_CORE_READ(task, loginuid.val);
	t->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	t->cgroup_id = bpf_get_current_cgroup_id();
	bpf_core_read(&t->cap_effective, sizeof(t->cap_effective), &cred->cap_effective);
	bpf_core_read(&t->cap_permitted, sizeof(t->cap_permitted), &cred->cap_permitted);
	bpf_core_read(&t->cap_inheritable, sizeof(t->cap_inheritable), &cred->cap_inheritable);
	BPF_CORE_READ_STR_INTO(&t->comm, task, comm);
}

static __always_inline void fill_current_task(struct nm_task *t)
{
	fill_task(t, (struct task_struct *)bpf_get_current_task());
}

static __always_inline bool is_v4_mapped(const u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

/* Copies the socket's addresses and ports into the record. IPv4-mapped IPv6 connections (an
 * AF_INET6 socket talking to ::ffff:a.b.c.d) are recorded once, as AF_INET: the kernel runs them
 * through the IPv4 code and keeps the IPv4 addresses in skc_daddr/skc_rcv_saddr. */
static __always_inline void fill_addresses(struct nm_conn_record *r, const struct sock *sk)
{
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	bool v4 = family == AF_INET;

	if (family == AF_INET6) {
		u32 daddr6[4];

		BPF_CORE_READ_INTO(&daddr6, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr32);
		if (is_v4_mapped(daddr6)) {
			v4 = true;
		} else {
			r->family = NM_AF_INET6;
			__builtin_memcpy(r->daddr, daddr6, 16);
			BPF_CORE_READ_INTO(&r->saddr, sk,
					   __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		}
	}
	if (v4) {
		r->family = NM_AF_INET;
		BPF_CORE_READ_INTO((u32 *)r->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((u32 *)r->daddr, sk, __sk_common.skc_daddr);
	}
	r->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (!r->sport) /* CLOSE: the port was released just before the tracepoint */
		r->sport = bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
	r->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
}

/* struct sock's flags word: a field of its own until the kernel moved it into sock_common. */
static __always_inline unsigned long sock_flags(const struct sock *sk)
{
	if (bpf_core_field_exists(sk->__sk_common.skc_flags))
		return BPF_CORE_READ(sk, __sk_common.skc_flags);
	return BPF_CORE_READ(sk, sk_flags);
}

/*
 * Statistics of a connection at its CLOSE transition, and who ended it. A graceful close passes
 * through FIN_WAIT1 (this host sent the first FIN) or CLOSE_WAIT (the peer did), which the state
 * hook records in first_fin. Reaching CLOSE from ESTABLISHED, SYN_RECV or CLOSE_WAIT, or with
 * sk_err set, means a reset: tcp_reset() stores ECONNRESET (EPIPE in CLOSE_WAIT) before the state
 * change when a RST arrives; a local abort (close() with unread data, SO_LINGER 0) sends one
 * and leaves sk_err at 0.
 */
static __always_inline void fill_close_stats(struct nm_conn_record *r, const struct sock *sk,
					     const struct sock_state *st)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	int err = BPF_CORE_READ(sk, sk_err);

	r->open_ns = st->open_ns;
	r->bytes_sent = BPF_CORE_READ(tp, bytes_sent);
	/* bytes_received counts the sequence space the peer's FIN takes (one byte) too. */
	r->bytes_received = BPF_CORE_READ(tp, bytes_received);
	if ((sock_flags(sk) & (1UL << SOCK_DONE)) && r->bytes_received > 0)
		r->bytes_received -= 1;
	r->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	r->retransmits = BPF_CORE_READ(tp, total_retrans);
	r->reset = st->abortive || err == ECONNRESET || err == EPIPE;
	if (st->first_fin)
		r->closed_by = st->first_fin;
	else if (err == ECONNRESET || err == EPIPE)
		r->closed_by = NM_CLOSED_BY_REMOTE;
	else
		r->closed_by = NM_CLOSED_BY_LOCAL;
}

/*
 * The ring buffer's wakeup policy, for a record of `size` bytes just reserved: wake the reader
 * once per wakeup_bytes of backlog, when this record's bytes (with the ring buffer's 8-byte
 * header, rounded to 8) cross a multiple of it. Waking on every record past the mark, until the
 * woken reader caught up, raised an interrupt per record (irq_work: an inter-processor interrupt,
 * a costly MSR write in a VM), about 7 % of a connection storm's CPU time. Concurrent producers
 * can both miss a crossing: the next one, or the reader's 100 ms poll timeout, bounds the delay.
 */
static __always_inline u64 wakeup_flags(u64 size)
{
	u64 span = (size + 8 + 7) & ~7ULL;
	u64 avail;

	if (!wakeup_bytes)
		return 0;
	avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	if (avail / wakeup_bytes != (avail > span ? avail - span : 0) / wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/* Reserves a zeroed fixed-size record with its header filled in; counts a full ring buffer. */
static __always_inline void *reserve_record(u64 size, u16 type)
{
	struct nm_header *hdr = bpf_ringbuf_reserve(&events, size, 0);

	if (!hdr) {
		count(NM_CNT_RINGBUF_FULL);
		return NULL;
	}
	__builtin_memset(hdr, 0, size);
	hdr->type = type;
	hdr->size = size;
	hdr->ts_ns = bpf_ktime_get_boot_ns();
	return hdr;
}

/* Emits one connection record. `st` may be NULL, or hold no owner (NM_CONN_F_OWNER_KNOWN unset):
 * the record then says the owner is unknown. Close records also take their statistics from it. */
static __always_inline void emit(const struct sock *sk, u64 cookie, u8 kind, u8 direction,
				 const struct sock_state *st, s32 error)
{
	struct nm_conn_record *r = reserve_record(sizeof(*r), NM_REC_CONNECTION);

	if (!r)
		return;
	if (st && (st->flags & NM_CONN_F_OWNER_KNOWN)) {
		r->task = st->owner;
		r->flags |= NM_CONN_F_OWNER_KNOWN;
	}
	r->cookie = cookie;
	r->kind = kind;
	r->direction = direction;
	r->error = error;
	fill_addresses(r, sk);
	if (kind == NM_CONN_CLOSE && st)
		fill_close_stats(r, sk, st);
	bpf_ringbuf_submit(r, wakeup_flags(sizeof(*r)));
}

/* The changes the state machine acts on (on_state_change). */
static __always_inline bool lifecycle_change(int oldstate, int newstate)
{
	return newstate == TCP_SYN_SENT || newstate == TCP_FIN_WAIT1 ||
	       newstate == TCP_CLOSE_WAIT || newstate == TCP_CLOSE ||
	       (oldstate == TCP_SYN_SENT && newstate == TCP_ESTABLISHED);
}

/* Whether fault injection has the state tracepoint programs ignore this change. */
static __always_inline bool fault_skipped(int oldstate, int newstate)
{
	if (!fault_skip_state)
		return false;
	if (newstate == TCP_SYN_SENT || (oldstate == TCP_SYN_SENT && newstate == TCP_ESTABLISHED))
		return fault_skip_state & NM_FAULT_OPEN;
	if (newstate == TCP_FIN_WAIT1 || newstate == TCP_CLOSE_WAIT || newstate == TCP_CLOSE)
		return fault_skip_state & NM_FAULT_END;
	return false;
}

static __always_inline struct sock_state *scratch_state(u32 slot)
{
	return bpf_map_lookup_elem(&scratch, &slot);
}

/* Whether the connection of socket `key` with cookie `cookie` is tracked already (by the other
 * copy of the state program). Without a cookie there is no telling: false. */
static __always_inline bool tracked_already(u64 key, u64 cookie)
{
	struct sock_state *st;

	if (!cookie)
		return false;
	st = bpf_map_lookup_elem(&sockets, &key);
	return st && st->cookie == cookie;
}

/*
 * Starts tracking the connection of the socket at `key`. An entry of another socket already
 * there belongs to an earlier connection whose struct sock was freed and reused without its final
 * transition reaching the hooks (both copies of the state program skipped, or the connection's
 * CLOSE was never seen): its last event is lost. Count it, then replace the entry.
 */
static __always_inline void track(u64 key, const struct sock_state *st)
{
	long err = bpf_map_update_elem(&sockets, &key, st, BPF_NOEXIST);

	if (err == -EEXIST) {
		if (tracked_already(key, st->cookie))
			return;
		count(NM_CNT_UNOBSERVED);
		err = bpf_map_update_elem(&sockets, &key, st, BPF_ANY);
	}
	if (err)
		count(NM_CNT_SOCKETS_FULL);
}

/* CLOSE -> SYN_SENT, inside connect(): current is the connecting thread. Track its owner. */
static __always_inline void on_connect(const struct sock *sk, u64 cookie, u32 slot)
{
	u64 key = (u64)sk;
	struct sock_state *st;

	if (tracked_already(key, cookie))
		return;
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

/* The first FIN: sent by this host (-> FIN_WAIT1) or received (-> CLOSE_WAIT). */
static __always_inline void on_first_fin(const struct sock *sk, int newstate)
{
	u64 key = (u64)sk;
	struct sock_state *st = bpf_map_lookup_elem(&sockets, &key);

	if (st && !st->first_fin)
		st->first_fin =
		    newstate == TCP_FIN_WAIT1 ? NM_CLOSED_BY_LOCAL : NM_CLOSED_BY_REMOTE;
}

/* SYN_SENT -> ESTABLISHED: report the Establish once. `fresh` is room for an entry, used when
 * the connect() was not seen (it began before netmon attached, or no program saw it). */
static __always_inline void on_established(const struct sock *sk, u64 cookie,
					   struct sock_state *fresh)
{
	u64 key = (u64)sk;
	struct sock_state *st = bpf_map_lookup_elem(&sockets, &key);

	if (st) {
		if (st->reported)
			return; /* another program reported it */
		st->reported = 1;
		st->open_ns = bpf_ktime_get_boot_ns();
		emit(sk, cookie, NM_CONN_ESTABLISH, NM_DIR_OUTBOUND, st, 0);
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
	emit(sk, cookie, NM_CONN_ESTABLISH, NM_DIR_OUTBOUND, fresh, 0);
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
static __always_inline void on_close(const struct sock *sk, int oldstate, u64 cookie)
{
	u64 key = (u64)sk;
	struct sock_state *st = bpf_map_lookup_elem(&sockets, &key);
	struct sock_state closing;

	if (!st)
		return; /* never reported open: a listener, an unaccepted child, pre-attach */
	if (cookie && st->cookie && st->cookie != cookie) {
		/* An entry of an earlier socket at this address whose last change never
		 * reached the hooks (as track() finds them): its Close is lost, and it is not
		 * this socket's (a listener's, say, which is never tracked). Counted once: the
		 * delete decides. */
		if (bpf_map_delete_elem(&sockets, &key) == 0)
			count(NM_CNT_UNOBSERVED);
		return;
	}
	closing = *st;
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
		int err = BPF_CORE_READ(sk, sk_err);

		if (!err)
			err = BPF_CORE_READ(sk, sk_err_soft);
		if (!err)
			err = queued_icmp_error(sk);
		emit(sk, cookie, NM_CONN_FAILED, NM_DIR_OUTBOUND, &closing, err);
	} else if (closing.reported) {
		emit(sk, cookie, NM_CONN_CLOSE, closing.direction, &closing, 0);
	}
}

/*
 * The state machine shared by both variants of the inet_sock_set_state hook. `cookie` is the
 * socket cookie as the variant can obtain it.
 */
static __always_inline void on_state_change(const struct sock *sk, int oldstate, int newstate,
					    u64 cookie, u32 slot)
{
	struct sock_state *fresh;

	if (newstate == TCP_SYN_SENT) {
		on_connect(sk, cookie, slot);
	} else if (newstate == TCP_FIN_WAIT1 || newstate == TCP_CLOSE_WAIT) {
		on_first_fin(sk, newstate);
	} else if (oldstate == TCP_SYN_SENT && newstate == TCP_ESTABLISHED) {
		fresh = scratch_state(slot);
		if (fresh)
			on_established(sk, cookie, fresh);
	} else if (newstate == TCP_CLOSE) {
		on_close(sk, oldstate, cookie);
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
static __always_inline bool observed(const struct sock *sk, int newstate)
{
	if (!observer_attached || newstate == TCP_SYN_SENT ||
	    !bpf_core_field_exists(((struct tcp_sock *)0)->bpf_sock_ops_cb_flags))
		return false;
	return BPF_CORE_READ((const struct tcp_sock *)sk, bpf_sock_ops_cb_flags) &
	       BPF_SOCK_OPS_STATE_CB_FLAG;
}

/* Whether the state tracepoint programs leave this change alone: the observer handles it, or
 * fault injection has them ignore it. */
static __always_inline bool left_to_observer(const struct sock *sk, int oldstate, int newstate)
{
	return fault_skipped(oldstate, newstate) || observed(sk, newstate);
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
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP ||
	    left_to_observer(sk, oldstate, newstate))
		return;
	if (state_assigns_cookie)
		cookie = bpf_get_socket_cookie((void *)sk);
	else
		cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
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
	on_state_change(sk, oldstate, newstate, cookie, slot);
}

/*
 * The kernel runs a tracing program at most once per CPU at a time: when a softirq (or the
 * softirq work done on an interrupt's exit) changes a TCP state while the program runs in process
 * context on the same CPU, that nested run is skipped and only counted as a recursion miss: under
 * connection churn a few in ten thousand runs, each a lost event. So two copies of the program
 * are attached, each with its own recursion guard; whichever the kernel skips, the other takes
 * the change. Handling a change twice changes nothing: the first copy tracks a connect (the
 * second finds the entry, with this socket's cookie), reports an Establish once (the entry's
 * `reported`), records the first FIN once, and reports a Close once (only one delete of the entry
 * succeeds).
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
	if (!lifecycle_change(oldstate, newstate) || left_to_observer(sk, oldstate, newstate))
		return 0;
	on_state_change(sk, oldstate, newstate,
			(u64)BPF_CORE_READ(sk, __sk_common.skc_cookie.counter), SLOT_STATE);
	return 0;
}

/*
 * An accepted connection, in the accepting thread: emit Accept with the connection's own
 * addresses and cookie and the accepting process, and track the socket. Both accept variants end
 * here, so their events are the same.
 */
static __always_inline void on_accepted(struct sock *sk, u64 cookie)
{
	struct sock_state *st;
	u16 family;
	u64 key;
	u8 state;

	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP ||
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
	st->open_ns = bpf_ktime_get_boot_ns();
	emit(sk, cookie, NM_CONN_ACCEPT, NM_DIR_INBOUND, st, 0);
	track((u64)sk, st);

	/* The peer may have reset the connection while it waited in the accept queue, or may do so
	 * on another CPU right now: its CLOSE transition then found nothing to report. If the
	 * socket is closed, report the Close here, unless the state-change hook already took the
	 * entry (the delete decides). */
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state == TCP_CLOSE && bpf_map_delete_elem(&sockets, &key) == 0) {
		st->abortive = 1;
		emit(sk, cookie, NM_CONN_CLOSE, NM_DIR_INBOUND, st, 0);
	} else if (state == TCP_CLOSE_WAIT) {
		/* The peer's FIN arrived while the connection waited in the accept queue. */
		struct sock_state *tracked = bpf_map_lookup_elem(&sockets, &key);

		if (tracked && !tracked->first_fin)
			tracked->first_fin = NM_CLOSED_BY_REMOTE;
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
	on_accepted(sk, BPF_CORE_READ(sk, __sk_common.skc_cookie.counter));
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
		on_accepted(newsk, bpf_get_socket_cookie(newsk));
	else
		on_accepted(newsk, BPF_CORE_READ(newsk, __sk_common.skc_cookie.counter));
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
 * connection, records the first FIN, and reports the Close or Failed, each exactly once with the
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
	if (newstate == TCP_ESTABLISHED) {
		/* On the stack, not in a scratch slot: this program may run nested in itself. */
		struct sock_state fresh;

		on_established(sk, bpf_get_socket_cookie(skops), &fresh);
	} else if (newstate == TCP_CLOSE) {
		on_close(sk, oldstate, bpf_get_socket_cookie(skops));
	} else {
		on_first_fin(sk, newstate);
	}
	return 1;
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

/* ---- Process lifecycle: exec, fork, exit feed the agent's process table. ---- */

/* An exec record under construction, with room for its variable parts. */
struct exec_scratch {
	struct nm_exec_record rec;
	u8 data[NM_PATH_MAX + NM_ARGS_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct exec_scratch);
} exec_scratch SEC(".maps");

/* The path is assembled backwards, leaf first, in the first half of this buffer; the second half
 * is slack that lets the verifier accept "offset < NM_PATH_MAX plus a name of up to 255 bytes". */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u8[2 * NM_PATH_MAX]);
} path_scratch SEC(".maps");

#define NM_PATH_COMPONENTS 64  /* deeper paths are cut at the top and flagged truncated */
#define NM_NAME_MASK	   255 /* NAME_MAX */

/*
 * Writes the absolute path of `f` (within the caller's mount namespace tree) into `out`, as
 * d_path() would, by walking dentries up to each mount's root and crossing to the parent mount at
 * mount points. bpf_d_path() would do this for us but is only allowed in a few fentry/LSM hooks,
 * not in tracepoints. Returns the length; sets *truncated when the walk was cut short.
 */
static __always_inline u32 read_file_path(struct file *f, u8 *out, bool *truncated)
{
	u32 zero = 0;
	u8 *buf = bpf_map_lookup_elem(&path_scratch, &zero);
	struct dentry *dentry = BPF_CORE_READ(f, f_path.dentry);
	struct vfsmount *vfsmnt = BPF_CORE_READ(f, f_path.mnt);
	struct mount *mnt = (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt);
	u32 off = NM_PATH_MAX;
	u32 len;

	*truncated = false;
	if (!buf)
		return 0;
	for (int i = 0; i < NM_PATH_COMPONENTS; i++) {
		struct dentry *mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);
		struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
		bool pseudo;

		if (dentry == mnt_root) {
			struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);

			if (mnt == mnt_parent)
				goto done; /* the root of the tree */
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = mnt_parent;
			vfsmnt = &mnt->mnt;
			continue;
		}
		/* A dentry that is its own parent without being its mount's root belongs to no
		 * directory: the file of memfd_create() and other pseudo files. d_path() names it
		 * by itself, "/memfd:NAME (deleted)"; the walk does the same without the suffix, as
		 * the /proc scan does. */
		pseudo = dentry == parent;
		len = BPF_CORE_READ(dentry, d_name.len) & NM_NAME_MASK;
		if (len + 1 > off) {
			*truncated = true;
			goto done;
		}
		off -= len + 1;
		off &= NM_PATH_MAX - 1;
		buf[off] = '/';
		bpf_probe_read_kernel(&buf[off + 1], len, BPF_CORE_READ(dentry, d_name.name));
		if (pseudo)
			goto done;
		dentry = parent;
	}
	*truncated = true;
done:
	if (off == NM_PATH_MAX) {
		out[0] = '/';
		return 1;
	}
	len = (NM_PATH_MAX - off) & (NM_PATH_MAX - 1);
	if (len == 0) /* exactly NM_PATH_MAX bytes: keep the leaf-most NM_PATH_MAX - 1 */
		len = NM_PATH_MAX - 1, off = 1;
	bpf_probe_read_kernel(out, len, &buf[off & (NM_PATH_MAX - 1)]);
	return len;
}

/* Exec records wake the reader at once: the agent resolves the new process's cgroup while it
 * exists (a short-lived container's cgroup is removed right after its last process exits, before
 * a batched wakeup would have delivered the record). Execs are rare next to connections. */
static __always_inline void submit_exec(void *data, u64 size)
{
	if (bpf_ringbuf_output(&events, data, size, wakeup_bytes ? BPF_RB_FORCE_WAKEUP : 0))
		count(NM_CNT_RINGBUF_FULL);
}

/*
 * sched_process_exec fires in the task that exec'd, after the new image and its credentials are
 * committed (begin_new_exec) and before it returns to user space, so the new argv is resident on
 * its stack and mm->exe_file is the file /proc/PID/exe names (for a script: the interpreter).
 */
static __always_inline void on_exec(struct linux_binprm *bprm)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	struct file *exe = BPF_CORE_READ(mm, exe_file);
	struct exec_scratch *x;
	struct nm_exec_record *r;
	unsigned long arg_start, arg_end;
	bool path_truncated = false;
	u32 zero = 0;
	u32 path_len = 0;
	u32 args_len = 0;
	u64 size;

	x = bpf_map_lookup_elem(&exec_scratch, &zero);
	if (!x)
		return;
	r = &x->rec;
	__builtin_memset(r, 0, sizeof(*r));
	r->hdr.type = NM_REC_EXEC;
	r->hdr.ts_ns = bpf_ktime_get_boot_ns();
	fill_task(&r->task, task);

	if (r->task.euid != r->task.uid)
		r->secureexec |= NM_SECUREEXEC_SETUID;
	if (r->task.egid != r->task.gid)
		r->secureexec |= NM_SECUREEXEC_SETGID;
	/* Privilege gained (per_clear or secureexec) while the process stays unprivileged by id and
	 * holds permitted capabilities: they can only come from file capabilities. Either signal
	 * counts: on 6.18.44 an exec that gains file capabilities leaves per_clear 0 and sets only
	 * secureexec (tests/integration/test_process.py, test_exec_flags). */
	if ((BPF_CORE_READ(bprm, per_clear) || BPF_CORE_READ_BITFIELD_PROBED(bprm, secureexec)) &&
	    r->task.euid != 0 && r->task.cap_permitted != 0)
		r->secureexec |= NM_SECUREEXEC_FILE_CAPS;

	if (exe) {
		if (BPF_CORE_READ(exe, f_path.dentry, d_inode, i_nlink) == 0)
			r->secureexec |= NM_SECUREEXEC_FILELESS_EXEC;
		path_len = read_file_path(exe, x->data, &path_truncated) & (NM_PATH_MAX - 1);
		if (path_truncated)
			r->flags |= NM_EXEC_F_PATH_TRUNCATED;
	}

	arg_start = BPF_CORE_READ(mm, arg_start);
	arg_end = BPF_CORE_READ(mm, arg_end);
	if (arg_end > arg_start) {
		u64 n = arg_end - arg_start;

		if (n > NM_ARGS_MAX) {
			n = NM_ARGS_MAX;
			r->flags |= NM_EXEC_F_ARGS_TRUNCATED;
		}
		/* Keep clang from passing an unclamped copy: the verifier needs the bound on the
		 * register that reaches the helper. */
		barrier_var(n);
		n &= 2 * NM_ARGS_MAX - 1;
		if (bpf_probe_read_user(&x->data[path_len], n, (void *)arg_start) == 0)
			args_len = n;
	}
	r->path_len = path_len;
	r->args_len = args_len;
	size = sizeof(*r) + path_len + args_len;
	if (size > sizeof(*x))
		return;
	r->hdr.size = size;
	submit_exec(x, size);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_sched_process_exec_btf, struct task_struct *p, int old_pid,
	     struct linux_binprm *bprm)
{
	on_exec(bprm);
	return 0;
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(handle_sched_process_exec_raw, struct task_struct *p, int old_pid,
	     struct linux_binprm *bprm)
{
	on_exec(bprm);
	return 0;
}

/* sched_process_fork runs in the parent; threads (same thread group) are not processes. */
static __always_inline void on_fork(struct task_struct *parent, struct task_struct *child)
{
	struct nm_fork_record *r;

	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return;
	r = reserve_record(sizeof(*r), NM_REC_FORK);
	if (!r)
		return;
	fill_task(&r->child, child);
	r->parent_start_ns = BPF_CORE_READ(parent, group_leader, start_boottime);
	bpf_ringbuf_submit(r, wakeup_flags(sizeof(*r)));
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_sched_process_fork_btf, struct task_struct *parent, struct task_struct *child)
{
	on_fork(parent, child);
	return 0;
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(handle_sched_process_fork_raw, struct task_struct *parent, struct task_struct *child)
{
	on_fork(parent, child);
	return 0;
}

/* sched_process_exit fires for every exiting thread; the process is gone when its last thread
 * exits, which do_exit() has recorded by then in signal->live. */
static __always_inline void on_exit(struct task_struct *task)
{
	struct nm_exit_record *r;

	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return;
	r = reserve_record(sizeof(*r), NM_REC_EXIT);
	if (!r)
		return;
	r->pid = BPF_CORE_READ(task, tgid);
	r->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	bpf_ringbuf_submit(r, wakeup_flags(sizeof(*r)));
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_sched_process_exit_btf, struct task_struct *p)
{
	on_exit(p);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(handle_sched_process_exit_raw, struct task_struct *p)
{
	on_exit(p);
	return 0;
}
