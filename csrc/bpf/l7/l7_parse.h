/* Packet -> addresses, ports and where the L4 payload starts. */
#ifndef L7_PARSE_H
#define L7_PARSE_H

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
#include "l7_structs.h"

#define L7_MAX_EXT 4

struct l7_pkt {
	__u32 off;		/* offset of the L4 payload from skb->data */
	__u32 len;		/* L4 payload bytes (from the IP length) */
};

/* The L4 header at the cursor; l3_end is where the IP length says the
 * packet ends. Returns -1 for anything but a whole TCP/UDP header. */
static __always_inline int l7_parse_l4(struct hdr_cursor *c, void *data, __u32 l3_end,
				       __u8 proto, struct l7_sample *s, struct l7_pkt *pkt)
{
	void *payload;
	__u32 off;

	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = cursor_pull(c, sizeof(*th));

		if (!th || th->doff < 5)
			return -1;
		s->sport = bpf_ntohs(th->source);
		s->dport = bpf_ntohs(th->dest);
		s->tcp_seq = bpf_ntohl(th->seq);
		s->tcp_flags = ((__u8 *)th)[13];
		payload = (void *)th + th->doff * 4;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr *uh = cursor_pull(c, sizeof(*uh));

		if (!uh)
			return -1;
		s->sport = bpf_ntohs(uh->source);
		s->dport = bpf_ntohs(uh->dest);
		payload = (void *)(uh + 1);
	} else {
		return -1;
	}
	s->proto = proto;
	off = (__u32)(payload - data);
	pkt->off = off;
	pkt->len = l3_end > off ? l3_end - off : 0;
	return 0;
}

/* Fills the addresses, ports, protocol and family of s and the payload's
 * place. Returns -1 for packets without a whole TCP/UDP header (non-IP,
 * other protocols, non-first fragments, truncated headers). */
static __always_inline int l7_parse(void *data, void *end, __u32 skb_len,
				    struct l7_sample *s, struct l7_pkt *pkt)
{
	struct hdr_cursor c = { .pos = data, .end = end };
	__be16 proto;

	if (pybn_parse_eth(&c, &proto))
		return -1;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cursor_pull(&c, sizeof(*ip));
		__u32 ihl, tot;

		if (!ip || ip->version != 4)
			return -1;
		ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return -1;
		if (ip->frag_off & bpf_htons(0x1fff))
			return -1;
		s->family = 4;
		pybn_map4(s->saddr, ip->saddr);
		pybn_map4(s->daddr, ip->daddr);
		/* a GSO packet with BIG TCP has tot_len 0: the skb's length counts */
		tot = bpf_ntohs(ip->tot_len);
		if (!tot)
			tot = skb_len - (__u32)((void *)ip - data);
		c.pos = (void *)ip + ihl;
		return l7_parse_l4(&c, data, (__u32)((void *)ip - data) + (tot & 0x1ffff),
				   ip->protocol, s, pkt);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cursor_pull(&c, sizeof(*ip6));
		__u32 plen;
		__u8 nh;

		if (!ip6)
			return -1;
		s->family = 6;
		__builtin_memcpy(s->saddr, &ip6->saddr, 16);
		__builtin_memcpy(s->daddr, &ip6->daddr, 16);
		plen = bpf_ntohs(ip6->payload_len);
		if (!plen)
			plen = skb_len - (__u32)((void *)(ip6 + 1) - data);
		nh = ip6->nexthdr;
		/* a cut-short extension header or a non-first fragment */
		if (pybn_ipv6_skip_ext(&c, &nh, L7_MAX_EXT))
			return -1;
		return l7_parse_l4(&c, data, (__u32)((void *)(ip6 + 1) - data) + (plen & 0x1ffff),
				   nh, s, pkt);
	}
	return -1;
}

#endif
