"""log2 histograms as bcc keeps and prints them (tcprtt, biolatency)."""

import attrs


def slot(value):
    """The bucket of ``value`` (bcc's bpf_log2l plus one, as the BPF side
    computes it): 0 -> 0, 1 -> 1, 2..3 -> 2, 4..7 -> 3, ..."""
    return int(value).bit_length()


@attrs.frozen
class Log2Histogram:
    """Counts per power-of-two bucket: ``counts[i]`` holds values whose bit
    length is ``i`` (slot 0: value 0). ``unit`` labels the values ("usecs")."""

    counts: tuple = attrs.field(converter=tuple)
    unit: str = "usecs"

    @property
    def total(self):
        return sum(self.counts)

    def buckets(self):
        """(low, high, count) rows as bcc prints them: from "0 -> 1" (slots
        0 and 1) up to the highest non-empty slot; empty list if no data."""
        top = max((i for i, c in enumerate(self.counts) if c), default=-1)
        if top < 0:
            return []
        rows = []
        for i in range(1, max(top, 1) + 1):
            low, high = (1 << i) >> 1, (1 << i) - 1
            if low == high:
                low -= 1
            count = self.counts[i] + (self.counts[0] if i == 1 else 0)
            rows.append((low, high, count))
        return rows

    def percentile(self, q):
        """The upper bound of the bucket holding the q-th quantile (0 < q <= 1),
        None if empty."""
        total = self.total
        if not total:
            return None
        need = q * total
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= need:
                return (1 << i) - 1 if i else 0
        return (1 << (len(self.counts) - 1)) - 1

    def __add__(self, other):
        n = max(len(self.counts), len(other.counts))
        a = self.counts + (0,) * (n - len(self.counts))
        b = other.counts + (0,) * (n - len(other.counts))
        return Log2Histogram(tuple(x + y for x, y in zip(a, b)), self.unit)

    def format(self, width=40):
        """The histogram in bcc's print_log2_hist layout."""
        rows = self.buckets()
        lines = ["     %-19s : count     distribution" % self.unit]
        peak = max((c for _, _, c in rows), default=0)
        for low, high, count in rows:
            stars = min(width, int(width * count / peak)) if peak else 0
            lines.append("%10d -> %-10d : %-8d |%-*s|" % (low, high, count, width, "*" * stars))
        return "\n".join(lines)

    def to_dict(self):
        return {"unit": self.unit, "total": self.total,
                "buckets": [{"low": lo, "high": hi, "count": c} for lo, hi, c in self.buckets()]}

    def __str__(self):
        return self.format()
