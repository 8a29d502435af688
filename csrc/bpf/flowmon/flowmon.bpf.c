// SPDX-License-Identifier: GPL-2.0
/* Flow monitor: per-flow packets, bytes, TCP flags, timestamps and
 * handshake RTT, aggregated at TC ingress/egress. Flows leave the table on
 * FIN/RST (exported here through the ring buffer) or by user space's sweep
 * (idle/active timeouts). When the table is full a packet becomes a
 * one-packet record on the ring; only a full ring as well loses data, and
 * that is counted (FM_STAT_LOST_*). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>
#include "flowmon_structs.h"
#include "flowmon_maps.h"
#include "flowmon_parse.h"

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_ACK 0x10

/* 1: every packet reads bpf_ktime_get_ns(); 0 (default): see fm_now() */
const volatile __u32 flowmon_exact_clock = 0;
/* packets of one CPU that may share a cached clock reading */
#define FM_CLOCK_USES 32

const volatile struct flow_record flowmon_layout_record;
const volatile struct fm_layout_enums flowmon_layout_enums;

static __always_inline void fm_stat(__u32 idx, __u64 v)
{
	__u64 *p = bpf_map_lookup_elem(&flowmon_stats, &idx);

	if (p)
		*p += v;	/* per-CPU: no atomics needed */
}

/* bcc's bpf_log2l plus one: 0 -> 0, 1 -> 1, 2..3 -> 2, 4..7 -> 3, ... */
static __always_inline __u32 fm_slot(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { v >>= 1; r += 1; }
	return v ? r + 1 : 0;
}

/* bpf_ktime_get_ns() costs ~30 ns on a VM's clocksource, as much as the
 * rest of an existing flow's update. Unless exact: a packet without
 * SYN/FIN/RST reuses the reading its CPU cached while jiffies has not
 * moved and for at most FM_CLOCK_USES packets (bpf_jiffies64 is inlined by
 * the verifier). Such a timestamp is never later than the real time and at
 * most one scheduler tick (1/CONFIG_HZ) earlier; SYN, SYN-ACK, FIN and RST
 * (the handshake RTT, the export) always read the clock. */
static __always_inline __u64 fm_now(int exact)
{
	__u32 zero = 0;
	struct fm_clock *c;
	__u64 j;

	if (flowmon_exact_clock)
		return bpf_ktime_get_ns();
	c = bpf_map_lookup_elem(&flowmon_clock, &zero);
	if (!c)
		return bpf_ktime_get_ns();
	j = bpf_jiffies64();
	if (!exact && c->jiffies == j && c->uses < FM_CLOCK_USES) {
		c->uses++;
		return c->ns;
	}
	c->ns = bpf_ktime_get_ns();
	c->jiffies = j;
	c->uses = 0;
	return c->ns;
}

/* On a SYN-ACK: the SYN of the reverse flow at the same hook gives the
 * handshake RTT (0: no SYN seen, or already measured). */
static __always_inline __u64 fm_handshake_rtt(const struct flow_key *key, __u64 now)
{
	struct flow_key rev = {};
	struct flow_stats *s;
	__u64 rtt;
	__u32 slot;
	__u64 *cnt;

	__builtin_memcpy(rev.saddr, key->daddr, 16);
	__builtin_memcpy(rev.daddr, key->saddr, 16);
	rev.sport = key->dport;
	rev.dport = key->sport;
	rev.proto = key->proto;
	rev.family = key->family;
	rev.direction = key->direction ^ 1;
	rev.ifindex = key->ifindex;
	s = bpf_map_lookup_elem(&flowmon_flows, &rev);
	if (!s || !s->syn_ns || s->rtt_ns || now < s->syn_ns)
		return 0;
	rtt = now - s->syn_ns;
	s->rtt_ns = rtt;
	slot = fm_slot(rtt / 1000);
	if (slot >= FM_RTT_SLOTS)
		slot = FM_RTT_SLOTS - 1;
	cnt = bpf_map_lookup_elem(&flowmon_rtt_hist, &slot);
	if (cnt)
		*cnt += 1;
	fm_stat(FM_STAT_RTT_SAMPLES, 1);
	return rtt;
}

static __always_inline int fm_emit(const struct flow_key *key, const struct flow_stats *st,
				   __u32 reason)
{
	struct flow_record *r = bpf_ringbuf_reserve(&flowmon_events, sizeof(*r), 0);

	if (!r)
		return -1;
	__builtin_memcpy(&r->key, key, sizeof(*key));
	__builtin_memcpy(&r->stats, st, sizeof(*st));
	r->reason = reason;
	r->pad = 0;
	bpf_ringbuf_submit(r, 0);
	return 0;
}

