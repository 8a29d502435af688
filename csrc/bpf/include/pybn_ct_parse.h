/* pybpfnet connection tracking: a packet (from its Ethernet header) reduced
 * to a struct ct_pkt. Bounds-checked for XDP and TC direct packet access.
 *
 * Rules (the Python model in _ct_model.py follows them):
 *  - up to two VLAN tags (802.1Q / 802.1ad) in the packet data;
 *  - IPv4: version 4, IHL >= 5, total length >= IHL*4, else UNTRACKED;
 *    non-first fragments are UNTRACKED;
 *  - IPv6: version 6; Hop-by-Hop, Routing, Destination options, AH and
 *    first-fragment headers are skipped (at most 6, each at least 8 bytes
 *    in the frame), else UNTRACKED;
 *  - the layer 3 length (counted in bytes) is the IP header's, not the
 *    frame's; transport headers must fit both the frame and that length;
 *  - TCP: header shorter than 20 bytes or than its data offset: INVALID;
 *    options are read from SYNs only (window scale, SACK permitted);
 *  - UDP: truncated, or a length field < 8 or beyond the IP length (in an
 *    unfragmented datagram): INVALID;
 *  - ICMP/ICMPv6 echo request and reply are tracked (identifier = port);
 *    other types UNTRACKED; fewer than 8 bytes: INVALID. */
#ifndef PYBN_CT_PARSE_H
#define PYBN_CT_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "pybn_ct_structs.h"

#define CT_ETH_P_8021Q 0x8100
#define CT_ETH_P_8021AD 0x88A8
#define CT_IPV6_MAX_EXT 6

static __always_inline int ct_avail(void *p, __u32 len, void *end)
{
	return p + len <= end;
}

/* The same pointer, re-derived from the frame start through an offset the
 * verifier only knows to be below 16 KiB: the paths that reached it with
 * different offsets then look alike, and the verifier prunes them. */
static __always_inline void *ct_renorm(void *data, void *ptr)
{
	__u64 off = ptr - data;

	asm volatile("" : "+r"(off));
	return data + (off & 0x3fff);
}

/* TCP options of a SYN, as nf_conntrack's tcp_options() reads them. A
 * global function: the verifier checks it once, not once per path of the
 * header parser. */
__attribute__((noinline)) int ct_tcp_opts_parse(struct ct_tcp_opts *o)
{
	__u32 len, skip = 0, k;

	if (!o)
		return 0;
	len = o->len;
	/* Walk the bytes at fixed offsets, skipping the rest of each option:
	 * memory is only read at the loop counter, which keeps the paths the
	 * verifier explores few. */
	for (k = 0; k < 40; k++) {
		__u8 kind, size;

		if (k >= len)
			break;
		if (skip) {
			skip--;
			continue;
		}
		kind = o->buf[k];
		if (kind == 0)		/* end of options */
			break;
		if (kind == 1)		/* NOP */
			continue;
		if (len - k < 2)
			break;
		size = o->buf[k + 1];
		if (size < 2 || size > len - k)
			break;
		if (kind == 4 && size == 2)
			o->sack_perm = 1;
		else if (kind == 3 && size == 3)
			o->wscale = o->buf[k + 2];
		skip = size - 1;
	}
	return 0;
}

/* Fill p from the frame in [data, data_end), except the options of a SYN
 * (p->opt_len bytes at p->opt_off): ct_parse_skb/ct_parse_xdp read those.
 * Returns p->status. */
