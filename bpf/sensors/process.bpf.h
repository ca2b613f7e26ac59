/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Sensor: process lifecycle. Exec, fork and exit feed the agent's process table.
 *
 * Hooks, and the variants the loader picks between (its plan: agent/bpf/sensors/process.cpp):
 *   sched:sched_process_exec, sched:sched_process_fork, sched:sched_process_exit, each as
 *     tp_btf  handle_sched_process_{exec,fork,exit}_btf: preferred, BTF-typed tracepoints (5.5+);
 *     raw_tp  handle_sched_process_{exec,fork,exit}_raw: the fallback, same arguments.
 *
 * Why these: the scheduler's tracepoints fire in the task at the moment that matters (exec: the
 * new image and credentials committed, argv resident; fork: in the parent; exit: every thread)
 * and are stable.
 *
 * Emits: NM_REC_EXEC (with the executable's path, walked here, and argv; wakes the reader at
 * once), NM_REC_FORK (processes, not threads), NM_REC_EXIT (the last thread of a process).
 * Maps: exec_scratch and path_scratch (its own), events, counters. Counters: NM_CNT_RINGBUF_FULL.
 */
#ifndef NETMON_BPF_SENSORS_PROCESS_BPF_H
#define NETMON_BPF_SENSORS_PROCESS_BPF_H

#include "lib/records.bpf.h"

#include <bpf/bpf_tracing.h>

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

#endif /* NETMON_BPF_SENSORS_PROCESS_BPF_H */
