/* Maps for the single-element, batch and array-fill benchmarks. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bench_types.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SINGLE_MAX);
	__type(key, __u32);
	__type(value, __u64);
} single_u64 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SINGLE_MAX);
	__type(key, __u32);
	__type(value, struct flow_rec);
} single_rec SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BATCH_N);
	__type(key, __u32);
	__type(value, __u64);
} batch_u64 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BATCH_N);
	__type(key, __u32);
	__type(value, struct flow_rec);
} batch_rec SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ARRAY_N);
	__type(key, __u32);
	__type(value, __u64);
} array_u64 SEC(".maps");

char LICENSE[] SEC("license") = "GPL";
