/* pybpfnet connection tracking: the TCP state machine and window tracking.
 *
 * The transitions are nf_conntrack's (net/netfilter/nf_conntrack_proto_tcp.c,
 * Linux 6.x): the same states, the same packet classes (RST, SYN, SYN+ACK,
 * FIN, ACK, none) and the same outcome for each (state, direction, class),
 * including "ignore" for packets that may be valid for the end hosts while
 * the tracker is out of sync. Window tracking follows the same four checks
 * (after Guido van Rooij's "Real Stateful TCP Packet Filtering in IP
 * Filter"); what is left out is listed in docs/conntrack.md. The Python
 * reference model (src/pybpfnet/dataplanes/_ct_model.py) implements exactly
 * this file. */
#ifndef PYBN_CT_TCP_H
#define PYBN_CT_TCP_H

#include "pybn_ct_structs.h"

/* Outcomes of one packet for an entry */
enum ct_action {
	CT_A_ACCEPT = 0,	/* count, refresh the timeout */
	CT_A_KEEP = 1,		/* count nothing, leave the timeout (SYN retransmission) */
	CT_A_IGNORE = 2,	/* let through, leave the entry alone */
	CT_A_INVALID = 3,
	CT_A_KILL = 4,		/* count, then destroy (RST before any reply) */
	CT_A_REOPEN = 5,	/* destroy, then track the packet as a new connection */
};

#define CT_IV CT_T_INVALID
#define CT_IG CT_T_IGNORE
/* One row per state: the next state for a packet of each class, packed in
 * nibbles (SYN, SYN+ACK, FIN, ACK, RST, none). */
#define CT_ROW(syn, synack, fin, ack, rst, none) \
	((syn) | (synack) << 4 | (fin) << 8 | (ack) << 12 | (rst) << 16 | (none) << 20)

static const __u32 ct_tcp_rows[2][10] = {
	[CT_DIR_ORIGINAL] = {
		/* no entry: a SYN opens, an ACK picks up a connection */
		[CT_NONE] = CT_ROW(CT_SYN_SENT, CT_IV, CT_IV, CT_ESTABLISHED, CT_IV, CT_IV),
		/* a SYN again is a retransmission; no ACK before the SYN+ACK */
		[CT_SYN_SENT] = CT_ROW(CT_SYN_SENT, CT_IV, CT_IV, CT_IV, CT_CLOSE, CT_IV),
		[CT_SYN_RECV] = CT_ROW(CT_IG, CT_SYN_RECV, CT_FIN_WAIT, CT_ESTABLISHED, CT_CLOSE, CT_IV),
		[CT_ESTABLISHED] = CT_ROW(CT_IG, CT_IV, CT_FIN_WAIT, CT_ESTABLISHED, CT_CLOSE, CT_IV),
		[CT_FIN_WAIT] = CT_ROW(CT_IG, CT_IV, CT_LAST_ACK, CT_CLOSE_WAIT, CT_CLOSE, CT_IV),
		[CT_CLOSE_WAIT] = CT_ROW(CT_IG, CT_IV, CT_LAST_ACK, CT_CLOSE_WAIT, CT_CLOSE, CT_IV),
		[CT_LAST_ACK] = CT_ROW(CT_IG, CT_IV, CT_LAST_ACK, CT_TIME_WAIT, CT_CLOSE, CT_IV),
		/* a SYN reopens a closed connection (RFC 1122 4.2.2.13) */
		[CT_TIME_WAIT] = CT_ROW(CT_SYN_SENT, CT_IV, CT_TIME_WAIT, CT_TIME_WAIT, CT_CLOSE, CT_IV),
		[CT_CLOSE] = CT_ROW(CT_SYN_SENT, CT_IV, CT_CLOSE, CT_CLOSE, CT_CLOSE, CT_IV),
		[CT_SYN_SENT2] = CT_ROW(CT_SYN_SENT2, CT_SYN_RECV, CT_IV, CT_IV, CT_CLOSE, CT_IV),
	},
	[CT_DIR_REPLY] = {
		[CT_NONE] = CT_ROW(CT_IV, CT_IV, CT_IV, CT_IV, CT_IV, CT_IV),
		/* SYN from the other side: simultaneous open; an ACK may be a
		 * half-open connection's answer */
		[CT_SYN_SENT] = CT_ROW(CT_SYN_SENT2, CT_SYN_RECV, CT_IV, CT_IG, CT_CLOSE, CT_IV),
		[CT_SYN_RECV] = CT_ROW(CT_IV, CT_IG, CT_FIN_WAIT, CT_SYN_RECV, CT_CLOSE, CT_IV),
		[CT_ESTABLISHED] = CT_ROW(CT_IV, CT_IG, CT_FIN_WAIT, CT_ESTABLISHED, CT_CLOSE, CT_IV),
		[CT_FIN_WAIT] = CT_ROW(CT_IV, CT_IG, CT_LAST_ACK, CT_CLOSE_WAIT, CT_CLOSE, CT_IV),
		[CT_CLOSE_WAIT] = CT_ROW(CT_IV, CT_IG, CT_LAST_ACK, CT_CLOSE_WAIT, CT_CLOSE, CT_IV),
		[CT_LAST_ACK] = CT_ROW(CT_IV, CT_IG, CT_LAST_ACK, CT_TIME_WAIT, CT_CLOSE, CT_IV),
		/* the server reopens, switching roles */
		[CT_TIME_WAIT] = CT_ROW(CT_SYN_SENT, CT_IG, CT_TIME_WAIT, CT_TIME_WAIT, CT_CLOSE, CT_IV),
		[CT_CLOSE] = CT_ROW(CT_IV, CT_IG, CT_CLOSE, CT_CLOSE, CT_CLOSE, CT_IV),
		[CT_SYN_SENT2] = CT_ROW(CT_SYN_SENT2, CT_SYN_RECV, CT_IV, CT_IG, CT_CLOSE, CT_IV),
	},
};

