/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The kernel types netmon's BPF programs read, declared by hand instead of a generated
 * vmlinux.h (see docs/architecture.md, "How kernel types reach the BPF compiler").
 *
 * Every struct here is a CO-RE *view*: it names only the fields netmon reads, and the
 * preserve_access_index attribute makes clang record each access as a relocation by field name.
 * libbpf resolves those names against the running kernel's BTF (/sys/kernel/btf/vmlinux) at load
 * time, so offsets, sizes and the presence of fields come from the kernel the agent runs on, not
 * from the machine that built it. A field that a kernel lacks fails the load with a message naming
 * the field, unless the code guards it with bpf_core_field_exists().
 */
#ifndef NETMON_BPF_KERNEL_TYPES_H
#define NETMON_BPF_KERNEL_TYPES_H

#include <linux/types.h>
#include <linux/bpf.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef _Bool bool;
#define true 1
#define false 0

/* TCP states (include/net/tcp_states.h); a stable part of the kernel ABI (ss prints them). */
enum {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT = 2,
	TCP_SYN_RECV = 3,
	TCP_FIN_WAIT1 = 4,
	TCP_FIN_WAIT2 = 5,
	TCP_TIME_WAIT = 6,
	TCP_CLOSE = 7,
	TCP_CLOSE_WAIT = 8,
	TCP_LAST_ACK = 9,
	TCP_LISTEN = 10,
	TCP_CLOSING = 11,
	TCP_NEW_SYN_RECV = 12,
};

#define ECONNRESET 104
#define EPIPE	   32
#define EEXIST	   17

#define AF_INET	    2
#define AF_INET6    10
#define IPPROTO_TCP 6

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__u32 u6_addr32[4];
	} in6_u;
};

typedef struct {
	s64 counter;
} atomic64_t;

typedef struct {
	u32 val;
} kuid_t;

typedef struct {
	u32 val;
} kgid_t;

/* A u64 since 6.3 ("capability: just use a 'u64' instead of a 'u32[2]' array"); before,
 * u32 cap[2]. Both are 8 bytes with bit 0 first on little-endian, so netmon reads
 * the field as 8 raw bytes located by name. */
typedef struct {
	u64 val;
} kernel_cap_t;

/* A network namespace's identity: its inode number (ls -l /proc/PID/ns/net). */
struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct sock_common {
	union {
		struct {
			__be32 skc_daddr;
			__be32 skc_rcv_saddr;
		};
	};
	union {
		struct {
			__be16 skc_dport;
			__u16 skc_num;
		};
	};
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	atomic64_t skc_cookie;
	unsigned long
	    skc_flags; /* sock's flags since 6.x moved them here ("sk_flags" is a macro) */
};

/* sk_protocol has been a plain u16 since 5.6 (it was an 8-bit bitfield before MPTCP needed more
 * room), below the 5.10 that netmon supports, so no bitfield read is needed. */
/* enum sock_flags: SOCK_DONE is set by tcp_fin() when the peer's FIN arrives. */
#define SOCK_DONE 1

struct sk_buff;

struct sk_buff_head {
	struct sk_buff *next;
	struct sk_buff *prev;
};

struct sock {
	struct sock_common __sk_common;
	unsigned long sk_flags; /* before the move into sock_common */
	int sk_err;
	int sk_err_soft; /* an ICMP error kept while the connection may still succeed */
	struct sk_buff_head sk_error_queue; /* ICMP errors queued for the socket (MSG_ERRQUEUE) */
	u16 sk_protocol;
	u16 sk_type;
};

struct sk_buff {
	char cb[48]; /* an error-queue skb's struct sock_exterr_skb */
};

/* An error-queue entry (include/linux/errqueue.h, uapi linux/errqueue.h), in its skb's cb. */
struct sock_extended_err {
	__u32 ee_errno;
	__u8 ee_origin; /* SO_EE_ORIGIN_ICMP (2), SO_EE_ORIGIN_ICMP6 (3), ... */
};

struct sock_exterr_skb {
	struct sock_extended_err ee;
};

/* inet_sport keeps the local port after CLOSE: tcp_set_state(TCP_CLOSE) releases the bound port
 * (inet_put_port() zeroes skc_num) before the tracepoint runs. */
struct inet_sock {
	struct sock sk;
	__be16 inet_sport;
};

/* Connection statistics read at close (the same fields tcplife and `ss -i` report). */
struct tcp_sock {
	u64 bytes_received; /* payload bytes received (RFC 4898 tcpEStatsAppHCThruOctetsReceived) */
	u64 bytes_sent;	    /* payload bytes transmitted, retransmissions included */
	u32 srtt_us;	    /* smoothed round-trip time, in 1/8 microseconds */
	u32 total_retrans;  /* segments retransmitted over the connection's life */
	u8 bpf_sock_ops_cb_flags; /* BPF_SOCK_OPS_*_CB_FLAG: the sock_ops callbacks turned on */
};

struct socket {
	struct sock *sk;
};

