/* Packet -> flow key, TCP flags and header length (for GSO accounting). */
#ifndef FLOWMON_PARSE_H
#define FLOWMON_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "pybn_parse.h"
#include "flowmon_structs.h"

#define FM_MAX_EXT 4

struct fm_pkt {
	__u32 hdr_len;		/* L2 + L3 + L4 header bytes (0: unknown) */
	__u16 tcp_flags;
};

struct fm_vlan {
	__be16 tci;
	__be16 proto;
};

static __always_inline void fm_map4(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

/* Ports, flags and header length of the L4 header at the cursor. */
static __always_inline int fm_parse_l4(struct hdr_cursor *c, void *data, __u8 proto,
				       struct flow_key *key, struct fm_pkt *pkt)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = cursor_pull(c, sizeof(*th));

		if (!th)
			return 0;
		key->sport = bpf_ntohs(th->source);
		key->dport = bpf_ntohs(th->dest);
		pkt->tcp_flags = ((__u8 *)th)[13];
		pkt->hdr_len = (__u32)((void *)th - data) + th->doff * 4;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *uh = cursor_pull(c, sizeof(*uh));

		if (!uh)
			return 0;
		key->sport = bpf_ntohs(uh->source);
		key->dport = bpf_ntohs(uh->dest);
		pkt->hdr_len = (__u32)((void *)uh - data) + sizeof(*uh);
	} else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
		__u8 *ic = cursor_pull(c, 2);

		if (!ic)
			return 0;
		key->sport = ic[0];
		key->dport = ic[1];
	}
	return 0;
}

/* Fills key (addresses, ports, protocol, family) and pkt. Returns -1 for
 * packets that are not IPv4/IPv6. Truncated L4 headers and non-first
 * fragments give a key with ports 0. */
static __always_inline int fm_parse(void *data, void *end, struct flow_key *key,
				    struct fm_pkt *pkt)
{
	struct hdr_cursor c = { .pos = data, .end = end };
	struct ethhdr *eth = cursor_pull(&c, sizeof(*eth));
	__be16 proto;

	if (!eth)
		return -1;
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct fm_vlan *v = cursor_pull(&c, sizeof(*v));

		if (!v)
			return -1;
		proto = v->proto;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cursor_pull(&c, sizeof(*ip));
		__u32 ihl;

		if (!ip || ip->version != 4)
			return -1;
		key->family = 4;
		key->proto = ip->protocol;
		fm_map4(key->saddr, ip->saddr);
		fm_map4(key->daddr, ip->daddr);
		ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return 0;
		c.pos = (void *)ip + ihl;
		if (ip->frag_off & bpf_htons(0x1fff))
			return 0;	/* non-first fragment: no L4 header */
		return fm_parse_l4(&c, data, ip->protocol, key, pkt);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cursor_pull(&c, sizeof(*ip6));
		__u8 nh;
		int i;

		if (!ip6)
			return -1;
		key->family = 6;
		__builtin_memcpy(key->saddr, &ip6->saddr, 16);
		__builtin_memcpy(key->daddr, &ip6->daddr, 16);
		nh = ip6->nexthdr;
#pragma unroll
		for (i = 0; i < FM_MAX_EXT; i++) {
			__u8 *ext;

			if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING ||
			    nh == IPPROTO_DSTOPTS) {
				ext = cursor_pull(&c, 8);
				if (!ext)
					break;
				c.pos = ext + (ext[1] + 1) * 8;
				nh = ext[0];
			} else if (nh == IPPROTO_FRAGMENT) {
				ext = cursor_pull(&c, 8);
				if (!ext)
					break;
				nh = ext[0];
				if ((ext[2] << 8 | ext[3]) & 0xfff8) {
					key->proto = nh;
					return 0;	/* non-first fragment */
				}
			} else {
				break;
			}
		}
		key->proto = nh;
		return fm_parse_l4(&c, data, nh, key, pkt);
	}
	return -1;
}

#endif
