// SPDX-License-Identifier: GPL-2.0
/* L7 sampler: at TC ingress/egress, copies the head of the L4 payload of
 * DNS and HTTP packets (with addresses, ports, timestamp, interface and
 * direction) to a ring buffer; user space parses them
 * (dataplanes/_l7_dns.py, _l7_http.py). It never changes or drops a
 * packet: every path returns TC_ACT_UNSPEC.
 *
 * What is sampled:
 *  - DNS ports (l7_ports & L7_KIND_DNS, either port of the packet): every
 *    UDP datagram and TCP segment with payload;
 *  - HTTP ports (L7_KIND_HTTP): TCP segments whose payload starts with an
 *    HTTP/1 message token (a method or "HTTP"): request and response heads,
 *    not bodies or continuation segments;
 *  - the HTTP/2 connection preface ("PRI * HTTP/2.0...") on HTTP ports, or
 *    on every TCP port when l7_h2_any_port is set; then the next
 *    L7_H2_SEGMENTS payload segments of that connection (both directions),
 *    where the SETTINGS and first HEADERS frames travel, and after them
 *    every segment that starts with a HEADERS frame, until a FIN or RST. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "l7_structs.h"
#include "l7_maps.h"
#include "l7_parse.h"

#define L7_H2_SEGMENTS 8
#define TH_FIN 0x01
#define TH_RST 0x04

const volatile struct l7_sample l7_layout_sample;
const volatile struct l7_layout_enums l7_layout_enums;

/* Payload bytes copied per sample (1..L7_MAX_SNAP), set before load. */
const volatile __u32 l7_snaplen = 256;
/* Look for the HTTP/2 preface on every TCP port, not only HTTP ports. */
const volatile __u8 l7_h2_any_port = 0;

static __always_inline void l7_stat(__u32 idx, __u64 v)
{
	__u64 *p = bpf_map_lookup_elem(&l7_stats, &idx);

	if (p)
		*p += v;	/* per-CPU: no atomics needed */
}

static __always_inline __u8 l7_port_kind(__u16 port)
{
	__u32 k = port;
	__u8 *v = bpf_map_lookup_elem(&l7_ports, &k);

	return v ? *v : 0;
}

#define L7_TAG(a, b, c, d) ((__u32)(a) | (__u32)(b) << 8 | (__u32)(c) << 16 | (__u32)(d) << 24)

/* Does a payload starting with these 4 bytes start an HTTP/1 message? */
static __always_inline int l7_http1_start(__u32 w)
{
	switch (w) {
	case L7_TAG('G', 'E', 'T', ' '):
	case L7_TAG('P', 'O', 'S', 'T'):
	case L7_TAG('P', 'U', 'T', ' '):
	case L7_TAG('H', 'E', 'A', 'D'):
	case L7_TAG('D', 'E', 'L', 'E'):
	case L7_TAG('P', 'A', 'T', 'C'):
	case L7_TAG('O', 'P', 'T', 'I'):
	case L7_TAG('C', 'O', 'N', 'N'):
	case L7_TAG('T', 'R', 'A', 'C'):
	case L7_TAG('H', 'T', 'T', 'P'):
		return 1;
	}
	return 0;
}

/* The l7_h2_conns entry of the packet's connection (either direction),
 * with its key in k; NULL: not an HTTP/2 connection seen starting. */
static __always_inline __u32 *l7_h2_lookup(const struct l7_sample *s, __u32 ifindex,
					   struct l7_conn *k)
{
	__u32 *left;

	__builtin_memcpy(k->saddr, s->saddr, 16);
	__builtin_memcpy(k->daddr, s->daddr, 16);
	k->sport = s->sport;
	k->dport = s->dport;
	k->ifindex = ifindex;
	left = bpf_map_lookup_elem(&l7_h2_conns, k);
	if (left)
		return left;
	__builtin_memcpy(k->saddr, s->daddr, 16);
	__builtin_memcpy(k->daddr, s->saddr, 16);
	k->sport = s->dport;
	k->dport = s->sport;
	return bpf_map_lookup_elem(&l7_h2_conns, k);
}

/* Does a segment start with an HTTP/2 HEADERS frame header (RFC 9113 6.2:
 * type 1, flags within END_STREAM|END_HEADERS|PADDED|PRIORITY, a stream)? */
static __always_inline int l7_h2_headers_start(struct __sk_buff *skb, __u32 off, __u32 len)
{
	__u8 fh[9];

	if (len < sizeof(fh) || bpf_skb_load_bytes(skb, off, fh, sizeof(fh)) < 0)
		return 0;
	return fh[3] == 1 && !(fh[4] & ~0x2d) && (fh[5] | fh[6] | fh[7] | fh[8]);
}

static __always_inline void l7_h2_start(const struct l7_sample *s, __u32 ifindex)
{
	struct l7_conn k = {};
	__u32 left = L7_H2_SEGMENTS;

	__builtin_memcpy(k.saddr, s->saddr, 16);
	__builtin_memcpy(k.daddr, s->daddr, 16);
	k.sport = s->sport;
	k.dport = s->dport;
	k.ifindex = ifindex;
	bpf_map_update_elem(&l7_h2_conns, &k, &left, BPF_ANY);
}

