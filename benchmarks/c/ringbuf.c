/* C floor for the ring buffer: libbpf's ring_buffer__poll (or a busy
 * ring_buffer__consume loop) draining the ring while rb_producer fills it.
 *
 *   ringbuf OBJ PRODUCER EVENTS RATE MODE CPU PRODUCER_CPU
 *
 * MODE: poll-decode | poll-count | busy-decode. "decode" reads two fields
 * of every record, "count" only counts. Prints one JSON object.
 */
#include "common.h"
#include <inttypes.h>
#include <sys/wait.h>
#include "../bpf/bench_types.h"

static uint64_t consumed;
static volatile uint64_t checksum;

static int on_count(void *ctx, void *data, size_t size)
{
	(void)ctx, (void)data, (void)size;
	consumed++;
	return 0;
}

static int on_decode(void *ctx, void *data, size_t size)
{
	const struct event *e = data;

	(void)ctx;
	if (size != sizeof(*e))
		die("record of %zu bytes", size);
	checksum += e->seq + e->value;
	consumed++;
	return 0;
}

int main(int argc, char **argv)
{
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_prog_info info;
	__u32 info_len = sizeof(info);
	struct ring_buffer *rb;
	int busy, pipefd[2], status, exited = 0;
	uint64_t t_last = 0, t_start = 0, t_end = 0, produced = 0, drops = 0;
	__u32 drops_key = 1;
	char id[16], out[256];
	pid_t pid;
	ssize_t got;

	if (argc != 8)
		die("usage: %s OBJ PRODUCER EVENTS RATE MODE CPU PRODUCER_CPU", argv[0]);
	busy = !strcmp(argv[5], "busy-decode");
	pin_cpu(atoi(argv[6]));
	obj = open_and_load(argv[1]);
	prog = bpf_object__find_program_by_name(obj, "produce");
	if (!prog)
		die("no program produce");
	memset(&info, 0, sizeof(info));
	check(bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &info_len), "prog info");
	rb = ring_buffer__new(map_fd(obj, "events"),
			      strcmp(argv[5], "poll-count") ? on_decode : on_count, NULL, NULL);
	if (!rb)
		die("ring_buffer__new: %s", strerror(errno));

	snprintf(id, sizeof(id), "%u", info.id);
	if (pipe(pipefd))
		die("pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0) {
		dup2(pipefd[1], 1);
		close(pipefd[0]);
		execl(argv[2], argv[2], id, argv[3], argv[4], argv[7], (char *)NULL);
		die("exec %s: %s", argv[2], strerror(errno));
	}
	close(pipefd[1]);
	for (;;) {
		int n = busy ? ring_buffer__consume(rb) : ring_buffer__poll(rb, 10);

		if (n < 0 && n != -EINTR)
			die("ring buffer: %s", strerror(-n));
		if (n > 0) {
			t_last = now_ns();
			continue;
		}
		if (exited)
			break;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			if (!WIFEXITED(status) || WEXITSTATUS(status))
				die("producer failed");
			exited = 1;  /* one more pass drains what is left */
		}
	}
	got = read(pipefd[0], out, sizeof(out) - 1);
	if (got <= 0)
		die("no report from the producer");
	out[got] = 0;
	if (sscanf(out, "{\"t_start_ns\": %" SCNu64 ", \"t_end_ns\": %" SCNu64
		   ", \"events\": %" SCNu64 "}", &t_start, &t_end, &produced) != 3)
		die("bad producer report: %s", out);
	check(bpf_map_lookup_elem(map_fd(obj, "stats"), &drops_key, &drops), "read drops");
	printf("{\"produced\": %" PRIu64 ", \"consumed\": %" PRIu64 ", \"drops\": %" PRIu64 ", "
	       "\"seconds\": %.6f, \"producer_seconds\": %.6f}\n",
	       produced, consumed, drops, (double)(t_last - t_start) / 1e9,
	       (double)(t_end - t_start) / 1e9);
	ring_buffer__free(rb);
	bpf_object__close(obj);
	return 0;
}
