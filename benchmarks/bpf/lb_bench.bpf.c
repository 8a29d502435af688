// SPDX-License-Identifier: GPL-2.0
/* The load balancer with a frame-restoring wrapper, for benchmarks/bench_lb.py.
 *
 * With repeat > 1 BPF_PROG_TEST_RUN runs the program again on the frame
 * the previous run left; the load balancer rewrites or encapsulates it.
 * lb_bench therefore puts the original frame back after each run (the
 * head moved back, the first BENCH_HDR bytes rewritten, optionally a new
 * client port and address so that every run is a new flow), and
 * floor_bench does exactly the same around a bare XDP_TX: their difference
 * is the load balancer's cost. lb_bench_ct times lb_xdp_ct's path (NAT
 * through the connection tracker). */
#include "../../csrc/bpf/lb/lb.bpf.c"

#define BENCH_HDR 96

__u8 bench_orig[BENCH_HDR];	/* the frame's first bytes (set by user space) */
__u32 bench_len;		/* the frame's length */
__u32 bench_new;		/* 1: a new client port/address every run */
__u32 bench_sport_off;		/* offset of the TCP/UDP source port */
__u32 bench_saddr_off;		/* offset of the client address's last 2 bytes */
__u32 bench_counter;

static __always_inline void bench_restore(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	int grow = (int)(end - data) - (int)bench_len;

	if (grow > 0 && bpf_xdp_adjust_head(ctx, grow))
		return;
	bpf_xdp_store_bytes(ctx, 0, bench_orig, BENCH_HDR);
	if (bench_new) {
		__u32 c = ++bench_counter;
		__u16 port = bpf_htons((__u16)(1024 + c % 64000));
		__u16 addr = bpf_htons((__u16)(c / 64000));

		bpf_xdp_store_bytes(ctx, bench_sport_off & 0xff, &port, 2);
		bpf_xdp_store_bytes(ctx, bench_saddr_off & 0xff, &addr, 2);
	}
}

SEC("xdp")
int lb_bench(struct xdp_md *ctx)
{
	struct lb_pkt p;
	int ret = lb_main(ctx, &p);

	bench_restore(ctx);
	return ret;
}

/* lb_xdp_ct's path (nat_tracking="conntrack"). */
SEC("xdp")
int lb_bench_ct(struct xdp_md *ctx)
{
	struct lb_pkt p;
	int ret = lb_main_fn(ctx, &p);

	if (ret == LB_TO_CT)
		ret = lb_ct(ctx, &p);
	bench_restore(ctx);
	return ret;
}

SEC("xdp")
int floor_bench(struct xdp_md *ctx)
{
	bench_restore(ctx);
	return XDP_TX;
}
