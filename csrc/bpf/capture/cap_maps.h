/* Packet capture maps; the names are repeated once in dataplanes/_cap_abi.py. */
#ifndef CAP_MAPS_H
#define CAP_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "cap_structs.h"

/* Two slots: user space fills the one not in use, then flips
 * capture_active, so a packet sees either the old or the new filter, never
 * a half-written one (array values are copied without a lock). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct cap_config);
} capture_config SEC(".maps");

/* The capture_config slot in use (0 or 1), set by user space. */
volatile __u32 capture_active = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} capture_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CAP_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} capture_stats SEC(".maps");

/* One record being built, per CPU (too big for the 512-byte stack). */
struct cap_scratch {
	struct cap_hdr hdr;
	__u8 data[CAP_MAX_SNAPLEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cap_scratch);
} capture_scratch SEC(".maps");

#endif
