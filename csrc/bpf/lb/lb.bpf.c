// SPDX-License-Identifier: GPL-2.0
/* pybpfnet Maglev L4 load balancer, XDP data plane.
 *
 * A packet to a service (VIP, port, TCP/UDP) goes to the backend its flow
 * was given (lb_flows, an LRU hash keyed by the 5-tuple), or for a flow
 * without a usable entry to the backend of slot hash % M of the service's
 * Maglev table (lb_tables, swapped whole by user space). Per service mode
 * it is then encapsulated (IPIP, GUE), MAC-rewritten (L2 DSR) or DNATed,
 * and sent out with XDP_TX. A TCP SYN without ACK that finds a flow entry
 * is a new connection reusing the 5-tuple: hashed again, entry replaced.
 * lb_xdp_ct (loaded instead of lb_xdp with lb_nat_ct set) sends NAT
 * services through the connection tracker (pybn_conntrack.h, PYBN_CT_NAT)
 * instead of lb_flows. See docs/lb-dataplane.md; the reference model is
 * src/pybpfnet/dataplanes/_lb_model.py.
 *
 * Needs Linux >= 5.10 (BPF_F_INNER_MAP for tables of any size). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lb_consts.h"
#include "lb_structs.h"
#include "lb_maps.h"
#include "lb_csum.h"
#include "lb_hash.h"
#include "lb_encap.h"
#define PYBN_CT_NAT
#include "pybn_conntrack.h"

char LICENSE[] SEC("license") = "GPL";

/* NAT services through the connection tracker (set by user space before
 * load: LbDataplane(nat_tracking="conntrack")); 0: the LRU flow table. */
const volatile __u8 lb_nat_ct = 0;

#define LB_TO_CT 0x100	/* lb_main: the packet is the tracker's (lb_ct) */
#define LB_NO_SID 0xffffffffU
#define LB_TCP_SYN 0x02
#define LB_TCP_ACK 0x10

/* Layout anchors: user space reads these types from BTF. */
const volatile struct lb_layout_enums lb_layout_enums;

static __always_inline int lb_pass(struct lb_stats *st)
{
	st->passed++;
	return XDP_PASS;
}

static __always_inline int lb_drop(struct lb_stats *st, __u32 reason)
{
	if (reason < LB_NDROPS)
		st->drops[reason]++;
	return XDP_DROP;
}

/* A packet to a VIP address that no service can take by port: dropped,
 * anything else passed. */
static __always_inline int lb_bad(struct lb_stats *st, const struct lb_pkt *p, __u32 reason)
{
	struct lb_addr_key k = {};

	__builtin_memcpy(k.addr, p->fk.dst, 16);
	k.family = p->fk.family;
	if (bpf_map_lookup_elem(&lb_vip_addrs, &k))
		return lb_drop(st, reason);
	return lb_pass(st);
}

/* The backend of slot hash % M of the service's table; NULL: none. */
static __always_inline struct lb_backend *lb_table_pick(const struct lb_pkt *p, __u32 sid,
							__u8 flags, const struct lb_config *cfg,
							struct lb_counters *sc,
							struct lb_stats *st, __u32 *bid)
{
	__u32 k0 = 0, k1 = 1, idx, m, h;
	struct lb_backend *be;
	__u32 *v, *gen;
	void *tbl;

	tbl = bpf_map_lookup_elem(&lb_tables, &sid);
	if (!tbl)
		return NULL;
	v = bpf_map_lookup_elem(tbl, &k0);
	gen = bpf_map_lookup_elem(tbl, &k1);
	if (!v || !gen)
		return NULL;
	m = *v;
	if (!m)
		return NULL;
	if (sc && sc->gen_seen != *gen) {
		sc->gen_seen = *gen;
		st->table_swaps++;
	}
	h = lb_flow_hash(p->fk.src, p->fk.dst, p->fk.sport, p->fk.dport, p->fk.proto,
			 flags & LB_F_SRC_HASH, cfg->hash_seed);
	idx = LB_TABLE_HDR + h % m;
	v = bpf_map_lookup_elem(tbl, &idx);
	if (!v || *v == LB_EMPTY)
		return NULL;
	*bid = *v;
	be = bpf_map_lookup_elem(&lb_backends, bid);
	if (!be || !be->valid)
		return NULL;
	return be;
}

