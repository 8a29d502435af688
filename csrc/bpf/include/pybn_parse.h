/* Bounds-checked header parsing shared by pybpfnet's BPF programs. */
#ifndef PYBN_PARSE_H
#define PYBN_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct hdr_cursor {
	void *pos;
	void *end;
};

/* Returns a pointer to the next len bytes and advances, or NULL when the
 * packet is too short. */
static __always_inline void *cursor_pull(struct hdr_cursor *c, __u32 len)
{
	void *p = c->pos;

	if (p + len > c->end)
		return NULL;
	c->pos = p + len;
	return p;
}

/* An 802.1Q / 802.1ad tag: what follows the MAC addresses when the outer
 * EtherType is ETH_P_8021Q or ETH_P_8021AD. */
struct pybn_vlan_hdr {
	__be16 tci;
	__be16 proto;		/* the EtherType after the tag */
};

/* Pulls the Ethernet header and at most one 802.1Q/802.1ad tag; *proto
 * is the EtherType after them. Returns -1 when the packet is too short. */
static __always_inline int pybn_parse_eth(struct hdr_cursor *c, __be16 *proto)
{
	struct ethhdr *eth = cursor_pull(c, sizeof(*eth));
	__be16 p;

	if (!eth)
		return -1;
	p = eth->h_proto;
	if (p == bpf_htons(ETH_P_8021Q) || p == bpf_htons(ETH_P_8021AD)) {
		struct pybn_vlan_hdr *v = cursor_pull(c, sizeof(*v));

		if (!v)
			return -1;
		p = v->proto;
	}
	*proto = p;
	return 0;
}

/* dst (16 bytes) = the IPv4-mapped IPv6 address ::ffff:addr. */
static __always_inline void pybn_map4(__u8 *dst, __be32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

#define PYBN_IP6_EXT_TRUNC	(-1)	/* an extension header is cut short */
#define PYBN_IP6_EXT_FRAG	1	/* a non-first fragment: no L4 header */

/* Walks at most max_ext (a constant: the loop is unrolled) IPv6 extension
 * headers (hop-by-hop, routing, destination options, fragment) from the
 * cursor, which stands after the fixed IPv6 header; *nh is the fixed
 * header's next header on entry. Returns 0 with the cursor at the header
 * *nh names (the L4 protocol, or the next extension header when there are
 * more than max_ext); PYBN_IP6_EXT_FRAG for a non-first fragment, *nh the
 * protocol of the fragment's payload; PYBN_IP6_EXT_TRUNC when an
 * extension header is cut short, *nh that header's type. */
static __always_inline int pybn_ipv6_skip_ext(struct hdr_cursor *c, __u8 *nh,
					      const int max_ext)
{
	__u8 next = *nh;
	int i, rc = 0;

#pragma unroll
	for (i = 0; i < max_ext; i++) {
		__u8 *ext;

		if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING ||
		    next == IPPROTO_DSTOPTS) {
			ext = cursor_pull(c, 8);
			if (!ext) {
				rc = PYBN_IP6_EXT_TRUNC;
				break;
			}
			c->pos = ext + (ext[1] + 1) * 8;
			next = ext[0];
		} else if (next == IPPROTO_FRAGMENT) {
			ext = cursor_pull(c, 8);
			if (!ext) {
				rc = PYBN_IP6_EXT_TRUNC;
				break;
			}
			next = ext[0];
			if ((ext[2] << 8 | ext[3]) & 0xfff8) {
				rc = PYBN_IP6_EXT_FRAG;
				break;
			}
		} else {
			break;
		}
	}
	*nh = next;
	return rc;
}

#endif
