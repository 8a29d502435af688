/* Count packets and bytes per IPv4 source address at XDP; everything passes. */
#include "pybn_parse.h"

struct src_key {
	__u32 addr;		/* IPv4 source, network byte order; 0 = not IPv4 */
};

struct counters {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct src_key);
	__type(value, struct counters);
} per_source SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} totals SEC(".maps");

/* XDP verdict returned for every packet (XDP_PASS by default). */
const volatile __u32 verdict = XDP_PASS;
/* Packets seen since load; user space reads it through obj.globals. */
__u64 seen = 0;

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	struct hdr_cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	__u64 len = ctx->data_end - ctx->data;
	struct src_key key = {};
	struct counters *cnt, init = { 1, len };
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 zero = 0;

	__sync_fetch_and_add(&seen, 1);
	cnt = bpf_map_lookup_elem(&totals, &zero);
	if (cnt) {
		cnt->packets++;
		cnt->bytes += len;
	}
	eth = cursor_pull(&c, sizeof(*eth));
	if (!eth)
		return verdict;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		ip = cursor_pull(&c, sizeof(*ip));
		if (ip)
			key.addr = ip->saddr;
	}
	cnt = bpf_map_lookup_elem(&per_source, &key);
	if (cnt) {
		__sync_fetch_and_add(&cnt->packets, 1);
		__sync_fetch_and_add(&cnt->bytes, len);
	} else {
		bpf_map_update_elem(&per_source, &key, &init, BPF_NOEXIST);
	}
	return verdict;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
