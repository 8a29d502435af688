/* pybpfnet connection tracking for XDP and TC programs.
 *
 * Include this file once per program object; it defines the tables
 * (pybn_ct_maps.h), the load-time configuration `ct_cfg`, and two helper
 * programs run by user space through BPF_PROG_TEST_RUN (`ct_reap`, which
 * deletes what the Python sweep asks for, and `ct_count`). Define
 * PYBN_CT_NAT before including it for connections whose reply tuple is
 * rewritten (NAT), PYBN_CT_NO_PROGS to leave out the helper programs.
 *
 *	struct ct_pkt p;
 *	struct ct_result r;
 *
 *	ct_parse(data, data_end, &p);		(or fill p from your own parser)
 *	ct_process(&p, NULL, &r);		(look up, create, update)
 *	if (r.verdict == CT_V_ESTABLISHED) ...	(CT_V_NEW, _INVALID, _UNTRACKED)
 *
 * With NAT (a load balancer rewriting the destination to a backend):
 *
 *	struct ct_ref ref;
 *
 *	ct_lookup(&p, &ref);
 *	if (!ref.e) {				(new flow: pick a backend)
 *		struct ct_tuple reply;		(backend -> client)
 *		...
 *		ct_update(&p, &ref, &reply, &r);
 *	} else {
 *		ct_update(&p, &ref, NULL, &r);
 *	}
 *	if (r.entry && ct_nat_target(r.entry, r.dir, &out)) ... rewrite the
 *	packet to out (the tuple it must carry after translation).
 *
 * Needs Linux >= 5.17 (bpf_loop); ct_count needs >= 6.6. */
#ifndef PYBN_CONNTRACK_H
#define PYBN_CONNTRACK_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "pybn_ct_structs.h"
#include "pybn_ct_maps.h"
#include "pybn_ct_tcp.h"
#include "pybn_ct_parse.h"

#define CT_LOCK_SPINS 32

/* Where a packet's connection is (filled by ct_lookup). */
struct ct_ref {
	struct ct_key key;	/* the connection's key (after a NAT alias) */
	struct ct_entry *e;	/* NULL: no connection yet */
	__u8 table;		/* enum ct_table of e */
	__u8 dir;		/* enum ct_dir of the packet */
	__u8 conflict;		/* key taken by a NAT alias of another tuple */
	__u8 pad[5];
};

struct ct_result {
	/* The entry after the packet: NULL when the packet destroyed it,
	 * when it was invalid, and (without PYBN_CT_NAT) when it created it. */
	struct ct_entry *entry;
	__u8 verdict;		/* enum ct_verdict */
	__u8 dir;
	__u8 state;		/* enum ct_state after the packet */
	__u8 flags;		/* CT_R_* */
	__u8 table;
	__u8 pad[3];
};

static __always_inline int ct_is_icmp(__u8 proto)
{
	return proto == IPPROTO_ICMP || proto == 58;
}

static __always_inline int ct_addr_cmp(const __u8 *a, const __u8 *b)
{
	__u64 x = bpf_be64_to_cpu(*(const __u64 *)a), y = bpf_be64_to_cpu(*(const __u64 *)b);

	if (x == y) {
		x = bpf_be64_to_cpu(*(const __u64 *)(a + 8));
		y = bpf_be64_to_cpu(*(const __u64 *)(b + 8));
	}
	return x < y ? -1 : x > y;
}

static __always_inline int ct_tuple_eq(const struct ct_tuple *a, const struct ct_tuple *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3] && x[4] == y[4];
}

static __always_inline void ct_tuple_invert(const struct ct_tuple *t, struct ct_tuple *out)
{
	__builtin_memcpy(out->src, t->dst, 16);
	__builtin_memcpy(out->dst, t->src, 16);
	out->sport = t->dport;
	out->dport = t->sport;
	out->proto = t->proto;
	out->family = t->family;
	out->pad[0] = 0;
	out->pad[1] = 0;
}

/* The key of the connection a tuple belongs to. ICMP: `request` says
 * whether the tuple is the echo request's (requester first). */
