/* pybpfnet firewall: an ordered rule set (first match wins) classified with
 * an aggregated bit-vector search, at XDP and at TC ingress/egress.
 *
 * Per packet: parse (fw_parse.h), then one bitmap per field -- source and
 * destination address (the longest prefix of the rule set containing it:
 * a hash per prefix length, or an LPM trie when a field uses many
 * lengths), direction + protocol + TCP flags or ICMP type (one "pa"
 * slot), source port and destination port -- each the set of rules that
 * field value satisfies. The lowest bit of their AND is the deciding rule;
 * the AND of the per-bitmap summaries (one bit per non-empty 64-rule
 * word) picks the words to look at, so the work does not grow with the
 * number of rules (Baboescu & Varghese, "Scalable packet classification",
 * SIGCOMM 2001). `count` rules (count and go on) have a 64-bit lane of
 * their own; those before the deciding rule are counted. See
 * docs/firewall.md. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "fw_consts.h"
#include "fw_structs.h"
#include "fw_maps.h"
#include "fw_parse.h"

const volatile struct fw_abi fw_abi = {
	.max_rules = FW_MAX_RULES,
	.max_count_rules = FW_MAX_COUNT_RULES,
	.max_vlans = FW_MAX_VLANS,
	.max_ext = FW_MAX_EXT,
	.lpm_entries = FW_LPM_ENTRIES,
	.port_index = FW_PORT_INDEX,
	.max_classes = FW_MAX_CLASSES,
	.class_l4any = FW_CLASS_L4ANY,
	.class_any = FW_CLASS_ANY,
	.class_pa = FW_CLASS_PA,
	.class_portidx = FW_CLASS_PORTIDX,
	.port_ids = FW_PORT_IDS,
	.class_ports = FW_CLASS_PORTS,
	.pa_tcp = FW_PA_TCP,
	.pa_icmp = FW_PA_ICMP,
	.pa_icmp6 = FW_PA_ICMP6,
	.pa_slots = FW_PA_SLOTS,
	.cnt_count = FW_CNT_COUNT,
	.cnt_reason = FW_CNT_REASON,
	.cnt_entries = FW_CNT_ENTRIES,
	.nreasons = FW_NREASONS,
	.nevents = FW_NEVENTS,
	.hash_lengths = FW_HASH_LENGTHS,
};

/* Layout anchors: the fw_classes values are three structs of one size;
 * user space encodes each with the layout BTF gives for these variables,
 * and reads the enums from the last. */
const volatile struct fw_bitmap fw_layout_bitmap;
const volatile struct fw_meta fw_layout_meta;
const volatile struct fw_portidx fw_layout_portidx;
const volatile struct fw_enums fw_layout_enums;

_Static_assert(sizeof(struct fw_meta) == sizeof(struct fw_bitmap), "fw_meta size");
_Static_assert(sizeof(struct fw_portidx) == sizeof(struct fw_bitmap), "fw_portidx size");

/* Index of the lowest set bit (de Bruijn multiplication). */
static const __u8 fw_debruijn[64] = {
	0, 1, 48, 2, 57, 49, 28, 3, 61, 58, 50, 42, 38, 29, 17, 4,
	62, 55, 59, 36, 53, 51, 43, 22, 45, 39, 33, 30, 24, 18, 12, 5,
	63, 47, 56, 27, 60, 41, 37, 16, 54, 35, 52, 21, 44, 32, 23, 11,
	46, 26, 40, 15, 34, 20, 31, 10, 25, 14, 19, 9, 13, 8, 7, 6,
};

static __always_inline __u32 fw_ctz(__u64 x)
{
	return fw_debruijn[((x & -x) * 0x03f79d71b4cb0a89ULL) >> 58] & 63;
}

static __always_inline void fw_event(__u32 ev)
{
	__u64 *v = bpf_map_lookup_elem(&fw_events, &ev);

	if (v)
		*v += 1;
}

static __always_inline void fw_count(__u32 idx, __u32 len, int drop)
{
	struct fw_counter *c = bpf_map_lookup_elem(&fw_counters, &idx);

	if (c) {
		c->packets++;
		c->bytes += len;
		if (drop)
			c->drops++;
	}
}

static __always_inline int fw_verdict(__u32 cbase, __u32 reason, __u8 action, __u32 len)
{
	int drop = action == FW_ACT_DROP;

	fw_count(cbase + FW_CNT_REASON + reason, len, drop);
	return drop ? FW_DROP : FW_PASS;
}

static __always_inline struct fw_bitmap *fw_class(__u32 base, __u32 id)
{
	__u32 key = base + id;

	return bpf_map_lookup_elem(&fw_classes, &key);
}

