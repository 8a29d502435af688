/* Test object for XDP and TC attach: programs that count what they see in
 * .bss counters (read through obj.globals) and either continue the TC chain
 * or stop it, so the run order of several programs shows in the counters. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

__u64 xdp_a_hits = 0;
__u64 xdp_b_hits = 0;
__u64 tc_next_hits = 0;
__u64 tc_stop_hits = 0;

SEC("xdp")
int xdp_a(struct xdp_md *ctx)
{
	__sync_fetch_and_add(&xdp_a_hits, 1);
	return XDP_PASS;
}

SEC("xdp")
int xdp_b(struct xdp_md *ctx)
{
	__sync_fetch_and_add(&xdp_b_hits, 1);
	return XDP_PASS;
}

/* TC_ACT_UNSPEC (-1, TCX_NEXT): the next program or filter runs too. */
SEC("tc")
int tc_next(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&tc_next_hits, 1);
	return TC_ACT_UNSPEC;
}

/* TC_ACT_OK (0, TCX_PASS): accept the packet and end the chain. */
SEC("tc")
int tc_stop(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&tc_stop_hits, 1);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
