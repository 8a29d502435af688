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
	__be16 proto;

	if (pybn_parse_eth(&c, &proto))
		return -1;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cursor_pull(&c, sizeof(*ip));
		__u32 ihl;

		if (!ip || ip->version != 4)
			return -1;
		key->family = 4;
		key->proto = ip->protocol;
		pybn_map4(key->saddr, ip->saddr);
		pybn_map4(key->daddr, ip->daddr);
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

		if (!ip6)
			return -1;
		key->family = 6;
		__builtin_memcpy(key->saddr, &ip6->saddr, 16);
		__builtin_memcpy(key->daddr, &ip6->daddr, 16);
		nh = ip6->nexthdr;
		/* a cut-short extension header or a non-first fragment: no ports */
		if (pybn_ipv6_skip_ext(&c, &nh, FM_MAX_EXT)) {
			key->proto = nh;
			return 0;
		}
		key->proto = nh;
		return fm_parse_l4(&c, data, nh, key, pkt);
	}
	return -1;
}

#endif
