/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The maps more than one sensor uses: the ring buffer every record goes into ("events"), the
 * connections being tracked ("sockets"), the loss counters ("counters", indexed by enum
 * nm_counter), and the scratch slots the connection sensors build an entry in ("scratch"). A
 * sensor's own maps live in its file under sensors/.
 *
 * They are defined here, together and first, because the order in which an object defines its maps
 * is the order libbpf lists them in, and the agent shows that list: the start-up log line "BPF
 * maps take ... (KiB: events ..., sockets ..., ...)" and netmon_bpf_map_memory_bytes. Keep the
 * order; a new map goes after the existing ones.
 */
#ifndef NETMON_BPF_LIB_MAPS_BPF_H
#define NETMON_BPF_LIB_MAPS_BPF_H

#include "kernel_types.h"

#include <bpf/bpf_helpers.h>

#include "netmon_events.h"

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
	u8 first_fin; /* enum nm_closed_by: who sent the first FIN (fin_side()), set at the end */
	u8 abortive;  /* set on the copy that reports a CLOSE reached without a FIN handshake */
	u8 pad[3];
};

/*
 * Owners are kept in a hash map keyed by the struct sock address, which is unique among live
 * sockets; entries are deleted at CLOSE, so the map holds one entry per live tracked connection
 * and its capacity (set by the agent before load) bounds memory, not correctness: a full map is
 * counted, never silent. The key is the address rather than the cookie because the classic
 * tracepoints (the fallback variants) cannot call bpf_get_socket_cookie(): a socket nothing has
 * asked for its cookie yet reads 0 there.
 *
 * Preallocated (every entry's memory taken when the map is made): an insert then takes an
 * element from a per-CPU free list and a delete gives it back. Without preallocation
 * (BPF_F_NO_PREALLOC, which the agent sets for preallocate_connections: false) each insert
 * allocates and each delete frees through RCU, which cost ~1.7 us of the ~7 us of BPF time a
 * connection took under a storm (docs/performance.md). A deleted element may be reused at once
 * by another CPU's insert: the programs copy an entry before they delete it, and only the
 * program whose delete succeeds reports from its copy.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144); /* resized by the agent before load */
	__type(key, u64);	     /* struct sock address */
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
	SLOT_STATE_NESTED = 1, /* the state program's nested copy (state_copy()) */
	SLOT_ACCEPT = 2,       /* the accept programs, process context */
	SLOT_SNAPSHOT = 3,     /* the start-up snapshot's iterator (netmon_snapshot.bpf.c) */
	SLOT__MAX = 4,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SLOT__MAX);
	__type(key, u32);
	__type(value, struct sock_state);
} scratch SEC(".maps");

#endif /* NETMON_BPF_LIB_MAPS_BPF_H */