static __always_inline void ct_key_of(const struct ct_tuple *t, int request, struct ct_key *k)
{
	int src_first;

	if (ct_is_icmp(t->proto)) {
		src_first = request;
	} else {
		int c = ct_addr_cmp(t->src, t->dst);

		src_first = c < 0 || (c == 0 && t->sport <= t->dport);
	}
	if (src_first) {
		__builtin_memcpy(k->a, t->src, 16);
		__builtin_memcpy(k->b, t->dst, 16);
		k->aport = t->sport;
		k->bport = t->dport;
	} else {
		__builtin_memcpy(k->a, t->dst, 16);
		__builtin_memcpy(k->b, t->src, 16);
		k->aport = t->dport;
		k->bport = t->sport;
	}
	k->proto = t->proto;
	k->family = t->family;
	k->zone = 0;
}

static __always_inline struct ct_stats *ct_stats_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&ct_stats, &zero);
}

static __always_inline void *ct_table_map(__u32 table)
{
	return table == CT_TABLE_ESTABLISHED ? (void *)&ct_established : (void *)&ct_embryonic;
}

static __always_inline int ct_trylock(struct ct_entry *e)
{
	int i;

	for (i = 0; i < CT_LOCK_SPINS; i++)
		if (__sync_val_compare_and_swap(&e->lock, 0, 1) == 0)
			return 1;
	return 0;
}

static __always_inline void ct_unlock(struct ct_entry *e)
{
	__sync_fetch_and_and(&e->lock, 0);
}

/* The tracker's clock: jiffies, as nf_conntrack's (bpf_jiffies64 costs
 * about 1 ns where the coarse monotonic clock costs 15 and the precise one
 * 30 on this project's VMs), given ct_cfg.hz (user space reads it as the
 * resolution of CLOCK_MONOTONIC_COARSE: no kernel config file needed);
 * CLOCK_MONOTONIC_COARSE nanoseconds without it. User space converts with
 * ct_clock. */
static __always_inline __u64 ct_now(void)
{
	return ct_cfg.hz ? bpf_jiffies64() : bpf_ktime_get_coarse_ns();
}

/* Milliseconds in ticks of ct_now(). */
static __always_inline __u64 ct_ms(__u64 ms)
{
	return ct_cfg.hz ? ms * ct_cfg.hz / 1000 : ms * 1000000ULL;
}

static __always_inline __u64 ct_timeout(__u64 slot)
{
	asm volatile("" : "+r"(slot));
	if (slot >= CT_NTIMEOUTS)
		slot = CT_TO_CLOSE;
	return ct_ms(ct_cfg.timeout_ms[slot]);
}

static __always_inline void ct_emit(const struct ct_entry *e, __u8 type, __u8 old_state,
				    __u8 reason, __u8 table, struct ct_stats *st)
{
	struct ct_event *ev;

	if (!(ct_cfg.events & (1 << type)))
		return;
	ev = bpf_ringbuf_reserve(&ct_events, sizeof(*ev), 0);
	if (!ev) {
		if (st)
			st->events_lost++;
		return;
	}
	ev->ts = ct_now();
	__builtin_memcpy(&ev->orig, &e->orig, sizeof(ev->orig));
	__builtin_memcpy(&ev->reply, &e->reply, sizeof(ev->reply));
	ev->packets[0] = e->packets[0];
	ev->packets[1] = e->packets[1];
	ev->bytes[0] = e->bytes[0];
	ev->bytes[1] = e->bytes[1];
	ev->first_seen = e->first_seen;
	ev->type = type;
	ev->state = e->state;
	ev->old_state = old_state;
	ev->status = e->status;
	ev->reason = reason;
	ev->table = table;
	ev->pad[0] = 0;
	ev->pad[1] = 0;
	bpf_ringbuf_submit(ev, 0);
}

/* The TCP state machine as a global function: the verifier checks it once,
 * not once per path through ct_update (load time drops several-fold). */
__attribute__((noinline)) int ct_tcp_step(struct ct_entry *e, __u32 dir, const struct ct_pkt *p,
					  __u32 *timeout)
{
	if (!e || !p || !timeout)
		return CT_A_INVALID;
	return ct_tcp_packet(e, dir & 1, p, &ct_cfg, timeout);
}

