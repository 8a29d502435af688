// SPDX-License-Identifier: GPL-2.0
/* A BPF_PROG_TYPE_SYSCALL program: it reads its context, writes an answer
 * back into it and into a map (what a loader program does with its args). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct args {
	__u32 a;
	__u32 b;
	__u64 sum;		/* written by the program */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} last_sum SEC(".maps");

SEC("syscall")
int add(struct args *ctx)
{
	__u32 zero = 0;
	__u64 sum = (__u64)ctx->a + ctx->b;

	ctx->sum = sum;
	bpf_map_update_elem(&last_sum, &zero, &sum, BPF_ANY);
	return ctx->a > ctx->b ? 1 : 2;
}

char LICENSE[] SEC("license") = "GPL";
