/* The smallest useful object: one XDP program that passes everything.
 * The open+load benchmark loads it precompiled (libbpf, pybpfnet) and bcc
 * compiles this same file at run time; bcc's own helpers define BCC_SEC. */
#ifndef BCC_SEC
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#else
#define SEC(name)
#endif

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

#ifndef BCC_SEC
char LICENSE[] SEC("license") = "GPL";
#endif
