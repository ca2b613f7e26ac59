/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The start-up snapshot's statistics, which the agent reads for its log and tests: an array of
 * counters indexed by the including object's enum snapshot_stat, which must be defined before
 * this header, with SNAP__MAX its size. Shared by both snapshot objects (netmon_snapshot.bpf.c,
 * the iterator; netmon_snapshot_netlink.bpf.c, the fallback), each with its own counters.
 */
#ifndef NETMON_BPF_LIB_SNAPSHOT_STATS_BPF_H
#define NETMON_BPF_LIB_SNAPSHOT_STATS_BPF_H

#include "lib/maps.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SNAP__MAX);
	__type(key, u32);
	__type(value, u64);
} snapshot_stats SEC(".maps");

static __always_inline void snapshot_count(u32 idx)
{
	u64 *value = bpf_map_lookup_elem(&snapshot_stats, &idx);

	if (value)
		__sync_fetch_and_add(value, 1);
}

#endif /* NETMON_BPF_LIB_SNAPSHOT_STATS_BPF_H */
