/* Flow monitor layouts. User space reads them from BTF (the flowmon_layout_*
 * variables in flowmon.bpf.c), never by hand. */
#ifndef FLOWMON_STRUCTS_H
#define FLOWMON_STRUCTS_H

#include <linux/types.h>

#define FM_DIR_INGRESS 0
#define FM_DIR_EGRESS 1

/* Why a record left the table (values shared with dataplanes/_flow_abi.py
 * through the BTF of enum fm_reason). */
enum fm_reason {
	FM_REASON_FIN = 1,	/* a FIN was seen: exported from BPF */
	FM_REASON_RST = 2,	/* a RST was seen: exported from BPF */
	FM_REASON_FULL = 3,	/* the table was full: a one-packet record */
	FM_REASON_IDLE = 4,	/* user space sweep: idle timeout */
	FM_REASON_ACTIVE = 5,	/* user space sweep: active timeout */
	FM_REASON_FLUSH = 6,	/* user space flush (monitor closed or asked) */
};

/* Counters of flowmon_stats (a per-CPU array). */
enum fm_stat {
	FM_STAT_PACKETS = 0,	/* IP packets seen */
	FM_STAT_NON_IP = 1,	/* packets without IPv4/IPv6 (ARP, ...) */
	FM_STAT_FULL = 2,	/* records sent directly because the table was full */
	FM_STAT_LOST_RECORDS = 3,	/* full table and full ring: records lost */
	FM_STAT_LOST_PACKETS = 4,	/* ... and the packets they held */
	FM_STAT_LOST_BYTES = 5,	/* ... and their bytes */
	FM_STAT_RING_DEFERRED = 6,	/* FIN/RST records kept in the table: ring full */
	FM_STAT_RTT_SAMPLES = 7,	/* SYN -> SYN-ACK pairs measured */
	FM_STAT_DROPS = 8,	/* kernel drops (kfree_skb) of IP packets in the netns */
	FM_STAT_DROPS_UNMATCHED = 9,	/* ... of packets of no flow in the table */
	FM_STAT_SRTT_SAMPLES = 10,	/* tcp_probe srtt samples (segments received) */
	FM_STAT_MAX = 11,
};

/* Addresses are 16 bytes; IPv4 uses the IPv4-mapped form ::ffff:a.b.c.d. */
struct flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;		/* host order; ICMP: type */
	__u16 dport;		/* host order; ICMP: code */
	__u8 proto;
	__u8 family;		/* 4 or 6 */
	__u8 direction;		/* FM_DIR_* */
	__u8 pad;
	__u32 ifindex;
};

struct flow_stats {
	__u64 first_ns;		/* bpf_ktime_get_ns() of the first packet */
	__u64 last_ns;		/* ... of the latest packet */
	__u64 packets;		/* segments on the wire (GSO skbs count gso_segs) */
	__u64 bytes;		/* L2 bytes on the wire (GSO expanded) */
	__u64 syn_ns;		/* when the SYN (without ACK) was seen, 0: not seen */
	__u64 rtt_ns;		/* SYN -> SYN-ACK at this hook, 0: not measured */
	__u64 tcp_flags;	/* OR of every packet's TCP flags (FIN = 0x01 ... CWR = 0x80);
				 * 64 bits: 32-bit atomics need -mcpu=v3 */
	__u64 drops;		/* packets of this flow the kernel dropped (kfree_skb) */
	__u64 srtt_us;		/* the socket's latest smoothed RTT in microseconds
				 * (tcp_probe tracepoint), 0: unknown */
};

/* One ring buffer event. */
struct flow_record {
	struct flow_key key;
	struct flow_stats stats;
	__u32 reason;		/* enum fm_reason */
	__u32 pad;
};

/* The enums user space needs, as BTF (flowmon.bpf.c: flowmon_layout_enums). */
struct fm_layout_enums {
	enum fm_reason reason;
	enum fm_stat stat;
};

#endif
