/* Building the headers the load balancer puts in front of a packet:
 * IP-in-IP (outer IPv4 or IPv6 by the backend's family), GUE (variant 1:
 * outer IP / UDP / inner IP, no GUE header, as Katran does), and the ICMP
 * "fragmentation needed" / ICMPv6 "packet too big" replies. */
#ifndef LB_ENCAP_H
#define LB_ENCAP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb_structs.h"
#include "lb_csum.h"

/* What the data path knows about a packet. */
struct lb_pkt {
	struct lb_flow_key fk;	/* the flow: client -> VIP */
	__u32 len;		/* frame length as received */
	__u32 l3_len;		/* IP total length of the packet to forward */
	__u8 tos;		/* IPv4 TOS / IPv6 traffic class */
	__u8 df;		/* IPv4 DF */
	__u8 smac[6];
	__u8 dmac[6];
	__u8 tcp_flags;		/* TCP: the flags byte */
	__u8 pad;
	__u32 sid;		/* lb_xdp_ct: the service handed to lb_ct (LB_NO_SID: none) */
};

static __always_inline void lb_set_eth(struct ethhdr *eth, const __u8 *dst, const __u8 *src,
				       __u16 proto)
{
	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
	eth->h_proto = bpf_htons(proto);
}

static __always_inline void lb_ip4_hdr(struct iphdr *ip, __u8 tos, __u16 tot_len, __u8 proto,
				       const __u8 *src, const __u8 *dst)
{
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = tos;
	ip->tot_len = bpf_htons(tot_len);
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = LB_TTL;
	ip->protocol = proto;
	ip->check = 0;
	__builtin_memcpy(&ip->saddr, src, 4);
	__builtin_memcpy(&ip->daddr, dst, 4);
	ip->check = ~lb_fold(lb_sum16(ip, 10));
}

static __always_inline void lb_ip6_hdr(struct ipv6hdr *ip6, __u8 tc, __u16 plen, __u8 nexthdr,
				       const __u8 *src, const __u8 *dst)
{
	*(__u32 *)ip6 = bpf_htonl(0x60000000U | ((__u32)tc << 20));
	ip6->payload_len = bpf_htons(plen);
	ip6->nexthdr = nexthdr;
	ip6->hop_limit = LB_TTL;
	__builtin_memcpy(&ip6->saddr, src, 16);
	__builtin_memcpy(&ip6->daddr, dst, 16);
}

/* Outer header bytes for a backend family and mode. */
static __always_inline __u32 lb_encap_len(__u8 be_family, int gue)
{
	return (be_family == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr)) +
	       (gue ? sizeof(struct udphdr) : 0);
}

/* Prepend outer headers for backend be (IPIP, or GUE when gue). The
 * frame's layout moves from [eth][inner] to [eth][outer IP][UDP][inner].
 * Returns 0, or -1 when the kernel refused to grow the frame. */
static __always_inline int lb_encap(struct xdp_md *ctx, const struct lb_pkt *p,
				    const struct lb_backend *be, const struct lb_config *cfg,
				    int gue)
{
	__u8 inner_proto = p->fk.family == 4 ? IPPROTO_IPIP : IPPROTO_IPV6;
	__u8 dmac[ETH_ALEN], addr[16];
	__u32 ul = gue ? sizeof(struct udphdr) : 0;
	void *data, *end;
	struct udphdr *udp;

	__builtin_memcpy(dmac, be->mac, ETH_ALEN);
	__builtin_memcpy(addr, be->addr, 16);
	if (be->family == 4) {
		struct iphdr *ip;

		if (bpf_xdp_adjust_head(ctx, -(int)(sizeof(*ip) + ul)))
			return -1;
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		ip = data + sizeof(struct ethhdr);
		udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > end)
			return -1;
		lb_set_eth(data, dmac, p->dmac, ETH_P_IP);
		lb_ip4_hdr(ip, p->tos, sizeof(*ip) + ul + p->l3_len, gue ? IPPROTO_UDP : inner_proto,
			   cfg->src4, addr);
	} else {
		struct ipv6hdr *ip6;

		if (bpf_xdp_adjust_head(ctx, -(int)(sizeof(*ip6) + ul)))
			return -1;
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		ip6 = data + sizeof(struct ethhdr);
		udp = (void *)(ip6 + 1);
		if ((void *)(udp + 1) > end)
			return -1;
		lb_set_eth(data, dmac, p->dmac, ETH_P_IPV6);
		lb_ip6_hdr(ip6, p->tos, ul + p->l3_len, gue ? IPPROTO_UDP : inner_proto,
			   cfg->src6, addr);
	}
	if (gue) {
		/* the client's port as the source port gives ECMP/RSS entropy
		 * per flow (Katran does the same); checksum 0 (RFC 6935 allows
		 * it for tunnels over IPv6, and our decapsulator ignores it) */
		udp->source = bpf_htons(p->fk.sport);
		udp->dest = bpf_htons(cfg->gue_port);
		udp->len = bpf_htons(sizeof(*udp) + p->l3_len);
		udp->check = 0;
	}
	return 0;
}

