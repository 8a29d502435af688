/* C glue for the pybpfnet binding: the few things cffi cannot express
 * (libbpf's varargs print callback) or that must run without Python in the
 * loop (ring buffer consumption). Everything here is wrapped by
 * src/pybpfnet/_binding.py; nothing else calls it. */
#ifndef PYBN_H
#define PYBN_H

#include <stddef.h>
#include <stdint.h>

#define PYBN_VERSION "0.1.0"

/* Route libbpf's print callback into Python (_pybn_log). Debug lines are
 * forwarded only while debug is enabled: libbpf prints dozens per load. */
void pybn_log_install(void);
void pybn_log_debug(int enabled);

/* A consumer of a BPF_MAP_TYPE_RINGBUF map, reading the mmaped ring. */
struct pybn_ringbuf;
struct pybn_ringbuf *pybn_ringbuf_open(int map_fd, uint32_t ring_size);
void pybn_ringbuf_close(struct pybn_ringbuf *rb);
/* Copy committed records into out and advance the consumer position.
 * rec_size > 0: each record is written as exactly rec_size bytes (zero
 *   padded when shorter; *mismatch counts records whose length differed).
 * rec_size == 0: each record is written as a u32 length, then the data,
 *   padded to 4 bytes.
 * Stops before a record that does not fit. Returns the number of records;
 * *used is the number of bytes written to out. */
long pybn_ringbuf_consume(struct pybn_ringbuf *rb, char *out, size_t outsz,
                          uint32_t rec_size, size_t *used, uint64_t *mismatch);
/* Bytes committed and not yet consumed (0 when empty). */
uint64_t pybn_ringbuf_avail(struct pybn_ringbuf *rb);

/* Collect up to max keys with BPF_MAP_GET_NEXT_KEY starting at the first
 * key; returns the count or -errno. Iteration is bounded by max so a map
 * mutated concurrently can never loop forever. */
long pybn_map_keys(int fd, uint32_t key_size, char *out, uint32_t max);

/* Raw BPF_LINK_CREATE for attach types newer than the system libbpf
 * (tcx: 46/47 on kernel >= 6.6). Returns the link fd or -errno. */
int pybn_link_create_raw(int prog_fd, int target_fd, uint32_t attach_type,
                         uint32_t flags, uint32_t relative_fd_or_id,
                         uint64_t expected_revision);

#endif

/* ---- fast single-element map access -----------------------------------
 * Integer keys and values pass by value, so nothing is shared between
 * threads (cffi releases the GIL during the syscall). The errno of the
 * last call on this thread is kept for pybn_last_err(). */
int pybn_last_err(void);
/* Integer key/value (sizes 1, 2, 4 or 8, host byte order). Returns the
 * value, or 0 with pybn_last_err() set on failure. EOVERFLOW: key out of
 * range for key_size. */
uint64_t pybn_lookup_int(int fd, uint64_t key, uint32_t key_size,
                         uint32_t value_size);
int pybn_update_int(int fd, uint64_t key, uint32_t key_size, uint64_t value,
                    uint32_t value_size, uint64_t flags);
int pybn_delete_int(int fd, uint64_t key, uint32_t key_size);

/* ---- attach (issue 3) -------------------------------------------------- */
#ifndef PYBN_ATTACH_H
#define PYBN_ATTACH_H
/* perf_event_open(PERF_TYPE_TRACEPOINT, config=tp_id) for all processes on
 * cpu 0 (a BPF program attached to it runs for the tracepoint on every
 * CPU). Returns the fd (close-on-exec) or -errno. */
int pybn_perf_tracepoint_open(uint64_t tp_id);
/* Raw BPF_PROG_QUERY with the mprog fields of kernel >= 6.6 (link_ids,
 * revision). link_ids and revision may be NULL (then the request is also
 * valid for older kernels). *count: in = capacity, out = number attached.
 * Returns 0 or -errno. */
int pybn_prog_query_raw(uint32_t target, uint32_t attach_type,
                        uint32_t query_flags, uint32_t *attach_flags,
                        uint32_t *prog_ids, uint32_t *link_ids,
                        uint32_t *count, uint64_t *revision);
/* setns(2) (Python 3.11's os module has no setns). Returns 0 or -errno. */
int pybn_setns(int fd, int nstype);
#endif

/* ---- Maglev table population (issue 6, csrc/glue/pybn_maglev.c) ------- */
#ifndef PYBN_MAGLEV_H
#define PYBN_MAGLEV_H
/* h1 = fmix64(FNV-1a-64(name, BASIS1)), h2 = the same with BASIS2 (the
 * standard FNV offset basis, and that basis rotated by 32 bits). */
#define PYBN_MAGLEV_BASIS1 0xcbf29ce484222325ULL
#define PYBN_MAGLEV_BASIS2 0x84222325cbf29ce4ULL
uint64_t pybn_maglev_hash(const char *data, size_t len, uint64_t basis);
/* Backend i's name is names[ends[i-1]:ends[i]] (ends[-1] = 0), or with
 * ends NULL the i-th of n NUL-separated names in names[0:len]. Writes
 * offset = h1 % m and skip = h2 % (m - 1) + 1. Returns 0 or -EINVAL. */
int pybn_maglev_permutations(const char *names, size_t len,
                             const uint32_t *ends, uint32_t n, uint32_t m,
                             uint32_t *offsets, uint32_t *skips);
/* Fill table[m] (m prime) with backend indices, -1 where empty; weights
 * may be NULL (all equal). Returns the number of filled entries (m, or 0
 * when no backend has a weight), -EINVAL or -ENOMEM. */
long pybn_maglev_fill(const uint32_t *offsets, const uint32_t *skips,
                      const uint32_t *weights, uint32_t n, uint32_t m,
                      int32_t *table);
#endif
