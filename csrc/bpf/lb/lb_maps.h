/* pybpfnet L4 load balancer: maps (names kept in sync with
 * src/pybpfnet/dataplanes/_lb_abi.py). Sizes are defaults; user space
 * resizes them on the spec before load. */
#ifndef LB_MAPS_H
#define LB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb_structs.h"
#include "pybn_ct_structs.h"

/* (VIP, port, protocol) -> service id */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_SERVICES);
	__type(key, struct lb_vip_key);
	__type(value, __u32);
} lb_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct lb_service);
} lb_svc SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_VIP_ADDRS);
	__type(key, struct lb_addr_key);
	__type(value, __u32);
} lb_vip_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct lb_backend);
} lb_backends SEC(".maps");

/* One Maglev table per service id. A table change fills a fresh inner map
 * and swaps the outer slot with one update: a packet sees the old table or
 * the new one. BPF_F_INNER_MAP lets the inner maps differ in size
 * (Linux >= 5.10). */
struct lb_table_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LB_TABLE_HDR + 1);
	__uint(map_flags, BPF_F_INNER_MAP);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, LB_MAX_SERVICES);
	__type(key, __u32);
	__array(values, struct lb_table_inner);
} lb_tables SEC(".maps");

/* Flows (client -> VIP) and NAT reply tuples (backend -> client) in one
 * table: a packet of an established flow costs one hash lookup. Per-CPU
 * LRU lists (BPF_F_NO_COMMON_LRU, as Katran): no shared list lock. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LB_MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, struct lb_flow_key);
	__type(value, struct lb_flow);
} lb_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_config);
} lb_config SEC(".maps");

/* Backend addresses (-> number of backends with that address): with NAT
 * tracking, a packet to no service is looked up in the tracker only when
 * it comes from one of them (a reply). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, LB_MAX_BACKENDS);
	__type(key, struct lb_addr_key);
	__type(value, __u32);
} lb_be_addrs SEC(".maps");

/* Tracked NAT: the tracker's connection key -> backend id, service, client
 * MAC (user space sizes it as the tracker's two tables together, or 1 when
 * tracking is off). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536 + 16384);
	__type(key, struct ct_key);
	__type(value, struct lb_ct_peer);
} lb_ct_peers SEC(".maps");

/* lb_ct's working room (the stack of one XDP call chain is 512 bytes). */
struct lb_ct_scratch {
	struct ct_pkt cp;
	struct ct_tuple reply;
	struct ct_tuple out;
	struct lb_ct_peer peer;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_ct_scratch);
} lb_ct_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct lb_counters);
} lb_svc_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LB_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct lb_counters);
} lb_be_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_stats);
} lb_stats SEC(".maps");

#endif