/* The service of a flow entry that is still valid (same epoch), or NULL;
 * *be: its backend when that still exists. */
static __always_inline struct lb_service *lb_flow_service(const struct lb_flow *f,
							 struct lb_backend **be, __u32 *bid)
{
	struct lb_service *svc;
	__u32 sid = f->service_id;

	svc = bpf_map_lookup_elem(&lb_svc, &sid);
	if (!svc || !svc->epoch || svc->epoch != f->epoch)
		return NULL;
	*bid = f->backend_id;
	*be = bpf_map_lookup_elem(&lb_backends, bid);
	if (*be && !(*be)->valid)
		*be = NULL;
	return svc;
}

/* The service a packet's destination names, or NULL. */
static __always_inline struct lb_service *lb_lookup_service(const struct lb_pkt *p)
{
	struct lb_vip_key vk = {};
	struct lb_service *svc;
	__u32 *sid;

	__builtin_memcpy(vk.addr, p->fk.dst, 16);
	vk.port = p->fk.dport;
	vk.proto = p->fk.proto;
	vk.family = p->fk.family;
	sid = bpf_map_lookup_elem(&lb_services, &vk);
	if (!sid)
		return NULL;
	svc = bpf_map_lookup_elem(&lb_svc, sid);
	if (!svc || !svc->epoch)
		return NULL;
	return svc;
}

/* Can mode send to be at all? */
static __always_inline int lb_family_ok(__u8 mode, const struct lb_backend *be,
					const struct lb_pkt *p, const struct lb_config *cfg)
{
	if (mode == LB_M_NAT)
		return be->family == p->fk.family;
	if (mode == LB_M_IPIP || mode == LB_M_GUE)
		return be->family == 4 ? cfg->has_src4 : cfg->has_src6;
	return 1;
}

static __always_inline void lb_count(struct lb_counters *c, __u32 len)
{
	if (c) {
		c->packets++;
		c->bytes += len;
	}
}

static __always_inline int lb_l2(struct xdp_md *ctx, const struct lb_pkt *p,
				 const __u8 *dst_mac)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return -1;
	__builtin_memcpy(eth->h_dest, dst_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, p->dmac, ETH_ALEN);
	return 0;
}

/* Rewrite one address (at l3off + aoff) and one port (at l4off + poff) of
 * the packet, fixing the IPv4 header checksum and the L4 checksum. */
static __always_inline int lb_nat_rewrite(struct xdp_md *ctx, const struct lb_pkt *p,
					  int dst_side, const __u8 *addr, __u16 port)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	int udp = p->fk.proto == IPPROTO_UDP, v4 = p->fk.family == 4;
	__u16 *check, *pp, nport = bpf_htons(port);
	void *l3 = data + sizeof(struct ethhdr), *l4, *a;
	int csum;

	l4 = l3 + (v4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr));
	if (l4 + sizeof(struct udphdr) > end)
		return -1;
	if (udp) {
		check = &((struct udphdr *)l4)->check;
	} else {
		if (l4 + sizeof(struct tcphdr) > end)
			return -1;
		check = &((struct tcphdr *)l4)->check;
	}
	csum = !udp || *check;	/* UDP checksum 0: none (IPv4) */
	if (v4) {
		struct iphdr *ip = l3;

		a = dst_side ? &ip->daddr : &ip->saddr;
		ip->check = lb_csum_replace(ip->check, a, addr, 2);
		if (csum)
			*check = lb_csum_replace(*check, a, addr, 2);
		__builtin_memcpy(a, addr, 4);
	} else {
		struct ipv6hdr *ip6 = l3;

		a = dst_side ? (void *)&ip6->daddr : (void *)&ip6->saddr;
		if (csum)
			*check = lb_csum_replace(*check, a, addr, 8);
		__builtin_memcpy(a, addr, 16);
	}
	pp = dst_side ? l4 + 2 : l4;
	if (*pp != nport) {
		if (csum)
			*check = lb_csum_replace(*check, pp, &nport, 1);
		*pp = nport;
	}
	if (udp && csum && !*check)
		*check = 0xffff;	/* RFC 768: a computed 0 is sent as all ones */
	return 0;
}