#define LB_ICMP4_QUOTE 28	/* the packet's IPv4 header and 8 bytes */
#define LB_ICMP6_QUOTE 48	/* the packet's IPv6 header and 8 bytes */

/* Turn the packet into an ICMP "fragmentation needed" (IPv4) or ICMPv6
 * "packet too big" to its sender, quoting its IP header and 8 bytes of
 * payload; mtu is the size the sender must fit into. 0, or -1 when the
 * frame could not be resized. */
static __always_inline int lb_too_big(struct xdp_md *ctx, const struct lb_pkt *p, __u32 mtu)
{
	void *data, *end;

	if (p->fk.family == 4) {
		const __u32 hl = sizeof(struct iphdr) + 8;
		const __u32 total = sizeof(struct ethhdr) + hl + LB_ICMP4_QUOTE;
		struct iphdr *ip;
		__u8 *icmp;

		if (bpf_xdp_adjust_head(ctx, -(int)hl))
			return -1;
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		if (data + total > end)
			return -1;
		ip = data + sizeof(struct ethhdr);
		icmp = (void *)(ip + 1);
		lb_set_eth(data, p->smac, p->dmac, ETH_P_IP);
		lb_ip4_hdr(ip, 0, hl + LB_ICMP4_QUOTE, IPPROTO_ICMP, p->fk.dst, p->fk.src);
		icmp[0] = 3;	/* destination unreachable */
		icmp[1] = 4;	/* fragmentation needed */
		*(__u16 *)(icmp + 2) = 0;
		*(__u16 *)(icmp + 4) = 0;
		*(__u16 *)(icmp + 6) = bpf_htons(mtu);
		*(__u16 *)(icmp + 2) = ~lb_fold(lb_sum16(icmp, (8 + LB_ICMP4_QUOTE) / 2));
		if (bpf_xdp_adjust_tail(ctx, (int)total - (int)(end - data)))
			return -1;
	} else {
		const __u32 hl = sizeof(struct ipv6hdr) + 8;
		const __u32 total = sizeof(struct ethhdr) + hl + LB_ICMP6_QUOTE;
		struct ipv6hdr *ip6;
		__u8 *icmp;
		__u64 s;

		if (bpf_xdp_adjust_head(ctx, -(int)hl))
			return -1;
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		if (data + total > end)
			return -1;
		ip6 = data + sizeof(struct ethhdr);
		icmp = (void *)(ip6 + 1);
		lb_set_eth(data, p->smac, p->dmac, ETH_P_IPV6);
		lb_ip6_hdr(ip6, 0, 8 + LB_ICMP6_QUOTE, 58, p->fk.dst, p->fk.src);
		icmp[0] = 2;	/* packet too big */
		icmp[1] = 0;
		*(__u16 *)(icmp + 2) = 0;
		*(__u32 *)(icmp + 4) = bpf_htonl(mtu);
		s = lb_sum16(&ip6->saddr, 16) + bpf_htons(8 + LB_ICMP6_QUOTE) + bpf_htons(58);
		s += lb_sum16(icmp, (8 + LB_ICMP6_QUOTE) / 2);
		*(__u16 *)(icmp + 2) = ~lb_fold(s);
		if (bpf_xdp_adjust_tail(ctx, (int)total - (int)(end - data)))
			return -1;
	}
	return 0;
}

#endif
