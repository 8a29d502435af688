/* pybpfnet connection tracking: constants and the structures shared by the
 * BPF side and user space (which reads their layout from BTF).
 *
 * TCP state numbers are those of the kernel's enum tcp_conntrack
 * (include/uapi/linux/netfilter/nf_conntrack_tcp.h) so that states compare
 * directly with nf_conntrack's; the non-TCP states follow them. */
#ifndef PYBN_CT_STRUCTS_H
#define PYBN_CT_STRUCTS_H

#include <linux/types.h>

/* enum ct_state: one field for every protocol */
enum ct_state {
	CT_NONE = 0,
	CT_SYN_SENT = 1,
	CT_SYN_RECV = 2,
	CT_ESTABLISHED = 3,
	CT_FIN_WAIT = 4,
	CT_CLOSE_WAIT = 5,
	CT_LAST_ACK = 6,
	CT_TIME_WAIT = 7,
	CT_CLOSE = 8,
	CT_SYN_SENT2 = 9,	/* SYN seen from both sides: simultaneous open */
	CT_UNREPLIED = 10,	/* UDP, ICMP: nothing seen in the reply direction */
	CT_REPLIED = 11,	/* UDP, ICMP: reply seen */
	CT_ASSURED = 12,	/* UDP: traffic after the reply, a stream */
	CT_NSTATES = 13,
};

/* Markers in the TCP transition table (never stored in an entry). */
#define CT_T_INVALID 14
#define CT_T_IGNORE 15

/* Timeout slots of ct_config.timeout_ms */
enum ct_timeout {
	CT_TO_SYN_SENT = 0,
	CT_TO_SYN_RECV = 1,
	CT_TO_ESTABLISHED = 2,
	CT_TO_FIN_WAIT = 3,
	CT_TO_CLOSE_WAIT = 4,
	CT_TO_LAST_ACK = 5,
	CT_TO_TIME_WAIT = 6,
	CT_TO_CLOSE = 7,
	CT_TO_SYN_SENT2 = 8,
	CT_TO_UNACK = 9,	/* TCP with data not yet acknowledged */
	CT_TO_UDP = 10,		/* UDP unreplied or not yet a stream */
	CT_TO_UDP_STREAM = 11,
	CT_TO_ICMP = 12,
	CT_NTIMEOUTS = 13,
};

/* ct_entry.status bits */
#define CT_S_SEEN_REPLY 0x01
#define CT_S_ASSURED 0x02
#define CT_S_SIMOPEN 0x04	/* SYN from the reply side seen (SYN_SENT2) */
#define CT_S_NAT 0x08		/* reply tuple is not the inverse of the original */

/* ct_tcp_dir.flags (per direction, as nf_conntrack's ip_ct_tcp_state) */
#define CT_TF_WSCALE 0x01	/* sent the window scale option */
#define CT_TF_SACK_PERM 0x02
#define CT_TF_CLOSE_INIT 0x04	/* this side sent the first FIN */
#define CT_TF_LIBERAL 0x08	/* picked up mid-stream: no window checks */
#define CT_TF_DATA_UNACK 0x10	/* sent data not acknowledged yet */

/* TCP flag bits as in the header's 13th byte */
#define CT_FIN 0x01
#define CT_SYN 0x02
#define CT_RST 0x04
#define CT_PSH 0x08
#define CT_ACK 0x10
#define CT_URG 0x20
#define CT_ECE 0x40
#define CT_CWR 0x80

/* Packet classes of the TCP transition table */
enum ct_tcp_index {
	CT_I_SYN = 0,
	CT_I_SYNACK = 1,
	CT_I_FIN = 2,
	CT_I_ACK = 3,
	CT_I_RST = 4,
	CT_I_NONE = 5,
};

enum ct_dir {
	CT_DIR_ORIGINAL = 0,
	CT_DIR_REPLY = 1,
};

enum ct_table {
	CT_TABLE_ESTABLISHED = 0,
	CT_TABLE_EMBRYONIC = 1,
};

/* ct_process() verdicts, named as nf_conntrack's ctstate */
enum ct_verdict {
	CT_V_NEW = 1,
	CT_V_ESTABLISHED = 2,
	CT_V_INVALID = 3,
	CT_V_UNTRACKED = 4,
};

/* ct_result.flags */
#define CT_R_CREATED 0x01
#define CT_R_IGNORED 0x02	/* accepted but left the entry as it was */
#define CT_R_CHANGED 0x04	/* state or status changed */
#define CT_R_DESTROYED 0x08
#define CT_R_BUSY 0x10		/* entry locked by another CPU: counted only */

enum ct_event_type {
	CT_EV_NEW = 1,
	CT_EV_UPDATE = 2,
	CT_EV_DESTROY = 3,
};

/* ct_config.events bits */
#define CT_EVMASK_NEW (1 << CT_EV_NEW)
#define CT_EVMASK_UPDATE (1 << CT_EV_UPDATE)
#define CT_EVMASK_DESTROY (1 << CT_EV_DESTROY)

enum ct_reason {
	CT_RSN_NONE = 0,
	CT_RSN_TIMEOUT = 1,	/* swept after its timeout */
	CT_RSN_EXPIRED = 2,	/* found expired by a packet */
	CT_RSN_RESET = 3,	/* RST before any reply */
	CT_RSN_REOPEN = 4,	/* a new SYN on a closing connection */
	CT_RSN_DELETE = 5,	/* deleted from user space */
	CT_RSN_FLUSH = 6,
};

