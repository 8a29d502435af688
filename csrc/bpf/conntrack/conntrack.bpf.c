/* pybpfnet conntrack: standalone connection tracking of an interface.
 *
 * `ct_tc` runs at TC ingress and egress of the same interface, so one entry
 * sees both directions of every connection through it; `ct_xdp` tracks what
 * arrives at XDP. Packets always go on (TC_ACT_UNSPEC: the next program or
 * the stack decides), unless ct_cfg.drop_invalid asks to drop INVALID ones.
 * The tracker itself is csrc/bpf/include/pybn_conntrack.h; user space is
 * src/pybpfnet/dataplanes/conntrack.py. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "pybn_conntrack.h"

SEC("tc")
int ct_tc(struct __sk_buff *skb)
{
	struct ct_pkt p;
	struct ct_result r;

	if (ct_parse_skb(skb, &p) < 0)
		return TC_ACT_UNSPEC;
	ct_process(&p, NULL, &r);
	if (r.verdict == CT_V_INVALID && ct_cfg.drop_invalid)
		return TC_ACT_SHOT;
	return TC_ACT_UNSPEC;
}

SEC("xdp")
int ct_xdp(struct xdp_md *ctx)
{
	struct ct_pkt p;
	struct ct_result r;

	ct_parse_xdp(ctx, &p);
	ct_process(&p, NULL, &r);
	if (r.verdict == CT_V_INVALID && ct_cfg.drop_invalid)
		return XDP_DROP;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
