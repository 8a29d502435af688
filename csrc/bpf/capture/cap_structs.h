/* Packet capture layouts. User space reads them from BTF (the
 * capture_layout_* variables in capture.bpf.c), never by hand. */
#ifndef CAP_STRUCTS_H
#define CAP_STRUCTS_H

#include <linux/types.h>

#define CAP_DIR_INGRESS 0
#define CAP_DIR_EGRESS 1

/* Largest snap length: the per-CPU scratch buffer holds one record.
 * Percpu allocations are limited to 32 KiB per element. */
#define CAP_MAX_SNAPLEN 16384
/* Filter size: a disjunction of up to CAP_MAX_TERMS conjunctions of up to
 * CAP_MAX_LITS field tests each (compiled by dataplanes/_cap_filter.py). */
#define CAP_MAX_TERMS 32	/* a power of two */
#define CAP_MAX_LITS 8

/* Counters of capture_stats (a per-CPU array). */
enum cap_stat {
	CAP_STAT_SEEN = 0,	/* packets that reached the program */
	CAP_STAT_CAPTURED = 1,	/* records written to the ring */
	CAP_STAT_FILTERED = 2,	/* packets the filter rejected */
	CAP_STAT_LOST = 3,	/* matching packets lost: ring full */
	CAP_STAT_MAX = 4,
};

/* What a filter literal tests. */
enum cap_field {
	CAP_F_FAMILY = 1,	/* IP version == family */
	CAP_F_PROTO = 2,	/* L4 protocol == proto (and family if not 0) */
	CAP_F_SADDR = 3,	/* family matches and (saddr & mask) == addr */
	CAP_F_DADDR = 4,	/* family matches and (daddr & mask) == addr */
	CAP_F_SPORT = 5,	/* TCP/UDP/SCTP (first fragment) and sport == port */
	CAP_F_DPORT = 6,	/* TCP/UDP/SCTP (first fragment) and dport == port */
	CAP_F_ADDR = 7,		/* CAP_F_SADDR or CAP_F_DADDR ('host'/'net' without src/dst) */
	CAP_F_PORT = 8,		/* CAP_F_SPORT or CAP_F_DPORT ('port' without src/dst) */
};

struct cap_lit {
	__u8 field;		/* enum cap_field */
	__u8 negate;		/* 1: the literal is the test's negation */
	__u8 family;		/* 4 or 6 (0: any, CAP_F_PROTO only) */
	__u8 proto;
	__u16 port;		/* host order */
	__u16 pad;
	__u8 addr[16];		/* already masked (IPv4: in the last 4 bytes) */
	__u8 mask[16];
};

struct cap_term {
	__u32 nlits;
	__u32 pad;
	struct cap_lit lits[CAP_MAX_LITS];
};

/* An element of capture_config: snap length and filter. A packet is
 * captured when any term has all its literals true (nterms == 0: none). */
struct cap_config {
	__u32 snaplen;		/* 1 .. CAP_MAX_SNAPLEN */
	__u32 nterms;
	struct cap_term terms[CAP_MAX_TERMS];
};

/* A ring record: this header, then cap_len bytes of the packet. */
struct cap_hdr {
	__u64 ts_ns;		/* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u32 ifindex;
	__u32 orig_len;		/* skb->len */
	__u32 cap_len;		/* min(orig_len, snaplen) */
	__u32 direction;	/* CAP_DIR_* */
};

/* The enums user space needs, as BTF (capture.bpf.c: capture_layout_enums). */
struct cap_layout_enums {
	enum cap_stat stat;
	enum cap_field field;
};

#endif
