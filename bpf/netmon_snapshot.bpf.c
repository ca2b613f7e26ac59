// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The start-up snapshot (issue #21): every TCP connection that existed before netmon attached,
 * reported once as an open event (NM_CONN_F_PREEXISTING) with its owner, and tracked so that its
 * Close is reported like any other. A BPF object of its own, loaded after the main one
 * (netmon.bpf.c) and sharing its maps (events, sockets, counters, scratch: the agent hands their
 * fds over before load), so that a kernel without what it needs (iter/task_file with
 * bpf_sock_from_file(), 5.11) loses the snapshot only.
 *
 * Why a task/file iterator: it walks every open file of every process, whatever the network
 * namespace, in one pass, and gives each socket with the process holding it (the owner) and its
 * struct sock (the cookie, the addresses, the statistics, the "sockets" map key). A socket no
 * process holds (closed by its owner, waiting out FIN_WAIT2 or TIME_WAIT) is not a connection
 * anyone owns any more and is left out.
 *
 * Two passes, set by the agent in snapshot_pass before each run of the iterator:
 *   1 (listeners)    every listening TCP socket goes into the "listeners" map, by network
 *                    namespace, family, address and port; and every connected socket that has
 *                    no cookie yet is written out (pid, fd) for the agent, which has the kernel
 *                    make it (getsockopt(SO_COOKIE) on a copy of the fd, pidfd_getfd()): an
 *                    iterator cannot call bpf_get_socket_cookie() on the socket of a file (the
 *                    verifier holds that pointer untrusted), and the state programs would make
 *                    one at the Close, different from the 0 the open event would have said;
 *   2 (connections)  every connected TCP socket (ESTABLISHED, FIN_WAIT1/2, CLOSE_WAIT, CLOSING,
 *                    LAST_ACK) is reported and tracked unless something tracks it already: an
 *                    Accept when a listener holds its local port (and its address, or the
 *                    wildcard) in its namespace, else an Establish. A SYN_SENT socket gets its
 *                    owner tracked, so that its Establish, when it comes, names it.
 * Exactly once: the record is reserved in the ring buffer first (a record reserved later, such as
 * this connection's Close, is read after it), then the entry is added to "sockets" only if none
 * is there (BPF_NOEXIST): a connection the hooks saw open meanwhile has one, and is not reported
 * again; the record is discarded then. A socket several processes hold is reported once, with the
 * first holder the iterator meets: the lowest pid, usually the process that opened it (its
 * children, which inherited it, came later), unless pids wrapped around.
 */
#include "lib/maps.bpf.h"
#include "lib/records.bpf.h"
#include "lib/connections.bpf.h"

/* Set by the agent before each run (.bss). */
volatile __u32 snapshot_pass = 0; /* 1: listeners, 2: connections */

enum snapshot_pass_kind {
	PASS_LISTENERS = 1,
	PASS_CONNECTIONS = 2,
};

struct listener_key {
	u32 netns;
	u16 family;
	u16 port;
	u8 addr[16]; /* zero: any address */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct listener_key);
	__type(value, u8);
} listeners SEC(".maps");

/* What the snapshot saw, for the agent's log and tests: indexes of enum snapshot_stat. */
enum snapshot_stat {
	SNAP_REPORTED = 0, /* connections reported */
	SNAP_TRACKED_ALREADY =
	    1,		     /* connections the hooks reported meanwhile (or a second holder) */
	SNAP_CONNECTING = 2, /* SYN_SENT sockets whose owner was tracked */
	SNAP_LISTENERS = 3,  /* listening sockets seen */
	SNAP_NO_ROOM = 4,    /* not reported: the ring buffer or the sockets map was full */
	SNAP__MAX = 5,
};

#include "lib/snapshot_stats.bpf.h"

/* The socket's local address and port as a listener key (IPv4 in the first 4 bytes). */
static __always_inline void local_key(struct listener_key *k, const struct sock *sk, u16 family)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	k->family = family;
	k->port = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (family == AF_INET6)
		BPF_CORE_READ_INTO(&k->addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
	else
		BPF_CORE_READ_INTO((u32 *)k->addr, sk, __sk_common.skc_rcv_saddr);
}

/* Whether a listener of the socket's namespace holds its local port, on its address or on all. */
static __always_inline bool accepted(const struct sock *sk, u16 family)
{
	struct listener_key k;

	local_key(&k, sk, family);
	if (bpf_map_lookup_elem(&listeners, &k))
		return true;
	__builtin_memset(k.addr, 0, sizeof(k.addr));
	return bpf_map_lookup_elem(&listeners, &k) != NULL;
}

