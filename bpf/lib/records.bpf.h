/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What every sensor uses to report: a fixed-size record reserved in the "events" ring buffer with
 * its header filled in (reserve_record()), submitted under the wakeup policy (wakeup_flags()); the
 * per-CPU loss counters (count(), indexes of enum nm_counter; NM_CNT_RINGBUF_FULL is counted here);
 * and the identity of a task as records carry it (fill_task(), fill_current_task()).
 */
#ifndef NETMON_BPF_LIB_RECORDS_BPF_H
#define NETMON_BPF_LIB_RECORDS_BPF_H

#include "lib/maps.bpf.h"

#include <bpf/bpf_core_read.h>

/* Set by the agent before load (read-only data): submit with a wakeup only once this much data
 * waits in the ring buffer; the agent polls with a timeout, which bounds the delivery delay of
 * smaller batches. 0: wake up on every record. */
const volatile __u64 wakeup_bytes = 0;

static __always_inline void count(u32 idx)
{
	u64 *value = bpf_map_lookup_elem(&counters, &idx);

	if (value)
		*value += 1; /* per-CPU slot: no other writer */
}

/*
 * One field of a kernel object: a plain load when `btf` (a constant at every call site) says the
 * pointer is one the verifier knows the type of (a tp_btf or fexit argument, a sock_ops program's
 * bpf_skc_to_tcp_sock(), bpf_get_current_task_btf()): it checks the access against the kernel's
 * BTF and the JIT turns it into one instruction that cannot fault. Otherwise a
 * bpf_probe_read_kernel() call, ~20-40 ns each, which every program type may make. The other
 * branch is removed by the compiler, so a program never holds a load the verifier would refuse.
 * The verifier checks a plain load against the type it knows, not the one the C code casts to:
 * fields of struct tcp_sock (or inet_sock) need a pointer it knows as one (NM_BTF_TCP), those of
 * struct sock one it knows as a struct sock or anything that begins with one (NM_BTF_SOCK).
 */
#define NM_READ(btf, ptr, field) ((btf) ? (ptr)->field : BPF_CORE_READ(ptr, field))

enum nm_btf {
	NM_BTF_SOCK = 1, /* the socket pointer is a BTF struct sock (or a tcp_sock) */
	NM_BTF_TCP = 2,	 /* the socket pointer is a BTF struct tcp_sock */
};

/* Set by the agent before load (read-only data): bpf_get_current_task_btf() exists (5.11+), so
 * the current task's fields are read with plain loads. Unset, the verifier never sees the call
 * (dead code for a read-only constant). */
const volatile bool task_btf = false;

/* Fills *t from `task` (a BTF pointer when `btf`). Only meaningful for a task whose identity is
 * the subject of the hook: in softirq "current" is an unrelated task, which is why the
 * state-change handlers take owners from the sockets map. The cgroup is the current task's (the
 * forking parent's for a new child, which inherits it). With a BTF pointer the capability sets
 * (8 bytes each: a u64 since 6.3, u32[2] before) and the name (16 bytes, NUL-terminated; the
 * agent reads it up to the NUL) are plain 8-byte loads too, which the verifier allows within an
 * array or struct member; otherwise probe reads. */
static __always_inline void fill_task_as(struct nm_task *t, struct task_struct *task, bool btf)
{
	const struct cred *cred = NM_READ(btf, task, cred);
	struct task_struct *parent = NM_READ(btf, task, real_parent);
	struct task_struct *leader = NM_READ(btf, task, group_leader);

	t->pid = NM_READ(btf, task, tgid);
	t->tid = NM_READ(btf, task, pid);
	t->ppid = NM_READ(btf, parent, tgid);
	t->uid = NM_READ(btf, cred, uid.val);
	t->euid = NM_READ(btf, cred, euid.val);
	t->gid = NM_READ(btf, cred, gid.val);
	t->egid = NM_READ(btf, cred, egid.val);
	t->auid = 0xffffffff;
	if (bpf_core_field_exists(task->loginuid))
		t->auid = NM_READ(btf, task, loginuid.val);
	t->start_ns = NM_READ(btf, leader, start_boottime);
	t->cgroup_id = bpf_get_current_cgroup_id();
	if (btf) {
		const u64 *comm = (const u64 *)task->comm;

		t->cap_effective = *(const u64 *)&cred->cap_effective;
		t->cap_permitted = *(const u64 *)&cred->cap_permitted;
		t->cap_inheritable = *(const u64 *)&cred->cap_inheritable;
		*(u64 *)&t->comm[0] = comm[0];
		*(u64 *)&t->comm[8] = comm[1];
		return;
	}
	bpf_core_read(&t->cap_effective, sizeof(t->cap_effective), &cred->cap_effective);
	bpf_core_read(&t->cap_permitted, sizeof(t->cap_permitted), &cred->cap_permitted);
	bpf_core_read(&t->cap_inheritable, sizeof(t->cap_inheritable), &cred->cap_inheritable);
	BPF_CORE_READ_STR_INTO(&t->comm, task, comm);
}

static __always_inline void fill_task(struct nm_task *t, struct task_struct *task)
{
	fill_task_as(t, task, false);
}

static __always_inline void fill_current_task(struct nm_task *t)
{
	if (task_btf)
		fill_task_as(t, bpf_get_current_task_btf(), true);
	else
		fill_task(t, (struct task_struct *)bpf_get_current_task());
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

#endif /* NETMON_BPF_LIB_RECORDS_BPF_H */
