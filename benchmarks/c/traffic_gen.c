/* The C floor for the live-frames traffic generator: what a C programmer
 * writes with libbpf. Loads the same object pybpfnet ships
 * (xdp_traffic_gen.bpf.o), then each sender thread, pinned to its CPU,
 * makes one BPF_PROG_TEST_RUN call with BPF_F_TEST_XDP_LIVE_FRAMES and
 * repeat = its share of COUNT: the kernel runs the program on every frame
 * as if received on IFNAME and sends it out with XDP_TX.
 *
 *   traffic_gen OBJ IFNAME FRAME_HEX COUNT CPU[,CPU...] [BATCH]
 *
 * Run it inside the sender's network namespace (IFNAME resolves there).
 * Prints {"frames", "elapsed_ns", "kernel_ns_per_frame"}: elapsed from the
 * common start of the threads (a barrier) to the end of the last call.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/bpf.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#ifndef BPF_F_TEST_XDP_LIVE_FRAMES
#define BPF_F_TEST_XDP_LIVE_FRAMES (1U << 1)
#endif
#define MAX_THREADS 64

struct sender {
	pthread_t thread;
	int cpu;
	uint32_t repeat;
	uint64_t end_ns;
	uint32_t kernel_ns;	/* average ns per frame inside the call */
	int err;
};

static int prog_fd, ifindex, batch_size;
static unsigned char frame[4096];
static size_t frame_len;
static pthread_barrier_t start;
static uint64_t t0;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "traffic_gen: %s: %s\n", what, strerror(err));
	exit(1);
}

static void *send_frames(void *arg)
{
	struct sender *s = arg;
	struct xdp_md ctx = {
		.data_end = (__u32)frame_len,
		.ingress_ifindex = (__u32)ifindex,
	};
	LIBBPF_OPTS(bpf_test_run_opts, opts,
		    .data_in = frame,
		    .data_size_in = (__u32)frame_len,
		    .ctx_in = &ctx,
		    .ctx_size_in = sizeof(ctx),
		    .repeat = s->repeat,
		    .flags = BPF_F_TEST_XDP_LIVE_FRAMES,
		    .batch_size = (__u32)batch_size);
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(s->cpu, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set))
		die("pin thread", errno);
	if (pthread_barrier_wait(&start) == PTHREAD_BARRIER_SERIAL_THREAD)
		t0 = now_ns();
	if (s->repeat && bpf_prog_test_run_opts(prog_fd, &opts))
		s->err = errno;
	s->end_ns = now_ns();
	s->kernel_ns = opts.duration;
	return NULL;
}

static size_t parse_hex(const char *hex, unsigned char *out, size_t cap)
{
	size_t n = strlen(hex) / 2, i;

	if (n > cap || strlen(hex) % 2)
		die("frame hex", EINVAL);
	for (i = 0; i < n; i++) {
		unsigned int b;

		if (sscanf(hex + 2 * i, "%2x", &b) != 1)
			die("frame hex", EINVAL);
		out[i] = (unsigned char)b;
	}
	return n;
}

int main(int argc, char **argv)
{
	struct sender senders[MAX_THREADS];
	struct bpf_object *obj;
	struct bpf_program *prog;
	uint64_t count, end = 0;
	double kernel_ns = 0;
	int n = 0, i;
	char *cpus, *tok;

	if (argc < 6 || argc > 7) {
		fprintf(stderr, "usage: %s OBJ IFNAME FRAME_HEX COUNT CPU[,CPU...] [BATCH]\n",
			argv[0]);
		return 2;
	}
	libbpf_set_strict_mode(LIBBPF_STRICT_ALL);
	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj)
		die(argv[1], errno);
	if (bpf_object__load(obj))
		die("load object", errno);
	prog = bpf_object__find_program_by_name(obj, "xdp_traffic_gen");
	if (!prog)
		die("find program xdp_traffic_gen", ENOENT);
	prog_fd = bpf_program__fd(prog);
	ifindex = (int)if_nametoindex(argv[2]);
	if (!ifindex)
		die(argv[2], errno);
	frame_len = parse_hex(argv[3], frame, sizeof(frame));
	count = strtoull(argv[4], NULL, 10);
	batch_size = argc == 7 ? atoi(argv[6]) : 0;
	cpus = argv[5];
	for (tok = strtok(cpus, ","); tok && n < MAX_THREADS; tok = strtok(NULL, ","))
		senders[n++].cpu = atoi(tok);
	if (!n)
		die("cpu list", EINVAL);
	for (i = 0; i < n; i++) {
		senders[i].repeat = (uint32_t)(count / n + ((uint64_t)i < count % n));
		senders[i].err = 0;
	}
	pthread_barrier_init(&start, NULL, (unsigned)n);
	for (i = 0; i < n; i++)
		if (pthread_create(&senders[i].thread, NULL, send_frames, &senders[i]))
			die("start thread", errno);
	for (i = 0; i < n; i++) {
		pthread_join(senders[i].thread, NULL);
		if (senders[i].err)
			die("bpf_prog_test_run_opts (live frames)", senders[i].err);
		if (senders[i].end_ns > end)
			end = senders[i].end_ns;
		kernel_ns += (double)senders[i].kernel_ns * senders[i].repeat;
	}
	printf("{\"frames\": %llu, \"elapsed_ns\": %llu, \"kernel_ns_per_frame\": %.2f}\n",
	       (unsigned long long)count, (unsigned long long)(end - t0),
	       count ? kernel_ns / (double)count : 0.0);
	bpf_object__close(obj);
	return 0;
}
