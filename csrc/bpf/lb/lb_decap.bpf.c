// SPDX-License-Identifier: GPL-2.0
/* pybpfnet load balancer: the backends' decapsulator (XDP).
 *
 * Strips the outer header the load balancer added -- IPv4 or IPv6 with
 * protocol IPIP (4) or IPv6 (41), or UDP to the GUE port with an IP packet
 * right after it (GUE variant 1) -- when the outer destination is one of
 * this host's tunnel addresses (lb_decap_addrs), and passes the inner
 * packet to the stack, which delivers it to the VIP bound on lo. Anything
 * else passes untouched. Needed because the kernel here has no ipip/fou
 * modules. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb_structs.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct lb_addr_key);
	__type(value, __u32);
} lb_decap_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_decap_config);
} lb_decap_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_decap_stats);
} lb_decap_stats SEC(".maps");

/* Length of the outer headers to strip (0: not ours) and the inner family. */
static __always_inline __u32 decap_outer(void *l4, void *end, __u8 proto, __u16 gue_port,
					 __u16 *inner_eth)
{
	if (proto == IPPROTO_IPIP || proto == IPPROTO_IPV6) {
		*inner_eth = proto == IPPROTO_IPIP ? ETH_P_IP : ETH_P_IPV6;
		return 1;
	}
	if (proto == IPPROTO_UDP) {
		struct udphdr *udp = l4;
		__u8 *in = (void *)(udp + 1);

		if ((void *)(in + 1) > end || udp->dest != bpf_htons(gue_port))
			return 0;
		if ((in[0] >> 4) == 4)
			*inner_eth = ETH_P_IP;
		else if ((in[0] >> 4) == 6)
			*inner_eth = ETH_P_IPV6;
		else
			return 0;
		return 1 + sizeof(struct udphdr);
	}
	return 0;
}

/* The outer headers of a frame: how many bytes after Ethernet to strip
 * (0: not ours) and the inner family's ethertype. */
static __always_inline __u32 decap_parse(void *data, void *end, const struct lb_decap_config *cfg,
					 __u16 *inner_eth)
{
	struct ethhdr *eth = data;
	struct lb_addr_key k = {};
	__u32 strip, hl;

	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl != 5 ||
		    (ip->frag_off & bpf_htons(0x3fff)))
			return 0;
		hl = sizeof(*ip);
		__builtin_memcpy(k.addr, &ip->daddr, 4);
		k.family = 4;
		strip = decap_outer(ip + 1, end, ip->protocol, cfg->gue_port, inner_eth);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return 0;
		hl = sizeof(*ip6);
		__builtin_memcpy(k.addr, &ip6->daddr, 16);
		k.family = 6;
		strip = decap_outer(ip6 + 1, end, ip6->nexthdr, cfg->gue_port, inner_eth);
	} else {
		return 0;
	}
	if (!strip || !bpf_map_lookup_elem(&lb_decap_addrs, &k))
		return 0;
	return hl + strip - 1;
}

SEC("xdp")
int lb_decap_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct lb_decap_config *cfg;
	struct lb_decap_stats *st;
	__u8 smac[ETH_ALEN], dmac[ETH_ALEN];
	__u16 inner_eth = 0;
	__u32 zero = 0, strip;

	st = bpf_map_lookup_elem(&lb_decap_stats, &zero);
	cfg = bpf_map_lookup_elem(&lb_decap_config, &zero);
	if (!st || !cfg)
		return XDP_PASS;
	st->packets++;
	strip = decap_parse(data, end, cfg, &inner_eth);
	if (!strip || (void *)(eth + 1) > end)
		goto pass;
	__builtin_memcpy(dmac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(smac, eth->h_source, ETH_ALEN);
	if (bpf_xdp_adjust_head(ctx, (int)strip))
		goto pass;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, smac, ETH_ALEN);
	eth->h_proto = bpf_htons(inner_eth);
	st->decapped++;
	return XDP_PASS;
pass:
	st->passed++;
	return XDP_PASS;
}

#ifndef BPF_F_ADJ_ROOM_DECAP_L3_IPV4
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV4 (1ULL << 7)	/* Linux >= 6.3 */
#define BPF_F_ADJ_ROOM_DECAP_L3_IPV6 (1ULL << 8)
#endif

/* The same at TC ingress (works on any device and on GRO-merged packets):
 * bpf_skb_adjust_room removes the outer headers behind the MAC header; for
 * 4in6/6in4 the DECAP_L3 flag (Linux >= 6.3) sets skb->protocol. */
SEC("tc")
int lb_decap_tc(struct __sk_buff *skb)
{
	struct lb_decap_config *cfg;
	struct lb_decap_stats *st;
	__u16 inner_eth = 0, proto;
	__u32 zero = 0, strip;
	__u64 flags = 0;
	void *data, *end;

	st = bpf_map_lookup_elem(&lb_decap_stats, &zero);
	cfg = bpf_map_lookup_elem(&lb_decap_config, &zero);
	if (!st || !cfg)
		return TC_ACT_OK;
	st->packets++;
	/* the headers may sit in paged data: 14 + 40 + 8 + 1 bytes suffice */
	bpf_skb_pull_data(skb, 63);
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	strip = decap_parse(data, end, cfg, &inner_eth);
	if (!strip)
		goto pass;
	if (inner_eth != bpf_ntohs(skb->protocol))
		flags = inner_eth == ETH_P_IP ? BPF_F_ADJ_ROOM_DECAP_L3_IPV4 :
						BPF_F_ADJ_ROOM_DECAP_L3_IPV6;
	if (bpf_skb_adjust_room(skb, -(int)strip, BPF_ADJ_ROOM_MAC, flags))
		goto pass;
	proto = bpf_htons(inner_eth);
	if (bpf_skb_store_bytes(skb, 12, &proto, 2, 0))
		return TC_ACT_SHOT;
	st->decapped++;
	return TC_ACT_OK;
pass:
	st->passed++;
	return TC_ACT_OK;
}