/* The bitmap of address field `tag` for addr: that of the longest prefix
 * of the rule set containing it (see enum fw_addr_mode). */
static __always_inline struct fw_bitmap *fw_addr(struct fw_meta *meta, __u32 slot, __u32 base,
						  __u32 tag, __u8 *addr, int family)
{
	struct fw_bitmap *bm;
	__u32 i, j, len, bits, w;
	__u8 mode;

	tag &= 3;
	mode = meta->addr_mode[tag];
	if (mode == FW_ADDR_HASH) {
		struct fw_prefix_key hk;

		hk.slot_tag = slot << 2 | tag;
		hk.pad[0] = 0;
		hk.pad[1] = 0;
		for (i = 0; i < FW_HASH_LENGTHS; i++) {
			len = meta->lengths[tag][i];
			if (!len)
				break;
			hk.len = len;
			for (j = 0; j < 4; j++) {
				bits = len > 32 * j ? len - 32 * j : 0;
				w = *(__u32 *)(addr + 4 * j);
				if (bits < 32)
					w &= bpf_htonl(bits ? ~0u << (32 - bits) : 0);
				*(__u32 *)(hk.addr + 4 * j) = w;
			}
			bm = bpf_map_lookup_elem(&fw_prefixes, &hk);
			if (bm)
				return bm;
		}
	} else if (mode == FW_ADDR_LPM) {
		struct fw_lpm_key key;

		key.prefixlen = family == 4 ? 8 + 32 : 8 + 128;
		key.data[0] = slot << 2 | tag;
		__builtin_memcpy(&key.data[1], addr, 16);
		__builtin_memset(&key.data[17], 0, 3);
		return bpf_map_lookup_elem(&fw_lpm, &key);
	}
	return fw_class(base, FW_CLASS_ANY + tag);
}

static __always_inline struct fw_bitmap *fw_port(__u32 base, __u32 idx)
{
	struct fw_portidx *pi = (void *)fw_class(base, FW_CLASS_PORTIDX + idx / FW_PORT_IDS);

	if (!pi)
		return NULL;
	return fw_class(base, pi->ids[idx & (FW_PORT_IDS - 1)]);
}

/* GCRA (the token bucket as a theoretical arrival time): conforming
 * packets advance tat by cost with an atomic add, so concurrent CPUs never
 * lose a charge once a source is over its rate. */
static __always_inline int fw_rate_ok(struct fw_rule *r, struct fw_pkt *p)
{
	struct fw_bucket_key k = { .bucket = r->bucket, .family = p->family };
	struct fw_bucket *b, nb;
	__u64 now = bpf_ktime_get_ns(), tat;

	__builtin_memcpy(k.addr, p->src, 16);
	b = bpf_map_lookup_elem(&fw_buckets, &k);
	if (!b) {
		nb.tat = now + r->cost_ns;
		bpf_map_update_elem(&fw_buckets, &k, &nb, BPF_NOEXIST);
		return 1;
	}
	tat = b->tat;
	if (tat < now) {
		b->tat = now + r->cost_ns;
		return 1;
	}
	if (tat - now > r->tolerance_ns)
		return 0;
	__sync_fetch_and_add(&b->tat, r->cost_ns);
	return 1;
}

/* The lowest rule id in a & b & c & d & e, or -1: only the words whose
 * summary bit is set in all five are looked at. A global function: the
 * verifier checks its loop once, whatever path led to the call. */
__noinline int fw_search(struct fw_bitmap *a, struct fw_bitmap *b, struct fw_bitmap *c,
			 struct fw_bitmap *d, struct fw_bitmap *e)
{
	__u64 cand, m;
	__u32 i, w;

	if (!a || !b || !c || !d || !e)
		return -1;
	cand = a->summary & b->summary & c->summary & d->summary & e->summary;
	for (i = 0; i < FW_WORDS; i++) {
		if (!cand)
			break;
		w = fw_ctz(cand);
		cand &= cand - 1;
		m = a->w[w] & b->w[w] & c->w[w] & d->w[w] & e->w[w];
		if (m)
			return w * 64 + fw_ctz(m);
	}
	return -1;
}

/* Classify a parsed packet with the active rule set and count it. A
 * global function: verified once, not once per parse path. */
