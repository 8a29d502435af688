/* Ring buffer producer: every run (BPF_PROG_TEST_RUN, repeat=N) emits
 * EVENTS_PER_RUN records; a failed reserve counts a drop in stats[1]. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bench_types.h"

/* 0: the kernel's adaptive wakeups. A busy consumer is always caught up, so
 * then every record queues a wakeup irq_work on the producer's CPU
 * (kernel/bpf/ringbuf.c, bpf_ringbuf_commit): busy consumers are measured
 * with -DSUBMIT_FLAGS=BPF_RB_NO_WAKEUP. */
#ifndef SUBMIT_FLAGS
#define SUBMIT_FLAGS 0
#endif

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, RING_PAGES * 4096);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* Not used by the program: gives user space the record type through BTF. */
struct event event_proto;

SEC("tc")
int produce(struct __sk_buff *skb)
{
	__u32 drops_key = 1;
	__u64 *drops = bpf_map_lookup_elem(&stats, &drops_key);
	int i;

	for (i = 0; i < EVENTS_PER_RUN; i++) {
		struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

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
		bpf_ringbuf_submit(e, SUBMIT_FLAGS);
	}
	return 0;  /* TC_ACT_OK */
}

char LICENSE[] SEC("license") = "GPL";
