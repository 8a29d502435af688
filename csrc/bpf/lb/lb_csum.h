/* One's complement checksum helpers for XDP (bpf_l3/l4_csum_replace are
 * TC-only). They work on 16-bit words as loaded from the packet: the sum
 * is byte-order independent (RFC 1071 section 2(B)), so no swapping. The
 * Python model (_lb_model.py) follows the same steps, so the 0x0000 /
 * 0xffff representation of a result agrees bit for bit. */
#ifndef LB_CSUM_H
#define LB_CSUM_H

#include <linux/types.h>

static __always_inline __u16 lb_fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* Sum of n 16-bit words at p (n a compile-time constant). */
static __always_inline __u64 lb_sum16(const void *p, int n)
{
	const __u16 *w = p;
	__u64 s = 0;
	int i;

#pragma unroll
	for (i = 0; i < n; i++)
		s += w[i];
	return s;
}

/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') over n words old -> new. */
static __always_inline __u16 lb_csum_replace(__u16 check, const void *old, const void *new, int n)
{
	const __u16 *o = old, *w = new;
	__u64 s = (__u16)~check;
	int i;

#pragma unroll
	for (i = 0; i < n; i++)
		s += (__u16)~o[i] + (__u64)w[i];
	return ~lb_fold(s);
}

#endif