/* One direction of a connection as it appears on the wire. Addresses are
 * in network order (IPv4 in the first 4 bytes, the rest zero); ports in
 * host order; ICMP echo: the identifier in both port fields. */
struct ct_tuple {
	__u8 src[16];
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 family;		/* 4 or 6 */
	__u8 pad[2];
} __attribute__((aligned(8)));

/* Hash key: one per connection whatever the direction. TCP/UDP: the two
 * endpoints ordered by (address bytes, port); ICMP echo: requester first. */
struct ct_key {
	__u8 a[16];
	__u8 b[16];
	__u16 aport;
	__u16 bport;
	__u8 proto;
	__u8 family;
	__u16 zone;
} __attribute__((aligned(8)));

/* Window tracking state of one direction (the sender's view). */
struct ct_tcp_dir {
	__u32 end;		/* highest seq + len sent */
	__u32 maxend;		/* highest seq the receiver's window allows */
	__u32 maxwin;		/* largest window advertised (scaled) */
	__u8 scale;		/* window scale shift */
	__u8 flags;		/* CT_TF_* */
	__u16 pad;
};

struct ct_entry {
	struct ct_tuple orig;	/* as the first packet was seen */
	struct ct_tuple reply;	/* the reply as it is expected on the wire */
	__u64 first_seen;	/* ct_now(): jiffies (see ct_clock) */
	__u64 last_seen;
	__u64 expires;
	__u64 packets[2];	/* [CT_DIR_ORIGINAL], [CT_DIR_REPLY] */
	__u64 bytes[2];		/* layer 3 bytes, as nf_conntrack counts */
	struct ct_tcp_dir tcp[2];
	__u64 lock;		/* try-lock around the state machine */
	__u8 state;		/* enum ct_state */
	__u8 status;		/* CT_S_* */
	__u8 tcp_flags[2];	/* TCP flags seen per direction */
	__u8 last_index;	/* class of the last TCP packet that counted */
	__u8 last_dir;
	__u8 pad[2];
};

struct ct_event {
	__u64 ts;
	struct ct_tuple orig;
	struct ct_tuple reply;
	__u64 packets[2];
	__u64 bytes[2];
	__u64 first_seen;
	__u8 type;		/* enum ct_event_type */
	__u8 state;
	__u8 old_state;
	__u8 status;
	__u8 reason;		/* enum ct_reason (destroy) */
	__u8 table;
	__u8 pad[2];
};

/* Per-CPU counters; user space sums them. */
struct ct_stats {
	__u64 packets;		/* seen by ct_process */
	__u64 untracked;	/* not TCP/UDP/ICMP echo, non-first fragments */
	__u64 invalid;
	__u64 ignored;
	__u64 created;
	__u64 promoted;		/* moved from the embryonic to the established table */
	__u64 reopened;
	__u64 reset_before_reply;
	__u64 expired;		/* found expired by a packet */
	__u64 busy;		/* entry locked by another CPU */
	__u64 events_lost;	/* ring buffer full */
	__u64 insert_failed;
	__u64 inserts[2];	/* per table, successful inserts */
	__u64 deletes[2];	/* per table, successful deletes (any reason) */
	__u64 reaped;		/* deleted by the user-space sweep */
	__u64 nat_alias_stale;
};

/* Load-time configuration (.rodata: set on the spec before load). */
struct ct_config {
	__u32 timeout_ms[CT_NTIMEOUTS];
	__u32 udp_stream_ms;	/* UDP becomes a stream this long after creation */
	__u8 tcp_loose;		/* pick up connections from a mid-stream ACK */
	__u8 tcp_liberal;	/* only count out-of-window packets, never invalid */
	__u8 events;		/* CT_EVMASK_* */
	__u8 drop_invalid;	/* standalone program: drop INVALID packets */
	__u32 hz;		/* the kernel's HZ: times in jiffies; 0: in ns */
};

/* A request to the reaper (see ct_reap in pybn_conntrack.h). */
struct ct_reap_req {
	struct ct_key key;
	__u8 table;		/* enum ct_table */
	__u8 reason;		/* enum ct_reason */
	__u8 force;		/* delete even if not expired */
	__u8 pad[5];
};

/* A packet reduced to what the tracker needs; filled by ct_parse_*() or
 * by the caller's own parser. */
struct ct_pkt {
	struct ct_tuple tuple;
	__u32 seq;
	__u32 ack;
	__u32 len;		/* layer 3 length (IP header included) */
	__u32 payload;		/* TCP payload length */
	__u16 win;
	__u8 tcp_flags;
	__u8 status;		/* enum ct_pkt_status */
	__u8 wscale;		/* TCP window scale option, 0xff when absent */
	__u8 sack_perm;
	__u8 has_opts;		/* TCP header longer than 20 bytes */
	__u8 icmp_request;	/* ICMP echo request (1) or reply (0) */
	__u16 opt_off;		/* SYN options still to read: offset from the frame start */
	__u8 opt_len;		/* and length (0: none) */
	__u8 pad[5];
} __attribute__((aligned(8)));

/* TCP options copied out of the packet for ct_tcp_opts_parse(). */
struct ct_tcp_opts {
	__u8 buf[48];		/* 40 used, the rest zero */
	__u32 len;
	__u8 wscale;
	__u8 sack_perm;
	__u8 pad[2];
};

enum ct_pkt_status {
	CT_P_OK = 0,
	CT_P_UNTRACKED = 1,	/* nothing to track */
	CT_P_INVALID = 2,	/* a tracked protocol, malformed */
};

#endif