/* Is the packet's source a backend's address? */
static __always_inline int lb_from_backend(const struct lb_pkt *p)
{
	struct lb_addr_key k = {};

	__builtin_memcpy(k.addr, p->fk.src, 16);
	k.family = p->fk.family;
	return bpf_map_lookup_elem(&lb_be_addrs, &k) != NULL;
}

static __always_inline int lb_is_syn(const struct lb_pkt *p)
{
	return p->fk.proto == IPPROTO_TCP &&
	       (p->tcp_flags & (LB_TCP_SYN | LB_TCP_ACK)) == LB_TCP_SYN;
}

/* The reply tuple (backend -> client) of a NAT connection to be. */
static __always_inline void lb_ct_reply(const struct lb_pkt *p, const struct lb_backend *be,
					struct ct_tuple *t)
{
	__builtin_memset(t, 0, sizeof(*t));
	__builtin_memcpy(t->src, be->addr, 16);
	__builtin_memcpy(t->dst, p->fk.src, 16);
	t->sport = be->port ? be->port : p->fk.dport;
	t->dport = p->fk.sport;
	t->proto = p->fk.proto;
	t->family = p->fk.family;
}

/* Tracked NAT (lb_nat_ct): a TCP/UDP packet without an lb_flows entry.
 * lb_main hands it (looking the service up before lb_flows) what is to a
 * NAT service (p->sid), or to no service from a backend's address
 * (lb_be_addrs): maybe a reply; passed when it is no connection's.
 *
 * New connection: backend from the Maglev table, reply tuple backend ->
 * client, ct_update creates the NAT'd connection (and its alias). Later
 * packets of either direction get their translation from the entry
 * (ct_nat_target); the backend id, service and client MAC from
 * lb_ct_peers. A SYN without ACK on an existing connection picks a backend
 * too: if the tracker reopens the connection (it was closing or closed),
 * the new one goes there; otherwise (a retransmitted SYN, a SYN on a live
 * connection) the tracker ignores it and it follows the connection. A
 * global function: verified once. */
