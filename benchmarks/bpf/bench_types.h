/* Shared by the BPF objects (clang -target bpf), the C floor programs (gcc)
 * and the bcc programs (compiled at run time by bcc): one definition of every
 * size and layout the benchmarks compare. */
#ifndef BENCH_TYPES_H
#define BENCH_TYPES_H

#define SINGLE_MAX 16384        /* capacity of the single-element maps */
#define BATCH_N 100000          /* entries moved by the batch benchmarks */
#define ARRAY_N 65537           /* ARRAY map filled by the fill benchmark */
#define RING_PAGES 256          /* ring buffer size in 4 KiB pages (1 MiB) */
#define EVENTS_PER_RUN 4        /* ring records emitted per program run */

/* A struct value with a mix of widths and a char array (40 bytes). */
struct flow_rec {
	__u64 packets;
	__u64 bytes;
	__u32 ifindex;
	__u16 proto;
	__u16 flags;
	char comm[16];
};

/* One ring buffer record (32 bytes). */
struct event {
	__u64 seq;
	__u64 ts;
	__u32 pid;
	__u32 cpu;
	__u64 value;
};

#endif