static __always_inline int ct_before(__u32 a, __u32 b)
{
	return (__s32)(a - b) < 0;
}

static __always_inline int ct_after(__u32 a, __u32 b)
{
	return (__s32)(b - a) < 0;
}

/* Flag combinations a TCP may send (PSH, ECE and CWR aside). */
static __always_inline int ct_tcp_flags_valid(__u8 flags)
{
	switch (flags & (CT_FIN | CT_SYN | CT_RST | CT_ACK | CT_URG)) {
	case CT_SYN:
	case CT_SYN | CT_URG:
	case CT_SYN | CT_ACK:
	case CT_RST:
	case CT_RST | CT_ACK:
	case CT_FIN | CT_ACK:
	case CT_FIN | CT_ACK | CT_URG:
	case CT_ACK:
	case CT_ACK | CT_URG:
		return 1;
	}
	return 0;
}

static __always_inline __u32 ct_tcp_index(__u8 flags)
{
	if (flags & CT_RST)
		return CT_I_RST;
	if (flags & CT_SYN)
		return (flags & CT_ACK) ? CT_I_SYNACK : CT_I_SYN;
	if (flags & CT_FIN)
		return CT_I_FIN;
	if (flags & CT_ACK)
		return CT_I_ACK;
	return CT_I_NONE;
}

static __always_inline __u32 ct_tcp_next(__u32 dir, __u32 state, __u32 index)
{
	if (state > CT_SYN_SENT2 || dir > 1 || index > CT_I_NONE)
		return CT_T_INVALID;
	return (ct_tcp_rows[dir][state] >> (index * 4)) & 0xf;
}

static __always_inline __u32 ct_tcp_end(const struct ct_pkt *p)
{
	return p->seq + p->payload + !!(p->tcp_flags & CT_SYN) + !!(p->tcp_flags & CT_FIN);
}

/* Options of a SYN: they replace what the direction had announced. */
static __always_inline void ct_tcp_options(struct ct_tcp_dir *d, const struct ct_pkt *p)
{
	if (!p->has_opts)
		return;
	d->scale = 0;
	d->flags &= CT_TF_LIBERAL;
	if (p->sack_perm)
		d->flags |= CT_TF_SACK_PERM;
	if (p->wscale != 0xff) {
		d->scale = p->wscale > 14 ? 14 : p->wscale;
		d->flags |= CT_TF_WSCALE;
	}
}

