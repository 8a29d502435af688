/* Count packets and bytes per source address (IPv4 and IPv6, behind up to
 * two VLAN tags) at XDP; every packet passes. Used by
 * examples/packet_counter.py. */
#include "pybn_parse.h"

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8

struct vlan_hdr_ {
	__be16 tci;
	__be16 proto;
};

struct source {
	__u8 family;		/* 4, 6, or 0 for non-IP frames */
	__u8 pad[3];
	__u8 addr[16];		/* IPv4 in the first 4 bytes, network order */
};

struct counters {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct source);
	__type(value, struct counters);
} sources SEC(".maps");

SEC("xdp")
int count_sources(struct xdp_md *ctx)
{
	struct hdr_cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	struct source key = {};
	struct counters *cnt, init = { 1, ctx->data_end - ctx->data };
	struct ethhdr *eth = cursor_pull(&c, sizeof(*eth));
	__be16 proto;
	int i;

	if (!eth)
		goto count;
	proto = eth->h_proto;
#pragma unroll
	for (i = 0; i < 2; i++) {
		struct vlan_hdr_ *vh;

		if (proto != bpf_htons(ETH_P_8021Q_) && proto != bpf_htons(ETH_P_8021AD_))
			break;
		vh = cursor_pull(&c, sizeof(*vh));
		if (!vh)
			goto count;
		proto = vh->proto;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cursor_pull(&c, sizeof(*ip));

		if (ip) {
			key.family = 4;
			__builtin_memcpy(key.addr, &ip->saddr, 4);
		}
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cursor_pull(&c, sizeof(*ip6));

		if (ip6) {
			key.family = 6;
			__builtin_memcpy(key.addr, &ip6->saddr, 16);
		}
	}
count:
	cnt = bpf_map_lookup_elem(&sources, &key);
	if (cnt) {
		cnt->packets++;		/* per-CPU value: no atomics needed */
		cnt->bytes += init.bytes;
	} else {
		bpf_map_update_elem(&sources, &key, &init, BPF_NOEXIST);
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
