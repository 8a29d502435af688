/* Packet parsing for the firewall: Ethernet, up to two VLAN tags, IPv4
 * (options skipped by IHL), IPv6 with extension headers, and the first
 * bytes of TCP/UDP/UDP-Lite/SCTP/ICMP/ICMPv6.
 *
 * The rules, mirrored exactly by the Python model (_fw_model.parse):
 *  - more than FW_MAX_VLANS VLAN tags (0x8100, 0x88a8, 0x9100) or a
 *    header that does not fit is malformed;
 *  - IPv4: version 4, IHL >= 5, total length >= IHL * 4 and within the
 *    frame (0: up to the frame end, as BIG TCP GSO packets, Linux >= 6.3);
 *  - IPv6: version 6, payload length within the frame (0: up to the
 *    frame end, jumbograms); Hop-by-Hop only first; at most FW_MAX_EXT
 *    extension headers, each at least 8 bytes and within the datagram;
 *  - a non-first fragment (offset != 0) has no L4 header;
 *  - TCP needs 20 bytes, UDP/UDP-Lite 8, SCTP 12, ICMP/ICMPv6 8 within the
 *    datagram: a packet or first fragment shorter than that is malformed
 *    (RFC 1858: a tiny first fragment cannot hide the ports).
 *
 * Ethernet, VLAN and the fixed IP header are read in place, and so is the
 * transport header when no IPv6 extension header came before it; the
 * extension headers (and what follows them) are copied with
 * bpf_xdp_load_bytes / bpf_skb_load_bytes. That keeps the verifier's work
 * small (no packet-pointer range per extension-header path) and reads
 * non-linear skbs at TC. */
#ifndef FW_PARSE_H
#define FW_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "fw_structs.h"

#define FW_ETH_P_8021Q	0x8100
#define FW_ETH_P_8021AD	0x88A8
#define FW_ETH_P_QINQ1	0x9100

/* Bytes a TC program needs in the linear part: Ethernet, two tags, IPv6. */
#define FW_LINEAR	(ETH_HLEN + 4 * FW_MAX_VLANS + 40)

static __always_inline int fw_is_vlan(__u16 proto)
{
	return proto == bpf_htons(FW_ETH_P_8021Q) || proto == bpf_htons(FW_ETH_P_8021AD) ||
	       proto == bpf_htons(FW_ETH_P_QINQ1);
}

/* IPv6 extension headers (RFC 7045) by next-header value. A table, not
 * comparisons: the verifier then keeps one state per header kind instead
 * of one per protocol number. */
#define FW_EXT_NONE	0
#define FW_EXT_8	1	/* (len + 1) * 8 bytes: routing, dest opts, ... */
#define FW_EXT_HBH	2	/* Hop-by-Hop: same format, first only */
#define FW_EXT_AH	3	/* (len + 2) * 4 bytes */
#define FW_EXT_FRAG	4	/* 8 bytes */

static const __u8 fw_ext_kind[256] = {
	[0] = FW_EXT_HBH, [43] = FW_EXT_8, [44] = FW_EXT_FRAG, [51] = FW_EXT_AH,
	[60] = FW_EXT_8, [135] = FW_EXT_8, [139] = FW_EXT_8, [140] = FW_EXT_8,
};

/* Copy n bytes at off (< limit) into buf; 0 or a negative error. */
static __always_inline int fw_load(void *ctx, int xdp, __u32 off, void *buf, __u32 n,
				   __u32 limit)
{
	if (off + n > limit)
		return -1;
	if (xdp)
		return bpf_xdp_load_bytes(ctx, off, buf, n);
	return bpf_skb_load_bytes(ctx, off, buf, n);
}

/* n bytes at off (< limit): in place when ``direct`` and they are in
 * [data, end), else copied into buf; NULL when the packet is too short. */
static __always_inline __u8 *fw_at(void *ctx, int xdp, void *data, void *end, __u32 off,
				   void *buf, __u32 n, __u32 limit, int direct)
{
	__u8 *p;

	if (off + n > limit)
		return NULL;
	if (direct && off < 256) {
		p = data + off;
		if ((void *)p + n <= end)
			return p;
	}
	if (xdp ? bpf_xdp_load_bytes(ctx, off, buf, n) : bpf_skb_load_bytes(ctx, off, buf, n))
		return NULL;
	return buf;
}

/* len: the packet's length (at TC it can exceed the linear bytes in
 * [data, end)). xdp: ctx is an xdp_md (else an __sk_buff). */
static __always_inline int fw_parse(void *ctx, int xdp, void *data, void *end, __u32 len,
				    struct fw_pkt *p)
{
	__u32 off = ETH_HLEN, ip_end, l4, hl;
	__u8 nh, kind, b[20], *h = data;
	int direct = 1;
	__u16 eth_proto;
	int i;

