/* C floor for open+load: bpf_object__open_file + bpf_object__load +
 * bpf_object__close of a precompiled object, in-process.
 *
 *   load OBJ ITERATIONS
 *
 * Prints {"median_ms": ..., "min_ms": ...} over ITERATIONS (after 3 warm-ups).
 */
#include "common.h"

static int quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

static double once(const char *path)
{
	uint64_t t0 = now_ns();
	struct bpf_object *obj = open_and_load(path);

	bpf_object__close(obj);
	return (double)(now_ns() - t0) / 1e6;
}

int main(int argc, char **argv)
{
	int n;
	double *ms;

	if (argc != 3)
		die("usage: %s OBJ ITERATIONS", argv[0]);
	n = atoi(argv[2]);
	if (n < 1 || !(ms = calloc((size_t)n, sizeof(*ms))))
		die("bad iteration count");
	libbpf_set_print(quiet);
	for (int i = 0; i < 3; i++)
		once(argv[1]);
	for (int i = 0; i < n; i++)
		ms[i] = once(argv[1]);
	printf("{\"median_ms\": %.4f, ", median(ms, n));
	printf("\"min_ms\": %.4f}\n", ms[0]);
	return 0;
}
