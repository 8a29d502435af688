/* L7 sampler maps; the names are repeated once in dataplanes/_l7_abi.py. */
#ifndef L7_MAPS_H
#define L7_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "l7_structs.h"

/* port -> enum l7_kind bits (0: not watched); either port of a packet matches. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} l7_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} l7_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, L7_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} l7_stats SEC(".maps");

/* Connections that sent the HTTP/2 preface, in the preface's direction
 * (client -> server) -> how many of the next payload segments (either
 * direction) are still sampled whole; then only segments starting with a
 * HEADERS frame are. Removed on FIN/RST. An LRU: forgetting an old
 * connection only stops its sampling. */
struct l7_conn {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u32 ifindex;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct l7_conn);
	__type(value, __u32);
} l7_h2_conns SEC(".maps");

#endif
