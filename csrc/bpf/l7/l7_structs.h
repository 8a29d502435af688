/* L7 sampler layouts. User space reads them from BTF (the l7_layout_*
 * variables in l7.bpf.c), never by hand. */
#ifndef L7_STRUCTS_H
#define L7_STRUCTS_H

#include <linux/types.h>

#define L7_DIR_INGRESS 0
#define L7_DIR_EGRESS 1

/* Upper bound of the payload bytes copied per sample (l7_snaplen <= this). */
#define L7_MAX_SNAP 512

/* What a port of l7_ports is configured for (bits) and why a segment was
 * sampled (l7_sample.kind). */
enum l7_kind {
	L7_KIND_DNS = 1,	/* DNS port: every UDP datagram / TCP segment with payload */
	L7_KIND_HTTP = 2,	/* HTTP port: TCP payload starting with an HTTP/1 token */
	L7_KIND_H2 = 4,		/* HTTP/2 preface, or a segment of a connection that sent one */
};

/* Counters of l7_stats (a per-CPU array). */
enum l7_stat {
	L7_STAT_PACKETS = 0,	/* IP packets seen */
	L7_STAT_SAMPLED = 1,	/* samples put on the ring */
	L7_STAT_LOST = 2,	/* samples lost: ring full */
	L7_STAT_SKIPPED = 3,	/* payload segments on HTTP ports not at a message start */
	L7_STAT_TRUNCATED = 4,	/* samples whose payload was longer than the snap length */
	L7_STAT_MAX = 5,
};

/* One ring buffer event: a packet's addresses and the head of its L4
 * payload. Addresses are 16 bytes; IPv4 uses ::ffff:a.b.c.d. */
struct l7_sample {
	__u64 ts_ns;		/* bpf_ktime_get_ns() */
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;		/* host order */
	__u16 dport;
	__u8 proto;		/* IPPROTO_TCP / IPPROTO_UDP */
	__u8 family;		/* 4 or 6 */
	__u8 direction;		/* L7_DIR_* */
	__u8 kind;		/* enum l7_kind */
	__u32 ifindex;
	__u32 tcp_seq;		/* host order; 0 for UDP */
	__u32 payload_len;	/* L4 payload bytes of the packet */
	__u16 cap_len;		/* bytes in data (<= snap length) */
	__u8 tcp_flags;
	__u8 pad;
	__u8 data[L7_MAX_SNAP];
};

struct l7_layout_enums {
	enum l7_kind kind;
	enum l7_stat stat;
};

#endif
