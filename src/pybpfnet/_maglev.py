"""Maglev table population in C (csrc/glue/pybn_maglev.c): the core-level
border that :mod:`pybpfnet.dataplanes.maglev` calls. Not public API.

Everything here takes and returns Python values (bytes, ``array.array``);
the algorithm and the hashes are described in docs/maglev.md.
"""

import array
import errno
import itertools

from pybpfnet import _binding as _b

BASIS1 = 0xCBF29CE484222325   # the FNV-1a-64 offset basis
BASIS2 = 0x84222325CBF29CE4   # BASIS1 rotated by 32 bits
_U32_MAX = 0xFFFFFFFF
_ZERO = (0,)


def name_hash(data, basis):
    """fmix64(FNV-1a-64 of ``data`` (bytes) started from ``basis``), in C."""
    return _b.maglev_hash(data, basis)


def permutations(names, size):
    """Offsets and skips of Maglev's permutations for encoded ``names``
    (a sequence of bytes) in a table of ``size`` entries.

    Returns two ``array.array('I')``: ``offset = h1 % size`` and
    ``skip = h2 % (size - 1) + 1``.

    Raises:
        ValueError: ``size`` not in [2, 2**32) or names totalling >= 4 GiB.
    """
    ends = array.array("I", list(itertools.accumulate(map(len, names))))
    return _permutations(b"".join(names), ends, len(names), size)


def permutations_joined(blob, count, size):
    """:func:`permutations` of ``count`` names given as one bytes object,
    separated by NUL bytes (so no name may contain one)."""
    return _permutations(blob, None, count, size)


def _permutations(blob, ends, n, size):
    offsets = array.array("I", _ZERO) * n
    skips = array.array("I", _ZERO) * n
    if n == 0:
        return offsets, skips
    if len(blob) > _U32_MAX or not 2 <= size <= _U32_MAX:
        raise ValueError("Maglev permutations: expected 2 <= size < 2**32 and names "
                         "totalling < 4 GiB, got size %r" % (size,))
    rc = _b.maglev_permutations(blob, ends, n, size, offsets, skips)
    if rc < 0:
        raise ValueError("Maglev permutations: %d names do not match their %d bytes"
                         % (n, len(blob)))
    return offsets, skips


def fill(offsets, skips, weights, size):
    """Populate a Maglev lookup table of ``size`` (prime) entries.

    ``offsets``/``skips`` are ``array.array('I')`` from :func:`permutations`
    (or any values with ``offset < size`` and ``0 < skip < size``);
    ``weights`` is an ``array.array('I')`` of the same length, or None for
    equal weights. Returns ``(table, filled)``: an ``array.array('i')`` of
    backend indices (-1 = empty) and the number of filled entries (``size``,
    or 0 when no backend has a weight above 0).

    Raises:
        ValueError: arrays of different lengths or out-of-range values.
        MemoryError: the C side could not allocate its per-backend state.
    """
    n = len(offsets)
    if len(skips) != n or (weights is not None and len(weights) != n):
        raise ValueError("Maglev fill: expected offsets, skips and weights of equal "
                         "length, got %d, %d, %s" % (
                             n, len(skips), "None" if weights is None else len(weights)))
    if not 2 <= size <= 0x7FFFFFFF:
        raise ValueError("Maglev fill: expected 2 <= size < 2**31, got %r" % (size,))
    table = array.array("i", _ZERO) * size
    rc = _b.maglev_fill(offsets, skips, weights, n, size, table)
    if rc == -errno.ENOMEM:
        raise MemoryError("Maglev fill: no memory for %d backends" % n)
    if rc < 0:
        raise ValueError("Maglev fill: expected offsets < size and 0 < skips < size "
                         "(size %d)" % size)
    return table, rc