/* Remove a connection (its event first, while the entry is still whole). */
static __always_inline void ct_destroy(const struct ct_key *key, struct ct_entry *e, __u32 table,
				       __u8 reason, struct ct_stats *st)
{
#ifdef PYBN_CT_NAT
	int nat = e->status & CT_S_NAT;
	struct ct_key alias;

	if (nat)
		ct_key_of(&e->reply, 0, &alias);
#endif
	ct_emit(e, CT_EV_DESTROY, e->state, reason, table, st);
	if (bpf_map_delete_elem(ct_table_map(table), key) == 0 && st)
		st->deletes[table & 1]++;
#ifdef PYBN_CT_NAT
	if (nat)
		bpf_map_delete_elem(&ct_alias, &alias);
#endif
}

/* Find the connection of a packet parsed into p. */
static __always_inline void ct_lookup(const struct ct_pkt *p, struct ct_ref *ref)
{
	struct ct_entry *e;

	ref->e = NULL;
	ref->conflict = 0;
	ref->dir = CT_DIR_ORIGINAL;
	if (p->status != CT_P_OK)
		return;
	ct_key_of(&p->tuple, p->icmp_request, &ref->key);
	ref->table = CT_TABLE_ESTABLISHED;
	e = bpf_map_lookup_elem(&ct_established, &ref->key);
	if (!e) {
		ref->table = CT_TABLE_EMBRYONIC;
		e = bpf_map_lookup_elem(&ct_embryonic, &ref->key);
	}
#ifdef PYBN_CT_NAT
	if (!e) {
		struct ct_key *primary = bpf_map_lookup_elem(&ct_alias, &ref->key);

		if (primary) {
			struct ct_key alias = ref->key;

			ref->key = *primary;
			ref->table = CT_TABLE_ESTABLISHED;
			e = bpf_map_lookup_elem(&ct_established, &ref->key);
			if (!e) {
				ref->table = CT_TABLE_EMBRYONIC;
				e = bpf_map_lookup_elem(&ct_embryonic, &ref->key);
			}
			if (!e) {
				struct ct_stats *st = ct_stats_get();

				bpf_map_delete_elem(&ct_alias, &alias);
				ref->key = alias;
				if (st)
					st->nat_alias_stale++;
			}
		}
	}
#endif
	if (!e)
		return;
	if (ct_is_icmp(p->tuple.proto)) {
		ref->dir = p->icmp_request ? CT_DIR_ORIGINAL : CT_DIR_REPLY;
	} else if (ct_tuple_eq(&p->tuple, &e->orig)) {
		ref->dir = CT_DIR_ORIGINAL;
	} else if (ct_tuple_eq(&p->tuple, &e->reply)) {
		ref->dir = CT_DIR_REPLY;
	} else {
		ref->conflict = 1;	/* a NAT alias's key, another tuple */
		return;
	}
	ref->e = e;
}

/* Start tracking the connection p opens. */
static __always_inline void ct_create(const struct ct_pkt *p, struct ct_ref *ref,
				      const struct ct_tuple *nat_reply, __u64 now,
				      struct ct_result *r, struct ct_stats *st)
{
	__u32 t = CT_TO_CLOSE, zero = 0;
	__u8 proto = p->tuple.proto;
	struct ct_entry *n;

	r->verdict = CT_V_INVALID;
	if (proto == IPPROTO_TCP) {
		__u32 first = ct_tcp_next(CT_DIR_ORIGINAL, CT_NONE, ct_tcp_index(p->tcp_flags));

		if (!ct_tcp_flags_valid(p->tcp_flags))
			goto invalid;
		if (first != CT_SYN_SENT && !(first == CT_ESTABLISHED && ct_cfg.tcp_loose))
			goto invalid;
	} else if (ct_is_icmp(proto) && !p->icmp_request) {
		goto invalid;		/* an echo reply to nothing */
	}

