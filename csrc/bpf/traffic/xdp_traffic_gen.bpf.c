/* pybpfnet traffic generator: the XDP program that BPF_PROG_TEST_RUN runs on
 * every frame of a live-frames run (BPF_F_TEST_XDP_LIVE_FRAMES, Linux >=
 * 5.18). The kernel hands it each frame as if received on the ctx's
 * ingress_ifindex; XDP_TX sends the frame out of that interface (the kernel
 * turns it into a redirect to the same device), XDP_REDIRECT out of
 * another. Frames live in page-pool pages that are recycled without being
 * copied again, so whatever the program writes stays in the page: every
 * rewrite below is complete (a value) or incremental against what is there
 * (checksums), never relative to the original packet.
 *
 * Configuration is .rodata, fixed at load: features left off are removed
 * by the verifier, so the plain generator is just "return XDP_TX". */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "traffic_gen.h"

/* 0: XDP_TX out of the run's ingress interface; else bpf_redirect() here. */
const volatile __u32 redirect_ifindex = 0;

/* Sweep: a 2- or 4-byte big-endian field at sweep_offset takes the values
 * sweep_start, sweep_start + 1, ..., sweep_start + sweep_count - 1 in turn
 * (one sequence per CPU), and up to TG_MAX_CSUMS 16-bit internet checksums
 * covering it (offsets in sweep_csum, 0 = unused) are updated to match
 * (RFC 1624). sweep_size 0 turns the sweep off. */
const volatile __u32 sweep_offset = 0;
const volatile __u32 sweep_size = 0;
const volatile __u32 sweep_start = 0;
const volatile __u32 sweep_count = 1;
const volatile __u32 sweep_csum[TG_MAX_CSUMS] = {};

/* Frames this program handled, per CPU (the sweep's sequence). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sweep_seq SEC(".maps");

/* Update a 16-bit internet checksum for a field whose 16-bit words changed
 * from old to new: HC' = ~(~HC + ~m + m') (RFC 1624, eqn. 3). One's
 * complement sums do not depend on byte order, so every word is used as it
 * sits in the packet. */
static __always_inline __u16 csum_replace(__u16 check, __u32 old, __u32 new,
					  __u32 size)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~old + (new & 0xffff);
	if (size == 4)
		sum += (__u16)~(old >> 16) + (new >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	check = (__u16)~sum;
	/* 0 and 0xffff are both one's-complement zero; a UDP checksum of 0
	 * would mean "none", so write the other */
	return check ? check : 0xffff;
}

static __always_inline int sweep(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u16 *field = data + (sweep_offset & TG_OFFSET_MASK);
	__u32 zero = 0, old, new, value;
	__u64 *seq;
	int i;

	seq = bpf_map_lookup_elem(&sweep_seq, &zero);
	if (!seq)
		return -1;
	value = sweep_start + (__u32)(*seq % sweep_count);
	*seq += 1;
	/* 16-bit accesses: the offset need only be even */
	if (sweep_size == 2) {
		if ((void *)(field + 1) > end)
			return -1;
		old = field[0];
		field[0] = bpf_htons((__u16)value);
		new = field[0];
	} else {
		if ((void *)(field + 2) > end)
			return -1;
		old = field[0] | (__u32)field[1] << 16;
		field[0] = bpf_htons((__u16)(value >> 16));
		field[1] = bpf_htons((__u16)value);
		new = field[0] | (__u32)field[1] << 16;
	}
	for (i = 0; i < TG_MAX_CSUMS; i++) {
		__u16 *check = data + (sweep_csum[i] & TG_OFFSET_MASK);

		if (!sweep_csum[i])
			continue;
		if ((void *)(check + 1) > end)
			return -1;
		/* a UDP checksum of 0: the sender chose none (IPv4) */
		if (*check)
			*check = csum_replace(*check, old, new, sweep_size);
	}
	return 0;
}

SEC("xdp")
int xdp_traffic_gen(struct xdp_md *ctx)
{
	if (sweep_size && sweep(ctx))
		return XDP_ABORTED;
	if (redirect_ifindex)
		return bpf_redirect(redirect_ifindex, 0);
	return XDP_TX;
}

/* Feature probe: run with BPF_F_TEST_XDP_LIVE_FRAMES, it drops its frame
 * (nothing leaves the machine); the call fails on kernels without live
 * frames. */
SEC("xdp")
int xdp_traffic_probe(struct xdp_md *ctx)
{
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
