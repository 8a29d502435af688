/* pybpfnet connection tracking: maps and load-time configuration.
 *
 * Every object that includes pybn_conntrack.h gets its own tables under
 * these names (user space finds them by name: keep them in sync with
 * src/pybpfnet/dataplanes/_ct_abi.py). Sizes are defaults; user space
 * resizes the maps on the spec before load. */
#ifndef PYBN_CT_MAPS_H
#define PYBN_CT_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "pybn_ct_structs.h"

#ifndef PYBN_CT_ESTABLISHED_ENTRIES
#define PYBN_CT_ESTABLISHED_ENTRIES 65536
#endif
#ifndef PYBN_CT_EMBRYONIC_ENTRIES
#define PYBN_CT_EMBRYONIC_ENTRIES 16384
#endif
#ifndef PYBN_CT_EVENTS_BYTES
#define PYBN_CT_EVENTS_BYTES (256 * 1024)
#endif
#define PYBN_CT_REAP_BATCH 4096

/* Connections that completed a two-way exchange (TCP: assured; UDP and
 * ICMP: a packet from the originator after the reply). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PYBN_CT_ESTABLISHED_ENTRIES);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
} ct_established SEC(".maps");

/* Everything else: new, half-open, unanswered. A flood of new flows
 * evicts only from here. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PYBN_CT_EMBRYONIC_ENTRIES);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
} ct_embryonic SEC(".maps");

#ifdef PYBN_CT_NAT
/* Key of a NATed connection's reply tuple -> the connection's key. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PYBN_CT_ESTABLISHED_ENTRIES + PYBN_CT_EMBRYONIC_ENTRIES);
	__type(key, struct ct_key);
	__type(value, struct ct_key);
} ct_alias SEC(".maps");
#endif

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PYBN_CT_EVENTS_BYTES);
} ct_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_stats);
} ct_stats SEC(".maps");

/* Per-CPU room for building an entry (too big for the BPF stack twice). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ct_entry);
} ct_scratch SEC(".maps");

#define CT_SEC(s) ((s) * 1000U)

/* Defaults: nf_conntrack's per-state values (net/netfilter/
 * nf_conntrack_proto_{tcp,udp,icmp}.c), except established TCP, which
 * takes Cilium's 6 hours instead of 5 days (see docs/conntrack.md). */
const volatile struct ct_config ct_cfg = {
	.timeout_ms = {
		[CT_TO_SYN_SENT] = CT_SEC(120),
		[CT_TO_SYN_RECV] = CT_SEC(60),
		[CT_TO_ESTABLISHED] = CT_SEC(6 * 3600),
		[CT_TO_FIN_WAIT] = CT_SEC(120),
		[CT_TO_CLOSE_WAIT] = CT_SEC(60),
		[CT_TO_LAST_ACK] = CT_SEC(30),
		[CT_TO_TIME_WAIT] = CT_SEC(120),
		[CT_TO_CLOSE] = CT_SEC(10),
		[CT_TO_SYN_SENT2] = CT_SEC(120),
		[CT_TO_UNACK] = CT_SEC(300),
		[CT_TO_UDP] = CT_SEC(30),
		[CT_TO_UDP_STREAM] = CT_SEC(120),
		[CT_TO_ICMP] = CT_SEC(30),
	},
	.udp_stream_ms = 2000,
	.tcp_loose = 1,
	.tcp_liberal = 0,
	.events = CT_EVMASK_NEW | CT_EVMASK_UPDATE | CT_EVMASK_DESTROY,
	.drop_invalid = 0,
	.hz = 0,		/* user space sets it: 1 / clock_getres(CLOCK_MONOTONIC_COARSE) */
};

/* Layout anchors: user space reads these types from BTF. */
const volatile struct ct_event ct_layout_event;
const volatile struct ct_reap_req ct_layout_reap_req;

/* ct_reap / ct_count parameters and results (.bss, mmaped by user space).
 * ct_reap_buf holds ct_reap_n struct ct_reap_req, written as raw bytes in
 * one copy (a map update per request would cost more than the delete). */
__u8 ct_reap_buf[PYBN_CT_REAP_BATCH * sizeof(struct ct_reap_req)];
__u32 ct_reap_n;
__u64 ct_reap_now;		/* in ct_now() ticks */
__u32 ct_reap_deleted;
__s64 ct_count[2];

#endif
