/* Packet -> the fields the capture filter tests. */
#ifndef CAP_PARSE_H
#define CAP_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "pybn_parse.h"

#define CAP_MAX_EXT 8

struct cap_pkt {
	__u8 saddr[16];		/* IPv4: ::ffff:a.b.c.d */
	__u8 daddr[16];
	__u16 sport;		/* host order, valid when has_ports */
	__u16 dport;
	__u8 family;		/* 4, 6, or 0: not IP */
	__u8 proto;		/* L4 protocol (after IPv6 extension headers) */
	__u8 has_ports;
	__u8 pad;
};

static __always_inline void cap_parse_ports(struct hdr_cursor *c, struct cap_pkt *p)
{
	__be16 *ports;

	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP && p->proto != IPPROTO_SCTP)
		return;
	ports = cursor_pull(c, 4);
	if (!ports)
		return;
	p->sport = bpf_ntohs(ports[0]);
	p->dport = bpf_ntohs(ports[1]);
	p->has_ports = 1;
}

/* Fills p; p->family stays 0 for packets that are not IPv4/IPv6 (after at
 * most one 802.1Q/802.1ad tag). Non-first fragments and truncated L4
 * headers have no ports. */
static __always_inline void cap_parse(void *data, void *end, struct cap_pkt *p)
{
	struct hdr_cursor c = { .pos = data, .end = end };
	__be16 proto;

	if (pybn_parse_eth(&c, &proto))
		return;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cursor_pull(&c, sizeof(*ip));
		__u32 ihl;

		if (!ip || ip->version != 4)
			return;
		p->family = 4;
		p->proto = ip->protocol;
		pybn_map4(p->saddr, ip->saddr);
		pybn_map4(p->daddr, ip->daddr);
		ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip) || (ip->frag_off & bpf_htons(0x1fff)))
			return;
		c.pos = (void *)ip + ihl;
		cap_parse_ports(&c, p);
		return;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cursor_pull(&c, sizeof(*ip6));
		__u8 nh;

		if (!ip6 || ip6->version != 6)
			return;
		p->family = 6;
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		nh = ip6->nexthdr;
		/* a cut-short extension header or a non-first fragment: no ports */
		if (pybn_ipv6_skip_ext(&c, &nh, CAP_MAX_EXT)) {
			p->proto = nh;
			return;
		}
		p->proto = nh;
		cap_parse_ports(&c, p);
	}
}

#endif
