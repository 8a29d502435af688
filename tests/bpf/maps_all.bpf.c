/* Test object: one map of every supported type, struct shapes that exercise
 * the codec (nested, arrays, char arrays, unions, bitfields, enums), global
 * variables in .rodata/.data/.bss, and programs that feed the maps. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

enum flow_state { FLOW_NEW = 0, FLOW_EST = 1, FLOW_CLOSED = 7 };

struct inner {
	__u16 x;
	__u16 y;
};

struct flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow_val {
	__u64 packets;
	__u64 bytes;
	char comm[16];
	__u32 ports[4];
	struct inner pos;
	enum flow_state state;
	__s32 delta;
};

union addr {
	__u32 v4;
	__u8 v6[16];
};

struct with_union {
	__u32 family;
	union addr a;
};

struct with_bits {
	__u32 lo : 4;
	__u32 mid : 12;
	__s32 neg : 8;
	__u32 rest : 8;
	__u64 whole;
};

struct event {
	__u64 seq;
	__u32 cpu;
	__u32 len;
	char tag[8];
};

struct lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1024);
	__type(key, __u32); __type(value, __u64); } hash_int SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1024);
	__type(key, struct flow_key); __type(value, struct flow_val); } flows SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 64);
	__type(key, __u32); __type(value, struct flow_val); } arr SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_HASH); __uint(max_entries, 256);
	__type(key, __u32); __type(value, __u64); } pc_hash SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 8);
	__type(key, __u32); __type(value, struct inner); } pc_arr SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, 128);
	__type(key, __u64); __type(value, __u32); } lru SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH); __uint(max_entries, 128);
	__type(key, __u32); __type(value, __u32); } lru_pc SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LPM_TRIE); __uint(max_entries, 128);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4); __type(value, __u32); } lpm SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 16);
	__type(key, __u32); __type(value, struct with_union); } unions SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 16);
	__type(key, __u32); __type(value, struct with_bits); } bits SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 16); } events SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 12); } events2 SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_QUEUE); __uint(max_entries, 16);
	__type(value, __u32); } queue SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_STACK); __uint(max_entries, 16);
	__type(value, __u64); } stack SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 4);
	__type(key, __u32); __type(value, __u32); } jmp SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_DEVMAP); __uint(max_entries, 8);
	__type(key, __u32); __type(value, __u32); } devs SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_CPUMAP); __uint(max_entries, 2);
	__type(key, __u32); __type(value, struct bpf_cpumap_val); } cpus SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_XSKMAP); __uint(max_entries, 4);
	__type(key, __u32); __type(value, __u32); } xsks SEC(".maps");

const volatile __u32 cfg_port = 8080;
const volatile char cfg_name[8] = "default";
__u64 counter = 5;
struct inner point = { 1, 2 };
__u32 zeroed;
__s16 signed_bss;
/* keeps struct event in BTF for user space (ring buffer records) */
struct event last_event;

/* Emits cfg_port events into the ring buffer per run; count = data[0]. */
SEC("xdp")
int emit(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 n = 1, i;

	if (data + 1 <= end)
		n = *(__u8 *)data;
	for (i = 0; i < n && i < 64; i++) {
		struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
		if (!e)
			break;
		e->seq = __sync_fetch_and_add(&counter, 1);
		e->cpu = bpf_get_smp_processor_id();
		e->len = cfg_port;
		__builtin_memcpy(e->tag, "event!!", 8);
		bpf_ringbuf_submit(e, 0);
	}
	zeroed++;
	return XDP_PASS;
}

/* Returns the verdict in .data and bumps point.x: drives test_run tests. */
__u32 verdict = XDP_PASS;

SEC("xdp")
int verdict_prog(struct xdp_md *ctx)
{
	point.x++;
	return verdict;
}

SEC("xdp")
int tail_target(struct xdp_md *ctx)
{
	return XDP_DROP;
}

SEC("tc")
int tc_prog(struct __sk_buff *skb)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