__attribute__((noinline)) int lb_ct(struct xdp_md *ctx, struct lb_pkt *p)
{
	struct lb_backend *be = NULL, *nbe = NULL;
	struct lb_service *svc = NULL;
	struct lb_counters *sc = NULL, *bc;
	struct lb_ct_peer *pp;
	struct lb_ct_scratch *x;
	struct lb_config *cfg;
	struct lb_stats *st;
	struct ct_result r;
	struct ct_ref ref;
	__u32 zero = 0, bid = 0, nbid = 0, sid;
	int pick;

	if (!ctx || !p)
		return XDP_PASS;
	st = bpf_map_lookup_elem(&lb_stats, &zero);
	cfg = bpf_map_lookup_elem(&lb_config, &zero);
	x = bpf_map_lookup_elem(&lb_ct_scratch, &zero);
	if (!st || !cfg || !x)
		return XDP_PASS;
#define cp (x->cp)
#define reply (x->reply)
#define out (x->out)
#define peer (x->peer)
	__builtin_memset(&peer, 0, sizeof(peer));
	ct_parse_xdp(ctx, &cp);
	ct_lookup(&cp, &ref);
	if (ref.e && ref.dir == CT_DIR_REPLY) {
		/* backend -> client: back to VIP -> client */
		if (!ct_nat_target(ref.e, CT_DIR_REPLY, &out))
			return lb_pass(st);
		pp = bpf_map_lookup_elem(&lb_ct_peers, &ref.key);
		if (!pp)
			return lb_drop(st, LB_D_INVALID);
		peer = *pp;
		ct_update(&cp, &ref, NULL, &r);
		if (r.verdict == CT_V_INVALID)
			return lb_drop(st, LB_D_INVALID);
		if (lb_nat_rewrite(ctx, p, 0, out.src, out.sport) ||
		    lb_l2(ctx, p, peer.client_mac))
			return lb_drop(st, LB_D_MALFORMED);
		st->nat_replies++;
		return XDP_TX;
	}
	sid = p->sid;
	svc = sid == LB_NO_SID ? NULL : bpf_map_lookup_elem(&lb_svc, &sid);
	if (!svc || !svc->epoch || svc->mode != LB_M_NAT)
		return lb_pass(st);
	st->vip_packets++;
	sc = bpf_map_lookup_elem(&lb_svc_counters, &sid);
	lb_count(sc, p->len);
	if (ref.e) {
		if (!ct_nat_target(ref.e, CT_DIR_ORIGINAL, &out))
			return lb_drop(st, LB_D_INVALID);
		pp = bpf_map_lookup_elem(&lb_ct_peers, &ref.key);
		if (!pp)
			return lb_drop(st, LB_D_INVALID);
		peer = *pp;
	}
	pick = !ref.e || lb_is_syn(p);
	if (pick) {
		st->flow_misses++;
		nbe = lb_table_pick(p, sid, svc->flags, cfg, sc, st, &nbid);
		if (!nbe)
			return lb_drop(st, LB_D_NO_BACKEND);
		if (!lb_family_ok(LB_M_NAT, nbe, p, cfg))
			return lb_drop(st, LB_D_FAMILY);
		lb_ct_reply(p, nbe, &reply);
	}
	ct_update(&cp, &ref, pick ? &reply : NULL, &r);
	if (r.verdict == CT_V_INVALID)
		return lb_drop(st, LB_D_INVALID);
	if (r.flags & CT_R_CREATED) {
		/* a new connection (or a closed one reopened by a SYN) */
		if (ref.e)
			st->syn_rehash++;
		be = nbe;
		bid = nbid;
		peer.backend_id = bid;
		peer.service_id = sid;
		__builtin_memcpy(peer.client_mac, p->smac, ETH_ALEN);
		bpf_map_update_elem(&lb_ct_peers, &ref.key, &peer, BPF_ANY);
		bc = bpf_map_lookup_elem(&lb_be_counters, &bid);
		st->new_flows++;
		if (sc)
			sc->new_flows++;
		if (bc)
			bc->new_flows++;
		ct_tuple_invert(&reply, &out);
	} else if (ref.e) {
		bid = peer.backend_id;
		be = bpf_map_lookup_elem(&lb_backends, &bid);
		if (!be || !be->valid)
			return lb_drop(st, LB_D_NO_BACKEND);
		bc = bpf_map_lookup_elem(&lb_be_counters, &bid);
	} else {
		/* created by another CPU first: its backend is not known here */
		return lb_drop(st, LB_D_INVALID);
	}
	lb_count(bc, p->len);
	if (!be)
		return lb_drop(st, LB_D_NO_BACKEND);
	if (lb_nat_rewrite(ctx, p, 1, out.dst, out.dport) || lb_l2(ctx, p, be->mac))
		return lb_drop(st, LB_D_MALFORMED);
	return XDP_TX;
#undef cp
#undef reply
#undef out
#undef peer
}

/* Tracked NAT: the backend of the connection an ICMP error quotes
 * (p->fk: client -> VIP), or NULL. */
static __always_inline struct lb_backend *lb_ct_backend(const struct lb_pkt *p, __u32 *bid)
{
	struct lb_ct_peer *pp;
	struct ct_ref ref;
	struct ct_pkt cp;

	__builtin_memset(&cp, 0, sizeof(cp));
	__builtin_memcpy(&cp.tuple, &p->fk, sizeof(cp.tuple));
	cp.status = CT_P_OK;
	ct_lookup(&cp, &ref);
	if (!ref.e || ref.dir != CT_DIR_ORIGINAL)
		return NULL;
	pp = bpf_map_lookup_elem(&lb_ct_peers, &ref.key);
	if (!pp)
		return NULL;
	*bid = pp->backend_id;
	return bpf_map_lookup_elem(&lb_backends, bid);
}

/* A TCP/UDP packet (headers checked): of a known flow, a NAT reply, to a
 * service, or none of those (passed). */
