/* Differential-test subject: drop UDP/TCP to port 53, echo port 7 back
 * (MAC swap + XDP_TX), pass the rest. IPv4 (any IHL) and IPv6 (no extension
 * headers), behind at most one VLAN tag; non-first IPv4 fragments pass. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("xdp")
int port_filter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l4;
	__u16 proto;
	__u8 ipproto;

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	proto = eth->h_proto;
	data = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		__be16 *inner = data;
		if ((void *)(inner + 2) > end)
			return XDP_PASS;
		proto = inner[1];
		data = inner + 2;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data;
		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return XDP_PASS;
		if (ip->frag_off & bpf_htons(0x1FFF))
			return XDP_PASS;
		ipproto = ip->protocol;
		l4 = (void *)ip + ip->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data;
		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		ipproto = ip6->nexthdr;
		l4 = ip6 + 1;
	} else {
		return XDP_PASS;
	}
	if (ipproto != IPPROTO_UDP && ipproto != IPPROTO_TCP)
		return XDP_PASS;
	if (l4 + 4 > end)
		return XDP_PASS;
	__u16 dport = bpf_ntohs(((__be16 *)l4)[1]);
	if (dport == 53)
		return XDP_DROP;
	if (dport == 7) {
		unsigned char tmp[ETH_ALEN];
		__builtin_memcpy(tmp, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
		__builtin_memcpy(eth->h_source, tmp, ETH_ALEN);
		return XDP_TX;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