static __always_inline void ct_tcp_init_sender(struct ct_tcp_dir *s, struct ct_tcp_dir *r,
					       const struct ct_pkt *p, __u32 end, __u32 dir)
{
	s->end = end;
	s->maxend = end;
	s->maxwin = p->win ? p->win : 1;
	ct_tcp_options(s, p);
	/* RFC 7323 2.2: scaling only when both sides sent the option */
	if (dir == CT_DIR_REPLY &&
	    !((s->flags & CT_TF_WSCALE) && (r->flags & CT_TF_WSCALE))) {
		s->scale = 0;
		r->scale = 0;
	}
}

/* The first packet of a connection (state NONE): a SYN, or with
 * tcp_loose an ACK picked up mid-stream (no window checks from then on). */
static __always_inline void ct_tcp_new(struct ct_entry *e, const struct ct_pkt *p)
{
	__u32 end = ct_tcp_end(p);
	struct ct_tcp_dir *s = &e->tcp[CT_DIR_ORIGINAL];

	s->end = end;
	s->maxwin = p->win ? p->win : 1;
	if (p->tcp_flags & CT_SYN) {
		s->maxend = end;
		ct_tcp_options(s, p);
	} else {
		s->maxend = end + s->maxwin;
		s->flags = CT_TF_SACK_PERM | CT_TF_LIBERAL;
		e->tcp[CT_DIR_REPLY].flags = CT_TF_SACK_PERM | CT_TF_LIBERAL;
	}
}

/* Is the segment inside the window the two sides have announced? Returns
 * CT_A_ACCEPT (and updates the window state), CT_A_IGNORE or
 * CT_A_INVALID. SACK blocks are not read: the ACK number stands for them. */
static __always_inline int ct_tcp_in_window(struct ct_entry *e, __u32 dir, __u32 old,
					    const struct ct_pkt *p, int liberal_cfg)
{
	struct ct_tcp_dir *s = &e->tcp[dir & 1];
	struct ct_tcp_dir *r = &e->tcp[!(dir & 1)];
	__u8 flags = p->tcp_flags;
	__u32 seq = p->seq, ack = p->ack, win = p->win;
	__u32 end = ct_tcp_end(p);
	__u32 maxack;
	int liberal;

	if (s->maxwin == 0) {
		if (flags & CT_SYN) {
			/* SYN+ACK answering the SYN, or a SYN of a simultaneous open */
			ct_tcp_init_sender(s, r, p, end, dir);
			if (!(flags & CT_ACK))
				return CT_A_ACCEPT;
		} else {
			/* picked up mid-stream: trust what this packet says */
			__u32 swin = win << s->scale;

			s->end = end;
			s->maxwin = swin ? swin : 1;
			s->maxend = end + s->maxwin;
			if (r->maxwin == 0) {
				r->end = ack;
				r->maxend = ack;
			} else if (ack == r->end + 1) {
				r->end++;	/* answer to a keepalive */
			}
		}
	} else if ((flags & CT_SYN) && ct_after(end, s->end) &&
		   (old == CT_SYN_SENT || old == CT_SYN_RECV)) {
		/* a SYN with a higher sequence: the host restarted the attempt */
		ct_tcp_init_sender(s, r, p, end, dir);
		if (dir == CT_DIR_REPLY && !(flags & CT_ACK))
			return CT_A_ACCEPT;
	}

	if (!(flags & CT_ACK))
		ack = r->end;
	else if ((flags & (CT_ACK | CT_RST)) == (CT_ACK | CT_RST) && ack == 0)
		ack = r->end;		/* stacks that send RST+ACK with ack 0 */

	if ((flags & CT_RST) && seq == 0 && old == CT_SYN_SENT) {
		seq = s->end;		/* RST answering a SYN */
		end = s->end;
	}

	liberal = liberal_cfg || (s->flags & CT_TF_LIBERAL);
	maxack = s->maxwin > 66000 ? s->maxwin : 66000;
	/* I. data beyond what the receiver's window allows */
	if (!ct_before(seq, s->maxend + 1))
		return liberal ? CT_A_ACCEPT : CT_A_INVALID;
	/* III. acknowledging data the other side never sent */
	if (!ct_before(ack, r->end + 1))
		return liberal ? CT_A_ACCEPT : CT_A_INVALID;
	/* II. data already acknowledged, retransmitted */
	if (r->maxwin && !ct_after(end, s->end - r->maxwin - 1))
		return liberal ? CT_A_ACCEPT : CT_A_IGNORE;
	/* IV. an overly delayed ACK */
	if (!ct_after(ack, r->end - maxack - 1))
		return liberal ? CT_A_ACCEPT : CT_A_IGNORE;

	if (!(flags & CT_SYN))
		win <<= s->scale;
	if (s->maxwin < win)
		s->maxwin = win;
	if (ct_after(end, s->end)) {
		s->end = end;
		s->flags |= CT_TF_DATA_UNACK;
	}
	if (r->maxwin != 0 && ct_after(end, s->maxend))
		r->maxwin += end - s->maxend;
	if (ct_after(ack + win, r->maxend - 1)) {
		r->maxend = ack + win;
		if (win == 0)
			r->maxend++;
	}
	if (ack == r->end)
		r->flags &= ~CT_TF_DATA_UNACK;
	return CT_A_ACCEPT;
}