__noinline int fw_classify(struct fw_pkt *p, int kind, __u32 dir, __u32 len)
{
	struct fw_bitmap *bs, *bd, *bp, *bsp, *bdp;
	__u32 zero = 0, gen, slot, base, cbase, id, i;
	struct fw_state *st;
	struct fw_meta *meta;
	struct fw_rule *r;
	__u64 counted;
	int winner;

	if (!p)
		return FW_PASS;
	st = bpf_map_lookup_elem(&fw_state, &zero);
	if (!st || !st->gen) {
		fw_event(FW_EV_UNCONFIGURED);
		return FW_PASS;
	}
	gen = st->gen;
	slot = gen & 1;
	base = slot * FW_MAX_CLASSES;
	cbase = slot * FW_CNT_ENTRIES;
	meta = (void *)fw_class(base, FW_CLASS_META);
	if (!meta || meta->gen != gen) {
		fw_event(FW_EV_STALE);
		return FW_PASS;
	}

	if (kind == FW_PKT_NON_IP)
		return fw_verdict(cbase, FW_R_NON_IP, meta->non_ip_action, len);
	if (kind == FW_PKT_MALFORMED)
		return fw_verdict(cbase, FW_R_MALFORMED, meta->malformed_action, len);
	if (kind == FW_PKT_FRAG && meta->frag_policy != FW_FRAG_ADDRESSES)
		return fw_verdict(cbase, FW_R_FRAGMENT, meta->frag_policy == FW_FRAG_DROP ?
				  FW_ACT_DROP : FW_ACT_PASS, len);

	bs = fw_addr(meta, slot, base, p->family == 4 ? FW_TAG_SRC4 : FW_TAG_SRC6, p->src,
		     p->family);
	bd = fw_addr(meta, slot, base, p->family == 4 ? FW_TAG_DST4 : FW_TAG_DST6, p->dst,
		     p->family);
	bp = fw_class(base, FW_CLASS_PA + (dir & 1) * FW_PA_SLOTS + (p->pa & (FW_PA_SLOTS - 1)));
	if (kind == FW_PKT_FRAG) {
		bsp = fw_class(base, FW_CLASS_L4ANY);
		bdp = bsp;
	} else {
		bsp = fw_port(base, p->sport);
		bdp = fw_port(base, 65536 + (__u32)p->dport);
	}
	if (!bs || !bd || !bp || !bsp || !bdp)
		return fw_verdict(cbase, FW_R_DEFAULT, meta->default_action, len);

	winner = fw_search(bs, bd, bp, bsp, bdp);
	counted = bs->count & bd->count & bp->count & bsp->count & bdp->count;
	r = NULL;
	if (winner >= 0) {
		id = slot * FW_MAX_RULES + (winner & (FW_MAX_RULES - 1));
		r = bpf_map_lookup_elem(&fw_rules, &id);
	}
	counted &= r ? r->count_before : meta->count_all;
	for (i = 0; i < FW_MAX_COUNT_RULES; i++) {
		if (!counted)
			break;
		fw_count(cbase + FW_CNT_COUNT + fw_ctz(counted), len, 0);
		counted &= counted - 1;
	}

	if (!r)
		return fw_verdict(cbase, FW_R_DEFAULT, meta->default_action, len);
	id = cbase + (winner & (FW_MAX_RULES - 1));
	switch (r->action) {
	case FW_ACT_DROP:
		fw_count(id, len, 1);
		return FW_DROP;
	case FW_ACT_RATE:
		if (!fw_rate_ok(r, p)) {
			fw_count(id, len, 1);
			return FW_DROP;
		}
		/* fallthrough */
	default:
		fw_count(id, len, 0);
		return FW_PASS;
	}
}

static __always_inline int fw_run(void *ctx, int xdp, void *data, void *end, __u32 len,
				  __u32 dir)
{
	struct fw_pkt p = {};
	int kind;

	kind = fw_parse(ctx, xdp, data, end, len, &p);
	return fw_classify(&p, kind, dir, len);
}

SEC("xdp")
int fw_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	return fw_run(ctx, 1, data, end, end - data, 0) == FW_DROP ? XDP_DROP : XDP_PASS;
}

static __always_inline int fw_tc(struct __sk_buff *skb, __u32 dir)
{
	__u32 want = skb->len < FW_LINEAR ? skb->len : FW_LINEAR;

	if (skb->data_end - skb->data < want)
		bpf_skb_pull_data(skb, want);
	/* TC_ACT_UNSPEC (TCX_NEXT) lets later programs see passed packets. */
	return fw_run(skb, 0, (void *)(long)skb->data, (void *)(long)skb->data_end,
		      skb->len, dir) == FW_DROP ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}

SEC("tc")
int fw_tc_ingress(struct __sk_buff *skb)
{
	return fw_tc(skb, 0);
}

SEC("tc")
int fw_tc_egress(struct __sk_buff *skb)
{
	return fw_tc(skb, 1);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