	n = bpf_map_lookup_elem(&ct_scratch, &zero);
	if (!n)
		goto invalid;
	__builtin_memset(n, 0, sizeof(*n));
	__builtin_memcpy(&n->orig, &p->tuple, sizeof(n->orig));
	if (nat_reply) {
		struct ct_tuple plain;

		ct_tuple_invert(&p->tuple, &plain);
		__builtin_memcpy(&n->reply, nat_reply, sizeof(n->reply));
		if (!ct_tuple_eq(&plain, &n->reply))
			n->status |= CT_S_NAT;
	} else {
		ct_tuple_invert(&p->tuple, &n->reply);
	}
	n->first_seen = now;
	if (proto == IPPROTO_TCP) {
		ct_tcp_new(n, p);
		if (ct_tcp_step(n, CT_DIR_ORIGINAL, p, &t) != CT_A_ACCEPT)
			goto invalid;
	} else {
		n->state = CT_UNREPLIED;
		t = proto == IPPROTO_UDP ? CT_TO_UDP : CT_TO_ICMP;
	}
	n->packets[0] = 1;
	n->bytes[0] = p->len;
	n->tcp_flags[0] = p->tcp_flags;
	n->last_seen = now;
	n->expires = now + ct_timeout(t);

	if (bpf_map_update_elem(&ct_embryonic, &ref->key, n, BPF_NOEXIST)) {
		/* another CPU created it first: its packet counts, not ours */
		if (st)
			st->insert_failed++;
	} else if (st) {
		st->inserts[CT_TABLE_EMBRYONIC]++;
		st->created++;
	}
#ifdef PYBN_CT_NAT
	if (n->status & CT_S_NAT) {
		struct ct_key alias;

		ct_key_of(&n->reply, 0, &alias);
		bpf_map_update_elem(&ct_alias, &alias, &ref->key, BPF_ANY);
	}
	r->entry = bpf_map_lookup_elem(&ct_embryonic, &ref->key);
#endif
	ct_emit(n, CT_EV_NEW, CT_NONE, CT_RSN_NONE, CT_TABLE_EMBRYONIC, st);
	r->verdict = CT_V_NEW;
	r->dir = CT_DIR_ORIGINAL;
	r->state = n->state;
	r->table = CT_TABLE_EMBRYONIC;
	r->flags |= CT_R_CREATED | CT_R_CHANGED;
	return;
invalid:
	if (st)
		st->invalid++;
}

/* Move a connection that proved two-way into the established table. */
static __always_inline struct ct_entry *ct_promote(const struct ct_key *key, struct ct_entry *e,
						   struct ct_stats *st)
{
	struct ct_entry *copy;
	__u32 zero = 0;

	copy = bpf_map_lookup_elem(&ct_scratch, &zero);
	if (!copy)
		return e;
	__builtin_memcpy(copy, e, sizeof(*copy));
	copy->lock = 0;
	if (bpf_map_update_elem(&ct_established, key, copy, BPF_ANY))
		return e;
	if (bpf_map_delete_elem(&ct_embryonic, key) == 0 && st)
		st->deletes[CT_TABLE_EMBRYONIC]++;
	if (st) {
		st->inserts[CT_TABLE_ESTABLISHED]++;
		st->promoted++;
	}
	return bpf_map_lookup_elem(&ct_established, key);
}

/* Run a packet (after ct_lookup) through its connection, creating it when
 * ref->e is NULL (with nat_reply as its reply tuple, if not NULL). */