static __always_inline void report(struct bpf_iter__task_file *ctx, struct task_struct *task,
				   struct sock *sk, int state, u16 family)
{
	struct nm_conn_record *r;
	enum nm_claim why;
	struct sock_state *st;
	u64 key = (u64)sk;
	u64 now = bpf_ktime_get_boot_ns();
	u64 cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	u8 direction;

	st = scratch_state(SLOT_SNAPSHOT);
	if (!st)
		return;
	__builtin_memset(st, 0, sizeof(*st));
	st->cookie = cookie;
	fill_task(&st->owner, task);
	st->owner.cgroup_id = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	st->flags = NM_CONN_F_OWNER_KNOWN;

	if (state == TCP_SYN_SENT) {
		/* Its Establish is still to come: remember its owner for it, report nothing now. */
		st->direction = NM_DIR_OUTBOUND;
		if (bpf_map_update_elem(&sockets, &key, st, BPF_NOEXIST) == 0)
			snapshot_count(SNAP_CONNECTING);
		return;
	}

	direction = accepted(sk, family) ? NM_DIR_INBOUND : NM_DIR_OUTBOUND;
	st->direction = direction;
	st->reported = 1;
	/* When the connection opened is not kept by the kernel (a socket inode's times are not set
	 * when it is made, and a recycled inode keeps an earlier socket's): durations count from
	 * the snapshot, and say so. */
	st->flags |= NM_CONN_F_PREEXISTING | NM_CONN_F_OPEN_FROM_AGENT;
	st->open_ns = now;
	st->first_fin = fin_side(state);

	r = claim_untracked(key, st, &why);
	if (!r) {
		snapshot_count(why == NM_CLAIM_TRACKED ? SNAP_TRACKED_ALREADY : SNAP_NO_ROOM);
		return;
	}
	r->task = st->owner;
	r->flags = st->flags;
	r->cookie = cookie;
	r->kind = direction == NM_DIR_INBOUND ? NM_CONN_ACCEPT : NM_CONN_ESTABLISH;
	r->direction = direction;
	fill_addresses(r, sk, 0);
	/* the statistics so far, open_ns; closed_by and reset unused */
	fill_close_stats(r, sk, st, 0);
	r->closed_by = 0;
	r->reset = 0;
	snapshot_count(SNAP_REPORTED);
	bpf_ringbuf_submit(r, wakeup_flags(sizeof(*r)));
	/* A line per report in the seq_file: its 32 KiB buffer ends a read() every ~2 000, and the
	 * agent waits for room in the ring buffer before the next. */
	struct {
		u64 cookie;
		u32 pid;
		u32 state;
	} line = {cookie, st->owner.pid, state};
	bpf_seq_write(ctx->meta->seq, &line, sizeof(line));
}

/* The states of a connection the snapshot reports (or, SYN_SENT, tracks); not LISTEN, CLOSE (not
 * connected), SYN_RECV/NEW_SYN_RECV (no file yet) or TIME_WAIT (no file any more). */
static __always_inline bool connected(int state)
{
	switch (state) {
	case TCP_ESTABLISHED:
	case TCP_SYN_SENT:
	case TCP_FIN_WAIT1:
	case TCP_FIN_WAIT2:
	case TCP_CLOSE_WAIT:
	case TCP_CLOSING:
	case TCP_LAST_ACK:
		return true;
	default:
		return false;
	}
}

SEC("iter/task_file")
int snapshot_task_file(struct bpf_iter__task_file *ctx)
{
	struct file *file = ctx->file;
	struct task_struct *task = ctx->task;
	struct socket *sock;
	struct sock *sk;
	struct listener_key k;
	u16 family;
	int state;
	u8 one = 1;

	if (!file || !task)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	sk = sock->sk;
	if (!sk)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if ((family != AF_INET && family != AF_INET6) ||
	    BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (snapshot_pass == PASS_LISTENERS) {
		if (state == TCP_LISTEN) {
			local_key(&k, sk, family);
			bpf_map_update_elem(&listeners, &k, &one, BPF_ANY);
			snapshot_count(SNAP_LISTENERS);
		} else if (connected(state) && !BPF_CORE_READ(sk, __sk_common.skc_cookie.counter)) {
			/* No cookie yet: the agent has one made (SO_COOKIE on a copy of the fd)
			 * before the second pass, so that this connection's events all carry the
			 * cookie its Close will. */
			struct {
				u32 pid;
				u32 fd;
			} line = {BPF_CORE_READ(task, tgid), ctx->fd};
			bpf_seq_write(ctx->meta->seq, &line, sizeof(line));
		}
		return 0;
	}
	if (snapshot_pass != PASS_CONNECTIONS)
		return 0;
	if (connected(state))
		report(ctx, task, sk, state, family);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
