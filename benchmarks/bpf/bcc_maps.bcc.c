/* The maps of maps.bpf.c, written for bcc (compiled by bcc at run time). */
#include "bench_types.h"

BPF_HASH(single_u64, u32, u64, SINGLE_MAX);
BPF_HASH(single_rec, u32, struct flow_rec, SINGLE_MAX);
BPF_HASH(batch_u64, u32, u64, BATCH_N);
BPF_HASH(batch_rec, u32, struct flow_rec, BATCH_N);
BPF_ARRAY(array_u64, u64, ARRAY_N);
