/* Bounds-checked header parsing shared by pybpfnet's BPF programs. */
#ifndef PYBN_PARSE_H
#define PYBN_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
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

#endif
