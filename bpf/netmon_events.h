/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one header shared by the BPF programs and the C++ agent: every record the kernel side
 * writes to the ring buffer, with fixed-width fields and explicit padding. C++ checks the sizes
 * with static_assert (agent/events/decode.cpp); the decoder checks a record's size before it
 * copies it.
 *
 * Compatibility rules: record types and counter indexes are never reused or renumbered; a record
 * only grows at its end, and its size is in its header. An agent reads a record longer than the
 * struct it knows as far as it knows it and rejects a shorter one; an exec record grows at the
 * end of its fixed part (hdr.size - path_len - args_len bytes, a multiple of 8), which the path
 * and the arguments follow.
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
	NM_REC_EXEC = 2,       /* struct nm_exec_record + path + args */
	NM_REC_FORK = 3,       /* struct nm_fork_record */
	NM_REC_EXIT = 4,       /* struct nm_exit_record */
};

/* Bounds of the variable parts of an exec record. */
#define NM_PATH_MAX 4096 /* executable path, as PATH_MAX */
#define NM_ARGS_MAX 1024 /* raw argv bytes (NUL separated, argv[0] included) */

/* nm_exec_record.secureexec: how the exec changed privileges. */
enum nm_secureexec {
	NM_SECUREEXEC_SETUID = 1 << 0,	      /* euid != uid after exec (set-user-id file) */
	NM_SECUREEXEC_SETGID = 1 << 1,	      /* egid != gid after exec (set-group-id file) */
	NM_SECUREEXEC_FILE_CAPS = 1 << 2,     /* file capabilities raised the permitted set */
	NM_SECUREEXEC_FILELESS_EXEC = 1 << 3, /* the executable has no link (memfd, deleted file) */
};

/* nm_exec_record.flags */
enum nm_exec_flags {
	NM_EXEC_F_PATH_TRUNCATED = 1 << 0, /* the path was longer than NM_PATH_MAX or too deep */
	NM_EXEC_F_ARGS_TRUNCATED = 1 << 1, /* argv was longer than NM_ARGS_MAX */
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
	/* Open events (Establish/Accept) of the start-up snapshot (netmon_snapshot.bpf.c): the
	 * connection existed before netmon attached. Such a record also carries the statistics so
	 * far (bytes_sent, bytes_received, srtt_us, retransmits), and open_ns, the snapshot's time.
	 */
	NM_CONN_F_PREEXISTING = 1 << 1,
	/* With NM_CONN_F_PREEXISTING on an open record, and on its Close: the kernel keeps no time
	 * of a connection's open; open_ns is the snapshot's time (the agent's start). */
	NM_CONN_F_OPEN_FROM_AGENT = 1 << 2,
};

/* nm_conn_record.closed_by: which side ended the connection first (Close only). */
enum nm_closed_by {
	NM_CLOSED_BY_LOCAL = 1,	 /* this host sent the first FIN, or aborted with a reset */
	NM_CLOSED_BY_REMOTE = 2, /* the peer sent the first FIN, or reset the connection */
};

/* Address family in records: the values of AF_INET and AF_INET6. IPv4-mapped IPv6 connections
 * are recorded as AF_INET with plain IPv4 addresses. */
#define NM_AF_INET  2
#define NM_AF_INET6 10

/* Changes the state tracepoint programs ignore under fault injection (tests only). */
enum nm_fault {
	NM_FAULT_OPEN =
	    1,		  /* -> SYN_SENT, SYN_SENT -> ESTABLISHED: a connect() and its completion */
	NM_FAULT_END = 2, /* -> CLOSE: the end */
};

/*
 * The kernel-side counters (per-CPU array "counters"), one row each: X(NAME, INDEX). The enum
 * nm_counter below is made from these rows; agent/events/counters.h names the loss stages that
 * read them. Never renumber; a new counter is a new row with the next index, plus its count().
 */
#define NM_COUNTERS(X)                                                                             \
	/* a record was dropped: no ring buffer space */                                           \
	X(NM_CNT_RINGBUF_FULL, 0)                                                                  \
	/* a connection could not be tracked: "sockets" map full */                                \
	X(NM_CNT_SOCKETS_FULL, 1)                                                                  \
	/* connection reported without its process (opened pre-attach) */                          \
	X(NM_CNT_OWNER_UNKNOWN, 2)                                                                 \
	/* accept() returned an fd whose socket could not be read */                               \
	X(NM_CNT_ACCEPT_NO_SOCK, 3)                                                                \
	/* a tracked connection's last transition never reached the hooks: found when its socket   \
	 * address was tracked again */                                                            \
	X(NM_CNT_UNOBSERVED, 4)                                                                    \
	/* recursion misses of one state-program copy that the other copy made up for: they lost   \
	 * nothing */                                                                              \
	X(NM_CNT_SPARED, 5)

/* Indexes of the kernel-side counters. */
/* clang-format off */
enum nm_counter {
#define NM_COUNTER_ENUM(name, index) name = index,
	NM_COUNTERS(NM_COUNTER_ENUM)
#undef NM_COUNTER_ENUM
	NM_CNT__MAX, /* one past the last index: the size of "counters" */
};
/* clang-format on */

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
	/* NM_CONN_ACCEPT without a cookie (the accept() tracepoints read the socket's, and one that
	 * waited in the queue from before netmon attached has none): the new descriptor + 1, so
	 * that the agent has the cookie made (SO_COOKIE); else 0. */
	__u32 accepted_fd;
	/* Connection statistics: NM_CONN_CLOSE only, zero otherwise. */
	__u64 open_ns;	      /* CLOCK_BOOTTIME when the connection was reported open */
	__u64 bytes_sent;     /* payload bytes transmitted (retransmissions included) */
	__u64 bytes_received; /* payload bytes received */
	__u32 srtt_us;	      /* smoothed round-trip time at close, microseconds */
	__u32 retransmits;    /* segments retransmitted */
	__u8 closed_by;	      /* enum nm_closed_by */
	__u8 reset;	      /* 1: the connection ended with a reset (sent or received) */
	__u8 pad2[6];	      /* zero */
};

/*
 * NM_REC_EXEC: a process image started (sched_process_exec). hdr.ts_ns is the exec time, which is
 * the process's start_time from then on. Followed by path_len bytes of the executable's path (no
 * NUL; symlinks resolved: it is the path of the file the kernel mapped) and args_len bytes of the
 * raw argv area (NUL separated, argv[0] included). hdr.size covers all three parts.
 */
struct nm_exec_record {
	struct nm_header hdr;
	struct nm_task task; /* the task after exec: its new credentials and capabilities */
	__u32 secureexec;    /* enum nm_secureexec */
	__u16 path_len;
	__u16 args_len;
	__u8 flags; /* enum nm_exec_flags */
	__u8 pad[7];
};

/* NM_REC_FORK: a new process (not a thread) was created (sched_process_fork). */
struct nm_fork_record {
	struct nm_header hdr;
	struct nm_task child;  /* child.ppid is the forking process; child.start_ns its start */
	__u64 parent_start_ns; /* start of the forking process, to tell it from a reused pid */
};

/* NM_REC_EXIT: the last thread of a process exited (sched_process_exit with the group dead). */
struct nm_exit_record {
	struct nm_header hdr;
	__u32 pid;
	__u32 pad;
	__u64 start_ns; /* to tell this process from a later one with the same pid */
};

#endif /* NETMON_BPF_NETMON_EVENTS_H */
