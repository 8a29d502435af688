/* Firewall maps (the only place their names are defined; user space keeps
 * the same names in pybpfnet.dataplanes._fw_abi).
 *
 * Every rule-set table exists twice, in slots 0 and 1 (index = slot *
 * size + i; LPM tag byte = slot << 2 | tag). A packet reads the active
 * generation once from fw_state and uses slot gen & 1 for everything. User
 * space writes a new rule set into the other slot, then stores the new
 * generation. Before it rewrites a slot it waits for an RCU grace period by
 * updating fw_barrier (a map-in-map update waits for running programs,
 * kernel/bpf/syscall.c maybe_wait_bpf_programs(), Linux >= 5.1): packets
 * that started under the older generation have then finished, so a packet
 * only ever sees one complete rule set. */
#ifndef FW_MAPS_H
#define FW_MAPS_H

#include "fw_structs.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fw_state);
} fw_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 2 * FW_LPM_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fw_lpm_key);
	__type(value, struct fw_bitmap);
} fw_lpm SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * FW_LPM_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fw_prefix_key);
	__type(value, struct fw_bitmap);
} fw_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * FW_MAX_CLASSES);
	__type(key, __u32);
	__type(value, struct fw_bitmap);
} fw_classes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * FW_MAX_RULES);
	__type(key, __u32);
	__type(value, struct fw_rule);
} fw_rules SEC(".maps");

/* Per slot: [0, FW_MAX_RULES) deciding rules, then count rules, then
 * enum fw_reason. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2 * FW_CNT_ENTRIES);
	__type(key, __u32);
	__type(value, struct fw_counter);
} fw_counters SEC(".maps");

/* Token buckets of rate_limit rules, per (bucket, source address). Not
 * per slot: a rule kept across updates keeps its buckets. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fw_bucket_key);
	__type(value, struct fw_bucket);
} fw_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FW_NEVENTS);
	__type(key, __u32);
	__type(value, __u64);
} fw_events SEC(".maps");

struct fw_barrier_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
};

/* Never used by the programs: user space updates it to wait for a grace
 * period. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct fw_barrier_inner);
} fw_barrier SEC(".maps");

#endif
