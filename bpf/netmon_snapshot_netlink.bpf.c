// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The start-up snapshot's fallback (issue #21), where the task/file iterator of
 * netmon_snapshot.bpf.c cannot load (bpf_sock_from_file(), Linux 5.11; the kernel matrix's 5.10):
 * the agent enumerates the connections itself (sock_diag netlink in every network namespace, the
 * owners from a /proc fd scan: agent/bpf/snapshot_netlink.cpp) and hands them to this program in
 * batches, one BPF_PROG_TEST_RUN per batch (one program run per connection), in the
 * connections' network namespace. A BPF object of its own, loaded after the main one
 * (netmon.bpf.c) with its maps (events, sockets, counters: the agent hands their fds over before
 * load), as the iterator's is.
 *
 * Why a program at all: exactly once. The "sockets" map, where the state programs look for the
 * connection to report its Close, is keyed by the struct sock address, which user space cannot
 * know. This program finds the socket (bpf_sk_lookup_tcp() on the connection's addresses and
 * ports, in the namespace of the thread that runs it: test runs take the caller's), checks that
 * it is the connection the dump saw (the cookie: sock_diag made it, with the sock_gen_cookie()
 * of SO_COOKIE and bpf_get_socket_cookie()), and then does what the iterator does: reserves the
 * open record in the ring buffer first (a record reserved later, such as this connection's Close,
 * is read after it), adds the entry to "sockets" only if none is there (BPF_NOEXIST: a
 * connection the hooks saw open meanwhile has one, and is not reported again; the record is
 * discarded then), and submits. The state programs report its Close like any other's: nothing in
 * the main object changes, and its hot path costs nothing more.
 *
 * Why a test run of a tc (sched_cls) program: it is what has both bpf_sk_lookup_tcp() (4.20) and
 * BPF_PROG_TEST_RUN (the skb runs in the calling thread's network namespace, on its loopback), on
 * every kernel netmon supports; bpf_skc_to_tcp_sock() (networking programs since 5.10) gives the
 * struct sock itself, whose cookie is read directly (a BTF pointer: no bpf_probe_read_kernel(),
 * which networking programs only get later). The record's contents (addresses, owner,
 * statistics so far) come from the agent, which read them from sock_diag and /proc.
 */
#include "lib/maps.bpf.h"
#include "lib/connections.bpf.h"

/* What the agent hands over for one connection, in the one entry of "snapshot_input". */
struct snapshot_input {
	struct bpf_sock_tuple tuple; /* ingress view: saddr/sport the peer, daddr/dport this end */
	u32 ipv6;		     /* 0: tuple.ipv4, 1: tuple.ipv6 */
	u32 pad;
	u64 cookie;		      /* idiag_cookie */
	struct sock_state state;      /* the "sockets" entry (owner, direction, first FIN) */
	struct nm_conn_record record; /* the open record but its header and open_ns */
};

/* A batch of connections: one test run with `repeat` set to their number runs the program once
 * for each, in order (a test run allocates an skb and a socket: once per batch, not per
 * connection). */
#define SNAPSHOT_BATCH 256

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SNAPSHOT_BATCH);
	__type(key, u32);
	__type(value, struct snapshot_input);
} snapshot_input SEC(".maps");

/* The next entry of snapshot_input to report; the agent sets it to 0 before each batch. */
volatile __u32 snapshot_next = 0;

/* What this program did, for the agent's log and tests: indexes of enum snapshot_stat. */
enum snapshot_stat {
	SNAP_REPORTED = 0,	  /* connections reported */
	SNAP_TRACKED_ALREADY = 1, /* connections the hooks reported meanwhile */
	SNAP_GONE = 2,		  /* closed (or replaced) between the dump and this run */
	SNAP_NO_ROOM = 3,	  /* not reported: the ring buffer or the sockets map was full */
	SNAP__MAX = 4,
};

#include "lib/snapshot_stats.bpf.h"

/* Reports the connection of socket `key` (its struct sock address) once, as the iterator does. */
static __always_inline void report(struct snapshot_input *in, u64 key)
{
	struct nm_conn_record *r;
	enum nm_claim why;

	in->state.open_ns = bpf_ktime_get_boot_ns();
	r = claim_untracked(key, &in->state, &why);
	if (!r) {
		snapshot_count(why == NM_CLAIM_TRACKED ? SNAP_TRACKED_ALREADY : SNAP_NO_ROOM);
		return;
	}
	__builtin_memcpy((char *)r + sizeof(r->hdr), (char *)&in->record + sizeof(r->hdr),
			 sizeof(*r) - sizeof(r->hdr));
	r->open_ns = in->state.open_ns;
	snapshot_count(SNAP_REPORTED);
	bpf_ringbuf_submit(r, wakeup_flags(sizeof(*r)));
}

SEC("tc")
int snapshot_report(struct __sk_buff *skb)
{
	struct snapshot_input *in;
	struct bpf_sock *found;
	struct tcp_sock *tp;
	u32 next = snapshot_next;
	u64 cookie;

	if (next >= SNAPSHOT_BATCH)
		return 0;
	snapshot_next = next + 1; /* test runs of one batch run one after the other */
	in = bpf_map_lookup_elem(&snapshot_input, &next);
	if (!in)
		return 0;
	/* The established socket of these addresses and ports (a listener when there is none any
	 * more, told apart by its cookie); never a TIME_WAIT or request socket. */
	if (in->ipv6)
		found = bpf_sk_lookup_tcp(skb, &in->tuple, sizeof(in->tuple.ipv6),
					  BPF_F_CURRENT_NETNS, 0);
	else
		found = bpf_sk_lookup_tcp(skb, &in->tuple, sizeof(in->tuple.ipv4),
					  BPF_F_CURRENT_NETNS, 0);
	if (!found) {
		snapshot_count(SNAP_GONE);
		return 0;
	}
	tp = bpf_skc_to_tcp_sock(found);
	cookie = tp ? ((struct sock *)tp)->__sk_common.skc_cookie.counter : 0;
	if (tp && cookie == in->cookie)
		report(in, (u64)tp);
	else
		/* Closed since the dump, and its addresses taken by another socket (or by nothing
		 * but a listener): not reported, as the iterator does not report a socket closed
		 * before it met it. */
		snapshot_count(SNAP_GONE);
	/* Held until the entry is in: its address cannot be another socket's meanwhile. */
	bpf_sk_release(found);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
