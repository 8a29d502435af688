/* Rejected by the verifier: reads the packet without a bounds check. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int bad_read(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;

	return data[64] == 7 ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
