/* Test object for tracing attach: a tracepoint, a raw tracepoint and a
 * tp_btf program counting events of one process (target_tgid, set before
 * load) in .bss counters. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __u32 target_tgid = 0;

__u64 tp_hits = 0;
__u64 raw_hits = 0;
__u64 btf_hits = 0;

static __always_inline int ours(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int tp_getpid(void *ctx)
{
	if (ours())
		__sync_fetch_and_add(&tp_hits, 1);
	return 0;
}

SEC("raw_tp/sys_enter")
int raw_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	if (ours())
		__sync_fetch_and_add(&raw_hits, 1);
	return 0;
}

SEC("tp_btf/sys_enter")
int btf_sys_enter(__u64 *ctx)
{
	if (ours())
		__sync_fetch_and_add(&btf_hits, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