/* One TCP packet for an entry (its lock held). Sets the new state, the
 * timeout slot to refresh with (*timeout) and returns a ct_action. */
static __always_inline int ct_tcp_packet(struct ct_entry *e, __u32 dir, const struct ct_pkt *p,
					 const volatile struct ct_config *cfg, __u32 *timeout)
{
	__u32 old = e->state;
	__u32 index = ct_tcp_index(p->tcp_flags);
	__u32 next = ct_tcp_next(dir, old, index);
	__u32 t;
	int res;

	if (next == CT_SYN_SENT && old >= CT_TIME_WAIT) {
		/* A SYN on a closed connection reopens it when the close was
		 * seen (a FIN), or when this side reset it; otherwise the
		 * entry may be out of sync with the hosts: let the SYN pass. */
		if (((e->tcp[0].flags | e->tcp[1].flags) & CT_TF_CLOSE_INIT) ||
		    (e->last_dir == dir && e->last_index == CT_I_RST))
			return CT_A_REOPEN;
		next = CT_T_IGNORE;
	}
	if (next == CT_T_IGNORE) {
		e->last_index = index;
		e->last_dir = dir;
		return CT_A_IGNORE;
	}
	if (next == CT_T_INVALID)
		return CT_A_INVALID;
	if (next == CT_SYN_SENT2)
		e->status |= CT_S_SIMOPEN;
	if (next == CT_SYN_RECV && dir == CT_DIR_REPLY && index == CT_I_ACK &&
	    (e->status & CT_S_SIMOPEN))
		next = CT_ESTABLISHED;	/* the last ACK of a simultaneous open */

	res = ct_tcp_in_window(e, dir, old, p, cfg->tcp_liberal);
	if (res != CT_A_ACCEPT)
		return res;

	e->last_index = index;
	e->last_dir = dir;
	e->state = next;
	if (old != next && next == CT_FIN_WAIT)
		e->tcp[dir & 1].flags |= CT_TF_CLOSE_INIT;

	/* the timeout slot of a state is the state number minus one */
	t = next - 1;
	if (index == CT_I_RST)
		t = CT_TO_CLOSE;
	else if (((e->tcp[0].flags | e->tcp[1].flags) & CT_TF_DATA_UNACK) &&
		 t < CT_NTIMEOUTS && cfg->timeout_ms[t] > cfg->timeout_ms[CT_TO_UNACK])
		t = CT_TO_UNACK;

	if (!(e->status & CT_S_SEEN_REPLY)) {
		if (index == CT_I_RST)
			return CT_A_KILL;	/* only answer was a reset */
		if (index == CT_I_SYN && old == CT_SYN_SENT)
			return CT_A_KEEP;	/* retransmitted SYN: no renewal */
		if (next == CT_ESTABLISHED && t < CT_NTIMEOUTS &&
		    cfg->timeout_ms[t] > cfg->timeout_ms[CT_TO_UNACK])
			t = CT_TO_UNACK;	/* picked up, no answer yet */
	} else if (!(e->status & CT_S_ASSURED) &&
		   (old == CT_SYN_RECV || old == CT_ESTABLISHED) && next == CT_ESTABLISHED) {
		e->status |= CT_S_ASSURED;
	}
	*timeout = t;
	return CT_A_ACCEPT;
}

#endif