static __always_inline int lb_l4(struct xdp_md *ctx, struct lb_pkt *p, struct lb_stats *st)
{
	struct lb_backend *be = NULL, *old_be = NULL;
	struct lb_service *svc = NULL;
	struct lb_counters *sc, *bc;
	struct lb_config *cfg;
	__u32 zero = 0, sid, bid = 0;
	struct lb_flow *f;
	__u8 mode, flags;
	int gue;

	if (lb_nat_ct) {
		/* tracked NAT: the service first; NAT services and what may be
		 * a reply (from a backend's address, to no service) are the
		 * tracker's, without an lb_flows lookup */
		svc = lb_lookup_service(p);
		if (svc ? svc->mode == LB_M_NAT : lb_from_backend(p)) {
			p->sid = svc ? svc->id : LB_NO_SID;
			return LB_TO_CT;
		}
		if (!svc)
			return lb_pass(st);
		svc = NULL;	/* another mode's: the LRU table, below */
	}
	f = bpf_map_lookup_elem(&lb_flows, &p->fk);
	if (f) {
		if (f->type == LB_FLOW_REV) {
			/* a reply from a NAT backend: back to VIP -> client */
			if (lb_nat_rewrite(ctx, p, 0, f->vip, f->vport) ||
			    lb_l2(ctx, p, f->client_mac))
				return lb_drop(st, LB_D_MALFORMED);
			st->nat_replies++;
			return XDP_TX;
		}
		svc = lb_flow_service(f, &be, &bid);
		if (svc && be && lb_is_syn(p)) {
			/* a new connection reusing the 5-tuple: through the
			 * current table, the entry is replaced */
			st->syn_rehash++;
			old_be = be;
			be = NULL;
		}
	}
	if (!svc) {
		be = NULL;
		svc = lb_lookup_service(p);
		if (!svc)
			return lb_pass(st);
	}
	cfg = bpf_map_lookup_elem(&lb_config, &zero);
	if (!cfg)
		return lb_pass(st);
	sid = svc->id;
	mode = svc->mode;
	flags = svc->flags;
	st->vip_packets++;
	sc = bpf_map_lookup_elem(&lb_svc_counters, &sid);
	lb_count(sc, p->len);
	if (!be) {
		st->flow_misses++;
		be = lb_table_pick(p, sid, flags, cfg, sc, st, &bid);
		if (!be)
			return lb_drop(st, LB_D_NO_BACKEND);
		f = NULL;	/* a new flow from here on */
	}
	if (!lb_family_ok(mode, be, p, cfg))
		return lb_drop(st, LB_D_FAMILY);
	gue = mode == LB_M_GUE;
	if ((mode == LB_M_IPIP || gue) && p->l3_len + lb_encap_len(be->family, gue) > cfg->mtu) {
		__u32 mtu = cfg->mtu - lb_encap_len(be->family, gue);

		if (p->fk.family == 4 && !p->df)
			return lb_drop(st, LB_D_TOO_BIG);
		if (lb_too_big(ctx, p, mtu))
			return lb_drop(st, LB_D_ADJUST);
		st->too_big_sent++;
		return XDP_TX;
	}
	bc = bpf_map_lookup_elem(&lb_be_counters, &bid);
	if (!f) {
		struct lb_flow n = {.backend_id = bid, .service_id = sid, .epoch = svc->epoch,
				    .type = LB_FLOW_FWD};

		__builtin_memcpy(n.client_mac, p->smac, ETH_ALEN);
		bpf_map_update_elem(&lb_flows, &p->fk, &n, BPF_ANY);
		if (mode == LB_M_NAT) {
			struct lb_flow_key rk = {};

			__builtin_memcpy(rk.dst, p->fk.src, 16);
			rk.dport = p->fk.sport;
			rk.proto = p->fk.proto;
			rk.family = p->fk.family;
			if (old_be) {
				/* the replaced flow's reply entry */
				__builtin_memcpy(rk.src, old_be->addr, 16);
				rk.sport = old_be->port ? old_be->port : p->fk.dport;
				bpf_map_delete_elem(&lb_flows, &rk);
			}
			__builtin_memcpy(rk.src, be->addr, 16);
			__builtin_memcpy(rk.dst, p->fk.src, 16);
			rk.sport = be->port ? be->port : p->fk.dport;
			rk.dport = p->fk.sport;
			rk.proto = p->fk.proto;
			rk.family = p->fk.family;
			n.type = LB_FLOW_REV;
			__builtin_memcpy(n.vip, p->fk.dst, 16);
			n.vport = p->fk.dport;
			bpf_map_update_elem(&lb_flows, &rk, &n, BPF_ANY);
		}
		st->new_flows++;
		if (sc)
			sc->new_flows++;
		if (bc)
			bc->new_flows++;
	}
	lb_count(bc, p->len);
	if (mode == LB_M_L2) {
		if (lb_l2(ctx, p, be->mac))
			return lb_drop(st, LB_D_ADJUST);
	} else if (mode == LB_M_NAT) {
		if (lb_nat_rewrite(ctx, p, 1, be->addr, be->port ? be->port : p->fk.dport) ||
		    lb_l2(ctx, p, be->mac))
			return lb_drop(st, LB_D_MALFORMED);
	} else if (lb_encap(ctx, p, be, cfg, gue)) {
		return lb_drop(st, LB_D_ADJUST);
	}
	return XDP_TX;
}

