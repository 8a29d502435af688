/* Drops where visible: the kfree_skb tracepoint (tp_btf; this kernel has no
 * kprobes) names the packets the kernel dropped after our TC hook saw them
 * (no socket, full socket buffer, netfilter, qdisc ...); each is added to
 * its flow's `drops`. Only the kernel types read here are declared, with
 * CO-RE relocations against the running kernel's BTF. */
#ifndef FLOWMON_DROPS_H
#define FLOWMON_DROPS_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "flowmon_structs.h"
#include "flowmon_maps.h"

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct net_device *dev;
	unsigned char *head;
	__u16 transport_header;
	__u16 network_header;
	__be16 protocol;
	int skb_iif;
} __attribute__((preserve_access_index));

/* enum skb_drop_reason: 0 SKB_NOT_DROPPED_YET, 1 SKB_CONSUMED (Linux >= 5.17) */
#define FM_SKB_CONSUMED 1

/* the network namespace to watch (its /proc/.../ns/net inode); 0: any */
const volatile __u32 flowmon_netns_ino = 0;

static __always_inline int fm_drop_key(struct sk_buff *skb, struct flow_key *key)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__be16 proto = BPF_CORE_READ(skb, protocol);
	__u8 l4[4] = {};

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) || ip.version != 4)
			return -1;
		key->family = 4;
		key->proto = ip.protocol;
		pybn_map4(key->saddr, ip.saddr);
		pybn_map4(key->daddr, ip.daddr);
		if (ip.frag_off & bpf_htons(0x1fff))
			return 0;
		if (th == nh)	/* transport header not set yet */
			th = nh + ip.ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh) || ip6.version != 6)
			return -1;
		key->family = 6;
		key->proto = ip6.nexthdr;
		__builtin_memcpy(key->saddr, &ip6.saddr, 16);
		__builtin_memcpy(key->daddr, &ip6.daddr, 16);
		if (th == nh)
			th = nh + sizeof(ip6);
	} else {
		return -1;
	}
	if (key->proto != IPPROTO_TCP && key->proto != IPPROTO_UDP &&
	    key->proto != IPPROTO_ICMP && key->proto != IPPROTO_ICMPV6)
		return 0;
	if (bpf_probe_read_kernel(l4, sizeof(l4), head + th))
		return 0;
	if (key->proto == IPPROTO_TCP || key->proto == IPPROTO_UDP) {
		key->sport = l4[0] << 8 | l4[1];
		key->dport = l4[2] << 8 | l4[3];
	} else {
		key->sport = l4[0];
		key->dport = l4[1];
	}
	return 0;
}

/* tp_btf/kfree_skb: ctx[0] struct sk_buff *, ctx[1] location,
 * ctx[2] enum skb_drop_reason (Linux >= 5.17). */
SEC("tp_btf/kfree_skb")
int flowmon_drop(__u64 *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	struct flow_key key = {};
	struct flow_stats *s;
	struct net_device *dev;

	if (ctx[2] <= FM_SKB_CONSUMED)
		return 0;
	dev = BPF_CORE_READ(skb, dev);
	if (!dev)
		return 0;
	if (flowmon_netns_ino && BPF_CORE_READ(dev, nd_net.net, ns.inum) != flowmon_netns_ino)
		return 0;
	if (fm_drop_key(skb, &key) < 0)
		return 0;
	fm_stat(FM_STAT_DROPS, 1);
	key.ifindex = BPF_CORE_READ(dev, ifindex);
	/* a drop after ingress (no socket, ...) or after egress (qdisc, ...) */
	key.direction = FM_DIR_INGRESS;
	s = bpf_map_lookup_elem(&flowmon_flows, &key);
	if (!s) {
		key.direction = FM_DIR_EGRESS;
		s = bpf_map_lookup_elem(&flowmon_flows, &key);
	}
	if (s)
		__sync_fetch_and_add(&s->drops, 1);
	else
		fm_stat(FM_STAT_DROPS_UNMATCHED, 1);
	return 0;
}

#endif
