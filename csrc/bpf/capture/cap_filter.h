/* The capture filter: a disjunction of conjunctions of field tests, read
 * from capture_config and evaluated with bpf_loop (Linux >= 5.17) so the
 * verifier checks one term's code once, not CAP_MAX_TERMS times. */
#ifndef CAP_FILTER_H
#define CAP_FILTER_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "cap_structs.h"
#include "cap_maps.h"
#include "cap_parse.h"

struct cap_eval {
	struct cap_pkt pkt;
	__u32 slot;		/* the capture_config slot read for this packet */
	__u32 matched;
};

static __always_inline int cap_addr_match(const __u8 *a, const struct cap_lit *l)
{
	__u64 a0, a1, m0, m1, v0, v1;

	__builtin_memcpy(&a0, a, 8);
	__builtin_memcpy(&a1, a + 8, 8);
	__builtin_memcpy(&m0, l->mask, 8);
	__builtin_memcpy(&m1, l->mask + 8, 8);
	__builtin_memcpy(&v0, l->addr, 8);
	__builtin_memcpy(&v1, l->addr + 8, 8);
	return (a0 & m0) == v0 && (a1 & m1) == v1;
}

static __always_inline int cap_lit_match(const struct cap_lit *l, const struct cap_pkt *p)
{
	int r = 0;

	switch (l->field) {
	case CAP_F_FAMILY:
		r = p->family == l->family;
		break;
	case CAP_F_PROTO:
		r = p->family && p->proto == l->proto && (!l->family || l->family == p->family);
		break;
	case CAP_F_SADDR:
		r = p->family == l->family && cap_addr_match(p->saddr, l);
		break;
	case CAP_F_DADDR:
		r = p->family == l->family && cap_addr_match(p->daddr, l);
		break;
	case CAP_F_ADDR:
		r = p->family == l->family &&
		    (cap_addr_match(p->saddr, l) || cap_addr_match(p->daddr, l));
		break;
	case CAP_F_SPORT:
		r = p->has_ports && p->sport == l->port;
		break;
	case CAP_F_DPORT:
		r = p->has_ports && p->dport == l->port;
		break;
	case CAP_F_PORT:
		r = p->has_ports && (p->sport == l->port || p->dport == l->port);
		break;
	}
	return r ^ (l->negate & 1);
}

static long cap_term_cb(__u32 idx, void *arg)
{
	struct cap_eval *ev = arg;
	struct cap_config *cfg;
	struct cap_term *t;
	__u32 slot = ev->slot & 1, n, i;

	if (idx >= CAP_MAX_TERMS)
		return 1;
	/* keep the bound on the register used for the address (clang may
	 * otherwise test a copy) */
	asm volatile("" : "+r"(idx));
	idx &= CAP_MAX_TERMS - 1;
	cfg = bpf_map_lookup_elem(&capture_config, &slot);
	if (!cfg)
		return 1;
	t = &cfg->terms[idx];
	n = t->nlits;
	for (i = 0; i < CAP_MAX_LITS; i++) {
		if (i >= n) {
			ev->matched = 1;
			return 1;	/* every literal held: stop */
		}
		if (!cap_lit_match(&t->lits[i], &ev->pkt))
			return 0;	/* next term */
	}
	ev->matched = 1;
	return 1;
}

/* 1 when the packet passes the filter of cfg. */
static __always_inline int cap_filter(const struct cap_config *cfg, struct cap_eval *ev)
{
	__u32 n = cfg->nterms;

	if (n > CAP_MAX_TERMS)
		n = CAP_MAX_TERMS;
	ev->matched = 0;
	bpf_loop(n, cap_term_cb, ev, 0);
	return ev->matched;
}

#endif
