/* Flow monitor maps; the names are repeated once in dataplanes/_flow_abi.py. */
#ifndef FLOWMON_MAPS_H
#define FLOWMON_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "flowmon_structs.h"

#define FM_RTT_SLOTS 64

/* A plain hash (not LRU): an LRU would evict flows silently. When it is
 * full, new flows go to the ring one packet at a time (FM_REASON_FULL). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_stats);
} flowmon_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} flowmon_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FM_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} flowmon_stats SEC(".maps");

/* The per-CPU clock cache of fm_now() (flowmon.bpf.c). */
struct fm_clock {
	__u64 jiffies;		/* bpf_jiffies64() when ns was read */
	__u64 ns;		/* bpf_ktime_get_ns() then */
	__u64 uses;		/* packets that used ns since */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fm_clock);
} flowmon_clock SEC(".maps");

/* log2 histogram of handshake RTTs in microseconds: slot = bit length of
 * the value (bcc's bpf_log2l), as tcprtt keeps it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FM_RTT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} flowmon_rtt_hist SEC(".maps");

/* log2 histogram of the kernel's smoothed RTT (tcp_sock srtt_us >> 3) in
 * microseconds, one sample per received segment (flowmon_srtt.h), as bcc's
 * tcprtt samples it in tcp_rcv_established. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FM_RTT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} flowmon_srtt_hist SEC(".maps");

#endif
