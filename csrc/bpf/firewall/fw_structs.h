/* Firewall value layouts. User space reads them from BTF (the maps' types
 * and the fw_layout_* variables in firewall.bpf.c), never by hand. */
#ifndef FW_STRUCTS_H
#define FW_STRUCTS_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include "fw_consts.h"

/* The set of deciding rules one field value matches: bit i = rule id i.
 * `summary` bit j is set when w[j] != 0 (an aggregated bit vector);
 * `count` is the same for the count rules. `gen`: the generation that
 * wrote the value (a debugging aid). */
struct fw_bitmap {
	__u32 gen;
	__u32 pad;
	__u64 summary;
	__u64 count;
	__u64 w[FW_WORDS];
};

/* classes[FW_CLASS_META]: same size as fw_bitmap. */
struct fw_meta {
	__u32 gen;
	__u8 default_action;	/* FW_ACT_PASS / FW_ACT_DROP */
	__u8 frag_policy;	/* enum fw_frag_policy */
	__u8 malformed_action;
	__u8 non_ip_action;
	__u32 nrules;		/* deciding rules */
	__u8 addr_mode[4];	/* enum fw_addr_mode, by enum fw_tag */
	__u8 lengths[4][FW_HASH_LENGTHS];	/* FW_ADDR_HASH: longest first, 0 ends */
	__u64 count_all;	/* every count rule: those before "no match" */
	__u64 reserved[FW_WORDS - 2];
};

/* classes[FW_CLASS_PORTIDX + i]: the class ids of FW_PORT_IDS ports. */
struct fw_portidx {
	__u32 gen;
	__u32 pad;
	__u32 ids[FW_PORT_IDS];
	__u8 reserved[16];	/* to the size of fw_bitmap */
};

struct fw_lpm_key {
	__u32 prefixlen;	/* 8 (slot and tag) + prefix length */
	__u8 data[20];		/* slot << 2 | tag, address (4 or 16 bytes), padding */
};

/* Key of the hash of prefixes: the address masked to len bits. */
struct fw_prefix_key {
	__u8 slot_tag;		/* slot << 2 | tag */
	__u8 len;
	__u8 pad[2];
	__u8 addr[16];
};

struct fw_rule {
	__u32 gen;
	__u8 action;		/* enum fw_action */
	__u8 pad[3];
	__u32 bucket;		/* rate_limit: token-bucket id */
	__u32 pad2;
	__u64 count_before;	/* count rules that come before this rule */
	__u64 cost_ns;		/* rate_limit: 1e9 / pps */
	__u64 tolerance_ns;	/* rate_limit: (burst - 1) * cost_ns */
};

struct fw_counter {
	__u64 packets;
	__u64 bytes;
	__u64 drops;
};

struct fw_state {
	__u32 gen;		/* active generation; slot = gen & 1 */
	__u32 pad;
};

struct fw_bucket_key {
	__u32 bucket;
	__u32 family;
	__u8 addr[16];
};

/* GCRA: the theoretical arrival time of the next conforming packet. */
struct fw_bucket {
	__u64 tat;
};

struct fw_pkt {
	__u8 kind;		/* FW_PKT_* */
	__u8 family;		/* 4 or 6 */
	__u8 proto;
	__u8 pad;
	__u16 sport;
	__u16 dport;
	__u16 pa;		/* protocol/aux slot (FW_PA_*) */
	__u16 pad2;
	__u8 src[16];
	__u8 dst[16];
};

/* The enums user space needs, as BTF (firewall.bpf.c: fw_layout_enums). */
struct fw_enums {
	enum fw_addr_mode addr_mode;
	enum fw_action action;
	enum fw_frag_policy frag_policy;
	enum fw_reason reason;
	enum fw_event event;
};

/* The numbers user space needs, published once (firewall.bpf.c: fw_abi)
 * so they are defined in one place. */
struct fw_abi {
	__u32 max_rules;
	__u32 max_count_rules;
	__u32 max_vlans;
	__u32 max_ext;
	__u32 lpm_entries;
	__u32 port_index;
	__u32 max_classes;
	__u32 class_l4any;
	__u32 class_any;
	__u32 class_pa;
	__u32 class_portidx;
	__u32 port_ids;
	__u32 class_ports;
	__u32 pa_tcp;
	__u32 pa_icmp;
	__u32 pa_icmp6;
	__u32 pa_slots;
	__u32 cnt_count;
	__u32 cnt_reason;
	__u32 cnt_entries;
	__u32 nreasons;
	__u32 nevents;
	__u32 hash_lengths;
};

#endif