static __always_inline void ct_update(struct ct_pkt *p, struct ct_ref *ref,
				      const struct ct_tuple *nat_reply, struct ct_result *r)
{
	struct ct_stats *st = ct_stats_get();
	struct ct_entry *e = ref->e;
	__u8 old_state, old_status, dir = ref->dir;
	__u64 now;
	__u32 t = CT_TO_CLOSE;
	int action = CT_A_ACCEPT, promote = 0;

	r->entry = NULL;
	r->verdict = CT_V_UNTRACKED;
	r->flags = 0;
	r->dir = dir;
	r->state = CT_NONE;
	r->table = ref->table;
	if (st)
		st->packets++;
	if (p->status == CT_P_UNTRACKED) {
		if (st)
			st->untracked++;
		return;
	}
	now = ct_now();
	if (p->status != CT_P_OK || ref->conflict ||
	    (p->tuple.proto == IPPROTO_TCP && !ct_tcp_flags_valid(p->tcp_flags))) {
		/* malformed, or flags no TCP sends: nf_conntrack's tcp_error() */
		if (e && e->expires <= now) {
			ct_destroy(&ref->key, e, ref->table, CT_RSN_EXPIRED, st);
			if (st)
				st->expired++;
		}
		r->verdict = CT_V_INVALID;
		if (st)
			st->invalid++;
		return;
	}
	if (e && e->expires <= now) {
		ct_destroy(&ref->key, e, ref->table, CT_RSN_EXPIRED, st);
		if (st)
			st->expired++;
		e = NULL;
	}
	if (!e) {
		ct_create(p, ref, nat_reply, now, r, st);
		return;
	}

	if (!ct_trylock(e)) {
		/* another CPU held it for CT_LOCK_SPINS tries: let the packet
		 * through uncounted (the counters are only written under the
		 * lock), say so in the stats */
		if (st)
			st->busy++;
		r->verdict = (dir == CT_DIR_ORIGINAL && !(e->status & CT_S_SEEN_REPLY))
			     ? CT_V_NEW : CT_V_ESTABLISHED;
		r->flags = CT_R_BUSY;
		r->state = e->state;
		r->entry = e;
		return;
	}
	old_state = e->state;
	old_status = e->status;
	if (p->tuple.proto == IPPROTO_TCP) {
		action = ct_tcp_step(e, dir, p, &t);
	} else if (p->tuple.proto == IPPROTO_UDP) {
		t = CT_TO_UDP;
		if (e->status & CT_S_SEEN_REPLY) {
			if (now >= e->first_seen + ct_ms(ct_cfg.udp_stream_ms)) {
				t = CT_TO_UDP_STREAM;
				if (!(e->status & CT_S_ASSURED)) {
					e->status |= CT_S_ASSURED;
					e->state = CT_ASSURED;
				}
			}
		}
	} else {
		t = CT_TO_ICMP;
	}

	if (action == CT_A_ACCEPT || action == CT_A_KILL) {
		e->packets[dir & 1]++;
		e->bytes[dir & 1] += p->len;
		e->tcp_flags[dir & 1] |= p->tcp_flags;
		e->last_seen = now;
		if (action == CT_A_ACCEPT)
			e->expires = now + ct_timeout(t);
	}
	if (dir == CT_DIR_REPLY && action != CT_A_INVALID && action != CT_A_REOPEN) {
		e->status |= CT_S_SEEN_REPLY;
		if (e->state == CT_UNREPLIED)
			e->state = CT_REPLIED;
	}
	if (ref->table == CT_TABLE_EMBRYONIC && action == CT_A_ACCEPT) {
		if (p->tuple.proto == IPPROTO_TCP)
			promote = e->status & CT_S_ASSURED;
		else
			promote = dir == CT_DIR_ORIGINAL && (old_status & CT_S_SEEN_REPLY);
	}
	ct_unlock(e);

	r->verdict = (dir == CT_DIR_ORIGINAL && !(old_status & CT_S_SEEN_REPLY))
		     ? CT_V_NEW : CT_V_ESTABLISHED;
	r->state = e->state;
	r->entry = e;
	if (action == CT_A_INVALID) {
		r->verdict = CT_V_INVALID;
		r->entry = NULL;
		if (st)
			st->invalid++;
		return;
	}
	if (action == CT_A_IGNORE || action == CT_A_KEEP) {
		r->flags |= CT_R_IGNORED;
		if (st && action == CT_A_IGNORE)
			st->ignored++;
	}
	if (action == CT_A_KILL) {
		ct_destroy(&ref->key, e, ref->table, CT_RSN_RESET, st);
		if (st)
			st->reset_before_reply++;
		r->entry = NULL;
		r->flags |= CT_R_DESTROYED;
		return;
	}
	if (action == CT_A_REOPEN) {
		ct_destroy(&ref->key, e, ref->table, CT_RSN_REOPEN, st);
		if (st)
			st->reopened++;
		r->flags = CT_R_DESTROYED;
		ct_create(p, ref, nat_reply, now, r, st);
		return;
	}
	if (e->state != old_state ||
	    ((e->status ^ old_status) & (CT_S_SEEN_REPLY | CT_S_ASSURED))) {
		r->flags |= CT_R_CHANGED;
		ct_emit(e, CT_EV_UPDATE, old_state, CT_RSN_NONE, ref->table, st);
	}
	if (promote) {
		r->entry = ct_promote(&ref->key, e, st);
		r->table = CT_TABLE_ESTABLISHED;
	}
}

