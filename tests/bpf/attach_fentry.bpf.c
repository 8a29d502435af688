/* Test object for BPF trampolines: fentry/fexit programs (refused with EPERM
 * where the kernel or a sandbox disables trampolines). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

__u64 entries = 0;

SEC("fentry/do_unlinkat")
int on_unlink(void *ctx)
{
	__sync_fetch_and_add(&entries, 1);
	return 0;
}

SEC("fexit/do_unlinkat")
int after_unlink(void *ctx)
{
	__sync_fetch_and_add(&entries, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
