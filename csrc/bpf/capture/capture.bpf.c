// SPDX-License-Identifier: GPL-2.0
/* Packet capture: at TC ingress/egress (or XDP), packets that pass the filter
 * (capture_config, compiled from a tcpdump-like expression by
 * dataplanes/_cap_filter.py) are copied, up to the snap length, into the
 * capture_events ring buffer with a cap_hdr in front. A full ring loses
 * the packet and counts it (CAP_STAT_LOST). The programs never change a
 * verdict: they return TC_ACT_UNSPEC / XDP_PASS. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "cap_structs.h"
#include "cap_maps.h"
#include "cap_parse.h"
#include "cap_filter.h"

const volatile struct cap_hdr capture_layout_hdr;
const volatile struct cap_config capture_layout_config;
const volatile struct cap_layout_enums capture_layout_enums;

static __always_inline void cap_stat(__u32 idx)
{
	__u64 *p = bpf_map_lookup_elem(&capture_stats, &idx);

	if (p)
		*p += 1;	/* per-CPU: no atomics needed */
}

/* The scratch record for a packet that passes the filter, with its header
 * filled in except cap_len; NULL when the filter rejects it. */
static __always_inline struct cap_scratch *cap_select(void *data, void *end, __u32 len,
						       __u32 ifindex, __u32 direction,
						       __u64 *caplen)
{
	struct cap_eval ev = {};
	struct cap_config *cfg;
	struct cap_scratch *s;
	__u32 zero = 0, n;

	cap_stat(CAP_STAT_SEEN);
	ev.slot = capture_active & 1;
	cfg = bpf_map_lookup_elem(&capture_config, &ev.slot);
	if (!cfg)
		return NULL;
	cap_parse(data, end, &ev.pkt);
	if (!cap_filter(cfg, &ev)) {
		cap_stat(CAP_STAT_FILTERED);
		return NULL;
	}
	s = bpf_map_lookup_elem(&capture_scratch, &zero);
	if (!s)
		return NULL;
	n = cfg->snaplen;
	if (n > len)
		n = len;
	if (n > CAP_MAX_SNAPLEN)
		n = CAP_MAX_SNAPLEN;
	s->hdr.ts_ns = bpf_ktime_get_ns();
	s->hdr.ifindex = ifindex;
	s->hdr.orig_len = len;
	s->hdr.direction = direction;
	*caplen = n;
	return s;
}

/* Copy caplen bytes of the packet with load (bpf_skb_load_bytes or
 * bpf_xdp_load_bytes) into the scratch record; caplen = 0 when it fails.
 * The empty asm keeps clang from folding the two range tests into one on a
 * copy, (caplen - 1) < MAX, that the verifier cannot carry back to caplen. */
#define CAP_LOAD(load, ctx, s, caplen)						\
	do {									\
		if (caplen) {							\
			asm volatile("" : "+r"(caplen));			\
			if (caplen > CAP_MAX_SNAPLEN ||				\
			    load(ctx, 0, (s)->data, caplen) < 0)			\
				caplen = 0;					\
		}								\
	} while (0)

static __always_inline void cap_submit(struct cap_scratch *s, __u64 caplen)
{
	if (caplen > CAP_MAX_SNAPLEN)
		caplen = 0;
	s->hdr.cap_len = caplen;
	if (bpf_ringbuf_output(&capture_events, s, sizeof(s->hdr) + caplen, 0) < 0)
		cap_stat(CAP_STAT_LOST);
	else
		cap_stat(CAP_STAT_CAPTURED);
}

static __always_inline int cap_tc(struct __sk_buff *skb, __u32 direction)
{
	struct cap_scratch *s;
	__u64 caplen = 0;

	s = cap_select((void *)(long)skb->data, (void *)(long)skb->data_end, skb->len,
		       skb->ifindex, direction, &caplen);
	if (!s)
		return TC_ACT_UNSPEC;
	/* bpf_skb_load_bytes reads paged data too (GSO packets, large frames) */
	CAP_LOAD(bpf_skb_load_bytes, skb, s, caplen);
	cap_submit(s, caplen);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int capture_ingress(struct __sk_buff *skb)
{
	return cap_tc(skb, CAP_DIR_INGRESS);
}

SEC("tc")
int capture_egress(struct __sk_buff *skb)
{
	return cap_tc(skb, CAP_DIR_EGRESS);
}

/* At XDP (ingress only, before the stack builds an skb: xdpdump's place).
 * Loaded only when asked for: bpf_xdp_get_buff_len and bpf_xdp_load_bytes
 * (multi-buffer frames too) need Linux >= 5.18. */
SEC("xdp")
int capture_xdp(struct xdp_md *ctx)
{
	struct cap_scratch *s;
	__u64 caplen = 0;

	s = cap_select((void *)(long)ctx->data, (void *)(long)ctx->data_end,
		       bpf_xdp_get_buff_len(ctx), ctx->ingress_ifindex, CAP_DIR_INGRESS, &caplen);
	if (!s)
		return XDP_PASS;
	CAP_LOAD(bpf_xdp_load_bytes, ctx, s, caplen);
	cap_submit(s, caplen);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
