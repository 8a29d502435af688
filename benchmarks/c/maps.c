/* C floor for the map benchmarks: libbpf's bpf_map_* calls in plain loops.
 *
 *   maps OBJ SINGLE_OPS SINGLE_KEYS
 *
 * Each figure is the median of REPS passes in this process.
 * Prints one JSON object: ns/op for single-element lookups and updates,
 * ns/element for batch update/lookup of BATCH_N entries at several chunk
 * sizes, and ms to fill an ARRAY_N-entry array per element and in one batch.
 */
#include "common.h"
#include "../bpf/bench_types.h"

#define REPS 3  /* passes per measurement; the median is reported */

static const uint32_t chunks[] = { 1024, 8192, BATCH_N };
#define NCHUNKS (sizeof(chunks) / sizeof(chunks[0]))

static struct flow_rec make_rec(uint32_t i)
{
	struct flow_rec r;

	memset(&r, 0, sizeof(r));
	r.packets = i;
	r.bytes = (uint64_t)i * 1500;
	r.ifindex = 7;
	r.proto = 17;
	r.flags = 1;
	strcpy(r.comm, "benchmark");
	return r;
}

static double single_lookup(int fd, uint32_t nkeys, long ops, void *val)
{
	uint64_t t0 = now_ns();
	uint32_t key = 0;

	for (long i = 0; i < ops; i++) {
		if (bpf_map_lookup_elem(fd, &key, val))
			die("lookup %u failed", key);
		if (++key == nkeys)
			key = 0;
	}
	return (double)(now_ns() - t0) / (double)ops;
}

static double single_update_u64(int fd, uint32_t nkeys, long ops)
{
	uint64_t t0 = now_ns();
	uint32_t key = 0;

	for (long i = 0; i < ops; i++) {
		uint64_t v = (uint64_t)i;

		if (bpf_map_update_elem(fd, &key, &v, BPF_ANY))
			die("update %u failed", key);
		if (++key == nkeys)
			key = 0;
	}
	return (double)(now_ns() - t0) / (double)ops;
}

static double single_update_rec(int fd, uint32_t nkeys, long ops)
{
	struct flow_rec r = make_rec(1);
	uint64_t t0 = now_ns();
	uint32_t key = 0;

	for (long i = 0; i < ops; i++) {
		if (bpf_map_update_elem(fd, &key, &r, BPF_ANY))
			die("update %u failed", key);
		if (++key == nkeys)
			key = 0;
	}
	return (double)(now_ns() - t0) / (double)ops;
}

static void update_batch(int fd, const void *keys, const void *vals,
			 uint32_t n, uint32_t chunk, size_t ks, size_t vs)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);

	for (uint32_t done = 0; done < n;) {
		uint32_t cnt = n - done < chunk ? n - done : chunk;

		check(bpf_map_update_batch(fd, (const char *)keys + done * ks,
					   (const char *)vals + done * vs, &cnt, &opts),
		      "update batch");
		done += cnt;
	}
}

/* Whole map into keys/vals (room for `cap` elements); returns the count. */
static uint32_t lookup_batch(int fd, void *keys, void *vals, uint32_t cap,
			     uint32_t chunk, size_t ks, size_t vs, int delete)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	uint64_t in = 0, out = 0;
	uint32_t total = 0;
	int first = 1;

	for (;;) {
		uint32_t cnt = cap - total < chunk ? cap - total : chunk;
		int rc;

		if (cnt == 0)
			break;
		rc = (delete ? bpf_map_lookup_and_delete_batch : bpf_map_lookup_batch)(
			fd, first ? NULL : &in, &out, (char *)keys + total * ks,
			(char *)vals + total * vs, &cnt, &opts);
		if (rc < 0 && rc != -ENOENT)
			check(rc, "lookup batch");
		total += cnt;
		if (rc == -ENOENT)
			break;
		in = out;
		first = 0;
	}
	return total;
}

static void clear_map(int fd, void *keys, void *vals, size_t ks, size_t vs)
{
	lookup_batch(fd, keys, vals, BATCH_N, 8192, ks, vs, 1);
}

static void batch_bench(const char *name, int fd, size_t vs, const void *vals_in,
			int comma)
{
	uint32_t *keys = malloc(BATCH_N * sizeof(uint32_t));
	uint32_t *kout = malloc(BATCH_N * sizeof(uint32_t));
	char *vout = malloc(BATCH_N * vs);
	double upd[NCHUNKS], look[NCHUNKS];

	if (!keys || !kout || !vout)
		die("out of memory");
	for (uint32_t i = 0; i < BATCH_N; i++)
		keys[i] = i;
	/* warm up: one full insert and read */
	clear_map(fd, kout, vout, 4, vs);
	update_batch(fd, keys, vals_in, BATCH_N, BATCH_N, 4, vs);
	lookup_batch(fd, kout, vout, BATCH_N, 8192, 4, vs, 0);
	for (size_t c = 0; c < NCHUNKS; c++) {
		double s[REPS];

		for (int r = 0; r < REPS; r++) {
			uint64_t t0;

			clear_map(fd, kout, vout, 4, vs);
			t0 = now_ns();
			update_batch(fd, keys, vals_in, BATCH_N, chunks[c], 4, vs);
			s[r] = (double)(now_ns() - t0) / BATCH_N;
		}
		upd[c] = median(s, REPS);
	}
	for (size_t c = 0; c < NCHUNKS; c++) {
		double s[REPS];

		for (int r = 0; r < REPS; r++) {
			uint64_t t0 = now_ns();
			uint32_t n = lookup_batch(fd, kout, vout, BATCH_N, chunks[c], 4, vs, 0);

			s[r] = (double)(now_ns() - t0) / BATCH_N;
			if (n != BATCH_N)
				die("%s: batch lookup returned %u of %u", name, n, BATCH_N);
		}
		look[c] = median(s, REPS);
	}
	printf("\"%s_update\": {", name);
	for (size_t c = 0; c < NCHUNKS; c++)
		printf("%s\"%u\": %.2f", c ? ", " : "", chunks[c], upd[c]);
	printf("}, \"%s_lookup\": {", name);
	for (size_t c = 0; c < NCHUNKS; c++)
		printf("%s\"%u\": %.2f", c ? ", " : "", chunks[c], look[c]);
	printf("}%s", comma ? ", " : "");
	free(keys);
	free(kout);
	free(vout);
}