/* Look up and update in one call. */
static __always_inline void ct_process(struct ct_pkt *p, const struct ct_tuple *nat_reply,
				       struct ct_result *r)
{
	struct ct_ref ref;

	ct_lookup(p, &ref);
	ct_update(p, &ref, nat_reply, r);
}

/* The tuple a packet of direction dir must carry after translation:
 * original packets go to the inverse of the reply tuple, replies to the
 * inverse of the original. Returns 0 when the connection has no NAT. */
static __always_inline int ct_nat_target(const struct ct_entry *e, __u8 dir, struct ct_tuple *out)
{
	if (!(e->status & CT_S_NAT))
		return 0;
	if (dir == CT_DIR_ORIGINAL)
		ct_tuple_invert(&e->reply, out);
	else
		ct_tuple_invert(&e->orig, out);
	return 1;
}

#ifndef PYBN_CT_NO_PROGS
struct ct_reap_ctx {
	__u32 deleted;
};

static long ct_reap_one(__u32 i, void *data)
{
	struct ct_reap_ctx *c = data;
	struct ct_stats *st = ct_stats_get();
	struct ct_reap_req *rq;
	struct ct_entry *e;
	__u32 table;

	if (i >= PYBN_CT_REAP_BATCH)
		return 1;
	rq = (struct ct_reap_req *)(ct_reap_buf + i * sizeof(*rq));
	table = rq->table ? CT_TABLE_EMBRYONIC : CT_TABLE_ESTABLISHED;
	if (table == CT_TABLE_ESTABLISHED)
		e = bpf_map_lookup_elem(&ct_established, &rq->key);
	else
		e = bpf_map_lookup_elem(&ct_embryonic, &rq->key);
	if (!e)
		return 0;
	/* a packet may have refreshed it since user space read it */
	if (!rq->force && e->expires > ct_reap_now)
		return 0;
	ct_destroy(&rq->key, e, table, rq->reason, st);
	if (st)
		st->reaped++;
	c->deleted++;
	return 0;
}

/* Delete the first ct_reap_n requests of ct_reap_buf (run by user space
 * with BPF_PROG_TEST_RUN on any packet); the count lands in
 * ct_reap_deleted. */
SEC("tc")
int ct_reap(struct __sk_buff *skb)
{
	struct ct_reap_ctx c = { 0 };
	__u32 n = ct_reap_n;

	if (n > PYBN_CT_REAP_BATCH)
		n = PYBN_CT_REAP_BATCH;
	bpf_loop(n, ct_reap_one, &c, 0);
	ct_reap_deleted = c.deleted;
	return 0;
}

/* The tracker's clock next to CLOCK_MONOTONIC, written into the frame it
 * runs on (u64 ticks, u64 ns, u64 ticks per second at offset 0): user space
 * converts entry times with it, also from another process. */
SEC("tc")
int ct_clock(struct __sk_buff *skb)
{
	__u64 v[3];
	__u32 zero = 0;

	v[0] = ct_now();
	v[1] = bpf_ktime_get_ns();
	v[2] = ct_cfg.hz ? ct_cfg.hz : 1000000000ULL;
	bpf_skb_store_bytes(skb, 0, v, sizeof(v), 0);
	/* uses ct_stats, so that it is found with the tracker's maps */
	return bpf_map_lookup_elem(&ct_stats, &zero) ? 0 : 1;
}

/* bpf_map_sum_elem_count (Linux >= 6.6) takes the kernel's struct bpf_map;
 * a complete (if empty) definition is what libbpf needs to match it. */
struct bpf_map {
	int pybn_unused;
} __attribute__((preserve_access_index));
extern __s64 bpf_map_sum_elem_count(const struct bpf_map *map) __ksym __weak;

/* Element counts of the two tables into ct_count (for eviction stats). */
SEC("tc")
int ct_count_elems(struct __sk_buff *skb)
{
	ct_count[0] = bpf_map_sum_elem_count((const struct bpf_map *)&ct_established);
	ct_count[1] = bpf_map_sum_elem_count((const struct bpf_map *)&ct_embryonic);
	return 0;
}
#endif

#endif
