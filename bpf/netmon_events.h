/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one header shared by the BPF programs and the C++ agent: every record the kernel side
 * writes to the ring buffer, with fixed-width fields and explicit padding. C++ checks the sizes
 * with static_assert (agent/events/decode.cpp); the decoder checks a record's size before it
 * copies it.
 *
 * Compatibility rules: record types and counter indexes are never reused or renumbered; a record
 * only grows at its end, and its size is in its header.
 */
#ifndef NETMON_BPF_NETMON_EVENTS_H
#define NETMON_BPF_NETMON_EVENTS_H

#ifndef __bpf__
#include <linux/types.h>
#endif

#define NM_COMM_LEN 16
#define NM_ADDR_LEN 16

/* What a record is; the first field of every record's header. */
enum nm_record_type {
	NM_REC_CONNECTION = 1, /* struct nm_conn_record */
};

/* What happened to a connection (nm_conn_record.kind). */
enum nm_conn_kind {
	NM_CONN_ESTABLISH = 1, /* outbound handshake completed (SYN_SENT -> ESTABLISHED) */
	NM_CONN_ACCEPT = 2,    /* accept()/accept4() returned the connection to a process */
	NM_CONN_CLOSE = 3,     /* a connection reported open reached CLOSE */
	NM_CONN_FAILED = 4,    /* outbound connect ended before the handshake (SYN_SENT -> CLOSE) */
};

/* Which side opened the connection (nm_conn_record.direction). */
enum nm_direction {
	NM_DIR_OUTBOUND = 1, /* this host connected */
	NM_DIR_INBOUND = 2,  /* this host accepted */
};

/* nm_conn_record.flags */
enum nm_conn_flags {
	/* The owner block holds the process that opened the connection. Clear when the connection
	 * was opened before netmon attached and its first state change ran in softirq context. */
	NM_CONN_F_OWNER_KNOWN = 1 << 0,
};

/* Address family in records: the values of AF_INET and AF_INET6. IPv4-mapped IPv6 connections
 * are recorded as AF_INET with plain IPv4 addresses. */
#define NM_AF_INET  2
#define NM_AF_INET6 10

/* Indexes of the kernel-side counters (per-CPU array "counters"). Never renumber. */
enum nm_counter {
	NM_CNT_RINGBUF_FULL = 0,   /* a record was dropped: no ring buffer space */
	NM_CNT_SOCKETS_FULL = 1,   /* a connection could not be tracked: "sockets" map full */
	NM_CNT_OWNER_UNKNOWN = 2,  /* connection reported without its process (opened pre-attach) */
	NM_CNT_ACCEPT_NO_SOCK = 3, /* accept() returned an fd whose socket could not be read */
	NM_CNT__MAX = 4,
};

/* Common header of every record. */
struct nm_header {
	__u16 type;	/* enum nm_record_type */
	__u16 size;	/* size of the whole record in bytes, header included */
	__u32 reserved; /* zero */
	__u64 ts_ns;	/* CLOCK_BOOTTIME of the event, ns (bpf_ktime_get_boot_ns) */
};

/* A task as the kernel saw it when it opened or accepted a connection. */
struct nm_task {
	__u32 pid;  /* thread group id (user-space "pid") */
	__u32 tid;  /* thread id */
	__u32 ppid; /* real parent's thread group id */
	__u32 uid;  /* real uid */
	__u32 euid;
	__u32 gid;
	__u32 egid;
	__u32 auid;	     /* login uid; 4294967295 when unset or unknown */
	__u64 start_ns;	     /* thread group leader's start, CLOCK_BOOTTIME ns */
	__u64 cgroup_id;     /* cgroup v2 id (inode of the cgroup directory) */
	__u64 cap_effective; /* capability bit sets */
	__u64 cap_permitted;
	__u64 cap_inheritable;
	char comm[NM_COMM_LEN]; /* thread's command name, NUL padded */
};

/* One connection event: NM_REC_CONNECTION. */
struct nm_conn_record {
	struct nm_header hdr;
	struct nm_task task;	 /* owner of the connection (valid with NM_CONN_F_OWNER_KNOWN) */
	__u64 cookie;		 /* kernel socket cookie (the `sk:` of `ss -e`) */
	__u8 saddr[NM_ADDR_LEN]; /* local address: first 4 bytes for AF_INET, network order */
	__u8 daddr[NM_ADDR_LEN]; /* remote address */
	__u16 sport;		 /* local port, host order */
	__u16 dport;		 /* remote port, host order */
	__u8 family;		 /* NM_AF_INET or NM_AF_INET6 */
	__u8 kind;		 /* enum nm_conn_kind */
	__u8 direction;		 /* enum nm_direction */
	__u8 flags;		 /* enum nm_conn_flags */
	__s32 error;		 /* NM_CONN_FAILED: positive errno (0: given up locally); else 0 */
	__u32 pad;		 /* zero */
};

#endif /* NETMON_BPF_NETMON_EVENTS_H */