static __always_inline int l7_sample(struct __sk_buff *skb, __u8 direction)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct l7_sample hdr = {};
	struct l7_pkt pkt = {};
	struct l7_conn conn = {};
	struct l7_sample *r;
	__u8 kind, ports, kind_fin = 0, h2_watch;
	__u32 *h2;
	__u32 head = 0, len;
	__u64 n;

	if (l7_parse(data, end, skb->len, &hdr, &pkt) < 0)
		return TC_ACT_UNSPEC;
	l7_stat(L7_STAT_PACKETS, 1);
	len = pkt.len;
	if (pkt.off < skb->len && len > skb->len - pkt.off)
		len = skb->len - pkt.off;
	ports = l7_port_kind(hdr.sport) | l7_port_kind(hdr.dport);
	/* HTTP/2 connections are only followed where their preface is looked for */
	h2_watch = hdr.proto == IPPROTO_TCP && ((ports & L7_KIND_HTTP) || l7_h2_any_port);
	if (h2_watch && (hdr.tcp_flags & (TH_FIN | TH_RST))) {
		/* the connection ends: forget it (its last payload is still sampled) */
		h2 = l7_h2_lookup(&hdr, skb->ifindex, &conn);
		if (h2) {
			bpf_map_delete_elem(&l7_h2_conns, &conn);
			h2 = NULL;
			if (len && pkt.off < skb->len)
				kind_fin = L7_KIND_H2;
		}
	}
	if (pkt.off >= skb->len || len == 0)
		return TC_ACT_UNSPEC;
	if (ports & L7_KIND_DNS) {
		kind = L7_KIND_DNS;
	} else if (!h2_watch) {
		return TC_ACT_UNSPEC;
	} else if (kind_fin) {
		kind = kind_fin;
	} else if ((h2 = l7_h2_lookup(&hdr, skb->ifindex, &conn))) {
		/* an HTTP/2 connection: the first L7_H2_SEGMENTS payload segments,
		 * then those that start with a HEADERS frame */
		if (*h2) {
			*h2 -= 1;	/* a race between CPUs only shifts the budget by one */
		} else if (!l7_h2_headers_start(skb, pkt.off, len)) {
			l7_stat(L7_STAT_SKIPPED, 1);
			return TC_ACT_UNSPEC;
		}
		kind = L7_KIND_H2;
	} else {
		if (len < 4 || bpf_skb_load_bytes(skb, pkt.off, &head, 4) < 0)
			return TC_ACT_UNSPEC;
		if (head == L7_TAG('P', 'R', 'I', ' ')) {
			kind = L7_KIND_H2;
			l7_h2_start(&hdr, skb->ifindex);
		} else if ((ports & L7_KIND_HTTP) && l7_http1_start(head)) {
			kind = L7_KIND_HTTP;
		} else {
			if (ports & L7_KIND_HTTP)
				l7_stat(L7_STAT_SKIPPED, 1);
			return TC_ACT_UNSPEC;
		}
	}

	r = bpf_ringbuf_reserve(&l7_events, sizeof(*r), 0);
	if (!r) {
		l7_stat(L7_STAT_LOST, 1);
		return TC_ACT_UNSPEC;
	}
	n = len;
	if (n > l7_snaplen) {
		n = l7_snaplen;
		l7_stat(L7_STAT_TRUNCATED, 1);
	}
	/* keep the verifier's view of n in [1, L7_MAX_SNAP] (clang folds the
	 * checks above into 32-bit compares it cannot follow) */
	asm volatile("" : "+r"(n));
	if (n > L7_MAX_SNAP)
		n = L7_MAX_SNAP;
	if (n == 0 || bpf_skb_load_bytes(skb, pkt.off, r->data, n) < 0) {
		bpf_ringbuf_discard(r, 0);
		l7_stat(L7_STAT_LOST, 1);
		return TC_ACT_UNSPEC;
	}
	r->ts_ns = bpf_ktime_get_ns();
	__builtin_memcpy(r->saddr, hdr.saddr, 16);
	__builtin_memcpy(r->daddr, hdr.daddr, 16);
	r->sport = hdr.sport;
	r->dport = hdr.dport;
	r->proto = hdr.proto;
	r->family = hdr.family;
	r->direction = direction;
	r->kind = kind;
	r->ifindex = skb->ifindex;
	r->tcp_seq = hdr.tcp_seq;
	r->payload_len = len;
	r->cap_len = n;
	r->tcp_flags = hdr.tcp_flags;
	r->pad = 0;
	bpf_ringbuf_submit(r, 0);
	l7_stat(L7_STAT_SAMPLED, 1);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int l7_ingress(struct __sk_buff *skb)
{
	return l7_sample(skb, L7_DIR_INGRESS);
}

SEC("tc")
int l7_egress(struct __sk_buff *skb)
{
	return l7_sample(skb, L7_DIR_EGRESS);
}

char LICENSE[] SEC("license") = "GPL";
