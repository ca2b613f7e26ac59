/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What the connection sensors share (sensors/connection_state.bpf.h and sensors/accept.bpf.h):
 * the connection record (emit(): addresses, and at the Close the connection's statistics and who
 * ended it) and the entries of the "sockets" map, where a connection's owner waits between its
 * open and its close (track(), built in a "scratch" slot: scratch_state()).
 * Counters: NM_CNT_UNOBSERVED, NM_CNT_SOCKETS_FULL (track()), NM_CNT_RINGBUF_FULL (emit()).
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
 * The observer, where attached, takes over the Establish and the Close or Failed
 * of the sockets whose state callbacks it turned on; the state tracepoint programs still record
 * the owner at connect(), which only a tracing program can. Each event is reported once whoever
 * runs.
 */
#ifndef NETMON_BPF_LIB_CONNECTIONS_BPF_H
#define NETMON_BPF_LIB_CONNECTIONS_BPF_H

#include "lib/records.bpf.h"

#include <bpf/bpf_endian.h>

static __always_inline bool is_v4_mapped(const u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

/* Copies the socket's addresses and ports into the record. IPv4-mapped IPv6 connections (an
 * AF_INET6 socket talking to ::ffff:a.b.c.d) are recorded once, as AF_INET: the kernel runs them
 * through the IPv4 code and keeps the IPv4 addresses in skc_daddr/skc_rcv_saddr. `btf`: see
 * NM_READ. */
static __always_inline void fill_addresses(struct nm_conn_record *r, const struct sock *sk, u32 btf)
{
	u16 family = NM_READ(btf & NM_BTF_SOCK, sk, __sk_common.skc_family);
	bool v4 = family == AF_INET;

	if (family == AF_INET6) {
		u32 daddr6[4];

		if (btf & NM_BTF_SOCK) {
			for (int i = 0; i < 4; i++)
				daddr6[i] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[i];
		} else {
			BPF_CORE_READ_INTO(&daddr6, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr32);
		}
		if (is_v4_mapped(daddr6)) {
			v4 = true;
		} else {
			r->family = NM_AF_INET6;
			__builtin_memcpy(r->daddr, daddr6, 16);
			if (btf & NM_BTF_SOCK) {
				u32 *saddr = (u32 *)r->saddr;

				for (int i = 0; i < 4; i++)
					saddr[i] =
					    sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			} else {
				BPF_CORE_READ_INTO(&r->saddr, sk,
						   __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
			}
		}
	}
	if (v4) {
		r->family = NM_AF_INET;
		*(u32 *)r->saddr = NM_READ(btf & NM_BTF_SOCK, sk, __sk_common.skc_rcv_saddr);
		*(u32 *)r->daddr = NM_READ(btf & NM_BTF_SOCK, sk, __sk_common.skc_daddr);
	}
	r->sport = NM_READ(btf & NM_BTF_SOCK, sk, __sk_common.skc_num);
	if (!r->sport) /* CLOSE: the port was released just before the tracepoint */
		r->sport =
		    bpf_ntohs(NM_READ(btf & NM_BTF_TCP, (const struct inet_sock *)sk, inet_sport));
	r->dport = bpf_ntohs(NM_READ(btf & NM_BTF_SOCK, sk, __sk_common.skc_dport));
}

/* Who sent a connection's first FIN, from a state of its socket (the one it leaves for CLOSE, or
 * the one it is in): the states after this host's FIN (FIN_WAIT1, FIN_WAIT2, CLOSING, TIME_WAIT),
 * those after the peer's (CLOSE_WAIT, LAST_ACK), 0 before any FIN. TCP's state machine has no
 * way from one group to the other, so the state at CLOSE tells, and nothing has to be recorded
 * when the FIN passes. */
static __always_inline u8 fin_side(int state)
{
	if (state == TCP_FIN_WAIT1 || state == TCP_FIN_WAIT2 || state == TCP_CLOSING ||
	    state == TCP_TIME_WAIT)
		return NM_CLOSED_BY_LOCAL;
	if (state == TCP_CLOSE_WAIT || state == TCP_LAST_ACK)
		return NM_CLOSED_BY_REMOTE;
	return 0;
}

/* struct sock's flags word: a field of its own until the kernel moved it into sock_common. */
static __always_inline unsigned long sock_flags(const struct sock *sk, u32 btf)
{
	if (bpf_core_field_exists(sk->__sk_common.skc_flags))
		return NM_READ(btf & NM_BTF_SOCK, sk, __sk_common.skc_flags);
	return NM_READ(btf & NM_BTF_SOCK, sk, sk_flags);
}

/*
 * Statistics of a connection at its CLOSE transition, and who ended it. A graceful close passes
 * through FIN_WAIT1 (this host sent the first FIN) or CLOSE_WAIT (the peer did), which the state
 * it leaves for CLOSE tells (fin_side(), in first_fin). Reaching CLOSE from ESTABLISHED, SYN_RECV
 * or CLOSE_WAIT, or with sk_err set, means a reset: tcp_reset() stores ECONNRESET (EPIPE in
 * CLOSE_WAIT) before the state change when a RST arrives; a local abort (close() with unread data,
 * SO_LINGER 0) sends one and leaves sk_err at 0.
 */
static __always_inline void fill_close_stats(struct nm_conn_record *r, const struct sock *sk,
					     const struct sock_state *st, u32 btf)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	int err = NM_READ(btf & NM_BTF_SOCK, sk, sk_err);

	r->open_ns = st->open_ns;
	r->bytes_sent = NM_READ(btf & NM_BTF_TCP, tp, bytes_sent);
	/* bytes_received counts the sequence space the peer's FIN takes (one byte) too. */
	r->bytes_received = NM_READ(btf & NM_BTF_TCP, tp, bytes_received);
	if ((sock_flags(sk, btf) & (1UL << SOCK_DONE)) && r->bytes_received > 0)
		r->bytes_received -= 1;
	r->srtt_us = NM_READ(btf & NM_BTF_TCP, tp, srtt_us) >> 3;
	r->retransmits = NM_READ(btf & NM_BTF_TCP, tp, total_retrans);
	r->reset = st->abortive || err == ECONNRESET || err == EPIPE;
	if (st->first_fin)
		r->closed_by = st->first_fin;
	else if (err == ECONNRESET || err == EPIPE)
		r->closed_by = NM_CLOSED_BY_REMOTE;
	else
		r->closed_by = NM_CLOSED_BY_LOCAL;
}

/* Emits one connection record. `st` may be NULL, or hold no owner (NM_CONN_F_OWNER_KNOWN unset):
 * the record then says the owner is unknown. Close records also take their statistics from it.
 * `accepted_fd`: see nm_conn_record (0 but for an Accept without a cookie). `btf`: see NM_READ.
 * Returns the record's time stamp (the open_ns of a connection it opens: one clock read fewer),
 * 0 when the ring buffer had no room. */
static __always_inline u64 emit_record(const struct sock *sk, u64 cookie, u8 kind, u8 direction,
				       const struct sock_state *st, s32 error, u32 accepted_fd,
				       u32 btf)
{
	struct nm_conn_record *r = reserve_record(sizeof(*r), NM_REC_CONNECTION);
	u64 ts;

	if (!r)
		return 0;
	ts = r->hdr.ts_ns;
	if (st && (st->flags & NM_CONN_F_OWNER_KNOWN)) {
		r->task = st->owner;
		r->flags |= NM_CONN_F_OWNER_KNOWN;
	}
	r->cookie = cookie;
	r->kind = kind;
	r->direction = direction;
	r->error = error;
	r->accepted_fd = accepted_fd;
	fill_addresses(r, sk, btf);
	if (kind == NM_CONN_CLOSE && st) {
		fill_close_stats(r, sk, st, btf);
		r->flags |= st->flags & NM_CONN_F_OPEN_FROM_AGENT;
	}
	bpf_ringbuf_submit(r, wakeup_flags(sizeof(*r)));
	return ts;
}

static __always_inline u64 emit(const struct sock *sk, u64 cookie, u8 kind, u8 direction,
				const struct sock_state *st, s32 error, u32 btf)
{
	return emit_record(sk, cookie, kind, direction, st, error, 0, btf);
}

/* The open_ns of a connection whose opening record `ts` stamped (0: none went out). */
static __always_inline u64 open_time(u64 ts)
{
	return ts ? ts : bpf_ktime_get_boot_ns();
}

static __always_inline struct sock_state *scratch_state(u32 slot)
{
	return bpf_map_lookup_elem(&scratch, &slot);
}

/* bpf_map_update_elem()'s result as the int the kernel's map code returned: up to at least 5.10
 * the helper's 64-bit return value holds it zero-extended (-EEXIST reads 4294967279 as a long),
 * so a comparison with a negative errno must be made on the 32-bit value. */
static __always_inline int map_update(void *map, const void *key, const void *value, u64 flags)
{
	return (int)bpf_map_update_elem(map, key, value, flags);
}

/* Whether entry `st`, found at a socket's address, belongs to an earlier socket there: the
 * cookies differ (0, not known yet, tells nothing). That socket was freed and its memory reused
 * without its end reaching any program (both copies of the state program skipped, or a
 * connection no program watched the end of): its last event is lost. */
static __always_inline bool stale_entry(const struct sock_state *st, u64 cookie)
{
	return cookie && st->cookie && st->cookie != cookie;
}

/* Removes the stale entry at `key` (stale_entry()), counting it as NM_CNT_UNOBSERVED once:
 * the delete decides between programs that meet it together. */
static __always_inline void drop_stale(u64 key)
{
	if (bpf_map_delete_elem(&sockets, &key) == 0)
		count(NM_CNT_UNOBSERVED);
}

/*
 * Inserts `st` as the entry of the socket at `key` unless one is there (BPF_NOEXIST). An entry
 * found there that belongs to an earlier connection is replaced: deleted (drop_stale(): the delete
 * decides who counts it) and the insert made again. Which entries are an earlier connection's:
 * - for the hooks (!only_stale), every entry but this connection's own (the other copy of the
 *   state program made it; without a cookie there is no telling, and it is replaced): a hook
 *   sees the connection open, so an entry there is one whose struct sock was freed and reused
 *   without its final transition reaching the hooks;
 * - for the start-up snapshot (only_stale), an entry stale_entry() proves earlier only: one
 *   without a cookie may be the hooks' own tracking of this connection, made meanwhile.
 * Returns the last insert's error: -EEXIST when an entry stays there, another error when the
 * map is full.
 */
static __always_inline int insert_entry(u64 key, const struct sock_state *st, bool only_stale)
{
	int err = map_update(&sockets, &key, st, BPF_NOEXIST);
	struct sock_state *found;

	if (err != -EEXIST)
		return err;
	found = bpf_map_lookup_elem(&sockets, &key);
	if (only_stale ? !(found && stale_entry(found, st->cookie))
		       : (found && st->cookie && found->cookie == st->cookie))
		return -EEXIST;
	drop_stale(key);
	return map_update(&sockets, &key, st, BPF_NOEXIST);
}

/* Starts tracking the connection of the socket at `key` (insert_entry()); an entry that stays
 * there is this connection's own, or another program tracked the socket meanwhile. */
static __always_inline void track(u64 key, const struct sock_state *st)
{
	int err = insert_entry(key, st, false);

	if (err && err != -EEXIST)
		count(NM_CNT_SOCKETS_FULL);
}

/* What became of claim_untracked(). */
enum nm_claim {
	NM_CLAIMED = 0,	      /* the record is reserved and the entry in */
	NM_CLAIM_NO_ROOM = 1, /* the ring buffer or the sockets map was full */
	NM_CLAIM_TRACKED = 2, /* tracked already: opened and reported meanwhile, or met twice */
};

/*
 * Reports a connection found outside the hooks (the start-up snapshot's two ways) exactly once:
 * reserves its record first, then inserts `st` as the socket's entry unless one is there
 * (BPF_NOEXIST), so that the state programs report its Close as any other, and a connection the
 * hooks reported meanwhile is not reported twice. A stale entry (stale_entry()) is replaced.
 * Returns the record to fill and submit, or NULL with *why set (a full sockets map also counts
 * NM_CNT_SOCKETS_FULL).
 */
static __always_inline struct nm_conn_record *claim_untracked(u64 key, const struct sock_state *st,
							      enum nm_claim *why)
{
	struct nm_conn_record *r = reserve_record(sizeof(*r), NM_REC_CONNECTION);
	int err;

	*why = NM_CLAIM_NO_ROOM;
	if (!r)
		return NULL;
	err = insert_entry(key, st, true);
	if (err) {
		if (bpf_map_lookup_elem(&sockets, &key)) {
			*why = NM_CLAIM_TRACKED;
		} else {
			count(NM_CNT_SOCKETS_FULL);
		}
		bpf_ringbuf_discard(r, BPF_RB_NO_WAKEUP);
		return NULL;
	}
	*why = NM_CLAIMED;
	return r;
}

#endif /* NETMON_BPF_LIB_CONNECTIONS_BPF_H */
