#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/bpf.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "pybn.h"

void _pybn_log(int level, const char *msg);

static int pybn_debug;

static int pybn_print(enum libbpf_print_level level, const char *fmt,
                      va_list ap)
{
    char small[1024];
    va_list ap2;
    int n;

    if (level == LIBBPF_DEBUG && !pybn_debug)
        return 0;
    va_copy(ap2, ap);
    n = vsnprintf(small, sizeof(small), fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return 0;
    if ((size_t)n < sizeof(small)) {
        _pybn_log((int)level, small);
    } else {
        /* verifier logs arrive in one print call and can be megabytes */
        char *big = malloc((size_t)n + 1);
        if (!big) {
            _pybn_log((int)level, small);
            return 0;
        }
        vsnprintf(big, (size_t)n + 1, fmt, ap);
        _pybn_log((int)level, big);
        free(big);
    }
    return 0;
}

void pybn_log_install(void) { libbpf_set_print(pybn_print); }
void pybn_log_debug(int enabled) { pybn_debug = enabled; }

/* ---- ring buffer ------------------------------------------------------ */

/* Layout (kernel/bpf/ringbuf.c): page 0 is the consumer position (RW),
 * page 1 the producer position, then the data area mapped twice so a
 * record that wraps is contiguous. Each record has an 8-byte header: u32
 * length with BUSY (bit 31) and DISCARD (bit 30) flags, u32 page offset. */
#define RB_BUSY (1U << 31)
#define RB_DISCARD (1U << 30)
#define RB_HDR 8

struct pybn_ringbuf {
    unsigned long *consumer;
    const unsigned long *producer;
    const char *data;
    uint64_t mask;
    size_t page;
    size_t ring;
};

struct pybn_ringbuf *pybn_ringbuf_open(int map_fd, uint32_t ring_size)
{
    struct pybn_ringbuf *rb = calloc(1, sizeof(*rb));
    void *p;

    if (!rb) {
        errno = ENOMEM;
        return NULL;
    }
    rb->page = (size_t)sysconf(_SC_PAGESIZE);
    rb->ring = ring_size;
    rb->mask = (uint64_t)ring_size - 1;
    p = mmap(NULL, rb->page, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
    if (p == MAP_FAILED)
        goto fail;
    rb->consumer = p;
    p = mmap(NULL, rb->page + 2 * (size_t)ring_size, PROT_READ, MAP_SHARED,
             map_fd, (off_t)rb->page);
    if (p == MAP_FAILED) {
        int e = errno;
        munmap(rb->consumer, rb->page);
        errno = e;
        goto fail;
    }
    rb->producer = p;
    rb->data = (const char *)p + rb->page;
    return rb;
fail:
    free(rb);
    return NULL;
}

void pybn_ringbuf_close(struct pybn_ringbuf *rb)
{
    if (!rb)
        return;
    munmap((void *)rb->producer, rb->page + 2 * rb->ring);
    munmap(rb->consumer, rb->page);
    free(rb);
}

uint64_t pybn_ringbuf_avail(struct pybn_ringbuf *rb)
{
    uint64_t prod = __atomic_load_n(rb->producer, __ATOMIC_ACQUIRE);
    uint64_t cons = __atomic_load_n(rb->consumer, __ATOMIC_ACQUIRE);
    return prod - cons;
}

long pybn_ringbuf_consume(struct pybn_ringbuf *rb, char *out, size_t outsz,
                          uint32_t rec_size, size_t *used, uint64_t *mismatch)
{
    uint64_t cons = __atomic_load_n(rb->consumer, __ATOMIC_ACQUIRE);
    uint64_t prod = __atomic_load_n(rb->producer, __ATOMIC_ACQUIRE);
    size_t off = 0;
    long n = 0;

    while (cons < prod) {
        const uint32_t *hdr = (const uint32_t *)(rb->data + (cons & rb->mask));
        uint32_t len = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);
        uint32_t dlen, need;

        if (len & RB_BUSY)
            break;
        dlen = len & ~(RB_BUSY | RB_DISCARD);
        if (!(len & RB_DISCARD)) {
            const char *src = (const char *)hdr + RB_HDR;
            if (rec_size) {
                need = rec_size;
                if (off + need > outsz)
                    break;
                if (dlen >= rec_size) {
                    memcpy(out + off, src, rec_size);
                } else {
                    memcpy(out + off, src, dlen);
                    memset(out + off + dlen, 0, rec_size - dlen);
                }
                if (dlen != rec_size)
                    (*mismatch)++;
            } else {
                need = 4 + ((dlen + 3) & ~3U);
                if (off + need > outsz)
                    break;
                memcpy(out + off, &dlen, 4);
                memcpy(out + off + 4, src, dlen);
                memset(out + off + 4 + dlen, 0, need - 4 - dlen);
            }
            off += need;
            n++;
        }
        cons += (dlen + RB_HDR + 7) & ~7ULL;
        __atomic_store_n(rb->consumer, cons, __ATOMIC_RELEASE);
        if (cons >= prod)
            prod = __atomic_load_n(rb->producer, __ATOMIC_ACQUIRE);
    }
    *used = off;
    return n;
}

/* ---- maps ------------------------------------------------------------- */

long pybn_map_keys(int fd, uint32_t key_size, char *out, uint32_t max)
{
    uint32_t n = 0;
    int err;

    if (max == 0)
        return 0;
    err = bpf_map_get_next_key(fd, NULL, out);
    while (!err) {
        n++;
        if (n >= max)
            break;
        err = bpf_map_get_next_key(fd, out + (size_t)(n - 1) * key_size,
                                   out + (size_t)n * key_size);
    }
    if (err && err != -ENOENT)
        return err;
    return n;
}

/* ---- links ------------------------------------------------------------ */

int pybn_link_create_raw(int prog_fd, int target_fd, uint32_t attach_type,
                         uint32_t flags, uint32_t relative_fd_or_id,
                         uint64_t expected_revision)
{
    /* Field layout of BPF_LINK_CREATE's tcx arm (uapi, kernel >= 6.6):
     * prog_fd, target_ifindex, attach_type, flags, then
     * { relative_fd | relative_id, expected_revision }. Declared here so
     * the system's older linux/bpf.h does not need to know it. */
    struct {
        uint32_t prog_fd;
        uint32_t target;
        uint32_t attach_type;
        uint32_t flags;
        uint32_t relative;
        uint32_t pad;
        uint64_t expected_revision;
        char rest[64];
    } attr;
    int fd;

    memset(&attr, 0, sizeof(attr));
    attr.prog_fd = (uint32_t)prog_fd;
    attr.target = (uint32_t)target_fd;
    attr.attach_type = attach_type;
    attr.flags = flags;
    attr.relative = relative_fd_or_id;
    attr.expected_revision = expected_revision;
    fd = (int)syscall(__NR_bpf, BPF_LINK_CREATE, &attr, sizeof(attr));
    return fd < 0 ? -errno : fd;
}

/* ---- fast single-element map access ----------------------------------- */

static __thread int tls_err;

int pybn_last_err(void) { return tls_err; }

/* Host-order integer in the first `size` bytes of buf (little and big
 * endian both: the value is copied from the low-order end). */
static int int_to_bytes(uint64_t v, uint32_t size, void *buf)
{
    if (size < 8 && (v >> (size * 8)))
        return -EOVERFLOW;
    switch (size) {
    case 1: *(uint8_t *)buf = (uint8_t)v; return 0;
    case 2: *(uint16_t *)buf = (uint16_t)v; return 0;
    case 4: *(uint32_t *)buf = (uint32_t)v; return 0;
    case 8: *(uint64_t *)buf = v; return 0;
    }
    return -EINVAL;
}

static uint64_t bytes_to_int(const void *buf, uint32_t size)
{
    switch (size) {
    case 1: return *(const uint8_t *)buf;
    case 2: return *(const uint16_t *)buf;
    case 4: return *(const uint32_t *)buf;
    default: return *(const uint64_t *)buf;
    }
}

uint64_t pybn_lookup_int(int fd, uint64_t key, uint32_t key_size,
                         uint32_t value_size)
{
    uint64_t k = 0, v = 0;
    int err = int_to_bytes(key, key_size, &k);

    if (!err)
        err = bpf_map_lookup_elem(fd, &k, &v);
    if (err) {
        tls_err = -err;
        return 0;
    }
    tls_err = 0;
    return bytes_to_int(&v, value_size);
}

int pybn_update_int(int fd, uint64_t key, uint32_t key_size, uint64_t value,
                    uint32_t value_size, uint64_t flags)
{
    uint64_t k = 0, v = 0;
    int err = int_to_bytes(key, key_size, &k);

    if (err)
        return err;
    if (int_to_bytes(value, value_size, &v))
        return -ERANGE;
    return bpf_map_update_elem(fd, &k, &v, flags);
}

int pybn_delete_int(int fd, uint64_t key, uint32_t key_size)
{
    uint64_t k = 0;
    int err = int_to_bytes(key, key_size, &k);

    return err ? err : bpf_map_delete_elem(fd, &k);
}

/* ---- attach (issue 3) -------------------------------------------------- */
#include <sched.h>
#include <linux/perf_event.h>

int pybn_perf_tracepoint_open(uint64_t tp_id)
{
    struct perf_event_attr attr;
    int fd;

    memset(&attr, 0, sizeof(attr));
    attr.type = PERF_TYPE_TRACEPOINT;
    attr.size = sizeof(attr);
    attr.config = tp_id;
    attr.sample_period = 1;
    attr.wakeup_events = 1;
    fd = (int)syscall(__NR_perf_event_open, &attr, -1, 0, -1,
                      PERF_FLAG_FD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int pybn_prog_query_raw(uint32_t target, uint32_t attach_type,
                        uint32_t query_flags, uint32_t *attach_flags,
                        uint32_t *prog_ids, uint32_t *link_ids,
                        uint32_t *count, uint64_t *revision)
{
    /* BPF_PROG_QUERY's attr (uapi, kernel >= 6.6): target, attach_type,
     * query_flags, attach_flags, prog_ids, count, pad, prog_attach_flags,
     * link_ids, link_attach_flags, revision. Declared here because the
     * system's linux/bpf.h predates the last four. */
    struct {
        uint32_t target;
        uint32_t attach_type;
        uint32_t query_flags;
        uint32_t attach_flags;
        uint64_t prog_ids;
        uint32_t count;
        uint32_t pad;
        uint64_t prog_attach_flags;
        uint64_t link_ids;
        uint64_t link_attach_flags;
        uint64_t revision;
    } attr;
    int err;

    memset(&attr, 0, sizeof(attr));
    attr.target = target;
    attr.attach_type = attach_type;
    attr.query_flags = query_flags;
    attr.prog_ids = (uint64_t)(uintptr_t)prog_ids;
    attr.count = *count;
    attr.link_ids = (uint64_t)(uintptr_t)link_ids;
    /* older kernels reject a non-zero tail they do not know: size the
     * request to the fields actually used */
    err = (int)syscall(__NR_bpf, BPF_PROG_QUERY, &attr,
                       link_ids || revision ? sizeof(attr)
                                            : offsetof(__typeof__(attr), pad));
    if (err < 0)
        return -errno;
    *count = attr.count;
    if (attach_flags)
        *attach_flags = attr.attach_flags;
    if (revision)
        *revision = attr.revision;
    return 0;
}

int pybn_setns(int fd, int nstype)
{
    return setns(fd, nstype) < 0 ? -errno : 0;
}
