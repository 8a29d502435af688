"""Batch decoding of flow monitor ring records: many ``struct flow_record``
in one contiguous buffer, read as columns (a numpy structured view, or
``struct.iter_unpack`` per field without numpy) instead of one Python object
per record. ``FlowRecord`` objects are built only when asked for.

The layout comes from the bundled object's BTF (``_flow_abi.abi().record``):
every scalar or byte-array leaf of the record becomes a column named after
its C member ("saddr", "sport", "packets", "srtt_us", "reason", ...;
padding members are left out).
"""

import functools
import struct

__all__ = ["FlowBatch", "columns_of"]


@functools.lru_cache(maxsize=None)
def _leaves(record):
    """(name, offset, size, struct format char or None for bytes) of the
    record codec's leaves, in offset order, padding left out."""
    out = []

    def walk(codec, base):
        for name, f in zip(codec.field_names, codec.fields):
            if hasattr(f.codec, "fields"):
                walk(f.codec, base + f.offset)
            elif name != "pad":
                fmt = f.codec.fmt
                if fmt is None or struct.calcsize("=" + fmt) != f.codec.size:
                    raise ValueError("flow record member %s: no fixed scalar layout" % name)
                out.append((name, base + f.offset, f.codec.size,
                            None if fmt.endswith("s") else fmt))

    walk(record, 0)
    return tuple(out)


def columns_of(record):
    """The column names of a record codec, in layout order."""
    return tuple(name for name, *_ in _leaves(record))


@functools.lru_cache(maxsize=None)
def _column_struct(record, name):
    for n, off, size, fmt in _leaves(record):
        if n == name:
            tail = record.size - off - size
            return struct.Struct("=%s%s%s" % ("%dx" % off if off else "",
                                              fmt or "%ds" % size,
                                              "%dx" % tail if tail else ""))
    raise KeyError("flow records have no column %r (columns: %s)"
                   % (name, ", ".join(columns_of(record))))


@functools.lru_cache(maxsize=None)
def _flat(record):
    """One struct over the whole record yielding the leaves in order."""
    fmt, pos = ["="], 0
    for _, off, size, f in _leaves(record):
        if off > pos:
            fmt.append("%dx" % (off - pos))
        fmt.append(f or "%ds" % size)
        pos = off + size
    if record.size > pos:
        fmt.append("%dx" % (record.size - pos))
    return struct.Struct("".join(fmt))


@functools.lru_cache(maxsize=None)
def numpy_dtype(record):
    """A flat numpy structured dtype with one field per column, at the
    record's offsets and with its itemsize (numpy is imported here)."""
    import numpy as np

    names, formats, offsets = [], [], []
    for name, off, size, fmt in _leaves(record):
        names.append(name)
        formats.append("S%d" % size if fmt is None else np.dtype("=" + fmt))
        offsets.append(off)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": record.size})


class FlowBatch:
    """``len(batch)`` flow records in one ``bytes`` buffer (``data``), as the
    ring delivered them. Nothing is decoded until asked:

    * ``column(name)``: one member of every record as a tuple (no numpy
      needed: one ``struct.iter_unpack`` over the buffer);
    * ``array()``: a numpy structured array viewing the buffer (zero copy,
      read-only), one field per column: ``batch.array()["packets"].sum()``;
    * ``records()`` / iteration / ``batch[i]``: FlowRecord objects, built
      on demand.

    ``columns`` lists the column names ("saddr", "daddr", "sport", "dport",
    "proto", "family", "direction", "ifindex", "first_ns", "last_ns",
    "packets", "bytes", "syn_ns", "rtt_ns", "tcp_flags", "drops",
    "srtt_us", "reason"); ``reasons`` maps the ``reason`` column's values
    to names ("fin", "idle", ...).
    """

    def __init__(self, data, count, record, make_records, reasons):
        self.data = data
        self._count = count
        self._record = record
        self._make = make_records
        self.reasons = reasons

    @property
    def columns(self):
        """The column names (members of struct flow_record, in order)."""
        return columns_of(self._record)

    @property
    def record_size(self):
        """Bytes per raw record in the buffer."""
        return self._record.size

    def __len__(self):
        return self._count

    def column(self, name):
        """Every record's ``name`` member as a tuple (ints; bytes for the
        16-byte addresses, IPv4 in the mapped form ::ffff:a.b.c.d)."""
        st = _column_struct(self._record, name)
        return tuple(t[0] for t in st.iter_unpack(self.data))

    def array(self):
        """A read-only numpy structured array over the buffer; fields are
        the ``columns``. Raises ImportError naming the ``numpy`` extra
        when numpy is not installed."""
        try:
            import numpy as np
        except ImportError:
            raise ImportError("FlowBatch.array() needs numpy: pip install 'pybpfnet[numpy]' "
                              "(column() works without it)") from None
        return np.frombuffer(self.data, dtype=numpy_dtype(self._record), count=self._count)

    def tuples(self):
        """Every record as one flat tuple of its columns (in ``columns`` order)."""
        return list(_flat(self._record).iter_unpack(self.data))

    def records(self):
        """The FlowRecords of the batch (built now)."""
        return self._make(_flat(self._record).iter_unpack(self.data))

    def __iter__(self):
        """The FlowRecords, built now."""
        return iter(self.records())

    def __getitem__(self, i):
        """Record ``i`` as a FlowRecord (negative counts from the end);
        IndexError outside the batch."""
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError("FlowBatch index %d out of range (%d records)" % (i, self._count))
        size = self._record.size
        flat = _flat(self._record)
        return self._make([flat.unpack_from(self.data, i * size)])[0]

    def __add__(self, other):
        if not isinstance(other, FlowBatch) or other._record is not self._record:
            return NotImplemented
        return FlowBatch(self.data + other.data, self._count + other._count, self._record,
                         self._make, self.reasons)

    def __repr__(self):
        return "<FlowBatch %d records>" % self._count
