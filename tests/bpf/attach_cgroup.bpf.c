/* Test object for cgroup attach: count the packets sent and received by the
 * sockets of a cgroup; let everything through. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

__u64 egress_packets = 0;
__u64 ingress_packets = 0;

SEC("cgroup_skb/egress")
int count_egress(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&egress_packets, 1);
	return 1;
}

SEC("cgroup_skb/ingress")
int count_ingress(struct __sk_buff *skb)
{
	__sync_fetch_and_add(&ingress_packets, 1);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