int main(int argc, char **argv)
{
	struct bpf_object *obj;
	long ops;
	uint32_t nkeys;
	int fu, fr, bu, br, arr;
	uint64_t val[8];
	struct flow_rec rec;

	if (argc != 4)
		die("usage: %s OBJ SINGLE_OPS SINGLE_KEYS", argv[0]);
	ops = atol(argv[2]);
	nkeys = (uint32_t)atol(argv[3]);
	obj = open_and_load(argv[1]);
	fu = map_fd(obj, "single_u64");
	fr = map_fd(obj, "single_rec");
	bu = map_fd(obj, "batch_u64");
	br = map_fd(obj, "batch_rec");
	arr = map_fd(obj, "array_u64");

	/* single-element: prefill, warm up, then time lookups and overwrites */
	for (uint32_t k = 0; k < nkeys; k++) {
		uint64_t v = k;

		rec = make_rec(k);
		check(bpf_map_update_elem(fu, &k, &v, BPF_ANY), "prefill");
		check(bpf_map_update_elem(fr, &k, &rec, BPF_ANY), "prefill");
	}
	single_lookup(fu, nkeys, ops / 10, val);
	single_update_u64(fu, nkeys, ops / 10);
	{
		double s[4][REPS];

		for (int r = 0; r < REPS; r++) {
			s[0][r] = single_lookup(fu, nkeys, ops, val);
			s[1][r] = single_update_u64(fu, nkeys, ops);
			s[2][r] = single_lookup(fr, nkeys, ops, &rec);
			s[3][r] = single_update_rec(fr, nkeys, ops);
		}
		printf("{\"single\": {\"u64_lookup\": %.2f, \"u64_update\": %.2f, "
		       "\"rec_lookup\": %.2f, \"rec_update\": %.2f}, ",
		       median(s[0], REPS), median(s[1], REPS), median(s[2], REPS),
		       median(s[3], REPS));
	}

	/* batch */
	{
		uint64_t *vu = malloc(BATCH_N * sizeof(uint64_t));
		struct flow_rec *vr = malloc(BATCH_N * sizeof(struct flow_rec));

		if (!vu || !vr)
			die("out of memory");
		for (uint32_t i = 0; i < BATCH_N; i++) {
			vu[i] = i;
			vr[i] = make_rec(i);
		}
		printf("\"batch\": {");
		batch_bench("u64", bu, sizeof(uint64_t), vu, 1);
		batch_bench("rec", br, sizeof(struct flow_rec), vr, 0);
		printf("}, ");
		free(vu);
		free(vr);
	}

	/* array fill: one update per element vs one batch call */
	{
		uint32_t *keys = malloc(ARRAY_N * sizeof(uint32_t));
		uint64_t *vals = malloc(ARRAY_N * sizeof(uint64_t));
		uint64_t t0;
		double loop_ms, batch_ms, loop_s[REPS], batch_s[REPS];

		if (!keys || !vals)
			die("out of memory");
		for (uint32_t i = 0; i < ARRAY_N; i++) {
			keys[i] = i;
			vals[i] = i;
		}
		update_batch(arr, keys, vals, ARRAY_N, ARRAY_N, 4, 8); /* warm up */
		for (int r = 0; r < REPS; r++) {
			t0 = now_ns();
			for (uint32_t i = 0; i < ARRAY_N; i++) {
				uint64_t v = i;

				if (bpf_map_update_elem(arr, &i, &v, BPF_ANY))
					die("array update %u failed", i);
			}
			loop_s[r] = (double)(now_ns() - t0) / 1e6;
			t0 = now_ns();
			update_batch(arr, keys, vals, ARRAY_N, ARRAY_N, 4, 8);
			batch_s[r] = (double)(now_ns() - t0) / 1e6;
		}
		loop_ms = median(loop_s, REPS);
		batch_ms = median(batch_s, REPS);
		printf("\"array\": {\"loop_ms\": %.3f, \"batch_ms\": %.3f}}\n",
		       loop_ms, batch_ms);
		free(keys);
		free(vals);
	}
	bpf_object__close(obj);
	return 0;
}