static __always_inline void fm_add(struct flow_stats *s, __u64 segs, __u64 bytes,
				   __u32 flags, __u64 now, __u64 rtt)
{
	__sync_fetch_and_add(&s->packets, segs);
	__sync_fetch_and_add(&s->bytes, bytes);
	if (flags & ~s->tcp_flags)
		__sync_fetch_and_or(&s->tcp_flags, flags);
	if (now > s->last_ns)
		s->last_ns = now;
	if ((flags & (TH_SYN | TH_ACK)) == TH_SYN && !s->syn_ns)
		s->syn_ns = now;
	if (rtt && !s->rtt_ns)
		s->rtt_ns = rtt;
}

static __always_inline int fm_account(struct __sk_buff *skb, __u8 direction)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct flow_key key = {};
	struct fm_pkt pkt = {};
	struct flow_stats fresh = {};
	struct flow_stats *s;
	__u64 now, segs, bytes, rtt = 0;
	int err;

	if (fm_parse(data, end, &key, &pkt) < 0) {
		fm_stat(FM_STAT_NON_IP, 1);
		return TC_ACT_UNSPEC;
	}
	key.direction = direction;
	key.ifindex = skb->ifindex;
	now = fm_now(key.proto == IPPROTO_TCP &&
		     (pkt.tcp_flags & (TH_SYN | TH_FIN | TH_RST)));
	/* A GSO skb leaves as gso_segs segments, each with the same headers. */
	segs = skb->gso_segs ? skb->gso_segs : 1;
	bytes = skb->len;
	if (segs > 1 && pkt.hdr_len)
		bytes += (segs - 1) * pkt.hdr_len;
	fm_stat(FM_STAT_PACKETS, segs);

	if (key.proto == IPPROTO_TCP && (pkt.tcp_flags & (TH_SYN | TH_ACK)) == (TH_SYN | TH_ACK))
		rtt = fm_handshake_rtt(&key, now);

	if (key.proto == IPPROTO_TCP && (pkt.tcp_flags & (TH_FIN | TH_RST))) {
		struct flow_record *r = bpf_ringbuf_reserve(&flowmon_events, sizeof(*r), 0);

		if (r) {
			__builtin_memcpy(&r->key, &key, sizeof(key));
			s = bpf_map_lookup_elem(&flowmon_flows, &key);
			if (s) {
				__builtin_memcpy(&r->stats, s, sizeof(*s));
				bpf_map_delete_elem(&flowmon_flows, &key);
			} else {
				__builtin_memset(&r->stats, 0, sizeof(r->stats));
				r->stats.first_ns = now;
			}
			r->stats.packets += segs;
			r->stats.bytes += bytes;
			r->stats.tcp_flags |= pkt.tcp_flags;
			r->stats.last_ns = now;
			if (rtt && !r->stats.rtt_ns)
				r->stats.rtt_ns = rtt;
			r->reason = (pkt.tcp_flags & TH_RST) ? FM_REASON_RST : FM_REASON_FIN;
			r->pad = 0;
			bpf_ringbuf_submit(r, 0);
			return TC_ACT_UNSPEC;
		}
		/* ring full: keep the flow in the table; the sweep exports it */
		fm_stat(FM_STAT_RING_DEFERRED, 1);
	}

	s = bpf_map_lookup_elem(&flowmon_flows, &key);
	if (s) {
		fm_add(s, segs, bytes, pkt.tcp_flags, now, rtt);
		return TC_ACT_UNSPEC;
	}
	fresh.first_ns = now;
	fresh.last_ns = now;
	fresh.packets = segs;
	fresh.bytes = bytes;
	fresh.tcp_flags = pkt.tcp_flags;
	fresh.rtt_ns = rtt;
	if ((pkt.tcp_flags & (TH_SYN | TH_ACK)) == TH_SYN)
		fresh.syn_ns = now;
	err = bpf_map_update_elem(&flowmon_flows, &key, &fresh, BPF_NOEXIST);
	if (!err)
		return TC_ACT_UNSPEC;
	if (err == -EEXIST) {
		/* another CPU created it first */
		s = bpf_map_lookup_elem(&flowmon_flows, &key);
		if (s) {
			fm_add(s, segs, bytes, pkt.tcp_flags, now, rtt);
			return TC_ACT_UNSPEC;
		}
	}
	/* table full (E2BIG) or out of memory: this packet goes out on its own */
	if (fm_emit(&key, &fresh, FM_REASON_FULL) == 0) {
		fm_stat(FM_STAT_FULL, 1);
	} else {
		fm_stat(FM_STAT_LOST_RECORDS, 1);
		fm_stat(FM_STAT_LOST_PACKETS, segs);
		fm_stat(FM_STAT_LOST_BYTES, bytes);
	}
	return TC_ACT_UNSPEC;
}

SEC("tc")
int flowmon_ingress(struct __sk_buff *skb)
{
	return fm_account(skb, FM_DIR_INGRESS);
}

SEC("tc")
int flowmon_egress(struct __sk_buff *skb)
{
	return fm_account(skb, FM_DIR_EGRESS);
}

#include "flowmon_drops.h"
#include "flowmon_sweep.h"
#include "flowmon_srtt.h"

char LICENSE[] SEC("license") = "GPL";