struct qstr {
	union {
		struct {
			u32 hash;
			u32 len;
		};
		u64 hash_len;
	};
	const unsigned char *name;
};

struct inode {
	unsigned int i_nlink;
};

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
	struct inode *d_inode;
};

struct vfsmount {
	struct dentry *mnt_root;
};

/* The kernel-internal mount a vfsmount is embedded in (fs/mount.h): walking a path up across
 * mount points needs mnt_parent and mnt_mountpoint. */
struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
};

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
};

struct file {
	struct path f_path;
	void *private_data;
};

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
	struct file *exe_file;
};

typedef struct {
	int counter;
} atomic_t;

struct signal_struct {
	atomic_t live; /* threads still running; 0 once the whole group is exiting */
};

struct linux_binprm {
	/* Set by cap_bprm_creds_from_file() (and LSMs) for a privilege-gaining exec, the AT_SECURE
	 * of the auxv: set-id files, and file capabilities that raise the permitted set of a
	 * process whose real uid is not root. A bitfield since 5.9: read with
	 * BPF_CORE_READ_BITFIELD_PROBED, which takes its position from the kernel's BTF. */
	unsigned int secureexec : 1;
	/* Personality flags cleared because the exec gained privilege: set by bprm_fill_uid() for
	 * set-id files and by cap_bprm_creds_from_file() when file capabilities add permitted
	 * capabilities (seen 0 for those on 6.18.44, where only secureexec shows them). */
	unsigned int per_clear;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct cred {
	kuid_t uid;
	kgid_t gid;
	kuid_t euid;
	kgid_t egid;
	kernel_cap_t cap_inheritable;
	kernel_cap_t cap_permitted;
	kernel_cap_t cap_effective;
};

/* A task's cgroup v2 (the default hierarchy's cgroup) and its id, the cgroup directory's inode
 * number: what bpf_get_current_cgroup_id() returns for the current task. */
struct kernfs_node {
	u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
};

struct css_set {
	struct cgroup *dfl_cgrp;
};

struct task_struct {
	int pid;
	int tgid;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	u64 start_boottime; /* since 5.5; netmon supports 5.10+ */
	const struct cred *cred;
	char comm[16];
	struct files_struct *files;
	struct mm_struct *mm;
	struct signal_struct *signal;
	kuid_t loginuid; /* only with CONFIG_AUDITSYSCALL: guarded by bpf_core_field_exists */
	struct css_set *cgroups;
};

/*
 * The registers a syscall saved (arch/<arch>/include/asm/ptrace.h) and what says whether it came
 * from a 32-bit task (x86: the thread's TS_COMPAT; arm64: the saved processor state), read by the
 * accept hook's sys_exit variant. One view per architecture, as CO-RE flavors: libbpf ignores the
 * "___netmon_<arch>" suffix and matches the kernel's struct pt_regs, thread_info and task_struct
 * (libbpf's bpf_tracing.h has views of its own named "___<arch>"); only the view of the
 * architecture compiled for (__TARGET_ARCH_*) is used.
 */
struct pt_regs___netmon_x86 {
	unsigned long orig_ax; /* the syscall number */
};

struct pt_regs___netmon_arm64 {
	u64 pstate; /* in an anonymous union with user_regs; PSR_MODE32_BIT: an AArch32 task */
	s32 syscallno;
};

struct thread_info___netmon_x86 {
	u32 status; /* TS_COMPAT: a 32-bit (ia32) syscall */
};

/* task_struct's first member with CONFIG_THREAD_INFO_IN_TASK (x86_64 always). */
struct task_struct___netmon_x86 {
	struct thread_info___netmon_x86 thread_info;
};

struct seq_file;

/* The context of the iter/task_file programs: each open file of each process. */
struct bpf_iter_meta {
	union {
		struct seq_file *seq;
	};
	u64 session_id;
	u64 seq_num;
};

struct bpf_iter__task_file {
	union {
		struct bpf_iter_meta *meta;
	};
	union {
		struct task_struct *task;
	};
	u32 fd;
	union {
		struct file *file;
	};
};

#pragma clang attribute pop

/* Context of the classic syscall exit tracepoints (events/syscalls/sys_exit_<name>/format):
 * the common header, the syscall number, and the return value. A fixed tracepoint ABI. */
struct syscall_exit_ctx {
	u64 common; /* struct trace_entry */
	int syscall_nr;
	long ret;
};

/* Context of the classic sock/inet_sock_set_state tracepoint
 * (events/sock/inet_sock_set_state/format), used only where tp_btf is unavailable. */
struct inet_sock_set_state_ctx {
	u64 common; /* struct trace_entry */
	const void *skaddr;
	int oldstate;
	int newstate;
	u16 sport;
	u16 dport;
	u16 family;
	u16 protocol;
	u8 saddr[4];
	u8 daddr[4];
	u8 saddr_v6[16];
	u8 daddr_v6[16];
};

#endif /* NETMON_BPF_KERNEL_TYPES_H */
