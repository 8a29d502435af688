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

struct cap_vlan {
	__be16 tci;
	__be16 proto;
};

static __always_inline void cap_map4(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

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
	struct ethhdr *eth = cursor_pull(&c, sizeof(*eth));
	__be16 proto;

	if (!eth)
		return;
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct cap_vlan *v = cursor_pull(&c, sizeof(*v));

		if (!v)
			return;
		proto = v->proto;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cursor_pull(&c, sizeof(*ip));
		__u32 ihl;

		if (!ip || ip->version != 4)
			return;
		p->family = 4;
		p->proto = ip->protocol;
		cap_map4(p->saddr, ip->saddr);
		cap_map4(p->daddr, ip->daddr);
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
		int i;

		if (!ip6 || ip6->version != 6)
			return;
		p->family = 6;
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		nh = ip6->nexthdr;
#pragma unroll
		for (i = 0; i < CAP_MAX_EXT; i++) {
			__u8 *ext;

			if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING ||
			    nh == IPPROTO_DSTOPTS) {
				ext = cursor_pull(&c, 8);
				if (!ext) {
					p->proto = nh;
					return;
				}
				c.pos = ext + (ext[1] + 1) * 8;
				nh = ext[0];
			} else if (nh == IPPROTO_FRAGMENT) {
				ext = cursor_pull(&c, 8);
				if (!ext) {
					p->proto = nh;
					return;
				}
				nh = ext[0];
				if ((ext[2] << 8 | ext[3]) & 0xfff8) {
					p->proto = nh;
					return;	/* non-first fragment */
				}
			} else {
				break;
			}
		}
		p->proto = nh;
		cap_parse_ports(&c, p);
	}
}

#endif
