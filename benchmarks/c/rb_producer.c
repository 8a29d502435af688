/* The ring buffer producer shared by every consumer (C, pybpfnet, bcc):
 * runs the consumer's BPF program through BPF_PROG_TEST_RUN, RUNS_PER_CALL
 * runs per syscall, each run emitting EVENTS_PER_RUN records.
 *
 *   rb_producer PROG_ID EVENTS RATE CPU
 *
 * RATE is the offered rate in events/s (0: as fast as the kernel goes),
 * paced per call against the monotonic clock. CPU < 0: no pinning.
 * Prints {"t_start_ns", "t_end_ns", "events"} (CLOCK_MONOTONIC) on exit.
 */
#include "common.h"
#include <inttypes.h>
#include "../bpf/bench_types.h"

#define RUNS_PER_CALL 256

int main(int argc, char **argv)
{
	char pkt[64] = { 0 };
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt,
		    .data_size_in = sizeof(pkt));
	uint64_t events, rate, runs, done = 0, t0, t1;
	int fd;

	if (argc != 5)
		die("usage: %s PROG_ID EVENTS RATE CPU", argv[0]);
	fd = bpf_prog_get_fd_by_id((uint32_t)atol(argv[1]));
	if (fd < 0)
		die("open program id %s: %s", argv[1], strerror(-fd));
	events = strtoull(argv[2], NULL, 10);
	rate = strtoull(argv[3], NULL, 10);
	pin_cpu(atoi(argv[4]));
	runs = events / EVENTS_PER_RUN;
	t0 = now_ns();
	while (done < runs) {
		uint64_t n = runs - done < RUNS_PER_CALL ? runs - done : RUNS_PER_CALL;

		opts.repeat = (int)n;
		check(bpf_prog_test_run_opts(fd, &opts), "test run");
		done += n;
		if (rate) {
			uint64_t due = t0 + (uint64_t)((double)done * EVENTS_PER_RUN * 1e9 / (double)rate);
			uint64_t now;

			while ((now = now_ns()) < due) {
				if (due - now > 200000) {
					struct timespec ts = { 0, (long)(due - now - 100000) };

					nanosleep(&ts, NULL);
				}
			}
		}
	}
	t1 = now_ns();
	printf("{\"t_start_ns\": %" PRIu64 ", \"t_end_ns\": %" PRIu64
	       ", \"events\": %" PRIu64 "}\n", t0, t1, done * EVENTS_PER_RUN);
	return 0;
}
