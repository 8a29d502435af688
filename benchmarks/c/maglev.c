/* Standalone C baseline for pybpfnet's Maglev table build (bench_maglev.py).
 *
 * The same algorithm as pybpfnet.Maglev with equal weights: backend names
 * "backend-<i>" sorted bytewise, h1/h2 = fmix64(FNV-1a-64) from two bases,
 * offset = h1 % M, skip = h2 % (M - 1) + 1, then Pseudocode 1 of Eisenbud
 * et al. (NSDI 2016): round robin, each backend claiming its next preferred
 * empty slot until the table is full. Timed: sort + hash + populate.
 *
 *   maglev N M RUNS   -> one JSON line: median/min ns and a table checksum
 *                        (sum of (slot + 1) * backend index, mod 2^64)
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct name {
    const char *s;
    size_t len;
};

static uint64_t hash(const char *s, size_t len, uint64_t h)
{
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static int cmp_name(const void *a, const void *b)
{
    const struct name *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);

    if (c)
        return c;
    return (x->len > y->len) - (x->len < y->len);
}

struct perm {
    uint32_t pos;
    uint32_t skip;
};

static void build(struct name *names, uint32_t n, uint32_t m, struct perm *p,
                  int32_t *table)
{
    uint32_t filled = 0;

    qsort(names, n, sizeof(*names), cmp_name);
    for (uint32_t i = 0; i < n; i++) {
        p[i].pos = (uint32_t)(hash(names[i].s, names[i].len, 0xcbf29ce484222325ULL) % m);
        p[i].skip = (uint32_t)(hash(names[i].s, names[i].len, 0x84222325cbf29ce4ULL)
                               % (m - 1)) + 1;
    }
    memset(table, 0xff, (size_t)m * sizeof(*table));
    if (n == 0)
        return;
    for (;;) {
        for (uint32_t i = 0; i < n; i++) {
            uint32_t c = p[i].pos, skip = p[i].skip;

            while (table[c] >= 0) {
                c += skip;
                if (c >= m)
                    c -= m;
            }
            table[c] = (int32_t)i;
            c += skip;
            if (c >= m)
                c -= m;
            p[i].pos = c;
            if (++filled == m)
                return;
        }
    }
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s N M RUNS\n", argv[0]);
        return 2;
    }
    uint32_t n = (uint32_t)strtoul(argv[1], NULL, 0);
    uint32_t m = (uint32_t)strtoul(argv[2], NULL, 0);
    int runs = atoi(argv[3]);
    if (m < 2 || runs < 1) {
        fprintf(stderr, "need M >= 2 (a prime) and RUNS >= 1\n");
        return 2;
    }
    char *text = malloc((size_t)n * 24);
    struct name *names = malloc((size_t)n * sizeof(*names));
    struct name *work = malloc((size_t)n * sizeof(*names));
    struct perm *p = malloc((size_t)n * sizeof(*p));
    int32_t *table = malloc((size_t)m * sizeof(*table));
    uint64_t *samples = malloc((size_t)runs * sizeof(*samples));
    if (!text || !names || !work || !p || !table || !samples) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (uint32_t i = 0; i < n; i++) {
        names[i].s = text + (size_t)i * 24;
        names[i].len = (size_t)snprintf(text + (size_t)i * 24, 24, "backend-%u", i);
    }
    for (int r = -3; r < runs; r++) {        /* 3 warm-up builds */
        memcpy(work, names, (size_t)n * sizeof(*names));
        uint64_t t0 = now_ns();
        build(work, n, m, p, table);
        uint64_t dt = now_ns() - t0;
        if (r >= 0)
            samples[r] = dt;
    }
    qsort(samples, (size_t)runs, sizeof(*samples), cmp_u64);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < m; i++)
        sum += (uint64_t)(i + 1) * (uint64_t)(int64_t)table[i];
    printf("{\"n\": %u, \"m\": %u, \"runs\": %d, \"median_ns\": %llu, "
           "\"min_ns\": %llu, \"checksum\": %llu}\n", n, m, runs,
           (unsigned long long)samples[runs / 2], (unsigned long long)samples[0],
           (unsigned long long)sum);
    free(samples);
    free(table);
    free(p);
    free(work);
    free(names);
    free(text);
    return 0;
}