/* NAT: an ICMP error about a flow goes to the backend as the backend's own
 * packet would have caused it: the outer destination and the quoted
 * packet's source (address and port) become the backend's, the outer IPv4,
 * quoted IPv4 and ICMP checksums follow (the quoted TCP/UDP checksum is
 * left alone, as it covers a packet that is not there whole). */
static __always_inline int lb_icmp_nat(struct xdp_md *ctx, const struct lb_pkt *p,
				       const struct lb_backend *be)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u16 nport = bpf_htons(be->port ? be->port : p->fk.dport);
	__u16 *check, *ports;

	if (p->fk.family == 4) {
		struct iphdr *ip = data + sizeof(struct ethhdr), *in;
		__u16 old_inner;
		__u8 *icmp;

		icmp = (void *)(ip + 1);
		in = (void *)(icmp + 8);
		ports = (void *)(in + 1);
		if ((void *)(ports + 2) > end)
			return -1;
		check = (__u16 *)(icmp + 2);
		ip->check = lb_csum_replace(ip->check, &ip->daddr, be->addr, 2);
		__builtin_memcpy(&ip->daddr, be->addr, 4);
		old_inner = in->check;
		in->check = lb_csum_replace(in->check, &in->saddr, be->addr, 2);
		*check = lb_csum_replace(*check, &in->saddr, be->addr, 2);
		*check = lb_csum_replace(*check, &old_inner, &in->check, 1);
		__builtin_memcpy(&in->saddr, be->addr, 4);
	} else {
		struct ipv6hdr *ip6 = data + sizeof(struct ethhdr), *in;
		__u8 *icmp;

		icmp = (void *)(ip6 + 1);
		in = (void *)(icmp + 8);
		ports = (void *)(in + 1);
		if ((void *)(ports + 2) > end)
			return -1;
		check = (__u16 *)(icmp + 2);
		/* the outer destination is in the ICMPv6 pseudo-header */
		*check = lb_csum_replace(*check, &ip6->daddr, be->addr, 8);
		__builtin_memcpy(&ip6->daddr, be->addr, 16);
		*check = lb_csum_replace(*check, &in->saddr, be->addr, 8);
		__builtin_memcpy(&in->saddr, be->addr, 16);
	}
	if (ports[0] != nport) {
		*check = lb_csum_replace(*check, &ports[0], &nport, 1);
		ports[0] = nport;
	}
	return 0;
}

/* An ICMP "fragmentation needed" / ICMPv6 "packet too big" about a VIP
 * flow (the quoted packet is VIP -> client): to the flow's backend. */
static __always_inline int lb_icmp_error(struct xdp_md *ctx, struct lb_pkt *p,
					 struct lb_stats *st)
{
	struct lb_backend *be = NULL;
	struct lb_service *svc;
	struct lb_config *cfg;
	__u32 zero = 0, bid = 0;
	struct lb_flow *f;
	__u8 mode;