static __always_inline int ct_parse(void *data, void *data_end, struct ct_pkt *p)
{
	struct ethhdr *eth = data;
	void *l3, *l4;
	__u32 hdr_off;		/* transport header offset from the IP header */
	__u32 more_frags = 0;	/* a first fragment: the datagram goes on */
	__u16 proto;
	__u8 l4proto;
	int i;

	__builtin_memset(p, 0, sizeof(*p));
	p->wscale = 0xff;
	p->status = CT_P_UNTRACKED;
	if (!ct_avail(eth, sizeof(*eth), data_end))
		return p->status;
	proto = eth->h_proto;
	l3 = data + sizeof(*eth);
#pragma unroll
	for (i = 0; i < 2; i++) {
		if (proto != bpf_htons(CT_ETH_P_8021Q) && proto != bpf_htons(CT_ETH_P_8021AD))
			break;
		if (!ct_avail(l3, 4, data_end))
			return p->status;
		proto = *(__u16 *)(l3 + 2);
		l3 += 4;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		__u8 *ip = l3;
		__u32 hlen, tot;

		if (!ct_avail(ip, 20, data_end))
			return p->status;
		if ((ip[0] >> 4) != 4)
			return p->status;
		hlen = (ip[0] & 0xf) * 4;
		if (hlen < 20 || !ct_avail(ip, hlen, data_end))
			return p->status;
		tot = bpf_ntohs(*(__u16 *)(ip + 2));
		if (tot < hlen)
			return p->status;
		if (bpf_ntohs(*(__u16 *)(ip + 6)) & 0x1fff)
			return p->status;	/* not the first fragment */
		more_frags = bpf_ntohs(*(__u16 *)(ip + 6)) & 0x2000;
		p->tuple.family = 4;
		__builtin_memcpy(p->tuple.src, ip + 12, 4);
		__builtin_memcpy(p->tuple.dst, ip + 16, 4);
		p->len = tot;
		l4proto = ip[9];
		l4 = l3 + hlen;
		hdr_off = hlen;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		__u8 *ip6 = l3;
		__u8 nh;

		if (!ct_avail(ip6, 40, data_end))
			return p->status;
		if ((ip6[0] >> 4) != 6)
			return p->status;
		p->tuple.family = 6;
		__builtin_memcpy(p->tuple.src, ip6 + 8, 16);
		__builtin_memcpy(p->tuple.dst, ip6 + 24, 16);
		p->len = 40 + bpf_ntohs(*(__u16 *)(ip6 + 4));
		nh = ip6[6];
		l4 = l3 + 40;
		hdr_off = 40;
		/* every extension header is at least 8 bytes: one bounds check
		 * per header keeps the verifier's paths few */
#pragma unroll
		for (i = 0; i < CT_IPV6_MAX_EXT; i++) {
			__u8 *x;
			__u32 len;

			l4 = ct_renorm(data, l4);
			x = l4;
			if (nh != 0 && nh != 43 && nh != 60 && nh != 51 && nh != 44)
				break;
			if (!ct_avail(x, 8, data_end))
				return p->status;
			if (nh == 44) {
				if (bpf_ntohs(*(__u16 *)(x + 2)) & 0xfff8)
					return p->status;	/* not the first fragment */
				more_frags = x[3] & 1;
				len = 8;
			} else if (nh == 51) {
				len = (x[1] + 2) * 4;
			} else {
				len = (x[1] + 1) * 8;
			}
			nh = x[0];
			l4 += len;
			hdr_off += len;
		}
		if (nh == 0 || nh == 43 || nh == 60 || nh == 51 || nh == 44)
			return p->status;	/* more extension headers than we skip */
		l4proto = nh;
	} else {
		return p->status;
	}

	/* transport headers must fit the frame and the IP length */
	p->tuple.proto = l4proto;
	l4 = ct_renorm(data, l4);

	if (l4proto == IPPROTO_TCP) {
		__u8 *th = l4;
		__u32 doff;

		p->status = CT_P_INVALID;
		if (!ct_avail(th, 20, data_end) || hdr_off + 20 > p->len)
			return p->status;
		doff = (th[12] >> 4) * 4;
		if (doff < 20 || hdr_off + doff > p->len || !ct_avail(th, doff, data_end))
			return p->status;
		p->tuple.sport = bpf_ntohs(*(__u16 *)th);
		p->tuple.dport = bpf_ntohs(*(__u16 *)(th + 2));
		p->seq = bpf_ntohl(*(__u32 *)(th + 4));
		p->ack = bpf_ntohl(*(__u32 *)(th + 8));
		p->tcp_flags = th[13];
		p->win = bpf_ntohs(*(__u16 *)(th + 14));
		p->payload = p->len - hdr_off - doff;
		p->has_opts = doff > 20;
		if ((p->tcp_flags & CT_SYN) && doff > 20) {
			p->opt_off = (__u16)((void *)th - data) + 20;
			p->opt_len = doff - 20;
		}
		p->status = CT_P_OK;
	} else if (l4proto == IPPROTO_UDP) {
		__u8 *uh = l4;
		__u32 ulen;

		p->status = CT_P_INVALID;
		if (!ct_avail(uh, 8, data_end) || hdr_off + 8 > p->len)
			return p->status;
		ulen = bpf_ntohs(*(__u16 *)(uh + 4));
		if (ulen < 8 || (ulen > p->len - hdr_off && !more_frags))
			return p->status;
		p->tuple.sport = bpf_ntohs(*(__u16 *)uh);
		p->tuple.dport = bpf_ntohs(*(__u16 *)(uh + 2));
		p->status = CT_P_OK;
	} else if ((l4proto == IPPROTO_ICMP && p->tuple.family == 4) ||
		   (l4proto == 58 && p->tuple.family == 6)) {
		__u8 *ic = l4;
		__u8 req = l4proto == IPPROTO_ICMP ? 8 : 128;
		__u8 rep = l4proto == IPPROTO_ICMP ? 0 : 129;

		p->status = CT_P_INVALID;
		if (!ct_avail(ic, 8, data_end) || hdr_off + 8 > p->len)
			return p->status;
		if (ic[0] != req && ic[0] != rep) {
			p->status = CT_P_UNTRACKED;
			return p->status;
		}
		p->icmp_request = ic[0] == req;
		p->tuple.sport = bpf_ntohs(*(__u16 *)(ic + 4));
		p->tuple.dport = p->tuple.sport;
		p->status = CT_P_OK;
	}
	return p->status;
}