	if (data + ETH_HLEN > end)
		return FW_PKT_MALFORMED;
	eth_proto = *(__u16 *)(h + 12);
	for (i = 0; i < FW_MAX_VLANS; i++) {
		if (!fw_is_vlan(eth_proto))
			break;
		if (data + off + 4 > end)
			return FW_PKT_MALFORMED;
		eth_proto = *(__u16 *)(data + off + 2);
		off += 4;
	}
	if (fw_is_vlan(eth_proto))
		return FW_PKT_MALFORMED;

	if (eth_proto == bpf_htons(ETH_P_IP)) {
		__u32 tot;

		h = data + off;
		if ((void *)h + 20 > end)
			return FW_PKT_MALFORMED;
		if ((h[0] >> 4) != 4 || (h[0] & 15) < 5)
			return FW_PKT_MALFORMED;
		hl = (h[0] & 15) * 4;
		tot = bpf_ntohs(*(__u16 *)(h + 2));
		if (tot == 0) {
			ip_end = len;
		} else {
			if (tot < hl)
				return FW_PKT_MALFORMED;
			ip_end = off + tot;
		}
		if (ip_end > len || off + hl > ip_end)
			return FW_PKT_MALFORMED;
		p->family = 4;
		p->proto = h[9];
		__builtin_memcpy(p->src, h + 12, 4);
		__builtin_memcpy(p->dst, h + 16, 4);
		l4 = off + hl;
		nh = h[9];
		if (bpf_ntohs(*(__u16 *)(h + 6)) & 0x1fff) {
			p->pa = nh;
			return FW_PKT_FRAG;
		}
	} else if (eth_proto == bpf_htons(ETH_P_IPV6)) {
		__u32 plen;

		h = data + off;
		if ((void *)h + 40 > end)
			return FW_PKT_MALFORMED;
		if ((h[0] >> 4) != 6)
			return FW_PKT_MALFORMED;
		plen = bpf_ntohs(*(__u16 *)(h + 4));
		ip_end = plen ? off + 40 + plen : len;
		if (ip_end > len)
			return FW_PKT_MALFORMED;
		p->family = 6;
		__builtin_memcpy(p->src, h + 8, 16);
		__builtin_memcpy(p->dst, h + 24, 16);
		nh = h[6];
		l4 = off + 40;
		for (i = 0; i < FW_MAX_EXT; i++) {
			kind = fw_ext_kind[nh];
			if (kind == FW_EXT_NONE)
				break;
			if (kind == FW_EXT_HBH && i > 0)
				return FW_PKT_MALFORMED;
			if (fw_load(ctx, xdp, l4, b, 8, ip_end))
				return FW_PKT_MALFORMED;
			if (kind == FW_EXT_FRAG) {
				if (bpf_ntohs(*(__u16 *)(b + 2)) & 0xfff8) {
					p->proto = b[0];
					p->pa = b[0];
					return FW_PKT_FRAG;
				}
				hl = 8;
			} else if (kind == FW_EXT_AH) {
				hl = ((__u32)b[1] + 2) * 4;
			} else {
				hl = ((__u32)b[1] + 1) * 8;
			}
			nh = b[0];
			l4 += hl;
			direct = 0;
			if (l4 > ip_end)
				return FW_PKT_MALFORMED;
		}
		if (fw_ext_kind[nh] != FW_EXT_NONE)
			return FW_PKT_MALFORMED;
		p->proto = nh;
	} else {
		return FW_PKT_NON_IP;
	}

	p->pa = nh;
	if (nh == IPPROTO_TCP) {
		h = fw_at(ctx, xdp, data, end, l4, b, 20, ip_end, direct);
		if (!h)
			return FW_PKT_MALFORMED;
		p->pa = FW_PA_TCP + h[13];
	} else if (nh == IPPROTO_UDP || nh == IPPROTO_UDPLITE) {
		h = fw_at(ctx, xdp, data, end, l4, b, 8, ip_end, direct);
		if (!h)
			return FW_PKT_MALFORMED;
	} else if (nh == IPPROTO_SCTP) {
		h = fw_at(ctx, xdp, data, end, l4, b, 12, ip_end, direct);
		if (!h)
			return FW_PKT_MALFORMED;
	} else if ((nh == IPPROTO_ICMP && p->family == 4) ||
		   (nh == 58 && p->family == 6)) {
		h = fw_at(ctx, xdp, data, end, l4, b, 8, ip_end, direct);
		if (!h)
			return FW_PKT_MALFORMED;
		p->pa = (p->family == 4 ? FW_PA_ICMP : FW_PA_ICMP6) + h[0];
		return FW_PKT_IP;
	} else {
		return FW_PKT_IP;
	}
	p->sport = bpf_ntohs(*(__u16 *)h);
	p->dport = bpf_ntohs(*(__u16 *)(h + 2));
	return FW_PKT_IP;
}

#endif