	/* p->fk holds the flow as the client sends it */
	svc = lb_lookup_service(p);
	if (!svc)
		return lb_pass(st);
	cfg = bpf_map_lookup_elem(&lb_config, &zero);
	if (!cfg)
		return lb_pass(st);
	mode = svc->mode;
	if (lb_nat_ct && mode == LB_M_NAT) {
		be = lb_ct_backend(p, &bid);
		if (be && !be->valid)
			be = NULL;
	} else {
		f = bpf_map_lookup_elem(&lb_flows, &p->fk);
		if (f && f->type == LB_FLOW_FWD && f->service_id == svc->id)
			lb_flow_service(f, &be, &bid);
	}
	if (!be)
		be = lb_table_pick(p, svc->id, svc->flags, cfg, NULL, st, &bid);
	if (!be)
		return lb_drop(st, LB_D_NO_BACKEND);
	if (!lb_family_ok(mode, be, p, cfg))
		return lb_drop(st, LB_D_FAMILY);
	if (mode == LB_M_L2) {
		if (lb_l2(ctx, p, be->mac))
			return lb_drop(st, LB_D_ADJUST);
	} else if (mode == LB_M_NAT) {
		if (lb_icmp_nat(ctx, p, be) || lb_l2(ctx, p, be->mac))
			return lb_drop(st, LB_D_MALFORMED);
	} else if (lb_encap(ctx, p, be, cfg, mode == LB_M_GUE)) {
		return lb_drop(st, LB_D_ADJUST);
	}
	st->icmp_forwarded++;
	return XDP_TX;
}

/* The ports (and for TCP the flags) of the TCP/UDP header at l4, whose
 * length the caller checked against the IP header's; then lb_l4. */
static __always_inline int lb_ports(struct xdp_md *ctx, struct lb_pkt *p, struct lb_stats *st,
				    __u8 *l4, void *end, __u8 proto)
{
	__u16 *ports = (void *)l4;

	if ((void *)(ports + 2) > end)
		return lb_pass(st);
	p->fk.sport = bpf_ntohs(ports[0]);
	p->fk.dport = bpf_ntohs(ports[1]);
	if (proto == IPPROTO_TCP) {
		if ((void *)(l4 + 14) > end)
			return lb_pass(st);
		p->tcp_flags = l4[13];
	}
	return lb_l4(ctx, p, st);
}

static __always_inline int lb_ipv4(struct xdp_md *ctx, struct lb_pkt *p, struct lb_stats *st)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	__u32 ihl, tot, avail, need;
	__u16 frag;
	__u8 proto;

	if ((void *)(ip + 1) > end || ip->version != 4)
		return lb_pass(st);
	p->fk.family = 4;
	__builtin_memcpy(p->fk.src, &ip->saddr, 4);
	__builtin_memcpy(p->fk.dst, &ip->daddr, 4);
	proto = ip->protocol;
	ihl = ip->ihl * 4;
	tot = bpf_ntohs(ip->tot_len);
	avail = end - (void *)ip;
	frag = bpf_ntohs(ip->frag_off);
	p->tos = ip->tos;
	p->df = !!(frag & 0x4000);
	p->l3_len = tot;
	frag &= 0x3fff;

	if (proto == IPPROTO_ICMP) {
		__u8 *icmp = (void *)(ip + 1);
		struct iphdr *in = (void *)(icmp + 8);
		__u16 *ports = (void *)(in + 1);

		if (ihl != sizeof(*ip) || frag || tot > avail || tot < 20 + 8 + 20 + 8)
			return lb_pass(st);
		if ((void *)(ports + 2) > end)
			return lb_pass(st);
		if (icmp[0] != 3 || icmp[1] != 4 || in->version != 4 || in->ihl != 5 ||
		    (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP))
			return lb_pass(st);
		/* the quoted packet is VIP -> client */
		__builtin_memset(p->fk.src, 0, 16);
		__builtin_memset(p->fk.dst, 0, 16);
		__builtin_memcpy(p->fk.src, &in->daddr, 4);
		__builtin_memcpy(p->fk.dst, &in->saddr, 4);
		p->fk.sport = bpf_ntohs(ports[1]);
		p->fk.dport = bpf_ntohs(ports[0]);
		p->fk.proto = in->protocol;
		return lb_icmp_error(ctx, p, st);
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return lb_pass(st);
	p->fk.proto = proto;
	need = proto == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr);
	if (ihl < sizeof(*ip))
		return lb_bad(st, p, LB_D_MALFORMED);
	if (frag)
		return lb_bad(st, p, LB_D_FRAGMENT);
	if (tot > avail || tot < ihl + need)
		return lb_bad(st, p, LB_D_MALFORMED);
	if (ihl != sizeof(*ip))
		return lb_bad(st, p, LB_D_UNSUPPORTED);
	return lb_ports(ctx, p, st, (void *)(ip + 1), end, proto);
}

