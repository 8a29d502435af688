/* The sweep, run by user space through BPF_PROG_TEST_RUN (never attached):
 * one bpf_for_each_map_elem pass over the flow table that exports timed-out
 * flows through the ring. An idle flow (and a FIN/RST flow the ring could
 * not take earlier) is deleted; an active-timeout flow stays and has the
 * exported counts subtracted atomically, so packets that arrive while it is
 * exported are kept for the next slice instead of being lost. A flow the
 * ring has no room for stays untouched for the next sweep. */
#ifndef FLOWMON_SWEEP_H
#define FLOWMON_SWEEP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "flowmon_structs.h"
#include "flowmon_maps.h"

/* set by user space before each run (.bss, written through its mmap) */
__u64 flowmon_sweep_now = 0;
__u64 flowmon_sweep_idle_ns = 0;
__u64 flowmon_sweep_active_ns = 0;
/* results of the last run */
__u64 flowmon_sweep_exported = 0;
__u64 flowmon_sweep_deferred = 0;

static long fm_sweep_one(void *map, struct flow_key *key, struct flow_stats *val, void *ctx)
{
	__u64 now = flowmon_sweep_now;
	__u64 packets, bytes, drops, flags = val->tcp_flags;
	struct flow_record *r;
	__u32 reason = 0;

	if (key->proto == IPPROTO_TCP && (flags & (TH_FIN | TH_RST)))
		reason = (flags & TH_RST) ? FM_REASON_RST : FM_REASON_FIN;
	else if (now > val->last_ns && now - val->last_ns >= flowmon_sweep_idle_ns)
		reason = FM_REASON_IDLE;
	else if (now > val->first_ns && now - val->first_ns >= flowmon_sweep_active_ns &&
		 val->packets)
		reason = FM_REASON_ACTIVE;
	if (!reason)
		return 0;
	r = bpf_ringbuf_reserve(&flowmon_events, sizeof(*r), 0);
	if (!r) {
		flowmon_sweep_deferred++;
		return 0;
	}
	packets = val->packets;
	bytes = val->bytes;
	drops = val->drops;
	__builtin_memcpy(&r->key, key, sizeof(*key));
	__builtin_memcpy(&r->stats, val, sizeof(*val));
	r->stats.packets = packets;
	r->stats.bytes = bytes;
	r->stats.drops = drops;
	r->reason = reason;
	r->pad = 0;
	if (reason == FM_REASON_ACTIVE) {
		__sync_fetch_and_add(&val->packets, -packets);
		__sync_fetch_and_add(&val->bytes, -bytes);
		__sync_fetch_and_add(&val->drops, -drops);
		val->first_ns = now;
	} else {
		bpf_map_delete_elem(&flowmon_flows, key);
	}
	bpf_ringbuf_submit(r, 0);
	flowmon_sweep_exported++;
	return 0;
}

SEC("tc")
int flowmon_sweep(struct __sk_buff *skb)
{
	flowmon_sweep_exported = 0;
	flowmon_sweep_deferred = 0;
	bpf_for_each_map_elem(&flowmon_flows, fm_sweep_one, NULL, 0);
	return TC_ACT_UNSPEC;
}

#endif
