/* Kernel smoothed RTT: the tcp:tcp_probe tracepoint (tp_btf; this kernel
 * has no kprobes and refuses fentry) fires in tcp_rcv_established for every
 * segment an established socket receives. Its tcp_sock's srtt_us (<< 3)
 * goes into a log2 histogram (as bcc's tcprtt samples it) and into the
 * flow table entries of the connection on the interface the segment came
 * in on (skb_iif), both directions, as the latest srtt. Kernel types are
 * declared with CO-RE relocations, as in flowmon_drops.h (which this
 * header follows: struct net, sk_buff). */
#ifndef FLOWMON_SRTT_H
#define FLOWMON_SRTT_H

#include <linux/bpf.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "flowmon_structs.h"
#include "flowmon_maps.h"

/* The members of struct sock_common read here; in the kernel they sit in
 * anonymous unions, which CO-RE matches through. */
struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct tcp_sock {
	__u32 srtt_us;		/* smoothed RTT << 3, in microseconds */
} __attribute__((preserve_access_index));

static __always_inline int fm_is_v4_mapped(const __u8 *a)
{
	__u64 lo;
	__u32 mid;

	__builtin_memcpy(&lo, a, 8);
	__builtin_memcpy(&mid, a + 8, 4);
	return lo == 0 && mid == bpf_htonl(0x0000ffff);
}

static __always_inline void fm_srtt_set(struct flow_key *key, __u64 srtt)
{
	struct flow_stats *s = bpf_map_lookup_elem(&flowmon_flows, key);

	if (s && s->srtt_us != srtt)
		s->srtt_us = srtt;
}

/* tp_btf/tcp_probe: ctx[0] struct sock *, ctx[1] const struct sk_buff *. */
SEC("tp_btf/tcp_probe")
int flowmon_srtt(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	struct sk_buff *skb = (struct sk_buff *)ctx[1];
	struct flow_key key = {};
	__u8 local[16], remote[16];
	__u64 srtt, *cnt;
	__u32 slot;
	__u16 lport, rport;

	if (flowmon_netns_ino &&
	    BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) != flowmon_netns_ino)
		return 0;
	srtt = BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
	if (!srtt)
		return 0;
	slot = fm_slot(srtt);
	if (slot >= FM_RTT_SLOTS)
		slot = FM_RTT_SLOTS - 1;
	cnt = bpf_map_lookup_elem(&flowmon_srtt_hist, &slot);
	if (cnt)
		*cnt += 1;
	fm_stat(FM_STAT_SRTT_SAMPLES, 1);

	if (BPF_CORE_READ(sk, __sk_common.skc_family) == 2 /* AF_INET */) {
		pybn_map4(local, BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr));
		pybn_map4(remote, BPF_CORE_READ(sk, __sk_common.skc_daddr));
		key.family = 4;
	} else {
		bpf_core_read(local, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(remote, 16, &sk->__sk_common.skc_v6_daddr);
		/* a dual-stack socket talking IPv4: the same mapped form as the keys */
		key.family = fm_is_v4_mapped(remote) ? 4 : 6;
	}
	lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	key.proto = IPPROTO_TCP;
	key.ifindex = BPF_CORE_READ(skb, skb_iif);
	/* the received segment's flow: remote -> local, ingress */
	__builtin_memcpy(key.saddr, remote, 16);
	__builtin_memcpy(key.daddr, local, 16);
	key.sport = rport;
	key.dport = lport;
	key.direction = FM_DIR_INGRESS;
	fm_srtt_set(&key, srtt);
	/* and what the socket sends: local -> remote, egress */
	__builtin_memcpy(key.saddr, local, 16);
	__builtin_memcpy(key.daddr, remote, 16);
	key.sport = lport;
	key.dport = rport;
	key.direction = FM_DIR_EGRESS;
	fm_srtt_set(&key, srtt);
	return 0;
}

#endif