static __always_inline int lb_ipv6(struct xdp_md *ctx, struct lb_pkt *p, struct lb_stats *st)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	__u32 plen, avail, need;
	__u8 *b = (void *)ip6;
	__u8 nh;

	if ((void *)(ip6 + 1) > end || (b[0] >> 4) != 6)
		return lb_pass(st);
	p->fk.family = 6;
	__builtin_memcpy(p->fk.src, &ip6->saddr, 16);
	__builtin_memcpy(p->fk.dst, &ip6->daddr, 16);
	nh = ip6->nexthdr;
	plen = bpf_ntohs(ip6->payload_len);
	avail = end - (void *)ip6;
	p->tos = (b[0] << 4) | (b[1] >> 4);
	p->df = 1;
	p->l3_len = sizeof(*ip6) + plen;

	if (nh == 58) {
		__u8 *icmp = (void *)(ip6 + 1);
		struct ipv6hdr *in = (void *)(icmp + 8);
		__u16 *ports = (void *)(in + 1);

		if (sizeof(*ip6) + plen > avail || plen < 8 + 40 + 8)
			return lb_pass(st);
		if ((void *)(ports + 2) > end)
			return lb_pass(st);
		if (icmp[0] != 2 || icmp[1] != 0 || (((__u8 *)in)[0] >> 4) != 6 ||
		    (in->nexthdr != IPPROTO_TCP && in->nexthdr != IPPROTO_UDP))
			return lb_pass(st);
		__builtin_memcpy(p->fk.src, &in->daddr, 16);
		__builtin_memcpy(p->fk.dst, &in->saddr, 16);
		p->fk.sport = bpf_ntohs(ports[1]);
		p->fk.dport = bpf_ntohs(ports[0]);
		p->fk.proto = in->nexthdr;
		return lb_icmp_error(ctx, p, st);
	}
	if (nh == 44)
		return lb_bad(st, p, LB_D_FRAGMENT);
	if (nh == 0 || nh == 43 || nh == 60)
		return lb_bad(st, p, LB_D_UNSUPPORTED);
	if (nh != IPPROTO_TCP && nh != IPPROTO_UDP)
		return lb_pass(st);
	p->fk.proto = nh;
	need = nh == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr);
	if (sizeof(*ip6) + plen > avail || plen < need)
		return lb_bad(st, p, LB_D_MALFORMED);
	return lb_ports(ctx, p, st, (void *)(ip6 + 1), end, nh);
}

static __always_inline int lb_main(struct xdp_md *ctx, struct lb_pkt *pp)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct lb_stats *st;
	__u32 zero = 0;
#define p (*pp)

	st = bpf_map_lookup_elem(&lb_stats, &zero);
	if (!st)
		return XDP_PASS;
	st->packets++;
	if ((void *)(eth + 1) > end)
		return lb_pass(st);
	__builtin_memset(&p, 0, sizeof(p));
	p.len = end - data;
	__builtin_memcpy(p.smac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(p.dmac, eth->h_dest, ETH_ALEN);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return lb_ipv4(ctx, &p, st);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return lb_ipv6(ctx, &p, st);
	return lb_pass(st);
#undef p
}

/* lb_main as a function of its own (tracked NAT): its stack and lb_ct's
 * are not on one call chain. */
__attribute__((noinline)) int lb_main_fn(struct xdp_md *ctx, struct lb_pkt *p)
{
	if (!ctx || !p)
		return XDP_PASS;
	return lb_main(ctx, p);
}

/* The load balancer with the LRU flow table for every mode (the default). */
SEC("xdp")
int lb_xdp(struct xdp_md *ctx)
{
	struct lb_pkt p;

	return lb_main(ctx, &p);
}

/* The load balancer with NAT services through the connection tracker
 * (loaded instead of lb_xdp, with lb_nat_ct set). Two functions, so that
 * the stack of the packet path and the tracker's are not one chain. */
SEC("xdp")
int lb_xdp_ct(struct xdp_md *ctx)
{
	struct lb_pkt p;
	int rc;

	rc = lb_main_fn(ctx, &p);
	if (rc == LB_TO_CT)
		return lb_ct(ctx, &p);
	return rc;
}
