/* The load balancer's flow hash: murmur3's 32-bit mixing (Austin Appleby,
 * public domain) over 32-bit words, without the length step. Words are the
 * address bytes loaded little-endian (4 per address, IPv4 zero-padded),
 * then (sport << 16 | dport), then the protocol; with LB_F_SRC_HASH the
 * source address alone. _lb_model.flow_hash computes the same values. */
#ifndef LB_HASH_H
#define LB_HASH_H

#include <linux/types.h>

static __always_inline __u32 lb_rotl(__u32 x, int r)
{
	return (x << r) | (x >> (32 - r));
}

static __always_inline __u32 lb_mix(__u32 h, __u32 k)
{
	k *= 0xcc9e2d51;
	k = lb_rotl(k, 15);
	k *= 0x1b873593;
	h ^= k;
	h = lb_rotl(h, 13);
	return h * 5 + 0xe6546b64;
}

static __always_inline __u32 lb_fmix(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

static __always_inline __u32 lb_hash_addr(__u32 h, const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	h = lb_mix(h, w[0]);
	h = lb_mix(h, w[1]);
	h = lb_mix(h, w[2]);
	return lb_mix(h, w[3]);
}

static __always_inline __u32 lb_flow_hash(const __u8 *src, const __u8 *dst, __u16 sport,
					  __u16 dport, __u8 proto, int src_only, __u32 seed)
{
	__u32 h = lb_hash_addr(seed, src);

	if (!src_only) {
		h = lb_hash_addr(h, dst);
		h = lb_mix(h, ((__u32)sport << 16) | dport);
		h = lb_mix(h, proto);
	}
	return lb_fmix(h);
}

#endif
