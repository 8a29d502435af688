/* Firewall constants shared by the BPF engine and (through BTF enums)
 * user space. Sizes bound every loop and every table. */
#ifndef FW_CONSTS_H
#define FW_CONSTS_H

/* Rule ids are bit positions: 64 words of 64 bits. */
#define FW_MAX_RULES		4096
#define FW_WORDS		(FW_MAX_RULES / 64)
/* `count` rules (count and go on) live in a 64-bit lane of their own. */
#define FW_MAX_COUNT_RULES	64
#define FW_MAX_VLANS		2
#ifndef FW_MAX_EXT
#define FW_MAX_EXT		8
#endif

/* Class ids: indexes of the per-generation `classes` array. */
enum fw_class {
	FW_CLASS_META = 0,	/* struct fw_meta: policies + count-rule mask */
	FW_CLASS_L4ANY = 1,	/* rules with no L4 condition (non-first fragments) */
	FW_CLASS_ANY = 2,	/* + fw_tag: the /0 entry of each address trie */
	FW_CLASS_PA = 6,	/* + dir * 1024 + protocol/aux slot (FW_PA_*) */
	FW_CLASS_PORTIDX = 2054,	/* + port index / FW_PORT_IDS: struct fw_portidx */
	FW_CLASS_PORTS = 3078,	/* port classes, numbered by the port index */
};

/* Trie tags: first byte of the LPM key data. */
enum fw_tag {
	FW_TAG_SRC4 = 0,
	FW_TAG_DST4 = 1,
	FW_TAG_SRC6 = 2,
	FW_TAG_DST6 = 3,
};

/* Protocol/aux slots: the protocol number for packets without an aux
 * field (and all non-first fragments), else TCP flags or an ICMP type. */
#define FW_PA_TCP		256	/* + TCP flags byte */
#define FW_PA_ICMP		512	/* + ICMP type */
#define FW_PA_ICMP6		768	/* + ICMPv6 type */
#define FW_PA_SLOTS		1024

/* Port index: [0, 65536) source ports, [65536, 131072) destination ports,
 * FW_PORT_IDS class ids per classes entry. */
#define FW_PORT_INDEX		(2 * 65536)
#define FW_PORT_IDS		128
#define FW_MAX_CLASSES		(FW_CLASS_PORTS + 2 * (2 * FW_MAX_RULES + 1))
#define FW_LPM_ENTRIES		(4 * (FW_MAX_RULES + 1))

enum fw_action {
	FW_ACT_PASS = 0,
	FW_ACT_DROP = 1,
	FW_ACT_COUNT = 2,
	FW_ACT_RATE = 3,
};

enum fw_frag_policy {
	FW_FRAG_ADDRESSES = 0,	/* match non-first fragments on addresses/protocol */
	FW_FRAG_DROP = 1,
	FW_FRAG_PASS = 2,
};

/* Counters: [0, FW_MAX_RULES) deciding rules by id, then count rules,
 * then what decided a packet (enum fw_reason), then the generation tag. */
#define FW_CNT_COUNT		FW_MAX_RULES
#define FW_CNT_REASON		(FW_CNT_COUNT + FW_MAX_COUNT_RULES)

enum fw_reason {
	FW_R_DEFAULT = 0,	/* no rule matched: default policy */
	FW_R_MALFORMED = 1,
	FW_R_FRAGMENT = 2,	/* fragment policy drop/pass */
	FW_R_NON_IP = 3,
	FW_NREASONS = 4,
};
#define FW_CNT_ENTRIES		(FW_CNT_REASON + FW_NREASONS)

/* Global (not per-slot) events. */
enum fw_event {
	FW_EV_UNCONFIGURED = 0,	/* no rule set published yet: passed */
	FW_EV_STALE = 1,	/* a slot not matching the generation: passed */
	FW_NEVENTS = 2,
};

/* How an address field is looked up (meta.addr_mode[tag]): not at all
 * (the rule set has no prefix for it: the /0 class), in the hash of
 * prefixes, one lookup per prefix length in meta.lengths[tag] (longest
 * first; up to FW_HASH_LENGTHS distinct lengths), or in the LPM trie. */
enum fw_addr_mode {
	FW_ADDR_ANY = 0,
	FW_ADDR_HASH = 1,
	FW_ADDR_LPM = 2,
};
#define FW_HASH_LENGTHS		4

/* Engine verdicts (mapped to XDP_* / TC_ACT_* by the entry points). */
#define FW_PASS			0
#define FW_DROP			1

/* Parsed packet kinds. */
#define FW_PKT_IP		0
#define FW_PKT_FRAG		1	/* non-first fragment: no L4 header */
#define FW_PKT_MALFORMED	2
#define FW_PKT_NON_IP		3

#endif
