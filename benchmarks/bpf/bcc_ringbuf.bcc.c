/* ringbuf.bpf.c written for bcc: same record, ring size and drop counter. */
#include "bench_types.h"

/* 0: the kernel's adaptive wakeups. A busy consumer is always caught up, so
 * then every record queues a wakeup irq_work on the producer's CPU
 * (kernel/bpf/ringbuf.c, bpf_ringbuf_commit): busy consumers are measured
 * with -DSUBMIT_FLAGS=BPF_RB_NO_WAKEUP. */
#ifndef SUBMIT_FLAGS
#define SUBMIT_FLAGS 0
#endif

BPF_RINGBUF_OUTPUT(events, RING_PAGES);
BPF_ARRAY(stats, u64, 2);

int produce(struct __sk_buff *skb)
{
	u32 drops_key = 1;
	u64 *drops = stats.lookup(&drops_key);
	int i;

#pragma unroll
	for (i = 0; i < EVENTS_PER_RUN; i++) {
		struct event *e = events.ringbuf_reserve(sizeof(struct event));

		if (!e) {
			if (drops)
				__sync_fetch_and_add(drops, 1);
			continue;
		}
		e->seq = i;
		e->ts = 0;
		e->pid = 1;
		e->cpu = i;
		e->value = 42;
		events.ringbuf_submit(e, SUBMIT_FLAGS);
	}
	return 0;  /* TC_ACT_OK */
}
