/* Maglev lookup-table population (Eisenbud et al., "Maglev: A Fast and
 * Reliable Software Network Load Balancer", NSDI 2016, section 3.4 and
 * Pseudocode 1), with the weighted variant described in docs/maglev.md.
 * Wrapped by src/pybpfnet/_maglev.py; the pure-Python reference that the
 * tests compare against is pybpfnet.dataplanes.maglev.maglev_table_py. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pybn.h"

#define FNV_PRIME 0x100000001b3ULL

uint64_t pybn_maglev_hash(const char *data, size_t len, uint64_t basis)
{
    const unsigned char *p = (const unsigned char *)data;
    uint64_t h = basis;
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= p[i];
        h *= FNV_PRIME;
    }
    /* MurmurHash3's fmix64: FNV-1a alone leaves the low bits (the ones a
     * modulo by a small M keeps) poorly mixed for names that differ only
     * in their last bytes. */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

int pybn_maglev_permutations(const char *names, size_t len,
                             const uint32_t *ends, uint32_t n, uint32_t m,
                             uint32_t *offsets, uint32_t *skips)
{
    size_t start = 0, end;
    uint32_t i;

    if (m < 2)
        return -EINVAL;
    for (i = 0; i < n; i++) {
        if (ends) {
            end = ends[i];
        } else {
            const char *nul = memchr(names + start, 0, len - start);
            end = nul ? (size_t)(nul - names) : len;
        }
        if (end < start || end > len)
            return -EINVAL;
        offsets[i] = (uint32_t)(pybn_maglev_hash(names + start, end - start,
                                                 PYBN_MAGLEV_BASIS1) % m);
        skips[i] = (uint32_t)(pybn_maglev_hash(names + start, end - start,
                                               PYBN_MAGLEV_BASIS2) % (m - 1)) + 1;
        start = ends ? end : end + 1;
        if (start > len && i + 1 < n)
            return -EINVAL;
    }
    return 0;
}

struct mg_state {
    uint32_t pos;   /* permutation[i][next[i]], advanced without a modulo */
    uint32_t skip;
};

/* Claim backend i's next preferred empty slot. The table is not full, so
 * the walk ends: skip < m and m prime make the permutation visit every
 * slot. */
static inline void mg_claim(struct mg_state *s, int32_t *table, uint32_t m,
                            int32_t i)
{
    uint32_t c = s->pos, skip = s->skip;

    while (table[c] >= 0) {
        c += skip;
        if (c >= m)
            c -= m;
    }
    table[c] = i;
    c += skip;
    if (c >= m)
        c -= m;
    s->pos = c;
}

long pybn_maglev_fill(const uint32_t *offsets, const uint32_t *skips,
                      const uint32_t *weights, uint32_t n, uint32_t m,
                      int32_t *table)
{
    struct mg_state *st;
    uint64_t *target = NULL, wmax = 0;
    uint32_t i, filled = 0, active = 0;
    int equal = 1;

    if (m < 2 || n > (uint32_t)INT32_MAX)
        return -EINVAL;
    memset(table, 0xff, (size_t)m * sizeof(*table));
    for (i = 0; i < n; i++) {
        if (offsets[i] >= m || skips[i] == 0 || skips[i] >= m)
            return -EINVAL;
        if (weights) {
            if (weights[i] > wmax)
                wmax = weights[i];
            if (weights[i] != weights[0])
                equal = 0;
            active += weights[i] != 0;
        }
    }
    if (!weights)
        active = n;
    if (active == 0)
        return 0;
    st = malloc((size_t)n * sizeof(*st));
    if (!st)
        return -ENOMEM;
    for (i = 0; i < n; i++) {
        st[i].pos = offsets[i];
        st[i].skip = skips[i];
    }

    if (equal) {
        /* the paper's round robin: one slot per backend per round */
        for (;;) {
            for (i = 0; i < n; i++) {
                mg_claim(&st[i], table, m, (int32_t)i);
                if (++filled == m)
                    goto out;
            }
        }
    }

    /* Weighted: in round t (1, 2, ...) backend i claims a slot when
     * t * w_i >= target_i, then target_i += w_max. By the end of round t
     * it holds floor(t * w_i / w_max) slots, so shares are proportional
     * to the weights; the heaviest backend claims every round, so at
     * most m rounds run. t * w_i < 2^32 * 2^32 fits in 64 bits. */
    target = malloc((size_t)n * sizeof(*target));
    if (!target) {
        free(st);
        return -ENOMEM;
    }
    for (i = 0; i < n; i++)
        target[i] = wmax;
    for (uint64_t t = 1;; t++) {
        for (i = 0; i < n; i++) {
            if (t * weights[i] < target[i])
                continue;
            target[i] += wmax;
            mg_claim(&st[i], table, m, (int32_t)i);
            if (++filled == m)
                goto out;
        }
    }
out:
    free(target);
    free(st);
    return filled;
}