/* ct_parse for TC (and everything it leaves to do): parses the linear
 * data, pulling up to CT_PULL_MAX bytes when the headers are not all in
 * it, then reads SYN options. Returns p->status, -1 if the pull failed.
 * A global function, so that the paths through the header parser do not
 * multiply those of the caller for the verifier. */
#define CT_PULL_MAX 256

__attribute__((noinline)) int ct_parse_skb(struct __sk_buff *skb, struct ct_pkt *p)
{
	void *data, *data_end;
	struct ct_tcp_opts o;
	__u32 linear;
	__u64 n;

	if (!skb || !p)
		return -1;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	linear = data_end - data;
	if (ct_parse(data, data_end, p) != CT_P_OK && skb->len > linear) {
		if (bpf_skb_pull_data(skb, skb->len < CT_PULL_MAX ? skb->len : CT_PULL_MAX))
			return -1;
		ct_parse((void *)(long)skb->data, (void *)(long)skb->data_end, p);
	}
	n = p->opt_len;
	/* separate tests on n itself: the verifier must see 1 <= n <= 40 */
	asm volatile("" : "+r"(n));
	if (n > 40)
		n = 40;
	asm volatile("" : "+r"(n));
	if (n >= 1) {
		__builtin_memset(&o, 0, sizeof(o));
		o.len = n;
		o.wscale = 0xff;
		if (bpf_skb_load_bytes(skb, p->opt_off, o.buf, n) == 0) {
			ct_tcp_opts_parse(&o);
			p->wscale = o.wscale;
			p->sack_perm = o.sack_perm;
		}
	}
	return p->status;
}

/* The same for XDP (bpf_xdp_load_bytes: Linux >= 5.18). */
__attribute__((noinline)) int ct_parse_xdp(struct xdp_md *ctx, struct ct_pkt *p)
{
	struct ct_tcp_opts o;
	__u64 n;

	if (!ctx || !p)
		return -1;
	ct_parse((void *)(long)ctx->data, (void *)(long)ctx->data_end, p);
	n = p->opt_len;
	asm volatile("" : "+r"(n));
	if (n > 40)
		n = 40;
	asm volatile("" : "+r"(n));
	if (n >= 1) {
		__builtin_memset(&o, 0, sizeof(o));
		o.len = n;
		o.wscale = 0xff;
		if (bpf_xdp_load_bytes(ctx, p->opt_off, o.buf, n) == 0) {
			ct_tcp_opts_parse(&o);
			p->wscale = o.wscale;
			p->sack_perm = o.sack_perm;
		}
	}
	return p->status;
}

#endif
